"""``calibkit cache``: show, diff, convert, edit and check calibration caches."""

from __future__ import annotations

import logging
import sys

from ..atomic import check_outputs
from ..errors import CalibkitError
from .argtypes import non_negative_float, non_negative_int, regex

logger = logging.getLogger(__name__)


def _add_cache(subparsers) -> None:
    from ..cache.formats import FORMATS

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
    q.add_argument(
        "--rtol", type=non_negative_float, help="exit 1 if a relative difference exceeds this"
    )
    q.add_argument("--ignore-missing", action="store_true", help="tensors on one side only pass")
    q.add_argument("--stats", help="stats.npz of the calibration run: differences in bins")
    q.add_argument(
        "--top", type=non_negative_int, default=20, help="rows to print (default 20; 0 = all)"
    )
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=_cmd_cache_diff)

    q = sub.add_parser("convert", help=_doc(_cmd_cache_convert))
    source(q)
    q.add_argument("-o", "--output", required=True, help="output file")
    q.add_argument("--to", choices=writable, help="output format (default: from the suffix)")
    q.add_argument(
        "--model",
        help="model.onnx or graph.json: keep only its tensors (onnxruntime's ort-overrides "
        "refuse names the model lacks, such as TensorRT-internal ones)",
    )
    _header_options(q)
    q.set_defaults(func=_cmd_cache_convert)

    q = sub.add_parser("edit", help=_doc(_cmd_cache_edit))
    source(q)
    q.add_argument("-o", "--output", required=True, help="output file (may be the input)")
    q.add_argument("--set", action="append", default=[], metavar="NAME=AMAX", help="set amax")
    q.add_argument("--add", action="append", default=[], metavar="NAME=AMAX", help="add a tensor")
    q.add_argument("--overrides", help="file of scales to copy in (any supported format)")
    q.add_argument(
        "--select",
        type=regex,
        action="append",
        default=[],
        metavar="REGEX",
        help="tensors to clamp",
    )
    q.add_argument(
        "--clamp-min", type=non_negative_float, metavar="AMAX", help="raise amax below this"
    )
    q.add_argument(
        "--clamp-max", type=non_negative_float, metavar="AMAX", help="lower amax above this"
    )
    q.add_argument(
        "--drop", type=regex, action="append", default=[], metavar="REGEX", help="drop tensors"
    )
    _header_options(q)
    q.set_defaults(func=_cmd_cache_edit)

    q = sub.add_parser("check", help=_doc(_cmd_cache_check))
    source(q)
    q.add_argument("--model", required=True, help="model.onnx (needs calibkit[onnx]) or graph.json")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 unless the check is clean (the default since issues exit 1; kept for scripts)",
    )
    q.add_argument(
        "--report-only", action="store_true", help="exit 0 even when the check finds issues"
    )
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
    """Show library warnings as one-line CLI messages (errors go to the boundary in main)."""

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
        return False


def _read_any(path, fmt):
    from ..cache.formats import read_scales

    return read_scales(path, fmt)


def _fmt_float(value: float) -> str:
    return f"{value:.6g}"


def _cmd_cache_show(args) -> int:
    """Print a cache's header and its tensors (scale, amax, hex)."""
    import json

    from ..cache.formats import to_json_dict

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

    from ..cache.diff import diff_caches

    with _CacheCommand():
        a, _ = _read_any(args.a, args.from_format)
        b, _ = _read_any(args.b, args.from_format)
    histograms = None
    if args.stats:
        from ..stats import load_stats

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

    from ..cache.formats import FORMATS, format_for_path, write_scales

    same_suffix = Path(path).suffix.lower() == Path(args.file).suffix.lower()
    target = fmt or (source_fmt if same_suffix else format_for_path(path))
    header_given = bool(getattr(args, "trt_version", None) or getattr(args, "algorithm", None))
    if header_given and not FORMATS[target][2]:
        if fmt is not None:
            msg = (
                f"--trt-version/--algorithm set a TensorRT header, which format {fmt!r} does not "
                "hold; use --to trt (or --to json), or drop the header options"
            )
            raise CalibkitError(msg)
        # An explicit TensorRT header asks for a TensorRT cache, whatever the suffix suggests
        # (calibration.cache -> trt.cache would otherwise stay onnxruntime's text format).
        target = "trt"
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
    from ..cache.edit import retarget

    check_outputs(args.output)
    with _CacheCommand():
        cache, fmt = _read_any(args.file, args.from_format)
        if args.trt_version or args.algorithm:
            cache = retarget(cache, trt_version=args.trt_version, algorithm=args.algorithm)
        if args.model:
            cache = _keep_model_tensors(cache, args.model)
        written = _write_any(args.output, cache, args.to, fmt, args)
    print(f"{args.output}: {written}, {len(cache.scales)} tensors")
    return 0


def _keep_model_tensors(cache, model):
    import warnings

    from ..cache.check import read_model_graph
    from ..cache.edit import drop_tensors

    graph, _ = read_model_graph(model)
    known = set(graph.tensors) | set(graph.initializers)
    others = [name for name in cache.scales if name not in known]
    if others:
        warnings.warn(
            f"{len(others)} tensor(s) not in {model} left out (e.g. {others[0]!r})", stacklevel=2
        )
    return drop_tensors(cache, others)


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
    from ..cache.edit import clamp_amax, drop_tensors, retarget, select_tensors, set_scales

    check_outputs(args.output)
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

    from ..cache.check import check_cache, read_model_graph

    with _CacheCommand():
        cache, _ = _read_any(args.file, args.from_format)
        graph, float_tensors = read_model_graph(args.model)
    report = check_cache(cache, graph, float_tensors=float_tensors)
    if args.strict and args.report_only:
        msg = "--strict and --report-only contradict each other; give one"
        raise CalibkitError(msg)
    status = 0 if report.ok or args.report_only else 1
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


def register(sub) -> None:
    """Add this group's sub-commands to `sub` (an argparse subparsers object)."""
    _add_cache(sub)
