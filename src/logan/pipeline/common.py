"""Steps shared by `tune` and `classify`: validate inputs, prepare samples, run the std values."""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from logan import __version__
from logan.config import RunConfig, is_number, parse_std_values, walk
from logan.data.images import ImageFacts, check_image, image_size, sample_id
from logan.data.saved import image_source, sample_bytes
from logan.distributed import ShardInfo
from logan.engine import Engine, EngineSettings, WorkItem, variants_for
from logan.errors import LoganError, count
from logan.faults import fault_point
from logan.io import RunLock, check_fingerprint, read_json, remove_stale_temporaries, write_json
from logan.metrics import fused
from logan.metrics.registry import DEFINITIONS, TKN_SUFFIX, all_metrics, get_metric
from logan.models.base import VLMAdapter, resolve_compile, resolve_device, resolve_dtype
from logan.models.hub import MODEL_PATH_KEYS, local_model, moved_revision, provenance
from logan.models.registry import check_model, load_model
from logan.provenance import PROVENANCE, run_provenance
from logan.results import (
    PER_STD,
    Checkpoints,
    Selection,
    StdWriter,
    drop_finished_chunks,
    first_of_each_class,
    is_done,
)
from logan.runlog import run_log

log = logging.getLogger(__name__)

DESCRIPTIONS = "descriptions.json"
SAMPLE_IDS = "sha256"  # fingerprint["sample_ids"]: samples are keyed by the sha256 of their image bytes


def check_metrics(cfg: RunConfig) -> None:
    """Every metric must exist and have its `<metric>_tkn_vals` requested, as the seed requires."""
    known = all_metrics()
    metrics = cfg.img_metrics.metrics_to_use
    if not metrics:
        raise LoganError(
            "img_metrics.metrics_to_use is empty: name at least one metric, e.g. max_k_no_norn_kl_div."
        )
    for name in metrics:
        get_metric(name, "metric in img_metrics.metrics_to_use")  # unknown: names a plugin that did not load
    requested = set(cfg.img_metrics.get_proc_meta_metrics)
    for name in metrics:
        if name + TKN_SUFFIX not in requested:
            raise LoganError(
                f"metric {name} is used but {name}{TKN_SUFFIX} is not in img_metrics.get_proc_meta_metrics; "
                f"add it (a metric needs its per-token values)."
            )
    for entry in requested:
        if not entry.endswith(TKN_SUFFIX) or entry[: -len(TKN_SUFFIX)] not in known:
            from logan.errors import unknown

            raise unknown(
                "entry in img_metrics.get_proc_meta_metrics", entry, [m + TKN_SUFFIX for m in known]
            )
    for entry in cfg.img_metrics.get_raw_meta_metrics:
        if entry != "losses":
            raise LoganError(
                f"img_metrics.get_raw_meta_metrics holds '{entry}'; the raw meta metric saved is 'losses'."
            )


def check_samples(frame: pd.DataFrame, cfg: RunConfig) -> None:
    """Every image is there, unchanged (its bytes still hash to its sample id) and decodes with the loader the
    run uses (so no image fails once the model has loaded); captions exist when the `caption` part is asked
    for. Images with several frames or an EXIF rotation are reported once: the first frame and the pixels as
    stored are used."""
    rows = list(frame.itertuples(index=False))
    shown = [row.path or f"{row.name} ({row.origin}, row {row.row})" for row in rows]
    if "caption" in cfg.img_metrics.parts:
        lacking = next((name for name, row in zip(shown, rows) if not row.caption), None)
        if lacking:
            raise LoganError(
                f"img_metrics.parts has 'caption' but {lacking} has no caption; add a \"caption\" field to "
                "every entry (a caption= column for a dataset) or drop the part."
            )

    def check(i: int) -> ImageFacts:
        row, data = rows[i], sample_bytes(rows[i])
        if sample_id(data) != row.sample_id:
            raise LoganError(
                f"image {shown[i]} changed since the set was saved (its sha256 is another); restore "
                "it, or choose a new path.output_dir."
            )
        kind = {1: "member", 0: "non-member"}.get(row.label, "unlabelled")
        return check_image(data, f"{shown[i]} (entry {i} of the {kind} samples)")

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1), thread_name_prefix="logan-check") as pool:
        facts = list(pool.map(check, range(len(rows))))
    frames = [name for name, f in zip(shown, facts) if f.frames > 1]
    if frames:
        log.warning(
            "%s several frames (animated GIF / PNG, multi-page TIFF): the first frame of each is used "
            "(first: %s)",
            count(len(frames), "image has", "images have"),
            frames[0],
        )
    rotated = [name for name, f in zip(shown, facts) if f.rotated]
    if rotated:
        log.warning(
            "%s an EXIF rotation: the pixels are used as stored, not rotated, as the original LOGAN and "
            "LLaVA's loaders read them (first: %s)",
            count(len(rotated), "image carries", "images carry"),
            rotated[0],
        )


