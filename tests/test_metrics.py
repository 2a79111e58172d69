"""Per-token metrics against independent float64 references written from the textbook definitions.

The references below never call LOGAN code: they work on float64 copies of the very float32 logits
the metric receives (so the clean - noisy difference is exact) and follow the original's recipe.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from logan.errors import LoganError
from logan.metrics import all_metrics, get_metric
from logan.metrics.aggregate import max_k_means
from logan.metrics.divergence import centred, kl_from_centred, log_mean_exp_centred, renyi_from_centred
from logan.metrics.pair import TokenPair

VOCAB = 500
N_TOKENS = 12
EPS = 1e-12
CLAMP = 1e-10
FLIP_KL = math.log((1 + 1e-12) / 1e-12)

KL_ALPHA = {
    "max_k_renyi_05_kl_div": 0.5,
    "max_k_renyi_1_kl_div": 1.0,
    "max_k_renyi_2_kl_div": 2.0,
}
RENYI_ALPHA = {
    "max_k_renyi_divergence_025": 0.25,
    "max_k_renyi_divergence_05": 0.5,
    "max_k_renyi_divergence_2": 2.0,
    "max_k_renyi_divergence_4": 4.0,
}
ALL_NAMES = {"max_k_no_norn_kl_div", "max_k_renyi_inf_kl_div", *KL_ALPHA, *RENYI_ALPHA}
NOISE_SCALES = [1e-4, 1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0]


# ---------------------------------------------------------------- float64 references (no LOGAN code)


def ref_log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    top = x.max(-1, keepdims=True)
    return x - top - np.log(np.exp(x - top).sum(-1, keepdims=True))


def ref_kl(clean: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """KL(P || Q) = sum_v p_v (log p_v - log q_v) on the plain softmax."""
    lp, lq = ref_log_softmax(clean), ref_log_softmax(noisy)
    return (np.exp(lp) * (lp - lq)).sum(-1)


def ref_kl_clamped(clean: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """The original's plain KL: probabilities clamped to [1e-10, 1 - 1e-10] (not renormalised), eps in logs."""
    p = np.clip(np.exp(ref_log_softmax(clean)), CLAMP, 1 - CLAMP)
    q = np.clip(np.exp(ref_log_softmax(noisy)), CLAMP, 1 - CLAMP)
    return (p * (np.log(p + EPS) - np.log(q + EPS))).sum(-1)


def ref_renyi_normalised(logits: np.ndarray, alpha: float) -> np.ndarray:
    """The original's normalisation: clamp softmax probs to [1e-10, 1 - 1e-10], p^a, renormalise."""
    p = np.exp(ref_log_softmax(logits))
    p = np.clip(p, CLAMP, 1 - CLAMP) ** alpha
    return p / p.sum(-1, keepdims=True)


def ref_kl_normalised(clean: np.ndarray, noisy: np.ndarray, alpha: float) -> np.ndarray:
    p, q = ref_renyi_normalised(clean, alpha), ref_renyi_normalised(noisy, alpha)
    return (p * (np.log(p + EPS) - np.log(q + EPS))).sum(-1)


