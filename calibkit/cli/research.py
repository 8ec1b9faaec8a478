"""``calibkit compare``, ``report``, ``stability`` and ``sensitivity``: study scale algorithms."""

from __future__ import annotations

import json
import logging

from ..atomic import atomic_outputs, check_output_dir, check_outputs
from ..errors import CalibkitError
from ._warnings import with_warnings_shown
from .argtypes import non_negative_int, positive_float, positive_int, positive_int_list, regex
from .calibrate import add_data_option, add_share_option

logger = logging.getLogger(__name__)

_RESEARCH_ALGORITHMS = (
    "entropy2,entropy,minmax,percentile:99.99,percentile:99.999,legacy:0.9999:1,mse"
)


def _add_research(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare scale algorithms per tensor from saved statistics (no model run)",
        description=(
            "For every tensor and algorithm: amax, scale, fraction clipped, KL divergence, "
            "expected INT8 MSE / SQNR (from the histogram) and amax / min-max; then a summary "
            "per algorithm."
        ),
    )
    p.add_argument("stats", metavar="STATS.npz", help="statistics written by calibkit calibrate")
    p.add_argument(
        "--algorithms",
        default=_RESEARCH_ALGORITHMS,
        help=f"comma-separated specs ({_RESEARCH_ALGORITHMS})",
    )
    p.add_argument("--csv", metavar="FILE", help="write the per-tensor numbers as CSV")
    p.add_argument("--json", metavar="FILE", help="write summary and per-tensor numbers as JSON")
    p.add_argument(
        "--metric",
        default="ratio",
        help="per-tensor column shown: amax, scale, clipped, kl, mse, sqnr_db, ratio (default)",
    )
    p.add_argument(
        "--table", type=non_negative_int, default=30, metavar="ROWS", help="per-tensor rows (30)"
    )
    add_share_option(p, _JUDGED)
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser(
        "report",
        help="write a static HTML report with plots of every algorithm (needs calibkit[plot])",
        description="Write an offline HTML report (index.html, PNGs, CSV, JSON) into a folder.",
    )
    p.add_argument("stats", metavar="STATS.npz", help="statistics written by calibkit calibrate")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="report folder")
    p.add_argument("--algorithms", default=_RESEARCH_ALGORITHMS, help="comma-separated specs")
    p.add_argument(
        "--max-tensors", type=positive_int, metavar="N", help="plot only the first N tensors"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_share_option(p, _JUDGED)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "stability",
        help="order and batch-size sensitivity of the calibration (re-batching the same samples)",
        description=(
            "Re-run the histogram collector over several batch orders and batch sizes of the "
            "same samples; report per tensor the spread of the selected amax, next to the "
            "order-independent two-pass mode. SOURCE is MODEL.onnx (with --data) or recorded "
            "activations .npz (key = tensor, shape (batches, batch, ...))."
        ),
    )
    p.add_argument("source", metavar="SOURCE", help="MODEL.onnx or activations .npz")
    add_data_option(p, help="model inputs (as for calibkit calibrate MODEL.onnx --data)")
    p.add_argument("--preprocess", metavar="PRESET", help="image folders: preprocessing preset")
    p.add_argument(
        "--tensors", type=regex, metavar="REGEX", help="analyse only tensors matching REGEX"
    )
    p.add_argument("--max-samples", type=positive_int, help="use at most this many samples")
    p.add_argument(
        "--max-memory",
        type=positive_int,
        default=2048,
        metavar="MB",
        help="kept activations (2048 MB)",
    )
    p.add_argument(
        "--batch-sizes",
        type=positive_int_list,
        default="1,8,32",
        help="comma-separated (default 1,8,32)",
    )
    p.add_argument(
        "--orders", type=positive_int, default=5, help="orders per batch size (default 5)"
    )
    p.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of the orders (default 0)"
    )
    p.add_argument("-a", "--algorithm", default="entropy2", help="selector (default entropy2)")
    p.add_argument("--num-bins", type=positive_int, default=2048, help="histogram bins (2048)")
    p.add_argument(
        "--threshold",
        type=positive_float,
        default=0.05,
        help="unstable above this relative spread (0.05)",
    )
    p.add_argument("--threads", type=positive_int, help="onnxruntime threads")
    p.add_argument("--json", metavar="FILE", help="write every run's amax as JSON")
    p.add_argument(
        "--table", type=non_negative_int, default=30, metavar="ROWS", help="rows to print (30)"
    )
    p.add_argument(
        "--trt-version",
        help="TensorRT version whose sharing rules apply (default: unknown, the pooling rule)",
    )
    add_share_option(p, " applied to each run's amax (MODEL.onnx only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_cmd_stability)

    p = sub.add_parser(
        "sensitivity",
        help="quantise one tensor at a time (Q/DQ in onnxruntime) and rank by output error",
        description=(
            "For every activation the Q/DQ placement rules quantise: a model copy with Q/DQ on "
            "that tensor only (scale from --stats and --algorithm), run by onnxruntime on --data; "
            "tensors ranked by the relative output error against the float model."
        ),
    )
    p.add_argument("model", metavar="MODEL.onnx", help="the float model")
    p.add_argument("--stats", required=True, metavar="STATS.npz", help="saved statistics")
    add_data_option(p, required=True, help="held-aside inputs (as for calibrate --data)")
    p.add_argument("--preprocess", metavar="PRESET", help="image folders: preprocessing preset")
    p.add_argument("-a", "--algorithm", default="entropy2", help="selector (default entropy2)")
    p.add_argument(
        "--max-samples", type=positive_int, default=256, help="inputs to use (default 256)"
    )
    p.add_argument(
        "--batch-size", type=positive_int, help="samples per run (default: model's, else 8)"
    )
    p.add_argument("--output", help="model output to compare (default: the first)")
    p.add_argument(
        "--weights", action="store_true", help="also quantise the weights of the ops reading it"
    )
    p.add_argument("--threads", type=positive_int, help="onnxruntime threads")
    p.add_argument("--json", metavar="FILE", help="write the ranking as JSON")
    p.add_argument(
        "--table", type=non_negative_int, default=30, metavar="ROWS", help="rows to print (30)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_share_option(p, _JUDGED)
    p.set_defaults(func=_cmd_sensitivity)


def _specs(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


# each tensor is judged at the amax the cache would deploy
_JUDGED = " (each tensor judged at the amax the cache would deploy)"


@with_warnings_shown("compare")
def _cmd_compare(args) -> int:
    """Compare scale algorithms per tensor from saved statistics (no model run)."""
    from ..research.compare import compare
    from ..stats import load_stats

    check_outputs(args.csv, args.json)
    stats = load_stats(args.stats)
    result = compare(stats, _specs(args.algorithms), share_scales=args.share_scales)
    tensors = result.format_tensors(args.metric, limit=args.table) if args.table else ""
    with atomic_outputs(args.csv, args.json):  # both files or neither
        if args.csv:
            result.write_csv(args.csv)
        if args.json:
            result.write_json(args.json)
    if tensors:
        print(f"{args.metric} per tensor:")
        print(tensors)
        print()
    print(result.format_summary())
    print(result.sharing)
    for path in filter(None, (args.csv, args.json)):
        print(f"wrote {path}")
    return 0


@with_warnings_shown("report")
def _cmd_report(args) -> int:
    """Write a static HTML report with plots of every algorithm."""
    from pathlib import Path

    from ..research.report import write_report
    from ..stats import load_stats

    check_output_dir(args.output)
    stats = load_stats(args.stats)
    with atomic_outputs():  # the page appears with its plots, or not at all
        index = write_report(
            stats,
            args.output,
            algorithms=_specs(args.algorithms),
            max_tensors=args.max_tensors,
            title=f"calibkit report: {Path(args.stats).name}",
            share_scales=args.share_scales,
            progress=not args.no_progress,
        )
    print(f"wrote {index} ({len(stats.histograms)} tensors)")
    # the rules the report's numbers were computed with, as its compare.json records them
    print(json.loads((index.parent / "compare.json").read_text())["sharing"])
    return 0


@with_warnings_shown("stability")
def _cmd_stability(args) -> int:
    """Order and batch-size sensitivity of the calibration."""
    from ..research.stability import samples_from_onnx, samples_from_recorded, stability

    check_outputs(args.json)
    sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    skipped: dict = {}
    graph = None
    if args.source.endswith(".onnx"):
        from ..onnx.model import OnnxModel

        model = OnnxModel.load(args.source)  # once: the graph for sharing, and the run
        graph = model.graph
        if not args.data:
            msg = f"{args.source}: an ONNX model needs inputs: --data DATA"
            raise CalibkitError(msg)
        samples, skipped = samples_from_onnx(
            model,
            args.data,
            tensors=args.tensors,
            max_samples=args.max_samples,
            preprocess=args.preprocess,
            max_bytes=args.max_memory << 20,
            num_threads=args.threads,
            progress=not args.no_progress,
        )
    else:
        samples = samples_from_recorded(args.source)
        if args.tensors:
            import re

            samples = {k: v for k, v in samples.items() if re.search(args.tensors, k)}
        if args.max_samples:
            samples = {k: v[: args.max_samples] for k, v in samples.items()}
    result = stability(
        samples,
        batch_sizes=sizes,
        num_orders=args.orders,
        seed=args.seed,
        algorithm=args.algorithm,
        num_bins=args.num_bins,
        threshold=args.threshold,
        graph=graph,
        trt_version=args.trt_version,
        share_scales=args.share_scales,
        progress=not args.no_progress,
    )
    result.skipped.update(skipped)
    print(result.format_table(limit=args.table))
    if args.json:
        result.write_json(args.json)
        print(f"wrote {args.json}")
    return 0


@with_warnings_shown("sensitivity")
def _cmd_sensitivity(args) -> int:
    """Quantise one tensor at a time and rank tensors by output error."""
    from ..data.sources import open_data
    from ..onnx.model import OnnxModel
    from ..pipeline import scales_from_stats
    from ..research.sensitivity import sensitivity

    check_outputs(args.json)
    # the amax the cache of 'select --algorithm A' would deploy: sharing rules, cache names
    selection = scales_from_stats(args.stats, args.algorithm, share_scales=args.share_scales)
    model = OnnxModel.load(args.model)  # once, for the input specs and every Q/DQ variant
    data = open_data(
        args.data,
        model.inputs,
        batch_size=args.batch_size,
        max_samples=args.max_samples,
        preprocess=args.preprocess,
    )
    result = sensitivity(
        model,
        selection.amax,
        data,
        output=args.output,
        algorithm=selection.selector.spec,
        quantize_weights=args.weights,
        num_threads=args.threads,
        progress=not args.no_progress,
    )
    print(result.format_table(limit=args.table))
    print(selection.describe_sharing())
    if args.json:
        result.write_json(args.json)
        print(f"wrote {args.json}")
    return 0


def register(sub) -> None:
    """Add this group's sub-commands to `sub` (an argparse subparsers object)."""
    _add_research(sub)
