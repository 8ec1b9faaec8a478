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
        help=(
            "where to save every histogram, so 'calibkit select' can recompute any algorithm "
            "(default: next to the cache, OUTPUT.stats.npz)"
        ),
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
    from .cache import write_cache
    from .calibrate import cache_from_amax, default_stats_path
    from .collect import HistogramCollector
    from .selectors import compute_amax, make_selector
    from .stats import is_stats_file, save_stats

    suffix = Path(args.source).suffix.lower()
    if suffix in _CALIBRATE_HANDLERS:
        return _CALIBRATE_HANDLERS[suffix](args)
    if suffix != ".npz":
        kinds = ", ".join(sorted({".npz", *_CALIBRATE_HANDLERS}))
        msg = f"{args.source}: unsupported source; expected one of {kinds}"
        raise CalibkitError(msg)
    if is_stats_file(args.source):
        msg = f"{args.source} holds saved statistics, not activations: use 'calibkit select'"
        raise CalibkitError(msg)
    try:  # bad arguments or data become one error line
        selector = make_selector(args.algorithm)
        cache_from_amax({}, selector, args.trt_version)  # check the header before the work
        collector = HistogramCollector(args.num_bins, nan_policy=args.nan)
        for batch in iter_recorded_batches(args.source):
            collector.update(batch)
        amax = compute_amax(collector.histograms_, selector)
        cache = cache_from_amax(amax, selector, args.trt_version)
    except (ValueError, TypeError) as err:
        if isinstance(err, CalibkitError):
            raise
        raise CalibkitError(str(err)) from err
    write_cache(args.output, cache)
    stats = None
    if not getattr(args, "no_save_histograms", False):
        stats = args.save_histograms or default_stats_path(args.output)
        settings = {
            "source": str(args.source),
            "algorithm": selector.spec,
            "trt_version": args.trt_version,
            "num_bins": args.num_bins,
            "num_batches": collector.n_batches_,
        }
        save_stats(stats, collector.histograms_, settings=settings)
    print(
        f"{args.output}: {len(amax)} tensors from {collector.n_batches_} batches "
        f"({selector.spec}, {cache.to_bytes().splitlines()[0].decode()})"
        + (f"; statistics in {stats}" if stats else "")
    )
    return 0


_SECTIONS.append(_add_calibrate)
# <<< section: calibrate / select (core)


# >>> section: calibrate-onnx
def _add_calibrate_onnx(sub) -> None:
    """Add the ONNX-model options to the core section's ``calibrate`` parser."""
    if not _CALIBRATE_EXTENSIONS:
        return
    p = _CALIBRATE_EXTENSIONS[-1]  # the parser the core section made in this build_parser call
    g = p.add_argument_group("ONNX model (SOURCE = MODEL.onnx, run on the CPU by onnxruntime)")
    g.add_argument(
        "--data",
        metavar="DATA",
        help=(
            "calibration inputs: X.npy (one input, first axis = samples), X.npz (keyed by input "
            "name), a folder of per-sample .npy/.npz files or of images (with --preprocess), or "
            "a loader script FILE.py[:FUNCTION] (default load_data) returning an iterable of "
            "{input name: array} batches"
        ),
    )
    g.add_argument("--batch-size", type=int, help="samples per batch (default: model's, else 8)")
    g.add_argument("--max-samples", type=int, help="stop after this many samples")
    g.add_argument("--shuffle", action="store_true", help="visit samples in a random order")
    g.add_argument("--seed", type=int, default=0, help="seed of --shuffle (default 0)")
    g.add_argument("--tensors", metavar="REGEX", help="calibrate only tensors matching REGEX")
    g.add_argument(
        "--preprocess",
        metavar="PRESET",
        help="image preprocessing: imagenet, efficientnet-lite, unit (x/255) or raw",
    )
    g.add_argument("--resize", help="images: shorter side N, or HxW exactly")
    g.add_argument("--crop", help="images: centre crop HxW or N (default: the model's size)")
    g.add_argument("--scale", type=float, help="images: multiply pixels (0..255) by this")
    g.add_argument("--mean", help="images: subtracted after --scale, one value or R,G,B")
    g.add_argument("--std", help="images: divisor after --mean, one value or R,G,B")
    g.add_argument("--layout", choices=("NCHW", "NHWC"), help="images: default from the model")
    g.add_argument("--channels", choices=("RGB", "BGR", "L"), help="images: default RGB (or L)")
    g.add_argument(
        "--max-tensors-per-run",
        type=int,
        metavar="N",
        help="read at most N tensors per onnxruntime run (less memory; one run per group)",
    )
    g.add_argument(
        "--optimization",
        choices=("disable", "basic", "extended", "all"),
        default="disable",
        help="onnxruntime graph optimisation (default disable: the graph as given)",
    )
    g.add_argument("--threads", type=int, help="onnxruntime threads (default: one per core)")
    g.add_argument(
        "--names",
        choices=("trt", "onnx"),
        default="trt",
        help=(
            "trt (default): the lines TensorRT --trt-version looks up (constants it calibrates, "
            "its aliases, none for tensors it removes); onnx: one per calibrated ONNX tensor"
        ),
    )
    g.add_argument(
        "--calibration-shape",
        action="append",
        default=[],
        metavar="NAME=DxD...",
        help=(
            "feed input NAME at this shape, as TensorRT does with dynamic shapes (it reads the "
            "calibration profile's opt shape from the start of each batch); repeatable"
        ),
    )
    g.add_argument(
        "--share-scales",
        default="trt",
        metavar="RULES",
        help=(
            "TensorRT's scale sharing: trt (default: the rules of --trt-version; pooling outputs "
            "take their input's scale, and up to 8.0 Concat inputs the output's), none, P or "
            "P,C (docs/sharing.md)"
        ),
    )
    g.add_argument(
        "--no-save-histograms",
        action="store_true",
        help="do not write the statistics (default: next to the cache, MODEL.stats.npz)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    g.add_argument(
        "--table", type=int, default=30, metavar="ROWS", help="per-tensor rows to print (30)"
    )


