"""Per-image verdicts: was this image in the training data? No membership labels needed.

Each target image's score (higher = more likely member) is compared with the scores of the reference set,
images known not to be in the training data, scored at the same std, part, metric and K:

    p = (1 + #{reference scores >= score}) / (1 + n_ref)

the conformal p-value of "this image is a non-member" (Vovk et al., "Algorithmic Learning in a Random
World", 2005; Bates et al., "Testing for outliers with conformal p-values", Ann. Statist. 2023). For a
non-member exchangeable with the reference images, P(p <= a) <= a at every level a: calling an image
member when p <= `verdict.fpr` keeps the false positive rate at most fpr, whatever the score's scale. An
image that is itself in the reference set (the reference = the target's non-members) is compared with
the other reference images only (leave-one-out: p = #{reference scores >= score} / n_ref).

The decision is a threshold on the score: an image outside the reference set is called member when its
score exceeds t, the (m + 1)-th largest reference score, where m = floor(fpr * (n_ref + 1)) - 1 is the
most reference scores it may lie at or below; its false positive rate is then (m + 1) / (n_ref + 1) <= fpr
for a non-member exchangeable with the reference images. The realised FPR is the rule applied to the known
non-members: the fraction of reference images called member when each is compared with the others (the
verdict a reference image gets when it is also a target image).

How many reference images an FPR needs: with n_ref * fpr < 1 the realised FPR moves in steps (1 / n_ref)
coarser than the FPR asked for, it is 0 whatever the scores, and with n_ref < 1 / fpr - 1 no image can be
called member at all: such an FPR is unsupported. Below SUPPORTED_COUNT expected reference images above
the threshold the realised FPR is a rough estimate (binomial relative standard error about
1 / sqrt(n_ref * fpr), above 30 %): imprecise. The p-values stand either way.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from logan.errors import LoganError, count

if TYPE_CHECKING:
    from logan.config import RunConfig

log = logging.getLogger(__name__)

SUPPORTED_COUNT = 10  # expected reference images above the threshold for a precise realised FPR (~30 % error)
RULE = (
    "member when p <= fpr; p = (1 + #{reference scores >= score}) / (1 + n_ref), leave-one-out for an image "
    "in the reference set; higher score = more likely member"
)
COLUMNS = [
    "sample_id",
    "image",
    "part",
    "metric",
    "k",
    "std",
    "score",
    "p_value",
    "verdict",
    "label",
    "in_reference",
    "std_chosen_on_it",
]
TOLERANCE = 1e-9  # p and fpr are compared as counts: (1 + c) <= fpr (1 + n), up to rounding


def fpr_text(fpr: float) -> str:
    """An FPR as a percentage: 0.0001 -> '0.01 %'."""
    return f"{100 * fpr:.4g} %"


def p_values(scores: np.ndarray, reference: np.ndarray, own: np.ndarray | None = None) -> np.ndarray:
    """Conformal p-values of `scores` against the finite `reference` scores; `own` marks scores that are one
    of the reference scores (compared with the others only). NaN for a non-finite score."""
    scores = np.asarray(scores, dtype=np.float64)
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    n = len(ref)
    at_or_above = n - np.searchsorted(ref, scores, side="left")
    p = (1.0 + at_or_above) / (1.0 + n)
    if own is not None and own.any():
        p = np.where(own, at_or_above / max(n, 1), p)
    return np.where(np.isfinite(scores), p, np.nan)


def decide(p: np.ndarray, fpr: float) -> np.ndarray:
    """'member' where p <= fpr, 'non-member' above, 'n/a' where p is NaN (a non-finite score)."""
    p = np.asarray(p, dtype=np.float64)
    member = p <= fpr * (1 + TOLERANCE)
    return np.where(np.isnan(p), "n/a", np.where(member, "member", "non-member"))


@dataclass(frozen=True)
class Calibration:
    """What the reference set gives at one FPR: the score threshold, the FPR it realises and its support."""

    fpr: float
    n_ref: int
    threshold: float  # an image outside the reference is member when its score > threshold (inf: none)
    expected_fpr: (
        float  # that rule's FPR on a new non-member exchangeable with the reference: (m + 1) / (n + 1)
    )
    realised_fpr: float  # the fraction of reference images called member, each against the others
    n_ref_flagged: int  # ... as a count
    support: str  # ok | imprecise | unsupported
    message: str  # why, when not ok ("" when ok)


def support(n_ref: int, fpr: float) -> tuple[str, str]:
    """Whether `n_ref` reference images support `fpr` (ok | imprecise | unsupported), and the sentence that
    says why not."""
    need, precise = math.ceil(1 / fpr - TOLERANCE), math.ceil(SUPPORTED_COUNT / fpr - TOLERANCE)
    if n_ref * fpr < 1 - TOLERANCE:
        nothing = max_above(n_ref, fpr) < 0
        return "unsupported", (
            f"{count(n_ref, 'reference image')} cannot support FPR {fpr_text(fpr)}: the realised FPR moves in steps of "
            f"1/{n_ref} = {fpr_text(1 / n_ref)}, and the smallest p-value is 1/{n_ref + 1}"
            f"{', so no image can be called member' if nothing else ''}; at least {need} reference images are "
            f"needed ({precise} for a precise estimate). The p-values stand."
        )
    if n_ref * fpr < SUPPORTED_COUNT:
        return "imprecise", (
            f"{count(n_ref, 'reference image')} support FPR {fpr_text(fpr)} only roughly: about {n_ref * fpr:.3g} of "
            f"them fall on the member side of the threshold, so the realised FPR has a relative standard error "
            f"near {100 / math.sqrt(n_ref * fpr):.0f} % ({precise} reference images bring it near 30 %)."
        )
    return "ok", ""


def max_above(n_ref: int, fpr: float) -> int:
    """The most reference scores at or above an image's score for it to be called member at `fpr`."""
    return math.floor(fpr * (n_ref + 1) * (1 + TOLERANCE)) - 1


