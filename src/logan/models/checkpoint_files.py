"""Integrity of the checkpoint files a model setting names, checked before anything is written or loaded.

A download cut short or a failed copy leaves a weight file that the loaders report deep in their stack
(safetensors: "invalid header length"; torch: "PytorchStreamReader failed reading zip archive"), after
the run folder has been claimed. These checks read only headers and directories (milliseconds on a
13 GiB checkpoint) and stop with one line naming the file:

- `.safetensors`: the 8-byte header length, the JSON header, and the data section, whose size must be
  exactly what the header's tensor ranges need (as safetensors itself requires).
- `.bin` / `.pth` / `.pt` / `.ckpt`: a zip archive (torch >= 1.6) whose directory at the end is intact,
  or a legacy pickle stream; anything else (an empty file, an HTML error page, ...) is refused.
- a weight index (`*.index.json` in a model folder): JSON whose every listed shard exists.

Not detected here: bytes overwritten inside a file that keeps its length (neither format stores a
checksum the loaders read); the loaders report what they cannot parse, still as one error line.
"""

from __future__ import annotations

import json
import struct
import zipfile
from dataclasses import fields
from pathlib import Path
from typing import Any

from logan.errors import LoganError
from logan.models.readahead import weight_files

MAX_HEADER = 100 * 2**20  # safetensors refuses larger headers too
PICKLE_PROTOCOL = b"\x80"  # a legacy torch.save stream starts with pickle's PROTO opcode


def check_checkpoint_files(model_cfg: Any) -> None:
    """Every weight file and weight index the model settings point at is complete (see the module docstring)."""
    for index in _indexes(model_cfg):
        _check_index(index)
    for path in weight_files(model_cfg):
        size = path.stat().st_size
        problem = (
            "is empty"
            if size == 0
            else (_safetensors_problem if path.suffix == ".safetensors" else _torch_problem)(path, size)
        )
        if problem:
            raise LoganError(f"checkpoint file {path} {problem}: download or copy it again.")


def _indexes(model_cfg: Any) -> list[Path]:
    folders = [
        Path(v).expanduser()
        for v in (getattr(model_cfg, f.name) for f in fields(model_cfg))
        if isinstance(v, str) and v and Path(v).expanduser().is_dir()
    ]
    return [index for folder in folders for index in sorted(folder.glob("*.index.json"))]


def _check_index(index: Path) -> None:
    try:
        weight_map = json.loads(index.read_text()).get("weight_map")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise LoganError(
            f"checkpoint index {index} is not a readable weight index ({exc}): download it again."
        )
    if not isinstance(weight_map, dict):
        raise LoganError(f"checkpoint index {index} has no weight_map: download it again.")
    missing = sorted({name for name in weight_map.values() if not (index.parent / str(name)).is_file()})
    if missing:
        raise LoganError(
            f"checkpoint index {index} lists {missing[0]}, which is not in {index.parent}"
            f"{f' (nor {len(missing) - 1} more shards)' if len(missing) > 1 else ''}: download the "
            "missing shards."
        )


def _safetensors_problem(path: Path, size: int) -> str | None:
    with open(path, "rb") as stream:
        head = stream.read(8)
        if len(head) < 8:
            return f"is truncated ({size} bytes, shorter than a safetensors header)"
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER or 8 + length > size:
            return f"is truncated or not a safetensors file (its header claims {length} bytes; the file has {size})"
        try:
            header = json.loads(stream.read(length))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "has a corrupt safetensors header"
    data = size - 8 - length
    needed = max(ends, default=0)
    if data < needed:
        return f"is truncated ({size} bytes; its header needs {8 + length + needed})"
    if data > needed:
        return f"has {data - needed} bytes after its last tensor (a safetensors file ends with its data)"
    return None


def _torch_problem(path: Path, size: int) -> str | None:
    with open(path, "rb") as stream:
        start = stream.read(4)
    if start.startswith(PICKLE_PROTOCOL):
        return None  # a legacy (torch < 1.6) stream: no directory to check; torch.load reports damage
    if not start.startswith(b"PK"):
        return "is neither a zip archive (torch.save) nor a pickle stream"
    try:
        with zipfile.ZipFile(path) as archive:
            last = max((i.header_offset + i.compress_size for i in archive.infolist()), default=0)
    except (zipfile.BadZipFile, OSError) as exc:
        return f"is truncated or corrupt ({exc})"
    if last > size:
        return f"is truncated ({size} bytes; its directory needs {last})"
    return None
