"""Numba kernels on plain arrays and scalars: histogram accumulation, KL sweep, MSE sweep.

Every function here has a slow, obvious twin of the same name and signature in
``_reference.py``; tests run the public API against both. Validation (dtypes, NaN policy,
ranges) happens in Python before the call. Arithmetic is float64 unless a parameter says
otherwise, written out explicitly in both modules so that bin indices agree at bin edges.
"""

from __future__ import annotations

import functools
import os

import numba
import numpy as np

# The OpenMP layer collapses (10x) when another process loads the 2 cores; workqueue does not.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

_njit = functools.partial(numba.njit, cache=True, nogil=True, error_model="numpy")
_njit_parallel = functools.partial(_njit, parallel=True)

# Grouping codes shared with _reference.py and selectors.py.
GROUP_PROPORTIONAL = 0  # bin j of i kept bins -> level floor(nq * j / i)  (TensorRT, candidate A)
GROUP_FLOOR = 1  # i // nq bins per level, remainder to the last level (MXNet / ORT / slides)
GROUP_FRACTIONAL = 2  # levels of width i / nq with fractional overlap (ncnn, candidate B)


@_njit
def scan(x):
    """Return (max finite |x|, number of NaN, number of +-inf) of a 1-D float array."""
    m = 0.0
    n_nan = 0
    for v in x:
        a = abs(np.float64(v))
        m = a if a > m else m  # NaN compares false: not taken here, counted below
        n_nan += a != a
    if n_nan == 0 and m < np.inf:
        return m, 0, 0
    m = 0.0
    n_nan = 0
    n_inf = 0
    for v in x:
        a = abs(np.float64(v))
        if a != a:
            n_nan += 1
        elif a == np.inf:
            n_inf += 1
        elif a > m:
            m = a
    return m, n_nan, n_inf


@_njit
def accumulate(x, counts, upper):
    """Add |x| to `counts` (equal bins on [0, upper)); values >= upper land in the last bin.

    NaN and +-inf are skipped (the caller has counted them). Four private sub-histograms
    break the store-to-load dependency between equal consecutive bins.
    """
    nbins = counts.size
    last = nbins - 1
    scale = np.float64(nbins) / np.float64(upper)
    sub = np.zeros((4, nbins), np.int64)
    n = x.size
    body = n - n % 4
    for k in range(0, body, 4):
        for u in range(4):
            a = abs(np.float64(x[k + u]))
            if a <= upper:
                sub[u, min(int(a * scale), last)] += 1
            elif a < np.inf:  # a finite value above the range: clamp (the caller grows first)
                sub[u, last] += 1
    for k in range(body, n):
        a = abs(np.float64(x[k]))
        if a <= upper:
            sub[0, min(int(a * scale), last)] += 1
        elif a < np.inf:
            sub[0, last] += 1
    for u in range(4):
        for b in range(nbins):
            counts[b] += sub[u, b]


@_njit
def _level_bounds(i, nq, grouping, bounds):
    """Fill bounds[0..nq] with the first bin of each level (integer groupings)."""
    if grouping == 1:  # floor: i // nq per level, remainder to the last
        n = i // nq
        for k in range(nq):
            bounds[k] = k * n
    else:  # proportional: level of bin j is floor(nq * j / i)
        for k in range(nq):
            bounds[k] = (k * i + nq - 1) // nq
    bounds[nq] = i


_CHUNK = 1 << 16  # elements per parallel work item of fill_within


@_njit
def _fill_span(x, lo, hi, sub, scale, nbins):
    """Bin x[lo:hi] (|x| * scale < nbins) into sub; return (max, nan, inf, deferred) of the span.

    Values whose bin index would be nbins or more (the range's top value, anything above the
    range, or inf) are not binned but counted as deferred: the caller bins them once it knows
    whether the range grows.
    """
    m = 0.0
    n_nan = 0
    n_inf = 0
    n_def = 0
    for k in range(lo, hi):
        a = abs(np.float64(x[k]))
        y = a * scale
        if y < nbins:
            sub[int(y)] += 1
            m = a if a > m else m
        elif a != a:
            n_nan += 1
        elif a == np.inf:
            n_inf += 1
        else:
            n_def += 1
            m = a if a > m else m
    return m, n_nan, n_inf, n_def


