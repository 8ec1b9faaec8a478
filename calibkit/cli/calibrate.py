"""``calibkit calibrate`` (recorded activations or an ONNX model) and ``calibkit select``."""

from __future__ import annotations

import logging
import re
import sys

from ..atomic import atomic_outputs, check_output_dir, check_outputs
from ..errors import CalibkitError
from ._warnings import shown_warnings
from .argtypes import (
    finite_float,
    float_list,
    non_negative_int,
    positive_float,
    positive_int,
    regex,
)

logger = logging.getLogger(__name__)

_ALGORITHM_HELP = (
    "entropy2 (default), entropy, minmax, percentile:<p>, legacy:<quantile>:<cutoff>, mse; "
    "entropy variants as entropy2:<preset or key=value,...>; aliases as TensorRT and "
    "onnxruntime spell them: EntropyCalibration2, EntropyCalibration, MinMaxCalibration, "
    "MinMax, max, LegacyCalibration (docs/algorithms.md)"
)


#: ``--data`` and the spellings Polygraphy users type for the same thing: one option, one dest.
DATA_FLAGS = ("--data", "--data-loader-script", "--load-inputs")


def add_data_option(p, help: str, **kwargs) -> None:
    """Add ``--data`` (Polygraphy's spellings too) to a command that reads model inputs."""
    p.add_argument(*DATA_FLAGS, dest="data", help=help, **kwargs)


def add_share_option(p, what: str = "") -> None:
    """``--share-scales``, with its one default, for every command that makes scales."""
    p.add_argument(
        "--share-scales",
        default="trt",
        metavar="RULES",
        help=(
            f"TensorRT's scale sharing{what}: trt (default: the rules of the target TensorRT "
            "version; pooling outputs take their input's scale, and up to 8.0 Concat inputs "
            "the output's; needs the graph an ONNX calibration records), none, P or P,C "
            "(docs/sharing.md)"
        ),
    )


def add_header_option(p) -> None:
    """``--header-algorithm``: the TensorRT calibrator a cache is for."""
    p.add_argument(
        "--header-algorithm",
        choices=(
            "EntropyCalibration2",
            "EntropyCalibration",
            "MinMaxCalibration",
            "LegacyCalibration",
        ),
        help=(
            "cache header word: the TensorRT calibrator class the cache is deployed with "
            "(default: the one the algorithm emulates; percentile, mse: EntropyCalibration2, "
            "with a warning; docs/algorithms.md)"
        ),
    )


