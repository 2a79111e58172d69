"""Raw results per std: `<run>/per_std/std_<value>/` holds

- `scores.parquet`   one row per (sample, part, metric, K): the Max-K% (or Min-K%) value, not oriented;
- `tokens.parquet`   per-token values (`<metric>_tkn_vals`) of the example samples;
- `losses.parquet`   clean and noisy mean NLL per (sample, part) (`losses`, raw meta);
- `images/`          perturbed PNGs of the first x members and x non-members (`get_raw_images`);
- `done.json`        written last: a std folder without it is incomplete and is recomputed.

Metrics that do not depend on the std (the clean-pass baselines, aug-KL) are written once, in the same
layout, to `<run>/per_std/baselines/`.

A folder is written under a temporary name and renamed when complete, so a killed run never leaves a
half-written std that a rerun could read. While a run is under way, every std's results are kept per
chunk of samples in `<run>/per_std/.partial/` (`Checkpoints`): a killed run resumes at the first
unfinished chunk, and the chunks are combined into the std's folder when all are there.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from logan.data.images import ID_PREFIX
from logan.engine import SampleResult
from logan.faults import fault_point
from logan.io import atomic_dir, read_json, write_json
from logan.metrics.aggregate import aggregate
from logan.metrics.registry import MetricSpec

log = logging.getLogger(__name__)

PER_STD = "per_std"
PARTIAL = ".partial"
TABLES = ("scores.parquet", "tokens.parquet", "losses.parquet")
SCORE_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("label", pa.int8()),
        ("part", pa.string()),
        ("metric", pa.string()),
        ("k", pa.float64()),
        ("value", pa.float64()),
    ]
)
TOKEN_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("label", pa.int8()),
        ("part", pa.string()),
        ("metric", pa.string()),
        ("values", pa.list_(pa.float32())),
    ]
)
LOSS_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("label", pa.int8()),
        ("part", pa.string()),
        ("clean_loss", pa.float64()),
        ("noisy_loss", pa.float64()),
        ("n_tokens", pa.int32()),
    ]
)


BASELINES = "baselines"


def std_folder(run: Path, std: float | None) -> Path:
    """The result folder of one std (None: the std-independent baselines)."""
    return Path(run) / PER_STD / (BASELINES if std is None else f"std_{float(std)!r}")


def is_done(run: Path, std: float | None) -> bool:
    return (std_folder(run, std) / "done.json").exists()


@dataclass
class Selection:
    """Which samples get per-token values, raw losses and images saved (None = every sample)."""

    tokens: set[str] | None
    losses: set[str] | None
    images: set[str]
    save_tokens: bool
    save_losses: bool


class StdWriter:
    """Streams one std's results (the metrics in `specs`) to Parquet inside a temporary folder; `finish`
    makes it final. With std=None it holds the std-independent baselines (no losses, no images)."""

    def __init__(
        self,
        folder: Path,
        std: float | None,
        ratios: list[float],
        selection: Selection,
        specs: dict[str, MetricSpec],
    ) -> None:
        self.std, self.ratios, self.selection, self.specs = std, [float(k) for k in ratios], selection, specs
        self.stack = ExitStack()
        self.tmp = self.stack.enter_context(atomic_dir(folder))
        self.scores = pq.ParquetWriter(self.tmp / "scores.parquet", SCORE_SCHEMA)
        self.tokens = (
            pq.ParquetWriter(self.tmp / "tokens.parquet", TOKEN_SCHEMA) if selection.save_tokens else None
        )
        keep_losses = selection.save_losses and std is not None
        self.losses = pq.ParquetWriter(self.tmp / "losses.parquet", LOSS_SCHEMA) if keep_losses else None
        self.n_samples = 0
        self.started = time.time()

    def add(self, results: list[SampleResult]) -> None:
        score_rows, token_rows, loss_rows = [], [], []
        for res in results:
            self.n_samples += 1
            for (part, metric), values in res.tokens.items():
                if metric not in self.specs:
                    continue
                for k, value in zip(
                    self.ratios, aggregate(values, self.ratios, self.specs[metric].aggregate)
                ):
                    score_rows.append((res.sample_id, res.label, part, metric, k, float(value)))
                if self.tokens is not None and _chosen(self.selection.tokens, res.sample_id):
                    token_rows.append((res.sample_id, res.label, part, metric, values))
            if self.losses is not None and _chosen(self.selection.losses, res.sample_id):
                for part, (clean, noisy, n) in res.losses.items():
                    loss_rows.append((res.sample_id, res.label, part, clean, noisy, n))
            if res.image is not None and self.std is not None:
                self._save_image(res)
        self.scores.write_table(_table(score_rows, SCORE_SCHEMA))
        if self.tokens is not None and token_rows:
            self.tokens.write_table(_table(token_rows, TOKEN_SCHEMA))
        if self.losses is not None and loss_rows:
            self.losses.write_table(_table(loss_rows, LOSS_SCHEMA))
        fault_point("batch")

    def _save_image(self, res: SampleResult) -> None:
        folder = self.tmp / "images"
        folder.mkdir(exist_ok=True)
        stem = (
            res.sample_id.removeprefix(ID_PREFIX)[:16]
            if res.sample_id.startswith(ID_PREFIX)
            else Path(res.sample_id).stem
        )
        name = f"{'member' if res.label == 1 else 'nonmember'}_{stem}.png"
        assert res.image is not None, "add() saves only the results that hold their perturbed image"
        Image.fromarray(res.image).save(folder / name)

    def finish(self) -> None:
        for writer in (self.scores, self.tokens, self.losses):
            if writer is not None:
                writer.close()
        write_json(
            self.tmp / "done.json",
            {"std": self.std, "n_samples": self.n_samples, "seconds": round(time.time() - self.started, 3)},
        )
        fault_point("std_finish")
        self.stack.close()

    def abort(self) -> None:
        for writer in (self.scores, self.tokens, self.losses):
            if writer is not None:
                writer.close()
        self.stack.__exit__(RuntimeError, RuntimeError("aborted"), None)


def _chosen(subset: set[str] | None, sample_id: str) -> bool:
    return subset is None or sample_id in subset


def _table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    columns: list[tuple] = list(zip(*rows)) if rows else [() for _ in schema]
    return pa.table([pa.array(list(col), type=f.type) for col, f in zip(columns, schema)], schema=schema)


def done_stds(run: Path) -> list[float]:
    """The std values whose results are complete in a run folder, ascending."""
    root = Path(run) / PER_STD
    if not root.exists():
        return []
    return sorted(float(read_json(p)["std"]) for p in root.glob("std_*/done.json"))


def load_scores(run: Path, stds: list[float] | None = None, k: float | None = None) -> pd.DataFrame:
    """All per-sample Max-K% values of a run's std folders (complete ones only; one K if given), with a
    `std` column."""
    frames = []
    near_k = [("k", ">=", k - 1e-9), ("k", "<=", k + 1e-9)] if k is not None else None
    for std in stds if stds is not None else done_stds(run):
        frame = pd.read_parquet(std_folder(run, std) / "scores.parquet", filters=near_k)
        frame["std"] = float(std)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[f.name for f in SCORE_SCHEMA] + ["std"])
    return pd.concat(frames, ignore_index=True)


def load_baselines(run: Path) -> pd.DataFrame:
    """The std-independent metrics' per-sample values (empty if the run computed none)."""
    path = std_folder(run, None) / "scores.parquet"
    if not (std_folder(run, None) / "done.json").exists():
        return pd.DataFrame(columns=[f.name for f in SCORE_SCHEMA])
    return pd.read_parquet(path)


