"""The ``calibkit`` command line: ``main(argv) -> int`` and one plain function per sub-command.

Sub-commands hold no logic: they parse, call the library, print, and raise. Heavy imports (onnx,
onnxruntime, tensorrt, matplotlib) stay inside the sub-command that needs them, so ``--help``
is fast. ``main`` is the one error boundary: a ``CalibkitError`` or an ``OSError`` (missing
file, disk full, not a directory) becomes one stderr line and exit status 1; Ctrl-C one line and
130; SIGTERM one line and 143 (temporary files are removed on the way out); a reader that closes
the pipe (``calibkit compare S | head -1``) ends the command quietly with 141, as SIGPIPE would.
Any other exception is a bug in calibkit and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from .. import __version__
from ..errors import CalibkitError
from ..text import escape_controls
from . import cache, calibrate, qdq, research, trt

logger = logging.getLogger(__name__)

# The command table: each group module adds its sub-commands, in the order --help lists them.
COMMAND_GROUPS = (calibrate, cache, qdq, trt, research)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (the usage is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the full argument parser (used by ``main`` and by the docs)."""
    parser = _Parser(
        prog="calibkit",
        description=(
            "TensorRT INT8 calibration without TensorRT: calibrate, inspect caches, export Q/DQ."
        ),
    )
    parser.add_argument("--version", action="version", version=f"calibkit {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that ``finally`` blocks and temp-file cleanup run."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated


class _EscapingStream:
    """A text stream that shows terminal control characters escaped (names come from files)."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(escape_controls(text))
        return len(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def describe_error(err: BaseException) -> str:
    """Return the one-line message for a CalibkitError or OSError (file name first)."""
    if isinstance(err, CalibkitError) or not isinstance(err, OSError):
        text = str(err) or type(err).__name__
    else:
        reason = err.strerror or str(err) or type(err).__name__
        if err.errno == errno.ENOSPC:
            reason = "no space left on device (disk full); nothing was replaced"
        names = [str(n) for n in (err.filename, err.filename2) if n is not None]
        text = f"{' -> '.join(names)}: {reason}" if names else reason
    return " ".join(text.split("\n"))  # one line, whatever the message holds


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a file (in-process callers)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the calibkit command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    prog = f"calibkit {args.command}"
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _EscapingStream(old_out), _EscapingStream(old_err)
    on_main = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _on_sigterm) if on_main else None
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the boundary
    except (CalibkitError, OSError) as err:
        if isinstance(err, BrokenPipeError) or getattr(err, "errno", None) == errno.EPIPE:
            _quiet_stdout()
            return 128 + signal.SIGPIPE
        print(f"{prog}: error: {describe_error(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    else:
        return status
    finally:
        sys.stdout, sys.stderr = old_out, old_err
        if on_main:
            signal.signal(signal.SIGTERM, old_term)
