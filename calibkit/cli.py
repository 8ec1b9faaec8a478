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