def fingerprint(cfg: RunConfig) -> dict[str, Any]:
    """The settings a run folder's per-std results depend on, with the package version and the metric
    definitions (`img_metrics.compat`'s, see `metrics/registry.py`): a folder never mixes results of two."""
    m, n = cfg.target_model, cfg.noise
    files = {key: provenance(cfg, key) for key in MODEL_PATH_KEYS}
    nested = {k: provenance(cfg, f"model.{k}") or v for k, v in (m.model or {}).items()}
    return {
        "target_model": m.name,
        **files,
        "model_type": m.model_type,
        "model": nested,
        "conv_mode": m.conv_mode,
        "pad_to_square": m.pad_to_square,
        "vocab_size": m.vocab_size,
        "trust_remote_code": m.trust_remote_code,
        "processor_kwargs": m.processor_kwargs,
        "seed": cfg.seed,
        "quantize": n.quantize,
        "space": n.space,
        "draws": n.draws,
        "prompt": cfg.prompt.text,
        "num_gen_tokens": cfg.generation.num_gen_tokens,
        "parts": sorted(cfg.img_metrics.parts),
        "metrics": sorted(cfg.img_metrics.metrics_to_use),
        "ratio": [float(k) for k in cfg.img_metrics.ratio],
        "dtype": cfg.dtype,
        "logan_version": __version__,
        "metric_definitions": DEFINITIONS[cfg.img_metrics.compat],
        "sample_ids": SAMPLE_IDS,
    }


def why_refused(old: dict[str, Any], new: dict[str, Any], out: Path) -> str | None:
    """The one line for a run folder that cannot be resumed for a reason a user can act on: written by an
    earlier LOGAN (other metric definitions, samples keyed by path), or a Hub revision that now resolves to
    another commit."""
    if "metric_definitions" not in old or old.get("sample_ids") != SAMPLE_IDS:
        return (
            f"{out} was written by an earlier LOGAN (other metric definitions, samples keyed by image path) and "
            "cannot be resumed; choose a new path.output_dir."
        )
    if new.get("reference_scored") and not old.get("reference_scored"):
        return (
            f"{out} holds a classify run of an earlier LOGAN, which scored the target set only: per-image verdicts "
            "need the reference set's scores too; rerun the command with a new path.output_dir (this folder's "
            "metrics.json and report stay readable)."
        )
    return moved_revision(old, new, out)


