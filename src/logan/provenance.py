"""Where a run's inputs came from: every model file set (Hub repository and commit, or local path) and every
dataset entry (Hub id and commit, or file / folder; config, split, columns, rows read and used, and a
content fingerprint over every row's image id and label). Written to OUT/provenance.json; results refer
to it (optimal_std.json and results.json carry a copy); `saved_sets` fingerprints the sets a run drew
from them."""

from __future__ import annotations

import hashlib
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


def saved_sets(out: Path, kinds: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The saved sets of a run folder (kind -> file under OUT/datasets) that exist: the file, the number of
    samples, members and non-members, and a content fingerprint (sha256 over the sorted sample ids with
    their labels: the same samples give the same value, whatever their order or file bytes)."""
    import pandas as pd

    found = {}
    for kind, name in kinds.items():
        path = Path(out) / "datasets" / name
        if not path.is_file():
            continue
        frame = pd.read_parquet(path, columns=["sample_id", "label"])
        content = hashlib.sha256(
            "".join(sorted(f"{s}\t{int(label)}\n" for s, label in zip(frame.sample_id, frame.label))).encode()
        )
        members = int((frame.label == 1).sum())
        found[kind] = {
            "file": f"datasets/{name}",
            "n": len(frame),
            "n_members": members,
            "n_nonmembers": len(frame) - members,
            "content": "sha256:" + content.hexdigest(),
        }
    return found
