"""Polygraphy's conventions: loader scripts, --load-inputs JSON, input shapes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calibkit.cli import main
from calibkit.data.sources import (
    DataError,
    InputSpec,
    at_calibration_shapes,
    open_data,
    parse_shape,
    read_polygraphy_inputs,
)

F32 = np.dtype(np.float32)
X = [InputSpec("x", F32, ("n", 3))]
FASHION = Path(__file__).resolve().parents[1] / "examples" / "fashion_mnist"


# -- loader scripts ---------------------------------------------------------------------------
def test_loader_script_imports_a_module_beside_it(tmp_path):
    (tmp_path / "helpers_beside_loader.py").write_text(
        "import numpy as np\nBATCHES = [np.full((2, 3), 5, np.float32)]\n"
    )
    (tmp_path / "loader.py").write_text(
        "from helpers_beside_loader import BATCHES\n\n"
        "def load_data():\n    return [{'x': b} for b in BATCHES]\n"
    )
    before = list(sys.path)
    (batch,) = open_data(str(tmp_path / "loader.py"), X)
    np.testing.assert_array_equal(batch["x"], np.full((2, 3), 5, np.float32))
    assert sys.path == before  # put there for the import only, as Polygraphy does


def test_loader_script_error_names_its_own_line(tmp_path):
    script = tmp_path / "loader.py"
    script.write_text("import numpy as np\n\nx = 1\nraise ValueError('no data here')\n")
    with pytest.raises(DataError) as info:
        open_data(str(script), X)
    assert str(info.value) == (
        f"{script}:4: the data-loader script failed on import: ValueError: no data here"
    )


def test_loader_function_error_names_its_own_line(tmp_path):
    script = tmp_path / "loader.py"
    script.write_text(
        "import numpy as np\n\ndef load_data():\n"
        "    yield {'x': np.ones((2, 3), np.float32)}\n"
        "    raise KeyError('shard 2')\n"
    )
    with pytest.raises(
        DataError,
        match=rf"^{script}:5: the data-loader script failed producing "
        r"item 1: KeyError: 'shard 2'$",
    ):
        list(open_data(str(script), X))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("import sys\nsys.exit(3)\n", "called sys.exit(3) on import"),
        (
            "import sys\ndef load_data():\n    sys.exit('no GPU')\n",
            "called sys.exit('no GPU') when called",
        ),
    ],
)
def test_loader_script_sys_exit_is_not_silent(tmp_path, capsys, body, expected):
    script = tmp_path / "loader.py"
    script.write_text(body)
    model = FASHION / "model.onnx"
    args = ["calibrate", str(model), "--data-loader-script", str(script), "--trt-version", "10.16"]
    assert main([*args, "-o", str(tmp_path / "c.cache")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and f"{script}:" in err[0]
    assert not (tmp_path / "c.cache").exists()


# -- Polygraphy's saved inputs ------------------------------------------------------------------
def _polygraphy_saved_inputs(tmp_path) -> Path:
    """Run the real `polygraphy run --save-inputs` on the bundled model."""
    pytest.importorskip("polygraphy")
    exe = Path(sys.executable).parent / "polygraphy"
    exe = str(exe) if exe.exists() else shutil.which("polygraphy")
    if exe is None:
        pytest.skip("polygraphy's command-line tool is not on PATH")
    out = tmp_path / "inputs.json"
    cmd = [exe, "run", str(FASHION / "model.onnx"), "--onnxrt", "--iterations", "3"]
    subprocess.run([*cmd, "--save-inputs", str(out)], check=True, capture_output=True)
    return out


def test_reads_polygraphys_saved_inputs(tmp_path, capsys):
    saved = _polygraphy_saved_inputs(tmp_path)
    from polygraphy.json import load_json  # Polygraphy's own reader, for the expected values

    expected = load_json(str(saved))
    feeds = read_polygraphy_inputs(saved)
    assert len(feeds) == len(expected) == 3
    for got, want in zip(feeds, expected, strict=True):
        assert got.keys() == want.keys() == {"image"}
        assert got["image"].dtype == want["image"].dtype
        np.testing.assert_array_equal(got["image"], want["image"])
    out = tmp_path / "c.cache"
    args = ["calibrate", str(FASHION / "model.onnx"), "--load-inputs", str(saved)]
    assert main([*args, "--trt-version", "10.16", "-o", str(out), "--algorithm", "minmax"]) == 0
    # minmax over exactly these inputs: the input's amax is their max |x|
    from calibkit.cache.format import read_cache
    from calibkit.scale import scale_from_amax

    amax = max(float(np.abs(f["image"]).max()) for f in feeds)
    assert read_cache(out).scales["image"] == scale_from_amax(amax)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{}", "a JSON list"),
        ("[1]", "iteration 0 is a int"),
        (
            '[{"x": {"array": "!!", "polygraphy_class": "ndarray"}}]',
            "iteration 0, input 'x': not a base64",
        ),
        ('[{"x": [1, 2]}]', "expected a Polygraphy ndarray"),
        ("[", "not valid JSON"),
    ],
)
def test_bad_polygraphy_inputs(tmp_path, text, match):
    path = tmp_path / "inputs.json"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        read_polygraphy_inputs(path)


# -- shapes -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("image=8x1x28x28", ("image", (8, 1, 28, 28))),
        ("image:[8,1,28,28]", ("image", (8, 1, 28, 28))),
        ("image:[8, 1, 28, 28]", ("image", (8, 1, 28, 28))),
        ("image:8x1x28x28", ("image", (8, 1, 28, 28))),
        ("input:0:[1,3]", ("input:0", (1, 3))),  # TensorFlow-style names keep their ':'
        ("a=b=2x3", ("a=b", (2, 3))),
        ("a:b=2x3", ("a:b", (2, 3))),
    ],
)
def test_parse_shape_spellings(text, expected):
    assert parse_shape(text) == expected


@pytest.mark.parametrize("bad", ["x", "x:[]", "x:[1,0]", "x:[a]", ":[1]", "x=2x"])
def test_parse_shape_refuses(bad):
    with pytest.raises(DataError, match="NAME=DxDx"):
        parse_shape(bad)


def test_last_partial_batch_gets_a_hint():
    batches = [{"x": np.ones((8, 3), np.float32)}, {"x": np.ones((4, 3), np.float32)}]
    with pytest.raises(
        DataError,
        match=r"last batch, partly filled \(12 samples are not a "
        r"multiple of 8\): pass --max-samples 8",
    ):
        list(at_calibration_shapes(batches, {"x": (8, 3)}))
    # a short batch that is not the last: no such hint
    batches = [{"x": np.ones((4, 3), np.float32)}, {"x": np.ones((8, 3), np.float32)}]
    with pytest.raises(DataError) as info:
        list(at_calibration_shapes(batches, {"x": (8, 3)}))
    assert "last batch" not in str(info.value)


def test_same_loader_script_runs_in_polygraphy_and_calibkit(tmp_path):
    # One script, two tools: Polygraphy's own --data-loader-script and calibkit's. It imports a
    # module beside it, which only works where the script's folder is put on sys.path.
    pytest.importorskip("polygraphy")
    exe = Path(sys.executable).parent / "polygraphy"
    if not exe.exists():
        pytest.skip("polygraphy's command-line tool is not beside this python")
    (tmp_path / "fashion_batches.py").write_text(
        f"import numpy as np\nIMAGES = np.load({str(FASHION / 'calib.npz')!r})['image'][:16]\n"
    )
    script = tmp_path / "loader.py"
    script.write_text(
        "from fashion_batches import IMAGES\n\n"
        "def load_data():\n"
        "    for i in range(0, 16, 8):\n"
        "        yield {'image': IMAGES[i : i + 8]}\n"
    )
    model = FASHION / "model.onnx"
    cmd = [str(exe), "run", str(model), "--onnxrt", "--data-loader-script", str(script)]
    done = subprocess.run(cmd, cwd=tmp_path / "..", capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "c.cache"
    args = ["calibrate", str(model), "--data-loader-script", str(script), "--trt-version", "10.16"]
    assert main([*args, "-o", str(out)]) == 0
    assert out.read_bytes().startswith(b"TRT-101600-EntropyCalibration2\n")
