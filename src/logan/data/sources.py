"""Dataset entries beyond LOGAN's JSON lists: Hugging Face datasets and tables, read as streams of rows.

    hf:JaineLi/VL-MIA-image?config=img_Flickr               a Hub dataset (split train, columns image / label)
    hf:JaineLi/VL-MIA-image@v1.0?config=img_Flickr&split=train&image=image&label=label&caption=text
    hf://datasets/JaineLi/VL-MIA-image@v1.0?config=img_Flickr        huggingface_hub's URI form, the same
    hf:/data/VL-MIA-image?config=img_dalle                  a local folder laid out like a Hub dataset repository
    pool.parquet | pool.csv | pool.tsv | pool.jsonl          a table: an image column (a path, resolved against
                                                            the table's folder, or the image bytes) and a label
                                                            column; `?image=..&label=..&caption=..` rename them

A Hub id is made local through huggingface_hub (its revision resolved to a commit, only the README and the
chosen config's files fetched; offline from the cache), then every source is read by
`datasets.load_dataset(..., streaming=True)`: no Arrow copy, memory flat in the number of rows. Images are
read as bytes (`Image(decode=False)`) and a row's identity is the sha256 of its bytes. Labels are 1 / 0 or
class names (a ClassLabel index is mapped through its names).

Two passes over a source: `index` reads every row's content id and label (no bytes kept), the caller draws
from them, and `fetch` reads the drawn rows' bytes (or file paths), names and captions.
"""

from __future__ import annotations

import hashlib
import logging
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np

from logan.data.images import ID_PREFIX
from logan.errors import LoganError, did_you_mean

log = logging.getLogger(__name__)

OPTIONS = ("config", "split", "revision", "image", "label", "caption")
TABLES = {".parquet": "parquet", ".csv": "csv", ".tsv": "csv", ".jsonl": "json"}


@dataclass(frozen=True)
class Entry:
    """One dataset entry as given: where it is and how its rows are read."""

    kind: str  # "hub" (a Hub id), "folder" (a Hub-like folder), "table", or "file" (JSON / saved set)
    location: str  # Hub id, folder or file
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    image: str = "image"
    label: str = "label"
    caption: str | None = None  # None: the column `caption`, where there is one

    def text(self, commit: str | None = None) -> str:
        """The canonical one-line form, with the commit in place of the revision when known."""
        if self.kind not in ("hub", "folder"):
            return self.location
        rev = commit or self.revision
        query = "&".join(
            f"{k}={v}"
            for k, v in (
                ("config", self.config),
                ("split", self.split),
                ("image", self.image),
                ("label", self.label),
                ("caption", self.caption),
            )
            if v
        )
        return f"hf:{self.location}{'@' + rev if rev else ''}?{query}"


def is_dataset_source(value: str) -> bool:
    """Whether an entry is read here (a Hugging Face dataset or a table) rather than as a JSON list / saved set."""
    return value.startswith("hf:") or Path(value.partition("?")[0]).suffix.lower() in TABLES


