"""Sets LOGAN saved (`OUT/datasets/*.parquet`), recognised by their own Parquet metadata and reloaded exactly.

One row per sample, in set order:

    sample_id  string   sha256:<hex> of the image bytes (the identity; the noise seed is its first 8 bytes)
    label      int8     1 = member, 0 = non-member
    caption    string
    name       string   a display name (the file name, or the dataset row's image name)
    path       string?  the image file, when the image is a file; null when it came as bytes
    origin     string   the entry it came from (a file, or hf:ORG/NAME@<commit>?config=..&split=..)
    row        int64    its row in that origin

Images that came as bytes are stored once, in the sidecar `images.parquet` (sample_id, bytes) that the set
files name in their metadata. The schema metadata key `logan` holds {"format": "logan-set", "version": 1,
"set": ..., "images": "images.parquet", "sources": [provenance of each entry]}; a Parquet file without it
is a table to sample from, never a saved set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from logan.errors import LoganError
from logan.io import atomic_path

KEY = b"logan"
FORMAT, VERSION = "logan-set", 1
IMAGES = "images.parquet"
SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("label", pa.int8()),
        ("caption", pa.string()),
        ("name", pa.string()),
        ("path", pa.string()),
        ("origin", pa.string()),
        ("row", pa.int64()),
    ]
)
COLUMNS = [*SCHEMA.names, "image"]  # in memory: `image` holds the bytes of rows without a file


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """A set frame with one dtype per column however it was built (pandas reads null strings as NaN and
    infers string dtypes): text and bytes as Python objects (None for missing), label and row as int64."""
    frame = frame[COLUMNS].copy()
    for column in ("sample_id", "caption", "name", "path", "origin", "image"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    frame["caption"] = frame.caption.map(lambda c: c or "")
    return frame.astype({"label": np.int64, "row": np.int64})


def empty_set() -> pd.DataFrame:
    return typed(pd.DataFrame({name: pd.Series(dtype=object) for name in COLUMNS}).fillna(0))


def write_set(path: Path, frame: pd.DataFrame, kind: str, sources: list[dict[str, Any]]) -> None:
    """Write a set atomically; its rows' bytes go to the sidecar beside it (`write_images`)."""
    table = pa.Table.from_pandas(frame[SCHEMA.names], schema=SCHEMA, preserve_index=False)
    meta = {"format": FORMAT, "version": VERSION, "set": kind, "images": IMAGES, "sources": sources}
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata({KEY: json.dumps(meta).encode()}), tmp)


def write_images(folder: Path, frame: pd.DataFrame) -> None:
    """The sidecar: the bytes of every row that has no file, once per sample."""
    held = frame[frame.image.notna()].drop_duplicates("sample_id")
    table = pa.table(
        {
            "sample_id": pa.array(held.sample_id.tolist(), pa.string()),
            "bytes": pa.array(held.image.tolist(), pa.binary()),
        }
    )
    with atomic_path(Path(folder) / IMAGES) as tmp:
        pq.write_table(table, tmp)


def saved_metadata(path: Path) -> dict[str, Any] | None:
    """LOGAN's metadata of a Parquet file, or None for any other Parquet file (a table to sample from)."""
    try:
        raw = (pq.read_schema(path).metadata or {}).get(KEY)
    except (pa.ArrowException, OSError) as exc:
        raise LoganError(f"{path} is not a readable Parquet file ({exc}).") from None
    if raw is None:
        return None
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        return None
    if int(meta.get("version", 0)) > VERSION:
        raise LoganError(
            f"{path} was saved by a newer LOGAN (set format {meta['version']}); update LOGAN to read it."
        )
    return meta


def read_set(path: Path, what: str = "saved set") -> pd.DataFrame:
    """A saved set as written, with the bytes of its file-less rows from the sidecar."""
    path = Path(path)
    meta = saved_metadata(path) if path.is_file() else None
    if meta is None:
        raise LoganError(f"{what} {path} is not a set saved by LOGAN (OUT/datasets/*.parquet).")
    frame = pq.read_table(path).to_pandas()
    held = frame.path.isna()
    frame["image"] = None
    if held.any():
        sidecar = path.parent / meta.get("images", IMAGES)
        if not sidecar.is_file():
            raise LoganError(
                f"{path} names its images' bytes in {sidecar}, which is missing; copy the whole "
                "datasets/ folder."
            )
        images = pq.read_table(sidecar).to_pydict()
        found = dict(zip(images["sample_id"], images["bytes"]))
        missing = [s for s in frame.sample_id[held] if s not in found]
        if missing:
            raise LoganError(
                f"{sidecar} lacks the image of sample {missing[0]}; copy the whole datasets/ folder."
            )
        frame["image"] = [found[s] if h else None for s, h in zip(frame.sample_id, held)]
    frame = typed(frame)
    frame.attrs["sources"] = meta.get("sources", [])
    return frame


def sample_bytes(row: Any) -> bytes:
    """The image bytes of a set row: held in the set, or read from its file."""
    from logan.data.images import read_bytes

    return row.image if row.image is not None else read_bytes(row.path, row.name)


def image_source(row: Any) -> str | bytes:
    """What the engine loads for a set row: its file, or its bytes."""
    return row.path if row.path is not None else row.image
