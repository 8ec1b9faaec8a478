"""The HTML report in a real browser: headless Chromium renders it without console errors.

Skips only where Chromium is not installed (Debian: ``apt-get install -y chromium``; .ci/run
installs it, so CI runs this test).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from calibkit.histogram import Histogram
from calibkit.research.report import write_report

pytest.importorskip("matplotlib")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def _chromium(url: str, *extra: str, cwd: Path) -> subprocess.CompletedProcess:
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr"]
    args += ["--v=0", "--virtual-time-budget=5000", f"--user-data-dir={cwd / 'profile'}"]
    return subprocess.run(
        [*args, *extra, url], cwd=cwd, capture_output=True, text=True, timeout=120, check=True
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    rng = np.random.default_rng(0)
    hists = {
        "input": Histogram().fill(rng.uniform(0, 1, 4000).astype(np.float32)),
        "conv/out:0": Histogram().fill(rng.standard_normal(4000).astype(np.float32)),
        "relu <b>": Histogram().fill(np.maximum(rng.standard_normal(4000), 0).astype(np.float32)),
        "zeros": Histogram().fill(np.zeros(10, np.float32)),
    }
    out = tmp_path_factory.mktemp("report")
    algorithms = ["entropy2", "entropy", "minmax", "percentile:99.9", "mse"]
    index = write_report(hists, out / "r", algorithms=algorithms)
    return index, out


def test_page_renders_with_plots_and_no_console_messages(report):
    index, work = report
    done = _chromium(index.as_uri(), "--dump-dom", cwd=work)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []  # no JavaScript error, no console output at all
    body = re.search(r"<body[^>]*>", done.stdout).group(0)
    assert 'data-plots-loaded="1/1"' in body  # the overview image decoded in the browser
    assert 'data-sortable="3"' in body
    images = re.findall(r"<img src=\"([^\"]+)\"", done.stdout)
    assert "overview.png" in images and len(images) == 1 + 4
    for src in images:
        assert (index.parent / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Best algorithm per tensor" in done.stdout
    assert "relu &lt;b&gt;" in done.stdout  # names are escaped, not markup


def test_sorting_works_in_the_browser(report):
    index, work = report
    done = _chromium(index.as_uri() + "#check-sort", "--dump-dom", cwd=work)
    assert [line for line in done.stderr.splitlines() if ":CONSOLE" in line] == []
    assert 'data-sorted-first="row-zeros"' in done.stdout  # tensor 3 first: sorted descending


def test_screenshot(report):
    index, work = report
    shot = work / "shot.png"
    _chromium(index.as_uri(), f"--screenshot={shot}", "--window-size=1280,1600", cwd=work)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 1280