def calibrate(reference: np.ndarray, fpr: float) -> Calibration:
    """The threshold, expected and realised FPR and support of the finite `reference` scores at `fpr`."""
    ref = np.sort(np.asarray(reference, dtype=np.float64))[::-1]
    n = len(ref)
    if n == 0:
        raise LoganError(
            "the reference set holds no finite score: no verdict can be given; give a reference set "
            "(data.reference_datasets_list) of known non-members."
        )
    m = max_above(n, fpr)
    threshold = float("inf") if m < 0 else float(ref[m])  # m < n: fpr < 1
    flagged = int((decide(p_values(ref, ref, np.ones(n, dtype=bool)), fpr) == "member").sum())
    level, message = support(n, fpr)
    return Calibration(fpr, n, threshold, max(m + 1, 0) / (n + 1), flagged / n, flagged, level, message)


def verdict_table(
    target: pd.DataFrame, reference: pd.DataFrame, fpr: float
) -> tuple[pd.DataFrame, list[dict]]:
    """Verdicts of one (part, metric, K): `target` rows (sample_id, image, label, std, score, ...) against the
    `reference` rows (sample_id, std, score) at the same std. Returns the table (COLUMNS, one row per target
    row) and one summary per std (its Calibration, the verdict counts and, on labelled rows, the TPR / FPR
    the verdicts realise)."""
    tables, summaries = [], []
    for std, rows in target.groupby("std", sort=True):
        ref = reference[reference["std"] == std]
        finite = ref[np.isfinite(ref.score.to_numpy())]
        calibration = calibrate(finite.score.to_numpy(), fpr)
        own = rows.sample_id.isin(set(finite.sample_id)).to_numpy()
        p = p_values(rows.score.to_numpy(), finite.score.to_numpy(), own)
        table = rows.assign(p_value=p, verdict=decide(p, fpr), in_reference=own)
        if "std_chosen_on_it" not in table:
            table["std_chosen_on_it"] = False
        table["label"] = table.label.where(table.label >= 0)  # unknown membership: empty
        tables.append(table)
        summaries.append(
            {
                "std": float(std),
                **asdict(calibration),
                "n_ref_dropped": len(ref) - len(finite),
                **counts(table),
                "labelled": label_check(table),
            }
        )
        if not math.isfinite(calibration.threshold):
            summaries[-1]["threshold"] = None  # no score is high enough: no image can be called member
    frame = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=COLUMNS)
    frame["label"] = frame.label.astype("Int8")
    return frame[COLUMNS], summaries


def counts(table: pd.DataFrame) -> dict[str, int]:
    verdict = table.verdict.to_numpy()
    return {
        "n_target": len(table),
        "n_flagged": int((verdict == "member").sum()),
        "n_undetermined": int((verdict == "n/a").sum()),
        "n_in_reference": int(table.in_reference.sum()),
    }


