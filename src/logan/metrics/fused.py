"""LOGAN's nine divergences and the noisy NLL in one Triton kernel (`inference.metric_kernel`).

The reference is the PyTorch code of `pair.py` / `divergence.py` / `logan.py`; the kernel computes the
same quantities by the same formulas (centred log-ratios, exp(x) - 1 - x from its series near 0, the
original's floors), one program per token row, reading the row's logits in the model's dtype. The
sweeps over the vocabulary, per row:

1. max and argmax of the clean and of the noisy logits, and the extremes of c - n;
2. the partitions and the centring shift S = E_p[c - n];
3. KL(P||Q) and the Renyi divergences from the centred log-ratio d = (c - n) - S; the partitions of
   the Renyi-alpha normalisations p_c^a / sum p_c^a;
4. the floors of the plain KL, the normalisations' centring shifts;
5. the normalisations' KLs; 6. their epsilon terms.

With `original=True` (`img_metrics.compat=original`, a variant compiled on its own; the default kernel is
unchanged) sweep 4 also sums the original's clipped Renyi terms and the Renyi outputs are its clipped
divergences (`metrics/original.py`).

The work is transcendental functions, so the kernel keeps them few and fast (`fused_kernel.py`). On an
H200 at 32 000 vocabulary entries it takes 0.53 ms per 576-row (image, std) pair against 1.62 ms for
the compiled PyTorch reduction, and its values are within 3e-6 (relative) of PyTorch's
(`benchmarks/README.md`). It runs on CUDA devices with triton installed; the tests also run it on the
CPU under triton's interpreter (`TRITON_INTERPRET=1` set before triton is imported; slow). The kernel
is imported on first use.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from logan.config import LOGAN_DIVERGENCES
from logan.errors import LoganError

log = logging.getLogger(__name__)

NOISY_NLL = "_nll"  # the engine's internal name for the noisy pass's per-token NLL of the targets
OUTPUTS = (*LOGAN_DIVERGENCES, NOISY_NLL)
BLOCK = 256  # vocabulary entries per step of a sweep (per-lane accumulators: BLOCK / (32 * WARPS) per thread)
WARPS = 4
# H200, benchmarks/bench_kernel.py, ms per 16 384 bf16 rows at 32 000 / 151 657 / 262 145 entries:
# (256, 4) 15.0 / 91.8 / 158.2; (512, 4) 16.6 / 112.0 / 189.6


def available(device: torch.device) -> bool:
    """Whether the kernel runs on `device`: a CUDA GPU, with triton installed."""
    if device.type != "cuda":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(
    setting: str, device: torch.device, trial: tuple[torch.dtype, int] | None = None, original: bool = False
) -> str:
    """`inference.metric_kernel`: triton / torch, or auto = triton wherever it can run.

    `trial` = (dtype, vocabulary size) of the model's logits: the kernel is compiled and run once on one
    row first (a GPU or triton version it does not support fails here, not mid-run), in the variant the
    run uses (`original`: `img_metrics.compat=original`); under `auto` a failure falls back to PyTorch with
    a warning, under `triton` it is an error.
    """
    if setting == "torch":
        return setting
    if not available(device):
        if setting == "triton":
            raise LoganError(
                "inference.metric_kernel=triton needs a CUDA GPU and the triton package; "
                "use inference.metric_kernel=auto (or torch) here."
            )
        return "torch"
    if trial is not None:
        try:
            one = torch.zeros((1, trial[1]), dtype=trial[0], device=device)
            index = torch.zeros(1, dtype=torch.long, device=device)
            fused_values(one, one, index, index - 1, original=original)
        except Exception as exc:  # triton's compile and launch errors have no common base class
            if setting == "triton":
                raise LoganError(
                    f"inference.metric_kernel=triton: the fused kernel does not run here ({exc}); "
                    "use inference.metric_kernel=torch."
                ) from exc
            log.warning("the fused metric kernel does not run here (%s); using PyTorch's reduction", exc)
            return "torch"
    return "triton"


def fused_values(
    clean: torch.Tensor,
    noisy: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    block: int = BLOCK,
    warps: int = WARPS,
    original: bool = False,
) -> torch.Tensor:
    """[len(OUTPUTS), len(rows)] float32: every output for clean[rows[i]] vs noisy[rows[i]] (logits [R, V],
    unit stride along V, any float dtype); targets[i] = -1 scores the clean argmax. `original`: the Renyi
    divergences by the original's definition (`metrics/original.py`, compiled as a variant of its own)."""
    if clean.stride(1) != 1 or noisy.stride(1) != 1:
        clean, noisy = clean.contiguous(), noisy.contiguous()
    out = torch.empty((len(OUTPUTS), rows.shape[0]), dtype=torch.float32, device=clean.device)
    if rows.shape[0]:
        from logan.metrics.fused_kernel import divergences_kernel

        with torch.cuda.device(clean.device) if clean.is_cuda else contextlib.nullcontext():
            divergences_kernel[(rows.shape[0],)](
                clean,
                noisy,
                clean.stride(0),
                noisy.stride(0),
                rows,
                targets,
                out,
                rows.shape[0],
                clean.shape[1],
                BLOCK=block,
                ORIGINAL=original,
                num_warps=warps,
            )
    return out