def _floats(text: str | None) -> float | tuple[float, ...] | None:
    if text is None:
        return None
    values = tuple(float(v) for v in text.split(","))
    return values[0] if len(values) == 1 else values


def _size(text: str | None, *, square: bool) -> int | tuple[int, int] | None:
    """Parse ``N`` or ``HxW``; with `square` an ``N`` means ``(N, N)``."""
    if text is None:
        return None
    h, _, w = text.lower().partition("x")
    if not w:
        return (int(h), int(h)) if square else int(h)
    return int(h), int(w)


def _preprocess_from_args(args):  # -> str | ImagePreprocess | None
    from dataclasses import replace

    from .data import PRESETS, ImagePreprocess

    overrides = {
        "resize": _size(args.resize, square=False),
        "crop": _size(args.crop, square=True),
        "scale": args.scale,
        "mean": _floats(args.mean),
        "std": _floats(args.std),
        "layout": args.layout,
        "channels": args.channels,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.preprocess is None and not overrides:
        return None
    if args.preprocess is not None and args.preprocess not in PRESETS:
        msg = f"unknown --preprocess {args.preprocess!r}; choose one of {sorted(PRESETS)}"
        raise CalibkitError(msg)
    base = PRESETS[args.preprocess] if args.preprocess else ImagePreprocess()
    return replace(base, **overrides)


def _cmd_calibrate_onnx(args) -> int:
    """Calibrate an ONNX model on the CPU (onnxruntime) and write the cache and statistics."""
    from pathlib import Path

    from .calibrate import (
        calibrate_onnx,
        format_amax_table,
        format_input_table,
        format_summary,
    )
    from .data import parse_shape

    if not args.data:
        msg = f"{args.source}: an ONNX model needs calibration inputs: --data DATA"
        raise CalibkitError(msg)
    for path in (args.output, args.save_histograms):
        if path and not Path(path).resolve().parent.is_dir():  # fail now, not after the run
            msg = f"cannot write {path}: folder {Path(path).parent} does not exist"
            raise CalibkitError(msg)
    try:
        result = calibrate_onnx(
            args.source,
            args.data,
            algorithm=args.algorithm,
            trt_version=args.trt_version,
            num_bins=args.num_bins,
            batch_size=args.batch_size,
            max_samples=args.max_samples,
            shuffle=args.shuffle,
            seed=args.seed,
            preprocess=_preprocess_from_args(args),
            tensors=args.tensors,
            nan_policy=args.nan,
            max_tensors_per_run=args.max_tensors_per_run,
            optimization=args.optimization,
            num_threads=args.threads,
            progress=not args.no_progress,
            share_scales=args.share_scales,
            calibration_shapes=dict(parse_shape(s) for s in args.calibration_shape),
            names=args.names,
        )
    except ValueError as err:  # bad arguments and data become one error line
        raise CalibkitError(str(err)) from err
    stats = result.write(
        args.output, args.save_histograms, save_stats_file=not args.no_save_histograms
    )
    print(format_input_table(result.inputs))
    if args.table:
        print()
        print(format_amax_table(result.histograms, result.amax, limit=args.table))
    print()
    print(format_summary(result))
    header = result.cache.to_bytes().split(b"\n", 1)[0].decode()
    print(f"wrote {args.output} ({header})" + (f" and {stats}" if stats else ""))
    return 0


_CALIBRATE_HANDLERS[".onnx"] = _cmd_calibrate_onnx
_SECTIONS.append(_add_calibrate_onnx)
# <<< section: calibrate-onnx


# >>> section: select
def _add_select(sub) -> None:
    p = sub.add_parser(
        "select",
        help="recompute a cache with another algorithm from saved statistics (no model run)",
        description=(
            "Recompute a TensorRT calibration cache from the statistics 'calibkit calibrate' "
            "saved (STATS.npz), with any algorithm, in seconds; onnx/onnxruntime are not used."
        ),
    )
    p.add_argument("stats", metavar="STATS.npz", help="statistics written by calibkit calibrate")
    p.add_argument(
        "-a",
        "--algorithm",
        help=(
            "entropy2, entropy, minmax, percentile:<p>, legacy:<quantile>:<cutoff>, mse "
            "(entropy variants as entropy2:<preset or key=value,...>)"
        ),
    )
    p.add_argument(
        "--all", action="store_true", help="write one cache per algorithm into the -o folder"
    )
    p.add_argument(
        "--trt-version", help="TensorRT version for the header (default: the recorded one)"
    )
    p.add_argument("-o", "--output", required=True, help="cache file (a folder with --all)")
    p.add_argument(
        "--share-scales",
        metavar="RULES",
        help="trt, none, P or P,C (default: as recorded by calibrate; docs/sharing.md)",
    )
    p.set_defaults(func=_cmd_select)


def _cmd_select(args) -> int:
    """Recompute a cache with another algorithm from saved statistics (no model run)."""
    from .cache import write_cache
    from .calibrate import select_all, select_from_stats

    if args.all == bool(args.algorithm):
        msg = "give either --algorithm SPEC (one cache) or --all (one cache per algorithm)"
        raise CalibkitError(msg)
    try:
        if args.all:
            written = select_all(
                args.stats,
                args.output,
                trt_version=args.trt_version,
                share_scales=args.share_scales,
            )
            for spec, path in written.items():
                print(f"{spec:20s} {path}")
            return 0
        cache = select_from_stats(
            args.stats,
            args.algorithm,
            trt_version=args.trt_version,
            share_scales=args.share_scales,
        )
    except ValueError as err:
        raise CalibkitError(str(err)) from err
    write_cache(args.output, cache)
    header = cache.to_bytes().split(b"\n", 1)[0].decode()
    print(f"wrote {args.output}: {len(cache.scales)} tensors ({header})")
    return 0


_SECTIONS.append(_add_select)
# <<< section: select


# >>> section: cache
def _add_cache(subparsers) -> None:
    from .cache_formats import FORMATS

    readable = sorted(FORMATS)
    writable = sorted(f for f, (_, w, _) in FORMATS.items() if w)
    p = subparsers.add_parser(
        "cache",
        help="inspect, compare, convert, edit and check TensorRT calibration caches",
        description="Read TensorRT calibration caches exactly (any TensorRT 4-10 header) and "
        "convert them to and from JSON, CSV, dynamic-range files and ONNX Runtime tables.",
    )
    sub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)

    def source(q, name="file", help_="a cache or any supported file"):
        q.add_argument(name, help=help_)
        q.add_argument("--from", dest="from_format", choices=readable, help="input format")

    q = sub.add_parser("show", help=_doc(_cmd_cache_show))
    source(q)
    q.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    q.add_argument("--sort", choices=("file", "name", "amax"), default="file", help="row order")
    q.set_defaults(func=_cmd_cache_show)

    q = sub.add_parser("diff", help=_doc(_cmd_cache_diff))
    q.add_argument("a", help="first cache (or any supported file)")
    q.add_argument("b", help="second cache (or any supported file)")
    q.add_argument("--from", dest="from_format", choices=readable, help="format of both inputs")
    q.add_argument("--rtol", type=float, help="exit 1 if a relative difference exceeds this")
    q.add_argument("--ignore-missing", action="store_true", help="tensors on one side only pass")
    q.add_argument("--stats", help="stats.npz of the calibration run: differences in bins")
    q.add_argument("--top", type=int, default=20, help="rows to print (default 20; 0 = all)")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=_cmd_cache_diff)

    q = sub.add_parser("convert", help=_doc(_cmd_cache_convert))
    source(q)
    q.add_argument("-o", "--output", required=True, help="output file")
    q.add_argument("--to", choices=writable, help="output format (default: from the suffix)")
    _header_options(q)
    q.set_defaults(func=_cmd_cache_convert)

    q = sub.add_parser("edit", help=_doc(_cmd_cache_edit))
    source(q)
    q.add_argument("-o", "--output", required=True, help="output file (may be the input)")
    q.add_argument("--set", action="append", default=[], metavar="NAME=AMAX", help="set amax")
    q.add_argument("--add", action="append", default=[], metavar="NAME=AMAX", help="add a tensor")
    q.add_argument("--overrides", help="file of scales to copy in (any supported format)")
    q.add_argument(
        "--select", action="append", default=[], metavar="REGEX", help="tensors to clamp"
    )
    q.add_argument("--clamp-min", type=float, metavar="AMAX", help="raise amax below this")
    q.add_argument("--clamp-max", type=float, metavar="AMAX", help="lower amax above this")
    q.add_argument("--drop", action="append", default=[], metavar="REGEX", help="drop tensors")
    _header_options(q)
    q.set_defaults(func=_cmd_cache_edit)

    q = sub.add_parser("check", help=_doc(_cmd_cache_check))
    source(q)
    q.add_argument("--model", required=True, help="model.onnx (needs calibkit[onnx]) or graph.json")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.add_argument("--strict", action="store_true", help="exit 1 unless the check is clean")
    q.set_defaults(func=_cmd_cache_check)


