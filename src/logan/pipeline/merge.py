"""`logan merge`: combine the shards of a data-parallel run into the run folder, then finish the run.

    logan merge path.output_dir=OUT

A std (or the baselines folder) is merged once every shard has finished it; the merged folder is
written atomically, like a single-process run's, so a merge can be rerun or interrupted safely. When
everything is merged, `tune` runs finish with `select` and `classify` runs with their evaluation.
The last shard of a SLURM job array does this by itself; `logan merge` is for doing it by hand.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from logan.config import RunConfig
from logan.data.saved import read_set
from logan.data.sets import SET_FILES
from logan.distributed import SHARDS, ShardInfo, barrier
from logan.errors import LoganError
from logan.io import RunLock, read_json, write_json
from logan.metrics.registry import get_metric
from logan.pipeline.select import select
from logan.report.evaluate import evaluate
from logan.results import PER_STD, combine, is_done, std_folder

log = logging.getLogger(__name__)


def shard_folders(out: Path, num_shards: int) -> list[Path]:
    return [ShardInfo(i, num_shards, "array").folder(out) for i in range(num_shards)]


def merge_shards(out: Path, num_shards: int, stds: list[float], baselines: bool) -> bool:
    """Merge every std finished by all shards; True when all `stds` (and baselines) are merged."""
    shards = shard_folders(out, num_shards)
    wanted: list[float | None] = [*stds, *([None] if baselines else [])]
    complete = True
    for std in wanted:
        if is_done(out, std):
            continue
        if not all(is_done(shard, std) for shard in shards):
            complete = False
            continue
        combine(
            [std_folder(shard, std) for shard in shards], std_folder(out, std), std, merged_from=len(shards)
        )
    descriptions = {}
    for shard in shards:
        if (shard / "descriptions.json").exists():
            descriptions.update(read_json(shard / "descriptions.json"))
    if descriptions:
        write_json(out / "descriptions.json", descriptions)
    if complete:
        log.info("merged %d shards into %s", num_shards, out / PER_STD)
    return complete


def detect_shards(out: Path) -> int:
    names = sorted(p.name for p in (Path(out) / SHARDS).glob("shard_*_of_*"))
    counts = {int(name.rsplit("_", 1)[1]) for name in names}
    if len(counts) != 1:
        raise LoganError(f"{out} holds no shards to merge (or shards of different counts: {sorted(counts)}).")
    return counts.pop()


def run_stds_of(cfg: RunConfig, command: str) -> list[float]:
    from logan.pipeline.common import std_plan

    if command == "tune":
        return list(dict.fromkeys(s for group in cfg.std_sets() for s in group))
    return std_plan(cfg).stds


def finish(cfg: RunConfig, command: str, shard: ShardInfo) -> Any:
    """After this process's share: merge when every shard is done, then select / evaluate (once)."""
    out = cfg.output_dir
    stds = run_stds_of(cfg, command)
    if shard.sharded:
        barrier(shard)
        if shard.launcher == "torchrun" and shard.shard_id != 0:
            return None
        baselines = any(get_metric(m).needs != "noise" for m in cfg.img_metrics.metrics_to_use)
        try:
            with RunLock(out):
                merged = merge_shards(out, shard.num_shards, stds, baselines)
        except LoganError:
            log.info("another shard is merging %s", out)
            return None
        if not merged:
            log.info(
                "shard %d of %d is done; the last shard to finish merges (or run 'logan merge "
                "path.output_dir=%s')",
                shard.shard_id,
                shard.num_shards,
                out,
            )
            return None
    if command == "tune":
        return select(cfg, "tune")
    from logan.pipeline.common import std_plan

    target = read_set(out / "datasets" / SET_FILES["target"], "target set")
    reference = out / "datasets" / SET_FILES["reference"]
    return evaluate(
        cfg, target, std_plan(cfg), read_set(reference, "reference set") if reference.is_file() else None
    )


def merge(cfg: RunConfig) -> Path:
    """`logan merge`: finish a sharded run whose shards are all done (the run's own settings are used)."""
    out = cfg.output_dir
    saved = out / "config.json"
    if not saved.exists():
        raise LoganError(f"{out} is not a LOGAN run folder (no config.json); give the run's path.output_dir.")
    run_cfg = RunConfig.from_dict(read_json(saved))
    command = read_json(out / "run_fingerprint.json")["command"]
    if finish(run_cfg, command, ShardInfo(0, detect_shards(out), "array")) is None:
        raise LoganError(
            f"some shards of {out} are not finished yet; rerun their jobs, then 'logan merge' again."
        )
    return out
