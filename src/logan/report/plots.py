"""Plots: the tuning curve (target - reference divergence over std) and ROC curves (linear, log-log).

Figures are made with matplotlib's object-oriented API (`matplotlib.figure.Figure`), which draws to a
file without a GUI backend or pyplot's global figure list: the caller's backend and open figures (in a
notebook, say) stay as they were.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from logan.io import atomic_path
from logan.report.scoring import roc_points


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=150, bbox_inches="tight")


def tuning_curve(
    curves: dict[str, list[dict]], selected: str, optimal_std: float, path: Path, value: str = "tune_auc"
) -> None:
    """The curve the rule reads over std (`tune_auc`: target-vs-reference AUC; `gap`: mean(target) -
    mean(reference)), one line per metric, the optimum marked."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for metric, points in curves.items():
        stds = np.array([p["std"] for p in points])
        values = np.array([p[value] for p in points])
        positive = stds > 0
        style: dict[str, Any] = {"lw": 2.2, "zorder": 3} if metric == selected else {"lw": 1.0, "alpha": 0.6}
        ax.plot(stds[positive], values[positive], marker="o", ms=3, label=metric, **style)
        if metric == selected:
            best = next(p for p in points if p["std"] == optimal_std)
            ax.scatter(
                [optimal_std],
                [best[value]],
                s=120,
                facecolors="none",
                edgecolors="red",
                zorder=4,
                label=f"optimal std = {optimal_std:g}",
            )
    ax.axhline(0.5 if value == "tune_auc" else 0.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("noise std (0-255 pixel units)")
    ax.set_ylabel(
        "AUC of target vs reference" if value == "tune_auc" else "mean(target) - mean(reference) divergence"
    )
    ax.set_title("LOGAN noise-level tuning")
    ax.legend(fontsize=6, loc="best")
    _save(fig, path)


def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> None:
    """Linear and log-log ROC side by side for labelled (labels, scores) pairs."""
    fig = Figure(figsize=(10, 4.2))
    lin, log = fig.subplots(1, 2)
    _roc_pair(lin, log, {name: roc_points(labels, scores) for name, (labels, scores) in curves.items()})
    fig.suptitle(title)
    _save(fig, path)


def roc_overlay(panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], path: Path, title: str) -> None:
    """One row per panel (a part): linear and log-log ROC of every named (fpr, tpr) curve, overlaid."""
    fig = Figure(figsize=(10, 3.9 * max(len(panels), 1)), layout="constrained")
    axes = fig.subplots(max(len(panels), 1), 2, squeeze=False)
    for (lin, log), (panel, curves) in zip(axes, panels.items()):
        _roc_pair(lin, log, curves)
        lin.set_title(f"{panel} (linear)", fontsize=9)
        log.set_title(f"{panel} (log-log)", fontsize=9)
    fig.suptitle(title)
    _save(fig, path)


def _roc_pair(lin: Any, log: Any, curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """(fpr, tpr) curves on a linear and a log-log axis, with the chance diagonal."""
    for name, (fpr, tpr) in curves.items():
        lin.plot(fpr, tpr, lw=1.2, label=name)
        log.plot(np.maximum(fpr, 1e-5), np.maximum(tpr, 1e-5), lw=1.2, label=name)
    for ax in (lin, log):
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
    log.set_xscale("log")
    log.set_yscale("log")
    log.set_xlim(1e-3, 1)
    log.set_ylim(1e-3, 1)
    lin.legend(fontsize=6, loc="lower right")


def curve_overlay(
    panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], path: Path, title: str, ylabel: str
) -> None:
    """One panel per part: every named (std, value) curve over a log std axis (std 0 left out)."""
    fig = Figure(figsize=(6.5, 3.4 * max(len(panels), 1)), layout="constrained")
    axes = fig.subplots(max(len(panels), 1), 1, squeeze=False)[:, 0]
    for ax, (panel, curves) in zip(axes, panels.items()):
        for name, (stds, values) in curves.items():
            ax.plot(stds[stds > 0], values[stds > 0], marker="o", ms=3, lw=1.2, label=name)
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("noise std (0-255 pixel units)")
        ax.set_ylabel(ylabel)
        ax.set_title(panel, fontsize=9)
        ax.legend(fontsize=6, loc="best")
    fig.suptitle(title)
    _save(fig, path)


def score_histograms(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """Member vs non-member score histograms, one panel per (part: metric)."""
    _save(histogram_figure(curves), path)


def histogram_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """The histograms' figure; constrained layout keeps each panel's title clear of the axis label of the
    panel above it."""
    n = max(len(curves), 1)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (name, (labels, scores)) in zip(axes.ravel(), curves.items()):
        bins = np.histogram_bin_edges(scores, bins=30) if len(scores) else 10
        ax.hist(scores[labels == 0], bins=bins, alpha=0.55, label="non-members", color="tab:blue")
        ax.hist(scores[labels == 1], bins=bins, alpha=0.55, label="members", color="tab:orange")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("score (higher = member)", fontsize=8)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(curves) :]:
        ax.axis("off")
    return fig
