"""The fused Triton kernel of LOGAN's divergences (`inference.metric_kernel=triton`) against the PyTorch
reference and float64 truth. On the CPU it runs under triton's interpreter (TRITON_INTERPRET=1); the
same tests run on a GPU with `LOGAN_TEST_DEVICE=cuda`."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch

from logan.config import RunConfig
from logan.engine import Engine, EngineSettings, WorkItem
from logan.errors import LoganError
from logan.metrics import fused, registry
from logan.metrics.pair import TokenPair
from logan.metrics.registry import get_metric

triton = pytest.importorskip("triton")
DEVICE = torch.device(os.environ.get("LOGAN_TEST_DEVICE", "cpu"))
NOISE = [name for name in fused.OUTPUTS if name != fused.NOISY_NLL]
METRICS = list(NOISE)


@pytest.fixture(autouse=True)
def interpreter():
    """On the CPU: triton's interpreter (conftest.py sets TRITON_INTERPRET before triton is imported;
    numpy warns about the branches `where` discards, harmlessly)."""
    if DEVICE.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("triton's interpreter needs TRITON_INTERPRET=1 before triton is imported")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def reference(clean: torch.Tensor, noisy: torch.Tensor, targets: torch.Tensor, double: bool,
              compat: str = "logan") -> torch.Tensor:
    """The PyTorch metrics (float32 as the engine runs them, or float64: the truth to compare with)."""
    pair = TokenPair(clean, noisy, torch.where(targets < 0, clean.argmax(-1), targets))
    if double:
        pair.clean, pair.noisy = clean.double(), noisy.double()
    values = [get_metric(name, compat=compat).fn(pair) for name in NOISE]
    nll = -torch.log_softmax(pair.noisy, -1).gather(-1, pair.targets[:, None]).squeeze(-1)
    return torch.stack([*values, nll]).double().cpu()


def logits(rows: int, vocab: int, scale: float, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randn(rows, vocab, generator=g) * 4
    clean[:, :50] += 12  # a few likely tokens, a long tail below the original's floor of 1e-10
    noisy = clean + scale * torch.randn(rows, vocab, generator=g)
    return clean.to(dtype).to(DEVICE), noisy.to(dtype).to(DEVICE)


def clipped_renyi64(clean: torch.Tensor, noisy: torch.Tensor, alpha: float) -> torch.Tensor:
    """The original's Renyi divergence, written out in float64: 1/(a-1) log(sum p_c^a q_c^(1-a) + 1e-12),
    p, q clipped to [1e-12, 1]."""
    p = torch.softmax(clean.double(), -1).clamp(1e-12, 1.0)
    q = torch.softmax(noisy.double(), -1).clamp(1e-12, 1.0)
    return torch.log((p ** alpha * q ** (1 - alpha)).sum(-1) + 1e-12) / (alpha - 1)


@pytest.mark.parametrize("compat", ["logan", "original"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("scale", [1e-3, 0.05, 2.0, 40.0])
def test_fused_kernel_is_as_close_to_float64_as_the_pytorch_reference(dtype, scale, compat) -> None:
    clean, noisy = logits(6, 1500, scale, dtype)
    targets = torch.tensor([-1, 3, -1, 7, 1499, -1], device=DEVICE)
    out = fused.fused_values(clean, noisy, torch.arange(6, device=DEVICE), targets,
                             original=compat == "original").double().cpu()
    truth, torch32 = reference(clean, noisy, targets, True, compat), reference(clean, noisy, targets, False, compat)
    if compat == "original":  # the truth of the original's Renyi divergences: its formula in float64
        for alpha, tag in ((0.25, "025"), (0.5, "05"), (2.0, "2"), (4.0, "4")):
            truth[fused.OUTPUTS.index(f"max_k_renyi_divergence_{tag}")] = clipped_renyi64(
                clean.cpu(), noisy.cpu(), alpha)
    assert out.shape == (len(fused.OUTPUTS), 6)
    for k, name in enumerate(fused.OUTPUTS):
        err, ref_err = (out[k] - truth[k]).abs(), (torch32[k] - truth[k]).abs()
        assert torch.all(err <= 2e-5 * truth[k].abs() + 2 * ref_err + 1e-30), (name, err, ref_err, truth[k])
    smooth = [k for k, name in enumerate(NOISE) if name != "max_k_renyi_inf_kl_div"]
    assert (truth[smooth] > 0).any(1).all()  # every divergence is exercised, not just its zeros


def test_identical_logits_give_exactly_zero() -> None:
    clean, _ = logits(5, 1200, 0.0, torch.float16)
    out = fused.fused_values(clean, clean.clone(), torch.arange(5, device=DEVICE),
                             torch.full((5,), -1, device=DEVICE)).cpu()
    assert torch.all(out[:9] == 0)
    nll = -torch.log_softmax(clean.float(), -1).max(-1).values.cpu()
    torch.testing.assert_close(out[9], nll, rtol=1e-5, atol=1e-5)


def test_identical_logits_under_the_original_convention() -> None:
    """The original's Renyi divergences are not 0 at identical inputs: 1/(a-1) log(1 + (m + 1) 1e-12) for
    m entries below its clip (negative for a < 1); its KLs are 0 as LOGAN's."""
    clean, _ = logits(5, 1200, 0.0, torch.float16)
    out = fused.fused_values(clean, clean.clone(), torch.arange(5, device=DEVICE),
                             torch.full((5,), -1, device=DEVICE), original=True).double().cpu()
    assert torch.all(out[:5] == 0)
    for alpha, tag in ((0.25, "025"), (0.5, "05"), (2.0, "2"), (4.0, "4")):
        got = out[fused.OUTPUTS.index(f"max_k_renyi_divergence_{tag}")]
        want = clipped_renyi64(clean.cpu(), clean.cpu(), alpha)
        assert torch.all((want < 0) if alpha < 1 else (want > 0))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-12)


