"""A run folder's `logan.log`: what the run logged, ending with the error that stopped it, if any.

`run_log(folder)` attaches a handler for the duration of a command. Records wait in memory until the
folder exists (a command that stops on bad input before creating its folder leaves nothing behind),
then go to `folder/logan.log` (appended: a resumed run continues the same log). An exception that ends
the command is written as its last line, whatever the logging levels. Nested calls for the same folder
share one handler.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

LOG_FILE = "logan.log"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RunLogHandler(logging.Handler):
    """Appends records to `folder/logan.log` once the folder exists; earlier records wait in memory."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = Path(folder).expanduser().absolute()
        self.setFormatter(logging.Formatter(FORMAT))
        self._pending: list[logging.LogRecord] = []
        self._file: IO[str] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is None:
            if not self.folder.is_dir():
                self._pending.append(record)
                return
            try:
                self._file = open(self.folder / LOG_FILE, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            except OSError:  # a folder that cannot be written: the run says so itself; logging must not fail
                self._pending.clear()
                return
            for waiting in self._pending:
                self._write(waiting)
            self._pending.clear()
        self._write(record)

    def _write(self, record: logging.LogRecord) -> None:
        assert self._file is not None
        try:
            self._file.write(self.format(record) + "\n")
            self._file.flush()
        except (
            OSError
        ):  # a folder removed under us (bad input cleans up) or a full disk: logging must not fail
            pass

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._pending.clear()
        super().close()


@contextmanager
def run_log(folder: Path) -> Iterator[None]:
    """Log to `folder/logan.log` while the block runs; an exception that ends it is the log's last line."""
    root = logging.getLogger()
    target = Path(folder).expanduser().absolute()
    if any(isinstance(h, RunLogHandler) and h.folder == target for h in root.handlers):
        yield
        return
    handler = RunLogHandler(target)
    root.addHandler(handler)
    try:
        yield
    except BaseException as exc:
        handler.handle(_error_record(exc))
        raise
    finally:
        root.removeHandler(handler)
        handler.close()


def _error_record(exc: BaseException) -> logging.LogRecord:
    """The line that says why the run stopped (a crash's traceback comes before it)."""
    from logan.errors import LoganError

    if isinstance(exc, LoganError):
        message = f"error: {' '.join(str(exc).split())}"
    elif isinstance(exc, KeyboardInterrupt):
        message = "interrupted; rerun the same command to resume."
    else:
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        message = "".join(lines).rstrip() + f"\nerror: {type(exc).__name__}: {' '.join(str(exc).split())}"
    return logging.LogRecord("logan", logging.ERROR, __file__, 0, message, None, None)
