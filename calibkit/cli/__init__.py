"""The ``calibkit`` command line: ``main(argv) -> int`` and one plain function per sub-command.

Sub-commands hold no logic: they parse, call the library, and print. Heavy imports (onnx,
onnxruntime, tensorrt, matplotlib) stay inside the sub-command that needs them, so ``--help``
is fast. A ``CalibkitError`` becomes one stderr line and exit status 1, with no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import CalibkitError
from . import cache, calibrate, qdq, research, trt

logger = logging.getLogger(__name__)

# The command table: each group module adds its sub-commands, in the order --help lists them.
COMMAND_GROUPS = (calibrate, cache, qdq, trt, research)


def build_parser() -> argparse.ArgumentParser:
    """Return the full argument parser (used by ``main`` and by the docs)."""
    parser = argparse.ArgumentParser(
        prog="calibkit",
        description="TensorRT INT8 calibration on the CPU: calibrate, inspect caches, export Q/DQ.",
    )
    parser.add_argument("--version", action="version", version=f"calibkit {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the calibkit command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except CalibkitError as err:
        prog = f"calibkit {args.command}" if args.command else "calibkit"
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
        print(f"calibkit {args.command}: error: {err}", file=sys.stderr)
        return 1
