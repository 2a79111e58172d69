"""JaineLi/VL-MIA-image -> members.json + nonmembers.json (fields `image`, `label`, 1 = member).

Subsets img_Flickr (600 images, 300/300), img_Flickr_2k, img_Flickr_10k and img_dalle; `subset=`
picks one (default img_Flickr). `source=` is any of:

- the Hub id (`source=hf:JaineLi/VL-MIA-image` or `source=JaineLi/VL-MIA-image`), resolved through
  huggingface_hub (offline: from the cache), the subset being the README config of that name;
- a snapshot of the dataset repository: its README configs, or a folder per subset, named after the
  subset or after the repository's folder (flickr_2024, flickr_2024_2k, flickr_2024_10k, DALLE), holding
  Parquet shards (`img_Flickr/train-00000-of-00001.parquet`; the converter branch's
  `img_Flickr/train/0000.parquet`) or an image folder (images + `metadata.csv|jsonl|parquet` with
  `file_name` and `label`, or class folders `member/`, `non_member/` / `1/`, `0/`; zip archives are read
  in place);
- a `datasets` `save_to_disk` folder (a Dataset, or a DatasetDict with a `train` split), or the subset
  folder itself.

Tables are read by `datasets` through the same code as `data.dataset=hf:...` entries
(`logan.data.sources`): the `image` column's bytes are written to OUT/images (a row with no bytes uses
its file), a ClassLabel `label` is mapped through its names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from logan.config import PrepareConfig
from logan.data.converters.common import ImageIndex, Record, Report, existing, parse_label
from logan.errors import LoganError, unknown

NAME = "vlmia"
OUTPUTS = {1: "members.json", 0: "nonmembers.json"}
HELP = "JaineLi/VL-MIA-image (Hub id, snapshot, save_to_disk or image folder) -> members + non-members"
SUBSETS = {
    "img_Flickr": "flickr_2024",
    "img_Flickr_2k": "flickr_2024_2k",
    "img_Flickr_10k": "flickr_2024_10k",
    "img_dalle": "DALLE",
}  # subset -> the repository's folder
METADATA = ("metadata.csv", "metadata.jsonl", "metadata.parquet")
KEY = "prepare.source"


def read(cfg: PrepareConfig, report: Report) -> tuple[int | None, Iterator[Record]]:
    from logan.data.sources import Entry, open_saved_dataset, open_source
    from logan.models.hub import looks_like_repo_id

    subset = cfg.subset or "img_Flickr"
    if subset not in SUBSETS:
        raise unknown("VL-MIA subset", subset, SUBSETS)
    value = str(cfg.source or "")
    if value.startswith("hf:") or (
        value and not Path(value).expanduser().exists() and looks_like_repo_id(value)
    ):
        from logan.data.sources import parse_entry

        entry = parse_entry(value if value.startswith("hf:") else f"hf:{value}", KEY)
        source = open_source(
            Entry(entry.kind, entry.location, entry.config or subset, revision=entry.revision), KEY
        )
        report.where = source.origin
        return None, _records(source, report)
    root = existing(cfg.source, "source", "the downloaded JaineLi/VL-MIA-image folder (or a saved dataset)")
    if _configs(root) and subset in _configs(root):  # a snapshot with the README's configs
        source = open_source(Entry("folder", str(root), subset), KEY)
    else:
        folder = _subset_folder(root, subset)
        if _saved_to_disk(folder):
            source = open_saved_dataset(folder, Entry("folder", str(folder)), KEY)
        elif folder.is_dir() and (any(folder.rglob("*.parquet")) or any(folder.rglob("*.arrow"))):
            source = open_source(Entry("folder", str(folder)), KEY)
        elif folder.is_file() and folder.suffix.lower() == ".parquet":
            source = open_source(Entry("table", str(folder)), KEY)
        else:
            report.where = str(folder)
            return _image_folder(folder, report)
    report.where = source.origin
    return None, _records(source, report)


def _configs(root: Path) -> list[str]:
    """The configs a repository snapshot's README names (none for other folders)."""
    readme = root / "README.md"
    if not readme.is_file():
        return []
    from huggingface_hub import DatasetCard

    return [c.get("config_name") for c in DatasetCard.load(readme).data.to_dict().get("configs") or []]


