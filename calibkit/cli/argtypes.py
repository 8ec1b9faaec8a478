"""Argument types for the command line: a bad value is refused at parse time, naming the option.

Each function is an argparse ``type=``: it returns the parsed value or raises
``argparse.ArgumentTypeError``, which argparse turns into ``usage ... error: argument --X: ...``
and exit status 2, before any file is read or written.
"""

from __future__ import annotations

import argparse
import math
import re


def positive_int(text: str) -> int:
    """Parse an int >= 1 (``--batch-size``, ``--threads``, ``--num-bins``)."""
    value = _int(text)
    if value < 1:
        msg = f"expected an integer >= 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def non_negative_int(text: str) -> int:
    """Parse an int >= 0 (``--table``, ``--top``: 0 means none or all)."""
    value = _int(text)
    if value < 0:
        msg = f"expected an integer >= 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def positive_float(text: str) -> float:
    """Parse a finite float > 0 (``--std`` parts, ``--threshold``)."""
    value = finite_float(text)
    if value <= 0:
        msg = f"expected a number > 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def non_negative_float(text: str) -> float:
    """Parse a finite float >= 0 (``--rtol``, ``--clamp-min``)."""
    value = finite_float(text)
    if value < 0:
        msg = f"expected a number >= 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def finite_float(text: str) -> float:
    """Parse a finite float (``--scale``, ``--mean``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        msg = f"expected a finite number, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def float_list(check):
    """Check comma-separated floats, each with `check` (``--mean 0.5,0.5,0.5``)."""

    def parse(text: str) -> str:
        for part in text.split(","):
            check(part.strip())
        return text  # the command splits it again: the option's meaning stays where it was

    parse.__name__ = f"comma-separated {check.__name__}"
    return parse


def positive_int_list(text: str) -> str:
    """Check comma-separated ints >= 1 (``--batch-sizes 1,8,32``); returned as given."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        msg = f"expected comma-separated integers >= 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    for part in parts:
        positive_int(part.strip())
    return text


def regex(text: str) -> str:
    """Check a Python regular expression (``--tensors``, ``--exclude-nodes``); returned as given."""
    try:
        re.compile(text)
    except re.error as err:
        msg = f"not a valid regular expression {text!r}: {err}"
        raise argparse.ArgumentTypeError(msg) from None
    return text


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        msg = f"expected an integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