def _doc(func) -> str:
    return func.__doc__.splitlines()[0]


def _header_options(q) -> None:
    q.add_argument("--trt-version", help="target TensorRT version of the header, e.g. 10.16")
    q.add_argument(
        "--algorithm",
        choices=("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration"),
        help="header algorithm word (DLA needs EntropyCalibration2)",
    )


class _CacheCommand:
    """Turn library ValueErrors and warnings into one-line CLI messages."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self._caught = self._catch.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, kind, err, tb):
        self._catch.__exit__(kind, err, tb)
        for w in self._caught:
            print(f"calibkit cache: warning: {w.message}", file=sys.stderr)
        if kind is not None and issubclass(kind, ValueError) and not isinstance(err, CalibkitError):
            raise CalibkitError(str(err)) from err
        return False


def _read_any(path, fmt):
    from .cache_formats import read_scales

    return read_scales(path, fmt)


def _fmt_float(value: float) -> str:
    return f"{value:.6g}"


def _cmd_cache_show(args) -> int:
    """Print a cache's header and its tensors (scale, amax, hex)."""
    import json

    from .cache_formats import to_json_dict

    with _CacheCommand():
        cache, fmt = _read_any(args.file, args.from_format)
    if args.json:
        print(json.dumps(to_json_dict(cache), ensure_ascii=False))
        return 0
    header = (
        cache.to_bytes().split(b"\n", 1)[0].decode().rstrip("\r") if fmt in ("trt", "json") else "-"
    )
    version = "TensorRT " + ".".join(map(str, cache.version)) if cache.version else "no version"
    print(f"{args.file}: {fmt}, header {header!r}, {version}, {cache.algorithm or '-'}")
    if cache.legacy is not None:
        legacy = cache.legacy
        cutoff, quantile = legacy.regression_cutoff, legacy.quantile
        print(f"legacy calibrator: regression cutoff {cutoff}, quantile {quantile}")
    amax, hexes = cache.amax, cache.hex
    names = list(cache.scales)
    if args.sort == "name":
        names.sort()
    elif args.sort == "amax":
        names.sort(key=lambda n: amax[n], reverse=True)
    print(f"{'hex':>8}  {'scale':>12}  {'amax':>12}  name")
    for name in names:
        scale, value = _fmt_float(cache.scales[name]), _fmt_float(amax[name])
        print(f"{hexes[name]:>8}  {scale:>12}  {value:>12}  {name}")
    n_zero = sum(1 for s in cache.scales.values() if s == 0)
    n_inf = sum(1 for a in amax.values() if a == float("inf"))
    print(f"{len(names)} tensors, {n_zero} zero, {n_inf} infinite")
    return 0


