"""Numba kernels on plain arrays and scalars: histogram accumulation, KL sweep, MSE sweep.

Every function here has a slow, obvious twin of the same name and signature in
``_reference.py``; tests run the public API against both. Validation (dtypes, NaN policy,
ranges) happens in Python before the call. Arithmetic is float64 unless a parameter says
otherwise, written out explicitly in both modules so that bin indices agree at bin edges.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from numba.core import types
from numba.extending import overload

# Codes shared with _reference.py and selectors.py live in the NumPy twin (no Numba needed).
from ._reference import (  # noqa: F401  (re-exported for the callers' convenience)
    FMT_BFLOAT16,
    FMT_FLOAT16,
    FMT_FLOAT32,
    FMT_FLOAT64,
    GROUP_FLOOR,
    GROUP_FRACTIONAL,
    GROUP_PROPORTIONAL,
)

# No parallel=True anywhere: a Numba parallel region costs 100-600 us per launch and its
# threading layers are process-wide state (workqueue aborts when two threads launch at once).
# Every kernel releases the GIL instead, so callers overlap them with inference or each other.
_njit = functools.partial(numba.njit, cache=True, nogil=True, error_model="numpy")

_LANES = 4  # sub-histograms: consecutive equal bins would otherwise wait on each other's store
_BLOCK = 1 << 30  # elements per flush of the int32 sub-histograms (a lane gets <= 2**28)
_FEW = 1 << 14  # below this many elements one histogram is faster (measured, docs/performance.md)


@_njit(inline="always")
def _magnitude(b, fmt):
    """|x| as float64, exactly, from the bits of x with the sign bit already cleared.

    float() is free when compiled; as plain Python (NUMBA_DISABLE_JIT) it makes the arithmetic
    that follows IEEE like the compiled code: overflow gives inf, without a NumPy warning.
    """
    if fmt == FMT_FLOAT32:
        return float(np.uint32(b).view(np.float32))
    if fmt == FMT_FLOAT64:
        return float(np.uint64(b).view(np.float64))
    if fmt == FMT_BFLOAT16:  # bfloat16 is the top half of a float32
        return float(np.uint32(np.uint32(b) << np.uint32(16)).view(np.float32))
    # float16: its 5-bit exponent and 10-bit mantissa moved into a float64's fields give
    # 2**(e - 1023) * 1.m (or m * 2**-1032 for a subnormal); 2**1008 rebiases it exactly
    return float(np.uint64(np.uint64(b) << np.uint64(42)).view(np.float64)) * 2.0**1008


@_njit
def scan(bits, fmt, mask, inf_bits):
    """Return (max finite |x|, number of NaN, number of +-inf) of raw float bits.

    `bits` is the unsigned-integer view of the data, `mask` clears the sign bit and `inf_bits`
    is the pattern of +inf. Magnitudes order like their bit patterns, so the max is an integer
    max (vectorised); a second pass runs only when the first saw inf or NaN.
    """
    top = mask ^ mask  # zero of the bits' type
    for k in range(bits.size):  # this form vectorises (measured 33 GB/s; `for b in bits`, 6.5)
        top = max(top, bits[k] & mask)
    if top < inf_bits:
        return _magnitude(top, fmt), 0, 0
    top = bits.dtype.type(0)
    n_nan = 0
    n_inf = 0
    for b in bits:
        a = b & mask
        if a < inf_bits:
            top = a if a > top else top
        elif a == inf_bits:
            n_inf += 1
        else:
            n_nan += 1
    return _magnitude(top, fmt), n_nan, n_inf


def _abs64(v, fmt):
    """|v| as float64: a float array element, or the bits of a float16 / bfloat16.

    This body runs only with NUMBA_DISABLE_JIT; compiled kernels use the overload below.
    """
    if isinstance(v, (float, np.floating)):
        return abs(float(v))
    return _magnitude(v & np.uint16(0x7FFF), fmt)


@overload(_abs64)
def _abs64_typed(v, fmt):
    if isinstance(v, types.Float):  # chosen when the kernel is compiled: no per-element branch

        def of_float(v, fmt):
            return abs(np.float64(v))

        return of_float

    def of_bits(v, fmt):
        return _magnitude(v & np.uint16(0x7FFF), fmt)

    return of_bits


@_njit
def bin_clamped(values, fmt, counts, factor, scale):
    """Add every |x| to bin min(int((|x| * factor) * scale), last): the fast path.

    For a batch of finite values whose max is within the range (the caller checked with
    :func:`scan`), so no branch is needed: a value whose index reaches the last bin or beyond
    goes to the last bin. `values` is the float32/float64 array itself, or the uint16 bits of
    float16/bfloat16 data. Consecutive values go to different sub-histograms so that a run of
    equal bins does not wait on its own stores; they are local arrays, which the compiler
    knows do not alias `values` (passed in, it would reload after every store: 2x slower).
    """
    nbins = counts.size
    lastf = np.float64(nbins - 1)
    n = values.size
    if n < _FEW:  # setting up and adding the sub-histograms would cost more than they save
        for k in range(n):
            y = (_abs64(values[k], fmt) * factor) * scale
            y = y if y < lastf else lastf  # NaN compares false: clamped, never cast
            counts[int(y)] += 1
        return
    sub = np.zeros((_LANES, nbins), np.int32)
    for lo in range(0, n, _BLOCK):  # int32 lanes: flushed before they could overflow
        hi = min(n, lo + _BLOCK)
        body = hi - (hi - lo) % _LANES
        if factor == 1.0:  # the usual range: one multiply less per value (the same index)
            for k in range(lo, body, _LANES):
                for u in range(_LANES):  # one sub-histogram per lane
                    y = _abs64(values[k + u], fmt) * scale
                    y = y if y < lastf else lastf
                    sub[u, int(y)] += 1
        else:
            for k in range(lo, body, _LANES):
                for u in range(_LANES):
                    y = (_abs64(values[k + u], fmt) * factor) * scale
                    y = y if y < lastf else lastf
                    sub[u, int(y)] += 1
        for k in range(body, hi):
            y = (_abs64(values[k], fmt) * factor) * scale
            y = y if y < lastf else lastf
            sub[0, int(y)] += 1
        for u in range(_LANES):
            for j in range(nbins):
                counts[j] += sub[u, j]
                sub[u, j] = 0


@_njit
def bin_values(bits, fmt, mask, inf_bits, counts, factor, scale):
    """Bin every finite |x| at index int((|x| * factor) * scale); return statistics.

    Adds to `counts` the values whose index is below ``counts.size``; the others (a value at
    the top of the range, or above it) are not binned but counted as deferred, and the caller
    decides whether they go to the last bin or the range grows. Returns (max finite |x|,
    number of NaN, number of +-inf, number deferred). `factor` is a power of two that keeps
    ``upper * factor`` normal (see ``histogram.bin_scale``), so ``|x| * factor`` is exact.
    """
    nbins = counts.size
    lim = np.float64(nbins)
    n = bits.size
    sub = np.zeros((_LANES, nbins), np.int32)
    top = bits.dtype.type(0)
    n_nan = 0
    n_inf = 0
    n_def = 0
    for lo in range(0, n, _BLOCK):
        hi = min(n, lo + _BLOCK)
        for k in range(lo, hi):  # branchy, but only for batches that hold inf or NaN
            a = bits[k] & mask
            if a < inf_bits:
                top = a if a > top else top
                y = (_magnitude(a, fmt) * factor) * scale
                if y < lim:
                    sub[k & (_LANES - 1), int(y)] += 1
                else:
                    n_def += 1
            elif a == inf_bits:
                n_inf += 1
            else:
                n_nan += 1
        for u in range(_LANES):
            for j in range(nbins):
                counts[j] += sub[u, j]
                sub[u, j] = 0
    return _magnitude(top, fmt), n_nan, n_inf, n_def


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
