"""Optional experiment trackers: what a run's results.json holds, logged to TensorBoard or Weights & Biases too.

    logan tune ... tracking=tensorboard      # OUT/tensorboard; view with `tensorboard --logdir OUT`
    WANDB_MODE=offline logan classify ... tracking=wandb

Off by default (`tracking=none`) and never required: the package is imported only when asked for, and a
missing one stops the command before any work with the pip command that installs it (`check_tracking`).
TensorBoard is torch's `torch.utils.tensorboard` (it needs the `tensorboard` package) or `tensorboardX`;
wandb is configured by its own environment (WANDB_MODE, WANDB_PROJECT, WANDB_DIR, ...), one wandb run per
results.json. What is logged, for every results.json a command writes (`log_results`):

- scalars: the tuning curves (`curve/<part>/<metric>/<column>`, the step is the std's position in the grid,
  `curve/std` its value), the selected std (`selection/...`), the membership metrics at K = selection.k
  (`classify/<part>/<metric>/<column>`, step = position of the std among the run's stds), the demo's table;
- the tables as text (TensorBoard) or tables (wandb), the configuration and package versions;
- the plots the command drew (tuning curve, ROC, histograms).

A tracker that fails while logging (a full disk, a network error) is a warning: results.json is written
before it is called.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from logan.errors import LoganError

log = logging.getLogger(__name__)

INSTALL = {"tensorboard": "pip install tensorboard (or tensorboardX)", "wandb": "pip install wandb"}
CURVE_COLUMNS = ("tune_auc", "gap", "target_mean", "reference_mean")
METRIC_COLUMNS = ("auc", "tpr_at_5pct_fpr", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "acc")


def check_tracking(name: str) -> None:
    """Before a command does any work: the tracker `name` can be imported (one line naming the install if not)."""
    if name != "none":
        _backend(name)


def _backend(name: str) -> Any:
    """The tracker's entry point: TensorBoard's SummaryWriter class, or the wandb module."""
    if name == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            try:
                from tensorboardX import SummaryWriter as XWriter
            except ImportError:
                raise LoganError(
                    f"tracking=tensorboard needs TensorBoard, which is not installed: "
                    f"{INSTALL[name]}; or leave tracking=none."
                ) from None
            return XWriter
        return SummaryWriter
    if name == "wandb":
        try:
            import wandb
        except ImportError:
            raise LoganError(
                f"tracking=wandb needs Weights & Biases, which is not installed: {INSTALL[name]}; "
                "or leave tracking=none."
            ) from None
        return wandb
    raise LoganError(f"tracking={name} is not one of none, tensorboard, wandb.")


def log_results(cfg: Any, doc: dict[str, Any], images: list[Path]) -> None:
    """Log a results.json's content and the command's plots to `cfg.tracking` (nothing for `none`)."""
    if cfg.tracking == "none":
        return
    out = Path(cfg.output_dir)
    try:
        (_tensorboard if cfg.tracking == "tensorboard" else _wandb)(_backend(cfg.tracking), out, doc, images)
    except LoganError:
        raise
    except Exception as exc:  # noqa: BLE001 - a tracker's failure never costs the run its results
        log.warning(
            "tracking=%s: logging %s's results failed (%s: %s); results.json is written",
            cfg.tracking,
            out,
            type(exc).__name__,
            exc,
        )
        return
    log.info("tracking=%s: logged %s's results", cfg.tracking, out)


def scalars(doc: dict[str, Any]) -> Iterator[tuple[str, float, int]]:
    """(tag, value, step) of the numbers a tracker plots: curves over the std grid, the selection, the metrics."""
    if "curves" in doc:
        curves = doc["curves"]
        grid = sorted(set(curves["std"]))
        for step, std in enumerate(grid):
            yield "curve/std", std, step
        for i, std in enumerate(curves["std"]):
            for column in CURVE_COLUMNS:
                if curves[column][i] is not None:
                    yield (
                        f"curve/{curves['part'][i]}/{curves['metric'][i]}/{column}",
                        curves[column][i],
                        grid.index(std),
                    )
        selection = doc["selection"]
        yield "selection/optimal_std", selection["optimal_std"], 0
        for part, std in selection.get("per_part", {}).items():
            yield f"selection/optimal_std/{part}", std, 0
    for key, prefix in (("metrics", "classify"), ("comparison", "demo")):
        if key not in doc:
            continue
        table = doc[key]
        stds = sorted({s for s in table["std"] if s is not None})
        for i, k in enumerate(table["k"]):
            if not math.isclose(k, doc["k"]):
                continue
            model = f"{table['model'][i]}/" if "model" in table else ""
            step = stds.index(table["std"][i]) if table["std"][i] is not None else 0
            for column in METRIC_COLUMNS:
                value = table[column][i] if column in table else None
                if value is not None:
                    yield f"{prefix}/{model}{table['part'][i]}/{table['metric'][i]}/{column}", value, step


def _tables(doc: dict[str, Any]) -> dict[str, dict[str, list[Any]]]:
    return {name: doc[name] for name in ("curves", "metrics", "comparison") if name in doc}


def _tensorboard(writer_class: Any, out: Path, doc: dict[str, Any], images: list[Path]) -> None:
    import numpy as np
    from PIL import Image

    writer = writer_class(log_dir=str(out / "tensorboard"))
    try:
        for tag, value, step in scalars(doc):
            writer.add_scalar(tag, float(value), step)
        writer.add_text("config", _code(doc["config"]))
        writer.add_text("versions", _code(doc["versions"]))
        for name, table in _tables(doc).items():
            writer.add_text(f"table/{name}", _markdown(table))
        for path in images:
            with Image.open(path) as image:
                writer.add_image(f"plot/{path.stem}", np.asarray(image.convert("RGB")), 0, dataformats="HWC")
    finally:
        writer.close()


def _wandb(wandb: Any, out: Path, doc: dict[str, Any], images: list[Path]) -> None:
    run = wandb.init(
        name=f"{doc['command']} {out.name}", job_type=doc["command"], dir=str(out), config=doc["config"]
    )
    try:
        by_step: dict[int, dict[str, float]] = {}
        for tag, value, step in scalars(doc):
            by_step.setdefault(step, {})[tag] = float(value)
        for step in sorted(by_step):
            run.log(by_step[step], step=step)
        logged: dict[str, Any] = {f"plot/{path.stem}": wandb.Image(str(path)) for path in images}
        for name, table in _tables(doc).items():
            names = list(table)
            logged[f"table/{name}"] = wandb.Table(
                columns=names,
                data=[
                    [json.dumps(v) if isinstance(v, (list, dict)) else v for v in row]
                    for row in zip(*table.values())
                ],
            )
        if logged:
            run.log(logged, step=max(by_step, default=0))
        run.summary["versions"] = doc["versions"]
    finally:
        run.finish()


def _code(value: Any) -> str:
    return "```\n" + json.dumps(value, indent=2) + "\n```"


def _markdown(table: dict[str, list[Any]], limit: int = 2000) -> str:
    """A column table as a Markdown table (TensorBoard renders its text panels as Markdown)."""
    names = list(table)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in list(zip(*table.values()))[:limit]:
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)
