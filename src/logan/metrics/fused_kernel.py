"""The Triton kernel behind `logan.metrics.fused` (imported on first use: it needs triton).

One program per token row; six sweeps over the vocabulary, each reading the row's clean and noisy
logits in blocks of BLOCK entries (see `fused.py` for what each sweep computes).

The work per vocabulary entry is transcendental functions, so they are kept few and fast: the GPU's
approximate exp / log / sqrt (relative error ~1e-7) per entry; exp(x) - 1 - x and log1p from their
series where those would cancel (|x| < 0.5, resp. below 0.1); the normalisations' weights as powers
of p / p_max instead of exps; the log-sum-exp of the far branch only for rows that need it (known from
the extremes of c - n before the sweep). Per-row scalars use libdevice's exact log and log1p.
Under `TRITON_INTERPRET=1` (triton's CPU interpreter, used by the tests) numpy computes every
function, and log1p comes from Kahan's form.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

from logan.metrics.divergence import _LARGE, LOG_EPS
from logan.metrics.logan import ARGMAX_FLIP_KL
from logan.metrics.pair import CLAMP_LOG

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    @triton.jit
    def _log(x):
        return tl.log(x)

    @triton.jit
    def _log1p(x):
        u = 1.0 + x
        return tl.where(u == 1.0, x, tl.log(u) * x / (u - 1.0))
else:
    from triton.language.extra import libdevice

    _log, _log1p = libdevice.log, libdevice.log1p

LARGE = tl.constexpr(_LARGE)   # above this max(x), log E_w[e^x] comes from the log-sum-exp (divergence.py)
SERIES = tl.constexpr(0.5)     # below this |x|, exp(x) - 1 - x comes from its series
CLAMP = tl.constexpr(CLAMP_LOG)
EPS = tl.constexpr(LOG_EPS)
FLIP = tl.constexpr(ARGMAX_FLIP_KL)
NEVER = tl.constexpr(2147483647)


@triton.jit
def _expm1_minus_x(x):
    """exp(x) - 1 - x: the series to x^10 (relative error < 1e-9) for |x| < 0.5, else from exp(min(x, 20))."""
    series = x * x * (1 / 2 + x * (1 / 6 + x * (1 / 24 + x * (1 / 120 + x * (1 / 720 + x * (
        1 / 5040 + x * (1 / 40320 + x * (1 / 362880 + x / 3628800))))))))
    return tl.where(tl.abs(x) < SERIES, series, tl.exp(tl.minimum(x, LARGE)) - 1.0 - x)


@triton.jit
def _softplus(x):
    """log(1 + e^x) = max(x, 0) + log1p(t), t = e^-|x|, log1p(t) from its series below t = 0.1."""
    t = tl.exp(-tl.abs(x))
    series = t * (1 + t * (-1 / 2 + t * (1 / 3 + t * (-1 / 4 + t * (1 / 5 + t * (-1 / 6 + t * (1 / 7 - t / 8)))))))
    return tl.maximum(x, 0.0) + tl.where(t < 0.1, series, tl.log(1.0 + t))


@triton.jit
def _lse(m, s, x, mask):
    """Online log-sum-exp: running max m and sum s of exp(x - m), updated with a block of x."""
    x = tl.where(mask, x, float("-inf"))
    new = tl.maximum(m, tl.max(x, 0))
    return new, s * tl.exp(m - new) + tl.sum(tl.exp(x - new), 0)


@triton.jit
def _log_mean_exp(top, near, m, s):
    """log E_w[e^x] for centred x: log1p(sum w (e^x - 1 - x)) unless max x > 20, then logsumexp(log w + x)."""
    return tl.where(top <= LARGE, _log1p(near), m + _log(s))


@triton.jit
def _argmax(best, at, x, mask, offs):
    """Running max and the index of its first occurrence (torch.argmax's tie rule)."""
    x = tl.where(mask, x, float("-inf"))
    block_best = tl.max(x, 0)
    block_at = tl.min(tl.where(x == block_best, offs, NEVER), 0)
    better = block_best > best
    return tl.where(better, block_best, best), tl.where(better, block_at, at)


@triton.jit
def _row(c_row, n_row, offs, mask, mc, log_sc, shift, kl):
    """A block's clean log-probs, noisy log-probs and log p - log q (with the row's KL: exact partitions)."""
    c = tl.load(c_row + offs, mask=mask, other=0.0).to(tl.float32)
    n = tl.load(n_row + offs, mask=mask, other=0.0).to(tl.float32)
    lp = (c - mc) - log_sc  # as log_softmax: exact for the likeliest tokens
    logp_diff = ((c - n) - shift) + kl
    return lp, lp - logp_diff, logp_diff


@triton.jit
def _floored(lp, p_floor):
    """exp(max(lp, log 1e-10)) from p = exp(lp): the original's clamped probability."""
    p = tl.exp(lp)
    return p, tl.where(lp < CLAMP, p_floor, p)


@triton.jit
def _normalised(lp, lq, logp_diff, r_a, alpha, lse_a, inv_s_a):
    """Renyi-alpha normalisation p_c^a / sum p_c^a: log-weights, weights (r_a = (p_c / p_max)^a) and the
    alpha-scaled log-ratio, with the original's floors."""
    lp_c = tl.maximum(lp, CLAMP)
    lq_c = tl.maximum(lq, CLAMP)
    diff = tl.where((lp >= CLAMP) & (lq >= CLAMP), logp_diff, lp_c - lq_c)
    return alpha * lp_c - lse_a, r_a * inv_s_a, alpha * diff


@triton.jit
def _eps_term(log_w, w, ad, shift, kl, mask):
    """A block's epsilon term of a normalisation's KL: sum w [sp(eps - log w) - sp(eps - log w_noisy)]."""
    log_wq = log_w - ((ad - shift) + kl)
    return tl.sum(tl.where(mask, w * (_softplus(EPS - log_w) - _softplus(EPS - log_wq)), 0.0), 0)


@triton.jit
def _centred(near, m, s, x, log_w, w, far, mask):
    """Accumulate log E_w[e^x] of a centred x: sum w (e^x - 1 - x), and the log-sum-exp of log w + x if `far`."""
    near += tl.sum(tl.where(mask, w * _expm1_minus_x(x), 0.0), 0)
    if far:
        m, s = _lse(m, s, log_w + x, mask)
    return near, m, s


@triton.jit
def divergences_kernel(clean_ptr, noisy_ptr, stride_c, stride_n, rows_ptr, targets_ptr, out_ptr, n_rows,
                       vocab: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0)
    row = tl.load(rows_ptr + i).to(tl.int64)
    c_row = clean_ptr + row * stride_c
    n_row = noisy_ptr + row * stride_n
    lanes = tl.arange(0, BLOCK)
    ninf = tl.full([], float("-inf"), tl.float32)
    pinf = tl.full([], float("inf"), tl.float32)
    zero = tl.zeros([], tl.float32)
    never = tl.full([], NEVER, tl.int32)

    # 1: log-partitions, argmaxes, the extremes of c - n
    mc, sc, mn, sn, best_n, at_c, at_n = ninf, zero, ninf, zero, ninf, never, never
    best_c, dmax, dmin = ninf, ninf, pinf
    for start in range(0, vocab, BLOCK):
        offs = start + lanes
        mask = offs < vocab
        c = tl.load(c_row + offs, mask=mask, other=0.0).to(tl.float32)
        n = tl.load(n_row + offs, mask=mask, other=0.0).to(tl.float32)
        mc, sc = _lse(mc, sc, c, mask)
        mn, sn = _lse(mn, sn, n, mask)
        best_c, at_c = _argmax(best_c, at_c, c, mask, offs)
        best_n, at_n = _argmax(best_n, at_n, n, mask, offs)
        dmax = tl.maximum(dmax, tl.max(tl.where(mask, c - n, float("-inf")), 0))
        dmin = tl.minimum(dmin, tl.min(tl.where(mask, c - n, float("inf")), 0))
    log_sc = _log(sc)
    top_lp = -log_sc                         # log p_max
    inv_ptop = sc
    p_floor = tl.exp(zero + CLAMP)

    # 2: the centring shift E_p[c - n]; sum (p_c / p_max)^a of the normalisations
    shift, s05, s1, s2 = zero, zero, zero, zero
    for start in range(0, vocab, BLOCK):
        offs = start + lanes
        mask = offs < vocab
        c = tl.load(c_row + offs, mask=mask, other=0.0).to(tl.float32)
        n = tl.load(n_row + offs, mask=mask, other=0.0).to(tl.float32)
        p, p_c = _floored((c - mc) - log_sc, p_floor)
        shift += tl.sum(tl.where(mask, p * (c - n), 0.0), 0)
        r = tl.where(mask, p_c * inv_ptop, 0.0)
        s05 += tl.sum(tl.sqrt(r), 0)
        s1 += tl.sum(r, 0)
        s2 += tl.sum(r * r, 0)
    lse05, lse1, lse2 = 0.5 * top_lp + _log(s05), top_lp + _log(s1), 2.0 * top_lp + _log(s2)
    inv05, inv1, inv2 = 1.0 / s05, 1.0 / s1, 1.0 / s2

    # 3: KL and the Renyi divergences on the exact softmax, x = k d for d = (c - n) - shift
    top_k, top_a, top_b = -(dmin - shift), -0.75 * (dmin - shift), -0.5 * (dmin - shift)
    top_c, top_d = dmax - shift, 3.0 * (dmax - shift)
    nk, mk, sk, na, ma, sa, nb, mb, sb = zero, ninf, zero, zero, ninf, zero, zero, ninf, zero
    nc, mq, sq, nd, md, sd = zero, ninf, zero, zero, ninf, zero
    for start in range(0, vocab, BLOCK):
        offs = start + lanes
        mask = offs < vocab
        lp, _, d = _row(c_row, n_row, offs, mask, mc, log_sc, shift, 0.0)
        p = tl.exp(lp)
        nk, mk, sk = _centred(nk, mk, sk, -d, lp, p, top_k > LARGE, mask)
        na, ma, sa = _centred(na, ma, sa, -0.75 * d, lp, p, top_a > LARGE, mask)
        nb, mb, sb = _centred(nb, mb, sb, -0.5 * d, lp, p, top_b > LARGE, mask)
        nc, mq, sq = _centred(nc, mq, sq, d, lp, p, top_c > LARGE, mask)
        nd, md, sd = _centred(nd, md, sd, 3.0 * d, lp, p, top_d > LARGE, mask)
    kl = tl.maximum(_log_mean_exp(top_k, nk, mk, sk), 0.0)
    renyi025 = tl.maximum(kl + _log_mean_exp(top_a, na, ma, sa) / -0.75, 0.0)
    renyi05 = tl.maximum(kl + _log_mean_exp(top_b, nb, mb, sb) / -0.5, 0.0)
    renyi2 = tl.maximum(kl + _log_mean_exp(top_c, nc, mq, sq), 0.0)
    renyi4 = tl.maximum(kl + _log_mean_exp(top_d, nd, md, sd) / 3.0, 0.0)

    # 4: the plain KL's floors; the normalisations' centring shifts and the minima of their log-ratios
    extra, eps_term, shift05, shift1, shift2 = zero, zero, zero, zero, zero
    low05, low1, low2 = pinf, pinf, pinf
    for start in range(0, vocab, BLOCK):
        offs = start + lanes
        mask = offs < vocab
        lp, lq, logp_diff = _row(c_row, n_row, offs, mask, mc, log_sc, shift, kl)
        p, p_c = _floored(lp, p_floor)
        lp_c = tl.maximum(lp, CLAMP)
        lq_c = tl.maximum(lq, CLAMP)
        floored = (lp < CLAMP) | (lq < CLAMP)
        extra += tl.sum(tl.where(mask & floored, p_c * (lp_c - lq_c) - p * logp_diff, 0.0), 0)
        eps_term += tl.sum(tl.where(mask, p_c * (_softplus(EPS - lp_c) - _softplus(EPS - lq_c)), 0.0), 0)
        r = p_c * inv_ptop
        _, w, ad = _normalised(lp, lq, logp_diff, tl.sqrt(r), 0.5, lse05, inv05)
        shift05 += tl.sum(tl.where(mask, w * ad, 0.0), 0)
        low05 = tl.minimum(low05, tl.min(tl.where(mask, ad, float("inf")), 0))
        _, w, ad = _normalised(lp, lq, logp_diff, r, 1.0, lse1, inv1)
        shift1 += tl.sum(tl.where(mask, w * ad, 0.0), 0)
        low1 = tl.minimum(low1, tl.min(tl.where(mask, ad, float("inf")), 0))
        _, w, ad = _normalised(lp, lq, logp_diff, r * r, 2.0, lse2, inv2)
        shift2 += tl.sum(tl.where(mask, w * ad, 0.0), 0)
        low2 = tl.minimum(low2, tl.min(tl.where(mask, ad, float("inf")), 0))
    kl_plain = tl.maximum(kl + extra + eps_term, 0.0)

    # 5: the normalisations' KLs, x = shift_a - ad (the negated centred log-ratio)
    top05, top1, top2 = shift05 - low05, shift1 - low1, shift2 - low2
    na, ma, sa, nb, mb, sb, nc, mq, sq = zero, ninf, zero, zero, ninf, zero, zero, ninf, zero
    for start in range(0, vocab, BLOCK):
        offs = start + lanes
        mask = offs < vocab
        lp, lq, logp_diff = _row(c_row, n_row, offs, mask, mc, log_sc, shift, kl)
        _, p_c = _floored(lp, p_floor)
        r = p_c * inv_ptop
        log_w, w, ad = _normalised(lp, lq, logp_diff, tl.sqrt(r), 0.5, lse05, inv05)
        na, ma, sa = _centred(na, ma, sa, shift05 - ad, log_w, w, top05 > LARGE, mask)
        log_w, w, ad = _normalised(lp, lq, logp_diff, r, 1.0, lse1, inv1)
        nb, mb, sb = _centred(nb, mb, sb, shift1 - ad, log_w, w, top1 > LARGE, mask)
        log_w, w, ad = _normalised(lp, lq, logp_diff, r * r, 2.0, lse2, inv2)
        nc, mq, sq = _centred(nc, mq, sq, shift2 - ad, log_w, w, top2 > LARGE, mask)
    kl05 = tl.maximum(_log_mean_exp(top05, na, ma, sa), 0.0)
    kl1 = tl.maximum(_log_mean_exp(top1, nb, mb, sb), 0.0)
    kl2 = tl.maximum(_log_mean_exp(top2, nc, mq, sq), 0.0)

    # 6: the normalisations' epsilon terms
    e05, e1, e2 = zero, zero, zero
    for start in range(0, vocab, BLOCK):
        offs = start + lanes
        mask = offs < vocab
        lp, lq, logp_diff = _row(c_row, n_row, offs, mask, mc, log_sc, shift, kl)
        _, p_c = _floored(lp, p_floor)
        r = p_c * inv_ptop
        log_w, w, ad = _normalised(lp, lq, logp_diff, tl.sqrt(r), 0.5, lse05, inv05)
        e05 += _eps_term(log_w, w, ad, shift05, kl05, mask)
        log_w, w, ad = _normalised(lp, lq, logp_diff, r, 1.0, lse1, inv1)
        e1 += _eps_term(log_w, w, ad, shift1, kl1, mask)
        log_w, w, ad = _normalised(lp, lq, logp_diff, r * r, 2.0, lse2, inv2)
        e2 += _eps_term(log_w, w, ad, shift2, kl2, mask)

    target = tl.load(targets_ptr + i)
    target = tl.where(target < 0, at_c.to(tl.int64), target)
    nll = (mn - tl.load(n_row + target).to(tl.float32)) + _log(sn)
    tl.store(out_ptr + 0 * n_rows + i, kl_plain)
    tl.store(out_ptr + 1 * n_rows + i, tl.maximum(kl05 + e05, 0.0))
    tl.store(out_ptr + 2 * n_rows + i, tl.maximum(kl1 + e1, 0.0))
    tl.store(out_ptr + 3 * n_rows + i, tl.maximum(kl2 + e2, 0.0))
    tl.store(out_ptr + 4 * n_rows + i, tl.where(at_c != at_n, FLIP, 0.0))
    tl.store(out_ptr + 5 * n_rows + i, renyi025)
    tl.store(out_ptr + 6 * n_rows + i, renyi05)
    tl.store(out_ptr + 7 * n_rows + i, renyi2)
    tl.store(out_ptr + 8 * n_rows + i, renyi4)
    tl.store(out_ptr + 9 * n_rows + i, nll)
