"""Data-parallel runs: a deterministic shard of the images per process, one run folder for all.

Two ways to split a run, the same shards either way:

- `torchrun --nproc-per-node=N $(which logan) tune ...` (or `accelerate launch`): every rank loads the
  model once (on cuda:LOCAL_RANK), takes shard RANK of WORLD_SIZE, and writes it under
  OUT/shards/; after a barrier rank 0 merges the shards into OUT/per_std and runs select / classify.
- SLURM job arrays, no process group: `data.shard_id=$SLURM_ARRAY_TASK_ID data.num_shards=N` per job;
  the last shard to finish merges (or run `logan merge path.output_dir=OUT` afterwards).

Images are assigned to shards by a hash of their sample id (the sha256 of their bytes), so a shard's content does not depend on the
order of the lists, and every image's noise is seeded by its content: merged results equal a
single-process run's (up to floating-point differences of batch composition).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from logan.config import DataConfig
from logan.errors import LoganError

log = logging.getLogger(__name__)

SHARDS = "shards"


@dataclass(frozen=True)
class ShardInfo:
    shard_id: int = 0
    num_shards: int = 1
    launcher: str = "none"  # none | torchrun | array

    @property
    def sharded(self) -> bool:
        return self.num_shards > 1

    @property
    def is_main(self) -> bool:
        return self.shard_id == 0 or self.launcher == "array"

    def folder(self, out: Path) -> Path:
        """Where this shard writes its results (the run folder itself when not sharded)."""
        if not self.sharded:
            return Path(out)
        return Path(out) / SHARDS / f"shard_{self.shard_id:04d}_of_{self.num_shards:04d}"

    def owns(self, sample_id: str) -> bool:
        return shard_of(sample_id, self.num_shards) == self.shard_id


def shard_of(sample_id: str, num_shards: int) -> int:
    return int.from_bytes(hashlib.sha256(sample_id.encode()).digest()[:8], "little") % num_shards


def shard_info(cfg: DataConfig) -> ShardInfo:
    """From torchrun's environment (RANK / WORLD_SIZE) or from data.shard_id / data.num_shards."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        if cfg.num_shards not in (None, 1):
            raise LoganError("data.num_shards is for job arrays; under torchrun the ranks are the shards.")
        return ShardInfo(int(os.environ["RANK"]), world, "torchrun")
    num = cfg.num_shards or 1
    sid = cfg.shard_id or 0
    if num < 1 or not 0 <= sid < num:
        raise LoganError(f"data.shard_id={sid} must lie in [0, data.num_shards={num}).")
    return ShardInfo(sid, num, "array" if num > 1 else "none")


def init_process_group(info: ShardInfo) -> None:
    """Join torchrun's process group (gloo on CPU, nccl on GPU) for the final barrier."""
    if info.launcher != "torchrun":
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def barrier(info: ShardInfo) -> None:
    if info.launcher == "torchrun":
        import torch.distributed as dist

        dist.barrier()


def local_device_index() -> int | None:
    """cuda:LOCAL_RANK under torchrun / accelerate."""
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value is not None else None


@contextmanager
def quiet_other_ranks(info: ShardInfo) -> Iterator[None]:
    """Logs and progress bars on rank 0 only, while the block runs (then as they were)."""
    if info.launcher != "torchrun" or info.shard_id == 0:
        yield
        return
    root, before = logging.getLogger(), (logging.getLogger().level, os.environ.get("TQDM_DISABLE"))
    root.setLevel(logging.WARNING)
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        root.setLevel(before[0])
        if before[1] is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before[1]
