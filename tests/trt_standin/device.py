"""A stand-in GPU: device memory addressed by integer pointers, and a ``pycuda`` facade over it.

Mirrors the parts of pycuda that TensorRT's Python samples (``samples/python/int8_caffe_mnist/
calibrator.py``, up to TensorRT 8.5) and calibkit use: ``import pycuda.autoinit`` creates a
context, ``pycuda.driver.mem_alloc(nbytes)`` returns a ``DeviceAllocation`` whose ``int()`` is the
device pointer TensorRT receives from ``get_batch``, ``memcpy_htod(dest, src)`` copies a host
buffer, ``DeviceAllocation.free()`` releases it.

Where the real stack would corrupt memory or crash (writing past an allocation, reading freed
memory), the stand-in raises :class:`ContractViolation` instead, so a test sees the bug.
"""

from __future__ import annotations

import types

_BASE = 0x7F00_0000_0000  # where the stand-in's device pointers start
_ALIGN = 256  # cudaMalloc returns 256-byte aligned pointers


class ContractViolation(AssertionError):
    """Something a real TensorRT / CUDA stack would crash on, corrupt, or silently ignore."""


class DeviceMemory:
    """Allocations keyed by pointer; counts allocations, frees and host-to-device copies."""

    def __init__(self) -> None:
        self.blocks: dict[int, bytearray] = {}
        self._next = _BASE
        self.n_allocs = self.n_frees = self.n_copies = 0

    def alloc(self, nbytes: int) -> int:
        if not isinstance(nbytes, int) or nbytes <= 0:
            msg = f"cuMemAlloc({nbytes!r}): a positive int byte count is required"
            raise ContractViolation(msg)
        ptr = self._next
        self._next += -(-nbytes // _ALIGN) * _ALIGN
        self.blocks[ptr] = bytearray(nbytes)
        self.n_allocs += 1
        return ptr

    def _block(self, ptr: int, nbytes: int, what: str) -> bytearray:
        block = self.blocks.get(ptr)
        if block is None:
            msg = f"{what}: {ptr:#x} is not a live device allocation (freed, or never allocated)"
            raise ContractViolation(msg)
        if nbytes > len(block):
            msg = f"{what}: {nbytes} bytes at {ptr:#x} overrun its {len(block)}-byte allocation"
            raise ContractViolation(msg)
        return block

    def write(self, ptr: int, data: bytes) -> None:
        self._block(ptr, len(data), "memcpy_htod")[: len(data)] = data
        self.n_copies += 1

    def read(self, ptr: int, nbytes: int) -> bytes:
        return bytes(self._block(ptr, nbytes, "TensorRT reading a calibration binding")[:nbytes])

    def free(self, ptr: int) -> None:
        if self.blocks.pop(ptr, None) is None:
            msg = f"cuMemFree({ptr:#x}): double free or unknown pointer"
            raise ContractViolation(msg)
        self.n_frees += 1


def make_pycuda(memory: DeviceMemory) -> dict[str, types.ModuleType]:
    """Return stand-in ``pycuda``, ``pycuda.driver`` and ``pycuda.autoinit`` over `memory`."""
    driver = types.ModuleType("pycuda.driver")
    driver.__doc__ = "stand-in for pycuda.driver (mem_alloc, memcpy_htod, DeviceAllocation)"

    class DeviceAllocation:
        def __init__(self, nbytes: int) -> None:
            self._ptr = memory.alloc(nbytes)
            self.size = nbytes
            self.freed = False

        def __int__(self) -> int:
            return self._ptr

        __index__ = __int__

        def free(self) -> None:
            if not self.freed:  # pycuda's free() is idempotent
                memory.free(self._ptr)
                self.freed = True

    def mem_alloc(nbytes: int) -> DeviceAllocation:
        return DeviceAllocation(nbytes)

    def memcpy_htod(dest: object, src: object) -> None:
        # pycuda takes any C-contiguous buffer (PyBUF_ANY_CONTIGUOUS) and copies all of its bytes
        view = memoryview(src)
        if not view.contiguous:
            msg = "memcpy_htod: the host buffer is not contiguous"
            raise ValueError(msg)
        memory.write(int(dest), view.cast("B").tobytes())

    driver.DeviceAllocation = DeviceAllocation
    driver.mem_alloc = mem_alloc
    driver.memcpy_htod = memcpy_htod

    autoinit = types.ModuleType("pycuda.autoinit")
    autoinit.context = object()  # pycuda.autoinit makes a context on device 0 at import
    autoinit.device = 0

    package = types.ModuleType("pycuda")
    package.__path__ = []  # a package, so that "import pycuda.driver" resolves in sys.modules
    package.driver, package.autoinit = driver, autoinit
    return {"pycuda": package, "pycuda.driver": driver, "pycuda.autoinit": autoinit}


def make_cuda_python(memory: DeviceMemory) -> dict[str, types.ModuleType]:
    """Stand-in ``cuda.bindings.runtime`` (cuda-python >= 12.6; ``cuda.cudart`` before).

    Every call returns a tuple whose first item is a ``cudaError_t``, as in TensorRT's 10.14+
    samples (``err, ptr = cudart.cudaMalloc(n)``; ``cudaMemcpy(dst, src, count, kind)`` with
    ``src`` a host address such as ``array.ctypes.data``).
    """
    import ctypes
    import enum

    runtime = types.ModuleType("cuda.bindings.runtime")
    runtime.cudaError_t = enum.IntEnum(
        "cudaError_t", {"cudaSuccess": 0, "cudaErrorInvalidValue": 1}
    )
    runtime.cudaMemcpyKind = enum.IntEnum(
        "cudaMemcpyKind", {"cudaMemcpyHostToDevice": 1, "cudaMemcpyDeviceToHost": 2}
    )

    def cudaMalloc(size):
        return runtime.cudaError_t.cudaSuccess, memory.alloc(size)

    def cudaMemcpy(dst, src, count, kind):
        if kind != runtime.cudaMemcpyKind.cudaMemcpyHostToDevice or not isinstance(src, int):
            return (runtime.cudaError_t.cudaErrorInvalidValue,)
        memory.write(dst, ctypes.string_at(src, count))
        return (runtime.cudaError_t.cudaSuccess,)

    def cudaFree(ptr):
        memory.free(ptr)
        return (runtime.cudaError_t.cudaSuccess,)

    runtime.cudaMalloc, runtime.cudaMemcpy, runtime.cudaFree = cudaMalloc, cudaMemcpy, cudaFree
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    cuda.__path__, bindings.__path__ = [], []
    cuda.bindings, bindings.runtime = bindings, runtime
    return {"cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": runtime}


def make_cupy(memory: DeviceMemory) -> dict[str, types.ModuleType]:
    """Stand-in ``cupy``: ``cupy.empty(n, dtype=cupy.uint8)``, ``a.data.ptr``, ``a.set(host)``.

    ``ndarray.set`` copies a host array of the same shape and dtype (CuPy raises otherwise); the
    allocation is returned to the pool when the last reference goes.
    """
    import numpy as np

    cupy = types.ModuleType("cupy")
    cupy.uint8 = np.uint8

    class _Pointer:
        def __init__(self, ptr: int) -> None:
            self.ptr = ptr

    class ndarray:
        def __init__(self, shape, dtype) -> None:
            self.shape, self.dtype = (int(shape),), np.dtype(dtype)
            self.data = _Pointer(memory.alloc(self.shape[0] * self.dtype.itemsize))

        def set(self, arr) -> None:
            if arr.shape != self.shape or arr.dtype != self.dtype:
                msg = (
                    f"Shape/dtype mismatch: {arr.shape} {arr.dtype} into {self.shape} {self.dtype}"
                )
                raise ValueError(msg)
            memory.write(self.data.ptr, np.ascontiguousarray(arr).tobytes())

        def __del__(self) -> None:
            memory.blocks.pop(self.data.ptr, None)

    cupy.ndarray = ndarray
    cupy.empty = lambda shape, dtype: ndarray(shape, dtype)
    return {"cupy": cupy}
