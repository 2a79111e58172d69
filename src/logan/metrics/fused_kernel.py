"""The Triton kernel behind `logan.metrics.fused` (imported on first use: it needs triton).

One program per token row; six sweeps over the vocabulary, each reading the row's clean and noisy
logits in blocks of BLOCK entries (see `fused.py` for what each sweep computes). Sums, maxima and
log-sum-exps accumulate per lane (vectors of BLOCK) and are reduced across lanes once per sweep.

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
from logan.metrics.original import CLIP, FAR, LOG_CLIP
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

# (constants stand right of tensors in expressions: triton's interpreter cannot put them on the left)
LARGE = tl.constexpr(_LARGE)  # above this max(x), log E_w[e^x] comes from the log-sum-exp (divergence.py)
SERIES = tl.constexpr(0.5)  # below this |x|, exp(x) - 1 - x comes from its series
CLAMP = tl.constexpr(CLAMP_LOG)
EPS = tl.constexpr(LOG_EPS)
FLIP = tl.constexpr(ARGMAX_FLIP_KL)
CLIP12 = tl.constexpr(CLIP)  # the original's clip of p and q in its Renyi divergence (compat=original)
LOG_CLIP12 = tl.constexpr(LOG_CLIP)
FAR_LOG = tl.constexpr(FAR)
NEVER = tl.constexpr(2147483647)


@triton.jit
def _expm1_minus_x(x):
    """exp(x) - 1 - x: the series to x^10 (relative error < 1e-9) for |x| < 0.5, else from exp(min(x, 20))."""
    series = (
        x
        * x
        * (
            1 / 2
            + x
            * (
                1 / 6
                + x
                * (
                    1 / 24
                    + x
                    * (
                        1 / 120
                        + x * (1 / 720 + x * (1 / 5040 + x * (1 / 40320 + x * (1 / 362880 + x / 3628800))))
                    )
                )
            )
        )
    )
    return tl.where(tl.abs(x) < SERIES, series, tl.exp(tl.minimum(x, LARGE)) - 1.0 - x)


@triton.jit
def _expm1(x):
    """exp(x) - 1 without cancellation near 0 and without a cap above (inf where exp overflows)."""
    return tl.where(tl.abs(x) < SERIES, _expm1_minus_x(x) + x, tl.exp(x) - 1.0)


@triton.jit
def _softplus(x):
    """log(1 + e^x) = max(x, 0) + log1p(t), t = e^-|x|, log1p(t) from its series below t = 0.1."""
    t = tl.exp(-tl.abs(x))
    series = t * (
        1 + t * (-1 / 2 + t * (1 / 3 + t * (-1 / 4 + t * (1 / 5 + t * (-1 / 6 + t * (1 / 7 - t / 8))))))
    )
    return tl.maximum(x, 0.0) + tl.where(t < 0.1, series, tl.log(1.0 + t))


@triton.jit
def _lse(m, s, x):
    """Per-lane online log-sum-exp: running max m and sum s of exp(x - m) (x = -inf adds nothing)."""
    new = tl.maximum(m, x)
    empty = new == float("-inf")
    return new, tl.where(empty, 0.0, s * tl.exp(m - new) + tl.exp(x - new))


@triton.jit
def _lse_total(m, s):
    """log-sum-exp of per-lane (m, s)."""
    top = tl.max(m, 0)
    return top + _log(tl.sum(tl.where(m == float("-inf"), 0.0, s * tl.exp(m - top)), 0))


@triton.jit
def _log_mean_exp(top, near, m, s):
    """log E_w[e^x] for centred x: log1p(sum w (e^x - 1 - x)) unless max x > 20, then logsumexp(log w + x)."""
    return tl.where(top <= LARGE, _log1p(tl.sum(near, 0)), _lse_total(m, s))


@triton.jit
def _argmax(best, at, x, offs):
    """Per-lane running max and the index of its first occurrence."""
    better = x > best
    return tl.where(better, x, best), tl.where(better, offs, at)


@triton.jit
def _argmax_total(best, at):
    """The max over lanes and its first index (torch.argmax's tie rule)."""
    top = tl.max(best, 0)
    return top, tl.min(tl.where(best == top, at, NEVER), 0)


@triton.jit
def _load(c_row, n_row, offs, mask):
    c = tl.load(c_row + offs, mask=mask, other=0.0).to(tl.float32)
    n = tl.load(n_row + offs, mask=mask, other=0.0).to(tl.float32)
    return c, n


@triton.jit
def _row(c_row, n_row, offs, mask, mc, log_sc, shift, kl):
    """A block's clean log-probs, noisy log-probs and log p - log q (with the row's KL: exact partitions)."""
    c, n = _load(c_row, n_row, offs, mask)
    lp = (c - mc) - log_sc  # as log_softmax: exact for the likeliest tokens
    logp_diff = ((c - n) - shift) + kl
    return lp, lp - logp_diff, logp_diff


@triton.jit
def _weighted_row(c_row, n_row, offs, mask, mc, log_sc, shift, kl, p_floor, sc_row):
    """`_row` plus p, the clamped p_c and r = p_c / p_max (the normalisations' weights are powers of r)."""
    lp, lq, logp_diff = _row(c_row, n_row, offs, mask, mc, log_sc, shift, kl)
    p, p_c = _floored(lp, p_floor)
    return lp, lq, logp_diff, p, p_c, p_c * sc_row


@triton.jit
def _floored(lp, p_floor):
    """p = exp(lp) and exp(max(lp, log 1e-10)): the original's clamped probability."""
    p = tl.exp(lp)
    return p, tl.where(lp < CLAMP, p_floor, p)


@triton.jit
def _normalised(lp, lq, logp_diff, r_a, alpha, lse_a, inv_s_a):
    """Renyi-alpha normalisation p_c^a / sum p_c^a: log-weights, weights (r_a = (p_c / p_max)^a) and the
    alpha-scaled log-ratio, with the original's floors."""
    lp_c = tl.maximum(lp, CLAMP)
    lq_c = tl.maximum(lq, CLAMP)
    diff = tl.where((lp >= CLAMP) & (lq >= CLAMP), logp_diff, lp_c - lq_c)
    return lp_c * alpha - lse_a, r_a * inv_s_a, diff * alpha


@triton.jit
def _eps_term(log_w, w, ad, shift, kl, mask):
    """Per-lane epsilon term of a normalisation's KL: w [sp(eps - log w) - sp(eps - log w_noisy)]."""
    log_wq = log_w - ((ad - shift) + kl)
    return tl.where(mask, w * (_softplus(-(log_w - EPS)) - _softplus(-(log_wq - EPS))), 0.0)


@triton.jit
def _centred(near, m, s, x, log_w, w, far, mask):
    """Accumulate log E_w[e^x] of a centred x per lane: w (e^x - 1 - x), and the log-sum-exp of log w + x
    if `far`."""
    near += tl.where(mask, w * _expm1_minus_x(x), 0.0)
    if far:
        m, s = _lse(m, s, tl.where(mask, log_w + x, float("-inf")))
    return near, m, s


@triton.jit
def _clipped(change, total, lp, lq, lp_k, lq_k, alpha, beta, cut, mask):
    """The original's clipped Renyi sum per lane (beta = 1 - alpha): p_c^a q_c^b, and on clipped entries the
    change the clip makes, p_c^a q_c^b - p^a q^b, as a difference (no cancellation)."""
    clipped = lp_k * alpha + lq_k * beta
    e = tl.exp(clipped)
    total += tl.where(mask, e, 0.0)
    change += tl.where(cut, -e * _expm1((lp * alpha + lq * beta) - clipped), 0.0)
    return change, total


@triton.jit
def _original_renyi(exact, am1, change, total):
    """1/(a - 1) log(sum p_c^a q_c^(1-a) + 1e-12) (am1 = a - 1): from the exact divergence and the clip's
    change near identical inputs, from the clipped sum far from them (as `original.clipped_renyi`)."""
    log_s = exact * am1
    ratio = (change + CLIP12) * tl.exp(-tl.minimum(tl.maximum(log_s, -FAR_LOG), FAR_LOG))
    near = exact + _log1p(ratio) / am1
    far = _log(total + CLIP12) / am1
    return tl.where((tl.abs(log_s) <= FAR_LOG) & (ratio > -0.5), near, far)


@triton.jit
def divergences_kernel(
    clean_ptr,
    noisy_ptr,
    stride_c,
    stride_n,
    rows_ptr,
    targets_ptr,
    out_ptr,
    n_rows,
    vocab: tl.constexpr,
    BLOCK: tl.constexpr,
    ORIGINAL: tl.constexpr,
):
    i = tl.program_id(0)
    row = tl.load(rows_ptr + i).to(tl.int64)
    c_row = clean_ptr + row * stride_c
    n_row = noisy_ptr + row * stride_n
    lanes = tl.arange(0, BLOCK)
    ninf = tl.full([BLOCK], float("-inf"), tl.float32)
    pinf = tl.full([BLOCK], float("inf"), tl.float32)
    zero = tl.zeros([BLOCK], tl.float32)
    never = tl.full([BLOCK], NEVER, tl.int32)

    # 1: maxima and argmaxes of c and n, extremes of c - n
    best_c, at_c, best_n, at_n, dmax, dmin = ninf, never, ninf, never, ninf, pinf
    for start in range(0, vocab, BLOCK):
        offs = start + lanes
        mask = offs < vocab
        c, n = _load(c_row, n_row, offs, mask)
        best_c, at_c = _argmax(best_c, at_c, tl.where(mask, c, float("-inf")), offs)
        best_n, at_n = _argmax(best_n, at_n, tl.where(mask, n, float("-inf")), offs)
        dmax = tl.maximum(dmax, tl.where(mask, c - n, float("-inf")))
        dmin = tl.minimum(dmin, tl.where(mask, c - n, float("inf")))
    mc, arg_c = _argmax_total(best_c, at_c)
    mn, arg_n = _argmax_total(best_n, at_n)
    dmax_row, dmin_row = tl.max(dmax, 0), tl.min(dmin, 0)

    # 2: the partitions; the centring shift E_p[c - n]
    sc, sn, sh = zero, zero, zero
    for start in range(0, vocab, BLOCK):
        offs = start + lanes
        mask = offs < vocab
        c, n = _load(c_row, n_row, offs, mask)
        e = tl.where(mask, tl.exp(c - mc), 0.0)
        sc += e
        sn += tl.where(mask, tl.exp(n - mn), 0.0)
        sh += e * (c - n)
    sc_row = tl.sum(sc, 0)
    log_sc = _log(sc_row)
    shift = tl.sum(sh, 0) / sc_row
    p_floor = tl.exp(tl.zeros([], tl.float32) + CLAMP)

    # 3: KL and the Renyi divergences on the exact softmax, x = k d for d = (c - n) - shift;
    #    sum (p_c / p_max)^a of the normalisations
    top_k, top_a, top_b = -(dmin_row - shift), -0.75 * (dmin_row - shift), -0.5 * (dmin_row - shift)
    top_c, top_d = dmax_row - shift, 3.0 * (dmax_row - shift)
    nk, mk, sk, na, ma, sa, nb, mb, sb = zero, ninf, zero, zero, ninf, zero, zero, ninf, zero
    nc, mq, sq, nd, md, sd = zero, ninf, zero, zero, ninf, zero
    s05, s1, s2 = zero, zero, zero
    for start in range(0, vocab, BLOCK):
        offs = start + lanes
        mask = offs < vocab
        lp, _, d = _row(c_row, n_row, offs, mask, mc, log_sc, shift, 0.0)
        p, p_c = _floored(lp, p_floor)
        nk, mk, sk = _centred(nk, mk, sk, -d, lp, p, top_k > LARGE, mask)
        na, ma, sa = _centred(na, ma, sa, -0.75 * d, lp, p, top_a > LARGE, mask)
        nb, mb, sb = _centred(nb, mb, sb, -0.5 * d, lp, p, top_b > LARGE, mask)
        nc, mq, sq = _centred(nc, mq, sq, d, lp, p, top_c > LARGE, mask)
        nd, md, sd = _centred(nd, md, sd, 3.0 * d, lp, p, top_d > LARGE, mask)
        r = tl.where(mask, p_c * sc_row, 0.0)
        s05 += tl.sqrt(r)
        s1 += r
        s2 += r * r
    kl = tl.maximum(_log_mean_exp(top_k, nk, mk, sk), 0.0)
    renyi025 = tl.maximum(kl + _log_mean_exp(top_a, na, ma, sa) / -0.75, 0.0)
    renyi05 = tl.maximum(kl + _log_mean_exp(top_b, nb, mb, sb) / -0.5, 0.0)
    renyi2 = tl.maximum(kl + _log_mean_exp(top_c, nc, mq, sq), 0.0)
    renyi4 = tl.maximum(kl + _log_mean_exp(top_d, nd, md, sd) / 3.0, 0.0)
    s05_row, s1_row, s2_row = tl.sum(s05, 0), tl.sum(s1, 0), tl.sum(s2, 0)
    lse05, lse1, lse2 = -0.5 * log_sc + _log(s05_row), -log_sc + _log(s1_row), -2.0 * log_sc + _log(s2_row)
    inv05, inv1, inv2 = 1.0 / s05_row, 1.0 / s1_row, 1.0 / s2_row

    # 4: the plain KL's floors; the normalisations' centring shifts and the minima of their log-ratios;
    #    under ORIGINAL the clipped Renyi sums (c: what the clip changes, t: the clipped sum)
    extra, eps_term, sh05, sh1, sh2, low05, low1, low2 = zero, zero, zero, zero, zero, pinf, pinf, pinf
    c025, t025, c05, t05, c2, t2, c4, t4 = zero, zero, zero, zero, zero, zero, zero, zero
    for start in range(0, vocab, BLOCK):
        offs = start + lanes
        mask = offs < vocab
        lp, lq, logp_diff, p, p_c, r = _weighted_row(
            c_row, n_row, offs, mask, mc, log_sc, shift, kl, p_floor, sc_row
        )
        lp_c = tl.maximum(lp, CLAMP)
        lq_c = tl.maximum(lq, CLAMP)
        floored = (lp < CLAMP) | (lq < CLAMP)
        extra += tl.where(mask & floored, p_c * (lp_c - lq_c) - p * logp_diff, 0.0)
        eps_term += tl.where(mask, p_c * (_softplus(-(lp_c - EPS)) - _softplus(-(lq_c - EPS))), 0.0)
        _, w, ad = _normalised(lp, lq, logp_diff, tl.sqrt(r), 0.5, lse05, inv05)
        sh05 += tl.where(mask, w * ad, 0.0)
        low05 = tl.minimum(low05, tl.where(mask, ad, float("inf")))
        _, w, ad = _normalised(lp, lq, logp_diff, r, 1.0, lse1, inv1)
        sh1 += tl.where(mask, w * ad, 0.0)
        low1 = tl.minimum(low1, tl.where(mask, ad, float("inf")))
        _, w, ad = _normalised(lp, lq, logp_diff, r * r, 2.0, lse2, inv2)
        sh2 += tl.where(mask, w * ad, 0.0)
        low2 = tl.minimum(low2, tl.where(mask, ad, float("inf")))
        if ORIGINAL:
            lp_k = tl.maximum(lp, LOG_CLIP12)
            lq_k = tl.maximum(lq, LOG_CLIP12)
            cut = mask & ((lp < LOG_CLIP12) | (lq < LOG_CLIP12))
            c025, t025 = _clipped(c025, t025, lp, lq, lp_k, lq_k, 0.25, 0.75, cut, mask)
            c05, t05 = _clipped(c05, t05, lp, lq, lp_k, lq_k, 0.5, 0.5, cut, mask)
            c2, t2 = _clipped(c2, t2, lp, lq, lp_k, lq_k, 2.0, -1.0, cut, mask)
            c4, t4 = _clipped(c4, t4, lp, lq, lp_k, lq_k, 4.0, -3.0, cut, mask)
    if ORIGINAL:
        renyi025 = _original_renyi(renyi025, -0.75, tl.sum(c025, 0), tl.sum(t025, 0))
        renyi05 = _original_renyi(renyi05, -0.5, tl.sum(c05, 0), tl.sum(t05, 0))
        renyi2 = _original_renyi(renyi2, 1.0, tl.sum(c2, 0), tl.sum(t2, 0))
        renyi4 = _original_renyi(renyi4, 3.0, tl.sum(c4, 0), tl.sum(t4, 0))
    kl_plain = tl.maximum(kl + tl.sum(extra, 0) + tl.sum(eps_term, 0), 0.0)
    shift05, shift1, shift2 = tl.sum(sh05, 0), tl.sum(sh1, 0), tl.sum(sh2, 0)

    # 5: the normalisations' KLs, x = shift_a - ad (the negated centred log-ratio)
    top05, top1, top2 = shift05 - tl.min(low05, 0), shift1 - tl.min(low1, 0), shift2 - tl.min(low2, 0)
    na, ma, sa, nb, mb, sb, nc, mq, sq = zero, ninf, zero, zero, ninf, zero, zero, ninf, zero
    for start in range(0, vocab, BLOCK):
        offs = start + lanes
        mask = offs < vocab
        lp, lq, logp_diff, _, _, r = _weighted_row(
            c_row, n_row, offs, mask, mc, log_sc, shift, kl, p_floor, sc_row
        )
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
        lp, lq, logp_diff, _, _, r = _weighted_row(
            c_row, n_row, offs, mask, mc, log_sc, shift, kl, p_floor, sc_row
        )
        log_w, w, ad = _normalised(lp, lq, logp_diff, tl.sqrt(r), 0.5, lse05, inv05)
        e05 += _eps_term(log_w, w, ad, shift05, kl05, mask)
        log_w, w, ad = _normalised(lp, lq, logp_diff, r, 1.0, lse1, inv1)
        e1 += _eps_term(log_w, w, ad, shift1, kl1, mask)
        log_w, w, ad = _normalised(lp, lq, logp_diff, r * r, 2.0, lse2, inv2)
        e2 += _eps_term(log_w, w, ad, shift2, kl2, mask)

    target = tl.load(targets_ptr + i)
    target = tl.where(target < 0, arg_c.to(tl.int64), target)
    nll = (mn - tl.load(n_row + target).to(tl.float32)) + _log(tl.sum(sn, 0))
    tl.store(out_ptr + 0 * n_rows + i, kl_plain)
    tl.store(out_ptr + 1 * n_rows + i, tl.maximum(kl05 + tl.sum(e05, 0), 0.0))
    tl.store(out_ptr + 2 * n_rows + i, tl.maximum(kl1 + tl.sum(e1, 0), 0.0))
    tl.store(out_ptr + 3 * n_rows + i, tl.maximum(kl2 + tl.sum(e2, 0), 0.0))
    tl.store(out_ptr + 4 * n_rows + i, tl.where(arg_c != arg_n, FLIP, 0.0))
    tl.store(out_ptr + 5 * n_rows + i, renyi025)
    tl.store(out_ptr + 6 * n_rows + i, renyi05)
    tl.store(out_ptr + 7 * n_rows + i, renyi2)
    tl.store(out_ptr + 8 * n_rows + i, renyi4)
    tl.store(out_ptr + 9 * n_rows + i, nll)
