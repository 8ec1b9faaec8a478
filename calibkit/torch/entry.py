"""Calibrate a PyTorch model named by an entry point, on batches from a loader script.

What ``calibkit calibrate MODULE:FACTORY --data loader.py`` runs:

- :func:`load_model` imports ``MODULE`` (a dotted module name, or a ``.py`` file path),
  calls ``FACTORY`` (dotted attributes allowed) with no arguments and checks that it returned a
  ``torch.nn.Module``, which it puts in eval mode on the device and dtype asked for;
- :func:`load_batches` reads a Polygraphy-style loader script (``loader.py[:FUNCTION]``,
  default ``load_data``), imported as the ONNX path imports it;
- :func:`batch_arguments` turns one loader item into the forward's arguments: a mapping is
  ``model(**item)``, a tuple or list ``model(*item)``, one array or tensor ``model(item)``;
- :func:`collect_entry_point` runs every batch under ``torch.inference_mode()`` inside
  :func:`calibkit.torch.collect`.

Failures are one line each (:class:`~calibkit.errors.EntryPointError`, or
:class:`~calibkit.data.sources.DataError` for the loader), naming the file, the batch index and
what was expected.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.sources import DataError, _load_script, _script_error, _script_items
from ..errors import CalibkitError, EntryPointError
from .hooks import TorchCollector, collect

__all__ = [
    "DTYPES",
    "batch_arguments",
    "collect_entry_point",
    "default_device",
    "load_batches",
    "load_model",
    "split_entry_point",
]

#: ``--dtype`` names.
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

_MODEL_SCRIPT = "model script"


def split_entry_point(spec: str) -> tuple[str, str]:
    """Split ``MODULE:FACTORY`` at its last colon; raise EntryPointError if it has none."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        msg = f"{spec}: expected MODULE:FACTORY or FILE.py:FACTORY"
        raise EntryPointError(msg)
    return target, attr


