"""ROC summary: AUC, best balanced accuracy and TPR at a fixed FPR, checked against hand counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from logan.report.scoring import roc_points, roc_summary


def labelled(members, nonmembers):
    scores = np.asarray(list(members) + list(nonmembers), dtype=float)
    labels = np.asarray([1] * len(members) + [0] * len(nonmembers))
    return labels, scores


def brute_force(labels, scores):
    """Independent reference: every threshold 'member iff score >= t', ties counted together."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = np.sum(pos[:, None] > neg[None, :]) + 0.5 * np.sum(pos[:, None] == neg[None, :])
    auc = wins / (len(pos) * len(neg))
    points = []
    for t in np.concatenate([[np.inf], np.unique(scores)]):
        points.append((np.mean(neg >= t), np.mean(pos >= t)))
    acc = max(1 - (f + (1 - t)) / 2 for f, t in points)
    out = {"auc": auc, "acc": acc}
    for key, target in (("5pct", 0.05), ("1pct", 0.01)):
        ok = [(t, f) for f, t in points if f <= target]
        best_tpr = max(t for t, _ in ok)
        out[f"tpr_at_{key}_fpr"] = best_tpr
        out[f"fpr_at_{key}_fpr"] = min(f for t, f in ok if t == best_tpr)
    return out


def test_perfect_separation():
    labels, scores = labelled([5, 6, 7, 8], [1, 2, 3])
    out = roc_summary(labels, scores)
    assert out["n_members"] == 4 and out["n_nonmembers"] == 3
    assert out["auc"] == 1.0 and out["acc"] == 1.0
    assert out["tpr_at_5pct_fpr"] == 1.0 and out["tpr_at_1pct_fpr"] == 1.0
    assert out["fpr_at_5pct_fpr"] == 0.0 and out["fpr_at_1pct_fpr"] == 0.0


def test_reversed_separation():
    labels, scores = labelled([1, 2, 3], [5, 6, 7, 8])
    out = roc_summary(labels, scores)
    assert out["auc"] == 0.0
    assert out["tpr_at_5pct_fpr"] == 0.0 and out["tpr_at_1pct_fpr"] == 0.0
    # the best threshold is "everything member" or "nothing member": balanced accuracy 0.5
    assert out["acc"] == 0.5


def test_all_tied_scores():
    labels, scores = labelled([1.0] * 5, [1.0] * 5)
    out = roc_summary(labels, scores)
    assert out["auc"] == 0.5 and out["acc"] == 0.5
    assert out["tpr_at_5pct_fpr"] == 0.0 and out["fpr_at_5pct_fpr"] == 0.0


def test_hand_counted_20_nonmembers_with_ties():
    # 20 non-members 0..19 (each is 5 % FPR); 10 members, two tied with the top non-member at 19
    members = [25, 24, 23, 19, 19, 18.5, 10, 5, 3, 1]
    labels, scores = labelled(members, range(20))
    out = roc_summary(labels, scores)
    # FPR 0: members above 19 -> 3/10.  FPR 5 % (>= 19): 5 members; >= 18.5: 6 members, still 1 non-member
    assert out["tpr_at_1pct_fpr"] == pytest.approx(0.3)
    assert out["fpr_at_1pct_fpr"] == 0.0
    assert out["tpr_at_5pct_fpr"] == pytest.approx(0.6)
    assert out["fpr_at_5pct_fpr"] == pytest.approx(0.05)
    # AUC by counting (a tie is half a win): members win 20, 20, 20, 19.5, 19.5, 19, 10.5, 5.5, 3.5, 1.5
    assert out["auc"] == pytest.approx((20 * 3 + 19.5 * 2 + 19 + 10.5 + 5.5 + 3.5 + 1.5) / 200)
    # balanced accuracy: threshold 18.5 -> TPR 0.6, FPR 0.05 -> 0.775; threshold 10 -> TPR 0.7, FPR 0.5
    assert out["acc"] == pytest.approx(0.775)
    assert out == pytest.approx(out | brute_force(labels, scores))


def test_hand_counted_200_nonmembers_reports_the_realised_fpr():
    # 200 non-members 0..199: 1 % FPR = 2 non-members, 5 % = 10
    members = [300, 250, 199, 199, 198.5, 197, 150, 100, 50, 0]
    labels, scores = labelled(members, range(200))
    out = roc_summary(labels, scores)
    # >= 199: TPR 0.4, FPR 0.005; >= 198.5: TPR 0.5, FPR 0.005; >= 198: TPR 0.5, FPR 0.01;
    # >= 197: TPR 0.6, FPR 0.015; the next member is at 150 (FPR 0.25)
    assert out["tpr_at_1pct_fpr"] == pytest.approx(0.5)
    assert out["fpr_at_1pct_fpr"] == pytest.approx(0.005)
    assert out["tpr_at_5pct_fpr"] == pytest.approx(0.6)
    assert out["fpr_at_5pct_fpr"] == pytest.approx(0.015)  # realised, not the 5 % target
    assert out == pytest.approx(out | brute_force(labels, scores))


