"""`logan classify`: membership classification at the optimal std (the original's `job_type=evaluation`).

    logan classify noise.std=runs/tune/optimal_std.json path.output_dir=runs/classify
    logan classify target_model.model_path=DIR data.dataset=OUT/datasets/target_dataset.parquet \
        noise.std=[2.6,4.0] path.output_dir=OUT2

With `noise.std` naming a tuning run's optimal_std.json, the run's model, parts, prompt, noise settings
and target set are those of the tuning run unless given on the command line (a differing value is
reported); `noise.per_part=true` scores each part at the std its own tuning curve selected.

Writes OUT2/metrics.json (one row per std x part x metric x K), OUT2/scores.parquet (per-sample scores,
higher = more likely member), OUT2/roc.png, histograms, the model-free baseline and report.html.
"""

from __future__ import annotations

import logging
from pathlib import Path

from logan.config import RunConfig
from logan.data.sets import SET_FILES, build_target
from logan.distributed import init_process_group, shard_info
from logan.io import write_parquet
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

log = logging.getLogger(__name__)

# what a classify run takes from the tuning run whose optimal_std.json it reads
INHERITED = ("target_model.", "img_metrics.parts", "img_metrics.compat", "prompt.text", "generation.num_gen_tokens",
             "noise.quantize", "noise.space", "noise.draws", "dtype")


def inherit_tuning(cfg: RunConfig, explicit: set[str]) -> RunConfig:
    """With noise.std = a tuning run's optimal_std.json: that run's settings for every inherited key not
    given explicitly, and its target set when no data is given (a differing explicit value is reported)."""
    std = cfg.noise.std
    saved = Path(std).expanduser().parent / "config.json" if isinstance(std, str) and std.endswith(".json") else None
    if saved is None or not saved.is_file():
        return cfg
    new = inherit_settings(cfg, explicit, saved, INHERITED, "classify")
    d = new.data
    target = saved.parent / "datasets" / SET_FILES["target"]
    if not (d.dataset or d.member_dataset or d.nonmember_dataset) and target.is_file():
        d.dataset = str(target)
        log.info("classify: the target set of the tuning run: data.dataset=%s", target)
    return new


def classify(cfg: RunConfig) -> list[dict] | None:
    """Returns metrics.json's rows (None for a shard that leaves the merge to another)."""
    out = cfg.output_dir
    shard = shard_info(cfg.data)
    init_process_group(shard)
    plan = std_plan(cfg)
    target = build_target(cfg.data, cfg.seed)
    with run_folder(cfg, "classify", target, shard) as work:
        write_parquet(out / "datasets" / SET_FILES["target"], target)
        mine = target[[shard.owns(img) for img in target.image]] if shard.sharded else target
        if has_pending(cfg, work, plan.stds):
            model = open_model(cfg)
            items = work_items(cfg, model, mine, work)
            run_stds(cfg, model, items, plan.stds, work, target, desc="classify")
        return finish(cfg, "classify", shard)