def default_device() -> str:
    """``"cuda"`` where torch sees a GPU, else ``"cpu"`` (the CLI's ``--device`` default)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _import_factory(spec: str) -> tuple[Any, Path | None]:
    """Return (the object named by `spec`, the file it was imported from)."""
    target, attr = split_entry_point(spec)
    if target.endswith(".py"):
        func, _, path = _load_script(spec, role=_MODEL_SCRIPT, default=attr)
        return func, path
    if "/" in target or os.sep in target:
        msg = f"{spec}: {target} is a path but not a .py file; expected FILE.py:FACTORY"
        raise EntryPointError(msg)
    # As uvicorn and gunicorn do: the current directory leads sys.path while the module is
    # found and imported, so `calibkit calibrate mypkg.models:make` finds ./mypkg from the
    # console script (whose sys.path[0] is its bin folder); removed again afterwards.
    here = os.getcwd()
    sys.path.insert(0, here)
    try:
        module, origin = _import_module(spec, target)
    finally:
        if here in sys.path:
            sys.path.remove(here)
    obj: Any = module
    for i, part in enumerate(attr.split(".")):
        if not hasattr(obj, part):
            owner = ".".join([target, *attr.split(".")[:i]])
            msg = f"{spec}: {owner} has no attribute {part!r}"
            raise EntryPointError(msg)
        obj = getattr(obj, part)
    return obj, origin


def _import_module(spec: str, target: str) -> tuple[Any, Path | None]:
    """Import the module `target`; return it and its file (None for a namespace package)."""
    try:
        found = importlib.util.find_spec(target)  # imports the parent packages
    except ModuleNotFoundError:  # a parent package is missing
        found = None
    except (Exception, SystemExit) as err:  # a parent package fails on import
        msg = f"{spec}: importing {target} failed: {_one_line(err)}"
        raise EntryPointError(msg) from err
    if found is None:
        msg = (
            f"{spec}: no module named {target!r} (not installed, and not in the current "
            "directory); give a file as FILE.py:FACTORY"
        )
        raise EntryPointError(msg)
    origin = Path(found.origin) if found.origin and os.path.isfile(found.origin) else None
    try:
        return importlib.import_module(target), origin
    except (Exception, SystemExit) as err:  # the module's own failure, not ours
        if origin is None:
            msg = f"{target}: the model module failed on import: {_one_line(err)}"
            raise EntryPointError(msg) from err
        raise _script_error(err, origin, "on import", role="model module") from err


def load_model(
    spec: str, *, device: str | torch.device | None = None, dtype: str | None = None
) -> torch.nn.Module:
    """Import and call the model factory `spec`; return its model, in eval mode, on `device`.

    Parameters
    ----------
    spec : str
        ``MODULE:FACTORY`` (an importable module; the current directory is searched first) or
        ``FILE.py:FACTORY`` (its folder leads ``sys.path`` while it is imported, as for a
        loader script). ``FACTORY`` may be dotted (``Zoo.small``) and is called with no
        arguments.
    device : str or torch.device, optional
        Where the model runs; default :func:`default_device`.
    dtype : {"float32", "float16", "bfloat16"}, optional
        Convert the model's floating-point parameters and buffers (default: as built).

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    EntryPointError
        Module or attribute missing, the factory failing or returning no Module, a device
        torch cannot use.
    DataError, FileNotFoundError
        From importing a ``.py`` file (its own line named).
    """
    if dtype is not None and dtype not in DTYPES:
        msg = f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}"
        raise EntryPointError(msg)
    target_device = _device(device)
    factory, origin = _import_factory(spec)
    if not callable(factory):
        msg = f"{spec}: is a {type(factory).__name__}, expected a function returning the model"
        raise EntryPointError(msg)
    try:
        model = factory()
    except (Exception, SystemExit) as err:
        if origin is None:
            msg = f"{spec}: the model factory failed: {_one_line(err)}"
            raise EntryPointError(msg) from err
        raise _script_error(err, origin, "when called", role=f"model factory {spec}") from err
    if not isinstance(model, torch.nn.Module):
        msg = f"{spec}: returned a {type(model).__name__}, expected a torch.nn.Module"
        raise EntryPointError(msg)
    try:
        model = model.eval().to(target_device)
        if dtype is not None:
            model = model.to(DTYPES[dtype])
    except (RuntimeError, AssertionError, TypeError) as err:  # no CUDA build, a bad index
        msg = f"{spec}: cannot move the model to {target_device}: {_one_line(err)}"
        raise EntryPointError(msg) from err
    return model


def _device(device: str | torch.device | None) -> torch.device:
    try:
        return torch.device(device if device is not None else default_device())
    except (RuntimeError, TypeError) as err:
        msg = f"device {device!r}: {_one_line(err)} (e.g. cpu, cuda, cuda:1)"
        raise EntryPointError(msg) from err


def _one_line(err: BaseException) -> str:
    """``Type: first line of the message`` (torch's messages run to many lines)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def load_batches(data: str) -> tuple[Iterator[tuple[int, Any]], str]:
    """Import the loader script `data` (``FILE.py[:FUNCTION]``); return its items and its name.

    The script is imported as the ONNX path imports it (its folder leads ``sys.path`` while
    it is imported; calibkit runs it, so give only one you trust). Its function is called when
    the first item is asked for; each item is one batch.

    Raises
    ------
    DataError, FileNotFoundError
        Not a ``.py`` loader, missing, or failing (its own file and line named).
    """
    text = os.fspath(data)
    if not (text.endswith(".py") or ".py:" in text):
        msg = (
            f"{text}: a PyTorch model reads its batches from a loader script FILE.py[:FUNCTION] "
            "(default load_data) returning an iterable of batches"
        )
        raise DataError(msg)
    func, where, script = _load_script(text)
    return _script_items(func, where, script, "batches"), where


def batch_arguments(
    item: Any,
    where: str,
    *,
    device: str | torch.device = "cpu",
    dtype: str | None = None,
) -> tuple[tuple, dict]:
    """Turn one loader item into ``(args, kwargs)`` for the forward, as tensors on `device`.

    A mapping gives keyword arguments, a tuple or list positional ones, one array or tensor the
    one argument. NumPy arrays become tensors; floating-point ones take `dtype` if given.

    Raises
    ------
    DataError
        For an item (or a value in it) that is none of those; `where` names the batch.
    """
    target = torch.device(device)
    cast = DTYPES[dtype] if dtype is not None else None

    def tensor(value: Any, what: str) -> torch.Tensor:
        if isinstance(value, np.ndarray):
            try:
                value = torch.from_numpy(value if value.flags.writeable else value.copy())
            except TypeError as err:  # object, string or unsigned dtypes torch lacks
                msg = f"{where}: {what} has dtype {value.dtype}, which torch cannot hold"
                raise DataError(msg) from err
        elif not isinstance(value, torch.Tensor):
            msg = f"{where}: {what} is a {type(value).__name__}, expected an array or a tensor"
            raise DataError(msg)
        if cast is not None and value.is_floating_point():
            return value.to(target, cast)
        return value.to(target)

    if isinstance(item, Mapping):
        bad = [k for k in item if not isinstance(k, str)]
        if bad:
            msg = f"{where}: key {bad[0]!r} is not a str (a mapping is model(**batch))"
            raise DataError(msg)
        return (), {k: tensor(v, f"argument {k!r}") for k, v in item.items()}
    if isinstance(item, (tuple, list)):
        return tuple(tensor(v, f"argument {i}") for i, v in enumerate(item)), {}
    if isinstance(item, (np.ndarray, torch.Tensor)):
        return (tensor(item, "the batch"),), {}
    msg = (
        f"{where} is a {type(item).__name__}; expected a dict (model(**batch)), a tuple or "
        "list (model(*batch)), or one array or tensor (model(batch))"
    )
    raise DataError(msg)


def _check_patterns(model: torch.nn.Module, patterns: Iterable[str]) -> None:
    """Every ``--modules`` pattern must match some module: a typo would record nothing."""
    paths = [path for path, _ in model.named_modules()]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(path, pattern) for path in paths):
            shown = ", ".join(repr(p) for p in paths[1:6]) or "none"
            more = ", ..." if len(paths) > 6 else ""
            msg = f"modules pattern {pattern!r} matches no module of the model ({shown}{more})"
            raise EntryPointError(msg)


