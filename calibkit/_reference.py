"""Pure-NumPy twins of every kernel in ``_kernels.py``: same names, same signatures.

Slow and obvious on purpose: each builds the distributions the documentation describes and
computes the formula directly. Tests swap this module in for ``_kernels`` to check that the
public API gives the same answers with either.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "FMT_BFLOAT16",
    "FMT_FLOAT16",
    "FMT_FLOAT32",
    "FMT_FLOAT64",
    "GROUP_FLOOR",
    "GROUP_FRACTIONAL",
    "GROUP_PROPORTIONAL",
    "bin_clamped",
    "bin_values",
    "kl_sweep_fast",
    "kl_sweep_general",
    "mse_sweep",
    "scan",
]

# Grouping codes shared with _kernels.py and selectors.py.
GROUP_PROPORTIONAL = 0  # bin j of i kept bins -> level floor(nq * j / i)  (TensorRT, candidate A)
GROUP_FLOOR = 1  # i // nq bins per level, remainder to the last level (MXNet / ORT / slides)
GROUP_FRACTIONAL = 2  # levels of width i / nq with fractional overlap (ncnn, candidate B)

# Input formats: the kernels read the raw bits (an unsigned-integer view) of these.
FMT_FLOAT16 = 0
FMT_BFLOAT16 = 1
FMT_FLOAT32 = 2
FMT_FLOAT64 = 3


def magnitudes(bits, fmt):
    """|x| as float64 from the raw bits of x, through NumPy's own conversions."""
    if fmt == FMT_FLOAT16:
        x = bits.view(np.float16)
    elif fmt == FMT_BFLOAT16:
        x = (bits.astype(np.uint32) << 16).view(np.float32)
    elif fmt == FMT_FLOAT32:
        x = bits.view(np.float32)
    else:
        x = bits.view(np.float64)
    return np.abs(x.astype(np.float64))


def scan(bits, fmt, mask, inf_bits):
    """Return (max finite |x|, number of NaN, number of +-inf) of raw float bits."""
    a = magnitudes(bits, fmt)
    finite = a[np.isfinite(a)]
    m = float(finite.max()) if finite.size else 0.0
    return m, int(np.isnan(a).sum()), int(np.isinf(a).sum())


def bin_clamped(values, fmt, counts, factor, scale):
    """Add every |x| to bin min(int((|x| * factor) * scale), last) (finite batches only).

    `values` is a float32/float64 array, or the uint16 bits of float16/bfloat16 data.
    """
    if values.dtype == np.uint16:
        a = magnitudes(values, fmt)
    else:
        a = np.abs(values.astype(np.float64))
    with np.errstate(over="ignore"):
        y = (a * np.float64(factor)) * np.float64(scale)
    last = counts.size - 1
    idx = np.where(y < last, y, last).astype(np.int64)  # as the kernel: NaN to the last bin
    counts += np.bincount(idx, minlength=counts.size)


def bin_values(bits, fmt, mask, inf_bits, counts, factor, scale):
    """Bin every finite |x| at int((|x| * factor) * scale) below counts.size; defer the rest.

    Returns (max finite |x|, number of NaN, number of +-inf, number deferred).
    """
    a = magnitudes(bits, fmt)
    m, n_nan, n_inf = scan(bits, fmt, mask, inf_bits)
    a = a[np.isfinite(a)]
    with np.errstate(over="ignore"):  # above a tiny range |x| * factor may overflow: deferred
        y = (a * np.float64(factor)) * np.float64(scale)
    inside = y < counts.size
    counts += np.bincount(y[inside].astype(np.int64), minlength=counts.size)
    return m, n_nan, n_inf, int((~inside).sum())


