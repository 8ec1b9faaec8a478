"""Reading input files within limits: regular files only, bounded sizes, one clear error.

Every file calibkit reads as data goes through here, so that ``/dev/zero``, a FIFO, a
directory or a small ``.npz`` that inflates to gigabytes is refused with one line naming the
file, before memory runs out or a read blocks forever.

The memory limit is the memory the system reports available (``MemAvailable``), or the
environment variable ``CALIBKIT_MAX_INPUT_BYTES`` where set (read at each call; tests and
shared machines lower it).
"""

from __future__ import annotations

import contextlib
import os
import stat
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import InputLimitError, InvalidInputError

__all__ = [
    "MAX_TEXT_BYTES",
    "NpzFormatError",
    "check_npz_size",
    "check_regular_file",
    "input_limit_bytes",
    "load_npy",
    "load_npz",
    "read_input_bytes",
]

#: Largest cache/table file read into memory (the 42 real caches are at most ~1 MB).
MAX_TEXT_BYTES = 1 << 30


class NpzFormatError(InvalidInputError):
    """A file given as ``.npy``/``.npz`` is not one (empty, truncated, another format)."""


def input_limit_bytes() -> int:
    """Return how many bytes of arrays one command may inflate into memory."""
    text = os.environ.get("CALIBKIT_MAX_INPUT_BYTES")
    if text:
        try:
            return max(int(text), 0)
        except ValueError:
            msg = f"CALIBKIT_MAX_INPUT_BYTES={text!r}: expected a number of bytes"
            raise InvalidInputError(msg) from None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return 1 << 62  # no way to tell: no limit


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} bytes"  # pragma: no cover


def check_regular_file(path: str | os.PathLike, what: str = "input") -> Path:
    """Return `path` if it is a regular file (after links); raise otherwise.

    A FIFO would block the read until someone writes, and a device (``/dev/zero``,
    ``/dev/urandom``) never ends: both are refused before they are opened.

    Raises
    ------
    FileNotFoundError, IsADirectoryError, PermissionError
        With the file name (the CLI shows one line).
    InvalidInputError
        For a FIFO, socket or device.
    """
    path = Path(path)
    mode = os.stat(path).st_mode  # FileNotFoundError names the path
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(21, f"expected a file ({what}), got a directory", str(path))
    if not stat.S_ISREG(mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "not a regular file"
        )
        msg = f"{path}: is {kind}; expected a regular file ({what})"
        raise InvalidInputError(msg)
    return path


def read_input_bytes(
    path: str | os.PathLike, what: str = "input", limit: int = MAX_TEXT_BYTES
) -> bytes:
    """Read a whole regular file of at most `limit` bytes."""
    path = check_regular_file(path, what)
    size = path.stat().st_size
    if size > limit:
        msg = f"{path}: {_size(size)}, more than the {_size(limit)} a {what} may have"
        raise InputLimitError(msg)
    with open(path, "rb") as f:
        return f.read(limit + 1)[: limit + 1]


def load_npy(path: str | os.PathLike, what: str = "array") -> np.ndarray:
    """Memory-map one ``.npy`` file (no pickles), checking its header against its size."""
    path = check_regular_file(path, what)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        if isinstance(err, OSError) and err.filename:
            raise
        msg = f"{path}: cannot read as .npy: not a readable .npy file ({str(err)[:120]})"
        raise NpzFormatError(msg) from err


def check_npz_size(path: str | os.PathLike, what: str = "arrays", limit: int | None = None) -> Path:
    """Check an ``.npz`` before inflating it; return its path.

    The arrays' declared sizes (their ``.npy`` headers, checked against the zip entries'
    sizes) must add up to at most `limit` bytes (default :func:`input_limit_bytes`).

    Raises
    ------
    NpzFormatError
        For an empty, truncated or non-zip file, a bad member or a single ``.npy`` array.
    InputLimitError
        If the arrays would inflate beyond the limit.
    """
    path = check_regular_file(path, what)
    limit = input_limit_bytes() if limit is None else limit
    with _npz_errors(path), zipfile.ZipFile(path) as zf:
        total = 0
        for info in (i for i in zf.infolist() if i.filename.endswith(".npy")):
            with zf.open(info) as f:
                try:
                    shape, dtype = _npy_header(f)
                except ValueError as err:
                    msg = f"{path}: {info.filename[:-4]!r} is not a .npy array ({err})"
                    raise NpzFormatError(msg) from err
            if dtype.hasobject:
                msg = f"{path}: array {info.filename[:-4]!r} holds Python objects"
                raise NpzFormatError(msg)
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if nbytes > info.file_size:
                msg = (
                    f"{path}: array {info.filename[:-4]!r} declares {_size(nbytes)} but "
                    f"its entry holds {_size(info.file_size)} (damaged file)"
                )
                raise NpzFormatError(msg)
            total += info.file_size
        if total > limit:
            on_disk = path.stat().st_size
            msg = (
                f"{path}: its arrays inflate to {_size(total)} ({_size(on_disk)} on disk), "
                f"more than the {_size(limit)} of memory available "
                "(CALIBKIT_MAX_INPUT_BYTES sets the limit)"
            )
            raise InputLimitError(msg)
    return path


def load_npz(
    path: str | os.PathLike, what: str = "arrays", limit: int | None = None
) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file (no pickles), refusing a zip bomb.

    Checks with :func:`check_npz_size` first, so nothing is inflated beyond `limit`.

    Raises
    ------
    NpzFormatError
        For an empty, truncated or non-zip file, a bad member or a single ``.npy`` array.
    InputLimitError
        If the arrays would inflate beyond the limit.
    """
    path = check_npz_size(path, what, limit)
    with _npz_errors(path):
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
        for name, value in arrays.items():
            if not isinstance(value, np.ndarray):  # np.load gives raw bytes for other members
                msg = f"{path}: member {name!r} is not a .npy array; expected only arrays"
                raise NpzFormatError(msg)
        return arrays


@contextlib.contextmanager
def _npz_errors(path: Path) -> Iterator[None]:
    """Turn what zipfile and numpy raise for a damaged archive into one NpzFormatError."""
    try:
        yield
    except zipfile.BadZipFile as err:
        if path.stat().st_size and _is_npy(path):
            msg = f"{path}: expected an .npz archive of named arrays, got a single .npy array"
        else:
            msg = f"{path}: not a readable .npz file (empty, truncated or another format: {err})"
        raise NpzFormatError(msg) from err
    except (
        ValueError,
        EOFError,
        KeyError,
        RuntimeError,
        zlib.error,
        zipfile.LargeZipFile,
        NotImplementedError,
    ) as err:
        # NotImplementedError: unknown zip version or compression; RuntimeError: encrypted
        if isinstance(err, (InputLimitError, NpzFormatError)):
            raise
        msg = f"{path}: damaged .npz file ({type(err).__name__}: {err})"
        raise NpzFormatError(msg) from err
    except OSError as err:
        if err.filename:  # the file itself: missing, unreadable
            raise
        msg = f"{path}: damaged .npz file ({type(err).__name__}: {err})"
        raise NpzFormatError(msg) from err


def _npy_header(f) -> tuple[tuple[int, ...], np.dtype]:
    """Read the shape and dtype from the start of an ``.npy`` stream (versions 1, 2 and 3)."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = fmt.read_array_header_2_0(f)
    else:  # 3.0: a UTF-8 header, parsed like 2.0 (the private parser, where there is one)
        impl = getattr(np.lib, "_format_impl", fmt)
        shape, _, dtype = impl._read_array_header(f, version)
    return shape, dtype


def _is_npy(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(6) == b"\x93NUMPY"
