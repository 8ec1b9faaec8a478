"""The README's commands run as written, in order, in a fresh folder (bundled data only).

Blocks are taken from README.md itself, so an edit there is what is tested. Left out, each for
a stated reason: `pip install` / `python3 -m venv` (the environment is the test's), `bash .ci/run`
(that is CI), the "Calibrate an ONNX model" block (a template for the reader's own model and image
folder), the PyTorch block's `select` (it reads the statistics of the reader's own PyTorch run) and
the TensorRT block (needs a GPU and TensorRT).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = (
    "bash .ci/run",
    "calibkit calibrate model.onnx",
    "calibkit select model.stats.npz --algorithm entropy2 --trt-version 10.16 -o model.cache",
    "calibkit trt build",
)


def _blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def _runnable(block: str) -> str:
    """The block as a bash script; a command whose comment says "exit 1" must exit 1."""
    # the quick start: keep the calibkit part of the one-line install && calibrate && cat
    block = re.sub(r"^python3 -m venv .*? && pip install -e \S+ && ", "", block, flags=re.M)
    commands = re.sub(r"\\\n\s*", " ", block).splitlines()  # join continued lines
    out = []
    for command in commands:
        if command.startswith("pip install") or not command.strip():
            continue
        code, _, comment = command.partition(" #")
        out.append(f"{code} || test $? -eq 1" if "exit 1" in comment else code)
    return "\n".join(out)


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("matplotlib")
    for name in ("examples",):
        (tmp_path / name).symlink_to(ROOT / name)
    blocks = [b for b in _blocks() if not any(s in b for s in SKIP)]
    assert len(blocks) >= 5, "README blocks not found"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for block in blocks:
        script = "set -euo pipefail\n" + _runnable(block)
        done = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"README block failed:\n{block}\n{done.stderr[-2000:]}"
    assert (tmp_path / "fashion.cache").is_file() and (tmp_path / "report" / "index.html").is_file()