def _add_calibrate(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="compute a TensorRT calibration cache from recorded activations or an ONNX model",
        description=(
            "Compute the calibration cache TensorRT's calibrator would write. SOURCE is an .npz "
            "of recorded activations (key = tensor name, first axis = calibration batch, in "
            "order), an ONNX model (with --data), or a PyTorch model factory MODULE:FACTORY or "
            "FILE.py:FACTORY (with --data, a loader script; docs/torch.md)."
        ),
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="activations .npz, MODEL.onnx, or MODULE:FACTORY / FILE.py:FACTORY (PyTorch)",
    )
    p.add_argument("-a", "--algorithm", default="entropy2", help=_ALGORITHM_HELP)
    p.add_argument(
        "--trt-version",
        required=True,
        help="TensorRT version the cache is for, e.g. 8.6.1 or 10.16 (it is in the header)",
    )
    p.add_argument("-o", "--output", required=True, help="cache file to write")
    p.add_argument(
        "--num-bins",
        type=positive_int,
        default=2048,
        help="histogram bins per tensor (TensorRT: 2048)",
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
    add_data_option(
        p,
        metavar="DATA",
        help=(
            "calibration inputs of a model SOURCE. ONNX: X.npy (one input, first axis = "
            "samples), X.npz (keyed by input name), a folder of per-sample .npy/.npz files or "
            "of images (with --preprocess), a loader script FILE.py[:FUNCTION] (default "
            "load_data) returning an iterable of {input name: array} batches, or Polygraphy's "
            "--save-inputs X.json. PyTorch: a loader script whose items are batches: a dict is "
            "model(**batch), a tuple or list model(*batch), an array or tensor model(batch). "
            "calibkit runs a loader script: give only one you trust (Polygraphy's spellings "
            "--data-loader-script and --load-inputs are accepted)"
        ),
    )
    add_share_option(p)
    add_header_option(p)
    _CALIBRATE_EXTENSIONS.append(p)
    p.set_defaults(func=_cmd_calibrate, kind_options={})


_CALIBRATE_EXTENSIONS: list = []  # the calibrate parser, for sections that add options to it
_CALIBRATE_HANDLERS: dict = {}  # source kind (a suffix, or TORCH) -> handler(args)

#: The kind of a PyTorch SOURCE in _CALIBRATE_HANDLERS (a suffix always starts with a dot).
TORCH = "torch"

# MODULE:FACTORY (dotted names) or FILE.py:FACTORY; FACTORY may be dotted (Zoo.small).
_ENTRY_POINT = re.compile(
    r"(?:[^:]+\.py|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
)


def source_kind(source: str) -> str:
    """Return the key of ``_CALIBRATE_HANDLERS`` for SOURCE: its suffix, or TORCH.

    An existing file is always a file (its suffix), whatever its name looks like; otherwise a
    ``MODULE:FACTORY`` or ``FILE.py:FACTORY`` is a PyTorch entry point. torch is not imported.
    """
    from pathlib import Path

    path = Path(source)
    if not path.exists() and _ENTRY_POINT.fullmatch(source):
        return TORCH
    return path.suffix.lower()


def _reject_options(args, kind: str) -> None:
    """Refuse the PyTorch options for a file SOURCE and the ONNX ones for a PyTorch SOURCE.

    Silently ignoring them would mislead (``--modules`` on an ONNX model, ``--batch-size`` on
    a loader whose items are the batches). ``args.kind_options`` maps each of the two kinds to
    its options' (dest, default, flag).
    """
    for owner, options in args.kind_options.items():
        if (owner == TORCH) == (kind == TORCH):
            continue
        for dest, default, flag in options:
            if getattr(args, dest) != default:
                what = "a PyTorch SOURCE (MODULE:FACTORY)" if owner == TORCH else "an ONNX model"
                msg = f"{flag} applies to {what}, not to {args.source}"
                raise CalibkitError(msg)


def _cmd_calibrate(args) -> int:
    """Compute a TensorRT calibration cache from recorded activations, or dispatch by kind."""
    from ..collect import HistogramCollector
    from ..data.activations import iter_recorded_batches
    from ..pipeline import check_cache_header, check_share_scales
    from ..selectors import make_selector
    from ..stats import default_stats_path

    kind = source_kind(args.source)
    if kind in (".npz", *_CALIBRATE_HANDLERS):
        _reject_options(args, kind)
    if kind in _CALIBRATE_HANDLERS:
        return _CALIBRATE_HANDLERS[kind](args)
    if kind != ".npz":
        kinds = ", ".join(sorted({".npz", *_CALIBRATE_HANDLERS} - {TORCH}))
        msg = (
            f"{args.source}: unsupported source; expected one of {kinds} or a PyTorch "
            "MODULE:FACTORY"
        )
        raise CalibkitError(msg)
    no_stats = getattr(args, "no_save_histograms", False)
    stats = None if no_stats else (args.save_histograms or default_stats_path(args.output))
    with atomic_outputs(args.output, stats):  # both files or neither, paths checked first
        selector = make_selector(args.algorithm)
        check_share_scales(args.share_scales)
        check_cache_header(selector, args.trt_version, args.header_algorithm)  # before the work
        collector = HistogramCollector(args.num_bins, nan_policy=args.nan)
        for batch in iter_recorded_batches(args.source):
            collector.update(batch)
        selection, cache = _select_and_write(
            args, selector, collector.histograms_, stats, "activations", collector.n_batches_
        )
    _report_nan(collector.histograms_)
    _print_written(args, selection, cache, collector.n_batches_, stats)
    return 0


def _select_and_write(args, selector, histograms, stats, source_kind, num_batches, data=None):
    """Select the scales of graph-less statistics; stage the cache and the statistics file.

    For recorded activations and PyTorch runs: they carry no graph, so the sharing rules have
    nothing to act on (``describe_sharing`` says so). Returns (the selection, the cache).
    """
    from ..cache.format import write_cache
    from ..pipeline import select_scales
    from ..stats import StatsSettings, save_stats

    with shown_warnings("calibrate"):
        selection = select_scales(
            histograms,
            selector,
            trt_version=args.trt_version,
            share_scales=args.share_scales,
            header_algorithm=args.header_algorithm,
        )
        cache = selection.cache()
    write_cache(args.output, cache)
    if stats is not None:
        settings = StatsSettings(
            source_kind=source_kind,
            source=str(args.source),
            data=data,
            algorithm=selector.spec,
            num_bins=args.num_bins,
            trt_version=args.trt_version,
            share_scales=args.share_scales,
            nan_policy=args.nan,
            num_batches=num_batches,
        )
        save_stats(stats, histograms, settings=settings)
    return selection, cache


def _print_written(args, selection, cache, num_batches, stats) -> None:
    """Print what was written (after the files are in place) and the sharing line."""
    print(
        f"{args.output}: {len(selection.amax)} tensors from {num_batches} batches "
        f"({selection.selector.spec}, {cache.to_bytes().splitlines()[0].decode()})"
        + (f"; statistics in {stats}" if stats else "")
    )
    print(selection.describe_sharing())


def _report_nan(histograms) -> None:
    """Say how many NaN values ``--nan skip`` left out, per tensor (never silently)."""
    skipped = {name: h.num_nan for name, h in histograms.items() if h.num_nan}
    if skipped:
        worst = sorted(skipped.items(), key=lambda kv: -kv[1])[:3]
        listed = ", ".join(f"{name!r}: {n}" for name, n in worst)
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        print(
            f"warning: skipped {sum(skipped.values())} NaN value(s) in {len(skipped)} "
            f"tensor(s) ({listed}{more})",
            file=sys.stderr,
        )


def _add_calibrate_onnx(sub) -> None:
    """Add the ONNX-model options to the core section's ``calibrate`` parser."""
    if not _CALIBRATE_EXTENSIONS:
        return
    p = _CALIBRATE_EXTENSIONS[-1]  # the parser the core section made in this build_parser call
    g = p.add_argument_group("ONNX model (SOURCE = MODEL.onnx, run on the CPU by onnxruntime)")
    g.add_argument(
        "--batch-size", type=positive_int, help="samples per batch (default: model's, else 8)"
    )
    g.add_argument("--max-samples", type=positive_int, help="stop after this many samples")
    g.add_argument("--shuffle", action="store_true", help="visit samples in a random order")
    g.add_argument("--seed", type=non_negative_int, default=0, help="seed of --shuffle (default 0)")
    g.add_argument(
        "--tensors", type=regex, metavar="REGEX", help="calibrate only tensors matching REGEX"
    )
    g.add_argument(
        "--preprocess",
        metavar="PRESET",
        help="image preprocessing: imagenet, efficientnet-lite, unit (x/255) or raw",
    )
    g.add_argument("--resize", help="images: shorter side N, or HxW exactly")
    g.add_argument("--crop", help="images: centre crop HxW or N (default: the model's size)")
    g.add_argument("--scale", type=finite_float, help="images: multiply pixels (0..255) by this")
    g.add_argument(
        "--mean",
        type=float_list(finite_float),
        help="images: subtracted after --scale, one value or R,G,B",
    )
    g.add_argument(
        "--std",
        type=float_list(positive_float),
        help="images: divisor after --mean, one value or R,G,B",
    )
    g.add_argument("--layout", choices=("NCHW", "NHWC"), help="images: default from the model")
    g.add_argument("--channels", choices=("RGB", "BGR", "L"), help="images: default RGB (or L)")
    g.add_argument(
        "--max-tensors-per-run",
        type=positive_int,
        metavar="N",
        help="read at most N tensors per onnxruntime run (less memory; one run per group)",
    )
    g.add_argument(
        "--optimization",
        choices=("disable", "basic", "extended", "all"),
        default="disable",
        help="onnxruntime graph optimisation (default disable: the graph as given)",
    )
    g.add_argument(
        "--threads", type=positive_int, help="onnxruntime threads (default: one per core)"
    )
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
        metavar="NAME=DxD...",  # also Polygraphy's NAME:[D,D,...] and NAME:DxD
        help=(
            "feed input NAME at this shape, as TensorRT does with dynamic shapes (it reads the "
            "calibration profile's opt shape from the start of each batch); repeatable"
        ),
    )
    g.add_argument(
        "--no-save-histograms",
        action="store_true",
        help=(
            "do not write the statistics (default: next to the cache, MODEL.stats.npz). Saving "
            "them means 2048-bin histograms of every tensor; with --algorithm minmax and this "
            "flag only the max |x| is collected, a max pass instead (same cache)"
        ),
    )
    g.add_argument(
        "--no-overlap",
        action="store_true",
        help=(
            "run onnxruntime and the binning one after the other (default: bin a batch while "
            "the next one runs, faster but one more batch of activations in memory)"
        ),
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    g.add_argument(
        "--table",
        type=non_negative_int,
        default=30,
        metavar="ROWS",
        help="per-tensor rows to print (30)",
    )
    p.get_default("kind_options")["onnx"] = _options_of(g, keep={"no_save_histograms"})


def _options_of(group, keep=frozenset()) -> list[tuple[str, object, str]]:
    """(dest, default, longest flag) of every option in an argparse group, but those in `keep`."""
    return [
        (a.dest, a.default, max(a.option_strings, key=len))
        for a in group._group_actions  # argparse keeps a group's actions here
        if a.dest not in keep
    ]


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

    from ..data.sources import PRESETS, ImagePreprocess

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
    from ..stats import default_stats_path

    if not args.data:
        msg = f"{args.source}: an ONNX model needs calibration inputs: --data DATA"
        raise CalibkitError(msg)
    stats_path = None
    if not args.no_save_histograms:
        stats_path = args.save_histograms or default_stats_path(args.output)
    with atomic_outputs(args.output, stats_path):  # checked now, before the model runs
        done = _calibrate_onnx_run(args)
    print(done)  # after the files are in place
    return 0


def _calibrate_onnx_run(args) -> str:
    """Run the calibration, print its tables, stage the files; return the closing line."""
    from ..data.sources import parse_shape
    from ..onnx.calibrate import (
        calibrate_onnx,
        format_amax_table,
        format_input_table,
        format_summary,
    )

    with shown_warnings("calibrate"):
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
            header_algorithm=args.header_algorithm,
            histograms=not args.no_save_histograms,
            overlap=not args.no_overlap,
        )
    stats = result.write(
        args.output, args.save_histograms, save_stats_file=not args.no_save_histograms
    )
    print(format_input_table(result.inputs))
    if args.table:
        print()
        print(format_amax_table(result.histograms, result.amax, limit=args.table))
    print()
    print(format_summary(result))
    _report_nan(result.histograms)
    header = result.cache.to_bytes().split(b"\n", 1)[0].decode()
    return f"wrote {args.output} ({header})" + (f" and {stats}" if stats else "")


