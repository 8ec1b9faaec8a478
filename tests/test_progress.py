"""The shared progress bar: on stderr only when asked for and stderr is a terminal."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from calibkit.cli import main
from calibkit.progress import progress_bar, track

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("tqdm")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_only_on_a_terminal_and_only_when_enabled(monkeypatch):
    pipe = io.StringIO()  # not a terminal: CI logs and pipes stay clean
    monkeypatch.setattr(sys, "stderr", pipe)
    assert list(track(range(3), desc="x")) == [0, 1, 2]
    assert pipe.getvalue() == ""
    tty = _Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    with progress_bar(3, desc="work", unit="tensor", enabled=False) as bar:
        bar.update()
        assert not bar.shown
    assert tty.getvalue() == ""
    assert list(track([1, 2], desc="work", unit="tensor")) == [1, 2]
    assert "work:" in tty.getvalue() and "/2 " in tty.getvalue() and "tensor/s" in tty.getvalue()


@pytest.mark.parametrize("flag", [[], ["--no-progress"]])
def test_stability_and_report_show_progress_on_a_terminal(flag, monkeypatch, tmp_path, capsys):
    tty = _Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    recorded = ROOT / "examples" / "trt7000_conv" / "activations.npz"
    assert main(["stability", str(recorded), "--batch-sizes", "1,2", "--orders", "2", *flag]) == 0
    assert ("stability" in tty.getvalue()) == (not flag)
    pytest.importorskip("matplotlib")
    stats = tmp_path / "s.npz"
    import numpy as np

    from calibkit.histogram import Histogram
    from calibkit.stats import save_stats

    save_stats(stats, {"t": Histogram().fill(np.linspace(0, 1, 100))})
    tty.seek(0)
    tty.truncate()
    assert main(["report", str(stats), "-o", str(tmp_path / "r"), *flag]) == 0
    assert ("report" in tty.getvalue()) == (not flag)
    assert capsys.readouterr().err == ""  # pytest's own stderr untouched: the bar went to tty