def ref_kl_argmax(clean: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """KL between the one-hots at the argmax, with eps = 1e-12 inside the logs."""
    flipped = clean.argmax(-1) != noisy.argmax(-1)
    return np.where(flipped, FLIP_KL, 0.0)


def ref_renyi(clean: np.ndarray, noisy: np.ndarray, alpha: float) -> np.ndarray:
    """D_a(P || Q) = 1 / (a - 1) * log sum_v p_v^a q_v^(1 - a), via a float64 log-sum-exp."""
    lp, lq = ref_log_softmax(clean), ref_log_softmax(noisy)
    x = alpha * lp + (1 - alpha) * lq
    top = x.max(-1, keepdims=True)
    log_sum = (top + np.log(np.exp(x - top).sum(-1, keepdims=True)))[..., 0]
    return log_sum / (alpha - 1)


def reference(name: str, clean: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    if name == "max_k_no_norn_kl_div":
        return ref_kl_clamped(clean, noisy)
    if name == "max_k_renyi_inf_kl_div":
        return ref_kl_argmax(clean, noisy)
    if name in KL_ALPHA:
        return ref_kl_normalised(clean, noisy, KL_ALPHA[name])
    return ref_renyi(clean, noisy, RENYI_ALPHA[name])


# ---------------------------------------------------------------- helpers


def logits_pair(scale: float, seed: int, logit_scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    clean = (logit_scale * rng.standard_normal((N_TOKENS, VOCAB))).astype(np.float32)
    noisy = (clean + scale * rng.standard_normal(clean.shape)).astype(np.float32)
    return torch.from_numpy(clean), torch.from_numpy(noisy)


def evaluate(name: str, clean: torch.Tensor, noisy: torch.Tensor) -> np.ndarray:
    out = get_metric(name).fn(TokenPair(clean, noisy))
    assert out.shape == (clean.shape[0],)
    return out.double().numpy()


# ---------------------------------------------------------------- registry


def test_registry_holds_the_nine_original_metrics():
    metrics = {name: spec for name, spec in all_metrics().items() if spec.needs == "noise"}
    assert set(metrics) == ALL_NAMES
    for name, spec in metrics.items():
        assert callable(spec.fn) and spec.aggregate == "max_k" and spec.member_when == "low"
        assert get_metric(name) is spec


def test_all_metrics_returns_a_copy():
    first = all_metrics()
    first.pop("max_k_no_norn_kl_div")
    assert "max_k_no_norn_kl_div" in all_metrics()


def test_unknown_metric_is_a_logan_error_with_suggestion():
    with pytest.raises(LoganError, match="Did you mean 'max_k_no_norn_kl_div'"):
        get_metric("max_k_no_norm_kl_div")


# ---------------------------------------------------------------- against the references

FLOAT32_PRECISION = (
    "float32 summation: with logit differences ~1e-4..1e-3 the divergences (~1e-9..1e-7) carry "
    "~1e-7 * |delta| of rounding from the centring / expm1 sums, up to a few % relative error"
)
ORIGINAL_EPS = (
    "the original's KL adds eps=1e-12 inside the logs, capping the renyi_2 log-ratio at ln(1e12)=27.63; "
    "TokenPair.normalised drops eps, so a clean token whose renormalised noisy probability falls below "
    "1e-12 gives up to ln(1e20)=46.05 instead"
)


@pytest.mark.parametrize("name", sorted(ALL_NAMES))
@pytest.mark.parametrize("scale", [1e-2, 0.1, 0.3, 1.0, 3.0])
def test_metric_matches_float64_reference(name, scale):
    clean, noisy = logits_pair(scale, seed=int(scale * 1e4) + 7)
    got = evaluate(name, clean, noisy)
    want = reference(name, clean.numpy(), noisy.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-12)


@pytest.mark.parametrize("scale", [1e-4, 1e-3])
def test_small_noise_stays_within_a_few_percent(scale):
    """What float32 achieves today at tiny perturbations (a regression guard, not the target)."""
    clean, noisy = logits_pair(scale, seed=int(scale * 1e4) + 7)
    for name in sorted(ALL_NAMES):
        got = evaluate(name, clean, noisy)
        want = reference(name, clean.numpy(), noisy.numpy())
        np.testing.assert_allclose(got, want, rtol=5e-2 if scale < 1e-3 else 1e-2, atol=1e-13, err_msg=name)


def test_small_noise_matches_reference_to_1e_3():
    clean, noisy = logits_pair(1e-4, seed=8)
    for name in sorted(ALL_NAMES):
        got = evaluate(name, clean, noisy)
        want = reference(name, clean.numpy(), noisy.numpy())
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("name", sorted(ALL_NAMES))
@pytest.mark.parametrize("scale", [1e-2, 0.1, 1.0, 3.0])
def test_metric_matches_reference_on_large_logits(name, scale):
    """Logits x20 (peaked distributions, most probabilities below the 1e-10 clamp).

    Float32 cannot resolve divergences below ~1e-7 * |delta| here (the top probability is 1 - tiny),
    hence the absolute tolerance proportional to the noise scale.
    """
    clean, noisy = logits_pair(scale, seed=11, logit_scale=20.0)
    got = evaluate(name, clean, noisy)
    want = reference(name, clean.numpy(), noisy.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6 * scale)


@pytest.mark.parametrize("name", sorted(ALL_NAMES))
def test_metric_matches_reference_on_unrelated_distributions(name):
    rng = np.random.default_rng(3)
    clean = torch.from_numpy((4 * rng.standard_normal((N_TOKENS, VOCAB))).astype(np.float32))
    noisy = torch.from_numpy((4 * rng.standard_normal((N_TOKENS, VOCAB))).astype(np.float32))
    got = evaluate(name, clean, noisy)
    np.testing.assert_allclose(got, reference(name, clean.numpy(), noisy.numpy()), rtol=1e-3, atol=1e-9)


def test_renyi_2_kl_uses_the_original_eps():
    # argmax swap between two tokens 30 logits apart: p'(noisy) of the clean top token is ~1e-26
    clean = torch.tensor([[0.0, -30.0, -15.0]])
    noisy = torch.tensor([[-30.0, 0.0, -15.0]])
    got = evaluate("max_k_renyi_2_kl_div", clean, noisy)
    want = ref_kl_normalised(clean.numpy(), noisy.numpy(), 2.0)
    assert want[0] == pytest.approx(27.631, abs=1e-3)
    np.testing.assert_allclose(got, want, rtol=1e-3)  # actual: 46.05


def test_renyi_2_kl_matches_reference_under_large_noise():
    clean, noisy = logits_pair(10.0, seed=11, logit_scale=3.0)
    got = evaluate("max_k_renyi_2_kl_div", clean, noisy)
    want = reference("max_k_renyi_2_kl_div", clean.numpy(), noisy.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-3)


@pytest.mark.parametrize("name", sorted(ALL_NAMES - {"max_k_renyi_inf_kl_div"}))
def test_argmax_swap_with_a_large_logit_gap(name):
    clean = torch.tensor([[0.0, -110.0, -55.0]])
    noisy = torch.tensor([[-110.0, 0.0, -55.0]])
    got = evaluate(name, clean, noisy)
    want = reference(name, clean.numpy(), noisy.numpy())
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-3)


@pytest.mark.parametrize("name", sorted(ALL_NAMES))
def test_argmax_swap_with_a_moderate_logit_gap(name):
    clean = torch.tensor([[0.0, -60.0, -30.0]])
    noisy = torch.tensor([[-60.0, 0.0, -30.0]])
    got = evaluate(name, clean, noisy)
    np.testing.assert_allclose(got, reference(name, clean.numpy(), noisy.numpy()), rtol=1e-3)


def test_small_perturbation_kl_is_half_the_variance():
    """Second-order expansion: KL(p || q) ~ Var_p(delta) / 2 for a tiny logit difference delta."""
    clean, noisy = logits_pair(1e-3, seed=5)
    delta = (clean.double() - noisy.double()).numpy()
    p = np.exp(ref_log_softmax(clean.numpy()))
    var = (p * delta**2).sum(-1) - (p * delta).sum(-1) ** 2
    np.testing.assert_allclose(evaluate("max_k_no_norn_kl_div", clean, noisy), var / 2, rtol=5e-3)


# ---------------------------------------------------------------- structural properties


@pytest.mark.parametrize("name", sorted(ALL_NAMES))
@pytest.mark.parametrize("logit_scale", [1.0, 60.0])
def test_identical_logits_give_exact_zero(name, logit_scale):
    clean, _ = logits_pair(0.0, seed=2, logit_scale=logit_scale)
    out = get_metric(name).fn(TokenPair(clean, clean.clone()))
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("name", sorted(ALL_NAMES))
def test_values_are_non_negative_and_finite(name):
    for seed, (scale, logit_scale) in enumerate([(1e-4, 3.0), (1.0, 3.0), (30.0, 60.0), (5.0, 0.1)]):
        clean, noisy = logits_pair(scale, seed=100 + seed, logit_scale=logit_scale)
        out = evaluate(name, clean, noisy)
        assert np.all(np.isfinite(out))
        assert np.all(out >= 0.0)


@pytest.mark.parametrize("name", sorted(ALL_NAMES - {"max_k_renyi_inf_kl_div"}))
def test_values_grow_with_perturbation_scale(name):
    rng = np.random.default_rng(9)
    clean = (3 * rng.standard_normal((N_TOKENS, VOCAB))).astype(np.float32)
    direction = rng.standard_normal(clean.shape).astype(np.float32)
    means = []
    for scale in NOISE_SCALES:
        noisy = (clean + np.float32(scale) * direction).astype(np.float32)
        means.append(evaluate(name, torch.from_numpy(clean), torch.from_numpy(noisy)))
    values = np.stack(means)  # [scale, token]
    assert np.all(values[0] > 0)
    assert np.all(np.diff(values, axis=0) > 0), values.mean(-1)
    # roughly quadratic at small scales: 10x the noise, about 100x the divergence
    ratio = values[1] / values[0]
    assert np.all((ratio > 60) & (ratio < 160))


def test_argmax_metric_counts_flips_growing_with_scale():
    rng = np.random.default_rng(4)
    clean = (3 * rng.standard_normal((200, VOCAB))).astype(np.float32)
    direction = rng.standard_normal(clean.shape).astype(np.float32)
    flips = []
    for scale in (0.0, 1e-4, 0.3, 3.0, 30.0):
        noisy = torch.from_numpy((clean + np.float32(scale) * direction).astype(np.float32))
        out = evaluate("max_k_renyi_inf_kl_div", torch.from_numpy(clean), noisy)
        assert np.all((out == 0.0) | np.isclose(out, FLIP_KL, rtol=1e-6))
        flips.append(int((out > 0).sum()))
    assert flips[0] == flips[1] == 0
    assert flips[2] < flips[3] < flips[4]


def test_argmax_flip_value_is_the_original_constant():
    clean = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    noisy = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.5]])
    out = get_metric("max_k_renyi_inf_kl_div").fn(TokenPair(clean, noisy))
    assert out[0].item() == pytest.approx(27.631021, abs=1e-5)
    assert out[0].item() == pytest.approx(FLIP_KL, rel=1e-6)
    assert out[1].item() == 0.0