def _cmd_cache_diff(args) -> int:
    """Compare two caches tensor by tensor; with --rtol, exit 1 when they differ more."""
    import json

    from .cache_diff import diff_caches

    with _CacheCommand():
        a, _ = _read_any(args.a, args.from_format)
        b, _ = _read_any(args.b, args.from_format)
    histograms = None
    if args.stats:
        from .stats import load_stats

        histograms = load_stats(args.stats).histograms
    result = diff_caches(a, b, histograms=histograms)
    summary = result.summary()
    failing = [] if args.rtol is None else result.exceeding(args.rtol)
    missing = bool(result.only_a or result.only_b) and not args.ignore_missing
    status = 1 if args.rtol is not None and (failing or missing) else 0
    if args.json:
        rows = [
            {k: (v if v != float("inf") else "inf") for k, v in vars(row).items()}
            for row in result.rows
        ]
        out = {
            "summary": summary,
            "rows": rows,
            "only_a": result.only_a,
            "only_b": result.only_b,
            "rtol": args.rtol,
            "passed": status == 0,
        }
        print(json.dumps(out, ensure_ascii=False))
        return status
    shown = sorted((r for r in result.rows if r.rel > 0), key=lambda r: r.rel, reverse=True)
    if args.top:
        shown = shown[: args.top]
    bins = histograms is not None
    print(
        f"{'scale a':>12}  {'scale b':>12}  {'rel diff':>9}  {'ulps':>6}"
        + ("  bins" if bins else "")
        + "  name"
    )
    for r in shown:
        extra = f"  {r.bins:+.1f}" if bins and r.bins is not None else ("  -" if bins else "")
        scales = f"{_fmt_float(r.scale_a):>12}  {_fmt_float(r.scale_b):>12}"
        print(f"{scales}  {r.rel:>9.3g}  {r.ulps:>6}{extra}  {r.name}")
    for side, names in (("a", result.only_a), ("b", result.only_b)):
        for name in names[: args.top or None]:
            print(f"only in {side}: {name}")
        if args.top and len(names) > args.top:
            print(f"only in {side}: ... {len(names) - args.top} more (--top 0 lists all)")
    print(
        f"{summary['common']} common tensors, {summary['equal']} equal, "
        f"{summary['only_a']} only in a, {summary['only_b']} only in b; "
        f"max rel diff {summary['max_rel']:.3g}, median {summary['median_rel']:.3g}"
    )
    if args.rtol is not None:
        verdict = "FAIL" if status else "ok"
        print(
            f"rtol {args.rtol:g}: {len(failing)} tensor(s) above"
            + (", tensors missing on one side" if missing else "")
            + f" -> {verdict}"
        )
    return status


