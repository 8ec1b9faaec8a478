"""One progress bar for every long command: tqdm on stderr, only where someone watches it.

The bar is shown when it is asked for (``enabled=True``: the CLI's default, off with
``--no-progress``) and stderr is a terminal, so logs, pipes and CI output stay clean. Without
tqdm (it comes with the ``onnx`` extra) the bar is silently absent: progress is a courtesy, never
a reason to fail.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sized
from typing import Any, TypeVar

__all__ = ["ProgressBar", "progress_bar", "track"]

T = TypeVar("T")


class ProgressBar:
    """A context manager with ``update(n)``: a tqdm bar, or nothing when not shown."""

    def __init__(self, bar: Any = None):
        self._bar = bar

    @property
    def shown(self) -> bool:
        """True when a bar is drawn."""
        return self._bar is not None and not self._bar.disable

    def update(self, n: int = 1) -> None:
        """Advance by `n` units."""
        if self._bar is not None:
            self._bar.update(n)

    def set_postfix_str(self, text: str) -> None:
        """Show `text` after the counter (e.g. the current tensor)."""
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()


def progress_bar(
    total: int | None = None, *, desc: str | None = None, unit: str = "it", enabled: bool = True
) -> ProgressBar:
    """Return a bar on stderr for `total` units, drawn only if `enabled` and stderr is a tty.

    Parameters
    ----------
    total : int, optional
        Units expected (None: a counter without a percentage).
    desc : str, optional
        Label before the bar.
    unit : str
        What is counted ("sample", "tensor", ...).
    enabled : bool
        False: never draw (``--no-progress``, library default).
    """
    if not enabled or not _is_terminal(sys.stderr):
        return ProgressBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return ProgressBar()
    return ProgressBar(
        tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)
    )


def track(
    items: Iterable[T],
    total: int | None = None,
    *,
    desc: str | None = None,
    unit: str = "it",
    enabled: bool = True,
) -> Iterator[T]:
    """Yield `items`, advancing a :func:`progress_bar` by one per item."""
    if total is None and isinstance(items, Sized):  # a list or dict: its length is the total
        total = len(items)
    with progress_bar(total, desc=desc, unit=unit, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.update()


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False
