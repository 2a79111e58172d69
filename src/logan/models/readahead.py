"""Reading a checkpoint into memory while the command starts up.

A cold LLaVA-1.5-7B checkpoint is 13 GiB on disk. `logan tune` spends its first seconds importing
torch, sampling the data sets and checking the images; a thread started before that reads the weight
files in large sequential blocks into the OS page cache, so the loader later finds them in memory.
Nothing here imports torch: the thread starts before the heavy imports do.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")
NOT_WEIGHTS = ("optimizer", "scheduler", "rng_state", "training_args", "trainer_state")  # training leftovers
BLOCK = 16 * 2**20
MEMORY_SHARE = 0.5  # read ahead only what fits in half of the free memory (else it would evict itself)


def weight_files(model_cfg: Any) -> list[Path]:
    """The weight files the model settings point at: files named by a setting, and the weight files at
    the top of a folder named by one (model_path, model_base, vision_tower, MiniGPT-4's files, ...). In a
    folder with safetensors only those (what transformers loads), and never a trainer's leftovers."""
    found: dict[Path, None] = {}
    for spec in fields(model_cfg):
        value = getattr(model_cfg, spec.name)
        if not isinstance(value, str) or not value:
            continue
        path = Path(value).expanduser()
        if path.is_file() and path.suffix in WEIGHT_SUFFIXES:
            found[path] = None
        elif path.is_dir():
            files = [
                f
                for f in sorted(path.iterdir())
                if f.suffix in WEIGHT_SUFFIXES and f.is_file() and not f.name.startswith(NOT_WEIGHTS)
            ]
            safetensors = [f for f in files if f.suffix == ".safetensors"]
            found.update(dict.fromkeys(safetensors or files))
    return list(found)


def _free_memory() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _read(files: list[Path]) -> None:
    buffer = memoryview(bytearray(BLOCK))
    for file in files:
        try:
            with open(file, "rb", buffering=0) as stream:
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
                while stream.readinto(buffer):
                    pass
        except OSError as exc:  # the loader reports unreadable files itself
            log.debug("read-ahead of %s stopped: %s", file, exc)
            return


def read_ahead(files: list[Path]) -> threading.Thread | None:
    """Start a daemon thread that reads `files` once, in order (None when there is nothing to read or
    they would not fit in half of the free memory)."""
    total = sum(file.stat().st_size for file in files)
    free = _free_memory()
    if not files or free is None or total > MEMORY_SHARE * free:
        return None
    thread = threading.Thread(target=_read, args=(files,), name="logan-read-ahead", daemon=True)
    thread.start()
    log.debug("reading %d weight files (%.1f GiB) ahead into memory", len(files), total / 2**30)
    return thread
