"""Member / non-member data -> the seeded target set and the reference set (the seed's four modes).

An entry (data.member_dataset, data.nonmember_dataset, data.dataset, each reference entry) is a JSON list
`[{"image": path, "label": 1|0, "caption"?: text}]` (relative paths resolve against the list's folder,
then the working directory), a Hugging Face dataset or a table (`logan.data.sources`), or a set LOGAN
saved (`logan.data.saved`), which reloads as is. Samples are keyed by the sha256 of their image bytes: the
same image under two paths is one sample. A fresh labelled source given as data.dataset is the pool both
classes are drawn from; given as member / non-member entry, its rows are filtered by label (a JSON list
must hold that label only, as in the seed).

Images whose membership is unknown (the question `logan classify` answers per image) come as data.dataset:
a JSON list whose entries have no label (or label null / -1), or a folder of image files. Such a target
set is every image given, as is (no draw), labelled UNLABELLED (-1); its verdicts come from the reference
set alone (`logan.report.verdicts`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from logan.config import DataConfig
from logan.data.converters.common import IMAGE_SUFFIXES
from logan.data.images import ID_PREFIX, read_bytes
from logan.data.saved import COLUMNS, empty_set, read_set, saved_metadata, typed, write_images, write_set
from logan.data.sources import Rows, Source, fetch, index, open_source, parse_entry
from logan.errors import LoganError, count

log = logging.getLogger(__name__)

LIST_COLUMNS = ["image", "label", "caption"]
UNLABELLED = -1  # an image whose membership is unknown (data.dataset only)
SET_FILES = {
    "member": "member_target_dataset.parquet",
    "nonmember": "non_member_target_dataset.parquet",
    "target": "target_dataset.parquet",
    "reference": "reference_dataset.parquet",
    "full": "full_dataset.parquet",
}


@dataclass
class DataSets:
    """The target set (members + non-members, labels 1/0) and the reference set (known non-members)."""

    target: pd.DataFrame
    reference: pd.DataFrame
    reference_is_target_nonmembers: bool
    sources: list[dict[str, Any]] = field(default_factory=list)  # provenance of every entry read

    def __post_init__(self) -> None:
        self.sources = self.sources or _sources(self.target, self.reference)

    def all_samples(self) -> pd.DataFrame:
        """Unique images to run through the model (a reference identical to target rows is not rerun)."""
        both = pd.concat([self.target, self.reference], ignore_index=True)
        return both.drop_duplicates("sample_id", keep="first").reset_index(drop=True)

    def save(self, folder: Path, kinds: tuple[str, ...] = tuple(SET_FILES)) -> None:
        """The set files `kinds` (the images held as bytes once, in the sidecar they name)."""
        folder = Path(folder)
        target, every = self.target, self.all_samples()
        write_images(folder, every)
        parts = {
            "member": target[target.label == 1],
            "nonmember": target[target.label == 0],
            "target": target,
            "reference": self.reference,
            "full": every,
        }
        for kind in kinds:
            write_set(folder / SET_FILES[kind], parts[kind].reset_index(drop=True), kind, self.sources)


def read_list(path: str | Path, what: str, unlabelled: bool = False) -> pd.DataFrame:
    """Read a JSON member / non-member list into a validated frame (image, label, caption) with absolute
    paths; an image listed twice under one path is used once. `unlabelled`: entries without a label (or
    label null / -1) are read as UNLABELLED, and a folder is read as every image file in it, unlabelled."""
    path = Path(path).expanduser()
    if unlabelled and path.is_dir():
        return read_folder(path, what)
    if not path.is_file():
        raise LoganError(
            f"{what} file not found: {path}. Give the path of a JSON list, a table, a dataset "
            "(hf:ORG/NAME) or a saved Parquet set."
        )
    if path.suffix.lower() == ".parquet":
        raise LoganError(
            f"{what} {path} is not a set saved by LOGAN; a Parquet table is read as a pool to sample "
            "from (image and label columns)."
        )
    frame = _read_json(path, what, unlabelled)
    if frame.empty:
        raise LoganError(f"{what} {path} is empty: it must hold at least one entry.")
    frame["image"] = [_resolve(p, path.parent) for p in frame["image"]]
    labels = frame[frame.label != UNLABELLED].groupby("image", sort=False).label.nunique()
    both = labels.index[labels > 1]
    if len(both):
        raise LoganError(
            f"{what} {path} labels {count(len(both), 'image')} both member (1) and non-member (0) "
            f"(first: {both[0]}); fix the labels."
        )
    times = frame.image.value_counts()
    repeated = times[times > 1]
    if len(repeated):
        how = "twice" if repeated.max() == 2 else "more than once"
        log.warning(
            "%s %s lists %s %s (first: %s); each is used once",
            what,
            path,
            count(len(repeated), "image"),
            how,
            repeated.index[0],
        )
        frame = frame[~frame.image.duplicated()].reset_index(drop=True)
    return frame


def read_folder(path: Path, what: str) -> pd.DataFrame:
    """Every image file under a folder (by suffix, hidden files skipped, sorted), unlabelled."""
    files = sorted(
        str(p.resolve())
        for p in path.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise LoganError(
            f"{what} {path} is a folder without image files ({', '.join(sorted(IMAGE_SUFFIXES))})."
        )
    return pd.DataFrame({"image": files, "label": UNLABELLED, "caption": ""}, columns=LIST_COLUMNS)


def _read_json(path: Path, what: str, unlabelled: bool = False) -> pd.DataFrame:
    text = ""  # stays empty when the file is not UTF-8
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not content
        entries = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        lines = text.lstrip().startswith("{") and "Extra data" in str(exc)
        raise LoganError(
            f"{what} {path} is not valid JSON ({exc})"
            + (
                "; it looks like JSON Lines (one object per line): wrap the objects in one JSON list "
                "[{...}, {...}]."
                if lines
                else "."
            )
        )
    if not isinstance(entries, list):
        raise LoganError(
            f'{what} {path} must be a JSON list of {{"image": path, "label": 1|0}} objects, '
            f"not a {type(entries).__name__}."
        )
    return _normalise(entries, path, what, unlabelled)


def _normalise(entries: list[Any], path: Path, what: str, unlabelled: bool = False) -> pd.DataFrame:
    rows = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "image" not in entry or ("label" not in entry and not unlabelled):
            raise LoganError(
                f"{what} {path}, entry {i}: expected an object with 'image' and 'label', got {str(entry)[:80]}."
            )
        label = UNLABELLED if unlabelled and entry.get("label") in (None, -1) else _label(entry["label"])
        if label is None:
            raise LoganError(
                f"{what} {path}, entry {i}: label {entry['label']!r} is not 1 (member) or 0 (non-member)."
            )
        image, caption = entry["image"], entry.get("caption", entry.get("text"))
        if not isinstance(image, (str, Path)) or not str(image).strip():
            raise LoganError(
                f"{what} {path}, entry {i}: 'image' must be the path of an image file, got "
                f"{str(image)[:80]!r} (images stored inside a dataset: convert it with 'logan prepare')."
            )
        missing = caption is None or (isinstance(caption, float) and np.isnan(caption))  # NaN: Parquet's null
        if not missing and not isinstance(caption, str):
            raise LoganError(
                f"{what} {path}, entry {i}: 'caption' must be text, got {type(caption).__name__} "
                f"{str(caption)[:60]}."
            )
        rows.append({"image": str(image), "label": label, "caption": "" if missing else caption})
    return pd.DataFrame(rows, columns=LIST_COLUMNS)


def _label(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number in (0.0, 1.0) else None


def _resolve(image: str, base: Path) -> str:
    candidate = Path(image).expanduser()
    if not candidate.is_absolute():
        beside = base / candidate
        candidate = beside if beside.exists() else Path.cwd() / candidate
    return str(candidate.resolve())


def _take_label(frame: pd.DataFrame, label: int, path: str, what: str) -> pd.DataFrame:
    wrong = frame[frame.label != label]
    if len(wrong):
        raise LoganError(
            f"{what} {path} holds {len(wrong)} entries labelled {wrong.label.iloc[0]} "
            f"(first: {_shown(wrong.iloc[0])}); "
            f"every entry there must be labelled {label}. Fix the labels or the file."
        )
    return frame


def _shown(row: Any) -> str:
    """How a row is named in a message: its file, else its name."""
    return str(row.get("image") if "sample_id" not in row else (row.get("path") or row.get("name")))


def _is_saved(value: str) -> bool:
    """Whether an entry names a set LOGAN saved (a Parquet file with LOGAN's metadata)."""
    path = Path(value).expanduser()
    return path.suffix.lower() == ".parquet" and path.is_file() and saved_metadata(path) is not None


@dataclass
class Pool:
    """The rows of one entry to draw from: content id, label and row (all that is known before the draw)."""

    records: Rows
    provenance: dict[str, Any]
    source: Source | None = None  # a dataset or table: the drawn rows' bytes are read by a second pass


def open_pool(value: str, key: str, label: int | None, cache_dir: str | None = None) -> Pool:
    """One entry's rows, deduplicated by content: a JSON list (every entry must carry `label` when given), or
    a dataset / table (its rows filtered by `label` when given)."""
    if _is_saved(value):  # a saved set inside a mixture: its rows, as they are
        frame = read_set(Path(value).expanduser(), key)
        if label is not None:
            _take_label(frame, label, value, key)
        rows = Rows()
        for i, record in enumerate(frame.to_dict("records")):
            rows.add(
                bytes.fromhex(record.pop("sample_id").removeprefix(ID_PREFIX)),
                record.pop("label"),
                i,
                **record,
            )
        return Pool(
            rows,
            {
                "key": key,
                "source": str(Path(value).expanduser().resolve()),
                "kind": "saved",
                "rows": len(frame),
            },
        )
    entry = parse_entry(value, key)
    if entry.kind == "file":
        return _list_pool(Path(entry.location), key, label, unlabelled=key == "data.dataset")
    source = open_source(entry, key, cache_dir)
    records = index(source)
    kept = records if label is None else records.where(lambda r: r["label"] == label)
    if not kept:
        raise LoganError(
            f"{key}={source.origin} holds no rows labelled {label} (column '{entry.label}', "
            f"{len(records)} rows)."
        )
    return Pool(kept, {"key": key, **source.provenance}, source)


def _list_pool(path: Path, key: str, label: int | None, unlabelled: bool = False) -> Pool:
    """A JSON list (today's strictness: a wrong label is an error), each image read once for its id;
    `unlabelled`: entries may lack a label, and a folder is every image in it."""
    frame = read_list(path, key, unlabelled)
    if label is not None:
        _take_label(frame, label, str(path), key)
    records, seen = Rows(), set()
    content = hashlib.sha256()
    for i, row in enumerate(frame.itertuples(index=False)):
        digest = hashlib.sha256(read_bytes(row.image, f"{key} {path}, entry {i}")).digest()
        content.update(digest + bytes([row.label % 256]))
        if digest in seen:
            continue
        seen.add(digest)
        records.add(
            digest,
            int(row.label),
            i,
            caption=row.caption,
            name=Path(row.image).name,
            path=row.image,
            image=None,
            origin=str(path.resolve()),
        )
    if len(records) < len(frame):
        log.warning(
            "%s %s lists %d images twice (the same bytes); each is used once",
            key,
            path,
            len(frame) - len(records),
        )
    return Pool(
        records,
        {
            "key": key,
            "source": str(path.resolve()),
            "kind": "folder" if path.is_dir() else "list",
            "rows": len(frame),
            "content": "sha256:" + content.hexdigest(),
        },
    )


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    if not records:
        return empty_set()
    return typed(pd.DataFrame([{c: r.get(c) for c in COLUMNS} for r in records], columns=COLUMNS))


def _draw(records: Rows, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    picked = np.sort(rng.choice(len(records), size=n, replace=False))
    return [records[int(i)] for i in picked]


def _finish(pools: list[Pool], chosen: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Read the drawn rows of every pool (bytes or file, name, caption) and record what each pool gave."""
    for pool, rows in zip(pools, chosen):
        if pool.source is not None:
            fetch(pool.source, rows)
        pool.provenance["used"] = {
            "members": sum(r["label"] == 1 for r in rows),
            "nonmembers": sum(r["label"] == 0 for r in rows),
            **({"unlabelled": n} if (n := sum(r["label"] == UNLABELLED for r in rows)) else {}),
        }
    return [p.provenance for p in pools]


def _sources(*frames: pd.DataFrame) -> list[dict[str, Any]]:
    """The provenance entries the frames carry, each once."""
    found = {json.dumps(s, sort_keys=True): s for frame in frames for s in frame.attrs.get("sources", [])}
    return list(found.values())


def _class_sources(cfg: DataConfig) -> tuple[str, str]:
    """data.member_dataset and data.nonmember_dataset, when data.dataset is not given: both are needed."""
    if not cfg.member_dataset or not cfg.nonmember_dataset:
        raise LoganError(
            "no target data: give data.member_dataset=M.json and data.nonmember_dataset=N.json, or a labelled "
            "dataset as data.dataset=hf:ORG/NAME (or OUT/datasets/target_dataset.parquet)."
        )
    return cfg.member_dataset, cfg.nonmember_dataset


def build_target(cfg: DataConfig, seed: int, cache_dir: str | None = None) -> pd.DataFrame:
    """Target set: a seeded draw of members and non-members, or a set LOGAN saved reloaded as is.
    The frame's `attrs["sources"]` is the provenance of every entry it was drawn from."""
    if cfg.dataset and _is_saved(cfg.dataset):
        target = read_set(Path(cfg.dataset).expanduser(), "data.dataset")
        _check_both_classes(target, cfg.dataset)
        return target
    if cfg.dataset and parse_entry(cfg.dataset, "data.dataset").kind == "file":
        pool = open_pool(cfg.dataset, "data.dataset", None, cache_dir)
        if any(pool.records[i]["label"] == UNLABELLED for i in range(len(pool.records))):
            return _as_given(pool)
    if not cfg.dataset:
        member, nonmember = _class_sources(cfg)
        saved = [_is_saved(p) for p in (member, nonmember)]
        if all(saved):
            members = _take_label(
                read_set(Path(member).expanduser(), "data.member_dataset"), 1, member, "data.member_dataset"
            )
            nonmembers = _take_label(
                read_set(Path(nonmember).expanduser(), "data.nonmember_dataset"),
                0,
                nonmember,
                "data.nonmember_dataset",
            )
            target = pd.concat([members, nonmembers], ignore_index=True)
            target.attrs["sources"] = _sources(members, nonmembers)
            return target
        if any(saved):
            raise LoganError(
                "data.member_dataset and data.nonmember_dataset must both be fresh sources (sample a new target "
                "set) or both be saved Parquet sets (reload one)."
            )
    if cfg.target_set_size is None:
        raise LoganError(
            "data.target_set_size is not set: give the number of target samples (members + non-members)."
        )
    n_nonmembers = round(cfg.target_set_size * cfg.n_nm_ratio)
    n_members = cfg.target_set_size - n_nonmembers
    if n_members < 1 or n_nonmembers < 1:
        raise LoganError(
            f"data.target_set_size={cfg.target_set_size} with data.n_nm_ratio={cfg.n_nm_ratio} leaves "
            f"{n_members} members and {n_nonmembers} non-members; raise the size so both are at least 1."
        )
    if cfg.dataset:  # one labelled source: the pool both classes are drawn from
        pools = [open_pool(cfg.dataset, "data.dataset", None, cache_dir)]
        labelled = pools[0].records
        classes = [
            (labelled.where(lambda r: r["label"] == 1), "data.dataset"),
            (labelled.where(lambda r: r["label"] == 0), "data.dataset"),
        ]
    else:
        member, nonmember = _class_sources(cfg)
        pools = [
            open_pool(member, "data.member_dataset", 1, cache_dir),
            open_pool(nonmember, "data.nonmember_dataset", 0, cache_dir),
        ]
        classes = [(pools[0].records, "data.member_dataset"), (pools[1].records, "data.nonmember_dataset")]
    _refuse_members(classes[1][0], _ids(classes[0][0]), classes[1][1], classes[0][1])
    for n, (records, key), what in zip((n_members, n_nonmembers), classes, ("members", "non-members")):
        if n > len(records):
            raise LoganError(
                f"data.target_set_size={cfg.target_set_size} with data.n_nm_ratio={cfg.n_nm_ratio} needs {n} "
                f"entries from {key}, which holds {len(records)} {what}. Lower data.target_set_size."
            )
    rng = np.random.default_rng([seed, 1])
    members, nonmembers = _draw(classes[0][0], n_members, rng), _draw(classes[1][0], n_nonmembers, rng)
    provenance = _finish(pools, [members + nonmembers] if cfg.dataset else [members, nonmembers])
    target = _frame(members + nonmembers)
    target.attrs["sources"] = provenance
    return target


def _as_given(pool: Pool) -> pd.DataFrame:
    """A list with unlabelled images: every image in it, as given (no draw, data.target_set_size unused)."""
    rows = [pool.records[i] for i in range(len(pool.records))]
    unknown = sum(r["label"] == UNLABELLED for r in rows)
    log.info(
        "data.dataset %s: %s without a membership label; every image of it is classified (no draw: "
        "data.target_set_size is not used)",
        pool.provenance["source"],
        count(unknown, "image"),
    )
    target = _frame(rows)
    target.attrs["sources"] = _finish([pool], [rows])
    return target


def _refuse_members(records: Rows, members: set[str], what: str, where: str) -> None:
    """Non-member entries (a non-member list or a reference pool) must not hold a member: checked on the
    whole sources, by image content, before any sampling."""
    both = [r for r in (records[i] for i in range(len(records))) if r["sample_id"] in members]
    if both:
        first = both[0].get("path") or f"{both[0]['sample_id']} (row {both[0]['row']})"
        raise LoganError(
            f"{count(len(both), 'image')} of {what} {'is' if len(both) == 1 else 'are'} also in "
            f"{where} (first: {first}): an image cannot be both member and non-member; fix the lists."
        )


def _ids(records: Rows) -> set[str]:
    return {records[i]["sample_id"] for i in range(len(records))}


def _check_both_classes(target: pd.DataFrame, path: str) -> None:
    """A saved target set holds both classes, or images without a label (classified against the reference)."""
    if target.label.nunique() < 2 and not (target.label == UNLABELLED).any():
        raise LoganError(
            f"target set {path} holds only label {int(target.label.iloc[0])}: it needs both classes."
        )


def build_reference(
    cfg: DataConfig, target: pd.DataFrame, seed: int, cache_dir: str | None = None
) -> tuple[pd.DataFrame, bool]:
    """Reference set (known non-members) in one of the seed's modes; returns (set, is_target_nonmembers)."""
    paths = cfg.reference_paths
    if not paths:
        reference = target[target.label == 0].reset_index(drop=True)
        reference.attrs["sources"] = []
        return reference, True
    if len(paths) == 1 and _is_saved(paths[0]):
        reference = _take_label(
            read_set(Path(paths[0]).expanduser(), "data.reference_datasets_list"),
            0,
            paths[0],
            "reference set",
        )
        members = reference.sample_id.isin(set(target[target.label == 1].sample_id))
        if members.any():
            raise LoganError(
                f"{count(int(members.sum()), 'image')} of the reference set {paths[0]} "
                f"{'is' if members.sum() == 1 else 'are'} members of the target set (first: "
                f"{_shown(reference[members].iloc[0])}): a reference image is a known non-member; "
                "give another data.reference_datasets_list."
            )
        return reference, False
    weights = _distribution(cfg.reference_set_sample_distribution, len(paths))
    pools = [open_pool(p, "reference set", 0, cache_dir) for p in paths]
    in_target = set(target.sample_id)
    usable = [pool.records.where(lambda r: r["sample_id"] not in in_target) for pool in pools]
    members = set(target[target.label == 1].sample_id)
    for path, pool in zip(paths, pools):
        _refuse_members(pool.records, members, f"the reference list {path}", "the target set's members")
        shared = len(pool.records) - len(pool.records.where(lambda r: r["sample_id"] not in in_target))
        if shared:
            log.info(
                "reference list %s: %s of the target set's non-members left out (the reference set is drawn "
                "from images outside the target set)",
                path,
                count(shared, "image"),
            )
    size = cfg.reference_set_size or cfg.target_set_size
    counts = _split_counts(size, weights)
    explicit = cfg.reference_set_size is not None
    rng = np.random.default_rng([seed, 2])
    chosen = []
    for path, records, n in zip(paths, usable, counts):
        if n > len(records):
            if explicit or len(paths) > 1:
                raise LoganError(
                    f"the reference set needs {n} entries from {path}, which holds {len(records)} images outside "
                    "the target set. Lower data.reference_set_size or add images."
                )
            log.warning(
                "reference pool %s holds %d images outside the target set; using all", path, len(records)
            )
            n = len(records)
        chosen.append(_draw(records, n, rng))
    provenance = _finish(pools, chosen)
    reference = (
        _frame([r for rows in chosen for r in rows]).drop_duplicates("sample_id").reset_index(drop=True)
    )
    if reference.empty:
        raise LoganError("the reference set is empty: its files hold no images outside the target set.")
    reference.attrs["sources"] = provenance
    return reference, False


def _distribution(weights: list[float] | None, n_paths: int) -> list[float]:
    if n_paths == 1:
        if weights and len(weights) != 1:
            raise LoganError(
                f"data.reference_set_sample_distribution has {len(weights)} values for 1 reference path."
            )
        return [1.0]
    if not weights:
        raise LoganError(
            f"data.reference_datasets_list names {n_paths} files: give data.reference_set_sample_distribution "
            f"with {n_paths} proportions summing to 1.0, e.g. [{', '.join(['0.5'] * 2)}]."
        )
    if len(weights) != n_paths:
        raise LoganError(
            f"data.reference_set_sample_distribution has {len(weights)} values but "
            f"data.reference_datasets_list names {n_paths} files; give one proportion per file."
        )
    if any(float(w) < 0 for w in weights) or abs(sum(float(w) for w in weights) - 1.0) > 1e-6:
        raise LoganError(
            f"data.reference_set_sample_distribution={list(weights)} must be non-negative and sum to 1.0 "
            f"(it sums to {sum(float(w) for w in weights):g})."
        )
    return [float(w) for w in weights]


def _split_counts(size: int, weights: list[float]) -> list[int]:
    """Largest-remainder split of `size` by `weights` (counts sum to size exactly)."""
    raw = np.array(weights) * size
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: size - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def build_sets(
    cfg: DataConfig, seed: int, saved: Path | None, cache_dir: str | None = None
) -> tuple[DataSets, bool]:
    """Target + reference sets; a run folder that already holds them reloads them (resume).

    Returns (sets, reloaded). Nothing is written here: the caller saves the sets once its checks pass.
    """
    if (
        saved
        and (Path(saved) / SET_FILES["target"]).exists()
        and (Path(saved) / SET_FILES["reference"]).exists()
    ):
        target = read_set(Path(saved) / SET_FILES["target"], "saved target set")
        reference = read_set(Path(saved) / SET_FILES["reference"], "saved reference set")
        same = not cfg.reference_datasets_list
        return DataSets(target, reference, same), True
    target = build_target(cfg, seed, cache_dir)
    reference, same = build_reference(cfg, target, seed, cache_dir)
    return DataSets(target, reference, same), False