def parse_entry(value: str, key: str) -> Entry:
    """An entry's text -> Entry; unknown options and malformed values are one line each."""
    from logan.models.hub import looks_like_repo_id

    text, _, query = value.partition("?") if is_dataset_source(value) else (value, "", "")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise LoganError(
            f"{key}={value}: '{unknown[0]}' is not a dataset option.{did_you_mean(unknown[0], OPTIONS)} "
            f"Options: {', '.join(OPTIONS)}."
        )
    if text.startswith("hf://"):
        from huggingface_hub import parse_hf_uri
        from huggingface_hub.errors import HfUriError

        try:
            uri = parse_hf_uri(text)
        except HfUriError as error:
            raise LoganError(f"{key}={value} is not a Hub address ({error}).") from None
        if uri.type != "dataset" or uri.path_in_repo:
            raise LoganError(
                f"{key}={value}: a dataset is hf://datasets/ORG/NAME[@REVISION] (or hf:ORG/NAME, or "
                "hf:FOLDER)."
            )
        entry = Entry("hub", uri.id, revision=uri.revision)
    elif text.startswith("hf:"):
        location, revision = text[3:], None
        if not Path(location).expanduser().exists() and "@" in location:
            location, _, revision = location.rpartition("@")
        if not location:
            raise LoganError(f"{key}=hf: names no dataset: write hf:ORG/NAME or hf:FOLDER.")
        hub = not Path(location).expanduser().exists() and looks_like_repo_id(location)
        entry = Entry(
            "hub" if hub else "folder",
            location if hub else str(Path(location).expanduser()),
            revision=revision,
        )
    elif Path(text).suffix.lower() in TABLES:
        entry = Entry("table", str(Path(text).expanduser()))
    else:
        return Entry("file", str(Path(text).expanduser()))
    if entry.kind == "table" and set(options) - {"image", "label", "caption"}:
        raise LoganError(f"{key}={value}: config, split and revision apply to hf: datasets only.")
    if options.get("revision") and entry.revision and options["revision"] != entry.revision:
        raise LoganError(f"{key}={value} gives the revision twice ({entry.revision}, {options['revision']}).")
    given: dict[str, Any] = {
        k: (v or None) if k in ("config", "revision", "caption") else v for k, v in options.items()
    }
    entry = replace(entry, **given)
    if entry.kind == "folder" and entry.revision:
        raise LoganError(
            f"{key}={value}: {entry.location} is a local folder, which has no revision; drop "
            "@/revision= (a Hub dataset is pinned as hf:ORG/NAME@REVISION)."
        )
    if not entry.split or not entry.image or not entry.label:
        raise LoganError(
            f"{key}={value}: split, image and label need a value (or leave them out for the defaults)."
        )
    return entry


