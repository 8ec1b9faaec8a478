"""How closely do calibkit's Q/DQ models agree with FP32? (Fashion-MNIST, EfficientNet, MiniLM)

Calibrates each real model with calibkit on the CPU (histograms of every activation over the
calibration inputs, entropy2 unless told otherwise), writes the Q/DQ model with
``to_qdq`` and runs FP32 and Q/DQ models with onnxruntime (graph optimisations off,
so onnxruntime executes the Q/DQ nodes as written: fake quantisation) on held-aside inputs.

Baselines measured in the same run: the same Q/DQ model with every activation scale multiplied
by 16 (coarse steps) and divided by 16 (heavy clipping), the calibrated model without weight
Q/DQ (to separate activation from weight error), and other selectors on the same histograms
(``--also``; default entropy2 with bin 0 emptied, minmax, percentile:99.99).

    python -m benchmarks.qdq_agreement                       # all three models, default sizes
    python -m benchmarks.qdq_agreement --model efficientnet --calib 64 --eval 64

Fashion-MNIST (the bundled CNN, labelled): accuracy on test.npz and top-1 agreement with FP32,
also with Concat inputs quantized (``--op-types`` + Concat).
EfficientNet: top-1 agreement with FP32, mean logit cosine, mean softmax KL(FP32 || Q/DQ).
MiniLM: mean and minimum embedding cosine with FP32, and recall@1 / MRR of a 77-pair retrieval
task (pydoc topic title -> first paragraph) for FP32 and each Q/DQ variant.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from benchmarks import models
from calibkit.collect import HistogramCollector
from calibkit.onnx.qdq import DEFAULT_OP_TYPES, to_qdq
from calibkit.onnx.source import OnnxActivationSource
from calibkit.scale import scale_from_amax
from calibkit.selectors import compute_amax, make_selector

THREADS = int(os.environ.get("OMP_NUM_THREADS", "2"))


def session(model):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = THREADS
    data = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def collect_histograms(model_path, batches: Iterable[Mapping[str, np.ndarray]]) -> dict:
    """Histograms of every float activation of `model_path` over `batches` (2048 bins)."""
    collector = HistogramCollector(2048)
    source = OnnxActivationSource(model_path, num_threads=THREADS)
    for batch in source.run(batches):
        collector.update(batch)
    return collector.histograms_


def scales_for(histograms: Mapping, algorithm: str) -> dict[str, np.float32]:
    """TensorRT cache scales ``fl32(amax / 127)`` for the `algorithm` selector."""
    amax = compute_amax(histograms, make_selector(algorithm))
    return {name: scale_from_amax(a) for name, a in amax.items()}


def minus128(model_path, scales: Mapping, batches) -> dict[str, float]:
    """How often explicit Q/DQ's -128 differs from implicit INT8's symmetric [-127, 127].

    Counts, over the quantized activations, the values with ``round(x / s) <= -128`` (Q/DQ maps
    them to -128, a symmetric range to -127).
    """
    names = "|".join(re.escape(n) for n in scales)
    source = OnnxActivationSource(model_path, tensors=f"^({names})$", num_threads=THREADS)
    total = hit = 0
    worst = 0.0
    for batch in source.run(batches):
        for name, x in batch.items():
            q = np.rint(x.astype(np.float32) / np.float32(scales[name]))
            n = int(np.count_nonzero(q <= -128))
            total, hit = total + x.size, hit + n
            worst = max(worst, n / x.size)
    return {"values": total, "at_minus_128": hit, "ppm": 1e6 * hit / max(total, 1), "worst": worst}


def variants(
    model_path, histograms: Mapping, algorithm: str, others: Iterable[str] = ()
) -> tuple[dict[str, bytes], dict]:
    """Serialized Q/DQ models: `algorithm` (calibrated, mis-scaled x16 and /16, without weight
    Q/DQ) and each of `others`; plus the calibrated scales of the tensors given a Q/DQ pair."""
    scales = scales_for(histograms, algorithm)
    specs = {
        algorithm: (scales, True),
        f"{algorithm}, scales x16": ({k: v * np.float32(16) for k, v in scales.items()}, True),
        f"{algorithm}, scales /16": ({k: v / np.float32(16) for k, v in scales.items()}, True),
        f"{algorithm}, float weights": (scales, False),
    }
    for other in others:
        specs[other] = (scales_for(histograms, other), True)
    out, placed = {}, {}
    for name, (s, weights) in specs.items():
        model, report = to_qdq(model_path, s, quantize_weights=weights)
        out[name] = model.SerializeToString()
        if name == algorithm:
            print(f"  Q/DQ: {report.summary()}")
            placed = {t: scales[t] for t in report.activations}
    return out, placed


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def logit_agreement(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Top-1 agreement, mean cosine and mean softmax KL(ref || got) of two logit batches."""
    p, q = _softmax(ref.astype(np.float64)), _softmax(got.astype(np.float64))
    return {
        "top1": float(np.mean(ref.argmax(1) == got.argmax(1))),
        "cosine": float(np.mean(_cosine(ref, got))),
        "kl": float(np.mean(np.sum(p * (np.log(p + 1e-30) - np.log(q + 1e-30)), axis=1))),
    }