def _levels(i, nq, grouping):
    """Level index of each of the first i bins (integer groupings)."""
    j = np.arange(i)
    if grouping == GROUP_FLOOR:
        return np.minimum(j // (i // nq), nq - 1)
    return (nq * j) // i


def _overlap(i, nq):
    """Matrix (nq, i): how much of fine bin j lies in level k when levels are i/nq wide."""
    w = i / nq
    k = np.arange(nq)[:, None]
    j = np.arange(i)[None, :]
    return np.clip(np.minimum((k + 1) * w, j + 1.0) - np.maximum(k * w, j), 0.0, None)


def expand(h, i, nq, grouping, spread_nonzero):
    """Q over bins [0, i): each level's mass spread evenly over its (non-empty) bins."""
    h = h[:i].astype(np.float64)
    eligible = (h != 0) if spread_nonzero else np.ones(i, bool)
    if grouping == GROUP_FRACTIONAL:
        ov = _overlap(i, nq)
        mass = ov @ h
        width = ov @ eligible.astype(np.float64)
        share = np.divide(mass, width, out=np.zeros(nq), where=width > 0)
        return (ov * share[:, None]).sum(axis=0) * eligible
    lev = _levels(i, nq, grouping)
    mass = np.bincount(lev, weights=h, minlength=nq)
    width = np.bincount(lev, weights=eligible.astype(np.float64), minlength=nq)
    share = np.divide(mass, width, out=np.zeros(nq), where=width > 0)
    return share[lev] * eligible


def smooth(p, eps):
    """MXNet / ONNX Runtime ``smooth_distribution`` on counts; None if impossible."""
    zero = p == 0
    nz = int((~zero).sum())
    if nz == 0:
        return None
    eps1 = eps * zero.sum() / nz
    if eps1 >= 1.0:
        return None
    return p + eps * zero - eps1 * ~zero


def divergence(counts, i, nq, grouping, spread_nonzero, normalize_total, eps, single=False):
    """KL(P||Q) of candidate i, written out as the documentation states it."""
    h = counts.astype(np.float64)
    total = h.sum()
    p = h[:i].copy()
    p[-1] += h[i:].sum()  # outliers fold into the last kept bin
    q = expand(h, i, nq, grouping, spread_nonzero)
    if eps > 0:
        p, q = smooth(p, eps), smooth(q, eps)
        if p is None or q is None:
            return np.inf
    qn = total if normalize_total else q.sum()
    if qn <= 0:
        return np.inf
    p, q = p / total, q / qn
    mask = p > 0
    if np.any(q[mask] <= 0):
        return np.inf
    if single:  # float32 terms, summed in order in float32 (as the kernel does)
        p32, q32 = p[mask].astype(np.float32), q[mask].astype(np.float32)
        terms = p32 * np.log(p32 / q32)
        s = np.float32(0.0)
        for t in terms:
            s = np.float32(s + t)
        return float(s)
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def kl_sweep_fast(counts, start, stop, nq, grouping, spread_nonzero, normalize_total):
    """KL(P||Q) for every candidate i in [start, stop]; d[i] (inf where undefined)."""
    args = (nq, grouping, spread_nonzero, normalize_total, 0.0, False)
    return kl_sweep_general(counts, start, stop, *args)


def kl_sweep_general(
    counts, start, stop, nq, grouping, spread_nonzero, normalize_total, eps, single
):
    """KL(P||Q) per candidate for every grouping, with optional smoothing (eps > 0)."""
    d = np.full(stop + 1, np.inf)
    if counts.sum() <= 0:
        return d
    args = (nq, grouping, spread_nonzero, normalize_total, eps, single)
    for i in range(start, stop + 1):
        d[i] = divergence(counts, i, *args)
    return d


def mse_sweep(counts, upper, start, stop):
    """Return the expected squared INT8 error for amax = (i + 0.5) * width, per i."""
    width = np.float64(upper) / counts.size
    x = (np.arange(counts.size) + 0.5) * width
    e = np.full(stop + 1, np.inf)
    for i in range(start, stop + 1):
        s = (i + 0.5) * width / 127.0
        xq = np.minimum(np.round(x / s), 127.0) * s
        e[i] = float(np.sum(counts * (xq - x) ** 2))
    return e
