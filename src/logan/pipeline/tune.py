"""`logan tune`: noise-level tuning (the original's `job_type=hyperparam_tuning`).

    logan tune target_model=llava-hf target_model.model_path=DIR \
        data.member_dataset=M.json data.nonmember_dataset=N.json data.target_set_size=40 \
        noise.std_sets=[[0.5,2.0],[8.0,32.0]] img_metrics.parts=[img] path.output_dir=OUT

Samples the target and reference sets (saved under OUT/datasets), computes every std of every set
(skipping those already complete in OUT) in one pass over the images, so each image's clean pass and
description serve all std values, then runs `logan select` on the results.
"""

from __future__ import annotations

import logging

from logan.config import RunConfig
from logan.data.sets import build_sets
from logan.distributed import init_process_group, shard_info
from logan.pipeline.common import has_pending, open_model, run_folder, run_stds, work_items
from logan.pipeline.merge import finish
from logan.pipeline.select import check_selection

log = logging.getLogger(__name__)


def tune(cfg: RunConfig) -> dict | None:
    """Returns optimal_std.json's content (None for a shard that leaves the merge to another)."""
    check_selection(cfg)
    out = cfg.output_dir
    shard = shard_info(cfg.data)
    init_process_group(shard)
    sets, reloaded = build_sets(cfg.data, cfg.seed, out / "datasets", cfg.path.cache_dir)
    samples = sets.all_samples()
    samples.attrs["sources"] = sets.sources
    with run_folder(cfg, "tune", samples, shard) as work:
        if not reloaded:
            sets.save(out / "datasets")
        std_sets = cfg.std_sets()
        n_members = int((sets.target.label == 1).sum())
        log.info(
            "target set: %d members + %d non-members; reference set: %d%s; %d std values in %d sets%s",
            n_members,
            len(sets.target) - n_members,
            len(sets.reference),
            " (the target non-members)" if sets.reference_is_target_nonmembers else "",
            sum(len(g) for g in std_sets),
            len(std_sets),
            f"; shard {shard.shard_id + 1} of {shard.num_shards}" if shard.sharded else "",
        )
        mine = samples[[shard.owns(s) for s in samples.sample_id]] if shard.sharded else samples
        if has_pending(cfg, work, [s for group in std_sets for s in group]):
            model = open_model(cfg)
            items = work_items(cfg, model, mine, work)
            every = list(dict.fromkeys(s for group in std_sets for s in group))
            run_stds(cfg, model, items, every, work, sets.target, desc=f"tune {len(every)} std values")
        else:
            log.info("every std is already complete in %s", work)
        return finish(cfg, "tune", shard)