_CALIBRATE_HANDLERS[".onnx"] = _cmd_calibrate_onnx


def _add_calibrate_torch(sub) -> None:
    """Add the PyTorch options to the core section's ``calibrate`` parser."""
    if not _CALIBRATE_EXTENSIONS:
        return
    p = _CALIBRATE_EXTENSIONS[-1]
    g = p.add_argument_group(
        "PyTorch model (SOURCE = MODULE:FACTORY or FILE.py:FACTORY, a function returning the "
        "torch.nn.Module; pip install -e '.[torch]'; docs/torch.md)"
    )
    g.add_argument(
        "--device",
        help="where the model runs: cpu, cuda, cuda:1 ... (default: cuda if torch sees a GPU)",
    )
    g.add_argument(
        "--dtype",
        choices=("float32", "float16", "bfloat16"),
        help="convert the model and the floating-point inputs (default: as built and as given)",
    )
    g.add_argument(
        "--modules",
        action="append",
        metavar="PATTERN",
        help=(
            "record the outputs of modules whose path matches this glob (layer*.conv?); "
            "repeatable (default: every leaf module)"
        ),
    )
    g.add_argument(
        "--no-inputs", action="store_true", help="do not record the model's inputs (input.0...)"
    )
    g.add_argument(
        "--onnx",
        metavar="MODEL.onnx",
        help=(
            "the same model exported by torch.onnx.export(..., dynamo=True): key the cache by "
            "its tensor names, which TensorRT looks up (default: module paths, which it does not)"
        ),
    )
    p.get_default("kind_options")[TORCH] = _options_of(g)


