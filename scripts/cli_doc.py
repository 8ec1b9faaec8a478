"""Write docs/cli.md from the argument parser itself, so the reference never drifts.

Run ``python scripts/cli_doc.py`` after changing a command; tests/test_package.py checks that
docs/cli.md is current.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def render() -> str:
    """Return the markdown reference of every sub-command's ``--help``."""
    from calibkit.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal width: make it fixed
    parser = build_parser()
    out = [
        "# Command reference",
        "",
        "Generated from the argument parser by `python scripts/cli_doc.py`; do not edit.",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
    ]
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        out += ["", f"## calibkit {name}", "", "```text", sub.format_help().rstrip(), "```"]
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        for group in nested:
            for inner_name, inner in group.choices.items():
                out += [
                    "",
                    f"### calibkit {name} {inner_name}",
                    "",
                    "```text",
                    inner.format_help().rstrip(),
                    "```",
                ]
    return "\n".join(out) + "\n"


def main() -> int:
    target = ROOT / "docs" / "cli.md"
    target.write_text(render())
    print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
