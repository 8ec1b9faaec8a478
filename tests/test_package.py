"""The package surface: a light import, the console script, and the public names."""

from __future__ import annotations

import subprocess
import sys

import pytest

import calibkit as ck
from calibkit.cli import main

HEAVY = ("onnx", "onnxruntime", "matplotlib", "tensorrt", "pycuda", "tqdm", "PIL", "flatbuffers")


def test_import_is_light():
    code = f"import sys, calibkit; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_module_imports_without_the_extras():
    """``pytest --doctest-modules calibkit`` imports every module: none may need an extra."""
    code = (
        "import importlib, pkgutil, sys\n"
        f"for name in {HEAVY!r}: sys.modules[name] = None  # import raises ImportError\n"
        "import calibkit\n"
        "for m in pkgutil.walk_packages(calibkit.__path__, 'calibkit.'):\n"
        "    if m.name != 'calibkit.__main__':  # runs the CLI\n"
        "        importlib.import_module(m.name)\n"
        "print(len([m for m in sys.modules if m.startswith('calibkit.')]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 40  # every module, not a package that failed quietly


def test_public_names_exist():
    for name in ck.__all__:
        assert hasattr(ck, name), name


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert ck.__version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("calibrate", "select", "cache", "qdq", "trt"):
        assert command in out


def test_python_dash_m():
    out = subprocess.run(
        [sys.executable, "-m", "calibkit", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("calibkit ")


def test_cli_reference_is_current(request, monkeypatch):
    """docs/cli.md is generated from the parser: regenerate it with scripts/cli_doc.py."""
    root = request.config.rootpath
    monkeypatch.syspath_prepend(str(root / "scripts"))
    import cli_doc

    assert (root / "docs" / "cli.md").read_text() == cli_doc.render(), (
        "docs/cli.md is stale: run python scripts/cli_doc.py"
    )
