"""Atomic file writing: a reader sees the old file or the new one, never half of either.

Promises (tested in tests/test_bad_input.py and tests/test_atomic.py):

- every output path of a command is checked before its first byte is written
  (:func:`check_outputs`): the folder exists and is writable, the target is not a directory,
  FIFO, device or socket, and no two outputs are the same file;
- each file is written to a hidden temporary file in the same folder (``.NAME.XXXX.tmp``),
  flushed to disk, and renamed over the target, so a crash or a full disk leaves the old file;
- a new file gets the mode the user's umask gives (as ``open`` would), an overwritten file
  keeps its mode;
- inside :func:`atomic_outputs` the renames wait until the block ends without an exception, so
  a command that writes several files writes all of them or none;
- on an exception, Ctrl-C or SIGTERM (which the CLI turns into an exception) the temporary
  files are removed. SIGKILL cannot be caught: it may leave one ``.NAME.XXXX.tmp`` next to the
  target (never a damaged target); delete it.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputPathError

__all__ = ["atomic_outputs", "check_output_dir", "check_outputs", "write_atomic"]

# The open group of atomic_outputs() in this thread/context, or None: write_atomic stages into it.
_GROUP: contextvars.ContextVar[list | None] = contextvars.ContextVar("_GROUP", default=None)


def _kind(mode: int) -> str | None:
    """Describe a file type calibkit cannot replace, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _check_folder(path: Path, folder: Path) -> None:
    if not folder.exists():
        msg = f"cannot write {path}: folder {folder} does not exist"
        raise OutputPathError(msg)
    if not folder.is_dir():
        msg = f"cannot write {path}: {folder} is not a folder"
        raise OutputPathError(msg)
    if not os.access(folder, os.W_OK | os.X_OK):
        msg = f"cannot write {path}: folder {folder} is not writable"
        raise OutputPathError(msg)


def check_outputs(*paths: str | os.PathLike | None) -> list[Path]:
    """Check every output file a command will write, before it writes any; return the paths.

    ``None`` entries (options not given) are skipped.

    Raises
    ------
    OutputPathError
        If a folder is missing or read-only, a target is a directory, FIFO, device or socket
        (writing there would hang, or replace a device node), a target is read-only, or two
        outputs name the same file.
    """
    checked: list[Path] = []
    seen: dict[tuple[int, int] | str, Path] = {}
    for raw in paths:
        if raw is None:
            continue
        path = Path(raw)
        if not path.name or path.name in (".", ".."):
            msg = f"cannot write {raw}: expected a file name, got a folder"
            raise OutputPathError(msg)
        _check_folder(path, path.parent)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            kind = _kind(st.st_mode)
            if kind is not None:
                msg = f"cannot write {path}: it is {kind}; expected a regular file (or a new name)"
                raise OutputPathError(msg)
            if not os.access(path, os.W_OK):
                msg = f"cannot write {path}: the file is read-only"
                raise OutputPathError(msg)
        key = str(path.resolve())
        if key in seen:
            msg = f"cannot write {path}: it is also the output {seen[key]}"
            raise OutputPathError(msg)
        seen[key] = path
        checked.append(path)
    return checked


def check_output_dir(path: str | os.PathLike) -> Path:
    """Check an output folder (created if missing): its parent exists, it is not a file."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            msg = f"cannot write into {path}: it exists and is not a folder"
            raise OutputPathError(msg)
        if not os.access(path, os.W_OK | os.X_OK):
            msg = f"cannot write into {path}: the folder is not writable"
            raise OutputPathError(msg)
    else:
        _check_folder(path, path.resolve().parent)
    return path


def _umask() -> int:
    """Return the process umask without changing it (Linux: /proc; elsewhere set-and-restore)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # the only portable read; restored at once
    os.umask(mask)
    return mask


def _stage(path: Path, data: bytes) -> str:
    """Write `data` to a temporary file next to `path` with the final mode; return its name."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)  # an overwritten file keeps its mode
    except FileNotFoundError:
        mode = 0o666 & ~_umask()  # a new file: what open() would give it
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the file
        os.chmod(tmp, mode)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and ``os.replace``.

    Inside :func:`atomic_outputs` the rename waits for the end of the block.

    Raises
    ------
    OutputPathError
        If `path` cannot be written (see :func:`check_outputs`); nothing is written then.
    OSError
        If the disk is full or the write fails; the old file is unchanged.
    """
    path = check_outputs(path)[0]
    group = _GROUP.get()
    tmp = _stage(path, data)
    if group is not None:
        group.append((tmp, path))
        return
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_outputs(*paths: str | os.PathLike | None) -> Iterator[list[Path]]:
    r"""Check `paths` now; make every ``write_atomic`` in the block land together at its end.

    Use it around a whole command: a bad output path fails before any work, and the files the
    block writes (the declared ones and any other) appear all at once when it ends without an
    exception; on an exception none of them is replaced.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_outputs(d / "a.cache", d / "a.stats.npz"):
    ...     write_atomic(d / "a.cache", b"x\n")
    ...     (d / "a.cache").exists()
    False
    >>> (d / "a.cache").read_bytes()
    b'x\n'
    """
    checked = check_outputs(*paths)
    outer = _GROUP.get()
    staged: list[tuple[str, Path]] = []
    token = _GROUP.set(staged)
    try:
        yield checked
    except BaseException:
        _GROUP.reset(token)
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    _GROUP.reset(token)
    if outer is not None:  # nested: the outer group commits
        outer.extend(staged)
        return
    _commit(staged)


def _commit(staged: list[tuple[str, Path]]) -> None:
    """Rename every staged file over its target; on a failure put back what was replaced."""
    done: list[tuple[Path, str | None, bool]] = []  # (target, hard link to old content, existed)
    try:
        for tmp, path in staged:
            existed, backup = path.exists(), None
            if existed:
                with contextlib.suppress(OSError):  # no hard links here: no undo for this one
                    os.link(path, f"{tmp}.old")
                    backup = f"{tmp}.old"
            os.replace(tmp, path)
            done.append((path, backup, existed))
    except BaseException:
        for path, backup, existed in reversed(done):
            with contextlib.suppress(OSError):
                if backup is not None:
                    os.replace(backup, path)
                elif not existed:
                    path.unlink()
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        for _, backup, _ in done:
            if backup is not None:
                Path(backup).unlink(missing_ok=True)
