"""TensorRT-style histograms of CUDA tensors, kept on the device, identical to the CPU's.

:class:`CudaHistograms` holds one histogram per name on one CUDA device: counts, range, max,
inf and NaN counts live in device arrays. Tensors are queued and binned in groups: each group is
three launches whatever the number of tensors in it (``_kernel.cu``: bin at the current range,
commit and grow, bin what the range did not hold), so small tensors cost no launch each. The
host never waits inside a group; :meth:`end_batch` reads the NaN rejections of the *previous*
batch (one device-to-host copy per batch, normally finished by then), and :meth:`histograms`
copies everything back once.

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

MAX_CUDA_BINS = 4096  # commit folds through 8 bytes of shared memory per bin (32 KiB)

_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}
_THREADS = 512
_MIN_BLOCK_BYTES = 64 << 10  # fewer, fuller blocks: each ends with up to num_bins atomics
_MAX_BLOCK_ELEMENTS = 1 << 30  # shared-memory counts are 32-bit
_SOURCE = Path(__file__).with_name("_kernel.cu")


class _Kernels:
    """The three compiled kernels (CuPy loads them on each device at its first launch there)."""

    def __init__(self) -> None:
        try:
            import cupy
        except ImportError as err:
            msg = (
                "CUDA histograms need CuPy: pip install cupy-cuda12x (or cupy-cuda13x, matching "
                "torch.version.cuda), or collect(..., backend='cpu') to bin on the host"
            )
            raise MissingDependencyError(msg) from err
        self.cupy = cupy
        module = cupy.RawModule(code=_SOURCE.read_text(), options=("-std=c++17",))
        self.within = module.get_function("hist_within")
        self.commit = module.get_function("hist_commit")
        self.above = module.get_function("hist_above")
        self.streams: dict[int, object] = {}

    def stream(self, ptr: int):
        if ptr not in self.streams:
            # CuPy 14 deprecates ExternalStream for Stream.from_external, which CuPy 12-13 lack;
            # both wrap the same raw stream handle torch gives us
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self.streams[ptr] = self.cupy.cuda.ExternalStream(ptr)
        return self.streams[ptr]


@functools.cache
def _kernels() -> _Kernels:
    """Compile once per process (NVRTC; CuPy also caches the binary on disk)."""
    return _Kernels()


def _ptr(t: torch.Tensor) -> np.uint64:
    return np.uint64(t.data_ptr())


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
    flush_bytes : int
        Queued tensors are binned once they hold this many bytes (and at each batch end): the
        memory they keep alive, against launches per tensor.
    """

    def __init__(
        self,
        device: torch.device,
        num_bins: int = 2048,
        *,
        nan_policy: str = "raise",
        flush_bytes: int = 64 << 20,
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
        self.flush_bytes = int(flush_bytes)
        self._k = _kernels()
        self._sms = torch.cuda.get_device_properties(self.device).multi_processor_count
        self._slots: dict[str, int] = {}
        self._pending: list[tuple[int, torch.Tensor]] = []
        self._pending_slots: set[int] = set()
        self._pending_bytes = 0
        self._capacity = 0
        self._alloc(16)
        self._batch = 0
        self._check: tuple[int, torch.Tensor, torch.cuda.Event] | None = None
        self._rejected_seen = np.zeros(0, np.int64)

    # -- state -----------------------------------------------------------------------------

    def _alloc(self, capacity: int) -> None:
        """Grow the per-slot device arrays to `capacity` slots (stream-ordered copies)."""
        old = self._capacity
        arrays = {}
        for name, shape, dtype in (
            ("counts", (capacity, self.num_bins), torch.int64),
            ("upper", (capacity,), torch.float64),
            ("max_abs", (capacity,), torch.float64),
            ("num_inf", (capacity,), torch.int64),
            ("num_nan", (capacity,), torch.int64),
            ("rejected", (capacity,), torch.int64),
        ):
            new = torch.zeros(shape, dtype=dtype, device=self.device)
            if old:
                new[:old] = getattr(self, name)
            arrays[name] = new
        self.counts: torch.Tensor = arrays["counts"]
        self.upper: torch.Tensor = arrays["upper"]
        self.max_abs: torch.Tensor = arrays["max_abs"]
        self.num_inf: torch.Tensor = arrays["num_inf"]
        self.num_nan: torch.Tensor = arrays["num_nan"]
        self.rejected: torch.Tensor = arrays["rejected"]
        self._capacity = capacity

    def _slot(self, name: str) -> int:
        slot = self._slots.get(name)
        if slot is None:
            slot = self._slots[name] = len(self._slots)
            if slot >= self._capacity:
                self.flush()  # queued work holds pointers into the old arrays
                self._alloc(2 * self._capacity)
        return slot

    @property
    def names(self) -> list[str]:
        """Names seen so far, in first-seen order."""
        return list(self._slots)

    # -- filling ---------------------------------------------------------------------------

    def add(self, name: str, x: torch.Tensor) -> None:
        """Queue |x| for the histogram `name` (binned at the next flush, in arrival order)."""
        if x.device != self.device:
            msg = f"tensor {name!r} is on {x.device}, this holds {self.device}'s histograms"
            raise ValueError(msg)
        if x.dtype not in _DTYPES:
            msg = f"tensor {name!r}: expected a floating-point tensor, got {x.dtype}"
            raise TypeError(msg)
        if x.numel() == 0:
            return
        x = x.detach()
        if not x.is_contiguous() or x.data_ptr() % 16:  # the kernels read 16-byte vectors
            x = x.clone(memory_format=torch.contiguous_format)
        slot = self._slot(name)
        if slot in self._pending_slots:  # the same histogram twice in one group: order matters
            self.flush()
        self._pending.append((slot, x))
        self._pending_slots.add(slot)
        self._pending_bytes += x.numel() * x.element_size()
        if self._pending_bytes >= self.flush_bytes:
            self.flush()

    def flush(self) -> None:
        """Bin every queued tensor: three launches on the current stream, no host wait."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        self._pending_slots = set()
        self._pending_bytes = 0
        nbins, g = self.num_bins, len(pending)
        table = torch.empty((g, 5), dtype=torch.int64, pin_memory=True)
        rows = table.numpy()
        first = 0
        for row, (slot, x) in enumerate(pending):
            n = x.numel()
            nbytes = n * x.element_size()
            blocks = min(max(1, nbytes // _MIN_BLOCK_BYTES), 2 * self._sms)
            blocks = max(blocks, -(-n // _MAX_BLOCK_ELEMENTS))
            rows[row] = (x.data_ptr(), n, _DTYPES[x.dtype], slot, first)
            first += blocks
        stream = torch.cuda.current_stream(self.device)
        table = table.to(self.device, non_blocking=True)
        work = torch.zeros(g * (nbins + 4), dtype=torch.int64, device=self.device)
        scratch, stats = work[: g * nbins], work[g * nbins :]
        action = torch.empty(2 * g, dtype=torch.float64, device=self.device)
        k = self._k
        i32 = np.int32
        with self.device_context(), k.stream(stream.cuda_stream):
            k.within(
                (first,),
                (_THREADS,),
                (_ptr(table), i32(g), i32(nbins), _ptr(self.upper), _ptr(scratch), _ptr(stats)),
                shared_mem=4 * nbins,
            )
            k.commit(
                (g,),
                (256,),
                (
                    _ptr(table),
                    i32(nbins),
                    i32(nbins.bit_length() - 1),
                    i32(self.nan_policy == "raise"),
                    _ptr(self.counts),
                    _ptr(self.upper),
                    _ptr(self.max_abs),
                    _ptr(self.num_inf),
                    _ptr(self.num_nan),
                    _ptr(self.rejected),
                    _ptr(scratch),
                    _ptr(stats),
                    _ptr(action),
                ),
                shared_mem=8 * nbins,
            )
            k.above(
                (first,),
                (_THREADS,),
                (
                    _ptr(table),
                    i32(g),
                    i32(nbins),
                    _ptr(self.upper),
                    _ptr(action),
                    _ptr(self.counts),
                ),
                shared_mem=4 * nbins,
            )
        # The queued tensors and the work arrays are released now: the caching allocator
        # reuses their memory only for work queued after these launches on this stream.

    def device_context(self):
        """CuPy's device context for this histogram's device."""
        return self._k.cupy.cuda.Device(self.device.index or 0)

    def end_batch(self) -> None:
        """Flush; check the previous batch's NaN rejections; start reading this batch's."""
        self.flush()
        self._take_check()
        host = torch.empty(self._capacity, dtype=torch.int64, pin_memory=True)
        host.copy_(self.rejected, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
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
        """Flush, wait, and return ``{name: Histogram}`` (raises on NaN under ``"raise"``)."""
        self.flush()
        self._take_check()
        n = len(self._slots)
        counts = self.counts[:n].cpu().numpy()
        upper = self.upper[:n].cpu().numpy()
        max_abs = self.max_abs[:n].cpu().numpy()
        num_inf = self.num_inf[:n].cpu().numpy()
        num_nan = self.num_nan[:n].cpu().numpy()
        self._raise_rejected(self.rejected[:n].cpu().numpy(), self._batch)
        return {
            name: Histogram.from_arrays(
                counts[s],
                float(upper[s]),
                max_abs=float(max_abs[s]),
                num_inf=int(num_inf[s]),
                num_nan=int(num_nan[s]),
            )
            for name, s in self._slots.items()
        }
