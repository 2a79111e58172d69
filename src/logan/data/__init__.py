"""Data: member / non-member lists, the seeded target set, the reference set, image loading."""
