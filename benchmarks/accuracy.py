"""Accuracy of every scale algorithm on real models, with Q/DQ fake quantisation in onnxruntime.

For each model: calibrate once (histograms of every activation over the calibration inputs,
``calibkit.calibrate_onnx``), then for every algorithm select amax from the same histograms,
write the Q/DQ model (``calibkit.onnx.qdq.to_qdq``: activations per tensor, weights per channel,
TensorRT's placement rules) and run it with onnxruntime, graph optimisations off (Q/DQ nodes
execute as written). The baseline, measured in the same run, is the FP32 model on the same inputs.

- ``fashion``: the bundled Fashion-MNIST CNN (examples/fashion_mnist). Calibration: the 500
  images of calib.npz; evaluation: the 2000 labelled images of test.npz (accuracy, and top-1
  agreement with FP32).
- ``efficientnet``: EfficientNet-Lite0 (benchmarks/models.py). Calibration: random crops of the
  calibration photos; evaluation: crops of the held-aside photos (top-1 agreement with FP32,
  mean logit cosine).
- ``minilm``: all-MiniLM-L6-v2. Calibration: pydoc sentences; evaluation: held-aside sentences
  (mean / min embedding cosine with FP32) and the 77-pair pydoc retrieval task (recall@1, MRR).

The amax values get TensorRT's scale-sharing rules for TensorRT 10.16 (``--sharing trt``, as
``calibkit calibrate`` and ``select`` apply them; ``--sharing none`` turns them off). Algorithms
whose amax values are identical to an earlier one's (``entropy`` = ``entropy2``: same maths, only
the cache header differs) reuse its Q/DQ result; the table says so.

    python -m benchmarks.accuracy                           # all three models, default sizes
    python -m benchmarks.accuracy --models fashion --threads 1 --json out.json

Needs onnx and onnxruntime; efficientnet and minilm need the exports and data of
benchmarks/models.py (``bash benchmarks/prepare_models.sh``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from calibkit.onnx.calibrate import calibrate_onnx
from calibkit.onnx.qdq import to_qdq
from calibkit.pipeline import select_scales
from calibkit.research.sensitivity import output_error, run_model
from calibkit.scale import scale_from_amax

ROOT = Path(__file__).resolve().parents[1]
TRT_VERSION = "10.16"  # selects the scale-sharing rules (docs/sharing.md)
FASHION = ROOT / "examples" / "fashion_mnist"
ALGORITHMS = (
    "entropy2",  # bin 0 emptied (calibkit's default, as NVIDIA's MLPerf notes describe)
    "entropy",
    "entropy2:first-bin=keep",  # bin 0 kept: calibkit's entropy2 before 846969e
    "minmax",
    "percentile:99.9",
    "percentile:99.99",
    "percentile:99.999",
    "legacy:0.9999:1",
    "mse",
)


def _batches(arrays: Mapping[str, np.ndarray], size: int) -> list[dict[str, np.ndarray]]:
    n = len(next(iter(arrays.values())))
    return [{k: v[i : i + size] for k, v in arrays.items()} for i in range(0, n, size)]


# -- per-model tasks: (model path, calibration batches, evaluation, metric names) --------------


def fashion_task(args):
    calib = dict(np.load(FASHION / "calib.npz"))
    test = np.load(FASHION / "test.npz")
    x = test["image"][: args.eval or None].astype(np.float32) / np.float32(255)
    labels = test["label"][: len(x)]
    batches = _batches({"image": x}, 250)

    def evaluate(model, reference):
        logits = run_model(model, batches, num_threads=args.threads)
        out = {"accuracy": float(np.mean(logits.argmax(1) == labels))}
        if reference is not None:
            out["top1_agree"] = output_error(reference["logits"], logits)["agreement"]
        return out, {"logits": logits}

    calib_batches = _batches(calib, 32)
    return FASHION / "model.onnx", calib_batches, evaluate, f"{len(x)} labelled test images"


def efficientnet_task(args):
    from benchmarks import models

    path = models.efficientnet_lite0_onnx()
    calib = models.efficientnet_inputs("calib", args.calib or 64, seed=0)
    x = models.efficientnet_inputs("eval", args.eval or 256, seed=1)
    batches = _batches({"image": x}, 16)

    def evaluate(model, reference):
        logits = run_model(model, batches, num_threads=args.threads)
        out = {}
        if reference is not None:
            err = output_error(reference["logits"], logits)
            ref = reference["logits"]
            top5 = np.argsort(-ref, axis=1)[:, :5]
            in5 = np.mean([p in t for p, t in zip(logits.argmax(1), top5, strict=True)])
            out = {"top1_agree": err["agreement"], "in_fp32_top5": float(in5)}
            out["logit_cosine"] = err["cosine"]
        return out, {"logits": logits}

    calib_batches = _batches({"image": calib}, 8)
    return path, calib_batches, evaluate, f"{len(x)} crops of {len(models.EVAL_PHOTOS)} photos"


def minilm_task(args):
    from benchmarks import models

    path = models.minilm_onnx()
    calib_text = models.sentences("calib", args.calib or 64, seed=0)
    eval_text = models.sentences("eval", args.eval or 128, seed=1)
    pairs = models.retrieval_pairs()

    def tokenized(texts, size=16):  # per-batch padding, as a serving system would
        return [models.tokenize(texts[i : i + size]) for i in range(0, len(texts), size)]

    def embed(model, texts):
        parts = [run_model(model, [b], num_threads=args.threads) for b in tokenized(texts)]
        return np.concatenate(parts)

    def evaluate(model, reference):
        sent = embed(model, eval_text)
        q = embed(model, [p[0] for p in pairs])
        d = embed(model, [p[1] for p in pairs])
        scores = models.retrieval_scores(q, d)
        out = {"recall@1": scores["recall@1"], "mrr": scores["mrr"]}
        if reference is not None:
            cos = np.sum(sent * reference["sent"], 1) / (
                np.linalg.norm(sent, axis=1) * np.linalg.norm(reference["sent"], axis=1)
            )
            out = {"emb_cosine": float(cos.mean()), "emb_cosine_min": float(cos.min()), **out}
        return out, {"sent": sent}

    desc = f"{len(eval_text)} held-aside sentences, {len(pairs)}-pair retrieval"
    return path, tokenized(calib_text, 8), evaluate, desc


TASKS: dict[str, Callable] = {
    "fashion": fashion_task,
    "efficientnet": efficientnet_task,
    "minilm": minilm_task,
}


def run_task(name: str, args) -> dict:
    """Calibrate once, then evaluate FP32 and every algorithm; return the rows."""
    t0 = time.perf_counter()
    path, calib_batches, evaluate, desc = TASKS[name](args)
    calibration = calibrate_onnx(
        path, calib_batches, trt_version=TRT_VERSION, num_threads=args.threads
    )
    n_calib = sum(len(next(iter(b.values()))) for b in calib_batches)
    t_cal = time.perf_counter() - t0
    fp32, reference = evaluate(path, None)
    rows = [{"algorithm": "fp32", **fp32, **evaluate_self(fp32, name)}]
    seen: dict[tuple, str] = {}
    results: dict[str, dict] = {}
    for spec in args.algorithms:
        t1 = time.perf_counter()
        # the scale pipeline of 'calibkit calibrate', 'select' and 'qdq --stats'
        amax = select_scales(
            calibration.histograms,
            spec,
            graph=calibration.settings.graph,
            trt_version=TRT_VERSION,
            share_scales=args.sharing,
        ).tensor_amax
        key = tuple(sorted(amax.items()))
        if key in seen:
            rows.append({"algorithm": spec, **results[seen[key]], "note": f"= {seen[key]}"})
            continue
        scales = {n: scale_from_amax(a) for n, a in amax.items() if math.isfinite(a) and a > 0}
        model, report = to_qdq(path, scales)
        metrics, _ = evaluate(model, reference)
        seen[key], results[spec] = spec, metrics
        rows.append(
            {
                "algorithm": spec,
                **metrics,
                "q_tensors": len(report.activations),
                "seconds": round(time.perf_counter() - t1, 1),
            }
        )
    return {
        "model": name,
        "onnx": str(path),
        "calibration": f"{n_calib} samples, {len(calibration.histograms)} tensors",
        "evaluation": desc,
        "seconds": round(time.perf_counter() - t0, 1),
        "calibration_seconds": round(t_cal, 1),
        "rows": rows,
    }


def evaluate_self(fp32: dict, name: str) -> dict:
    """FP32 against itself: agreement 1 and cosine 1 by definition (shown for the table)."""
    if name == "fashion":
        return {"top1_agree": 1.0}
    if name == "efficientnet":
        return {"top1_agree": 1.0, "in_fp32_top5": 1.0, "logit_cosine": 1.0}
    return {"emb_cosine": 1.0, "emb_cosine_min": 1.0}


def format_result(result: dict) -> str:
    """Return a Markdown table of one model's rows."""
    rows: Sequence[dict] = result["rows"]
    metrics = [k for k in rows[0] if k != "algorithm"]
    metrics += [k for r in rows for k in r if k not in metrics and k not in ("algorithm",)]
    metrics = [m for m in metrics if m not in ("q_tensors", "seconds", "note")] + ["note"]
    lines = [
        f"### {result['model']}: calibration {result['calibration']}; evaluation "
        f"{result['evaluation']} ({result['seconds']} s)",
        "",
        "| algorithm | " + " | ".join(metrics) + " |",
        "|---" * (len(metrics) + 1) + "|",
    ]
    for r in rows:
        cells = []
        for m in metrics:
            v = r.get(m, "")
            cells.append(f"{v:.4f}" if isinstance(v, float) else str(v))
        lines.append(f"| {r['algorithm']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="fashion,efficientnet,minilm")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--calib", type=int, help="calibration samples (efficientnet, minilm)")
    parser.add_argument("--eval", type=int, help="evaluation samples")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--sharing", default="trt", help="scale-sharing rules: trt (default), none")
    parser.add_argument("--json", help="write all results as JSON")
    args = parser.parse_args(argv)
    args.algorithms = [s for s in args.algorithms.split(",") if s]
    results = []
    for name in args.models.split(","):
        results.append(run_task(name, args))
        print(format_result(results[-1]), flush=True)
        print(flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