def test_argmax_ties_resolve_to_the_first_maximum():
    """Tied maxima: argmax is the first index (torch / numpy rule) for clean and noisy alike."""
    clean = torch.tensor([[5.0, 5.0, 0.0, 1.0]] * 3)
    noisy = torch.tensor([
        [5.0, 5.0, 0.0, 1.0],   # same tie -> same argmax
        [5.0, 4.9, 0.0, 1.0],   # tie broken towards index 0 -> no flip
        [4.9, 5.0, 0.0, 1.0],   # tie broken towards index 1 -> flip
    ])
    out = evaluate("max_k_renyi_inf_kl_div", clean, noisy)
    np.testing.assert_allclose(out, ref_kl_argmax(clean.numpy(), noisy.numpy()))
    np.testing.assert_allclose(out, [0.0, 0.0, FLIP_KL], rtol=1e-6)


@pytest.mark.parametrize("name", sorted(ALL_NAMES))
def test_ties_in_logits_match_reference(name):
    """Many exactly tied logits (a flat region of the vocabulary) are handled like any other."""
    rng = np.random.default_rng(12)
    clean = np.zeros((N_TOKENS, VOCAB), dtype=np.float32)
    clean[:, :5] = 2.0
    noisy = (clean + 0.05 * rng.standard_normal(clean.shape)).astype(np.float32)
    got = evaluate(name, torch.from_numpy(clean), torch.from_numpy(noisy))
    np.testing.assert_allclose(got, reference(name, clean, noisy), rtol=1e-3, atol=1e-12)


