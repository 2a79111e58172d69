"""`logan classify`: membership classification at the optimal std (the original's `job_type=evaluation`).

    logan classify target_model=llava-hf target_model.model_path=DIR \
        data.dataset=OUT/datasets/target_dataset.parquet noise.std=OUT/optimal_std.json path.output_dir=OUT2

Writes OUT2/metrics.json (one row per std x part x metric x K), OUT2/scores.parquet (per-sample scores,
higher = more likely member, i.e. minus the divergence), OUT2/roc.png and the per-std raw results.
"""

from __future__ import annotations

import logging
from pathlib import Path

from logan.config import RunConfig
from logan.data.sets import SET_FILES, build_target
from logan.io import write_parquet
from logan.pipeline.common import has_pending, open_model, read_std_argument, run_folder, run_stds, work_items
from logan.distributed import init_process_group, quiet_other_ranks, shard_info
from logan.pipeline.merge import finish

log = logging.getLogger(__name__)


def classify(cfg: RunConfig) -> list[dict] | None:
    """Returns metrics.json's rows (None for a shard that leaves the merge to another)."""
    out = cfg.output_dir
    shard = shard_info(cfg.data)
    init_process_group(shard)
    quiet_other_ranks(shard)
    stds = read_std_argument(cfg.noise.std)
    target = build_target(cfg.data, cfg.seed)
    with run_folder(cfg, "classify", target, shard) as work:
        write_parquet(out / "datasets" / SET_FILES["target"], target)
        mine = target[[shard.owns(img) for img in target.image]] if shard.sharded else target
        if has_pending(cfg, work, stds):
            model = open_model(cfg)
            items = work_items(cfg, model, mine, work)
            run_stds(cfg, model, items, stds, work, target, desc="classify")
    return finish(cfg, "classify", shard)


def main(cfg: RunConfig) -> Path:
    classify(cfg)
    return cfg.output_dir / "metrics.json"