# ---------------------------------------------------------------------------------------------------------
@dataclass
class Source:
    """A dataset entry ready to stream: `rows()` may be called more than once (each call is a new pass)."""

    entry: Entry
    key: str
    provenance: dict[str, Any]
    base: Path | None  # relative image paths are resolved against this folder
    stream: Any  # a datasets.IterableDataset
    caption: str | None
    label_names: list[str] | None = None
    origin: str = ""
    dropped: int = 0

    def rows(self, columns: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
        return enumerate(self.stream.select_columns(columns))


@contextmanager
def datasets_bars_off() -> Iterator[None]:
    """datasets' progress bars off while a dataset opens (LOGAN's own bar counts its rows), then as the
    caller had them: the switch is process-wide."""
    import datasets

    was = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()


def open_source(entry: Entry, key: str, cache_dir: str | None = None) -> Source:
    """Resolve a Hub id (commit, snapshot), check config / split / columns, return a streamable source.
    Raises one LoganError line for a wrong config, split or column before any row is read."""
    import datasets

    commit = None
    options: dict[str, Any]  # the builder's keyword arguments
    provenance: dict[str, Any]
    if entry.kind == "table":
        path = Path(entry.location)
        if not path.is_file():
            raise LoganError(f"{key}={entry.location}: no such file.")
        builder, options, base = TABLES[path.suffix.lower()], {"data_files": str(path)}, path.parent
        if path.suffix.lower() == ".tsv":
            options["sep"] = "\t"
        provenance = {
            "source": str(path.resolve()),
            "kind": "table",
            "image": entry.image,
            "label": entry.label,
        }
    else:
        folder, commit = (
            _hub_snapshot(entry, key, cache_dir) if entry.kind == "hub" else (Path(entry.location), None)
        )
        if not folder.is_dir():
            raise LoganError(
                f"{key}=hf:{entry.location}: no such folder, and not a Hub dataset id (ORG/NAME)."
            )
        configs = readme_configs(folder)
        config = _config(entry, list(configs) if configs else _inferred_configs(folder), key)
        entry = replace(entry, config=config)
        if configs:  # the README's data files of that config, read by the builder of their format
            files = _split_files(folder, _chosen(configs, config), entry, key)
            builder, options = (
                _builder(files[entry.split], entry, key),
                {"data_files": {entry.split: files[entry.split]}},
            )
            names = [Path(f).relative_to(folder).as_posix() for f in files[entry.split]]
        else:  # no configs: the layout datasets infers from the folder
            builder, options = str(folder), {"name": config}
            names = _data_files(str(folder), config, entry.split)
        base = folder
        provenance = {
            "source": entry.location,
            "kind": entry.kind,
            "config": config,
            "split": entry.split,
            **({"revision": entry.revision or "main", "commit": commit} if commit else {}),
            "image": entry.image,
            "label": entry.label,
            "files": names,
        }
    try:
        with datasets_bars_off():
            stream = datasets.load_dataset(builder, split=entry.split, streaming=True, **options)
    except (ValueError, FileNotFoundError) as error:  # an unknown split, an unreadable file
        raise LoganError(f"{key}={entry.text()}: {str(error).strip().splitlines()[0]}") from None
    return _checked(stream, entry, key, provenance, base, entry.text(commit))


def open_saved_dataset(folder: Path, entry: Entry, key: str) -> Source:
    """A `datasets` save_to_disk folder (a Dataset, or a DatasetDict: its `entry.split`), as a stream."""
    import datasets

    with datasets_bars_off():
        loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
        if entry.split not in loaded:
            raise LoganError(f"{key}={folder} has no split {entry.split} (splits: {', '.join(loaded)}).")
        loaded = loaded[entry.split]
    provenance = {
        "source": str(folder.resolve()),
        "kind": "saved dataset",
        "split": entry.split,
        "image": entry.image,
        "label": entry.label,
    }
    return _checked(loaded.to_iterable_dataset(), entry, key, provenance, folder, str(folder))


def _checked(
    stream: Any, entry: Entry, key: str, provenance: dict[str, Any], base: Path | None, origin: str
) -> Source:
    """A stream whose image / label / caption columns are checked, its images read as bytes."""
    from datasets import Image as ImageFeature

    try:
        features = stream.features or {}
        columns = list(features) or list(next(iter(stream.take(1)), {}))  # streamed CSV / JSON: from row 1
    except (ValueError, FileNotFoundError) as error:
        raise LoganError(f"{key}={origin}: {str(error).strip().splitlines()[0]}") from None
    for role in ("image", "label"):
        column = getattr(entry, role)
        if column not in columns:
            raise LoganError(
                f"{key}={origin} has no {role} column '{column}' (columns: {', '.join(columns)}); "
                f"name it with {role}=COLUMN."
            )
    if entry.caption and entry.caption not in columns:
        raise LoganError(
            f"{key}={origin} has no caption column '{entry.caption}' (columns: {', '.join(columns)})."
        )
    caption = entry.caption or ("caption" if "caption" in columns else None)
    if isinstance(
        features.get(entry.image), ImageFeature
    ):  # otherwise raw cells: a path, bytes or {bytes, path}
        stream = stream.cast_column(entry.image, ImageFeature(decode=False))
    names = getattr(features.get(entry.label), "names", None)
    return Source(entry, key, provenance, base, stream, caption, names, origin)


def _hub_snapshot(entry: Entry, key: str, cache_dir: str | None) -> tuple[Path, str]:
    """A Hub dataset's snapshot folder, holding the README and the chosen config's files, and its commit."""
    from logan.models.hub import HubRef, download

    ref = HubRef(entry.location, entry.revision or "main", None, "dataset")
    folder, commit = download(ref, key, cache_dir, allow=["README.md"])
    configs = readme_configs(folder)  # a wrong or missing config is named before any data file is fetched
    patterns = _patterns(_chosen(configs, _config(entry, list(configs), key))) if configs else None
    folder, _ = download(
        replace(ref, revision=commit),
        key,
        cache_dir,
        allow=["README.md", *(p for split in patterns.values() for p in split)] if patterns else None,
    )
    return folder, commit


def readme_configs(folder: Path) -> dict[str, dict[str, Any]]:
    """The configs a dataset repository's README declares (its YAML `configs:`), by name."""
    readme = folder / "README.md"
    if not readme.is_file():
        return {}
    from huggingface_hub import DatasetCard

    configs = DatasetCard.load(readme).data.to_dict().get("configs") or []
    return {c.get("config_name", "default"): c for c in configs}


def _chosen(configs: dict[str, dict[str, Any]], name: str | None) -> dict[str, Any]:
    return configs[name] if name else next(iter(configs.values()))


def _patterns(config: dict[str, Any]) -> dict[str, list[str]]:
    """split -> the file patterns of one README config (`data_files` as a string, a list, or {split, path}
    entries; or a `data_dir`), matched as fnmatch does (and as huggingface_hub's allow_patterns do)."""
    files, data_dir = config.get("data_files"), config.get("data_dir")
    if files is None:
        return {"train": [f"{data_dir}/*" if data_dir else "*"]}
    out: dict[str, list[str]] = {}
    paths: Any  # YAML: one pattern or a list of them
    for item in files if isinstance(files, list) else [files]:
        split, paths = (
            (item.get("split", "train"), item.get("path")) if isinstance(item, dict) else ("train", item)
        )
        out.setdefault(split, []).extend(paths if isinstance(paths, list) else [paths])
    return out


def _split_files(folder: Path, config: dict[str, Any], entry: Entry, key: str) -> dict[str, list[str]]:
    """split -> the files of a README config that are there (a split none of whose files are there is none)."""
    every = [f.relative_to(folder).as_posix() for f in sorted(folder.rglob("*")) if f.is_file()]
    found = {
        split: [str(folder / f) for f in every if f != "README.md" and any(fnmatch(f, p) for p in patterns)]
        for split, patterns in _patterns(config).items()
    }
    found = {split: files for split, files in found.items() if files}
    if entry.split not in found:
        raise LoganError(f"{key}={entry.text()}: Bad split: {entry.split}. Available splits: {sorted(found)}")
    return found


BUILDERS = {
    ".parquet": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".arrow": "arrow",
}


def _builder(files: list[str], entry: Entry, key: str) -> str:
    """The datasets builder that reads files of this format (images and zip archives: imagefolder)."""
    suffixes = {Path(f).suffix.lower() for f in files}
    tables = {BUILDERS[s] for s in suffixes if s in BUILDERS}
    if len(tables) == 1:
        return tables.pop()
    if not tables:
        return "imagefolder"
    raise LoganError(f"{key}={entry.text()} mixes file formats ({', '.join(sorted(suffixes))}) in one split.")


def _inferred_configs(folder: Path) -> list[str]:
    import datasets

    return datasets.get_dataset_config_names(str(folder))


def _config(entry: Entry, names: list[str], key: str) -> str | None:
    """The config to read: the one asked for (checked), or the only one there is."""
    where = f"{key}=hf:{entry.location}"
    if entry.config is None:
        if len(names) > 1:
            raise LoganError(
                f"{where} has the configs {', '.join(names)}: choose one with config=NAME (e.g. "
                f"hf:{entry.location}?config={names[0]})."
            )
        return names[0] if names and names[0] != "default" else None
    if entry.config not in names:
        raise LoganError(
            f"{where} has no config '{entry.config}'.{did_you_mean(entry.config, names)} "
            f"Configs: {', '.join(names)}."
        )
    return entry.config


def _data_files(folder: str, config: str | None, split: str) -> list[str]:
    """The names of the files a config's split reads (for the provenance)."""
    import datasets

    files = datasets.load_dataset_builder(folder, config).config.data_files or {}
    return sorted(
        Path(str(f)).relative_to(folder).as_posix() if str(f).startswith(folder) else str(f)
        for f in files.get(split, [])
    )


# ---------------------------------------------------------------------------------------------------------
def image_bytes(cell: Any, base: Path | None, where: str) -> tuple[bytes, str | None, str | None]:
    """(bytes, the file's path or None, display name) of an image cell: {bytes, path}, bytes, or a path."""
    data, path = (
        (cell.get("bytes"), cell.get("path"))
        if isinstance(cell, dict)
        else ((cell, None) if isinstance(cell, (bytes, bytearray)) else (None, cell))
    )
    name = Path(str(path)).name if path else None
    if data:
        return bytes(data), None, name
    if not path:
        raise LoganError(f"{where}: the image cell holds neither bytes nor a path.")
    file = Path(str(path)).expanduser()
    if not file.is_absolute() and base is not None:
        file = base / file
    from logan.data.images import read_bytes

    return read_bytes(file, where), str(file.resolve()), name


def _label(source: Source, value: Any, row: int) -> int:
    from logan.data.converters.common import parse_label

    return parse_label(value, f"{source.key}={source.origin}, row {row}", source.label_names)


class Rows(Sequence):
    """The rows of a source to draw from: content id, label and row number, kept as packed arrays (about 50
    bytes a row, no Python object per row until one is read); `known` holds what is already known of a row
    (a JSON list's file, name and caption). Reading an item gives a fresh dict."""

    def __init__(self) -> None:
        self.digests, self.labels, self.rows = bytearray(), array("b"), array("q")  # label -1: unlabelled
        self.known: dict[int, dict[str, Any]] = {}
        self.positions: np.ndarray | None = None  # a view: the rows kept by `where`

    def add(self, digest: bytes, label: int, row: int, **known: Any) -> None:
        self.digests += digest
        self.labels.append(label)
        self.rows.append(row)
        if known:
            self.known[len(self.rows) - 1] = known

    def __len__(self) -> int:
        return len(self.rows) if self.positions is None else len(self.positions)

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        at = i if self.positions is None else int(self.positions[i])
        digest = bytes(self.digests[32 * at : 32 * at + 32])
        return {
            "sample_id": ID_PREFIX + digest.hex(),
            "label": self.labels[at],
            "row": self.rows[at],
            **self.known.get(at, {}),
        }

    def where(self, keep: Callable[[dict[str, Any]], bool]) -> Rows:
        """A view of the rows `keep` accepts, in order."""
        view = Rows()
        view.digests, view.labels, view.rows, view.known = self.digests, self.labels, self.rows, self.known
        base = range(len(self.rows)) if self.positions is None else self.positions
        view.positions = np.fromiter((at for i, at in enumerate(base) if keep(self[i])), np.int64)
        return view


def index(source: Source) -> Rows:
    """Every row's content id and label (the first row of each image; no bytes kept), and the source's
    provenance (rows read, content fingerprint over every row's id and label)."""
    entry = source.entry
    first: dict[bytes, int] = {}  # digest -> label of its first row
    rows = Rows()
    content = hashlib.sha256()
    count = 0
    for row, cells in source.rows([entry.image, entry.label]):
        where = f"{source.key}={source.origin}, row {row}"
        digest = hashlib.sha256(image_bytes(cells[entry.image], source.base, where)[0]).digest()
        label = _label(source, cells[entry.label], row)
        count += 1
        content.update(digest + bytes([label]))
        if digest in first:
            if first[digest] != label:
                raise LoganError(
                    f"{where}: the same image is labelled {label} here and {1 - label} in an earlier "
                    "row; fix the labels."
                )
            continue
        first[digest] = label
        rows.add(digest, label, row)
    if not count:
        raise LoganError(f"{source.key}={source.origin} holds no rows.")
    source.dropped = count - len(rows)
    if source.dropped:
        log.warning(
            "%s: %d rows repeat an earlier row's image; each image is used once", source.key, source.dropped
        )
    source.provenance |= {"rows": count, "content": "sha256:" + content.hexdigest()}
    return rows


def fetch(source: Source, chosen: list[dict[str, Any]]) -> None:
    """Second pass: fill in the bytes (or the file), name, caption and origin of the chosen records."""
    wanted = {r["row"]: r for r in chosen}
    columns = [source.entry.image, *([source.caption] if source.caption else [])]
    for row, cells in source.rows(columns):
        record = wanted.pop(row, None)
        if record is None:
            continue
        where = f"{source.key}={source.origin}, row {row}"
        data, path, name = image_bytes(cells[source.entry.image], source.base, where)
        if ID_PREFIX + hashlib.sha256(data).hexdigest() != record["sample_id"]:
            raise LoganError(f"{where} changed while it was read; rerun.")
        caption = cells.get(source.caption) if source.caption else None
        record.update(
            image=None if path else data,
            path=path,
            name=name or f"row {row}",
            origin=source.origin,
            caption="" if caption is None else str(caption),
        )
        if not wanted:
            return
