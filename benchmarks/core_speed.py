"""Speed of |x| histogram collection against a real read of the same data, and against peers.

Run: ``python benchmarks/core_speed.py [--mib 64] [--batches 16] [--kinds normal,relu-like]``
(``--entropy``: time the 2048-bin entropy threshold search instead).

One table per run. Reference: the machine's read bandwidth on the very batches being binned,
``np.max`` over all of them (>= 1 GiB by default, far more than any cache), on one thread and on
two threads (each reading half of the batches), measured in the same run. Rows per distribution:
"steady" (batches of one distribution: the usual case, one pass per batch) and "growing" (each
batch 1.7x the previous one: every batch grows the range, the worst case). Methods: calibkit
``Histogram.fill`` (one thread: the kernels launch no parallel region), ``np.histogram`` of |x|
(2048 bins, computed per batch) and onnxruntime's ``HistogramCollector`` (what its
HistogramCalibrater uses; 2048 bins, |x| mode), on the first 2 batches for the slow peers.
The last columns: microseconds per call on small float32 tensors (1, 16 and 64 KiB), steady.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import calibkit as ck

SMALL_KIB = (1, 16, 64)


def make_batches(kind: str, mib: int, count: int, rng, grow: bool) -> list[np.ndarray]:
    n = mib * 1024 * 1024 // 4
    out = []
    for k in range(count):
        if kind == "normal":
            x = rng.standard_normal(n, dtype=np.float32)
        elif kind == "laplace":
            x = rng.laplace(size=n).astype(np.float32)
        elif kind == "heavy-tailed":
            x = rng.standard_t(2, size=n).astype(np.float32)
        else:  # relu-like: half exact zeros
            x = np.maximum(rng.standard_normal(n, dtype=np.float32), 0)
        if grow:
            x *= np.float32(1.7**k)  # each batch exceeds the previous range: growth every time
        out.append(x)
    return out


def best_time(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def per_call_us(fill, kib: int, rng, calls: int = 2000) -> float:
    """Best-of-3 mean microseconds of `fill(x)` on a steady stream of one small tensor."""
    x = rng.standard_normal(kib * 256).astype(np.float32)
    fill(x)
    return best_time(lambda: [fill(x) for _ in range(calls)]) / calls * 1e6


def ort_collector():
    try:
        from onnxruntime.quantization.calibrate import HistogramCollector
    except ImportError:
        return None
    return lambda: HistogramCollector("percentile", True, 2048, 128, 99.99, "same")


def read_bandwidth(batches) -> tuple[float, float]:
    """GB/s of np.max over the batches on one thread, and on two (half of the batches each)."""
    gb = sum(b.nbytes for b in batches) / 1e9
    one = best_time(lambda: [np.max(b) for b in batches])
    halves = [batches[0::2], batches[1::2]]
    with ThreadPoolExecutor(2) as pool:  # np.max releases the GIL
        two = best_time(lambda: list(pool.map(lambda h: [np.max(b) for b in h], halves)))
    return gb / one, gb / two


def rows_for(kind: str, args, rng) -> list[tuple]:
    make_ort = ort_collector()
    rows = []
    for grow in (False, True):
        batches = make_batches(kind, args.mib, args.batches, rng, grow)
        label = f"{kind}, {'growing' if grow else 'steady'}"
        bw1, bw2 = read_bandwidth(batches)
        gb = sum(b.nbytes for b in batches) / 1e9
        few = batches[:2]
        gb_few = sum(b.nbytes for b in few) / 1e9

        def fill(batches=batches):
            h = ck.Histogram()
            for b in batches:
                h.fill(b)

        fill(batches[:1])  # load the kernels
        timings = {"calibkit Histogram.fill": (gb, best_time(fill))}
        if not grow:
            half = [b.astype(np.float16) for b in few]
            gb_half = sum(b.nbytes for b in half) / 1e9
            timings["calibkit Histogram.fill, float16"] = (
                gb_half,
                best_time(lambda half=half: fill(half)),
            )
        timings["numpy np.histogram(|x|, 2048)"] = (
            gb_few,
            best_time(lambda few=few: [np.histogram(np.abs(b), bins=2048) for b in few], 1),
        )
        if make_ort is not None:

            def ort(few=few):
                c = make_ort()
                for b in few:
                    c.collect_absolute_value({"t": [b]})

            timings["onnxruntime HistogramCollector"] = (gb_few, best_time(ort, 1))
        small = {}
        if not grow:
            h = ck.Histogram()
            small["calibkit Histogram.fill"] = [per_call_us(h.fill, k, rng) for k in SMALL_KIB]
            if make_ort is not None:
                c = make_ort()
                small["onnxruntime HistogramCollector"] = [
                    per_call_us(lambda x, c=c: c.collect_absolute_value({"t": [x]}), k, rng, 200)
                    for k in SMALL_KIB
                ]
        rows.append((label, "np.max read, 1 thread (reference)", bw1, 1.0, bw1 / bw2, None))
        rows.append((label, "np.max read, 2 threads", bw2, bw2 / bw1, 1.0, None))
        for method, (size, t) in timings.items():
            rows.append(
                (label, method, size / t, size / t / bw1, size / t / bw2, small.get(method))
            )
        del batches
    return rows


def entropy_table(rng) -> None:
    selector = ck.EntropySelector()
    print(f"{'data':<13} {'method':<42} {'ms':>9}")
    for kind in ("normal", "laplace", "heavy-tailed", "relu-like"):
        h = ck.Histogram()
        for b in make_batches(kind, 4, 3, rng, grow=True):
            h.fill(b)
        selector.select(h)  # compile
        n = 20
        t = best_time(lambda h=h, n=n: [selector.select(h) for _ in range(n)]) / n
        print(f"{kind:<13} {'calibkit entropy2 (TensorRT candidate A)':<42} {t * 1e3:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="MiB per float32 batch")
    parser.add_argument("--batches", type=int, default=16, help="batches (16 x 64 MiB = 1 GiB)")
    parser.add_argument("--kinds", default="normal,relu-like", help="distributions to run")
    parser.add_argument("--entropy", action="store_true", help="time the entropy search only")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    if args.entropy:
        entropy_table(rng)
        return
    gib = args.mib * args.batches / 1024
    print(
        f"{args.batches} x {args.mib} MiB float32 batches ({gib:.2f} GiB); numpy {np.__version__}"
    )
    rows = [r for kind in args.kinds.split(",") for r in rows_for(kind, args, rng)]
    head = ["data", "method", "GB/s", "x read 1T", "x read 2T"]
    head += [f"us/call {k} KiB" for k in SMALL_KIB]
    text = [head]
    for label, method, gbs, r1, r2, small in rows:
        cells = [label, method, f"{gbs:.2f}", f"{r1:.3f}", f"{r2:.3f}"]
        cells += [f"{v:.1f}" for v in small] if small else [""] * len(SMALL_KIB)
        text.append(cells)
    widths = [max(len(r[i]) for r in text) for i in range(len(head))]
    for r in text:
        print(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )


if __name__ == "__main__":
    main()
