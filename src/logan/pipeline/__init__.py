"""Commands as short stories of the steps: tune, select, classify, demo."""
