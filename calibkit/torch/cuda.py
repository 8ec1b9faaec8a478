"""TensorRT-style histograms of CUDA tensors, kept on the device, identical to the CPU's.

:class:`CudaHistograms` holds one histogram per name on one CUDA device, each a row of one
device array (counts, the launch's scratch counts, range, max, inf and NaN counts). A tensor is
binned when it is added, on the current stream: a forward hook's tensor may be overwritten by
a later in-place op (``ReLU(inplace=True)``, ``out += identity``), so nothing is queued. Each
tensor costs one cooperative launch (``_kernel.cu``: bin inside the range; the last block commits
and grows the range; the blocks that saw values above the old range wait for that and bin
them; a cooperative launch keeps every block resident, so the waiting ones cannot hold up the
rest), or two ordinary launches where the device has no cooperative launch. The host never
waits inside a batch:
:meth:`end_batch` reads the NaN rejections of the *previous* batch (one device-to-host copy per
batch, normally finished by then), and :meth:`histograms` copies everything back once.

The kernels are CUDA C++ compiled at first use by CuPy (NVRTC); docs/torch.md says why CuPy.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import MissingDependencyError, NonFiniteError
from ..histogram import NAN_POLICIES, Histogram, _check_num_bins

__all__ = ["MAX_CUDA_BINS", "CudaHistograms"]

MAX_CUDA_BINS = 4096  # the commit folds through 8 bytes of shared memory per bin (32 KiB)

_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}
_THREADS = 512
_BLOCKS_PER_SM = 2  # __launch_bounds__(512, 2): a grid of 2 blocks per SM is co-resident
_COOPERATIVE_LAUNCH = 95  # cudaDevAttrCooperativeLaunch
_MIN_BLOCK_BYTES = 64 << 10  # fewer, fuller blocks: each ends with up to num_bins atomics
# A block counts in 32-bit shared memory: it would take a tensor of 2**32 values per block
# (2**32 * 2 * SMs, over 10**12 values on an H100) to wrap, more than any GPU holds.
_SOURCE = Path(__file__).with_name("_kernel.cu")

# The fields after counts and scratch in a histogram's row (_kernel.cu's M_* constants).
_UPPER, _MAX, _INF, _NAN, _REJECTED = range(5)
_META = 12


def _cupy():
    """Import CuPy, or say how to install it."""
    try:
        import cupy
    except ImportError as err:
        msg = (
            "CUDA histograms need CuPy: pip install cupy-cuda12x (or cupy-cuda13x, matching "
            "torch.version.cuda), or collect(..., backend='cpu') to bin on the host"
        )
        raise MissingDependencyError(msg) from err
    return cupy


class _Kernels:
    """The compiled kernels (CuPy loads them on each device at its first launch there)."""

    def __init__(self, cooperative: bool) -> None:
        cupy = _cupy()
        self.cupy = cupy
        # CuPy makes every launch of a module's kernels cooperative, or none
        module = cupy.RawModule(
            code=_SOURCE.read_text(),
            options=("-std=c++17",),
            enable_cooperative_groups=cooperative,
        )
        self.bin = module.get_function("hist_pass")
        self.above = module.get_function("hist_above")
        self.streams: dict[int, object] = {}

    def stream(self, ptr: int):
        stream = self.streams.get(ptr)
        if stream is None:
            # CuPy 14 deprecates ExternalStream for Stream.from_external, which CuPy 12-13 lack;
            # both wrap the same raw stream handle torch gives us
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                stream = self.streams[ptr] = self.cupy.cuda.ExternalStream(ptr)
        return stream


@functools.cache
def _kernels(cooperative: bool) -> _Kernels:
    """Compile once per process and kind of launch (NVRTC; CuPy caches the binary on disk)."""
    return _Kernels(cooperative)


class CudaHistograms:
    """Histograms of |x| of CUDA tensors, keyed by name, with :class:`Histogram`'s semantics.

    Parameters
    ----------
    device : torch.device
        The CUDA device whose tensors this holds.
    num_bins : int
        Bins per histogram (a power of two up to ``MAX_CUDA_BINS``; TensorRT uses 2048).
    nan_policy : {"raise", "skip"}
        As for :class:`calibkit.Histogram`; under ``"raise"`` a tensor's batch with NaN is left
        out on the device and :class:`NonFiniteError` is raised at the end of the next batch
        (or by :meth:`histograms`), naming the tensor and the batch.
    fused : bool, optional
        Bin each tensor in one cooperative launch (default, where the device has them), or in
        two launches, the second binning the values above the old range (benchmarks/gpu.py
        times both).
    """

    def __init__(
        self,
        device: torch.device,
        num_bins: int = 2048,
        *,
        nan_policy: str = "raise",
        fused: bool | None = None,
    ) -> None:
        num_bins = _check_num_bins(num_bins)
        if num_bins > MAX_CUDA_BINS:
            msg = f"CUDA histograms support up to {MAX_CUDA_BINS} bins, got {num_bins}"
            raise ValueError(msg)
        if nan_policy not in NAN_POLICIES:
            msg = f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}"
            raise ValueError(msg)
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:  # "cuda": the current one
            # tensors report their index ("cuda:0"), and torch.device("cuda") != "cuda:0"
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.num_bins = num_bins
        self.nan_policy = nan_policy
        props = torch.cuda.get_device_properties(self.device)
        if fused is None:
            runtime = _cupy().cuda.runtime
            fused = bool(runtime.deviceGetAttribute(_COOPERATIVE_LAUNCH, self.device.index))
        self.fused = fused
        self._k = _kernels(fused)
        self._cupy_device = self._k.cupy.cuda.Device(self.device.index)
        self._max_blocks = _BLOCKS_PER_SM * props.multi_processor_count
        self._width = 2 * num_bins + _META
        self._consts = (
            np.int32(num_bins),
            np.int32(num_bins.bit_length() - 1),
            np.int32(nan_policy == "raise"),
            np.int32(fused),
        )
        self._slots: dict[str, int] = {}
        self._capacity = 0
        self._rows = torch.zeros((0, self._width), dtype=torch.int64, device=self.device)
        self._stream = torch.cuda.current_stream(self.device)
        self._grow(16)
        self._batch = 0
        # the batch, its copy of the rejected NaN counts (pinned), and when that copy is done
        self._check: tuple[int, torch.Tensor, torch.cuda.Event] | None = None
        self._rejected_seen = np.zeros(0, np.int64)

    # -- state -----------------------------------------------------------------------------

    def _grow(self, capacity: int) -> None:
        """Give the histograms `capacity` rows (a stream-ordered copy of the old ones)."""
        rows = torch.zeros((capacity, self._width), dtype=torch.int64, device=self.device)
        rows[: self._capacity] = self._rows
        self._rows = rows
        self._base = rows.data_ptr()
        self._capacity = capacity

    def _slot(self, name: str) -> int:
        slot = self._slots.get(name)
        if slot is None:
            slot = len(self._slots)
            if slot >= self._capacity:
                self._grow(2 * self._capacity)
            self._slots[name] = slot  # only once its row exists (growing can fail: no memory)
        return slot

    @property
    def names(self) -> list[str]:
        """Names seen so far, in first-seen order."""
        return list(self._slots)

    # -- filling ---------------------------------------------------------------------------

    def add(self, name: str, x: torch.Tensor) -> None:
        """Bin |x| into the histogram `name`, on the current stream (no host wait)."""
        if x.device != self.device:
            msg = f"tensor {name!r} is on {x.device}, this holds {self.device}'s histograms"
            raise ValueError(msg)
        code = _DTYPES.get(x.dtype)
        if code is None:
            msg = f"tensor {name!r}: expected a floating-point tensor, got {x.dtype}"
            raise TypeError(msg)
        n = x.numel()
        if n == 0:
            return
        if not x.is_contiguous() or x.data_ptr() % 16:  # the kernels read 16-byte vectors
            x = x.detach().clone(memory_format=torch.contiguous_format)
        stream = self._current_stream()  # before _slot: growing copies the rows on it
        slot = self._slot(name)
        blocks = min(max(1, n * x.element_size() // _MIN_BLOCK_BYTES), self._max_blocks)
        args = (
            np.uint64(x.data_ptr()),
            np.int64(n),
            np.int32(code),
            np.uint64(self._base + slot * self._width * 8),
        )
        k = self._k
        shared = 8 * self.num_bins
        with self._cupy_device, k.stream(stream.cuda_stream):
            k.bin((blocks,), (_THREADS,), args + self._consts, shared_mem=shared)
            if not self.fused:
                k.above((blocks,), (_THREADS,), args + self._consts[:1], shared_mem=shared)

    def _current_stream(self) -> torch.cuda.Stream:
        """Return the current stream, made to follow the work queued here on the previous one."""
        stream = torch.cuda.current_stream(self.device)
        if stream.cuda_stream != self._stream.cuda_stream:
            stream.wait_stream(self._stream)
            self._rows.record_stream(stream)  # allocated on the old stream, used on this one
            self._stream = stream
        return stream

    def end_batch(self) -> None:
        """Check the previous batch's NaN rejections; start reading this batch's."""
        self._take_check()
        stream = self._current_stream()
        host = torch.empty(self._capacity, dtype=torch.int64, pin_memory=True)
        host.copy_(self._rows[:, 2 * self.num_bins + _REJECTED], non_blocking=True)
        event = torch.cuda.Event()
        event.record(stream)
        self._check = (self._batch, host, event)
        self._batch += 1

    def _take_check(self) -> None:
        if self._check is None:
            return
        batch, host, event = self._check
        self._check = None
        event.synchronize()
        self._raise_rejected(host.numpy()[: len(self._slots)], batch)

    def _raise_rejected(self, rejected: np.ndarray, batch: int) -> None:
        seen = np.zeros(rejected.size, np.int64)
        seen[: self._rejected_seen.size] = self._rejected_seen[: rejected.size]
        new = np.flatnonzero(rejected > seen)
        self._rejected_seen = rejected.copy()
        if new.size:
            names = list(self._slots)
            first = int(new[0])
            n_nan = int(rejected[first] - seen[first])
            msg = f"tensor {names[first]!r}, batch {batch}: {n_nan} NaN value(s)"
            if new.size > 1:
                msg += f" (and {new.size - 1} more tensor(s))"
            raise NonFiniteError(msg)

    # -- results ---------------------------------------------------------------------------

    def histograms(self) -> dict[str, Histogram]:
        """Wait, and return ``{name: Histogram}`` (raises on NaN under ``"raise"``)."""
        self._take_check()
        self._current_stream()
        n = len(self._slots)
        rows = self._rows[:n].cpu().numpy()
        meta = rows[:, 2 * self.num_bins :]
        floats = meta.view(np.float64)
        self._raise_rejected(meta[:, _REJECTED].copy(), self._batch)
        return {
            name: Histogram.from_arrays(
                rows[s, : self.num_bins].copy(),
                float(floats[s, _UPPER]),
                max_abs=float(floats[s, _MAX]),
                num_inf=int(meta[s, _INF]),
                num_nan=int(meta[s, _NAN]),
            )
            for name, s in self._slots.items()
        }
