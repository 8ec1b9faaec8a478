"""Pure-NumPy twins of every kernel in ``_kernels.py``: same names, same signatures.

Slow and obvious on purpose: each builds the distributions the documentation describes and
computes the formula directly. Tests swap this module in for ``_kernels`` to check that the
public API gives the same answers with either.
"""

from __future__ import annotations

import numpy as np

from ._kernels import GROUP_FLOOR, GROUP_FRACTIONAL, GROUP_PROPORTIONAL

__all__ = [
    "GROUP_FLOOR",
    "GROUP_FRACTIONAL",
    "GROUP_PROPORTIONAL",
    "accumulate",
    "accumulate_above",
    "fill_within",
    "kl_sweep_fast",
    "kl_sweep_general",
    "mse_sweep",
    "scan",
]


def scan(x):
    """Return (max finite |x|, number of NaN, number of +-inf) of a 1-D float array."""
    a = np.abs(x.astype(np.float64))
    finite = a[np.isfinite(a)]
    m = float(finite.max()) if finite.size else 0.0
    return m, int(np.isnan(a).sum()), int(np.isinf(a).sum())


def accumulate(x, counts, upper):
    """Add |x| to `counts` (equal bins on [0, upper)); values >= upper land in the last bin."""
    a = np.abs(x.astype(np.float64))
    a = a[np.isfinite(a)]
    idx = (a * (np.float64(counts.size) / np.float64(upper))).astype(np.int64)
    counts += np.bincount(np.minimum(idx, counts.size - 1), minlength=counts.size)


def fill_within(x, counts, upper):
    """One pass over x: bin |x| on [0, upper) into counts; return (max, nan, inf, deferred)."""
    a = np.abs(x.astype(np.float64))
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN count as outside
        y = a * (np.float64(counts.size) / np.float64(upper))
        inside = y < counts.size
    counts += np.bincount(y[inside].astype(np.int64), minlength=counts.size)
    finite = np.isfinite(a)
    m = float(a[finite].max()) if finite.any() else 0.0
    deferred = int((finite & ~inside).sum())
    return m, int(np.isnan(a).sum()), int(np.isinf(a).sum()), deferred


def accumulate_above(x, counts, upper, previous):
    """Bin, on [0, upper), the finite values that fill_within deferred at range `previous`."""
    a = np.abs(x.astype(np.float64))
    with np.errstate(over="ignore", invalid="ignore"):  # a scaled value may overflow to inf
        above = a * (np.float64(counts.size) / np.float64(previous)) >= counts.size
    accumulate(a[np.isfinite(a) & above], counts, upper)


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
