"""Member / non-member lists -> the seeded target set and the reference set (the seed's four modes).

Lists are JSON `[{"image": path, "label": 1|0, "caption"?: text}]` or Parquet files with at least
the columns `image` and `label`. JSON inputs are sampled (seeded); Parquet inputs are reloaded as is.
Relative image paths are resolved against the list's own folder first, then the working directory.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from logan.config import DataConfig
from logan.errors import LoganError, count
from logan.io import write_parquet

log = logging.getLogger(__name__)

COLUMNS = ["image", "label", "caption"]
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

    def all_samples(self) -> pd.DataFrame:
        """Unique images to run through the model (a reference identical to target rows is not rerun)."""
        both = pd.concat([self.target, self.reference], ignore_index=True)
        return both.drop_duplicates("image", keep="first").reset_index(drop=True)

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        target = self.target
        write_parquet(folder / SET_FILES["member"], target[target.label == 1].reset_index(drop=True))
        write_parquet(folder / SET_FILES["nonmember"], target[target.label == 0].reset_index(drop=True))
        write_parquet(folder / SET_FILES["target"], target)
        write_parquet(folder / SET_FILES["reference"], self.reference)
        write_parquet(folder / SET_FILES["full"], self.all_samples())


def read_list(path: str | Path, what: str) -> pd.DataFrame:
    """Read a member / non-member list (JSON or Parquet) into a validated frame with absolute paths."""
    path = Path(path)
    if not path.is_file():
        raise LoganError(f"{what} file not found: {path}. Give the path of a JSON list or a Parquet set.")
    if path.suffix.lower() == ".parquet":
        frame = _read_parquet(path, what)
    else:
        frame = _read_json(path, what)
    if frame.empty:
        raise LoganError(f"{what} {path} is empty: it must hold at least one entry.")
    frame["image"] = [_resolve(p, path.parent) for p in frame["image"]]
    labels = frame.groupby("image", sort=False).label.nunique()
    both = labels.index[labels > 1]
    if len(both):
        raise LoganError(f"{what} {path} labels {count(len(both), 'image')} both member (1) and non-member (0) "
                         f"(first: {both[0]}); fix the labels.")
    times = frame.image.value_counts()
    repeated = times[times > 1]
    if len(repeated):
        how = "twice" if repeated.max() == 2 else "more than once"
        log.warning("%s %s lists %s %s (first: %s); each is used once", what, path, count(len(repeated), "image"),
                    how, repeated.index[0])
        frame = frame[~frame.image.duplicated()].reset_index(drop=True)
    return frame


def _read_parquet(path: Path, what: str) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise LoganError(f"{what} {path} is not a readable Parquet file ({exc}).")
    missing = [c for c in ("image", "label") if c not in frame.columns]
    if missing:
        raise LoganError(
            f"{what} {path} lacks the column(s) {', '.join(missing)}: a LOGAN set needs 'image' and 'label' "
            "(use the Parquet files a 'logan tune' run saved under datasets/)."
        )
    return _normalise(frame.to_dict("records"), path, what)


def _read_json(path: Path, what: str) -> pd.DataFrame:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not content
        entries = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        lines = text.lstrip().startswith("{") and "Extra data" in str(exc)
        raise LoganError(f"{what} {path} is not valid JSON ({exc})"
                         + ("; it looks like JSON Lines (one object per line): wrap the objects in one JSON list "
                            "[{...}, {...}]." if lines else "."))
    if not isinstance(entries, list):
        raise LoganError(
            f"{what} {path} must be a JSON list of {{\"image\": path, \"label\": 1|0}} objects, "
            f"not a {type(entries).__name__}."
        )
    return _normalise(entries, path, what)


def _normalise(entries: list[Any], path: Path, what: str) -> pd.DataFrame:
    rows = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise LoganError(
                f"{what} {path}, entry {i}: expected an object with 'image' and 'label', got {str(entry)[:80]}."
            )
        label = _label(entry["label"])
        if label is None:
            raise LoganError(
                f"{what} {path}, entry {i}: label {entry['label']!r} is not 1 (member) or 0 (non-member)."
            )
        image, caption = entry["image"], entry.get("caption", entry.get("text"))
        if not isinstance(image, (str, Path)) or not str(image).strip():
            raise LoganError(f"{what} {path}, entry {i}: 'image' must be the path of an image file, got "
                             f"{str(image)[:80]!r} (images stored inside a dataset: convert it with 'logan prepare').")
        missing = caption is None or (isinstance(caption, float) and np.isnan(caption))  # NaN: Parquet's null
        if not missing and not isinstance(caption, str):
            raise LoganError(f"{what} {path}, entry {i}: 'caption' must be text, got {type(caption).__name__} "
                             f"{str(caption)[:60]}.")
        rows.append({"image": str(image), "label": label, "caption": "" if missing else caption})
    return pd.DataFrame(rows, columns=COLUMNS)


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


def _sample(frame: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = np.sort(rng.choice(len(frame), size=n, replace=False))
    return frame.iloc[rows].reset_index(drop=True)


def _take_label(frame: pd.DataFrame, label: int, path: str, what: str) -> pd.DataFrame:
    wrong = frame[frame.label != label]
    if len(wrong):
        raise LoganError(
            f"{what} {path} holds {len(wrong)} entries labelled {1 - label} (first: {wrong.image.iloc[0]}); "
            f"every entry there must be labelled {label}. Fix the labels or the file."
        )
    return frame


def build_target(cfg: DataConfig, seed: int) -> pd.DataFrame:
    """Target set: seeded sample of members and non-members, or a Parquet set reloaded as is."""
    if cfg.dataset:
        target = read_list(cfg.dataset, "data.dataset")
        _check_both_classes(target, cfg.dataset)
        return target
    if not cfg.member_dataset or not cfg.nonmember_dataset:
        raise LoganError(
            "no target data: give data.member_dataset=M.json and data.nonmember_dataset=N.json "
            "(or data.dataset=OUT/datasets/target_dataset.parquet)."
        )
    members = _take_label(read_list(cfg.member_dataset, "data.member_dataset"), 1,
                          cfg.member_dataset, "data.member_dataset")
    nonmembers = _take_label(read_list(cfg.nonmember_dataset, "data.nonmember_dataset"), 0,
                             cfg.nonmember_dataset, "data.nonmember_dataset")
    _refuse_members(nonmembers, set(members.image), "data.nonmember_dataset", "data.member_dataset")
    parquet = [p for p in (cfg.member_dataset, cfg.nonmember_dataset) if str(p).endswith(".parquet")]
    if len(parquet) == 2:
        return pd.concat([members, nonmembers], ignore_index=True)
    if parquet:
        raise LoganError(
            "data.member_dataset and data.nonmember_dataset must both be JSON (sample a new target set) "
            "or both be saved Parquet sets (reload one)."
        )
    if cfg.target_set_size is None:
        raise LoganError("data.target_set_size is not set: give the number of target samples (members + non-members).")
    n_nonmembers = int(round(cfg.target_set_size * cfg.n_nm_ratio))
    n_members = cfg.target_set_size - n_nonmembers
    if n_members < 1 or n_nonmembers < 1:
        raise LoganError(
            f"data.target_set_size={cfg.target_set_size} with data.n_nm_ratio={cfg.n_nm_ratio} leaves "
            f"{n_members} members and {n_nonmembers} non-members; raise the size so both are at least 1."
        )
    for n, frame, key in ((n_members, members, "member_dataset"), (n_nonmembers, nonmembers, "nonmember_dataset")):
        if n > len(frame):
            raise LoganError(
                f"data.target_set_size={cfg.target_set_size} with data.n_nm_ratio={cfg.n_nm_ratio} needs {n} "
                f"entries from data.{key}, which holds {len(frame)}. Lower data.target_set_size."
            )
    rng = np.random.default_rng([seed, 1])
    return pd.concat([_sample(members, n_members, rng), _sample(nonmembers, n_nonmembers, rng)],
                     ignore_index=True)


def _refuse_members(frame: pd.DataFrame, members: set[str], what: str, where: str) -> None:
    """Non-member entries (a non-member list or a reference pool) must not name a member: checked on the
    whole lists, before any sampling."""
    both = [image for image in frame.image if image in members]
    if both:
        raise LoganError(f"{count(len(both), 'image')} of {what} {'is' if len(both) == 1 else 'are'} also in "
                         f"{where} (first: {both[0]}): an image cannot be both member and non-member; fix the lists.")


def _check_both_classes(target: pd.DataFrame, path: str) -> None:
    if target.label.nunique() < 2:
        raise LoganError(f"target set {path} holds only label {int(target.label.iloc[0])}: it needs both classes.")


def build_reference(cfg: DataConfig, target: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, bool]:
    """Reference set (known non-members) in one of the seed's modes; returns (set, is_target_nonmembers)."""
    paths = cfg.reference_datasets_list
    if isinstance(paths, str):
        paths = [paths]
    paths = [str(p) for p in (paths or [])]
    if not paths:
        return target[target.label == 0].reset_index(drop=True), True
    members = set(target[target.label == 1].image)
    if len(paths) == 1 and paths[0].endswith(".parquet"):
        reference = _take_label(read_list(paths[0], "data.reference_datasets_list"), 0, paths[0], "reference set")
        _refuse_members(reference, members, f"the reference set {paths[0]}", "the target set's members")
        return reference, False
    weights = _distribution(cfg.reference_set_sample_distribution, len(paths))
    pools = [_take_label(read_list(p, "reference set"), 0, p, "reference set") for p in paths]
    for path, pool in zip(paths, pools):
        _refuse_members(pool, members, f"the reference list {path}", "the target set's members")
    in_target = set(target.image)
    for path, pool in zip(paths, pools):
        shared = int(pool.image.isin(in_target).sum())
        if shared:
            log.info("reference list %s: %s of the target set's non-members left out (the reference set is drawn "
                     "from images outside the target set)", path, count(shared, "image"))
    pools = [pool[~pool.image.isin(in_target)].reset_index(drop=True) for pool in pools]
    size = cfg.reference_set_size or cfg.target_set_size
    counts = _split_counts(size, weights)
    explicit = cfg.reference_set_size is not None
    rng = np.random.default_rng([seed, 2])
    parts = []
    for path, pool, n in zip(paths, pools, counts):
        if n > len(pool):
            if explicit or len(paths) > 1:
                raise LoganError(
                    f"the reference set needs {n} entries from {path}, which holds {len(pool)} images outside "
                    "the target set. Lower data.reference_set_size or add images."
                )
            log.warning("reference pool %s holds %d images outside the target set; using all", path, len(pool))
            n = len(pool)
        parts.append(_sample(pool, n, rng))
    reference = pd.concat(parts, ignore_index=True).drop_duplicates("image").reset_index(drop=True)
    if reference.empty:
        raise LoganError("the reference set is empty: its files hold no images outside the target set.")
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


def build_sets(cfg: DataConfig, seed: int, saved: Path | None) -> tuple[DataSets, bool]:
    """Target + reference sets; a run folder that already holds them reloads them (resume).

    Returns (sets, reloaded). Nothing is written here: the caller saves the sets once its checks pass.
    """
    if saved and (Path(saved) / SET_FILES["target"]).exists() and (Path(saved) / SET_FILES["reference"]).exists():
        target = read_list(Path(saved) / SET_FILES["target"], "saved target set")
        reference = read_list(Path(saved) / SET_FILES["reference"], "saved reference set")
        same = not cfg.reference_datasets_list
        return DataSets(target, reference, same), True
    target = build_target(cfg, seed)
    reference, same = build_reference(cfg, target, seed)
    return DataSets(target, reference, same), False
