"""Speed of histogram collection and the entropy search, against the baselines of issue #2.

Run: ``python benchmarks/core_speed.py [--mib 32] [--batches 4]``.
Baselines (optional; listed in benchmarks/requirements.txt): onnxruntime (HistogramCollector,
get_entropy_threshold) and NVIDIA ModelOpt (``_compute_amax_entropy``, the pytorch-quantization
algorithm; needs torch). Everything is measured in the same run, so compare the ratios.

Table 1: GB/s of |x| histogram collection on float32 batches, as a fraction of the machine's
single-thread read bandwidth measured on the same arrays (a Numba sum). "growing": each batch is
scaled up, so every batch after the first forces a power-of-two growth (two passes: the worst
case); "steady": batches of one distribution (one pass after the first batch: the usual case).
calibkit is timed on one thread (the target) and on all cores.
Table 2: milliseconds per 2048-bin histogram for the entropy threshold search.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numba
import numpy as np

import calibkit as ck


@numba.njit(cache=True, nogil=True)
def _read_all(x):
    s = 0.0
    for v in x:
        s += v
    return s


def make_batches(kind: str, mib: int, count: int, rng, grow: bool = True) -> list[np.ndarray]:
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


def collection_table(kinds, mib, count, rng, threads) -> list[tuple]:
    try:
        from onnxruntime.quantization.calibrate import HistogramCollector as OrtCollector
    except ImportError:
        OrtCollector = None
    rows = []
    for kind, grow in [(k, g) for k in kinds for g in (True, False)]:
        batches = make_batches(kind, mib, count, rng, grow)
        label = f"{kind}, {'growing' if grow else 'steady'}"
        gb = sum(b.nbytes for b in batches) / 1e9
        _read_all(batches[0][:10])
        t_bw = best_time(lambda batches=batches: [_read_all(b) for b in batches])
        bw = gb / t_bw

        def calibkit_fill(batches=batches):
            h = ck.Histogram()
            for b in batches:
                h.fill(b)

        calibkit_fill()  # compile
        numba.set_num_threads(1)
        timings = {"calibkit Histogram.fill, 1 thread": best_time(calibkit_fill)}
        if threads > 1:
            numba.set_num_threads(threads)
            timings[f"calibkit Histogram.fill, {threads} threads"] = best_time(calibkit_fill)
            numba.set_num_threads(1)
        timings["numpy np.histogram(|x|)"] = best_time(
            lambda batches=batches: [np.histogram(np.abs(b), bins=2048) for b in batches], 1
        )
        if OrtCollector is not None:

            def ort(batches=batches):
                c = OrtCollector("percentile", True, 2048, 128, 99.99, "same")
                for b in batches:
                    c.collect_absolute_value({"t": [b]})

            timings["onnxruntime HistogramCollector"] = best_time(ort, 1)
        for method, t in timings.items():
            rows.append((label, method, gb / t, (gb / t) / bw))
        rows.append((label, "(read bandwidth, 1 thread, Numba sum)", bw, 1.0))
    return rows


def entropy_table(kinds, rng) -> list[tuple]:
    try:
        from onnxruntime.quantization.calibrate import HistogramCollector as OrtCollector
    except ImportError:
        OrtCollector = None
    try:
        with warnings.catch_warnings():  # ModelOpt warns about the transformers version
            warnings.simplefilter("ignore")
            from modelopt.torch.quantization.calib.histogram import _compute_amax_entropy
    except ImportError:
        _compute_amax_entropy = None
    rows = []
    selector = ck.EntropySelector()
    for kind in kinds:
        batches = make_batches(kind, 4, 3, rng)
        h = ck.Histogram()
        for b in batches:
            h.fill(b)
        selector.select(h)  # compile
        n = 20
        t = best_time(lambda h=h, n=n: [selector.select(h) for _ in range(n)]) / n
        rows.append((kind, "calibkit entropy2 (TensorRT candidate A)", t * 1e3))
        if OrtCollector is not None:
            c = OrtCollector("entropy", True, 2048, 128, 99.99, "same")
            for b in batches:
                c.collect_value({"t": [b]})
            hist = c.histogram_dict["t"]
            t = best_time(lambda hist=hist, c=c: c.get_entropy_threshold(hist, 128), 1)
            rows.append((kind, "onnxruntime get_entropy_threshold", t * 1e3))
        if _compute_amax_entropy is not None:
            counts, edges = h.to_numpy()
            t = best_time(lambda c=counts, e=edges: _compute_amax_entropy(c.copy(), e, 8, False), 1)
            rows.append((kind, "ModelOpt / pytorch-quantization entropy", t * 1e3))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=32, help="MiB per float32 batch (>= 16)")
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    kinds = ["normal", "laplace", "heavy-tailed", "relu-like"]
    threads = numba.config.NUMBA_NUM_THREADS
    print(f"numba {numba.__version__} ({threads} threads available), numpy {np.__version__}")
    print(f"\nHistogram collection ({args.batches} x {args.mib} MiB float32 batches)")
    print(f"{'data':<22} {'method':<38} {'GB/s':>7} {'x bandwidth':>12}")
    for kind, method, gbs, ratio in collection_table(kinds, args.mib, args.batches, rng, threads):
        print(f"{kind:<22} {method:<38} {gbs:>7.2f} {ratio:>12.3f}")
    print("\nEntropy threshold search (one 2048-bin histogram)")
    print(f"{'data':<13} {'method':<42} {'ms':>9}")
    for kind, method, ms in entropy_table(kinds, rng):
        print(f"{kind:<13} {method:<42} {ms:>9.2f}")


if __name__ == "__main__":
    main()
