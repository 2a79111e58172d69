"""LOGAN's nine divergences and the noisy NLL in one Triton kernel (`inference.metric_kernel`).

The reference is the PyTorch code of `pair.py` / `divergence.py` / `logan.py`; the kernel follows the
same formulas (centred log-ratios, exp(x) - 1 - x from its series near 0, the original's floors) but
reads each token row's clean and noisy logits, in the model's dtype, six times, where the compiled
PyTorch reduction materialises some twenty float32 intermediates of every row chunk. The sweeps over
the vocabulary, per row:

1. log-sum-exp and argmax of the clean and of the noisy logits;
2. the centring shift S = E_p[c - n] and the log-partitions of the Renyi-alpha normalisations;
3. KL(P||Q) and the Renyi divergences from the centred log-ratio d = (c - n) - S;
4. the floors of the plain KL and the centring shifts of the normalisations;
5. the normalisations' KLs; 6. their epsilon terms.

It runs on CUDA devices with triton installed. The tests also run it on the CPU under triton's
interpreter (`TRITON_INTERPRET=1` set before triton is imported; slow). The kernel's code is in
`fused_kernel.py`, imported on first use.
"""

from __future__ import annotations

import contextlib

import torch

from logan.errors import LoganError

NOISY_NLL = "_nll"  # the engine's internal name for the noisy pass's per-token NLL of the targets
OUTPUTS = ("max_k_no_norn_kl_div", "max_k_renyi_05_kl_div", "max_k_renyi_1_kl_div", "max_k_renyi_2_kl_div",
           "max_k_renyi_inf_kl_div", "max_k_renyi_divergence_025", "max_k_renyi_divergence_05",
           "max_k_renyi_divergence_2", "max_k_renyi_divergence_4", NOISY_NLL)
BLOCK = 1024  # vocabulary entries per step of a sweep


def available(device: torch.device) -> bool:
    """Whether the kernel runs on `device`: a CUDA GPU, with triton installed."""
    if device.type != "cuda":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(setting: str, device: torch.device) -> str:
    """`inference.metric_kernel`: triton / torch, or auto = triton wherever it can run."""
    if setting == "auto":
        return "triton" if available(device) else "torch"
    if setting == "triton" and not available(device):
        raise LoganError("inference.metric_kernel=triton needs a CUDA GPU and the triton package; "
                         "use inference.metric_kernel=auto (or torch) here.")
    return setting


def fused_values(clean: torch.Tensor, noisy: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[len(OUTPUTS), len(rows)] float32: every output for clean[rows[i]] vs noisy[rows[i]] (logits [R, V],
    unit stride along V, any float dtype); targets[i] = -1 scores the clean argmax."""
    if clean.stride(1) != 1 or noisy.stride(1) != 1:
        clean, noisy = clean.contiguous(), noisy.contiguous()
    out = torch.empty((len(OUTPUTS), rows.shape[0]), dtype=torch.float32, device=clean.device)
    if rows.shape[0]:
        from logan.metrics.fused_kernel import divergences_kernel

        with torch.cuda.device(clean.device) if clean.is_cuda else contextlib.nullcontext():
            divergences_kernel[(rows.shape[0],)](
                clean, noisy, clean.stride(0), noisy.stride(0), rows, targets, out, rows.shape[0], clean.shape[1],
                BLOCK=BLOCK, num_warps=4)
    return out
