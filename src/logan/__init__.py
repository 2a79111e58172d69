"""LOGAN: low-Gaussian-noise membership inference on vision-language models.

Pipeline: data (target + reference sets) -> models (one adapter per family) -> perturb (seeded
Gaussian noise) -> metrics (per-token divergences, Max-K% aggregation) -> engine (batched forward
passes) -> pipeline (tune, select, classify, demo) -> report (ROC scoring and plots).
"""

__version__ = "0.1.0"
