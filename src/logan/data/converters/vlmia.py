"""JaineLi/VL-MIA-image -> members.json + nonmembers.json (fields `image`, `label`, 1 = member).

Subsets img_Flickr (600 images, 300/300), img_Flickr_2k, img_Flickr_10k and img_dalle; `subset=`
picks one (default img_Flickr). `source=` is any of:

- a snapshot of the dataset repository: a folder per subset, named after the subset or after the
  repository's folder (flickr_2024, flickr_2024_2k, flickr_2024_10k, DALLE), holding either Parquet
  shards (`img_Flickr/train-00000-of-00001.parquet`; the converter branch's `img_Flickr/train/0000.parquet`)
  or an image folder (images + `metadata.csv|jsonl|parquet` with `file_name` and `label`, or class
  folders `member/`, `non_member/` / `1/`, `0/`; zip archives are read in place);
- a `datasets` `save_to_disk` folder (`data-*.arrow` + `dataset_info.json` + `state.json`, or a
  DatasetDict with `dataset_dict.json` and a `train/` folder), or the subset folder itself.

Parquet and Arrow files are read with pyarrow (the `datasets` package is not needed). Their `image`
column is the Hugging Face Image struct {bytes, path}: the bytes are written to OUT/images; a row with
no bytes uses its path. A ClassLabel `label` is mapped through its names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from logan.config import PrepareConfig
from logan.data.converters.common import ImageIndex, Record, Report, existing, parse_label
from logan.errors import LoganError, unknown

NAME = "vlmia"
OUTPUTS = {1: "members.json", 0: "nonmembers.json"}
HELP = "JaineLi/VL-MIA-image (Parquet / Arrow / image folder) -> members + non-members"
SUBSETS = {"img_Flickr": "flickr_2024", "img_Flickr_2k": "flickr_2024_2k",
           "img_Flickr_10k": "flickr_2024_10k", "img_dalle": "DALLE"}  # subset -> the repository's folder
METADATA = ("metadata.csv", "metadata.jsonl", "metadata.parquet")
BATCH = 32
Batches = Callable[[list[str]], Iterator[pa.RecordBatch]]  # columns -> record batches


def read(cfg: PrepareConfig, report: Report) -> tuple[int, Iterator[Record]]:
    root = existing(cfg.source, "source", "the downloaded JaineLi/VL-MIA-image folder (or a saved dataset)")
    subset = cfg.subset or "img_Flickr"
    if subset not in SUBSETS:
        raise unknown("VL-MIA subset", subset, SUBSETS)
    root = _subset_folder(root, subset)
    report.where = str(root)
    tables = [_open(path) for path in _table_files(root)]
    if tables:
        features = _dataset_features(root)
        labelled = [(path, _labels(path, schema, batches, features), batches)
                    for path, _, schema, batches in tables]
        return sum(t[1] for t in tables), _table_records(labelled, root, report)
    return _image_folder(root, report)


def _subset_folder(source: Path, subset: str) -> Path:
    """The subset's folder in a repository snapshot, or `source` itself when it is the subset's data."""
    for name in (subset, SUBSETS[subset]):
        if (source / name).is_dir():
            return source / name
    named = [name for name, folder in SUBSETS.items() if source.name in (name, folder)]
    if named and named[0] != subset:
        raise LoganError(f"source={source} is the folder of subset {named[0]}, not of subset={subset}: "
                         f"give subset={named[0]} or the repository folder as source=.")
    if source.is_dir():
        others = sorted(n for pair in SUBSETS.items() for n in pair if (source / n).is_dir())
        if others:
            raise LoganError(f"{source} holds the VL-MIA folders {', '.join(others)} but none for "
                             f"subset={subset} (looked for {subset}/ and {SUBSETS[subset]}/); "
                             "choose one of those.")
    return source


def _table_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root] if root.suffix.lower() in (".parquet", ".arrow") else []
    if (root / "dataset_dict.json").is_file():  # a DatasetDict saved to disk: one folder per split
        splits = json.loads((root / "dataset_dict.json").read_text()).get("splits") or []
        split = "train" if "train" in splits else (splits[0] if splits else "train")
        root = root / split
    if (root / "state.json").is_file():
        state = json.loads((root / "state.json").read_text())
        files = [root / f["filename"] for f in state.get("_data_files", []) if "filename" in f]
        return files or sorted(root.glob("*.arrow"))
    return sorted(root.rglob("*.parquet")) or sorted(root.rglob("*.arrow"))


def _open(path: Path) -> tuple[Path, int, pa.Schema, Batches]:
    """(path, rows, schema, batches(columns)) of a Parquet file or an Arrow file (stream or file format)."""
    try:
        if path.suffix.lower() == ".parquet":
            parquet = pq.ParquetFile(path)
            return path, parquet.metadata.num_rows, parquet.schema_arrow, \
                lambda columns: parquet.iter_batches(batch_size=BATCH, columns=columns)
        try:
            table = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()  # save_to_disk writes streams
        except pa.ArrowInvalid:
            table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        return path, table.num_rows, table.schema, \
            lambda columns: iter(table.select(columns).to_batches(max_chunksize=BATCH))
    except (pa.ArrowException, OSError) as exc:
        kind = path.suffix.lstrip(".")
        raise LoganError(f"{path} is not a readable {kind} file ({exc}); download it again.")


def _dataset_features(root: Path) -> dict[str, Any]:
    """`features` of a save_to_disk folder's dataset_info.json (Parquet / Arrow files carry their own)."""
    for folder in (root, root / "train"):
        info = folder / "dataset_info.json"
        if info.is_file():
            return json.loads(info.read_text()).get("features") or {}
    return {}


