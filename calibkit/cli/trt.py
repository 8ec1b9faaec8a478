"""``calibkit trt``: build with TensorRT (8.6-10.x) and cross-check its own calibration."""

from __future__ import annotations

import logging
import sys

from ..atomic import check_outputs
from ..errors import CalibkitError
from .argtypes import non_negative_float, positive_int
from .calibrate import add_data_option

logger = logging.getLogger(__name__)


def _add_trt(sub) -> None:
    trt = sub.add_parser(
        "trt",
        help="build with TensorRT <= 10 from a calibkit cache, or cross-check TensorRT's own",
        description="Needs TensorRT 8.6-10.x and, to record, pycuda, cuda-python or cupy "
        "(TensorRT 11: use calibkit qdq).",
    )
    verbs = trt.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = verbs.add_parser("build", help=(_cmd_trt_build.__doc__ or "").splitlines()[0])
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--cache", required=True, help="calibration cache (any TensorRT version)")
    p.add_argument("-o", "--output", required=True, help="engine file to write")
    p.add_argument(
        "-a",
        "--algorithm",
        help="calibrator to serve the cache through (default: the cache header's algorithm)",
    )
    p.add_argument(
        "--dynamic-ranges",
        action="store_true",
        help="set ITensor.set_dynamic_range(-amax, amax) instead of serving the cache",
    )
    p.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=1x3x224x224",
        help="shape of an input with dynamic dimensions (repeatable)",
    )
    p.add_argument("--fp16", action="store_true", help="also allow FP16 kernels")
    _add_trt_common(p)
    p.set_defaults(func=_cmd_trt_build)
    p = verbs.add_parser("crosscheck", help=(_cmd_trt_crosscheck.__doc__ or "").splitlines()[0])
    p.add_argument("model", metavar="MODEL.onnx")
    add_data_option(p, required=True, help="calibration data (as for calibkit calibrate)")
    p.add_argument(
        "-a", "--algorithm", default="entropy2", help="entropy2, entropy, minmax, legacy"
    )
    p.add_argument(
        "--rtol",
        type=non_negative_float,
        default=1e-6,
        help="max relative scale difference (default 1e-6)",
    )
    p.add_argument("--trt-cache", default="trt.cache", help="where TensorRT's cache goes")
    p.add_argument("--calibkit-cache", default="calibkit.cache", help="where calibkit's goes")
    p.add_argument("--batch-size", type=positive_int, help="samples per batch")
    p.add_argument("--max-samples", type=positive_int, help="stop after this many samples")
    p.add_argument("--preprocess", help="image preprocessing preset (folder of images)")
    # input shapes come from the data: TensorRT calibrates at the first batch's shapes
    _add_trt_common(p)
    p.set_defaults(func=_cmd_trt_crosscheck)


def _add_trt_common(p) -> None:
    p.add_argument(
        "--device",
        default="auto",
        choices=("auto", "pycuda", "cuda-python", "cupy"),
        help="CUDA memory library for calibration batches",
    )


def _trt_shapes(items) -> dict:
    shapes = {}
    for item in items:
        name, _, dims = item.rpartition("=")
        try:
            shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            name = ""
        if not name:
            msg = f"bad --shape {item!r}; expected NAME=1x3x224x224"
            raise CalibkitError(msg)
    return shapes


def _cmd_trt_build(args) -> int:
    """Build an INT8 TensorRT engine that uses the scales of a calibkit (or any) cache."""
    from ..atomic import write_atomic
    from ..cache.format import read_cache
    from ..trt.adapter import algorithm_of, build_engine, import_tensorrt, make_calibrator

    import_tensorrt()  # first, so that a missing TensorRT is the one error reported
    check_outputs(args.output)
    shapes = _trt_shapes(args.shape)
    cache = read_cache(args.cache)
    if args.dynamic_ranges:
        engine = build_engine(args.model, dynamic_ranges=cache, shapes=shapes, fp16=args.fp16)
    else:
        calibrator = make_calibrator(args.algorithm or algorithm_of(cache), cache=cache)
        engine = build_engine(args.model, calibrator=calibrator, shapes=shapes, fp16=args.fp16)
    write_atomic(args.output, engine)
    print(
        f"wrote {args.output} ({len(engine)} bytes, {len(cache.scales)} scales from {args.cache})"
    )
    return 0


def _cmd_trt_crosscheck(args) -> int:
    """Run TensorRT's calibrator and calibkit's on the same batches and diff the two caches."""
    from ..trt.adapter import crosscheck, import_tensorrt

    import_tensorrt()
    check_outputs(args.trt_cache, args.calibkit_cache)
    result = crosscheck(
        args.model,
        args.data,
        algorithm=args.algorithm,
        batch_size=args.batch_size,
        max_samples=args.max_samples,
        preprocess=args.preprocess,
        device=args.device,
        trt_cache=args.trt_cache,
        calibkit_cache=args.calibkit_cache,
    )
    print(
        f"a = TensorRT {sys.modules['tensorrt'].__version__} ({args.trt_cache}), "
        f"b = calibkit ({args.calibkit_cache}); {result.num_batches} identical batches"
    )
    # the same report as `calibkit cache diff`; tensors only one side has do not fail
    argv = ["cache", "diff", args.trt_cache, args.calibkit_cache, "--ignore-missing"]
    argv += ["--rtol", repr(args.rtol), "--stats", str(result.stats_path)]
    from . import build_parser

    diff_args = build_parser().parse_args(argv)
    return diff_args.func(diff_args)


def register(sub) -> None:
    """Add this group's sub-commands to `sub` (an argparse subparsers object)."""
    _add_trt(sub)