def _write_any(path, cache, fmt, source_fmt, args):
    from pathlib import Path

    from .cache_formats import FORMATS, format_for_path, write_scales

    same_suffix = Path(path).suffix.lower() == Path(args.file).suffix.lower()
    target = fmt or (source_fmt if same_suffix else format_for_path(path))
    if FORMATS[target][2] and not FORMATS[source_fmt][2] and cache.version is None:
        msg = (
            f"{args.file} ({source_fmt}) has no TensorRT header; "
            "pass --trt-version and --algorithm to write a TensorRT cache or calibkit JSON"
        )
        raise CalibkitError(msg)
    write_scales(path, cache, target)
    return target


def _cmd_cache_convert(args) -> int:
    """Convert between cache formats, or retarget the header; same format = byte-identical copy."""
    from .cache_edit import retarget

    with _CacheCommand():
        cache, fmt = _read_any(args.file, args.from_format)
        if args.trt_version or args.algorithm:
            cache = retarget(cache, trt_version=args.trt_version, algorithm=args.algorithm)
        written = _write_any(args.output, cache, args.to, fmt, args)
    print(f"{args.output}: {written}, {len(cache.scales)} tensors")
    return 0


def _pairs(items, what):
    out = {}
    for item in items:
        name, sep, value = item.rpartition("=")  # names may hold '='; the amax does not
        try:
            out[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            msg = f"{what} {item!r}: expected NAME=AMAX with a number after the last '='"
            raise CalibkitError(msg)
    return out


def _cmd_cache_edit(args) -> int:
    """Set, clamp or drop tensors and retarget the header; untouched lines stay as they were."""
    from .cache_edit import clamp_amax, drop_tensors, retarget, select_tensors, set_scales

    with _CacheCommand():
        cache, fmt = _read_any(args.file, args.from_format)
        before = dict(cache.scales)
        if args.overrides:
            overrides, _ = _read_any(args.overrides, None)
            cache = set_scales(cache, overrides.scales, from_amax=False)
        if args.set:
            cache = set_scales(cache, _pairs(args.set, "--set"))
        if args.add:
            cache = set_scales(cache, _pairs(args.add, "--add"), add=True)
        if args.clamp_min is not None or args.clamp_max is not None:
            names = select_tensors(cache, args.select) if args.select else list(cache.scales)
            cache = clamp_amax(cache, names, lower=args.clamp_min, upper=args.clamp_max)
        elif args.select:
            msg = "--select chooses tensors for --clamp-min/--clamp-max; give one of them"
            raise CalibkitError(msg)
        if args.drop:
            cache = drop_tensors(cache, select_tensors(cache, args.drop))
        if args.trt_version or args.algorithm:
            cache = retarget(cache, trt_version=args.trt_version, algorithm=args.algorithm)
        written = _write_any(args.output, cache, None, fmt, args)
    changed = sum(1 for n, s in cache.scales.items() if n in before and before[n] != s)
    added = sum(1 for n in cache.scales if n not in before)
    dropped = sum(1 for n in before if n not in cache.scales)
    print(f"{args.output}: {written}, {changed} changed, {added} added, {dropped} dropped")
    return 0


def _cmd_cache_check(args) -> int:
    """Check a cache against an ONNX model or graph.json: missing, unknown, zero, inf, shared."""
    import json

    from .cache_check import check_cache, read_model_graph

    with _CacheCommand():
        cache, _ = _read_any(args.file, args.from_format)
        graph, float_tensors = read_model_graph(args.model)
    report = check_cache(cache, graph, float_tensors=float_tensors)
    status = 1 if args.strict and not report.ok else 0
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
        return status
    sections = [
        ("missing from the cache (TensorRT runs these layers in FP16/FP32)", report.missing),
        ("not in the model and not TensorRT-internal", report.unknown),
        ("zero scale (tensor was all zeros during calibration)", report.zero),
        ("infinite scale", report.infinite),
    ]
    for title, names in sections:
        if names:
            print(f"{len(names)} {title}:")
            for name in names:
                print(f"  {name}")
    for s in report.shared:
        print(f"equal scale across {s['op']} {s['node']}: {s['input']} -> {s['output']}")
    print(
        f"{len(cache.scales)} cache tensors, {len(graph.tensors)} model tensors: "
        f"{len(report.missing)} missing, {len(report.trt_internal)} TensorRT-internal, "
        f"{len(report.unknown)} unknown, {len(report.zero)} zero, {len(report.infinite)} infinite, "
        f"{len(report.shared)} equal across a node -> {'ok' if report.ok else 'issues'}"
    )
    return status


_SECTIONS.append(_add_cache)
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
    from .qdq import DEFAULT_OP_TYPES, cache_header, shift_numeric_names, write_qdq

    if args.cache is not None:
        from .cache import read_cache

        if args.algorithm is not None:
            msg = "--algorithm applies to --stats; a cache already holds its scales"
            raise CalibkitError(msg)
        cache = read_cache(args.cache)
        scales, header, algorithm = cache.scales, cache_header(cache), cache.algorithm
    else:
        from .scale import scale_from_amax
        from .selectors import compute_amax, make_selector
        from .stats import load_stats

        if args.algorithm is None:
            msg = "--stats needs --algorithm (e.g. entropy2)"
            raise CalibkitError(msg)
        try:
            selector = make_selector(args.algorithm)
        except ValueError as err:
            raise CalibkitError(str(err)) from err
        amax = compute_amax(load_stats(args.stats).histograms, selector)
        scales = {name: scale_from_amax(a) for name, a in amax.items()}
        header, algorithm = f"stats {args.stats} {selector.spec}", selector.trt_algorithm
    if args.shift_numeric_names is not None:
        scales = shift_numeric_names(scales, args.shift_numeric_names)
    try:
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
    except ValueError as err:
        if isinstance(err, CalibkitError):
            raise
        raise CalibkitError(str(err)) from err
    lines = [f"{args.output}: {report.summary()}"]
    lines += [f"  float: {t.name}: {t.reason}" for t in report.float_tensors]
    lines += [f"  warning: {w}" for w in report.warnings]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _cmd_qdq_to_cache(args: argparse.Namespace) -> int:
    """Write a TensorRT calibration cache from the scales of a Q/DQ ONNX model."""
    from .cache import write_cache
    from .qdq import save_model
    from .qdq_reverse import qdq_to_cache

    try:
        cache, float_model = qdq_to_cache(
            args.model, trt_version=args.trt_version, algorithm=args.algorithm
        )
    except ValueError as err:
        if isinstance(err, CalibkitError):
            raise
        raise CalibkitError(str(err)) from err
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
    p = verbs.add_parser("crosscheck", help=_cmd_trt_crosscheck.__doc__.splitlines()[0])
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--data", required=True, help="calibration data (as for calibkit calibrate)")
    p.add_argument(
        "-a", "--algorithm", default="entropy2", help="entropy2, entropy, minmax, legacy"
    )
    p.add_argument(
        "--rtol", type=float, default=1e-6, help="max relative scale difference (default 1e-6)"
    )
    p.add_argument("--trt-cache", default="trt.cache", help="where TensorRT's cache goes")
    p.add_argument("--calibkit-cache", default="calibkit.cache", help="where calibkit's goes")
    p.add_argument("--batch-size", type=int, help="samples per batch")
    p.add_argument("--max-samples", type=int, help="stop after this many samples")
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
    from .cache import read_cache, write_atomic
    from .trt import algorithm_of, build_engine, import_tensorrt, make_calibrator

    import_tensorrt()  # first, so that a missing TensorRT is the one error reported
    shapes = _trt_shapes(args.shape)
    cache = read_cache(args.cache)
    try:
        if args.dynamic_ranges:
            engine = build_engine(args.model, dynamic_ranges=cache, shapes=shapes, fp16=args.fp16)
        else:
            calibrator = make_calibrator(args.algorithm or algorithm_of(cache), cache=cache)
            engine = build_engine(args.model, calibrator=calibrator, shapes=shapes, fp16=args.fp16)
    except (ValueError, TypeError) as err:  # bad --algorithm, shapes or model: one line
        raise CalibkitError(str(err)) from err
    write_atomic(args.output, engine)
    print(
        f"wrote {args.output} ({len(engine)} bytes, {len(cache.scales)} scales from {args.cache})"
    )
    return 0


def _cmd_trt_crosscheck(args) -> int:
    """Run TensorRT's calibrator and calibkit's on the same batches and diff the two caches."""
    from .trt import crosscheck, import_tensorrt

    import_tensorrt()
    try:
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
    except (ValueError, TypeError) as err:  # data that does not fit the model, bad algorithm
        raise CalibkitError(str(err)) from err
    print(
        f"a = TensorRT {sys.modules['tensorrt'].__version__} ({args.trt_cache}), "
        f"b = calibkit ({args.calibkit_cache}); {result.num_batches} identical batches"
    )
    # the same report as `calibkit cache diff`; tensors only one side has do not fail
    argv = ["cache", "diff", args.trt_cache, args.calibkit_cache, "--ignore-missing"]
    argv += ["--rtol", repr(args.rtol), "--stats", str(result.stats_path)]
    diff_args = build_parser().parse_args(argv)
    return diff_args.func(diff_args)


_SECTIONS.append(_add_trt)
# <<< section: trt

# >>> section: research (compare / report / stability)
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
    p.add_argument("--table", type=int, default=30, metavar="ROWS", help="per-tensor rows (30)")
    _add_share_option(p)
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser(
        "report",
        help="write a static HTML report with plots of every algorithm (needs calibkit[plot])",
        description="Write an offline HTML report (index.html, PNGs, CSV, JSON) into a folder.",
    )
    p.add_argument("stats", metavar="STATS.npz", help="statistics written by calibkit calibrate")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="report folder")
    p.add_argument("--algorithms", default=_RESEARCH_ALGORITHMS, help="comma-separated specs")
    p.add_argument("--max-tensors", type=int, metavar="N", help="plot only the first N tensors")
    _add_share_option(p)
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
    p.add_argument("--data", help="model inputs (as for calibkit calibrate MODEL.onnx --data)")
    p.add_argument("--preprocess", metavar="PRESET", help="image folders: preprocessing preset")
    p.add_argument("--tensors", metavar="REGEX", help="analyse only tensors matching REGEX")
    p.add_argument("--max-samples", type=int, help="use at most this many samples")
    p.add_argument(
        "--max-memory", type=int, default=2048, metavar="MB", help="kept activations (2048 MB)"
    )
    p.add_argument("--batch-sizes", default="1,8,32", help="comma-separated (default 1,8,32)")
    p.add_argument("--orders", type=int, default=5, help="orders per batch size (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the orders (default 0)")
    p.add_argument("-a", "--algorithm", default="entropy2", help="selector (default entropy2)")
    p.add_argument("--num-bins", type=int, default=2048, help="histogram bins (2048)")
    p.add_argument(
        "--threshold", type=float, default=0.05, help="unstable above this relative spread (0.05)"
    )
    p.add_argument("--threads", type=int, help="onnxruntime threads")
    p.add_argument("--json", metavar="FILE", help="write every run's amax as JSON")
    p.add_argument("--table", type=int, default=30, metavar="ROWS", help="rows to print (30)")
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
    p.add_argument("--data", required=True, help="held-aside inputs (as for calibrate --data)")
    p.add_argument("--preprocess", metavar="PRESET", help="image folders: preprocessing preset")
    p.add_argument("-a", "--algorithm", default="entropy2", help="selector (default entropy2)")
    p.add_argument("--max-samples", type=int, default=256, help="inputs to use (default 256)")
    p.add_argument("--batch-size", type=int, help="samples per run (default: model's, else 8)")
    p.add_argument("--output", help="model output to compare (default: the first)")
    p.add_argument(
        "--weights", action="store_true", help="also quantise the weights of the ops reading it"
    )
    p.add_argument("--threads", type=int, help="onnxruntime threads")
    p.add_argument("--json", metavar="FILE", help="write the ranking as JSON")
    p.add_argument("--table", type=int, default=30, metavar="ROWS", help="rows to print (30)")
    p.set_defaults(func=_cmd_sensitivity)


