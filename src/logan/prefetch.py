"""Host work (image decoding, noise, preprocessing) prepared in the background, ahead of the model.

`Prefetch(source, depth)` runs the iterator `source` in a background thread and hands its items over
in order, at most `depth` ahead of the consumer, so host memory stays bounded whatever the number of
images. An error raised by `source` is raised to the consumer at the item where it happened; closing
the consumer (`close()`, leaving the `with` block, an exception) stops the producer. `depth=0` runs
`source` inline in the consumer's thread (same items, no thread).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_ITEM, _END, _ERROR = "item", "end", "error"


class Prefetch(Generic[T]):
    """An iterator over `source`'s items, produced by a background thread at most `depth` ahead."""

    def __init__(self, source: Iterable[T], depth: int = 2) -> None:
        self._source = iter(source)
        self._done = False
        self._thread: threading.Thread | None = None
        if depth > 0:
            # (kind, payload): an item of `source`, the exception it raised, or None at its end
            self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._produce, name="logan-prefetch", daemon=True)
            self._thread.start()

    def _produce(self) -> None:
        try:
            for item in self._source:
                if not self._put((_ITEM, item)):
                    return
            self._put((_END, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put((_ERROR, exc))
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()

    def _put(self, entry: tuple[str, object]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        if self._thread is None:
            try:
                return next(self._source)
            except StopIteration:
                self._done = True
                raise
        kind, value = self._queue.get()
        if kind == _ITEM:
            return value
        self.close()
        if kind == _ERROR:
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop the producer and wait for it (it finishes the item it is preparing first)."""
        self._done = True
        if self._thread is None:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()
            return
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