def test_no_interpolation_between_roc_points():
    # 10 non-members: every ROC step is 10 % FPR, so FPR <= 5 % only holds at FPR 0
    members = [8.5, 7.5, 6.5, 5.5, 4.5]
    labels, scores = labelled(members, range(10))
    out = roc_summary(labels, scores)
    # no member above the top non-member (9): TPR at FPR 0 is 0; TPR 0.2 needs FPR 0.2 (>= 8.5),
    # and no straight line from (0, 0) to (0.2, 0.2) is used to invent TPR 0.05 at FPR 5 %
    assert out["tpr_at_5pct_fpr"] == 0.0 and out["fpr_at_5pct_fpr"] == 0.0
    assert out["tpr_at_1pct_fpr"] == 0.0


def test_few_nonmembers_only_fpr_zero_counts():
    members = [11, 10.5, 3]
    labels, scores = labelled(members, range(10))
    out = roc_summary(labels, scores)
    assert out["tpr_at_1pct_fpr"] == pytest.approx(2 / 3) and out["fpr_at_1pct_fpr"] == 0.0
    assert out["tpr_at_5pct_fpr"] == pytest.approx(2 / 3) and out["fpr_at_5pct_fpr"] == 0.0


def test_balanced_accuracy_on_unbalanced_classes():
    # 4 members, 8 non-members; threshold 7 -> TPR 3/4, FPR 0 -> 0.875 beats
    # threshold 2 -> TPR 1, FPR 5/8 (0.6875) and threshold 6 -> TPR 3/4, FPR 1/8 (0.8125)
    members = [9, 8, 7, 2]
    nonmembers = [6, 4, 3, 3, 1, 1, 0, 0]
    labels, scores = labelled(members, nonmembers)
    out = roc_summary(labels, scores)
    assert out["acc"] == pytest.approx(0.875)
    assert out == pytest.approx(out | brute_force(labels, scores))


@pytest.mark.parametrize("seed", range(6))
def test_random_scores_with_ties_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_m, n_n = rng.integers(5, 60, size=2)
    scores = np.round(np.concatenate([rng.normal(0.5, 1, n_m), rng.normal(0, 1, n_n)]), 1)
    labels = np.array([1] * n_m + [0] * n_n)
    perm = rng.permutation(len(labels))
    labels, scores = labels[perm], scores[perm]
    out = roc_summary(labels, scores)
    want = brute_force(labels, scores)
    for key, value in want.items():
        assert out[key] == pytest.approx(value, abs=1e-12), key
    assert out["n_members"] == n_m and out["n_nonmembers"] == n_n


def test_invariant_to_order_and_monotone_transforms():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 80)
    scores = rng.normal(size=80) + labels
    base = roc_summary(labels, scores)
    perm = rng.permutation(80)
    assert roc_summary(labels[perm], scores[perm]) == pytest.approx(base)
    assert roc_summary(labels, np.exp(scores) * 3 + 1) == pytest.approx(base)


def test_labels_as_bool_and_float():
    labels, scores = labelled([3, 4], [1, 2])
    assert roc_summary(labels.astype(bool), scores)["auc"] == 1.0
    assert roc_summary(labels.astype(float), scores)["auc"] == 1.0


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0]])
def test_single_class_gives_nan(labels):
    out = roc_summary(np.array(labels), np.arange(len(labels), dtype=float))
    assert out["n_members"] == sum(labels)
    for key in ("auc", "acc", "tpr_at_5pct_fpr", "tpr_at_1pct_fpr"):
        assert math.isnan(out[key])


def test_roc_points():
    labels, scores = labelled([3, 2], [1, 0])
    fpr, tpr = roc_points(labels, scores)
    assert fpr[0] == 0.0 and tpr[-1] == 1.0 and fpr[-1] == 1.0
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


# ------------------------------------------------------------- many rows at once, against a reference