def _cmd_calibrate_torch(args) -> int:
    """Calibrate a PyTorch model (MODULE:FACTORY) on a loader script's batches."""
    from .._optional import require
    from ..pipeline import check_cache_header, check_share_scales
    from ..selectors import make_selector
    from ..stats import default_stats_path

    if not args.data:
        msg = f"{args.source}: a PyTorch model needs calibration inputs: --data LOADER.py"
        raise CalibkitError(msg)
    stats = None
    if not args.no_save_histograms:
        stats = args.save_histograms or default_stats_path(args.output)
    with atomic_outputs(args.output, stats):  # both files or neither, paths checked first
        selector = make_selector(args.algorithm)
        check_share_scales(args.share_scales)
        check_cache_header(selector, args.trt_version, args.header_algorithm)
        require("torch", f"calibrating a PyTorch model ({args.source})")
        onnx_model = _read_onnx(args.onnx) if args.onnx else None  # before the model runs
        from ..torch.entry import collect_entry_point

        collector = collect_entry_point(
            args.source,
            args.data,
            device=args.device,
            dtype=args.dtype,
            modules=args.modules,
            inputs=not args.no_inputs,
            num_bins=args.num_bins,
            nan_policy=args.nan,
        )
        histograms = collector.histograms_
        if onnx_model is not None:
            histograms = _onnx_keyed(args.onnx, onnx_model, collector)
        selection, cache = _select_and_write(
            args, selector, histograms, stats, "torch", collector.n_batches_, str(args.data)
        )
    _report_nan(histograms)
    if onnx_model is None:
        print(
            f"names: {len(histograms)} module paths (no --onnx): TensorRT will not find these "
            "names; give the model exported by torch.onnx.export(..., dynamo=True) as --onnx"
        )
    _print_written(args, selection, cache, collector.n_batches_, stats)
    return 0


