"""Show the library's warnings as one ``calibkit CMD: warning: ...`` line each, not Python's form.

The library warns with :mod:`warnings` (a percentile cache under an EntropyCalibration2 header, a
TensorRT version whose sharing rules are unsettled); Python would print them once per source line
with a file name and line number. A command shows every one, in its own words.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["shown_warnings", "with_warnings_shown"]


@contextmanager
def shown_warnings(command: str) -> Iterator[None]:
    """Print each warning raised inside the block on stderr, once per distinct message."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            yield
        finally:
            seen = set()
            for w in caught:
                text = str(w.message)
                if text not in seen:
                    seen.add(text)
                    print(f"calibkit {command}: warning: {text}", file=sys.stderr)


def with_warnings_shown(command: str):
    """Decorate a ``_cmd_*(args)`` function: its warnings are shown by :func:`shown_warnings`."""

    def wrap(func):
        @functools.wraps(func)
        def run(args):
            with shown_warnings(command):
                return func(args)

        return run

    return wrap