def _cosine(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def run_batches(sess, feeds: list[dict]) -> np.ndarray:
    return np.concatenate([sess.run(None, f)[0] for f in feeds])


def efficientnet(
    n_calib: int = 64, n_eval: int = 64, algorithm: str = "entropy2", others: Iterable[str] = ()
) -> dict:
    """Return {variant: {"top1": ..., "cosine": ..., "kl": ...}} on held-aside photo crops."""
    path = models.efficientnet_lite0_onnx()
    calib = models.efficientnet_inputs("calib", n_calib, seed=0)
    evals = models.efficientnet_inputs("eval", n_eval, seed=1)
    start = time.perf_counter()
    hists = collect_histograms(path, ({"image": calib[i : i + 8]} for i in range(0, n_calib, 8)))
    print(f"  calibrated on {n_calib} crops in {time.perf_counter() - start:.1f} s")
    feeds = [{"image": evals[i : i + 16]} for i in range(0, n_eval, 16)]
    ref = run_batches(session(path), feeds)
    results = {}
    qdq_models, placed = variants(path, hists, algorithm, others)
    clamp = minus128(path, placed, feeds)
    print(f"  -128 (explicit) vs -127 (implicit): {clamp}")
    for name, model in qdq_models.items():
        results[name] = logit_agreement(ref, run_batches(session(model), feeds))
    return results


def fashion(algorithm: str = "entropy2", others: Iterable[str] = ()) -> dict:
    """Return {variant: {"accuracy", "top1"}} for the bundled Fashion-MNIST CNN (labelled)."""
    folder = Path(__file__).resolve().parents[1] / "examples" / "fashion_mnist"
    path = folder / "model.onnx"
    calib = np.load(folder / "calib.npz")["image"]
    test = np.load(folder / "test.npz")
    x, labels = test["image"].astype(np.float32) / np.float32(255), test["label"]
    hists = collect_histograms(path, ({"image": calib[i : i + 100]} for i in range(0, 500, 100)))
    feeds = [{"image": x[i : i + 500]} for i in range(0, len(x), 500)]
    ref = run_batches(session(path), feeds)
    results = {"fp32": {"accuracy": float(np.mean(ref.argmax(1) == labels)), "top1": 1.0}}
    qdq_models, _ = variants(path, hists, algorithm, others)
    concat, _ = to_qdq(path, scales_for(hists, algorithm), op_types=(*DEFAULT_OP_TYPES, "Concat"))
    qdq_models[f"{algorithm}, + Concat inputs"] = concat.SerializeToString()
    for name, model in qdq_models.items():
        got = run_batches(session(model), feeds).argmax(1)
        results[name] = {
            "accuracy": float(np.mean(got == labels)),
            "top1": float(np.mean(got == ref.argmax(1))),
        }
    return results


def minilm(
    n_calib: int = 128, n_eval: int = 128, algorithm: str = "entropy2", others: Iterable[str] = ()
) -> dict:
    """Return {variant: {"cosine", "min_cosine", "recall@1", "mrr"}} on held-aside sentences."""
    path = models.minilm_onnx()
    texts = models.sentences("calib", n_calib, seed=0)
    batches = (models.tokenize(texts[i : i + 16]) for i in range(0, n_calib, 16))
    start = time.perf_counter()
    hists = collect_histograms(path, batches)
    print(f"  calibrated on {n_calib} sentences in {time.perf_counter() - start:.1f} s")
    evals = models.sentences("eval", n_eval, seed=1)
    feeds = [models.tokenize(evals[i : i + 16]) for i in range(0, n_eval, 16)]
    pairs = models.retrieval_pairs()
    queries, docs = (models.tokenize([p[i] for p in pairs]) for i in (0, 1))

    def measure(sess) -> tuple[np.ndarray, dict]:
        emb = run_batches(sess, feeds)
        q, d = (sess.run(None, feed)[0] for feed in (queries, docs))
        return emb, models.retrieval_scores(q, d)

    ref, ref_scores = measure(session(path))
    results = {"fp32": {"cosine": 1.0, "min_cosine": 1.0, **ref_scores}}
    qdq_models, placed = variants(path, hists, algorithm, others)
    clamp = minus128(path, placed, feeds)
    print(f"  -128 (explicit) vs -127 (implicit): {clamp}")
    for name, model in qdq_models.items():
        emb, scores = measure(session(model))
        cos = _cosine(ref, emb)
        results[name] = {"cosine": float(cos.mean()), "min_cosine": float(cos.min()), **scores}
    return results


def _table(title: str, results: dict) -> None:
    keys = list(next(iter(results.values())))
    print(f"\n{title}")
    print(f"| variant | {' | '.join(keys)} |")
    print(f"|---|{'---|' * len(keys)}")
    for name, row in results.items():
        print(f"| {name} | {' | '.join(f'{row[k]:.4f}' for k in keys)} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", choices=["fashion", "efficientnet", "minilm", "all"], default="all"
    )
    parser.add_argument("--calib", type=int, help="calibration inputs (default 64 / 128)")
    parser.add_argument("--eval", type=int, help="held-aside inputs (default 64 / 128)")
    parser.add_argument("--algorithm", default="entropy2", help="calibkit selector spec")
    parser.add_argument(
        "--also",
        nargs="*",
        default=["entropy2:first_bin=zero", "minmax", "percentile:99.99"],
        help="further selector specs to compare (calibrated scales only)",
    )
    args = parser.parse_args(argv)
    if args.model in ("fashion", "all"):
        print("Fashion-MNIST CNN (examples/fashion_mnist)")
        res = fashion(args.algorithm, args.also)
        _table("Fashion-MNIST CNN: accuracy on 2000 labelled test images", res)
    if args.model in ("efficientnet", "all"):
        print("EfficientNet-Lite0")
        res = efficientnet(args.calib or 64, args.eval or 64, args.algorithm, args.also)
        _table(f"EfficientNet-Lite0 vs FP32 ({args.eval or 64} held-aside crops)", res)
    if args.model in ("minilm", "all"):
        print("all-MiniLM-L6-v2")
        res = minilm(args.calib or 128, args.eval or 128, args.algorithm, args.also)
        _table(f"all-MiniLM-L6-v2 vs FP32 ({args.eval or 128} held-aside sentences)", res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
