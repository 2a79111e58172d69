"""LOGAN: low-Gaussian-noise membership inference on vision-language models.

Pipeline: data (target + reference sets) -> models (one adapter per family) -> perturb (seeded
Gaussian noise) -> metrics (per-token divergences, Max-K% aggregation) -> engine (batched forward
passes) -> pipeline (tune, select, classify, demo) -> report (ROC scoring and plots).

The Python API (`logan.api`, re-exported here): `logan.tune`, `logan.select`, `logan.classify`,
`logan.demo`, `logan.prepare`, `logan.merge`, `logan.compare` and `logan.load_run`; each returns a typed
result. `logan.validate_results(path)` checks a results.json against the package's JSON Schema.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = [
    "LoganError",
    "__version__",
    "classify",
    "compare",
    "demo",
    "load_run",
    "merge",
    "prepare",
    "select",
    "tune",
    "validate_results",
]

if TYPE_CHECKING:
    from logan.api import classify, compare, demo, merge, prepare, select, tune
    from logan.errors import LoganError
    from logan.report.results_file import validate_results
    from logan.runs import load_run


def __getattr__(name: str) -> Any:
    """The API loads on first use, so `import logan` (and `logan --help`) stay instant."""
    if name in ("tune", "select", "classify", "demo", "prepare", "merge", "compare"):
        from logan import api

        return getattr(api, name)
    if name == "load_run":
        from logan.runs import load_run

        return load_run
    if name == "validate_results":
        from logan.report.results_file import validate_results

        return validate_results
    if name == "LoganError":
        from logan.errors import LoganError

        return LoganError
    raise AttributeError(f"module 'logan' has no attribute '{name}'")
