"""The ``calibkit`` command line: ``main(argv) -> int`` and one plain function per sub-command.

Sub-commands hold no logic: they parse, call the library, and print. Heavy imports (onnx,
onnxruntime, tensorrt, matplotlib) stay inside the sub-command that needs them, so ``--help``
is fast. A ``CalibkitError`` becomes one stderr line and exit status 1, with no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .errors import CalibkitError

logger = logging.getLogger(__name__)


_SECTIONS: list = []  # functions (subparsers) -> None; each section below appends its own

# --- sub-command sections: each block registers its parser(s) and handler(s) ---------------
# (one section per feature, so that features can be edited independently)


# >>> section: calibrate / select (core)
def _add_calibrate(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="compute a TensorRT calibration cache from recorded activations or an ONNX model",
        description=(
            "Compute the calibration cache TensorRT's calibrator would write. SOURCE is an .npz "
            "of recorded activations (key = tensor name, first axis = calibration batch, in "
            "order) or an ONNX model (with --data)."
        ),
    )
    p.add_argument("source", metavar="SOURCE", help="activations .npz, or MODEL.onnx")
    p.add_argument(
        "-a",
        "--algorithm",
        default="entropy2",
        help=(
            "entropy2 (default), entropy, minmax, percentile:<p>, legacy:<quantile>:<cutoff>, "
            "mse; entropy variants as entropy2:<preset or key=value,...>"
        ),
    )
    p.add_argument(
        "--trt-version",
        required=True,
        help="TensorRT version the cache is for, e.g. 8.6.1 or 10.16 (it is in the header)",
    )
    p.add_argument("-o", "--output", required=True, help="cache file to write")
    p.add_argument(
        "--num-bins", type=int, default=2048, help="histogram bins per tensor (TensorRT: 2048)"
    )
    p.add_argument(
        "--save-histograms",
        metavar="STATS.npz",
        help="also save every histogram, so 'calibkit select' can recompute other algorithms",
    )
    p.add_argument(
        "--nan",
        choices=("raise", "skip"),
        default="raise",
        help="NaN in an activation: stop with an error (default) or count and skip it",
    )
    _CALIBRATE_EXTENSIONS.append(p)
    p.set_defaults(func=_cmd_calibrate)


_CALIBRATE_EXTENSIONS: list = []  # the calibrate parser, for sections that add options to it
_CALIBRATE_HANDLERS: dict = {}  # source suffix -> handler(args) for other SOURCE kinds


def _cmd_calibrate(args) -> int:
    """Compute a TensorRT calibration cache from recorded activations or an ONNX model."""
    from pathlib import Path

    from .activations import iter_recorded_batches
    from .cache import CalibrationCache, write_cache
    from .collect import HistogramCollector
    from .selectors import compute_amax, make_selector
    from .stats import save_stats

    suffix = Path(args.source).suffix.lower()
    if suffix in _CALIBRATE_HANDLERS:
        return _CALIBRATE_HANDLERS[suffix](args)
    if suffix != ".npz":
        kinds = ", ".join(sorted({".npz", *_CALIBRATE_HANDLERS}))
        msg = f"{args.source}: unsupported source; expected one of {kinds}"
        raise CalibkitError(msg)
    try:
        selector = make_selector(args.algorithm)
    except ValueError as err:
        raise CalibkitError(str(err)) from err
    collector = HistogramCollector(args.num_bins, nan_policy=args.nan)
    for batch in iter_recorded_batches(args.source):
        collector.update(batch)
    amax = compute_amax(collector.histograms_, selector)
    legacy = (
        {"quantile": selector.quantile, "regression_cutoff": selector.regression_cutoff}
        if selector.trt_algorithm == "LegacyCalibration"
        else {}
    )
    cache = CalibrationCache.from_amax(
        amax,
        trt_version=None if legacy else args.trt_version,
        algorithm=selector.trt_algorithm,
        **legacy,
    )
    write_cache(args.output, cache)
    if args.save_histograms:
        settings = {
            "source": str(args.source),
            "algorithm": selector.spec,
            "trt_version": args.trt_version,
            "num_bins": args.num_bins,
            "num_batches": collector.n_batches_,
        }
        save_stats(args.save_histograms, collector.histograms_, settings=settings)
    print(
        f"{args.output}: {len(amax)} tensors from {collector.n_batches_} batches "
        f"({selector.spec}, {cache.to_bytes().splitlines()[0].decode()})"
    )
    return 0


_SECTIONS.append(_add_calibrate)
# <<< section: calibrate / select (core)

# >>> section: cache
# <<< section: cache


# >>> section: qdq
def _add_qdq(sub) -> None:
    p = sub.add_parser(
        "qdq",
        help=_cmd_qdq.__doc__.splitlines()[0],
        description="Insert QuantizeLinear/DequantizeLinear pairs (TensorRT 11 explicit INT8) "
        "with the scales of a TensorRT cache or of saved histograms. See docs/qdq.md.",
    )
    p.add_argument("model", help="float ONNX model")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cache", help="TensorRT calibration cache (any version)")
    src.add_argument("--stats", help="histograms saved with --save-histograms (.npz)")
    p.add_argument("--algorithm", help="selector for --stats, e.g. entropy2, percentile:99.99")
    p.add_argument("-o", "--output", required=True, help="Q/DQ model to write")
    p.add_argument("--exclude-nodes", metavar="REGEX", help="keep nodes whose name matches float")
    p.add_argument(
        "--op-types",
        nargs="+",
        metavar="OP",
        help="op types whose inputs are quantized (default: Conv ConvTranspose Gemm MatMul Add "
        "MaxPool AveragePool GlobalAveragePool; Concat is opt-in)",
    )
    p.add_argument(
        "--inherit-scales",
        action="store_true",
        help="give a tensor missing from the cache the scale of its Reshape/Flatten/... input",
    )
    p.add_argument("--no-weights", action="store_true", help="do not add weight Q/DQ")
    p.add_argument("--report", help="write what was and was not quantized, and why (JSON)")
    p.set_defaults(func=_cmd_qdq)

    r = sub.add_parser(
        "qdq-to-cache",
        help=_cmd_qdq_to_cache.__doc__.splitlines()[0],
        description="Read the activation scales of a Q/DQ model into a TensorRT <= 10 cache "
        "(as NVIDIA's qdq-translator does) and optionally write the model without Q/DQ.",
    )
    r.add_argument("model", help="ONNX model with Q/DQ nodes")
    r.add_argument("--trt-version", required=True, help="TensorRT that reads the cache, e.g. 8.6")
    r.add_argument("-o", "--output", required=True, help="calibration cache to write")
    r.add_argument(
        "--algorithm",
        help="cache header word (default: recorded by calibkit qdq, else EntropyCalibration2)",
    )
    r.add_argument("--float-model", help="also write the model with every Q/DQ removed")
    r.set_defaults(func=_cmd_qdq_to_cache)


def _cmd_qdq(args: argparse.Namespace) -> int:
    """Write a Q/DQ ONNX model from a TensorRT cache or saved histograms."""
    from .qdq import DEFAULT_OP_TYPES, write_qdq

    if args.cache is not None:
        from .cache import read_cache

        if args.algorithm is not None:
            msg = "--algorithm applies to --stats; a cache already holds its scales"
            raise CalibkitError(msg)
        source = read_cache(args.cache)
    else:
        from .scale import scale_from_amax
        from .selectors import compute_amax, make_selector
        from .stats import load_stats

        if args.algorithm is None:
            msg = "--stats needs --algorithm (e.g. entropy2)"
            raise CalibkitError(msg)
        selector = make_selector(args.algorithm)
        amax = compute_amax(load_stats(args.stats).histograms, selector)
        source = {name: scale_from_amax(a) for name, a in amax.items()}
    options = {}
    if args.stats is not None:
        options = {"source_header": f"stats {args.stats} {selector.spec}"}
        options["algorithm"] = selector.trt_algorithm
    report = write_qdq(
        args.output,
        args.model,
        source,
        report_path=args.report,
        exclude_nodes=args.exclude_nodes,
        op_types=args.op_types or DEFAULT_OP_TYPES,
        inherit_scales=args.inherit_scales,
        quantize_weights=not args.no_weights,
        **options,
    )
    lines = [f"{args.output}: {report.summary()}"]
    lines += [f"  float: {t.name}: {t.reason}" for t in report.float_tensors]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _cmd_qdq_to_cache(args: argparse.Namespace) -> int:
    """Write a TensorRT calibration cache from the scales of a Q/DQ ONNX model."""
    from .cache import write_cache
    from .qdq import save_model
    from .qdq_reverse import qdq_to_cache

    cache, float_model = qdq_to_cache(
        args.model, trt_version=args.trt_version, algorithm=args.algorithm
    )
    write_cache(args.output, cache)
    sys.stdout.write(f"{args.output}: {len(cache.scales)} activation scales ({cache.algorithm})\n")
    if args.float_model is not None:
        save_model(args.float_model, float_model)
        sys.stdout.write(f"{args.float_model}: float model without Q/DQ\n")
    return 0


_SECTIONS.append(_add_qdq)
# <<< section: qdq


# >>> section: trt
def _add_trt(sub) -> None:
    trt = sub.add_parser(
        "trt",
        help="build with TensorRT <= 10 from a calibkit cache, or cross-check TensorRT's own",
        description="Needs calibkit[trt] and TensorRT 8.6-10.x (TensorRT 11: use calibkit qdq).",
    )
    verbs = trt.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = verbs.add_parser("build", help=_cmd_trt_build.__doc__.splitlines()[0])
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
    _add_trt_common(p)
    p.add_argument("--fp16", action="store_true", help="also allow FP16 kernels")
    p.set_defaults(func=_cmd_trt_build)
    p = verbs.add_parser("crosscheck", help=_cmd_trt_crosscheck.__doc__.splitlines()[0])
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--data", required=True, help="calibration data (as for calibkit calibrate)")
    p.add_argument(
        "-a", "--algorithm", default="entropy2", help="entropy2, entropy, minmax, legacy"
    )
    p.add_argument("--rtol", type=float, default=1e-6, help="max relative scale difference")
    p.add_argument("--trt-cache", default="trt.cache", help="where TensorRT's cache goes")
    p.add_argument("--calibkit-cache", default="calibkit.cache", help="where calibkit's goes")
    p.add_argument("--batch-size", type=int, help="samples per batch")
    p.add_argument("--max-samples", type=int, help="stop after this many samples")
    p.add_argument("--preprocess", help="image preprocessing preset (folder of images)")
    _add_trt_common(p)
    p.set_defaults(func=_cmd_trt_crosscheck)


def _add_trt_common(p) -> None:
    p.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=1x3x224x224",
        help="shape of an input with dynamic dimensions (repeatable)",
    )
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
    from .cache import read_cache, write_atomic
    from .trt import algorithm_of, build_engine, import_tensorrt, make_calibrator

    import_tensorrt()  # first, so that a missing TensorRT is the one error reported
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
    from .trt import crosscheck, import_tensorrt

    import_tensorrt()
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
    diff, summary = result.diff, result.diff.summary()
    print(f"TensorRT: {args.trt_cache}  calibkit: {args.calibkit_cache}  ", end="")
    print(f"({result.num_batches} identical batches)")
    print(f"{'tensor':<48} {'TensorRT scale':>15} {'calibkit scale':>15} {'rel':>9} {'ulps':>6}")
    for row in sorted(diff.rows, key=lambda r: r.rel, reverse=True)[:20]:
        scales = f"{row.scale_a:>15.8g} {row.scale_b:>15.8g}"
        print(f"{row.name[-48:]:<48} {scales} {row.rel:>9.2e} {row.ulps:>6}")
    print(
        f"{summary['equal']}/{summary['common']} common tensors bit-equal, max rel "
        f"{summary['max_rel']:.3g}, median {summary['median_rel']:.3g}; only TensorRT: "
        f"{summary['only_a']}, only calibkit: {summary['only_b']}"
    )
    over = diff.exceeding(args.rtol)
    if over:
        print(f"{len(over)} tensors differ by more than --rtol {args.rtol:g}", file=sys.stderr)
        return 1
    return 0


_SECTIONS.append(_add_trt)
# <<< section: trt

# >>> section: research (compare / report / stability)
# <<< section: research (compare / report / stability)


def build_parser() -> argparse.ArgumentParser:
    """Return the full argument parser (used by ``main`` and by the docs)."""
    parser = argparse.ArgumentParser(
        prog="calibkit",
        description="TensorRT INT8 calibration on the CPU: calibrate, inspect caches, export Q/DQ.",
    )
    parser.add_argument("--version", action="version", version=f"calibkit {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _SECTIONS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the calibkit command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except CalibkitError as err:
        prog = f"calibkit {args.command}" if args.command else "calibkit"
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
        print(f"calibkit {args.command}: error: {err}", file=sys.stderr)
        return 1