@pytest.mark.parametrize("name", sorted(ALL_NAMES - {"max_k_renyi_inf_kl_div"}))
def test_invariant_to_a_constant_shift_of_the_logits(name):
    clean, noisy = logits_pair(0.3, seed=21)
    base = evaluate(name, clean, noisy)
    shifted = evaluate(name, clean + 7.0, noisy - 3.0)
    np.testing.assert_allclose(shifted, base, rtol=1e-3, atol=1e-6)


def test_token_pair_intermediates():
    clean, noisy = logits_pair(0.2, seed=31)
    pair = TokenPair(clean.half(), noisy.half())
    assert pair.clean.dtype == torch.float32 and pair.noisy.dtype == torch.float32
    c, n = pair.clean.numpy(), pair.noisy.numpy()
    lp, lq = ref_log_softmax(c), ref_log_softmax(n)
    np.testing.assert_allclose(pair.clean_p.double().numpy(), np.exp(lp), rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(pair.logp_diff.double().numpy(), lp - lq, atol=1e-5)
    np.testing.assert_allclose(pair.kl.double().numpy(), ref_kl(c, n), rtol=1e-3)
    # centred difference has zero mean under the clean distribution
    mean = (pair.clean_p * pair.centred_delta).sum(-1)
    assert torch.all(mean.abs() < 1e-5)
    # normalised(alpha) is cached and its weights are the original's renormalised p^alpha
    log_w, w, d, kl, _ = pair.normalised(2.0)
    assert pair.normalised(2.0)[0] is log_w
    torch.testing.assert_close(w, log_w.exp(), rtol=0, atol=0)
    torch.testing.assert_close(kl, kl_from_centred(log_w, d), rtol=0, atol=0)
    np.testing.assert_allclose(w.double().numpy(), ref_renyi_normalised(c, 2.0), rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose((w * d).sum(-1).numpy(), 0.0, atol=1e-5)


# ---------------------------------------------------------------- divergence primitives


def test_log_mean_exp_centred_near_and_far():
    rng = np.random.default_rng(0)
    w = rng.random((4, 50))
    w /= w.sum(-1, keepdims=True)
    for scale in (1e-6, 1e-2, 1.0, 30.0, 200.0):
        x = scale * rng.standard_normal((4, 50))
        x -= (w * x).sum(-1, keepdims=True)
        want = np.log((w * np.exp(x - x.max(-1, keepdims=True))).sum(-1)) + x.max(-1)
        got = log_mean_exp_centred(torch.from_numpy(np.log(w)), torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15)


def test_log_mean_exp_keeps_relative_precision_for_tiny_x():
    w = torch.full((1, 4), 0.25)
    x = torch.tensor([[1e-4, -1e-4, 3e-4, -3e-4]])
    # exact value: log(mean(exp(x))) = mean(x^2)/2 + ... = 2.5e-8 (no first-order term for centred x)
    assert log_mean_exp_centred(w.log(), x).item() == pytest.approx(2.5e-8, rel=1e-4)


def test_log_mean_exp_survives_underflowing_weights():
    log_w = torch.tensor([[0.0, -200.0, -300.0]])
    x = torch.tensor([[-50.0, 150.0, 0.0]])
    want = torch.logsumexp(log_w.double() + x.double(), -1)
    assert torch.isfinite(log_mean_exp_centred(log_w, x)).all()
    assert log_mean_exp_centred(log_w, x).item() == pytest.approx(want.item(), rel=1e-6)


def test_centred_and_renyi_from_centred():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((3, 20))
    log_p = ref_log_softmax(logits)
    p = np.exp(log_p)
    delta = rng.standard_normal((3, 20))
    d = centred(torch.from_numpy(p), torch.from_numpy(delta)).numpy()
    np.testing.assert_allclose((p * d).sum(-1), 0.0, atol=1e-12)
    noisy = logits - delta
    for alpha in (0.25, 0.5, 2.0, 4.0):
        got = renyi_from_centred(torch.from_numpy(log_p), torch.from_numpy(d), alpha).numpy()
        np.testing.assert_allclose(got, ref_renyi(logits, noisy, alpha), rtol=1e-9)
    np.testing.assert_allclose(kl_from_centred(torch.from_numpy(log_p), torch.from_numpy(d)).numpy(),
                               ref_kl(logits, noisy), rtol=1e-9)


def test_renyi_order_is_monotone_in_alpha():
    """D_alpha is non-decreasing in alpha, with KL = D_1 between D_0.5 and D_2."""
    clean, noisy = logits_pair(0.5, seed=41)
    pair = TokenPair(clean, noisy)
    values = [get_metric(f"max_k_renyi_divergence_{s}").fn(pair) for s in ("025", "05")]
    values += [pair.kl]
    values += [get_metric(f"max_k_renyi_divergence_{s}").fn(pair) for s in ("2", "4")]
    for lo, hi in zip(values, values[1:]):
        assert torch.all(hi >= lo * (1 - 1e-4))


# ---------------------------------------------------------------- Max-K% aggregation


def test_max_k_zero_is_the_single_largest():
    values = np.array([0.1, 3.0, 2.0, -1.0])
    assert max_k_means(values, [0.0]).tolist() == [3.0]


def test_max_k_one_is_the_mean():
    values = np.array([0.1, 3.0, 2.0, -1.0, 7.5])
    assert max_k_means(values, [1.0])[0] == pytest.approx(values.mean())


def test_max_k_counts_are_floor_with_minimum_one():
    values = np.arange(10, dtype=np.float64)  # top values 9, 8, 7, ...
    ratios = [0.0, 0.05, 0.1, 0.15, 0.25, 0.29, 0.3, 0.5, 0.99, 1.0]
    counts = [1, 1, 1, 1, 2, 2, 3, 5, 9, 10]  # max(1, floor(K * 10))
    want = [np.mean(np.sort(values)[::-1][:c]) for c in counts]
    np.testing.assert_allclose(max_k_means(values, ratios), want)


def test_max_k_float_ratios_use_floor_of_the_product():
    values = np.arange(7, dtype=np.float32)
    # floor(0.3 * 7) = 2 -> mean(6, 5); floor(0.6 * 7) = 4 -> mean(6, 5, 4, 3)
    np.testing.assert_allclose(max_k_means(values, [0.3, 0.6]), [5.5, 4.5])


def test_max_k_on_empty_input_is_nan():
    out = max_k_means(np.array([], dtype=np.float32), [0.0, 0.5, 1.0])
    assert out.shape == (3,) and np.all(np.isnan(out))


def test_max_k_with_ties_and_float64_output():
    values = np.array([2.0, 5.0, 5.0, 5.0, 1.0], dtype=np.float32)
    out = max_k_means(values, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [5.0, 5.0, 5.0, 5.0, 17 / 4, 18 / 5])


def test_max_k_single_value_and_input_untouched():
    values = np.array([3.0, 1.0, 2.0])
    copy = values.copy()
    np.testing.assert_allclose(max_k_means(values, [0.0, 1.0]), [3.0, 2.0])
    np.testing.assert_array_equal(values, copy)
    np.testing.assert_allclose(max_k_means(np.array([4.0]), [0.0, 0.5, 1.0]), [4.0, 4.0, 4.0])