@_njit_parallel
def fill_within(x, counts, upper):
    """One pass over x: bin |x| on [0, upper) into counts; return (max, nan, inf, deferred).

    `counts` must be zero on entry (the caller adds it to the histogram only if the batch is
    accepted). Deferred values (index >= num_bins) are left for :func:`accumulate_above`.
    Work is split in chunks of 64k elements run in parallel, each with private counts.
    """
    nbins = counts.size
    scale = np.float64(nbins) / np.float64(upper)
    n = x.size
    nchunks = (n + _CHUNK - 1) // _CHUNK
    subs = np.zeros((nchunks, nbins), np.int64)
    stats = np.zeros((nchunks, 4), np.float64)
    for c in numba.prange(nchunks):
        m, n_nan, n_inf, n_def = _fill_span(
            x, c * _CHUNK, min(n, (c + 1) * _CHUNK), subs[c], scale, nbins
        )
        stats[c, 0] = m
        stats[c, 1] = n_nan
        stats[c, 2] = n_inf
        stats[c, 3] = n_def
    m = 0.0
    for c in range(nchunks):
        m = max(m, stats[c, 0])
        for b in range(nbins):
            counts[b] += subs[c, b]
    return m, int(stats[:, 1].sum()), int(stats[:, 2].sum()), int(stats[:, 3].sum())


@_njit
def accumulate_above(x, counts, upper, previous):
    """Bin, on [0, upper), the finite values that fill_within deferred at range `previous`."""
    nbins = counts.size
    last = nbins - 1
    old = np.float64(nbins) / np.float64(previous)
    scale = np.float64(nbins) / np.float64(upper)
    for v in x:
        a = abs(np.float64(v))
        if a * old >= nbins and a < np.inf:
            counts[min(int(a * scale), last)] += 1


@_njit
def _prefix_sums(counts):
    """Prefix sums of counts, of non-empty bins and of h ln h."""
    nbins = counts.size
    csum = np.zeros(nbins + 1, np.float64)
    cnz = np.zeros(nbins + 1, np.int64)
    clogc = np.zeros(nbins + 1, np.float64)
    for j in range(nbins):
        h = np.float64(counts[j])
        csum[j + 1] = csum[j] + h
        cnz[j + 1] = cnz[j] + (1 if counts[j] > 0 else 0)
        clogc[j + 1] = clogc[j] + (h * np.log(h) if h > 0 else 0.0)
    return csum, cnz, clogc


@_njit
def _level_term(csum, cnz, lo, hi, spread_nonzero):
    """Return c ln(c / width) for the level [lo, hi), its share of sum P ln Q (0 if empty)."""
    c = csum[hi] - csum[lo]
    if c <= 0:
        return 0.0
    width = (cnz[hi] - cnz[lo]) if spread_nonzero else (hi - lo)
    return c * np.log(c / width)


@_njit
def kl_sweep_fast(counts, start, stop, nq, grouping, spread_nonzero, normalize_total):
    """KL(P||Q) for every candidate i in [start, stop] (integer groupings, no smoothing).

    Closed form per level instead of per bin: with P and Q unnormalised counts,
    D = (sum_P P ln P - sum_P P ln Q) / N + ln(qn / N), where qn is Q's normaliser (N, the
    total count, or the kept sum), and each level [lo, hi) adds c ln(c / width) to sum P ln Q.
    A level depends only on (lo, hi), and levels are at most ceil(stop / nq) bins wide, so the
    terms are tabulated once (~17k logarithms for 2048 bins) and each candidate is O(nq)
    additions. Returns d of length stop + 1, d[i] the divergence (inf where undefined).
    """
    csum, cnz, clogc = _prefix_sums(counts)
    nbins = counts.size
    total = csum[nbins]
    d = np.full(stop + 1, np.inf)
    if total <= 0 or stop < start:
        return d
    maxw = (stop + nq - 1) // nq  # widest level except the last (kept apart for floor grouping)
    table = np.zeros((nbins + 1, maxw + 1), np.float64)
    for w in range(1, maxw + 1):
        # a level w bins wide occurs only for i < nq * (w + 1), so it starts below i - w
        for lo in range(min(nbins - w, nq * (w + 1) - w) + 1):
            table[lo, w] = _level_term(csum, cnz, lo, lo + w, spread_nonzero)
    for i in range(start, stop + 1):
        outliers = total - csum[i]
        h_last = np.float64(counts[i - 1])
        p_last = h_last + outliers
        # sum over P > 0 of P ln P: bins below i-1 unchanged, the last kept bin holds outliers
        a = clogc[i - 1] + (p_last * np.log(p_last) if p_last > 0 else 0.0)
        # proportional bounds ceil(k*i/nq), tracked as quotient + remainder of k*i / nq
        step_q = i // nq
        step_r = i % nq
        quo = 0
        rem = 0
        lo = 0
        b = 0.0
        for k in range(nq - 1):
            if grouping == 1:
                hi = (k + 1) * step_q
            else:
                quo += step_q
                rem += step_r
                if rem >= nq:
                    rem -= nq
                    quo += 1
                hi = quo + (1 if rem > 0 else 0)
            b += table[lo, hi - lo]
            lo = hi
        b += _level_term(csum, cnz, lo, i, spread_nonzero)  # the last level, up to bin i - 1
        if outliers > 0:
            c = csum[i] - csum[lo]
            width = (cnz[i] - cnz[lo]) if spread_nonzero else (i - lo)
            if c <= 0 or (h_last <= 0 and spread_nonzero):
                continue  # Q = 0 < P in the last kept bin: infinite divergence
            b += outliers * np.log(c / width)
        qn = total if normalize_total else csum[i]
        d[i] = (a - b) / total + np.log(qn / total)
    return d


