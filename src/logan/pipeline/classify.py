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
from logan.report.evaluate import evaluate

log = logging.getLogger(__name__)


def classify(cfg: RunConfig) -> list[dict]:
    out = cfg.output_dir
    stds = read_std_argument(cfg.noise.std)
    target = build_target(cfg.data, cfg.seed)
    with run_folder(cfg, "classify", target):
        write_parquet(out / "datasets" / SET_FILES["target"], target)
        if has_pending(cfg, out, stds):
            model = open_model(cfg)
            items = work_items(cfg, model, target, out)
            run_stds(cfg, model, items, stds, out, target, desc="classify")
        return evaluate(cfg, target, stds)


def main(cfg: RunConfig) -> Path:
    classify(cfg)
    return cfg.output_dir / "metrics.json"