def collect_entry_point(
    spec: str,
    data: str,
    *,
    device: str | torch.device | None = None,
    dtype: str | None = None,
    modules: str | Iterable[str] | None = None,
    inputs: bool = True,
    num_bins: int = 2048,
    nan_policy: str = "raise",
) -> TorchCollector:
    """Build the model of `spec`, run every batch of the loader `data` and return the collector.

    Parameters
    ----------
    spec, device, dtype
        As for :func:`load_model`.
    data : str
        A loader script, as for :func:`load_batches`.
    modules, inputs, num_bins, nan_policy
        As for :class:`~calibkit.torch.TorchCollector`.

    Returns
    -------
    TorchCollector
        Closed, with ``histograms_``, ``origins_`` and ``n_batches_``.

    Raises
    ------
    EntryPointError
        As :func:`load_model`; a forward that fails (the batch index and the exception's first
        line named); a loader that yields no batch.
    DataError
        A loader that fails or yields an item :func:`batch_arguments` refuses.
    """
    patterns = [modules] if isinstance(modules, str) else list(modules or ())
    target = _device(device)
    model = load_model(spec, device=target, dtype=dtype)
    _check_patterns(model, patterns)
    items, where = load_batches(data)
    with (
        torch.inference_mode(),
        collect(
            model,
            modules=patterns or None,
            inputs=inputs,
            num_bins=num_bins,
            nan_policy=nan_policy,
        ) as collector,
    ):
        for i, item in items:
            args, kwargs = batch_arguments(item, f"{where}: batch {i}", device=target, dtype=dtype)
            try:
                model(*args, **kwargs)
            except CalibkitError:  # NaN under nan_policy="raise": already names tensor, batch
                raise
            except Exception as err:  # the model's own failure on this batch
                msg = f"{spec}: batch {i} (from {where}): the forward failed: {_one_line(err)}"
                raise EntryPointError(msg) from err
    if collector.n_batches_ == 0:
        msg = f"{where}: yielded no batches"
        raise EntryPointError(msg)
    return collector
