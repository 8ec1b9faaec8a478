"""Tests for research.report and ``calibkit report``: the folder renders and every link resolves."""

from __future__ import annotations

import html.parser
import json
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

import calibkit as ck
from calibkit.cli import main

pytest.importorskip("matplotlib")
from calibkit.research.report import write_report


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.refs += [a[k] for k in ("href", "src") if k in a]
        if "id" in a:
            self.ids.add(a["id"])


def _check_folder(index: Path) -> _Links:
    parser = _Links()
    parser.feed(index.read_text(encoding="utf-8"))
    assert parser.refs
    for ref in parser.refs:
        parts = urlsplit(ref)
        assert not parts.scheme and not parts.netloc, f"not a relative link: {ref}"
        if parts.path:
            target = (index.parent / parts.path).resolve()
            assert target.is_relative_to(index.parent.resolve()), ref
            assert target.is_file() and target.stat().st_size > 0, ref
            if target.suffix == ".png":
                assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", ref
        if parts.fragment:
            assert parts.fragment in parser.ids, ref
    return parser


@pytest.fixture
def histograms(rng):
    return {
        "input:0": ck.Histogram().fill(rng.uniform(-1, 1, 3000).astype(np.float32)),
        "conv/relu <1>": ck.Histogram().fill(np.maximum(rng.standard_normal(3000), 0)),
        "logits": ck.Histogram().fill(rng.standard_t(3, 3000).astype(np.float32)),
    }


def test_report_renders_and_links_resolve(histograms, tmp_path):
    index = write_report(histograms, tmp_path / "r", settings={"batch_size": 8})
    parser = _check_folder(index)
    pngs = sorted((tmp_path / "r" / "tensors").glob("*.png"))
    assert len(pngs) == 3
    assert sum(ref.startswith("tensors/") for ref in parser.refs) == 6  # link + image each
    text = index.read_text()
    assert "conv/relu &lt;1&gt;" in text and "batch_size" in text
    data = json.loads((tmp_path / "r" / "compare.json").read_text())
    assert len(data["tensors"]) == 3 * 7


def test_report_max_tensors_and_errors(histograms, tmp_path):
    index = write_report(histograms, tmp_path / "r", algorithms=["minmax"], max_tensors=1)
    _check_folder(index)
    assert len(list((tmp_path / "r" / "tensors").glob("*.png"))) == 1
    assert "2 more tensors are not plotted" in index.read_text()
    with pytest.raises(ValueError, match="max_tensors must be >= 0"):
        write_report(histograms, tmp_path / "x", max_tensors=-1)


def test_cli_report(histograms, tmp_path, capsys):
    stats = tmp_path / "s.npz"
    ck.save_stats(stats, histograms)
    assert main(["report", str(stats), "-o", str(tmp_path / "rep"), "--max-tensors", "2"]) == 0
    out = capsys.readouterr().out
    assert "3 tensors" in out
    assert "statistics hold no graph" in out  # which sharing rules the numbers use
    _check_folder(tmp_path / "rep" / "index.html")
    assert main(["report", str(stats), "-o", str(tmp_path / "rep"), "--algorithms", "x"]) == 1
    assert "unknown algorithm" in capsys.readouterr().err


@pytest.mark.slow
def test_workbench_on_efficientnet(tmp_path, capsys):
    """compare, report and stability from EfficientNet-Lite0's saved histograms (8 photo crops)."""
    pytest.importorskip("onnxruntime")
    from benchmarks import models

    path = models.efficientnet_lite0_onnx()
    np.savez(tmp_path / "calib.npz", image=models.efficientnet_inputs("calib", 8, seed=0))
    stats = tmp_path / "eff.stats.npz"
    argv = ["calibrate", str(path), "--data", str(tmp_path / "calib.npz"), "--no-progress"]
    argv += ["--trt-version", "10.16", "-o", str(tmp_path / "eff.cache")]
    assert main([*argv, "--save-histograms", str(stats)]) == 0
    names = set(ck.load_stats(stats).histograms)
    assert main(["compare", str(stats), "--json", str(tmp_path / "c.json")]) == 0
    data = json.loads((tmp_path / "c.json").read_text())
    assert {t["name"] for t in data["tensors"]} == names
    assert main(["report", str(stats), "-o", str(tmp_path / "r"), "--max-tensors", "2"]) == 0
    parser = _check_folder(tmp_path / "r" / "index.html")
    assert sum(ref.startswith("#t") for ref in parser.refs) == 2
    argv = ["stability", str(path), "--data", str(tmp_path / "calib.npz")]
    argv += ["--tensors", "^(image|logits)$", "--batch-sizes", "1,4", "--orders", "2"]
    assert main([*argv, "--json", str(tmp_path / "s.json")]) == 0
    runs = json.loads((tmp_path / "s.json").read_text())
    assert {t["name"] for t in runs["tensors"]} == {"image", "logits"}
    assert all(t["two_pass_spread"] == 0.0 for t in runs["tensors"])
    capsys.readouterr()


def test_without_matplotlib_nothing_is_written(histograms, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ck.MissingDependencyError, match=r"pip install -e '\.\[plot\]'"):
        write_report(histograms, tmp_path / "report")
    assert not (tmp_path / "report").exists()
