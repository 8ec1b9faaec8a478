"""Collect TensorRT-style statistics from a ``torch.nn.Module`` with forward hooks.

One forward of the model is one batch. Module outputs are named by module path (``layer1.0.conv1``);
a module called again in the same forward gets ``#1``, ``#2``... (``layer1.0.relu#2``), a module
returning several tensors ``.0``, ``.1`` (or ``.key`` for a mapping); the model's inputs are
``input.0``, ``input.1``... (``input.NAME`` for keyword arguments). CUDA tensors are binned on
their device by :class:`calibkit.torch.cuda.CudaHistograms`, CPU tensors by
:class:`calibkit.Histogram`; both give the same counts.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import NonFiniteError
from ..histogram import NAN_POLICIES, Histogram, _check_num_bins
from ..stats import Stats, StatsSettings, save_stats

if TYPE_CHECKING:
    from .cuda import CudaHistograms

__all__ = ["BACKENDS", "TorchCollector", "collect"]

BACKENDS = ("auto", "cpu")
_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _flatten(value, prefix: str) -> Iterable[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` for every floating-point tensor in a (nested) output."""
    if isinstance(value, torch.Tensor):
        if value.dtype in _FLOATS:
            yield prefix, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _flatten(item, f"{prefix}.{i}")


def _selected(
    model: torch.nn.Module, modules: str | Iterable[str] | None, types
) -> list[tuple[str, torch.nn.Module]]:
    """Return the (path, module) pairs to hook: leaves by default, else by pattern, type."""
    patterns = [modules] if isinstance(modules, str) else modules
    chosen = []
    for path, module in model.named_modules():
        if patterns is None and types is None:
            keep = next(module.children(), None) is None  # a leaf
        else:
            keep = patterns is None or any(fnmatch.fnmatchcase(path, p) for p in patterns)
            keep = keep and (types is None or isinstance(module, types))
        if keep:
            chosen.append((path, module))
    return chosen


