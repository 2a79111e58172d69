"""VL-MIA baselines against the float64 references (tests/reference_metrics.py), aggregation edges, bootstrap,
blind baseline, augmentations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from reference_metrics import close, per_token

from logan.augment import N_AUGMENTATIONS, augment
from logan.data.synthetic import make_split
from logan.metrics import all_metrics, get_metric
from logan.metrics.aggregate import k_means
from logan.metrics.pair import TokenPair
from logan.report.blind import blind_baseline
from logan.report.scoring import bootstrap_auc_interval, roc_summary

CLEAN = sorted(n for n, s in all_metrics().items() if s.needs == "clean")


@pytest.mark.parametrize("name", CLEAN)
@pytest.mark.parametrize("scale", [0.5, 3.0, 20.0])
def test_clean_metric_matches_float64_reference(name: str, scale: float) -> None:
    rng = np.random.default_rng(int(scale * 10))
    logits = (scale * rng.standard_normal((40, 300))).astype(np.float32)
    targets = rng.integers(0, 300, 40)
    targets[:10] = logits[:10].argmax(-1)  # image positions: the argmax is the target
    got = get_metric(name).fn(TokenPair(torch.from_numpy(logits), None, torch.from_numpy(targets))).double().numpy()
    want = per_token(name, "logan", logits, logits, targets, [])
    assert close(got, want), (name, np.abs(got - want).max())


def test_ties_give_a_zero_gap_and_uniform_entropies() -> None:
    logits = torch.zeros((2, 8))
    pair = TokenPair(logits, None, torch.tensor([0, 3]))
    assert torch.all(get_metric("max_prob_gap").fn(pair) == 0)
    for name in ("max_k_renyi_05_entro", "max_k_renyi_1_entro", "max_k_renyi_2_entro", "max_k_renyi_inf_entro"):
        np.testing.assert_allclose(get_metric(name).fn(pair).numpy(), np.log(8), rtol=1e-5)
    np.testing.assert_allclose(get_metric("ppl").fn(pair).numpy(), np.log(8), rtol=1e-6)


def test_orientations_are_declared_once() -> None:
    metrics = all_metrics()
    assert metrics["aug_kld"].member_when == "high" and metrics["aug_kld"].sign == 1.0
    assert metrics["ppl"].sign == -1.0 and metrics["min_k_renyi_05_entro"].aggregate == "min_k"
    assert all(s.needs in ("noise", "clean", "augment") for s in metrics.values())


@pytest.mark.parametrize("largest", [True, False])
def test_k_means_edges(largest: bool) -> None:
    values = np.array([5.0, 1.0, 3.0, 3.0, 2.0, 4.0, 0.0, 6.0, 6.0, 7.0])
    ordered = np.sort(values)[::-1] if largest else np.sort(values)
    ratios = [0.0, 0.05, 0.1, 0.15, 0.2, 0.5, 0.99, 1.0]
    want = [ordered[: max(1, int(k * len(values)))].mean() for k in ratios]
    np.testing.assert_allclose(k_means(values, ratios, largest), want)
    assert np.isnan(k_means(np.array([]), [0.5], largest)).all()


def test_bootstrap_interval_is_reproducible_and_brackets_the_auc() -> None:
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(150), np.zeros(150)].astype(int)
    scores = rng.standard_normal(300) + 0.6 * labels
    first = bootstrap_auc_interval(labels, scores, seed=3)
    assert first == bootstrap_auc_interval(labels, scores, seed=3)
    assert first != bootstrap_auc_interval(labels, scores, seed=4)
    summary = roc_summary(labels, scores, bootstrap_seed=3)
    assert summary["auc_ci_low"] < summary["auc"] < summary["auc_ci_high"]
    assert 0.04 < summary["auc_ci_high"] - summary["auc_ci_low"] < 0.2  # about +-0.06 at 150/150


def test_low_fpr_is_marked_not_estimable_with_few_non_members() -> None:
    labels = np.r_[np.ones(50), np.zeros(50)].astype(int)
    scores = np.r_[np.linspace(1, 2, 50), np.linspace(0, 1.5, 50)]
    summary = roc_summary(labels, scores)
    assert summary["tpr_at_5pct_fpr_estimable"] and summary["tpr_at_1pct_fpr_estimable"] is False
    assert summary["tpr_at_0.1pct_fpr_estimable"] is False
    assert summary["fpr_at_5pct_fpr"] <= 0.05 and summary["fp_at_5pct_fpr"] == round(summary["fpr_at_5pct_fpr"] * 50)


def as_set(frame: pd.DataFrame) -> pd.DataFrame:
    """A JSON list's frame (image paths) as a set frame: files in `path`, no bytes held."""
    return frame.rename(columns={"image": "path"}).assign(image=None, name=frame.image)


def test_blind_baseline_sees_no_shift_in_one_distribution(tmp_path) -> None:
    lists = make_split(tmp_path, {"members": 60, "nonmembers": 60}, size=40, seed=1)
    frame = pd.concat([pd.read_json(lists["members"]), pd.read_json(lists["nonmembers"])], ignore_index=True)
    result = blind_baseline(as_set(frame), seed=0)
    assert 0.3 < result["auc"] < 0.7 and result["verdict"].startswith("ok")


def test_blind_baseline_flags_a_shifted_split(tmp_path) -> None:
    lists = make_split(tmp_path, {"members": 40, "nonmembers": 40}, size=40, seed=2)
    frame = pd.concat([pd.read_json(lists["members"]), pd.read_json(lists["nonmembers"])], ignore_index=True)
    for path in frame[frame.label == 0].image:  # non-members re-saved larger and as JPEG: another source
        jpg = path.replace(".png", ".jpg")
        Image.open(path).resize((80, 60)).save(jpg, quality=70)
        frame.loc[frame.image == path, "image"] = jpg
    result = blind_baseline(as_set(frame), seed=0)
    assert result["auc"] > 0.95 and result["verdict"].startswith("WARNING")


def test_augmentations_are_seeded_and_keep_the_size() -> None:
    image = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    for index in range(N_AUGMENTATIONS):
        a = augment(image, index, seed=1, key=7)
        assert a.shape == image.shape and a.dtype == np.float32
        assert np.array_equal(a, augment(image, index, seed=1, key=7))
        assert not np.array_equal(a, augment(image, index, seed=2, key=7))
