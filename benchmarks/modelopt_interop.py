"""ModelOpt and calibkit caches, both ways, in ModelOpt's own environment: docs/qdq.md §ModelOpt.

NVIDIA ModelOpt (``nvidia-modelopt[onnx]``) pulls its own onnxruntime build, so it runs from a
separate virtual environment, never calibkit's (and not in ``.ci/run``)::

    python3 -m venv /tmp/modelopt && /tmp/modelopt/bin/pip install 'nvidia-modelopt[onnx]'
    python benchmarks/modelopt_interop.py --modelopt-python /tmp/modelopt/bin/python

On the bundled Fashion-MNIST model it

1. calibrates with calibkit (entropy2, TensorRT 10.16 cache);
2. has ModelOpt quantize the model from that cache (``--calibration_cache_path``), once with its
   default float16 scales and once with ``--high_precision_dtype fp32``;
3. reads each Q/DQ model back with calibkit (``qdq-to-cache``) and compares every activation
   scale with the cache: bit for bit, or the float16 rounding of the cache's scale.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import calibkit as ck
from calibkit.onnx.reverse import from_qdq

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "fashion_mnist" / "model.onnx"
DATA = ROOT / "examples" / "fashion_mnist" / "calib.npz"


def _modelopt(python: str, cache: Path, dtype: str, out: Path) -> None:
    cmd = [python, "-m", "modelopt.onnx.quantization", "--onnx_path", str(MODEL)]
    cmd += ["--calibration_cache_path", str(cache)]
    cmd += ["--high_precision_dtype", dtype, "--calibration_eps", "cpu", "--output_path", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"ModelOpt failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modelopt-python", required=True, help="python of ModelOpt's venv")
    args = parser.parse_args(argv)
    version = subprocess.run(
        [
            args.modelopt_python,
            "-c",
            "import modelopt, onnxruntime; print(modelopt.__version__, onnxruntime.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    print(f"ModelOpt {version[0]} (its onnxruntime {version[1]}), calibkit {ck.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache_path = tmp / "fashion.cache"
        result = ck.calibrate_onnx(str(MODEL), str(DATA), trt_version="10.16")
        result.write(cache_path, save_stats_file=False)
        cache = ck.read_cache(cache_path)
        print(f"calibkit cache: {len(cache.scales)} tensors ({cache.algorithm})")
        print(
            f"{'ModelOpt scales':<16} {'Q/DQ tensors':>12} {'bit-exact':>10} "
            f"{'= fl16(scale)':>13} {'max rel diff':>13}"
        )
        for dtype in ("fp16", "fp32"):
            out = tmp / f"fashion.{dtype}.qdq.onnx"
            _modelopt(args.modelopt_python, cache_path, dtype, out)
            scales, _ = from_qdq(str(out))
            common = [n for n in scales if n in cache.scales]
            exact = sum(scales[n] == cache.scales[n] for n in common)
            fl16 = sum(scales[n] == np.float32(np.float16(cache.scales[n])) for n in common)
            rel = max(
                (abs(float(scales[n]) / float(cache.scales[n]) - 1) for n in common), default=0
            )
            print(f"{dtype:<16} {len(common):>12} {exact:>10} {fl16:>13} {rel:>13.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
