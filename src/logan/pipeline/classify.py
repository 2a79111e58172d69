"""`logan classify`: membership classification at the optimal std (the original's `job_type=evaluation`).

    logan classify noise.std=runs/tune/optimal_std.json path.output_dir=runs/classify
    logan classify target_model.model_path=DIR data.dataset=OUT/datasets/target_dataset.parquet \
        noise.std=[2.6,4.0] path.output_dir=OUT2

    logan classify noise.std=runs/tune/optimal_std.json data.dataset=unknown_images/ path.output_dir=OUT3

With `noise.std` naming a tuning run's optimal_std.json, the run's model, parts, prompt, noise settings,
target set and reference set are those of the tuning run unless given on the command line (a differing
value is reported); `noise.per_part=true` scores each part at the std its own tuning curve selected. When
that file was written with `selection.split=holdout`, AUCs count only the samples the std was not chosen
on; with `crossfit`, every sample at the std chosen on the other fold (OUT2/std_plan.json records which).

The reference set (known non-members) is scored with the target set, at the same std values, so that
every target image gets a p-value against it and a member / non-member verdict at `verdict.fpr`
(`logan.report.verdicts`); labels are not needed for that: a target set of images of unknown membership
(a JSON list without labels, a folder) gets verdicts and no AUC table.

Writes OUT2/metrics.json (one row per std x part x metric x K), OUT2/scores.parquet (per-sample scores,
higher = more likely member), OUT2/verdicts.csv (one row per target image: score, p-value, verdict) with
OUT2/verdicts.json (threshold, realised FPR, reference size), OUT2/std_plan.json, OUT2/roc.png,
histograms, the model-free baseline and report.html.
"""

from __future__ import annotations

import logging
from pathlib import Path

from logan.config import RunConfig
from logan.data.sets import SET_FILES, DataSets, build_reference, build_target
from logan.distributed import init_process_group, shard_info
from logan.errors import LoganError
from logan.io import read_json
from logan.pipeline.common import (
    has_pending,
    inherit_settings,
    open_model,
    run_folder,
    run_stds,
    std_plan,
    work_items,
)
from logan.pipeline.merge import finish
from logan.pipeline.select import check_k
from logan.report.verdicts import choose

log = logging.getLogger(__name__)

# what a classify run takes from the tuning run whose optimal_std.json it reads
INHERITED = (
    "target_model.",
    "img_metrics.parts",
    "img_metrics.compat",
    "prompt.text",
    "generation.num_gen_tokens",
    "noise.quantize",
    "noise.space",
    "noise.draws",
    "dtype",
)


def inherit_tuning(cfg: RunConfig, explicit: set[str]) -> RunConfig:
    """With noise.std = a tuning run's optimal_std.json: that run's settings for every inherited key not
    given explicitly, its target set when no data is given and its reference set when none is given (a
    differing explicit value is reported)."""
    std = cfg.noise.std
    saved = (
        Path(std).expanduser().parent / "config.json"
        if isinstance(std, str) and std.endswith(".json")
        else None
    )
    if saved is None or not saved.is_file():
        return cfg
    new = inherit_settings(cfg, explicit, saved, INHERITED, "classify")
    _pin_hub_models(new, explicit, read_json(saved).get("resolved") or {})
    d = new.data
    target = saved.parent / "datasets" / SET_FILES["target"]
    if not (d.dataset or d.member_dataset or d.nonmember_dataset) and target.is_file():
        d.dataset = str(target)
        log.info("classify: the target set of the tuning run: data.dataset=%s", target)
    reference = saved.parent / "datasets" / SET_FILES["reference"]
    if "data.reference_datasets_list" not in explicit and not d.reference_paths and reference.is_file():
        d.reference_datasets_list = [str(reference)]
        log.info(
            "classify: the reference set of the tuning run: data.reference_datasets_list=[%s]", reference
        )
    return new


def _pin_hub_models(cfg: RunConfig, explicit: set[str], resolved: dict[str, dict]) -> None:
    """Hub models taken from the tuning run are pinned to the commits it used (a branch that moved since
    would otherwise score the target set with other weights)."""
    if "target_model" in explicit:
        return
    for key, record in resolved.items():
        name = key.removeprefix("target_model.")
        if (
            record.get("commit")
            and key not in explicit
            and "." not in name
            and not record.get("implicit")
            and getattr(cfg.target_model, name) == record["value"]
        ):
            if name == "model_path" and "target_model.revision" in explicit:
                continue
            setattr(cfg.target_model, name, record["uri"])
            if name == "model_path":
                cfg.target_model.revision = None
            log.info("classify: %s pinned to the tuning run's commit: %s", key, record["uri"])


def classify(cfg: RunConfig) -> list[dict] | None:
    """Returns metrics.json's rows (None for a shard that leaves the merge to another)."""
    check_k(cfg)
    out = cfg.output_dir
    shard = shard_info(cfg.data)
    init_process_group(shard)
    plan = std_plan(cfg)
    choose(cfg, plan.source)  # an explicit verdict.part / verdict.metric must be one the run scores
    target = build_target(cfg.data, cfg.seed, cfg.path.cache_dir)
    plan.check(target)
    sets = DataSets(target, *build_reference(cfg.data, target, cfg.seed, cfg.path.cache_dir))
    if sets.reference.empty:
        raise LoganError(
            "the target set holds no known non-members to compare its images with: give a reference "
            "set, data.reference_datasets_list=NONMEMBERS.json (or noise.std=<a tuning run's "
            "optimal_std.json>, whose reference set is then used)."
        )
    samples = sets.all_samples()  # the reference set is scored with the target set: the verdicts read both
    samples.attrs["sources"] = sets.sources
    with run_folder(cfg, "classify", samples, shard) as work:
        sets.save(out / "datasets", ("target", "reference"))
        mine = samples[[shard.owns(s) for s in samples.sample_id]] if shard.sharded else samples
        if has_pending(cfg, work, plan.stds):
            model = open_model(cfg)
            items = work_items(cfg, model, mine, work)
            run_stds(cfg, model, items, plan.stds, work, target, desc="classify")
        return finish(cfg, "classify", shard)