def _read_onnx(path: str):
    """Read the --onnx model's ModelProto (weights left on disk: only the names are read)."""
    from ..onnx.model import OnnxModel

    return OnnxModel.load(path).proto


def _onnx_keyed(path: str, proto, collector) -> dict:
    """Key the collector's histograms by the --onnx model's tensor names; say what was not."""
    from ..errors import ModelFormatError
    from ..torch import onnx_names

    try:
        names = onnx_names(proto, collector.origins_)
    except ValueError as err:  # exported without module scopes (TorchScript exporter)
        msg = f"{path}: {err}"
        raise ModelFormatError(msg) from err
    histograms = collector.histograms_
    print(f"names: {len(names.mapping)} of {len(histograms)} recorded tensors mapped to {path}")
    if names.unmapped:
        shown = "; ".join(f"{k!r}: {why}" for k, why in list(names.unmapped.items())[:3])
        more = f"; ... {len(names.unmapped) - 3} more" if len(names.unmapped) > 3 else ""
        print(
            f"warning: {len(names.unmapped)} recorded tensor(s) have no tensor in {path} and are "
            f"left out of the cache ({shown}{more})",
            file=sys.stderr,
        )
    if not names.mapping:
        msg = f"{path}: none of the {len(histograms)} recorded tensors maps to a tensor of it"
        raise ModelFormatError(msg)
    return {new: histograms[old] for old, new in names.mapping.items()}


_CALIBRATE_HANDLERS[TORCH] = _cmd_calibrate_torch


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
    p.add_argument("-a", "--algorithm", help=_ALGORITHM_HELP.replace(" (default)", ""))
    p.add_argument(
        "--all", action="store_true", help="write one cache per algorithm into the -o folder"
    )
    p.add_argument(
        "--trt-version", help="TensorRT version for the header (default: the recorded one)"
    )
    p.add_argument("-o", "--output", required=True, help="cache file (a folder with --all)")
    add_share_option(p)
    add_header_option(p)
    p.set_defaults(func=_cmd_select)


def _cmd_select(args) -> int:
    """Recompute a cache with another algorithm from saved statistics (no model run)."""
    from ..cache.format import write_cache
    from ..pipeline import scales_from_stats, select_all
    from ..stats import load_stats

    if args.all == bool(args.algorithm):
        msg = "give either --algorithm SPEC (one cache) or --all (one cache per algorithm)"
        raise CalibkitError(msg)
    if args.all:
        check_output_dir(args.output)
    else:
        check_outputs(args.output)
    stats = load_stats(args.stats)
    options = {
        "trt_version": args.trt_version,
        "share_scales": args.share_scales,
        "header_algorithm": args.header_algorithm,
    }
    with shown_warnings("select"), atomic_outputs():  # every cache of --all, or none
        if args.all:
            for spec, path in select_all(stats, args.output, **options).items():
                print(f"{spec:20s} {path}")
            # the rules move the same tensors whatever the algorithm: say it once
            result = scales_from_stats(stats, "minmax", **options)
        else:
            result = scales_from_stats(stats, args.algorithm, **options)
            cache = result.cache()
            write_cache(args.output, cache)
            header = cache.to_bytes().split(b"\n", 1)[0].decode()
            print(f"wrote {args.output}: {len(cache.scales)} tensors ({header})")
    print(result.describe_sharing())
    return 0


def register(sub) -> None:
    """Add this group's sub-commands to `sub` (an argparse subparsers object)."""
    _add_calibrate(sub)
    _add_calibrate_onnx(sub)
    _add_calibrate_torch(sub)
    _add_select(sub)