def label_check(table: pd.DataFrame) -> dict[str, Any] | None:
    """The verdicts against the labels where they are known: TPR on members, FPR on non-members (None when
    no row is labelled)."""
    labels, member = table.label.to_numpy(dtype=float), (table.verdict == "member").to_numpy()
    known = ~np.isnan(labels) & (table.verdict != "n/a").to_numpy()
    if not known.any():
        return None
    members, nonmembers = known & (labels == 1), known & (labels == 0)
    return {
        "n_members": int(members.sum()),
        "n_nonmembers": int(nonmembers.sum()),
        "members_flagged": int((member & members).sum()),
        "nonmembers_flagged": int((member & nonmembers).sum()),
        "tpr": float(member[members].mean()) if members.any() else None,
        "fpr": float(member[nonmembers].mean()) if nonmembers.any() else None,
    }


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The verdicts in a few lines (stdout): per std, the headline and its notes."""
    lines = []
    for entry in summary["per_std"]:
        headline, notes = describe(summary, entry)
        lines += [headline, *(f"note: {note}" for note in notes)]
    return lines


def describe(summary: dict[str, Any], entry: dict[str, Any]) -> tuple[str, list[str]]:
    """One std's verdicts: the headline (flagged count, realised FPR, n_ref and, on labelled images, the TPR /
    FPR the verdicts realise), and the notes: the support message first, then the leave-one-out one."""
    where = f"{summary['part']}, {summary['metric']}, K = {summary['k']:g}, std {entry['std']:g}"
    headline = (
        f"verdicts ({where}): {entry['n_flagged']} of {count(entry['n_target'], 'image')} called member at FPR "
        f"{fpr_text(summary['fpr'])} (realised FPR {fpr_text(entry['realised_fpr'])} on "
        f"{count(entry['n_ref'], 'reference image')})"
    )
    check = entry.get("labelled")
    if check:
        headline += (
            f"; against the labels: TPR {_rate(check['tpr'])} ({check['members_flagged']} of "
            f"{count(check['n_members'], 'member')}), FPR {_rate(check['fpr'])} "
            f"({check['nonmembers_flagged']} of {count(check['n_nonmembers'], 'non-member')})"
        )
    notes = [entry["message"]] if entry["message"] else []
    shared = entry["n_in_reference"]
    if shared:
        notes.append(
            f"{count(shared, 'target image')} {'is' if shared == 1 else 'are'} in the reference set; each "
            "is compared with the other reference images (leave-one-out)"
        )
    return headline, notes


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def write_verdicts(table: pd.DataFrame, summary: dict[str, Any], out: Path) -> None:
    """OUT/verdicts.csv (one row per target image and std) and OUT/verdicts.json (the summary)."""
    from logan.io import atomic_path, write_json

    with atomic_path(out / "verdicts.csv") as tmp:
        table.to_csv(tmp, index=False)
    write_json(out / "verdicts.json", summary)
    for line in summary_lines(summary):
        log.info("%s", line)


def choose(cfg: RunConfig, source: Path | None) -> tuple[str, str]:
    """The (part, metric) of the verdicts: verdict.part / verdict.metric, else the part and metric the std was
    selected on (the tuning run's optimal_std.json `source`, else selection.part / selection.metric), else
    the first part and the first noise-dependent metric. Explicit values must be ones the run scores."""
    from logan.io import read_json
    from logan.metrics.registry import get_metric

    v, m = cfg.verdict, cfg.img_metrics
    if v.part is not None and v.part not in m.parts:
        raise LoganError(f"verdict.part={v.part} is not in img_metrics.parts ({', '.join(m.parts)}).")
    if v.metric is not None and v.metric not in m.metrics_to_use:
        raise LoganError(
            f"verdict.metric={v.metric} is not in img_metrics.metrics_to_use; use one of "
            f"{', '.join(m.metrics_to_use)}."
        )
    selected = read_json(source) if source is not None and Path(source).is_file() else {}
    part = v.part or next((p for p in (selected.get("part"), cfg.selection.part) if p in m.parts), m.parts[0])
    noise = [name for name in m.metrics_to_use if get_metric(name).needs == "noise"] or m.metrics_to_use
    metric = v.metric or next(
        (
            name
            for name in (selected.get("selection_metric"), cfg.selection.metric)
            if name in m.metrics_to_use
        ),
        noise[0],
    )
    return part, metric


def per_image(
    cfg: RunConfig, source: Path | None, target: pd.DataFrame, reference: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The verdicts of a classify run: its target rows (as reported: holdout and crossfit applied) against its
    reference rows, at the chosen part and metric and K = selection.k. Returns verdicts.csv's table and
    verdicts.json's summary."""
    part, metric = choose(cfg, source)
    k, fpr = cfg.selection.k, cfg.verdict.fpr

    def chosen(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[(frame.part == part) & (frame.metric == metric) & np.isclose(frame.k, k)]

    table, per_std = verdict_table(chosen(target), chosen(reference), fpr)
    shared = int(reference.sample_id.drop_duplicates().isin(set(target.sample_id)).sum())
    summary = {
        "rule": RULE,
        "fpr": fpr,
        "part": part,
        "metric": metric,
        "k": k,
        "reference": {"n_images": int(reference.sample_id.nunique()), "in_target": shared},
        "per_std": per_std,
    }
    return table, summary