def _features(schema: pa.Schema, fallback: dict[str, Any]) -> dict[str, Any]:
    """The Hugging Face features stored in a file's schema metadata (key `huggingface`)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if raw:
        try:
            return json.loads(raw).get("info", {}).get("features") or fallback
        except (json.JSONDecodeError, AttributeError):
            return fallback
    return fallback


def _labels(path: Path, schema: pa.Schema, batches: Batches, features: dict[str, Any]) -> dict[Any, int]:
    """Check the columns and map every label value of a file to 1 / 0, before any image is read."""
    missing = [c for c in ("image", "label") if c not in schema.names]
    if missing:
        raise LoganError(f"{path} has no {' or '.join(repr(c) for c in missing)} column (columns: "
                         f"{', '.join(schema.names)}); VL-MIA-image files hold 'image' and 'label'.")
    feature = _features(schema, features).get("label")
    names = feature.get("names") if isinstance(feature, dict) else None
    values = {value for batch in batches(["label"]) for value in batch.column("label").to_pylist()}
    return {value: parse_label(value, str(path), names) for value in values}


def _table_records(tables: list, root: Path, report: Report) -> Iterator[Record]:
    with ImageIndex([root if root.is_dir() else root.parent]) as index:
        for path, labels, batches in tables:
            for row, (image, label) in enumerate(_rows(batches(["image", "label"]))):
                report.entries += 1
                record, name = _cell(image, labels[label], f"{path.stem}_{row:06d}", index)
                if record is None:
                    report.miss(f"{name} ({path.name}, row {row})")
                else:
                    yield record


def _rows(batches: Iterator[pa.RecordBatch]) -> Iterator[tuple[Any, Any]]:
    for batch in batches:
        yield from zip(batch.column("image").to_pylist(), batch.column("label").to_pylist())


def _cell(value: Any, label: int, fallback: str, index: ImageIndex) -> tuple[Record | None, str]:
    """An `image` cell (the HF Image struct {bytes, path}, raw bytes, or a path) -> (record or None, name)."""
    data, path = (value.get("bytes"), value.get("path")) if isinstance(value, dict) else (
        (value, None) if isinstance(value, (bytes, bytearray)) else (None, value))
    name = PurePosixPath(str(path).replace("\\", "/")).name if path else fallback
    if data:
        return Record(label, name, hashlib.sha256(data).hexdigest(), data=bytes(data)), name
    ref = index.find(str(path)) if path else None  # an absolute path, or one relative to the dataset
    return (index.record(ref, label, name) if ref is not None else None), name


def _image_folder(root: Path, report: Report) -> tuple[int, Iterator[Record]]:
    """An image folder: labels from metadata files (`file_name`, `label`) or from class-folder names."""
    index = ImageIndex([root])
    metadata = sorted(p for p in root.rglob("*") if p.name in METADATA) if root.is_dir() else []
    if metadata:
        rows = [(meta, row) for meta in metadata for row in _metadata_rows(meta)]
        return len(rows), _metadata_records(rows, root, index, report)
    entries = index.entries()
    if not entries:
        raise LoganError(f"found no Parquet or Arrow files and no images in {root}: give source= the "
                         "downloaded JaineLi/VL-MIA-image folder (or a datasets save_to_disk folder).")
    return len(entries), _folder_records(entries, index, report)


def _metadata_rows(path: Path) -> list[dict[str, Any]]:
    try:
        frame = {".csv": pd.read_csv, ".parquet": pd.read_parquet}.get(path.suffix, _read_jsonl)(path)
    except (ValueError, OSError) as exc:
        raise LoganError(f"{path} is not a readable metadata file ({exc}).")
    missing = [c for c in ("file_name", "label") if c not in frame.columns]
    if missing:
        raise LoganError(f"{path} lacks the column(s) {', '.join(missing)}: an image folder's metadata needs "
                         "'file_name' and 'label'.")
    return frame[["file_name", "label"]].to_dict("records")


def _read_jsonl(path: Path) -> pd.DataFrame:
    return pd.read_json(path, lines=True)


def _metadata_records(rows: list, root: Path, index: ImageIndex, report: Report) -> Iterator[Record]:
    with index:
        for meta, row in rows:
            report.entries += 1
            label = parse_label(row["label"], f"{meta}, file {row['file_name']}")
            rel = (meta.parent.relative_to(root) / str(row["file_name"])).as_posix()
            ref = index.find(rel)
            if ref is None:
                report.miss(rel)
            else:
                yield index.record(ref, label, rel)


def _folder_records(entries: list, index: ImageIndex, report: Report) -> Iterator[Record]:
    with index:
        for label_path, ref in entries:
            report.entries += 1
            yield index.record(ref, _folder_label(label_path), label_path)


def _folder_label(label_path: str) -> int:
    """The innermost folder (or zip) name above an image that reads as a label."""
    for part in reversed(PurePosixPath(label_path).parts[:-1]):
        try:
            return parse_label(part, label_path)
        except LoganError:
            continue
    raise LoganError(f"cannot tell the label of {label_path}: put the images under folders named member / "
                     "non_member (or 1 / 0), or add a metadata.jsonl with 'file_name' and 'label'.")
