"""ONNX calibration on the CPU, end to end: calibkit against its peers, each in its own process.

Run (from the repository root)::

    CALIBKIT_MODEL_CACHE=/path/to/models python benchmarks/onnx_calibration.py \
        [--models efficientnet,minilm] [--samples 64,256] [--batch-size 8] [--modelopt PYTHON] \
        [--only inference,calibkit]

Models: EfficientNet-Lite0 on random crops of real photos and all-MiniLM-L6-v2 on real sentences
(benchmarks/models.py; ``bash benchmarks/prepare_models.sh`` exports them once). Every job runs
in its own subprocess on the same samples (saved once as .npz), so its peak RSS is its own; all
rows of a table come from the same run. One table per run, one row per job:

- onnxruntime inference of the unmodified model (the floor every calibrator pays);
- calibkit ``calibrate_onnx`` entropy2 (2048 bins): binning overlapped with inference (the
  default) and not overlapped; calibkit minmax without histograms (``histograms=False``, what
  ``calibrate --algorithm minmax --no-save-histograms`` does);
- onnxruntime's calibraters as ``quantize_static`` drives them: Entropy at its default 128 bins
  (one ``collect_data`` over all batches: every activation kept until the end) and streamed
  (``CalibStridedMinMax``: one ``collect_data`` per batch, the documented way to bound memory) at
  128 and 2048 bins; MinMax at its default and streamed;
- NVIDIA ModelOpt's ONNX PTQ (``modelopt.onnx.quantization.quantize``, int8, ``entropy`` and
  ``max``, CPU execution provider) when ``--modelopt`` names a Python that has it (it pins its own
  onnxruntime, so it lives in its own venv); ModelOpt also inserts Q/DQ nodes, so its time is an
  upper bound on its calibration.

Columns: seconds; own = calibkit's histogram + selection time / its inference time inside the
same run; x inference = job time / plain inference time; x calibkit = job time / calibkit
entropy2 (or minmax for min-max jobs) time; peak RSS in MiB.
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


def _models_module():
    spec = importlib.util.spec_from_file_location(
        "calibkit_bench_models", ROOT / "benchmarks/models.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepare(model: str, n: int, work: Path) -> tuple[Path, Path]:
    """Return the model path and an .npz of `n` samples keyed by input name."""
    models = _models_module()
    if model == "efficientnet":
        path, inputs = (
            models.efficientnet_lite0_onnx(),
            {"image": models.efficientnet_inputs("calib", n, seed=0)},
        )
    else:
        path, inputs = models.minilm_onnx(), models.minilm_inputs("calib", n, seed=0)
    data = work / f"{model}-{n}.npz"
    np.savez(data, **inputs)
    return Path(path), data


# --- child jobs (one per subprocess) --------------------------------------------------------------


def _batches(data: Path, batch_size: int) -> list[dict[str, np.ndarray]]:
    with np.load(data) as npz:
        arrays = {k: npz[k] for k in npz.files}
    n = len(next(iter(arrays.values())))
    return [{k: v[i : i + batch_size] for k, v in arrays.items()} for i in range(0, n, batch_size)]


def child_inference(model, data, batch_size, options):
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    batches = _batches(data, batch_size)
    t0 = time.perf_counter()
    for batch in batches:
        session.run(None, batch)
    return {"total": time.perf_counter() - t0}


def child_calibkit(model, data, batch_size, options):
    from calibkit.onnx.calibrate import calibrate_onnx

    t0 = time.perf_counter()
    result = calibrate_onnx(
        model,
        data,
        trt_version=TRT_VERSION,
        batch_size=batch_size,
        algorithm=options["algorithm"],
        histograms=options.get("histograms", True),
        overlap=options.get("overlap", True),
    )
    s = result.seconds
    return {
        "total": time.perf_counter() - t0,
        "own": (s["collect"] + s["select"]) / s["inference"],
        "tensors": len(result.amax),
    }


def child_onnxruntime(model, data, batch_size, options):
    from onnxruntime.quantization.calibrate import (
        CalibrationDataReader,
        CalibrationMethod,
        create_calibrator,
    )

    class Reader(CalibrationDataReader):
        def __init__(self, batches):
            self.it = iter(batches)

        def get_next(self):
            return next(self.it, None)

    batches = _batches(data, batch_size)
    method = getattr(CalibrationMethod, options["method"])
    extra = {"symmetric": True}
    if options.get("bins"):
        extra["num_bins"] = options["bins"]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        calibrator = create_calibrator(
            str(model),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=method,
            extra_options=extra,
        )
        if options.get("streamed"):  # quantize_static with CalibStridedMinMax=1 (batch)
            for batch in batches:
                calibrator.collect_data(Reader([batch]))
        else:
            calibrator.collect_data(Reader(batches))
        ranges = calibrator.compute_data()
    return {"total": time.perf_counter() - t0, "tensors": len(ranges.data)}


def child_modelopt(model, data, batch_size, options):
    from modelopt.onnx.quantization import quantize

    with np.load(data) as npz:
        arrays = {k: npz[k] for k in npz.files}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        quantize(
            str(model),
            quantize_mode="int8",
            calibration_data=arrays,
            calibration_method=options["method"],
            calibration_eps=["cpu"],
            output_path=str(Path(tmp) / "quantized.onnx"),
            log_level="ERROR",
        )
    return {"total": time.perf_counter() - t0}


CHILDREN = {
    "inference": child_inference,
    "calibkit": child_calibkit,
    "onnxruntime": child_onnxruntime,
    "modelopt": child_modelopt,
}


def run_child(python: str, job: str, model: Path, data: Path, batch_size: int, options) -> dict:
    cmd = [python, __file__, "--child", job, str(model), str(data), str(batch_size)]
    cmd.append(json.dumps(options))
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        lines = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()
        return {"error": lines[-1][:160]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- main -----------------------------------------------------------------------------------------

JOBS = [  # (label, child, options, compared with)
    ("onnxruntime inference only", "inference", {}, None),
    ("calibkit entropy2 (overlapped)", "calibkit", {"algorithm": "entropy2"}, None),
    (
        "calibkit entropy2 (not overlapped)",
        "calibkit",
        {"algorithm": "entropy2", "overlap": False},
        "entropy",
    ),
    (
        "calibkit minmax (no histograms)",
        "calibkit",
        {"algorithm": "minmax", "histograms": False},
        None,
    ),
    ("ORT Entropy, 128 bins (default)", "onnxruntime", {"method": "Entropy"}, "entropy"),
    (
        "ORT Entropy, 128 bins, streamed",
        "onnxruntime",
        {"method": "Entropy", "streamed": True},
        "entropy",
    ),
    (
        "ORT Entropy, 2048 bins, streamed",
        "onnxruntime",
        {"method": "Entropy", "bins": 2048, "streamed": True},
        "entropy",
    ),
    ("ORT MinMax (default)", "onnxruntime", {"method": "MinMax"}, "minmax"),
    ("ORT MinMax, streamed", "onnxruntime", {"method": "MinMax", "streamed": True}, "minmax"),
    ("ModelOpt ONNX PTQ entropy", "modelopt", {"method": "entropy"}, "entropy"),
    ("ModelOpt ONNX PTQ max", "modelopt", {"method": "max"}, "minmax"),
]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        job, model, data, batch_size, options = sys.argv[2:7]
        out = CHILDREN[job](Path(model), Path(data), int(batch_size), json.loads(options))
        print(json.dumps({**out, "rss_mib": _peak_rss_mib()}))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="efficientnet,minilm")
    p.add_argument("--samples", default="64,256", help="comma-separated sample counts")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--modelopt", metavar="PYTHON", help="a Python with nvidia-modelopt[onnx]")
    p.add_argument(
        "--only",
        metavar="WORDS",
        help="run only the jobs whose label contains one of these comma-separated words",
    )
    p.add_argument(
        "--max-default-samples",
        type=int,
        default=64,
        help="run onnxruntime's non-streamed defaults (every activation kept) up to this many",
    )
    args = p.parse_args()
    print(f"{os.cpu_count()} cores; batch size {args.batch_size}; each job in its own process")
    header = ("model", "samples", "job", "seconds", "own", "x inference", "x calibkit", "RSS MiB")
    rows = [header]
    with tempfile.TemporaryDirectory(prefix="calibkit-bench-") as tmp:
        for model_name in args.models.split(","):
            for n in map(int, args.samples.split(",")):
                model, data = prepare(model_name, n, Path(tmp))
                results = {}
                wanted = args.only.split(",") if args.only else [""]
                jobs = [j for j in JOBS if any(w in j[0] for w in wanted)]
                for label, job, options, _ in jobs:
                    if job == "modelopt" and not args.modelopt:
                        results[label] = {"error": "not run (no --modelopt PYTHON)"}
                        continue
                    if job == "onnxruntime" and not options.get("streamed"):
                        if n > args.max_default_samples:
                            results[label] = {"error": "not run: keeps every activation"}
                            continue
                    python = args.modelopt if job == "modelopt" else sys.executable
                    results[label] = run_child(python, job, model, data, args.batch_size, options)
                plain = results.get("onnxruntime inference only", {}).get("total")
                ref = {
                    "entropy": results.get("calibkit entropy2 (overlapped)", {}).get("total"),
                    "minmax": results.get("calibkit minmax (no histograms)", {}).get("total"),
                }
                for label, _, _, versus in jobs:
                    r = results[label]
                    if "error" in r:
                        rows.append((model_name, str(n), label, r["error"], "", "", "", ""))
                        continue
                    base = ref.get(versus) if versus else None
                    rows.append(
                        (
                            model_name,
                            str(n),
                            label,
                            f"{r['total']:.2f}",
                            f"{r['own']:.0%}" if "own" in r else "",
                            f"{r['total'] / plain:.2f}" if plain else "",
                            f"{r['total'] / base:.2f}" if base else "",
                            f"{r['rss_mib']:.0f}",
                        )
                    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print(
            "  ".join(
                c.ljust(w) if i < 3 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )


if __name__ == "__main__":
    main()
