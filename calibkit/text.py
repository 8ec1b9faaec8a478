"""Plain text for the terminal: the one table formatter, and escaping of control characters."""

from __future__ import annotations

import re
from collections.abc import Sequence

# C0 controls but tab and newline, DEL and C1: what a terminal may act on (ESC [ ... moves the
# cursor, clears the screen, sets the title). Tensor names come from untrusted files.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    r"""Show terminal control characters as escapes: ``"\x1b[2J"`` -> ``"\\x1b[2J"``.

    C0 controls become ``\xNN``; DEL and C1 become ``\u00NN``, which is also a valid JSON
    string escape (JSON output never holds a raw C0 control: ``json.dumps`` escapes those).

    Examples
    --------
    >>> print(escape_controls("conv\x1b[31m"))
    conv\x1b[31m
    """
    return _CONTROLS.sub(_escape_one, text)


def _escape_one(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x20 else f"\\u{code:04x}"


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Align `rows` in columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    return "\n".join(line.rstrip() for line in lines)