class TorchCollector:
    """Histograms of a model's activations, batch by batch; use as a context manager.

    Parameters
    ----------
    model : torch.nn.Module
        The model; each call of it while the context is open is one batch.
    modules : str or iterable of str, optional
        Glob patterns (``fnmatch``) on module paths, e.g. ``"layer*.conv?"``. Default: every
        leaf module (one with no children).
    types : type or tuple of types, optional
        Keep only modules of these classes (with `modules`: both must hold).
    inputs : bool
        Also record the model's floating-point inputs (``input.0``...).
    num_bins : int
        Bins per histogram (TensorRT: 2048).
    nan_policy : {"raise", "skip"}
        As for :class:`calibkit.Histogram`. On CUDA the error comes at the end of the next
        batch (the check costs no wait) or on leaving the context.
    backend : {"auto", "cpu"}
        ``"auto"``: CUDA tensors are binned on their GPU, CPU tensors on the CPU; ``"cpu"``:
        every tensor is copied to the host and binned by :class:`calibkit.Histogram`.

    Attributes
    ----------
    histograms_ : dict of str to Histogram
        Filled when the context closes without error, in first-seen order.
    origins_ : dict of str to tuple
        Recorded name -> (module path, call in the forward, output key); inputs have the
        module path None. :func:`calibkit.torch.onnx_names` reads it.
    n_batches_ : int
        Forwards of `model` seen.

    Examples
    --------
    >>> with TorchCollector(model) as c:  # doctest: +SKIP
    ...     for x in loader:
    ...         model(x)
    >>> c.save("stats.npz")  # doctest: +SKIP
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        modules: str | Iterable[str] | None = None,
        types=None,
        inputs: bool = True,
        num_bins: int = 2048,
        nan_policy: str = "raise",
        backend: str = "auto",
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            msg = f"model must be a torch.nn.Module, got {type(model).__name__}"
            raise TypeError(msg)
        if nan_policy not in NAN_POLICIES:
            msg = f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}"
            raise ValueError(msg)
        if backend not in BACKENDS:
            msg = f"backend must be one of {BACKENDS}, got {backend!r}"
            raise ValueError(msg)
        self.model = model
        self.modules = modules
        self.types = types
        self.inputs = inputs
        self.num_bins = _check_num_bins(num_bins)
        self.nan_policy = nan_policy
        self.backend = backend
        self._handles: list = []
        self.histograms_: dict[str, Histogram] = {}
        self.origins_: dict[str, tuple[str | None, int, str]] = {}
        self.n_batches_ = 0

    # -- context ---------------------------------------------------------------------------

    def __enter__(self) -> TorchCollector:
        if self._handles:
            msg = "this collector is already open"
            raise RuntimeError(msg)
        targets = _selected(self.model, self.modules, self.types)
        if not targets and not self.inputs:
            msg = f"no module of the model matches modules={self.modules!r}, types={self.types!r}"
            raise ValueError(msg)
        self._cpu: dict[str, Histogram] = {}
        self._cuda: dict[torch.device, CudaHistograms] = {}
        self._sinks: dict[str, tuple] = {}  # name -> (device, the function that bins it)
        self._calls: dict[str, int] = {}
        self._depth = 0
        self.histograms_ = {}
        self.origins_ = {}
        self.n_batches_ = 0
        try:
            root = self.model
            self._handles.append(
                root.register_forward_pre_hook(self._begin, with_kwargs=True, prepend=True)
            )
            for path, module in targets:
                self._handles.append(module.register_forward_hook(self._hook(path)))
            self._handles.append(root.register_forward_hook(self._end, always_call=True))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._remove()
        if exc_type is None:
            self.histograms_ = self._results()
        self._cpu, self._cuda = {}, {}

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # -- hooks -----------------------------------------------------------------------------

    def _begin(self, module, args, kwargs):
        self._depth += 1
        if self._depth == 1:
            self._calls = {}
            if self.inputs:
                for value in (list(args), dict(kwargs)):
                    for name, t in _flatten(value, "input"):
                        self._record(name, t, (None, 0, name[len("input.") :]))

    def _end(self, module, args, output) -> None:
        self._depth -= 1
        if self._depth == 0:
            for state in self._cuda.values():
                state.end_batch()
            self.n_batches_ += 1

    def _hook(self, path: str):
        base = path or "output"

        def hook(module, args, output) -> None:
            call = self._calls.get(base, 0)
            self._calls[base] = call + 1
            name = base if call == 0 else f"{base}#{call}"
            for key, t in _flatten(output, name):
                self._record(key, t, (path, call, key[len(name) + 1 :]))

        return hook

    def _record(self, name: str, t: torch.Tensor, origin: tuple) -> None:
        sink = self._sinks.get(name)
        if sink is None:
            sink = self._sinks[name] = self._sink(name, t, origin)
        elif sink[0] is not None and t.device != sink[0]:
            msg = f"tensor {name!r} was binned on {sink[0]} and is now on {t.device}"
            raise ValueError(msg)
        sink[1](name, t)

    def _sink(self, name: str, t: torch.Tensor, origin: tuple):
        """Return (device, add) for a name seen for the first time (device None: any)."""
        self.origins_[name] = origin
        if t.is_cuda and self.backend == "auto":
            state = self._cuda.get(t.device)
            if state is None:
                from .cuda import CudaHistograms

                state = self._cuda[t.device] = CudaHistograms(
                    t.device, self.num_bins, nan_policy=self.nan_policy
                )
            return t.device, state.add
        self._cpu[name] = Histogram(self.num_bins)
        return (None if self.backend == "cpu" else t.device), self._fill_cpu

    def _fill_cpu(self, name: str, t: torch.Tensor) -> None:
        x = t.detach()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()  # exact; NumPy has no bfloat16
        try:
            self._cpu[name].fill(x.cpu().numpy(), nan_policy=self.nan_policy)
        except NonFiniteError as err:
            msg = f"tensor {name!r}, batch {self.n_batches_}: {err}"
            raise NonFiniteError(msg) from err

    def _results(self) -> dict[str, Histogram]:
        found = dict(self._cpu)
        for state in self._cuda.values():
            found.update(state.histograms())
        return {name: found[name] for name in self.origins_}

    # -- results ---------------------------------------------------------------------------

    @property
    def settings(self) -> StatsSettings:
        """What the statistics file records about this collection."""
        return StatsSettings(
            source_kind="torch",
            source=type(self.model).__qualname__,
            num_bins=self.num_bins,
            num_batches=self.n_batches_,
            nan_policy=self.nan_policy,
        )

    def stats(self, names: Mapping[str, str] | None = None) -> Stats:
        """Return the statistics as :class:`calibkit.stats.Stats`, optionally renamed.

        `names` maps recorded names to the names to save (e.g. :func:`onnx_names`); tensors
        not in it are left out.
        """
        hists = self.histograms_
        if names is not None:
            hists = {new: hists[old] for old, new in names.items() if old in hists}
        return Stats(dict(hists), self.settings)

    def save(self, path, *, names: Mapping[str, str] | None = None) -> Path:
        """Write the statistics file ``calibkit select`` reads; returns the path."""
        stats = self.stats(names)
        return save_stats(path, stats.histograms, settings=stats.settings)


def collect(model: torch.nn.Module, **kwargs) -> TorchCollector:
    """Return a :class:`TorchCollector` for `model` (keyword arguments as for the class)."""
    return TorchCollector(model, **kwargs)
