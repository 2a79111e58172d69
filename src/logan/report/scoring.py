"""Membership scoring of score vectors (higher score = more likely member), many rows at once.

- AUC: area under the ROC curve, computed exactly as the Mann-Whitney count (pairs member > non-member,
  ties counting one half, over all pairs); `auc_ci_low/high`: a stratified bootstrap 95 % interval
  (members and non-members resampled separately, 1000 resamples, seeded), as reviewers of MIA papers ask.
- acc: best balanced accuracy over thresholds, max(1 - (FPR + FNR) / 2), as LiRA / the original.
- TPR at FPR t (5 %, 1 %, 0.1 %): the largest TPR among ROC points with FPR <= t (no interpolation),
  reported with the FPR actually reached and the number of non-members above the threshold. With
  fewer than 1/t non-members an FPR of t cannot be resolved: `tpr_at_*_estimable` is false and the
  value (reached at FPR 0) is a conservative bound, not an estimate.
- Cross-fitted runs (`selection.split=crossfit`): every value is the mean over the two folds, each fold
  scored at the std chosen on the other (`fold_mean_summary`).

How it scales: `roc_summaries` scores every row of a (rows x samples) matrix that shares one label
vector in one sorted pass (non-finite entries are left out of their row). A bootstrap resample only
reweights the samples, so its AUC is a weighted count over the row's sorted order (no sorting per
resample), and the resampled indices depend only on (seed, members, non-members): they are drawn once
and shared by every row with those counts. Values equal sklearn's `roc_curve` / `roc_auc_score` and a
per-resample rank formula (tests/test_scoring.py compares them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_curve

FPR_TARGETS = {"5pct": 0.05, "1pct": 0.01, "0.1pct": 0.001}
N_BOOTSTRAP = 1000
CHUNK_ELEMENTS = 1 << 22  # resamples x rows x samples held at once by the bootstrap (32 MiB per array)
ROW_ELEMENTS = 1 << 20  # rows x samples sorted at once (8 MiB per array)


def roc_summary(labels: np.ndarray, scores: np.ndarray, bootstrap_seed: int | None = None) -> dict:
    """AUC (with a bootstrap interval if a seed is given), best balanced accuracy, TPR at low FPR."""
    return roc_summaries(labels, np.asarray(scores, dtype=np.float64)[None], [bootstrap_seed])[0]


def roc_summaries(labels: np.ndarray, scores: np.ndarray, seeds: Sequence[int | None]) -> list[dict]:
    """`roc_summary` of every row of `scores` (rows x samples, one label per sample; non-finite entries
    are left out of their row), each row's interval drawn with its own seed (None: no interval)."""
    return rows_with_resamples(labels, scores, seeds)[0]