def test_rows_are_picked_by_index_from_a_strided_view() -> None:
    """Gathered rows of a [.., :vocab] view (a padded LM head) equal the contiguous rows' values."""
    wide_clean, wide_noisy = logits(8, 1100, 0.3, torch.bfloat16, seed=3)
    clean, noisy = wide_clean[:, :1000], wide_noisy[:, :1000]
    rows, targets = torch.tensor([6, 1, 3], device=DEVICE), torch.tensor([-1, 10, -1], device=DEVICE)
    picked = fused.fused_values(clean, noisy, rows, targets)
    direct = fused.fused_values(clean[rows].contiguous(), noisy[rows].contiguous(), torch.arange(3, device=DEVICE),
                                targets)
    assert torch.equal(picked, direct)
    assert fused.fused_values(clean, noisy, rows[:0], targets[:0]).shape == (len(fused.OUTPUTS), 0)


def test_argmax_ties_resolve_to_the_first_index_as_in_torch() -> None:
    clean = torch.zeros(2, 1500)
    clean[:, [5, 1200]] = 3.0    # tied clean maximum: torch.argmax says 5
    noisy = clean.clone()
    noisy[0, 5] = 2.0            # row 0: the argmax moves to 1200 -> flipped
    noisy[1, 1200] = 2.0         # row 1: it stays at 5
    out = fused.fused_values(clean.to(DEVICE), noisy.to(DEVICE), torch.arange(2, device=DEVICE),
                             torch.full((2,), -1, device=DEVICE)).cpu()
    flip = out[fused.OUTPUTS.index("max_k_renyi_inf_kl_div")]
    assert flip[0] > 27 and flip[1] == 0
    torch.testing.assert_close(out[9], -torch.log_softmax(noisy, -1)[:, 5], rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def items(world, model) -> list[WorkItem]:
    entries = json.loads(world.members.read_text())[:3] + json.loads(world.nonmembers.read_text())[:2]
    return [WorkItem(e["image"], e["label"], description=tuple(model.tokenize("a small red circle ." * (1 + i % 2))))
            for i, e in enumerate(entries)]


def scores(model, items, metric_kernel: str, metrics: list[str], compat: str = "logan") -> dict:
    engine = Engine(model, EngineSettings(parts=["img", "desp"], metrics=metrics, instruction="Describe this image.",
                                          batch_size=2, metric_kernel=metric_kernel, compat=compat))
    out = {}
    for std, results in engine.run(items, [0.0, 8.0]):
        for res in results:
            out.update({(std, res.sample_id, *key): values for key, values in res.tokens.items()})
            out[(std, res.sample_id, "losses")] = np.array([v for loss in res.losses.values() for v in loss[:2]])
    return out


@pytest.mark.parametrize("compat", ["logan", "original"])
def test_engine_with_the_fused_kernel_matches_the_pytorch_engine(model, items, monkeypatch, compat) -> None:
    """Runs on the tiny LLaVA: every part's per-token values agree, std 0 stays exactly 0 (LOGAN's
    divergences; the original's Renyi divergences are not 0 there), and a per-std metric the kernel does
    not cover runs through PyTorch beside it."""
    if DEVICE.type != "cpu":
        pytest.skip("the tiny LLaVA runs on the CPU (the kernel under triton's interpreter)")
    extra = "test_mean_abs_logit_change"
    monkeypatch.setitem(registry._METRICS, extra, registry.MetricSpec(
        extra, lambda pair: (pair.clean - pair.noisy).abs().mean(-1)))
    metrics = [*METRICS, extra]
    engine = Engine(model, EngineSettings(parts=["img"], metrics=metrics, instruction="x", metric_kernel="triton"))
    assert engine._fused == [*METRICS, fused.NOISY_NLL] and engine._reducers["noise"][0] == [extra]
    reference_scores = scores(model, items, "torch", metrics, compat)
    fast = scores(model, items, "triton", metrics, compat)
    assert fast.keys() == reference_scores.keys()
    for key, values in reference_scores.items():
        if key[0] == 0.0 and key[-1] != "losses" and not (compat == "original" and "divergence" in key[-1]):
            assert np.all(fast[key] == 0), key
        else:
            np.testing.assert_allclose(fast[key], values, rtol=1e-4, atol=1e-9, err_msg=str(key))
    assert any(k[0] == 8.0 and k[-1] == extra and v.max() > 0 for k, v in fast.items())


def test_metric_kernel_setting_resolves_per_device() -> None:
    assert fused.resolve("auto", torch.device("cpu")) == "torch"
    assert fused.resolve("torch", torch.device("cpu")) == "torch"
    with pytest.raises(LoganError, match="metric_kernel=triton needs a CUDA GPU"):
        fused.resolve("triton", torch.device("cpu"))
    with pytest.raises(LoganError, match="inference.metric_kernel=fast is not one of auto, triton, torch"):
        RunConfig.from_dict({"inference": {"metric_kernel": "fast"}})


def test_a_kernel_that_does_not_run_falls_back_under_auto_and_stops_under_triton(monkeypatch, caplog) -> None:
    """The trial run on one row: a GPU or triton the kernel does not support is caught before the run."""
    monkeypatch.setattr(fused, "available", lambda device: True)
    assert fused.resolve("auto", DEVICE, (torch.float16, 700)) == "triton"  # compiles and runs here
    assert fused.resolve("auto", DEVICE, (torch.float16, 700), original=True) == "triton"  # compat's variant

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(fused, "fused_values", broken)
    with caplog.at_level("WARNING", logger="logan.metrics.fused"):
        assert fused.resolve("auto", DEVICE, (torch.float16, 700)) == "torch"
    assert "no kernel image" in caplog.text and "using PyTorch's reduction" in caplog.text
    with pytest.raises(LoganError, match="metric_kernel=triton: the fused kernel does not run here .*no kernel image"):
        fused.resolve("triton", DEVICE, (torch.float16, 700))
    assert fused.resolve("torch", DEVICE, (torch.float16, 700)) == "torch"