def _saved_to_disk(folder: Path) -> bool:
    return folder.is_dir() and ((folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file())


def _records(source: Any, report: Report) -> Iterator[Record]:
    """Records of a dataset's rows: the image bytes, or the file a row names (missing files are counted)."""
    from logan.data.sources import image_bytes

    image, label = source.entry.image, source.entry.label
    for row, cells in source.rows([image, label]):
        report.entries += 1
        value = cells[image]
        path = value.get("path") if isinstance(value, dict) else (value if isinstance(value, str) else None)
        name = (
            PurePosixPath(str(path).replace("\\", "/")).name
            if path
            else f"{source.entry.config or 'row'}_{row:06d}"
        )
        try:
            data, file, _ = image_bytes(value, source.base, f"{source.origin}, row {row}")
        except LoganError:
            report.miss(f"{name} (row {row})")
            continue
        member = parse_label(cells[label], f"{source.origin}, row {row}", source.label_names)
        yield Record(
            member,
            name,
            hashlib.sha256(data).hexdigest(),
            path=Path(file) if file else None,
            data=None if file else data,
        )


def _subset_folder(source: Path, subset: str) -> Path:
    """The subset's folder in a repository snapshot, or `source` itself when it is the subset's data."""
    for name in (subset, SUBSETS[subset]):
        if (source / name).is_dir():
            return source / name
    named = [name for name, folder in SUBSETS.items() if source.name in (name, folder)]
    if named and named[0] != subset:
        raise LoganError(
            f"source={source} is the folder of subset {named[0]}, not of subset={subset}: "
            f"give subset={named[0]} or the repository folder as source=."
        )
    if source.is_dir():
        others = sorted(n for pair in SUBSETS.items() for n in pair if (source / n).is_dir())
        if others:
            raise LoganError(
                f"{source} holds the VL-MIA folders {', '.join(others)} but none for "
                f"subset={subset} (looked for {subset}/ and {SUBSETS[subset]}/); "
                "choose one of those."
            )
    return source


def _image_folder(root: Path, report: Report) -> tuple[int, Iterator[Record]]:
    """An image folder: labels from metadata files (`file_name`, `label`) or from class-folder names."""
    index = ImageIndex([root])
    metadata = sorted(p for p in root.rglob("*") if p.name in METADATA) if root.is_dir() else []
    if metadata:
        rows = [(meta, row) for meta in metadata for row in _metadata_rows(meta)]
        return len(rows), _metadata_records(rows, root, index, report)
    entries = index.entries()
    if not entries:
        raise LoganError(
            f"found no Parquet or Arrow files and no images in {root}: give source= the "
            "downloaded JaineLi/VL-MIA-image folder (or a datasets save_to_disk folder)."
        )
    return len(entries), _folder_records(entries, index, report)


def _metadata_rows(path: Path) -> list[dict[str, Any]]:
    try:
        frame = {".csv": pd.read_csv, ".parquet": pd.read_parquet}.get(path.suffix, _read_jsonl)(path)
    except (ValueError, OSError) as exc:
        raise LoganError(f"{path} is not a readable metadata file ({exc}).")
    missing = [c for c in ("file_name", "label") if c not in frame.columns]
    if missing:
        raise LoganError(
            f"{path} lacks the column(s) {', '.join(missing)}: an image folder's metadata needs "
            "'file_name' and 'label'."
        )
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
    raise LoganError(
        f"cannot tell the label of {label_path}: put the images under folders named member / "
        "non_member (or 1 / 0), or add a metadata.jsonl with 'file_name' and 'label'."
    )