def rows_with_resamples(
    labels: np.ndarray, scores: np.ndarray, seeds: Sequence[int | None]
) -> tuple[list[dict], list[np.ndarray | None]]:
    """`roc_summaries` and, per row, its bootstrap AUCs (None where no seed is given or a class is empty).
    Rows are sorted ROW_ELEMENTS scores at a time; resample draws are shared across all of them."""
    scores = np.asarray(scores, dtype=np.float64)
    summaries: list[dict] = []
    resampled: list[np.ndarray | None] = []
    draws: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}
    step = max(1, ROW_ELEMENTS // max(1, scores.shape[1]))
    for start in range(0, len(scores), step):
        ranked = Ranked.of(labels, scores[start : start + step])
        resampled += ranked.bootstrap(seeds[start : start + step], draws=draws)
        summaries += ranked.summaries()
    return [
        summary if aucs is None else _with_interval(summary, aucs)
        for summary, aucs in zip(summaries, resampled)
    ], resampled


def bootstrap_auc_interval(
    labels: np.ndarray, scores: np.ndarray, seed: int, resamples: int = N_BOOTSTRAP
) -> tuple[float, float]:
    """Stratified bootstrap 95 % interval of the AUC."""
    return _interval(bootstrap_aucs(labels, scores, seed, resamples))


def bootstrap_aucs(
    labels: np.ndarray, scores: np.ndarray, seed: int, resamples: int = N_BOOTSTRAP
) -> np.ndarray:
    """The AUCs of `resamples` stratified bootstrap resamples (members and non-members drawn separately)."""
    ranked = Ranked.of(labels, np.asarray(scores, dtype=np.float64)[None])
    (aucs,) = ranked.bootstrap([seed], resamples)
    assert aucs is not None, "a seed was given: the resamples are drawn"
    return aucs


def _interval(aucs: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(aucs, [2.5, 97.5])
    return float(low), float(high)


def _with_interval(summary: dict, aucs: np.ndarray) -> dict:
    """`summary` with the interval placed after the AUC, where readers of metrics.json find it."""
    low, high = _interval(aucs)
    out: dict = {}
    for name, value in summary.items():
        out[name] = value
        if name == "auc":
            out["auc_ci_low"], out["auc_ci_high"] = low, high
    return out


@dataclass
class Ranked:
    """Rows of scores sorted highest first (non-finite entries last, outside every count), with what the
    counts need: each position's class, its slot among its class's samples in the input order (what a
    bootstrap draw indexes), and the non-members at or above its tie group and above the group."""

    positive: np.ndarray  # rows x n, bool: a finite member score at this sorted position
    negative: np.ndarray  # rows x n, bool: a finite non-member score
    slot: np.ndarray  # rows x n: index among the row's finite members (or non-members), input order
    point: np.ndarray  # rows x n, bool: the last position of a tie group (a ROC point)
    fp: np.ndarray  # rows x n: non-members at or before this position
    tp: np.ndarray  # rows x n: members at or before this position
    fp_end: np.ndarray  # rows x n: non-members up to the end of this position's tie group
    fp_before: np.ndarray  # rows x n: non-members before this position's tie group

    @classmethod
    def of(cls, labels: np.ndarray, scores: np.ndarray) -> Ranked:
        scores = np.asarray(scores, dtype=np.float64)
        member = np.broadcast_to(np.asarray(labels).astype(int).astype(bool), scores.shape)
        finite = np.isfinite(scores)
        slot = np.where(member, np.cumsum(finite & member, 1), np.cumsum(finite & ~member, 1)) - 1
        key = np.where(finite, -scores, np.inf)
        order = np.argsort(key, axis=1, kind="stable")

        def take(a: np.ndarray) -> np.ndarray:
            return np.take_along_axis(a, order, 1)

        key, finite, member, slot = take(key), take(finite), take(member), take(slot)
        positive, negative = finite & member, finite & ~member
        rows, n = key.shape
        last = np.ones_like(finite)
        last[:, :-1] = key[:, 1:] != key[:, :-1]
        point = finite & last
        index = np.broadcast_to(np.arange(n), key.shape)
        end = np.minimum.accumulate(np.where(point, index, n - 1)[:, ::-1], axis=1)[:, ::-1]
        before = np.concatenate(
            [np.full((rows, 1), -1), np.maximum.accumulate(np.where(point, index, -1), 1)[:, :-1]], axis=1
        )
        fp, tp = np.cumsum(negative, 1), np.cumsum(positive, 1)
        fp0 = np.concatenate([np.zeros((rows, 1), dtype=fp.dtype), fp], axis=1)  # fp0[:, i + 1] = fp[:, i]
        return cls(
            positive,
            negative,
            slot,
            point,
            fp,
            tp,
            np.take_along_axis(fp0, end + 1, 1),
            np.take_along_axis(fp0, before + 1, 1),
        )

    @property
    def n_members(self) -> np.ndarray:
        return self.tp[:, -1] if self.tp.shape[1] else np.zeros(len(self.tp), dtype=int)

    @property
    def n_nonmembers(self) -> np.ndarray:
        return self.fp[:, -1] if self.fp.shape[1] else np.zeros(len(self.fp), dtype=int)

    def aucs(self) -> np.ndarray:
        """Each row's AUC: twice the Mann-Whitney count over twice the pairs (exact integers, one division)."""
        npos, nneg = self.n_members, self.n_nonmembers
        twice = 2 * npos * nneg - np.sum(np.where(self.positive, self.fp_end + self.fp_before, 0), axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return twice / (2 * npos * nneg)

    def summaries(self) -> list[dict]:
        """Every row's counts, AUC, best balanced accuracy and TPR at each target FPR. The ROC points are
        (0, 0) and the end of every tie group; at a target the first point of the highest TPR with
        FPR <= target is reported (the origin when no point below the target has a member)."""
        npos, nneg = self.n_members, self.n_nonmembers
        with np.errstate(invalid="ignore", divide="ignore"):
            tpr, fpr = self.tp / npos[:, None], self.fp / nneg[:, None]
        acc = np.maximum(
            0.5, np.max(np.where(self.point, 1 - (fpr + (1 - tpr)) / 2, 0.0), axis=1, initial=0.0)
        )
        at: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for key, target in FPR_TARGETS.items():
            below = self.point & (fpr <= target)
            best = np.max(np.where(below, tpr, 0.0), axis=1, initial=0.0)
            first = np.min(np.where(below & (tpr == best[:, None]), fpr, np.inf), axis=1, initial=np.inf)
            at[key] = best, np.where(best > 0, first, 0.0)
        aucs, out = self.aucs(), []
        for i, (n_members, n_nonmembers) in enumerate(zip(npos.tolist(), nneg.tolist())):
            row: dict = {"n_members": n_members, "n_nonmembers": n_nonmembers}
            if n_members == 0 or n_nonmembers == 0:
                out.append(
                    row
                    | {"auc": float("nan"), "acc": float("nan")}
                    | {f"tpr_at_{k}_fpr": float("nan") for k in FPR_TARGETS}
                )
                continue
            row |= {"auc": float(aucs[i]), "acc": float(acc[i])}
            for key, target in FPR_TARGETS.items():
                best, first = float(at[key][0][i]), float(at[key][1][i])
                row |= {
                    f"tpr_at_{key}_fpr": best,
                    f"fpr_at_{key}_fpr": first,
                    f"fp_at_{key}_fpr": round(first * n_nonmembers),
                    f"tpr_at_{key}_fpr_estimable": bool(n_nonmembers * target >= 1),
                }
            out.append(row)
        return out

    def bootstrap(
        self,
        seeds: Sequence[int | None],
        resamples: int = N_BOOTSTRAP,
        draws: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> list[np.ndarray | None]:
        """Per row, the AUCs of its stratified bootstrap resamples drawn with its seed (None: not drawn).

        A resample draws each member (non-member) slot a number of times; its AUC is the count of
        weighted pairs: sum over member positions of weight x (non-member weight below the position's
        tie group + half the weight within it). The draws are those of `np.random.default_rng` for
        (seed, members, non-members), made once for every row sharing them (and kept in `draws`, given
        one, for the rows of the next call)."""
        draws = {} if draws is None else draws
        out: list[np.ndarray | None] = [None] * len(seeds)
        npos, nneg = self.n_members, self.n_nonmembers
        shared: dict[tuple[int, int, int], list[int]] = {}
        for i, seed in enumerate(seeds):
            if seed is not None and npos[i] > 0 and nneg[i] > 0:
                shared.setdefault((int(seed), int(npos[i]), int(nneg[i])), []).append(i)
        for (seed, n_pos, n_neg), rows in shared.items():
            if (seed, n_pos, n_neg) not in draws:
                draws[(seed, n_pos, n_neg)] = _draw_counts(seed, n_pos, n_neg, resamples)
            draws_pos, draws_neg = draws[(seed, n_pos, n_neg)]
            per_row = max(1, CHUNK_ELEMENTS // (resamples * max(n_pos, n_neg)))
            for start in range(0, len(rows), per_row):
                chunk = rows[start : start + per_row]
                twice = self._weighted_counts(chunk, draws_pos, draws_neg, n_pos, n_neg)
                for j, row in enumerate(chunk):
                    out[row] = twice[:, j] / (2 * n_pos * n_neg)
        return out

    def _weighted_counts(
        self, rows: list[int], draws_pos: np.ndarray, draws_neg: np.ndarray, n_pos: int, n_neg: int
    ) -> np.ndarray:
        """Twice the Mann-Whitney count of every resample (resamples x rows) of `rows`, which all hold
        n_pos members and n_neg non-members. Integers throughout: the counts are exact."""
        positive, negative, slot = self.positive[rows], self.negative[rows], self.slot[rows]
        pos_at = np.argsort(~positive, axis=1, kind="stable")[:, :n_pos]  # members' sorted positions
        neg_at = np.argsort(~negative, axis=1, kind="stable")[:, :n_neg]
        pos_slot = np.take_along_axis(slot, pos_at, 1).ravel()
        neg_slot = np.take_along_axis(slot, neg_at, 1).ravel()
        offset = (n_neg + 1) * np.arange(len(rows))[:, None]  # row r's cumulative weights in a flat row
        end = (np.take_along_axis(self.fp_end[rows], pos_at, 1) + offset).ravel()
        before = (np.take_along_axis(self.fp_before[rows], pos_at, 1) + offset).ravel()
        twice = np.empty((len(draws_pos), len(rows)), dtype=np.int64)
        step = max(1, CHUNK_ELEMENTS // (len(rows) * max(n_pos, n_neg)))
        for r in range(0, len(draws_pos), step):
            count = min(step, len(draws_pos) - r)
            below = np.zeros((count, len(rows), n_neg + 1), dtype=draws_neg.dtype)  # weight of the first k
            np.cumsum(
                np.take(draws_neg[r : r + step], neg_slot, axis=1).reshape(count, len(rows), n_neg),
                axis=2,
                out=below[:, :, 1:],
            )
            flat = below.reshape(count, -1)
            weighted = np.take(flat, end, axis=1)
            weighted += np.take(flat, before, axis=1)
            weighted *= np.take(draws_pos[r : r + step], pos_slot, axis=1)
            twice[r : r + step] = 2 * n_pos * n_neg - weighted.reshape(count, len(rows), n_pos).sum(
                2, dtype=np.int64
            )
        return twice


def _draw_counts(seed: int, n_pos: int, n_neg: int, resamples: int) -> tuple[np.ndarray, np.ndarray]:
    """How often each member and each non-member is drawn in each resample (resamples x n), as integers
    wide enough for twice the Mann-Whitney count's terms (int32 while 2 x members x non-members fits)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xB007])
    dtype = np.int32 if 2 * n_pos * n_neg < 2**31 else np.int64
    counts = []
    for n in (n_pos, n_neg):
        drawn = rng.integers(0, n, (resamples, n)) + n * np.arange(resamples)[:, None]
        counts.append(np.bincount(drawn.ravel(), minlength=resamples * n).reshape(resamples, n).astype(dtype))
    return counts[0], counts[1]


def fold_mean_summary(folds: list[tuple[np.ndarray, np.ndarray]], bootstrap_seed: int | None = None) -> dict:
    """Cross-fitted scoring: `roc_summary` of each fold (labels, scores), averaged over the folds (counts
    summed). Scores of two folds come from two noise levels and are not on one scale, so the folds are not
    pooled: the AUC is the mean of the fold AUCs, its interval a stratified bootstrap within every fold."""
    each, resampled = [], []
    for i, (labels, scores) in enumerate(folds):
        seed = None if bootstrap_seed is None else bootstrap_seed + i
        summaries, draws = rows_with_resamples(labels, np.asarray(scores, dtype=np.float64)[None], [seed])
        each.append(summaries[0])
        resampled.append(draws[0])
    return fold_mean(each, resampled if bootstrap_seed is not None else None)


def fold_mean(each: list[dict], resampled: list[np.ndarray | None] | None) -> dict:
    """The folds' summaries averaged (counts summed, estimable only if every fold is), with the interval
    of the fold-mean bootstrap AUC when every fold has its resamples and a finite AUC."""
    each = [{k: v for k, v in summary.items() if not k.startswith("auc_ci_")} for summary in each]
    out: dict = {}
    for name in dict.fromkeys(name for summary in each for name in summary):
        if name.startswith(("n_", "fp_at_")):
            out[name] = int(sum(summary.get(name, 0) for summary in each))
        elif name.endswith("_estimable"):
            out[name] = all(summary.get(name, False) for summary in each)
        else:
            out[name] = float(np.mean([summary.get(name, np.nan) for summary in each]))
    out["fold_auc"] = [summary["auc"] for summary in each]
    drawn = [r for r in resampled if r is not None] if resampled is not None else []
    if resampled is not None and all(np.isfinite(out["fold_auc"])) and len(drawn) == len(resampled):
        out["auc_ci_low"], out["auc_ci_high"] = _interval(np.mean(drawn, axis=0))
    return out


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fpr, tpr, _ = roc_curve(np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64))
    return fpr, tpr