def first_of_each_class(target: pd.DataFrame, n: int | None) -> set[str] | None:
    """Sample ids of the first n members and first n non-members (None = all)."""
    if n is None or n < 0:
        return None
    return set(target[target.label == 1].sample_id.head(n)) | set(target[target.label == 0].sample_id.head(n))


def combine(sources: list[Path], target: Path, std: float | None, **note: object) -> None:
    """Write the concatenation of finished result folders (chunks, shards) as the finished folder `target`."""
    with atomic_dir(target) as tmp:
        for name in TABLES:
            parts = [p / name for p in sources if (p / name).exists()]
            if not parts:
                continue
            writer = None
            for part in parts:
                table = pq.read_table(part)
                writer = writer or pq.ParquetWriter(tmp / name, table.schema)
                writer.write_table(table)
            if writer is not None:
                writer.close()
        for source in sources:
            if (source / "images").is_dir():
                shutil.copytree(source / "images", tmp / "images", dirs_exist_ok=True)
        n_samples = sum(read_json(p / "done.json")["n_samples"] for p in sources)
        write_json(tmp / "done.json", {"std": std, "n_samples": n_samples, **note})


class Checkpoints:
    """Per-chunk results of the std values a run is computing: `<run>/per_std/.partial/<std>/chunk_<i>/`,
    each a finished `StdWriter` folder. Chunks are valid only for the batch plan they were computed with
    (`plan.json`: batch size, chunk length, sample order); another plan discards them."""

    def __init__(self, run: Path, batch_size: int, per_chunk: int, samples: list[str]) -> None:
        self.run, self.root = Path(run), Path(run) / PER_STD / PARTIAL
        digest = hashlib.sha256("\n".join(samples).encode()).hexdigest()
        self.plan = {"batch_size": batch_size, "batches_per_chunk": per_chunk, "samples": digest}
        plan_file = self.root / "plan.json"
        if plan_file.exists() and read_json(plan_file) != self.plan:
            log.warning(
                "discarding the unfinished chunks in %s: they were computed with another batch plan (%s)",
                self.root,
                read_json(plan_file),
            )
            shutil.rmtree(self.root)
        if not plan_file.exists():
            write_json(plan_file, self.plan)

    def folder(self, std: float | None, chunk: int) -> Path:
        return self.root / std_folder(self.run, std).name / f"chunk_{chunk:05d}"

    def has(self, std: float | None, chunk: int) -> bool:
        return (self.folder(std, chunk) / "done.json").exists()

    def finish(self, std: float | None, n_chunks: int, seconds: float) -> None:
        """Combine a std's chunks into its result folder and drop them."""
        combine(
            [self.folder(std, i) for i in range(n_chunks)],
            std_folder(self.run, std),
            std,
            seconds=round(seconds, 3),
        )
        fault_point("combine")
        shutil.rmtree(self.root / std_folder(self.run, std).name, ignore_errors=True)


def drop_finished_chunks(run: Path) -> None:
    """Remove the chunks of std values that are complete (a run killed between assembling a std's folder
    and dropping its chunks), and the chunk folder itself once nothing unfinished is left in it."""
    root = Path(run) / PER_STD / PARTIAL
    if not root.exists():
        return
    for folder in root.iterdir():
        if folder.is_dir() and (Path(run) / PER_STD / folder.name / "done.json").exists():
            shutil.rmtree(folder, ignore_errors=True)
    if not any(p.is_dir() for p in root.iterdir()):
        shutil.rmtree(root, ignore_errors=True)
