"""Atomic writes and run-folder bookkeeping: a result is either complete on disk or absent."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from logan.errors import LoganError

FINGERPRINT_FILE = "run_fingerprint.json"


def write_json(path: Path, obj: Any) -> None:
    """Write JSON to a temporary name beside `path`, then rename it into place."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary file path; on success it is renamed to `path`, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `path` (a finished folder), else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(folder: Path) -> None:
    """Remove temporary files and folders left by a killed run (they never hold finished results)."""
    folder = Path(folder)
    if not folder.exists():
        return
    for tmp in folder.rglob(".*.tmp"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def check_fingerprint(folder: Path, fingerprint: dict[str, Any], command: str) -> None:
    """Record what a run folder's results depend on; refuse to mix results of another configuration."""
    path = Path(folder) / FINGERPRINT_FILE
    if path.exists():
        old = read_json(path)
        if old.get("command") == command:
            changed = [k for k in sorted(set(old["fingerprint"]) | set(fingerprint))
                       if old["fingerprint"].get(k) != fingerprint.get(k)]
            if changed:
                raise LoganError(
                    f"{folder} holds results of a different configuration (differs in: {', '.join(changed)}). "
                    "Rerun with the original settings to resume, or choose a new path.output_dir."
                )
            return
        raise LoganError(
            f"{folder} holds the results of 'logan {old.get('command')}'; "
            f"choose another path.output_dir for 'logan {command}'."
        )
    write_json(path, {"command": command, "fingerprint": fingerprint})


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
