"""ONNX calibration on the CPU: calibkit against onnxruntime, speed and peak memory (issue #4).

Run (from the repository root)::

    CALIBKIT_MODEL_CACHE=/path/to/models python benchmarks/onnx_calibration.py \
        [--samples 200] [--rss-samples 500] [--baseline-samples 32] [--batch-size 8]

The model is EfficientNet-Lite0 from benchmarks/models.py (exported once by
``bash benchmarks/prepare_models.sh``) on random crops of real photos; without it (``--synthetic``
or no torch) a synthetic CNN of similar activation volume on random data. Every measurement runs
in its own subprocess, so peak RSS is that of one job; all rows come from the same run.

Rows:
1. calibkit ``calibrate_onnx`` (entropy2, 2048 bins) on `--samples` samples: total time, and its
   own cost (histogram collection + selection) against the onnxruntime inference time inside the
   same run (issue target: <= 10 %).
2. calibkit on `--rss-samples` samples read from a folder of per-sample files: peak RSS
   (target <= 2 GB; memory must not grow with the number of samples).
3. calibkit and onnxruntime's ``HistogramCalibrater`` (Entropy, ``num_bins=2048`` through
   ``extra_options``, as ``quantize_static`` drives it: one ``collect_data`` over all batches) on
   the same `--baseline-samples` samples: time and peak RSS ratios (targets >= 10x faster,
   <= 1/5 of the RSS). onnxruntime keeps every batch's activations until ``collect_data`` ends
   (~50 MB per EfficientNet-Lite0 sample), so its sample count is kept small by default.
   Plain onnxruntime inference of the unmodified model on the same samples, for scale.
4. onnxruntime's peak RSS at half the baseline samples too: the growth per sample, and the RSS
   it would need for `--samples` (extrapolated, labelled so), against calibkit's measured one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TRT_VERSION = "10.16"


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --- inputs ---------------------------------------------------------------------------------------


def _models_module():
    spec = importlib.util.spec_from_file_location(
        "calibkit_bench_models", ROOT / "benchmarks/models.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_cnn(path: Path, rng) -> None:
    """A plain CNN with EfficientNet-Lite0's activation volume (~50 MB per 224x224 sample)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, prev, channels = [], [], "image", 3
    plan = [(32, 2)] + [(32, 1)] * 3 + [(64, 2)] + [(64, 1)] * 3 + [(128, 2)] + [(128, 1)] * 3
    for i, (out, stride) in enumerate(plan):
        w = rng.normal(0, (2 / (9 * channels)) ** 0.5, (out, channels, 3, 3)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(out, np.float32), f"b{i}"),
        ]
        nodes.append(
            helper.make_node(
                "Conv", [prev, f"w{i}", f"b{i}"], [f"conv{i}"], pads=[1] * 4, strides=[stride] * 2
            )
        )
        nodes.append(helper.make_node("Clip", [f"conv{i}", "zero", "six"], [f"relu6_{i}"]))
        prev, channels = f"relu6_{i}", out
    inits += [
        numpy_helper.from_array(np.array(0, np.float32), "zero"),
        numpy_helper.from_array(np.array(6, np.float32), "six"),
    ]
    nodes.append(helper.make_node("GlobalAveragePool", [prev], ["pool"]))
    nodes.append(helper.make_node("Flatten", ["pool"], ["logits"]))
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 224, 224])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)
    model = helper.make_model(
        helper.make_graph(nodes, "synthetic", [x], [y], inits),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    onnx.save(model, str(path))


def prepare(args, work: Path) -> tuple[Path, str]:
    """Write the model path and the inputs (one .npy per sample) into `work`."""
    n = max(args.samples, args.rss_samples, args.baseline_samples)
    rng = np.random.default_rng(0)
    model, kind = None, "synthetic CNN, random inputs"
    if not args.synthetic:
        try:
            models = _models_module()
            model = models.efficientnet_lite0_onnx()
            x = models.efficientnet_inputs("calib", n, seed=0)
            kind = "EfficientNet-Lite0, real-photo crops"
        except (ImportError, OSError, subprocess.CalledProcessError) as err:
            print(
                f"(EfficientNet-Lite0 unavailable: {err}; using the synthetic CNN)", file=sys.stderr
            )
    if model is None:
        model = work / "synthetic.onnx"
        synthetic_cnn(model, rng)
        x = rng.normal(size=(n, 3, 224, 224)).astype(np.float32)
    folder = work / "samples"
    folder.mkdir()
    for i, sample in enumerate(x):
        np.save(folder / f"{i:05d}.npy", sample)
    return Path(model), kind


# --- child jobs (one per subprocess) --------------------------------------------------------------


def _subset(folder: Path, n: int, work: Path) -> Path:
    """A folder holding links to the first `n` samples."""
    sub = work / f"first{n}"
    if not sub.exists():
        sub.mkdir()
        for f in sorted(folder.iterdir())[:n]:
            (sub / f.name).symlink_to(f)
    return sub


def _batches(folder: Path, batch_size: int):
    files = sorted(folder.iterdir())
    for start in range(0, len(files), batch_size):
        yield {"image": np.stack([np.load(f) for f in files[start : start + batch_size]])}


def child_calibkit(model: Path, data: Path, batch_size: int, threads: int) -> dict:
    from calibkit.onnx.calibrate import calibrate_onnx

    t0 = time.perf_counter()
    result = calibrate_onnx(
        model, data, trt_version=TRT_VERSION, batch_size=batch_size, num_threads=threads
    )
    total = time.perf_counter() - t0
    return {
        "total": total,
        **{k: v for k, v in result.seconds.items() if k != "total"},
        "tensors": len(result.amax),
        "samples": result.settings.num_samples,
    }


def child_onnxruntime_calibrater(model: Path, data: Path, batch_size: int, threads: int) -> dict:
    from onnxruntime.quantization.calibrate import (
        CalibrationDataReader,
        CalibrationMethod,
        create_calibrator,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = _batches(data, batch_size)

        def get_next(self):
            return next(self.it, None)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        calibrator = create_calibrator(
            str(model),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=CalibrationMethod.Entropy,
            extra_options={"num_bins": 2048, "num_quantized_bins": 128, "symmetric": True},
        )
        calibrator.collect_data(Reader())
        ranges = calibrator.compute_data()
    return {"total": time.perf_counter() - t0, "tensors": len(ranges.data)}


def child_inference(model: Path, data: Path, batch_size: int, threads: int) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    t0 = time.perf_counter()
    for batch in _batches(data, batch_size):
        session.run(None, batch)
    return {"total": time.perf_counter() - t0}


CHILDREN = {
    "calibkit": child_calibkit,
    "ort-calibrater": child_onnxruntime_calibrater,
    "inference": child_inference,
}


def run_child(job: str, model: Path, data: Path, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        job,
        str(model),
        str(data),
        str(args.batch_size),
        str(args.threads),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "NUMBA_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        sys.exit(f"{job} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- main -----------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        job, model, data, batch_size, threads = sys.argv[2:7]
        out = CHILDREN[job](Path(model), Path(data), int(batch_size), int(threads))
        print(json.dumps({**out, "rss_mib": _peak_rss_mib()}))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--rss-samples", type=int, default=500)
    p.add_argument("--baseline-samples", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--synthetic", action="store_true", help="use the synthetic CNN")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="calibkit-bench-") as tmp:
        work = Path(tmp)
        model, kind = prepare(args, work)
        samples = work / "samples"
        print(f"model: {kind} ({model.name}); batch size {args.batch_size}, ", end="")
        print(f"{args.threads} onnxruntime threads")
        main_run = run_child("calibkit", model, _subset(samples, args.samples, work), args)
        rss_run = run_child("calibkit", model, _subset(samples, args.rss_samples, work), args)
        base = _subset(samples, args.baseline_samples, work)
        ck_small = run_child("calibkit", model, base, args)
        ort_small = run_child("ort-calibrater", model, base, args)
        half = _subset(samples, args.baseline_samples // 2, work)
        ort_half = run_child("ort-calibrater", model, half, args)
        plain = run_child("inference", model, base, args)
    report(main_run, rss_run, ck_small, ort_small, plain)
    # onnxruntime's RSS grows linearly with the samples it holds: two points give the slope
    slope = (ort_small["rss_mib"] - ort_half["rss_mib"]) / (args.baseline_samples / 2)
    at_main = ort_small["rss_mib"] + slope * (main_run["samples"] - args.baseline_samples)
    print(f"4. onnxruntime HistogramCalibrater peak RSS grows {slope:.0f} MiB per sample ")
    print(f"   ({ort_half['rss_mib']:.0f} MiB for {args.baseline_samples // 2} samples, ", end="")
    print(f"{ort_small['rss_mib']:.0f} MiB for {args.baseline_samples}); extrapolated to ", end="")
    print(f"{main_run['samples']} samples: {at_main:.0f} MiB, against calibkit's measured ", end="")
    print(
        f"{main_run['rss_mib']:.0f} MiB (ratio {main_run['rss_mib'] / at_main:.2f}; not run: ",
        end="",
    )
    print("it would not fit beside the other jobs on this machine)")
    per_sample = (ort_small["total"] - ort_half["total"]) / (args.baseline_samples / 2)
    fixed = ort_small["total"] - per_sample * args.baseline_samples
    ort_at_main = fixed + per_sample * main_run["samples"]
    print(
        f"   its time: {fixed:.1f} s fixed (entropy search) + {per_sample:.2f} s per sample; ",
        end="",
    )
    print(
        f"extrapolated to {main_run['samples']} samples {ort_at_main:.0f} s against calibkit's ",
        end="",
    )
    print(f"measured {main_run['total']:.1f} s ({ort_at_main / main_run['total']:.1f}x)")


def report(main_run: dict, rss_run: dict, ck_small: dict, ort_small: dict, plain: dict) -> None:
    m = main_run
    own = m["collect"] + m["select"]
    print(
        f"\n1. calibkit, {m['samples']} samples, {m['tensors']} tensors: total {m['total']:.1f} s"
    )
    print(f"   = onnxruntime inference {m['inference']:.1f} s + histograms {m['collect']:.2f} s")
    print(f"   + entropy2 selection {m['select']:.2f} s + reading data and the rest")
    print(f"   calibkit's own cost / inference = {own / m['inference']:.1%}  (target <= 10 %)")
    print(f"2. calibkit peak RSS: {rss_run['rss_mib']:.0f} MiB for {rss_run['samples']} samples")
    print(f"   (target <= 2048), {m['rss_mib']:.0f} MiB for {m['samples']}, ", end="")
    print(f"{ck_small['rss_mib']:.0f} MiB for {ck_small['samples']}")
    print(f"3. the same {ck_small['samples']} samples, end to end, each in its own process:")
    rows = [
        ("job", "seconds", "peak RSS MiB", "tensors"),
        ("calibkit calibrate_onnx (entropy2, 2048 bins)", ck_small, ck_small["tensors"]),
        ("onnxruntime HistogramCalibrater (Entropy, 2048 bins)", ort_small, ort_small["tensors"]),
        ("onnxruntime inference only (unmodified model)", plain, "-"),
    ]
    rows[1:] = [
        (name, f"{r['total']:.1f}", f"{r['rss_mib']:.0f}", str(t)) for name, r, t in rows[1:]
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        print("   " + "  ".join(cells))
    speedup = ort_small["total"] / ck_small["total"]
    print(f"   speed-up {speedup:.1f}x (target >= 10x); ", end="")
    print(f"RSS ratio {ck_small['rss_mib'] / ort_small['rss_mib']:.2f} (target <= 0.20)")


if __name__ == "__main__":
    main()