def inherit_settings(
    cfg: RunConfig, explicit: set[str], saved: Path, keys: tuple[str, ...], command: str
) -> RunConfig:
    """`cfg` with the values another run saved in `saved` (its config.json) for the keys starting with one of
    `keys`, except those the caller gave explicitly: those are kept, and reported when they differ."""
    theirs = dict(_leaves(read_json(saved)))
    new = copy.deepcopy(cfg)
    taken, differ = [], []
    chose_model = "target_model" in explicit
    for name, value, _ in walk(cfg):
        if not name.startswith(keys) or name not in theirs or theirs[name] == value:
            continue
        if name in explicit or (chose_model and name.startswith("target_model.")):
            differ.append(f"{name}={value} (that run: {theirs[name]})")
        else:
            _assign(new, name, theirs[name])
            taken.append(f"{name}={theirs[name]}")
    if taken:
        log.info("%s: settings of the run %s: %s", command, saved.parent, "; ".join(taken))
    for line in differ:
        log.warning("%s: %s differs from the run %s it builds on", command, line, saved.parent)
    new.validate()
    return new


DICT_KEYS = ("target_model.model", "target_model.processor_kwargs")  # keys whose value is a dict


def _leaves(raw: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of a saved config (the DICT_KEYS stay one value)."""
    out = []
    for name, value in raw.items():
        if isinstance(value, dict) and f"{prefix}{name}" not in DICT_KEYS:
            out += _leaves(value, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", value))
    return out


def _assign(cfg: RunConfig, dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    node: Any = cfg
    for name in path:
        node = getattr(node, name)
    setattr(node, last, value)


def open_model(cfg: RunConfig) -> VLMAdapter:
    device = resolve_device(cfg.device)
    model = load_model(local_model(cfg), device, resolve_dtype(cfg.dtype, device))
    model.prepare_inference(
        resolve_compile(cfg.inference.compile, device),
        cfg.inference.attn_implementation,
        cfg.inference.reuse_prefix,
    )
    fault_point("model_loaded")
    return model


@contextmanager
def run_folder(
    cfg: RunConfig, command: str, data: pd.DataFrame | None = None, shard: ShardInfo = ShardInfo()
) -> Iterator[Path]:
    """Check everything that needs no model, then claim the run folder (lock + fingerprint) for the run;
    yields the folder this process writes its results to (its shard's folder when sharded). `data`'s
    `attrs["sources"]` (the datasets' provenance) goes with the models' into OUT/provenance.json.

    Nothing is written before the checks pass. If the run stops on a LoganError before it finished any
    result in a folder it created, the folder is removed again: bad input leaves nothing behind.
    """
    check_metrics(cfg)
    check_model(local_model(cfg))
    fused.resolve(cfg.inference.metric_kernel, resolve_device(cfg.device))
    if data is not None:
        check_samples(data, cfg)
    out, work = cfg.output_dir, shard.folder(cfg.output_dir)
    created = not work.exists() or not any(work.iterdir())
    try:
        with run_log(work):
            work.mkdir(parents=True, exist_ok=True)
            with RunLock(work):
                scored = (
                    {"reference_scored": True} if command == "classify" else {}
                )  # verdicts need the reference
                check_fingerprint(
                    out, fingerprint(cfg) | {"data": _data_key(cfg)} | scored, command, why_refused
                )
                write_json(out / "config.json", asdict(cfg))
                if data is not None and (not (out / PROVENANCE).exists() or data.attrs.get("sources")):
                    write_json(out / PROVENANCE, run_provenance(cfg, data.attrs.get("sources", [])))
                remove_stale_temporaries(work)
                drop_finished_chunks(work)
                yield work
    except LoganError:
        if created and not any((work / PER_STD).glob("*/done.json")):
            shutil.rmtree(out if not shard.sharded else work, ignore_errors=True)
        raise


def _data_key(cfg: RunConfig) -> dict[str, Any]:
    d = cfg.data
    return {
        "member_dataset": d.member_dataset,
        "nonmember_dataset": d.nonmember_dataset,
        "dataset": d.dataset,
        "target_set_size": d.target_set_size,
        "n_nm_ratio": d.n_nm_ratio,
        "reference": d.reference_datasets_list,
        "distribution": d.reference_set_sample_distribution,
        "reference_set_size": d.reference_set_size,
    }


def work_items(cfg: RunConfig, model: VLMAdapter, samples: pd.DataFrame, out: Path) -> list[WorkItem]:
    """Samples with the token ids each variant needs: generated descriptions, tokenised captions."""
    plan = variants_for(cfg.img_metrics.parts)
    descriptions: dict[str, list[int]] = {}
    if {"desp", "inst_desp"} & set(cfg.img_metrics.parts):
        from logan.pipeline.describe import describe, reusable

        donors = []
        if cfg.data.dataset and Path(cfg.data.dataset).parent.name == "datasets":
            donors.append(reusable(Path(cfg.data.dataset).parent.parent, fingerprint(cfg)))
        sources = {row.sample_id: image_source(row) for row in samples.itertuples(index=False)}
        descriptions = describe(cfg, model, sources, out / DESCRIPTIONS, donors)
    items = []
    for row in samples.itertuples(index=False):
        caption = tuple(model.tokenize(row.caption)) if "cap" in plan and row.caption else None
        desc = descriptions.get(row.sample_id)
        items.append(
            WorkItem(
                row.sample_id,
                int(row.label),
                tuple(desc) if desc is not None else None,
                caption,
                image_size(sample_bytes(row)),
                image_source(row),
            )
        )
    return items


def has_pending(cfg: RunConfig, out: Path, stds: list[float]) -> bool:
    """Whether any std (or the std-independent baselines) still has to be computed."""
    fixed = any(get_metric(name).needs != "noise" for name in cfg.img_metrics.metrics_to_use)
    return any(not is_done(out, s) for s in stds) or (fixed and not is_done(out, None))


def run_stds(
    cfg: RunConfig,
    model: VLMAdapter,
    items: list[WorkItem],
    stds: list[float],
    out: Path,
    target: pd.DataFrame,
    desc: str,
) -> None:
    """Compute every pending std (and, once per run, the std-independent baselines) in one pass over the
    samples: each batch's clean pass serves all of them. Results are kept per chunk of
    `inference.checkpoint_every` samples as they finish; a std's folder appears when all its chunks are."""
    m = cfg.img_metrics
    pending: list[float | None] = [s for s in dict.fromkeys(stds) if not is_done(out, s)]
    if any(get_metric(name).needs != "noise" for name in m.metrics_to_use) and not is_done(out, None):
        pending.append(None)
    if not pending:
        return
    engine = _engine(cfg, model)
    started = time.time()
    try:
        batches = engine.batches(items)
        size = len(batches[0]) if batches else 1
        per_chunk = max(1, cfg.inference.checkpoint_every // size)
        chunks = [batches[i : i + per_chunk] for i in range(0, len(batches), per_chunk)] or [[]]
        store = Checkpoints(out, size, per_chunk, [it.sample_id for batch in batches for it in batch])
        todo = [(i, [s for s in pending if not store.has(s, i)]) for i in range(len(chunks))]
        runs = {
            i: [s for s in wanted if s is not None] or [_any_std(pending)] for i, wanted in todo if wanted
        }
        if len(todo) > 1 and len(runs) < len(todo):
            log.info("%s: %d of %d chunks already done", desc, len(todo) - len(runs), len(todo))
        writing = _Writing.of(cfg, target)
        with tqdm(
            total=sum(len(chunks[i]) * len(r) for i, r in runs.items()), desc=desc, unit="step", leave=False
        ) as bar:
            for i, wanted in todo:
                if wanted:
                    _run_chunk(
                        engine, chunks[i], runs[i], {s: store.folder(s, i) for s in wanted}, writing, bar
                    )
    except BaseException as exc:
        if type(exc).__name__ == "OutOfMemoryError":
            size = engine.resolved_batch_size or 1
            raise LoganError(
                f"out of GPU memory at inference.batch_size={size}; rerun the same command with "
                f"inference.batch_size={max(1, size // 2)} (finished chunks and std values are kept)."
            ) from exc
        raise
    for std in pending:
        store.finish(std, len(chunks), time.time() - started)
    drop_finished_chunks(out)
    log.info(
        "%s: %d std values x %d samples in %.1f s",
        desc,
        len([s for s in pending if s is not None]),
        len(items),
        time.time() - started,
    )


def _any_std(pending: list[float | None]) -> float:
    """A std to run a chunk at when only the std-independent baselines are missing there."""
    return next((s for s in pending if s is not None), 0.0)


def _engine(cfg: RunConfig, model: VLMAdapter) -> Engine:
    inf, m = cfg.inference, cfg.img_metrics
    return Engine(
        model,
        EngineSettings(
            parts=list(m.parts),
            metrics=list(m.metrics_to_use),
            instruction=cfg.prompt.text,
            batch_size=inf.batch_size,
            draws=cfg.noise.draws,
            quantize=cfg.noise.quantize,
            space=cfg.noise.space,
            seed=cfg.seed,
            compile=resolve_compile(inf.compile, model.device),
            metric_kernel=fused.resolve(
                inf.metric_kernel, model.device, (model.dtype, model.real_vocab), m.compat == "original"
            ),
            max_batch_size=inf.max_batch_size,
            workers=inf.workers,
            prefetch=inf.prefetch,
            compat=m.compat,
        ),
    )


@dataclass(frozen=True)
class _Writing:
    """What every chunk's writers need, worked out once per run."""

    ratios: list[float]
    selection: Selection
    per_std: dict[str, Any]  # metric specs written per std
    fixed: dict[str, Any]  # std-independent metric specs (the baselines folder)

    @classmethod
    def of(cls, cfg: RunConfig, target: pd.DataFrame) -> _Writing:
        m = cfg.img_metrics
        specs = {name: get_metric(name, compat=m.compat) for name in m.metrics_to_use}
        selection = Selection(
            tokens=first_of_each_class(target, m.get_proc_meta_examples),
            losses=first_of_each_class(target, m.get_raw_meta_examples),
            images=first_of_each_class(target, m.get_raw_images) or set(),
            save_tokens=bool(m.get_proc_meta_metrics),
            save_losses="losses" in m.get_raw_meta_metrics,
        )
        return cls(
            list(m.ratio),
            selection,
            {n: s for n, s in specs.items() if s.needs == "noise"},
            {n: s for n, s in specs.items() if s.needs != "noise"},
        )


def _run_chunk(
    engine: Engine,
    batches: list[list[WorkItem]],
    run: list[float],
    folders: dict[float | None, Path],
    writing: _Writing,
    bar: tqdm,
) -> None:
    """One chunk of batches at the std values `run`; writes a finished folder per entry of `folders`."""
    w = writing
    writers = {
        s: StdWriter(folder, s, w.ratios, w.selection, w.fixed if s is None else w.per_std)
        for s, folder in folders.items()
    }
    try:
        for std, results in engine.run_batches(batches, run, w.selection.images, bar):
            if std in writers:
                writers[std].add(results)
            if None in writers and std == run[0]:
                writers[None].add(results)
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    for writer in writers.values():
        writer.finish()


@dataclass(frozen=True)
class StdPlan:
    """The std values a classify run computes, and which (sample, part) is reported at which std."""

    stds: list[float]  # every std the run computes
    per_part: (
        dict[str, float] | None
    )  # part -> its own selected std (noise.per_part), else every part at every std
    source: Path | None = None  # the tuning run's optimal_std.json, when noise.std names one
    split: str = "none"  # that file's selection.split
    chosen_on: frozenset[str] = frozenset()  # holdout: the samples the std was chosen on; never reported
    folds: tuple[
        tuple[frozenset[str], dict[str, float]], ...
    ] = ()  # crossfit: (fold, part -> std chosen on the other)
    note: str = ""  # whether the std was chosen with membership labels, and on which samples
    label_informed: bool = False  # chosen with the membership labels of the very samples reported

    @property
    def own_std(self) -> bool:
        """Whether each part (or sample) is reported at its own std rather than every part at every std."""
        return self.per_part is not None or bool(self.folds)

    def mask(self, scores: pd.DataFrame, every_sample: bool = False) -> np.ndarray:
        """The rows of a score table (columns sample_id, part, std) that this plan reports. With `every_sample`
        (the per-image verdicts) no sample is left out: the holdout's selection part is kept, and under crossfit
        a sample outside both folds keeps each of its std values."""
        keep = (
            np.ones(len(scores), dtype=bool)
            if every_sample
            else ~scores.sample_id.isin(self.chosen_on).to_numpy()
        )
        if self.folds:
            assigned = np.zeros(len(scores), dtype=bool)
            in_fold = np.zeros(len(scores), dtype=bool)
            for samples, stds in self.folds:
                member = scores.sample_id.isin(samples).to_numpy()
                in_fold |= member
                assigned |= member & (scores.part.map(stds) == scores["std"]).to_numpy()
            return keep & (assigned | (~in_fold if every_sample else False))
        if self.per_part is not None:
            keep &= (scores.part.map(self.per_part) == scores["std"]).to_numpy()
        return keep

    def fold_of(self, images: pd.Series) -> np.ndarray:
        """Crossfit: each image's fold (-1 outside both)."""
        fold = np.full(len(images), -1)
        for i, (samples, _) in enumerate(self.folds):
            fold[images.isin(samples).to_numpy()] = i
        return fold

    def reported(self, target: pd.DataFrame) -> pd.DataFrame:
        """The target rows this plan reports: all but the holdout's selection part; crossfit: those in a fold."""
        keep = ~target.sample_id.isin(self.chosen_on)
        if self.folds:
            keep &= target.sample_id.isin(frozenset().union(*(samples for samples, _ in self.folds)))
        return target[keep]

    def check(self, target: pd.DataFrame) -> None:
        """The target set must keep images to report: members and non-members when it is labelled (before any
        model work)."""
        reported = self.reported(target)
        labelled = not (target.label < 0).any()
        if reported.empty or (labelled and reported.label.nunique() < 2):
            raise LoganError(
                f"{self.source} was chosen with selection.split={self.split} and leaves no "
                f"{'members and non-members' if labelled else 'images'} of this target set to report; "
                "classify the tuning run's target set (leave data.* unset) or select with "
                "selection.split=none."
            )
        if len(reported) < len(target):
            log.info(
                "selection.split=%s: %d of the %d target samples are reported (%s)",
                self.split,
                len(reported),
                len(target),
                "the std was chosen on the others"
                if self.split == "holdout"
                else "the others are in neither fold",
            )

    def record(self, evaluated: pd.DataFrame) -> dict[str, Any]:
        """What classify writes to std_plan.json: where the stds came from and which samples are reported."""
        return {
            "source": str(self.source) if self.source else None,
            "split": self.split,
            "stds": self.stds,
            "per_part": self.per_part,
            "label_informed": self.label_informed,
            "note": self.note,
            "evaluated": sorted(evaluated.sample_id),
            "n_members": int((evaluated.label == 1).sum()),
            "n_nonmembers": int((evaluated.label == 0).sum()),
            "n_unlabelled": int((evaluated.label < 0).sum()),
            "folds": [{"samples": sorted(f), "std": stds} for f, stds in self.folds],
        }


def std_plan(cfg: RunConfig) -> StdPlan:
    """`noise.std` (a number, a list, or an optimal_std.json; else the original's
    `data.augmentations.GaussianNoise.std`, which its evaluation read), `noise.per_part` and the file's
    selection.split (holdout: only the samples the std was not chosen on are reported; crossfit: each
    sample at the std chosen on the other fold) as a StdPlan. Std 0 is refused where a metric depends on the
    noise: every divergence is 0 there."""
    value, legacy = cfg.noise.std, cfg.data.augmentations.GaussianNoise.std
    if legacy and value is not None:
        raise LoganError(
            f"noise.std={value} and data.augmentations.GaussianNoise.std={list(legacy)} both give the "
            "std to classify at; give one of them."
        )
    plan = _std_plan(cfg, list(legacy) if legacy else value)
    plan = dataclasses.replace(plan, stds=list(dict.fromkeys(plan.stds)))
    if 0.0 in plan.stds and any(get_metric(name).needs == "noise" for name in cfg.img_metrics.metrics_to_use):
        raise LoganError(
            "noise.std holds 0, which adds no noise: every LOGAN divergence is exactly 0 there; give "
            "std values > 0."
        )
    return plan


def _std_plan(cfg: RunConfig, value: Any) -> StdPlan:
    if not (isinstance(value, str) and not is_number(value)):
        if cfg.noise.per_part:
            raise LoganError(
                "noise.per_part=true needs noise.std=<a tuning run's optimal_std.json> (it holds each "
                "part's selected std)."
            )
        return StdPlan(read_std_argument(value), None)
    path = Path(value).expanduser()
    stds = read_std_argument(str(path))
    saved = read_json(path)
    split = saved.get("split") or {"mode": "none"}
    labels = saved.get("label_informed") or {}
    note = labels.get("note", "")
    per_part = _per_part(cfg, saved, path) if cfg.noise.per_part else None
    if split["mode"] == "crossfit":
        folds = []
        for i, samples in enumerate(split["folds"]):  # fold i is scored at the std chosen on the other fold
            choice, where = split["fold_choices"][1 - i], f"split.fold_choices[{1 - i}] in {path}"
            chosen = (
                _per_part(cfg, choice, path, where)
                if cfg.noise.per_part
                else dict.fromkeys(cfg.img_metrics.parts, parse_std_values(choice["optimal_std"], where)[0])
            )
            folds.append((frozenset(samples), chosen))
        return StdPlan(
            sorted({s for _, c in folds for s in c.values()}),
            per_part,
            path,
            "crossfit",
            folds=tuple(folds),
            note=note,
        )
    chosen_on = frozenset(split["selection"]) if split["mode"] == "holdout" else frozenset()
    informed = split["mode"] == "none" and bool(
        labels.get("per_part" if per_part else "selection", saved.get("reference_is_target_nonmembers"))
    )
    return StdPlan(
        sorted(set(per_part.values())) if per_part else stds,
        per_part,
        path,
        split["mode"],
        chosen_on,
        note=note,
        label_informed=informed,
    )


def _per_part(cfg: RunConfig, choice: dict[str, Any], path: Path, where: str = "") -> dict[str, float]:
    """part -> std of a selection's `per_part` (optimal_std.json's, or one crossfit fold's)."""
    selected = choice.get("per_part") or {}
    missing = [p for p in cfg.img_metrics.parts if p not in selected]
    if missing:
        raise LoganError(
            f"noise.per_part=true: {path} holds no selected std for part(s) {', '.join(missing)}; tune "
            "those parts or set noise.per_part=false."
        )
    return {
        p: parse_std_values(
            selected[p]["optimal_std"] if isinstance(selected[p], dict) else selected[p],
            f"per_part.{p} in {where or path}",
        )[0]
        for p in cfg.img_metrics.parts
    }


def read_std_argument(value: Any) -> list[float]:
    """`noise.std` for classify: a number, a list, or the path of an optimal_std.json."""
    if value is None:
        raise LoganError(
            "noise.std is not set: give a number, a list, or the path of a tuning run's optimal_std.json."
        )
    if isinstance(value, str) and not is_number(value):
        path = Path(value).expanduser()
        if not path.is_file():
            raise LoganError(f"noise.std={value} is neither a number nor an existing optimal_std.json file.")
        try:
            value = float(read_json(path)["optimal_std"])
        except (KeyError, ValueError, TypeError):
            raise LoganError(f"{path} has no 'optimal_std' number; give a file written by 'logan select'.")
        return parse_std_values(value, f"optimal_std in {path}")
    return parse_std_values(value)