def reference_summary(labels: np.ndarray, scores: np.ndarray, seed: int | None) -> dict:
    """A straightforward reference: non-finite scores dropped, sklearn's roc_curve / roc_auc_score on the
    rest, and the bootstrap as one rank sum per resample (scipy's rankdata), resampled as documented."""
    from scipy.stats import rankdata
    from sklearn.metrics import roc_auc_score, roc_curve

    ok = np.isfinite(scores)
    labels, scores = labels[ok].astype(int), scores[ok]
    n_pos, n_neg = int(labels.sum()), int((1 - labels).sum())
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    out = {"n_members": n_pos, "n_nonmembers": n_neg, "auc": roc_auc_score(labels, scores),
           "acc": np.max(1 - (fpr + (1 - tpr)) / 2)}
    for key, target in {"5pct": 0.05, "1pct": 0.01, "0.1pct": 0.001}.items():
        best = int(np.argmax(np.where(fpr <= target, tpr, -1.0)))
        out |= {f"tpr_at_{key}_fpr": tpr[best], f"fpr_at_{key}_fpr": fpr[best],
                f"fp_at_{key}_fpr": round(fpr[best] * n_neg), f"tpr_at_{key}_fpr_estimable": n_neg * target >= 1}
    if seed is not None:
        rng = np.random.default_rng([seed, 0xB007])
        pos, neg = scores[labels == 1], scores[labels == 0]
        drawn = np.concatenate([pos[rng.integers(0, n_pos, (1000, n_pos))], neg[rng.integers(0, n_neg, (1000, n_neg))]], 1)
        aucs = (rankdata(drawn, axis=1)[:, :n_pos].sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        out["auc_ci_low"], out["auc_ci_high"] = np.percentile(aucs, [2.5, 97.5])
    return out


def random_rows(seed: int, rows: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Rows of scores over one labelled sample: coarse values (many ties), some rows constant, and NaN,
    +inf and -inf entries scattered over members and non-members."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 90))
    labels = rng.permutation(np.r_[np.ones(n // 3 + 1), np.zeros(n - n // 3 - 1)]).astype(int)
    scores = np.round(rng.normal(size=(rows, n)) + rng.uniform(0, 2, (rows, 1)) * labels, int(rng.integers(0, 2)))
    scores[0] = 1.0  # every score tied
    holes = rng.random((rows, n)) < 0.1
    scores[holes] = rng.choice([np.nan, np.inf, -np.inf], holes.sum())
    return labels, scores


@pytest.mark.parametrize("seed", range(8))
def test_many_rows_equal_the_reference(seed):
    from logan.report.scoring import roc_summaries

    labels, scores = random_rows(seed)
    seeds = [None if i % 3 == 0 else 11 * i for i in range(len(scores))]
    seeds[1] = seeds[2] = 5  # rows drawn with one seed share their resampled indices when their counts agree
    got = roc_summaries(labels, scores, seeds)
    for row, seed_here, out in zip(scores, seeds, got):
        want = reference_summary(labels, row, seed_here)
        assert set(out) == set(want)
        for key, value in want.items():
            assert out[key] == pytest.approx(value, abs=1e-12, rel=0), key
        if seed_here is not None:  # the interval is the same resampled AUCs, not merely close
            assert (out["auc_ci_low"], out["auc_ci_high"]) == (want["auc_ci_low"], want["auc_ci_high"])


def test_a_row_without_a_class_left_is_nan_and_others_are_unaffected():
    from logan.report.scoring import roc_summaries

    labels = np.array([1, 1, 0, 0, 0])
    scores = np.array([[3.0, 2.0, 1.0, 0.0, 2.0], [np.nan, np.inf, 1.0, 0.0, 2.0]])
    first, second = roc_summaries(labels, scores, [0, 0])
    assert first == pytest.approx(reference_summary(labels, scores[0], 0))
    assert second["n_members"] == 0 and second["n_nonmembers"] == 3
    assert math.isnan(second["auc"]) and "auc_ci_low" not in second


def test_bootstrap_in_chunks_equals_all_at_once(monkeypatch):
    from logan.report import scoring

    labels, scores = random_rows(3, rows=5)
    whole = scoring.roc_summaries(labels, scores, [1] * 5)
    monkeypatch.setattr(scoring, "CHUNK_ELEMENTS", 7)  # one row and a few resamples at a time
    assert scoring.roc_summaries(labels, scores, [1] * 5) == whole


def test_plots_are_drawn_where_report_plots_says():
    from logan.report.evaluate import plotted_stds

    def row(std, auc, needs="noise", part="img"):
        return {"std": std, "k": 1.0, "auc": auc, "needs": needs, "part": part}

    rows = [row(1.0, 0.6), row(2.0, 0.7), row(4.0, 0.65, part="desp"), row(8.0, 0.9, needs="none")]
    stds = [1.0, 2.0, 4.0, 8.0]
    assert plotted_stds("selected", stds, rows, 1.0) == [2.0]  # the best LOGAN row, not the baseline's 0.9
    assert plotted_stds("every_std", stds, rows, 1.0) == stds
    assert plotted_stds("none", stds, rows, 1.0) == []
    assert plotted_stds("selected", [None], rows, 1.0) == [None]  # each part at its own std: one pair
    assert plotted_stds("selected", stds, [], 1.0) == [1.0]


def test_rows_sorted_in_chunks_equal_all_at_once(monkeypatch):
    from logan.report import scoring

    labels, scores = random_rows(5, rows=9)
    seeds = [2, None, 2, 3, None, 2, 2, 3, 1]
    whole = scoring.roc_summaries(labels, scores, seeds)
    monkeypatch.setattr(scoring, "ROW_ELEMENTS", 2 * scores.shape[1])  # two rows at a time, draws reused
    assert scoring.roc_summaries(labels, scores, seeds) == whole
