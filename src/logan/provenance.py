"""Where a run's inputs came from: every model file set (Hub repository and commit, or local path) and every
dataset entry (Hub id and commit, or file / folder; config, split, columns, rows read and used, and a
content fingerprint over every row's image id and label). Written to OUT/provenance.json; results refer
to it (optimal_std.json carries a copy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from logan.config import RunConfig
from logan.io import read_json

PROVENANCE = "provenance.json"


def run_provenance(cfg: RunConfig, datasets: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's provenance as a plain dict: {"models": {key: record}, "datasets": [entry provenance]}."""
    return {"models": dict(cfg.resolved), "datasets": list(datasets)}


def read_provenance(out: Path) -> dict[str, Any] | None:
    """A run folder's provenance.json, if it has one."""
    path = Path(out) / PROVENANCE
    return read_json(path) if path.is_file() else None