def _specs(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _add_share_option(p) -> None:
    p.add_argument(
        "--share-scales",
        metavar="RULES",
        help=(
            "judge each tensor at the amax TensorRT's scale sharing gives it: trt, none, P or "
            "P,C (default: as recorded by calibrate; docs/sharing.md)"
        ),
    )


def _share_from_stats(stats, rules: str | None):
    """Return amax -> shared amax for the recorded graph and version, or None (no sharing)."""
    from .calibrate import apply_sharing

    rules = rules or stats.settings.get("share_scales", "none")
    graph, version = stats.settings.get("graph"), stats.settings.get("trt_version")
    if rules == "none" or graph is None:
        return None
    return lambda amax: apply_sharing(amax, graph, version, rules)[0]


def _cmd_compare(args) -> int:
    """Compare scale algorithms per tensor from saved statistics (no model run)."""
    from .compare import compare
    from .stats import load_stats

    stats = load_stats(args.stats)
    try:
        share = _share_from_stats(stats, args.share_scales)
        result = compare(stats.histograms, _specs(args.algorithms), share=share)
        tensors = result.format_tensors(args.metric, limit=args.table) if args.table else ""
    except ValueError as err:
        raise CalibkitError(str(err)) from err
    if args.csv:
        result.write_csv(args.csv)
    if args.json:
        result.write_json(args.json)
    if tensors:
        print(f"{args.metric} per tensor:")
        print(tensors)
        print()
    print(result.format_summary())
    for path in filter(None, (args.csv, args.json)):
        print(f"wrote {path}")
    return 0


def _cmd_report(args) -> int:
    """Write a static HTML report with plots of every algorithm."""
    from pathlib import Path

    from .report import write_report
    from .stats import load_stats

    stats = load_stats(args.stats)
    try:
        index = write_report(
            stats.histograms,
            args.output,
            algorithms=_specs(args.algorithms),
            max_tensors=args.max_tensors,
            title=f"calibkit report: {Path(args.stats).name}",
            settings=stats.settings,
            share=_share_from_stats(stats, args.share_scales),
        )
    except ValueError as err:
        raise CalibkitError(str(err)) from err
    print(f"wrote {index} ({len(stats.histograms)} tensors)")
    return 0


def _cmd_stability(args) -> int:
    """Order and batch-size sensitivity of the calibration."""
    from .stability import samples_from_onnx, samples_from_recorded, stability

    try:
        sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
        skipped: dict = {}
        if args.source.endswith(".onnx"):
            if not args.data:
                msg = f"{args.source}: an ONNX model needs inputs: --data DATA"
                raise CalibkitError(msg)
            samples, skipped = samples_from_onnx(
                args.source,
                args.data,
                tensors=args.tensors,
                max_samples=args.max_samples,
                preprocess=args.preprocess,
                max_bytes=args.max_memory << 20,
                num_threads=args.threads,
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
        )
    except ValueError as err:
        raise CalibkitError(str(err)) from err
    result.skipped.update(skipped)
    print(result.format_table(limit=args.table))
    if args.json:
        result.write_json(args.json)
        print(f"wrote {args.json}")
    return 0


def _cmd_sensitivity(args) -> int:
    """Quantise one tensor at a time and rank tensors by output error."""
    import onnx

    from .data import open_data
    from .onnx_source import _input_specs
    from .selectors import compute_amax, make_selector
    from .sensitivity import sensitivity
    from .stats import load_stats

    try:
        selector = make_selector(args.algorithm)
        amax = compute_amax(load_stats(args.stats).histograms, selector)
        graph = onnx.load(args.model, load_external_data=False).graph
        data = open_data(
            args.data,
            _input_specs(graph, onnx),
            batch_size=args.batch_size,
            max_samples=args.max_samples,
            preprocess=args.preprocess,
        )
        result = sensitivity(
            args.model,
            amax,
            data,
            output=args.output,
            algorithm=selector.spec,
            quantize_weights=args.weights,
            num_threads=args.threads,
        )
    except ValueError as err:
        raise CalibkitError(str(err)) from err
    print(result.format_table(limit=args.table))
    if args.json:
        result.write_json(args.json)
        print(f"wrote {args.json}")
    return 0


_SECTIONS.append(_add_research)
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
