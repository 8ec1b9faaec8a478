"""``calibkit qdq`` and ``calibkit qdq-to-cache``: explicit Q/DQ ONNX models."""

from __future__ import annotations

import argparse
import logging
import sys

from ..atomic import atomic_outputs, check_outputs
from ..errors import CalibkitError
from ._warnings import with_warnings_shown
from .argtypes import regex
from .calibrate import add_share_option

logger = logging.getLogger(__name__)


def _add_qdq(sub) -> None:
    p = sub.add_parser(
        "qdq",
        help=(_cmd_qdq.__doc__ or "").splitlines()[0],
        description="Insert QuantizeLinear/DequantizeLinear pairs (TensorRT 11 explicit INT8) "
        "with the scales of a TensorRT cache or of saved histograms. See docs/qdq.md.",
    )
    p.add_argument("model", help="float ONNX model")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cache", help="TensorRT calibration cache (any version)")
    src.add_argument("--stats", help="histograms saved with --save-histograms (.npz)")
    p.add_argument("--algorithm", help="selector for --stats, e.g. entropy2, percentile:99.99")
    add_share_option(p, " of --stats (a cache already holds its shared scales)")
    p.add_argument(
        "--header-algorithm",
        choices=("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration"),
        help=(
            "with --stats: the TensorRT calibrator recorded in the model's metadata for "
            "qdq-to-cache (default: the one the algorithm emulates, else EntropyCalibration2)"
        ),
    )
    p.add_argument("-o", "--output", required=True, help="Q/DQ model to write")
    p.add_argument(
        "--exclude-nodes", type=regex, metavar="REGEX", help="keep nodes whose name matches float"
    )
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
    p.add_argument(
        "--shift-numeric-names",
        type=int,
        metavar="K",
        help="rename numeric cache names n to n+K (a cache from another export; see the report)",
    )
    p.add_argument("--no-weights", action="store_true", help="do not add weight Q/DQ")
    p.add_argument("--report", help="write what was and was not quantized, and why (JSON)")
    p.set_defaults(func=_cmd_qdq)

    r = sub.add_parser(
        "qdq-to-cache",
        help=(_cmd_qdq_to_cache.__doc__ or "").splitlines()[0],
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


@with_warnings_shown("qdq")
def _cmd_qdq(args: argparse.Namespace) -> int:
    """Write a Q/DQ ONNX model from a TensorRT cache or saved histograms."""
    from ..onnx.qdq import DEFAULT_OP_TYPES, cache_header, shift_numeric_names, write_qdq

    check_outputs(args.output, args.report)  # before any work or write
    if args.cache is not None:
        from ..cache.format import read_cache

        given = [o for o in ("algorithm", "header_algorithm") if getattr(args, o)]
        given += ["share_scales"] if args.share_scales != "trt" else []
        if given:
            option = "--" + given[0].replace("_", "-")
            msg = f"{option} applies to --stats; a cache already holds its scales"
            raise CalibkitError(msg)
        cache = read_cache(args.cache)
        scales, header, algorithm = cache.scales, cache_header(cache), cache.algorithm
        sharing = None
    else:
        from ..pipeline import scales_from_stats

        if args.algorithm is None:
            msg = "--stats needs --algorithm (e.g. entropy2)"
            raise CalibkitError(msg)
        # the same pipeline as 'calibkit select': the scales its cache would hold
        selection = scales_from_stats(
            args.stats,
            args.algorithm,
            share_scales=args.share_scales,
            header_algorithm=args.header_algorithm,
        )
        algorithm = selection.header_algorithm
        scales = selection.scales()
        header, sharing = f"stats {args.stats} {selection.selector.spec}", selection
    if args.shift_numeric_names is not None:
        scales = shift_numeric_names(scales, args.shift_numeric_names)
    with atomic_outputs(args.output, args.report):  # the model and its report, or neither
        report = write_qdq(
            args.output,
            args.model,
            scales,
            report_path=args.report,
            exclude_nodes=args.exclude_nodes,
            op_types=args.op_types or DEFAULT_OP_TYPES,
            inherit_scales=args.inherit_scales,
            quantize_weights=not args.no_weights,
            source_header=header,
            algorithm=algorithm,
        )
    lines = [f"{args.output}: {report.summary()}"]
    lines += [f"  float: {t.name}: {t.reason}" for t in report.float_tensors]
    lines += [f"  warning: {w}" for w in report.warnings]
    if sharing is not None:
        lines.append(sharing.describe_sharing())
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _cmd_qdq_to_cache(args: argparse.Namespace) -> int:
    """Write a TensorRT calibration cache from the scales of a Q/DQ ONNX model."""
    from ..cache.format import write_cache
    from ..onnx.qdq import save_model
    from ..onnx.reverse import qdq_to_cache

    with atomic_outputs(args.output, args.float_model):  # the cache and the model, or neither
        cache, float_model = qdq_to_cache(
            args.model, trt_version=args.trt_version, algorithm=args.algorithm
        )
        write_cache(args.output, cache)
        if args.float_model is not None:
            save_model(args.float_model, float_model)
    sys.stdout.write(f"{args.output}: {len(cache.scales)} activation scales ({cache.algorithm})\n")
    if args.float_model is not None:
        sys.stdout.write(f"{args.float_model}: float model without Q/DQ\n")
    return 0


def register(sub) -> None:
    """Add this group's sub-commands to `sub` (an argparse subparsers object)."""
    _add_qdq(sub)