@_njit
def _smooth(p, eps):
    """MXNet / ONNX Runtime ``smooth_distribution`` on counts; returns False if impossible."""
    n = p.size
    nz = 0
    for j in range(n):
        if p[j] != 0:
            nz += 1
    if nz == 0:
        return False
    eps1 = eps * (n - nz) / nz
    if eps1 >= 1.0:
        return False
    for j in range(n):
        p[j] = p[j] + eps if p[j] == 0 else p[j] - eps1
    return True


@_njit
def _expand(h, i, nq, grouping, spread_nonzero, q):
    """Build the expanded 128-level distribution Q over bins [0, i) from unclipped counts h."""
    for j in range(i):
        q[j] = 0.0
    if grouping == 2:  # fractional overlap, level width i / nq (ncnn)
        w = np.float64(i) / nq
        for k in range(nq):
            s = k * w
            e = s + w
            mass = 0.0
            width = 0.0
            j0 = int(np.floor(s))
            j1 = min(int(np.ceil(e)), i)
            for j in range(j0, j1):
                ov = min(e, j + 1.0) - max(s, np.float64(j))
                if ov <= 0:
                    continue
                mass += ov * h[j]
                if h[j] != 0 or not spread_nonzero:
                    width += ov
            if width <= 0:
                continue
            for j in range(j0, j1):
                ov = min(e, j + 1.0) - max(s, np.float64(j))
                if ov > 0 and (h[j] != 0 or not spread_nonzero):
                    q[j] += mass / width * ov
        return
    bounds = np.zeros(nq + 1, np.int64)
    _level_bounds(i, nq, grouping, bounds)
    for k in range(nq):
        lo = bounds[k]
        hi = bounds[k + 1]
        mass = 0.0
        width = 0.0
        for j in range(lo, hi):
            mass += h[j]
            if h[j] != 0 or not spread_nonzero:
                width += 1.0
        if width <= 0:
            continue
        for j in range(lo, hi):
            if h[j] != 0 or not spread_nonzero:
                q[j] = mass / width


@_njit
def kl_sweep_general(
    counts, start, stop, nq, grouping, spread_nonzero, normalize_total, eps, single
):
    """KL(P||Q) per candidate, bin by bin: every grouping, optional smoothing (eps > 0).

    Used for the options the closed form does not cover (fractional grouping, smoothing,
    `single`: the normalised P, Q and the KL sum in float32 instead of float64).
    """
    nbins = counts.size
    h = counts.astype(np.float64)
    total = h.sum()
    d = np.full(stop + 1, np.inf)
    if total <= 0:
        return d
    p = np.zeros(nbins, np.float64)
    q = np.zeros(nbins, np.float64)
    for i in range(start, stop + 1):
        kept = 0.0
        for j in range(i):
            p[j] = h[j]
            kept += h[j]
        p[i - 1] += total - kept
        _expand(h, i, nq, grouping, spread_nonzero, q)
        pv = p[:i].copy()
        qv = q[:i].copy()
        if eps > 0:
            if not _smooth(pv, eps) or not _smooth(qv, eps):
                continue
        pn = total
        qn = total if normalize_total else qv.sum()
        if qn <= 0:
            continue
        if single:
            s32 = np.float32(0.0)
            for j in range(i):
                if pv[j] > 0:
                    if qv[j] <= 0:
                        s32 = np.float32(np.inf)
                        break
                    pj = np.float32(pv[j] / pn)
                    qj = np.float32(qv[j] / qn)
                    s32 += pj * np.log(pj / qj)
            d[i] = s32
            continue
        s = 0.0
        for j in range(i):
            if pv[j] > 0:
                if qv[j] <= 0:
                    s = np.inf
                    break
                s += pv[j] / pn * np.log((pv[j] / pn) / (qv[j] / qn))
        d[i] = s
    return d


@_njit
def mse_sweep(counts, upper, start, stop):
    """Return the expected squared INT8 error for amax = (i + 0.5) * width, i in [start, stop].

    Values are represented by their bin centres; the quantiser is symmetric INT8 (127 levels
    per side, round half to even, saturate at amax). Returns e with e[i] the error sum.
    """
    nbins = counts.size
    width = np.float64(upper) / nbins
    e = np.full(stop + 1, np.inf)
    for i in range(start, stop + 1):
        amax = (i + 0.5) * width
        s = amax / 127.0
        err = 0.0
        for j in range(nbins):
            c = counts[j]
            if c == 0:
                continue
            x = (j + 0.5) * width
            r = np.round(x / s)
            if r > 127.0:
                r = 127.0
            diff = r * s - x
            err += c * diff * diff
        e[i] = err
    return e
