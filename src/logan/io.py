"""Atomic writes and run-folder bookkeeping: a result is either complete on disk or absent."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from logan.errors import LoganError
from logan.faults import fault_point

if TYPE_CHECKING:
    from typing_extensions import Self

FINGERPRINT_FILE = "run_fingerprint.json"


def write_json(path: Path, obj: Any, compact: bool = False) -> None:
    """Write JSON to a temporary name beside `path`, then rename it into place. `compact`: every list of plain
    values on one line (column-oriented tables stay a line per column) and strict JSON (no NaN)."""
    text = _compact(obj) if compact else json.dumps(obj, indent=2, sort_keys=False, default=_json_default)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def _compact(obj: Any, depth: int = 0) -> str:
    """Indented JSON whose lists of plain values stand on one line."""
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(str(k))}: {_compact(v, depth + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in obj):
        return "[\n" + ",\n".join(inner + _compact(v, depth + 1) for v in obj) + f"\n{pad}]"
    return json.dumps(obj, default=_json_default, allow_nan=False, separators=(", ", ": "))


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
    tmp = temporary_beside(
        path, lambda name: os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    )
    try:
        yield tmp
        fault_point("json")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `path` (a finished folder), else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(path, lambda name: os.mkdir(name, 0o777))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def temporary_beside(path: Path, create: Callable[[Path], None]) -> Path:
    """A new name `.NAME.<random>.tmp` beside `path`, made by `create` (which must fail with
    FileExistsError when the name is taken). Files are created 0666 and folders 0777, less the user's umask,
    as any other program's output (tempfile's are 0600 / 0700: a colleague could not read the run)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            create(tmp)
        except FileExistsError:
            continue
        return tmp
    raise LoganError(
        f"could not create a temporary file beside {path}; remove the .{path.name}.*.tmp files there."
    )


def current_umask() -> int:
    """The process's umask, read without changing it (Linux: /proc/self/status); elsewhere set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(folder: Path) -> None:
    """Give `folder` and everything below it the modes a plain open() / mkdir() gives (0666 / 0777 less the
    umask), for files a library wrote privately (safetensors' weights are 0600)."""
    mask = current_umask()
    for path in [Path(folder), *Path(folder).rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


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


def check_writable(folder: Path, key: str = "path.output_dir") -> None:
    """The run folder is a folder this process can create or write into, checked before anything is
    written (a read-only file system or a file in the way is one line, not an OSError mid-run)."""
    folder = Path(folder).expanduser().absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise LoganError(f"{key}={folder} cannot be a folder: {existing} is a file. Choose another path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LoganError(
            f"{key}={folder} cannot be written: {existing} is read-only (or not writable for this "
            "user). Choose a writable folder."
        )


def check_fingerprint(
    folder: Path,
    fingerprint: dict[str, Any],
    command: str,
    explain: Callable[[dict, dict, Path], str | None] | None = None,
) -> None:
    """Record what a run folder's results depend on; refuse to mix results of another configuration.
    `explain(old, new, folder)` may give a more precise one-line reason than the keys that differ."""
    path = Path(folder) / FINGERPRINT_FILE
    if path.exists():
        old = read_json(path)
        if old.get("command") == command:
            reason = explain(old.get("fingerprint", {}), fingerprint, Path(folder)) if explain else None
            if reason:
                raise LoganError(reason)
            changed = [
                k
                for k in sorted(set(old["fingerprint"]) | set(fingerprint))
                if old["fingerprint"].get(k) != fingerprint.get(k)
            ]
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


LOCK_FILE = ".logan.lock"
HEARTBEAT_SECONDS = 30
STALE_SECONDS = 300


class RunLock:
    """One run per output folder. The lock holds pid and host and is touched every 30 s; a lock whose
    process is gone (same host) or that has not been touched for 5 minutes (any host) is stale and is
    taken over, so a killed run never blocks its rerun."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                self._refuse_unless_stale()
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}, handle)
            self._thread = threading.Thread(target=self._heartbeat, daemon=True)
            self._thread.start()
            return self
        raise LoganError(
            f"could not lock {self.path.parent}; delete {self.path} if no logan run uses the folder."
        )

    def _refuse_unless_stale(self) -> None:
        try:
            owner = json.loads(self.path.read_text() or "{}")
            age = time.time() - self.path.stat().st_mtime
        except (OSError, json.JSONDecodeError):
            owner, age = {}, STALE_SECONDS + 1
        same_host = owner.get("host") == socket.gethostname()
        if (same_host and not _alive(owner.get("pid"))) or age > STALE_SECONDS or not owner:
            self.path.unlink(missing_ok=True)
            return
        raise LoganError(
            f"another logan run (pid {owner.get('pid')} on {owner.get('host')}) is using {self.path.parent}; "
            f"wait for it to finish or choose another path.output_dir."
        )

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(self.path)
            except OSError:
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.path.unlink(missing_ok=True)


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
