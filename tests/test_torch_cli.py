"""``calibkit calibrate MODULE:FACTORY --data loader.py``: the PyTorch SOURCE of the CLI."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from calibkit.cache.format import read_cache, write_cache  # noqa: E402
from calibkit.cli import main  # noqa: E402
from calibkit.histogram import Histogram  # noqa: E402
from calibkit.pipeline import select_scales  # noqa: E402
from calibkit.stats import StatsSettings, load_stats, save_stats  # noqa: E402
from calibkit.torch import collect, onnx_names  # noqa: E402

OLD = b"OLD CONTENT\n"

MODELS = '''
import torch


class Net(torch.nn.Module):
    """Conv-BN-ReLU, a ReLU called twice, a Linear; the second input is added if given."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.relu = torch.nn.ReLU()
        self.head = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), torch.nn.ReLU())
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x, shift=None):
        if shift is not None:
            x = x + shift
        y = self.relu(self.bn(self.conv(x)))
        y = self.relu(self.head(y) + y)
        return self.fc(y.mean((2, 3)))


def make_model():
    torch.manual_seed(0)
    net = Net()
    net.bn.running_mean.uniform_(-0.5, 0.5)  # not the identity BatchNorm
    return net


class Zoo:
    @staticmethod
    def small():
        return make_model()


def broken():
    raise RuntimeError("no weights here")


def not_a_module():
    return [1, 2]
'''

LOADERS = """
import numpy as np
import torch


def _x(k):
    rng = np.random.default_rng(k)
    return (rng.standard_normal((2, 3, 8, 8)) * (k + 1)).astype(np.float32)


def _shift(k):
    return np.full((2, 3, 8, 8), 0.25 * k, np.float32)


def load_data():
    for k in range(3):
        yield _x(k)


def as_tensors():
    return [torch.from_numpy(_x(k)) for k in range(3)]


def as_kwargs():
    for k in range(3):
        yield {"x": _x(k), "shift": _shift(k)}


def as_tuples():
    for k in range(3):
        yield (_x(k), torch.from_numpy(_shift(k)))


def float64():
    for k in range(3):
        yield _x(k).astype(np.float64)


def bad_item():
    yield _x(0)
    yield "not a batch"


def bad_value():
    yield {"x": _x(0), "shift": "zero"}


def wrong_shape():
    yield _x(0)
    yield np.zeros((2, 5, 8, 8), np.float32)


def empty():
    return []


def with_nan():
    x = _x(0)
    x[0, 0, 0, 0] = np.nan
    yield x
"""


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A folder holding models.py and loader.py, made the current directory."""
    (tmp_path / "models.py").write_text(MODELS)
    (tmp_path / "loader.py").write_text(LOADERS)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    # forget the modules imported from this folder: the next test's `models` is another file
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(f"t_{path.stem}_{id(path)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(argv, capsys):
    status = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return status, cap.out, cap.err


def _calibrate(work, capsys, *extra, source="models.py:make_model", data="loader.py"):
    argv = ["calibrate", source, "--data", data, "--trt-version", "10.16"]
    status, out, err = _run([*argv, "-o", work / "t.cache", *extra], capsys)
    assert status == 0, err
    return out, err


def _api(work, loader, call, *, modules=None, inputs=True, names=None):
    """What the Python API gives: collect + select_scales + save_stats, as docs/torch.md shows."""
    model = _module(work / "models.py").make_model().eval()
    batches = getattr(_module(work / "loader.py"), loader)()
    kwargs = {} if modules is None else {"modules": modules}
    with torch.inference_mode(), collect(model, inputs=inputs, **kwargs) as c:
        for item in batches:
            call(model, item)
    hists = c.histograms_
    if names is not None:
        mapping = onnx_names(names, c.origins_).mapping
        hists = {new: hists[old] for old, new in mapping.items()}
    selection = select_scales(hists, "entropy2", trt_version="10.16")
    write_cache(work / "api.cache", selection.cache())
    return hists, c.n_batches_


def _save_api_stats(work, hists, n, source, data):
    settings = StatsSettings(
        source_kind="torch",
        source=source,
        data=data,
        algorithm="entropy2",
        num_bins=2048,
        trt_version="10.16",
        share_scales="trt",
        nan_policy="raise",
        num_batches=n,
    )
    save_stats(work / "api.stats.npz", hists, settings=settings)


def _as_tensor(x):
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(x)


CALLS = {
    "load_data": lambda m, x: m(torch.from_numpy(x)),
    "as_tensors": lambda m, x: m(x),
    "as_kwargs": lambda m, b: m(**{k: _as_tensor(v) for k, v in b.items()}),
    "as_tuples": lambda m, b: m(*(_as_tensor(v) for v in b)),
}


@pytest.mark.parametrize("loader", list(CALLS))
def test_cache_and_stats_equal_the_python_apis_byte_for_byte(work, capsys, loader):
    data = f"loader.py:{loader}" if loader != "load_data" else "loader.py"
    out, _ = _calibrate(work, capsys, data=data)
    hists, n = _api(work, loader, CALLS[loader])
    _save_api_stats(work, hists, n, "models.py:make_model", data)
    assert (work / "t.cache").read_bytes() == (work / "api.cache").read_bytes()
    assert (work / "t.stats.npz").read_bytes() == (work / "api.stats.npz").read_bytes()
    assert f"{len(hists)} tensors from 3 batches" in out
    assert "module paths (no --onnx): TensorRT will not find these names" in out
    names = list(load_stats(work / "t.stats.npz").histograms)
    inputs = {
        "as_kwargs": ["input.x", "input.shift"],
        "as_tuples": ["input.0", "input.1"],
    }.get(loader, ["input.0"])
    assert names == [*inputs, "conv", "bn", "relu", "head.0", "head.1", "relu#1", "fc"]


def test_module_entry_point_dotted_factory_and_cwd_import(work, capsys):
    """``models:Zoo.small`` imports ./models.py as a module, as the file path does."""
    _calibrate(work, capsys, source="models.py:make_model")
    by_file = (work / "t.cache").read_bytes()
    _calibrate(work, capsys, source="models:Zoo.small")
    assert (work / "t.cache").read_bytes() == by_file
    assert str(work) not in sys.path  # the current directory was on it only for the import


def test_modules_and_no_inputs(work, capsys):
    _calibrate(work, capsys, "--modules", "conv", "--modules", "head.*", "--no-inputs")
    hists, _ = _api(work, "load_data", CALLS["load_data"], modules=["conv", "head.*"], inputs=False)
    assert list(load_stats(work / "t.stats.npz").histograms) == ["conv", "head.0", "head.1"]
    assert list(hists) == ["conv", "head.0", "head.1"]
    assert (work / "t.cache").read_bytes() == (work / "api.cache").read_bytes()


def test_dtype_casts_floating_inputs_and_the_model(work, capsys):
    _calibrate(work, capsys)
    as_float32 = load_stats(work / "t.stats.npz").histograms
    # float64 arrays cast to float32 are the float32 batches again: the same histograms
    _calibrate(work, capsys, "--dtype", "float32", data="loader.py:float64")
    cast = load_stats(work / "t.stats.npz").histograms
    assert list(cast) == list(as_float32)
    for name, h in cast.items():
        np.testing.assert_array_equal(h.counts, as_float32[name].counts, err_msg=name)
        assert h.upper == as_float32[name].upper
    # bfloat16: the input recorded is the batch rounded to bfloat16
    _calibrate(work, capsys, "--dtype", "bfloat16")
    expected = Histogram()
    for x in _module(work / "loader.py").load_data():
        expected.fill(torch.from_numpy(x).to(torch.bfloat16).float().numpy())
    got = load_stats(work / "t.stats.npz").histograms["input.0"]
    np.testing.assert_array_equal(got.counts, expected.counts)
    assert got.upper == expected.upper


# torch's exporter warns about its own use of a deprecated pytree API (as in test_torch.py)
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
def test_onnx_names_key_the_cache(work, capsys):
    pytest.importorskip("onnxscript")  # the dynamo exporter's dependency
    onnx = pytest.importorskip("onnx")
    model = _module(work / "models.py").make_model().eval()
    x = torch.from_numpy(_module(work / "loader.py")._x(0))
    torch.onnx.export(model, (x,), str(work / "m.onnx"), dynamo=True)
    capsys.readouterr()
    out, err = _calibrate(work, capsys, "--onnx", "m.onnx")
    hists, _ = _api(work, "load_data", CALLS["load_data"], names=str(work / "m.onnx"))
    assert (work / "t.cache").read_bytes() == (work / "api.cache").read_bytes()
    cache = read_cache(work / "t.cache")
    # the exporter's names (torch 2.13: x, getitem, relu, conv2d_1, relu_1, relu_2, linear):
    # the graph input and ONNX values, each a tensor of the exported graph
    proto = onnx.load(str(work / "m.onnx"))
    tensors = {i.name for i in proto.graph.input} | {o for n in proto.graph.node for o in n.output}
    assert set(cache.scales) == set(hists) <= tensors
    assert "x" in cache.scales
    assert f"names: {len(hists)} of 8 recorded tensors mapped to m.onnx" in out
    # the Conv followed by a BatchNorm: the exporter folds them, the Conv has no tensor of its own
    assert len(hists) == 7
    assert len(err.strip().splitlines()) == 1
    assert "1 recorded tensor(s) have no tensor in m.onnx" in err
    assert "'conv': 0 ONNX node group(s)" in err
    # the same histograms as without --onnx, under the ONNX names
    by_module = dict(load_stats(work / "t.stats.npz").histograms)
    _calibrate(work, capsys)
    by_path = load_stats(work / "t.stats.npz").histograms
    mapping = onnx_names(work / "m.onnx", _origins(work)).mapping
    for old, new in mapping.items():
        np.testing.assert_array_equal(by_module[new].counts, by_path[old].counts)


def _origins(work):
    model = _module(work / "models.py").make_model().eval()
    with torch.inference_mode(), collect(model) as c:
        model(torch.from_numpy(_module(work / "loader.py")._x(0)))
    return c.origins_


def _fail(work, capsys, argv, needle, monkeypatch=None):
    out_dir = work / "out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "t.cache").write_bytes(OLD)
    argv = ["calibrate", *argv, "--trt-version", "10.16", "-o", out_dir / "t.cache"]
    status, _, err = _run(argv, capsys)
    lines = err.strip().splitlines()
    assert status == 1
    assert len(lines) == 1, lines
    assert "Traceback" not in err
    assert needle in lines[0], lines[0]
    assert sorted(p.name for p in out_dir.iterdir()) == ["t.cache"]
    assert (out_dir / "t.cache").read_bytes() == OLD
    return lines[0]


ERRORS = {
    "module-missing": (["nosuchmod:make", "--data", "loader.py"], "no module named 'nosuchmod'"),
    "file-missing": (["nope.py:make", "--data", "loader.py"], "model script nope.py not found"),
    "attribute-missing": (["models.py:nothing", "--data", "loader.py"], "no function 'nothing'"),
    "module-attribute-missing": (
        ["models:Zoo.big", "--data", "loader.py"],
        "models.Zoo has no attribute 'big'",
    ),
    "factory-raises": (
        ["models.py:broken", "--data", "loader.py"],
        "the model factory models.py:broken failed when called: RuntimeError: no weights here",
    ),
    "not-a-module": (
        ["models.py:not_a_module", "--data", "loader.py"],
        "returned a list, expected a torch.nn.Module",
    ),
    "no-data": (["models.py:make_model"], "needs calibration inputs: --data LOADER.py"),
    "data-not-a-script": (
        ["models.py:make_model", "--data", "calib.npz"],
        "calib.npz: a PyTorch model reads its batches from a loader script",
    ),
    "loader-missing": (
        ["models.py:make_model", "--data", "none.py"],
        "data-loader script none.py not found",
    ),
    "bad-item": (
        ["models.py:make_model", "--data", "loader.py:bad_item"],
        "loader.py:bad_item: batch 1 is a str; expected a dict",
    ),
    "bad-value": (
        ["models.py:make_model", "--data", "loader.py:bad_value"],
        "loader.py:bad_value: batch 0: argument 'shift' is a str, expected an array",
    ),
    "forward-raises": (
        ["models.py:make_model", "--data", "loader.py:wrong_shape"],
        "models.py:make_model: batch 1 (from loader.py:wrong_shape): the forward failed: "
        "RuntimeError:",
    ),
    "zero-batches": (
        ["models.py:make_model", "--data", "loader.py:empty"],
        "loader.py:empty: yielded no batches",
    ),
    "nan": (["models.py:make_model", "--data", "loader.py:with_nan"], "'input.0', batch 0"),
    "onnx-missing": (
        ["models.py:make_model", "--data", "loader.py", "--onnx", "none.onnx"],
        "none.onnx",
    ),
    "onnx-garbage": (
        ["models.py:make_model", "--data", "loader.py", "--onnx", "loader.py"],
        "loader.py: cannot be read as an ONNX model",
    ),
    "modules-match-nothing": (
        ["models.py:make_model", "--data", "loader.py", "--modules", "encoder.*"],
        "modules pattern 'encoder.*' matches no module",
    ),
    "device": (
        ["models.py:make_model", "--data", "loader.py", "--device", "nodevice"],
        "device 'nodevice'",
    ),
    "onnx-option": (
        ["models.py:make_model", "--data", "loader.py", "--batch-size", "4"],
        "--batch-size applies to an ONNX model, not to models.py:make_model",
    ),
    "torch-option-on-npz": (
        ["acts.npz", "--modules", "conv"],
        "--modules applies to a PyTorch SOURCE (MODULE:FACTORY), not to acts.npz",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_are_one_line_and_write_nothing(work, capsys, case):
    argv, needle = ERRORS[case]
    _fail(work, capsys, argv, needle)


def test_module_failing_on_import_names_its_line(work, capsys):
    (work / "broken_mod.py").write_text("import torch\n\nraise ValueError('bad config')\n")
    line = _fail(work, capsys, ["broken_mod:make", "--data", "loader.py"], "bad config")
    assert "broken_mod.py:3: the model module failed on import: ValueError" in line
    line = _fail(work, capsys, ["broken_mod.py:make", "--data", "loader.py"], "bad config")
    assert "broken_mod.py:3: the model script failed on import: ValueError" in line


def test_missing_dependency_of_a_module_is_not_the_module_missing(work, capsys):
    (work / "needs.py").write_text("import not_installed_pkg_xyz\n")
    _fail(
        work,
        capsys,
        ["needs:make", "--data", "loader.py"],
        "needs.py:1: the model module failed on import: ModuleNotFoundError",
    )


def test_package_failing_on_import(work, capsys):
    (work / "pkg").mkdir()
    (work / "pkg" / "__init__.py").write_text("raise RuntimeError('half installed')\n")
    (work / "pkg" / "models.py").write_text("")
    _fail(
        work,
        capsys,
        ["pkg.models:make", "--data", "loader.py"],
        "importing pkg.models failed: RuntimeError: half installed",
    )
    _fail(work, capsys, ["nopkg.models:make", "--data", "loader.py"], "no module named")


def test_torch_not_installed(work, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    _fail(
        work,
        capsys,
        ["models.py:make_model", "--data", "loader.py"],
        "pip install -e '.[torch]'",
    )


def test_an_existing_file_is_never_an_entry_point(work, capsys):
    """A SOURCE that exists keeps its suffix's meaning even if it looks like MODULE:FACTORY."""
    (work / "a:b").write_bytes(b"")
    _fail(work, capsys, ["a:b"], "a:b: unsupported source")


def test_the_cli_does_not_import_torch():
    code = (
        "import sys, calibkit.cli, calibkit.cli.calibrate as c; "
        "assert c.source_kind('pkg.mod:make') == 'torch'; "
        "assert c.source_kind('m.onnx') == '.onnx'; "
        "assert c.source_kind('path/to/m.py:Zoo.make') == 'torch'; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_console_run_finds_a_module_in_the_current_directory(work):
    """As the console script: sys.path[0] is the script's folder, not the current directory."""
    (work / "bin").mkdir()
    (work / "bin" / "run.py").write_text(
        "import sys\nfrom calibkit.cli import main\nsys.exit(main())\n"
    )
    argv = ["models:make_model", "--data", "loader.py", "--trt-version", "10.16", "-o", "s.cache"]
    done = subprocess.run(
        [sys.executable, "bin/run.py", "calibrate", *argv],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (work / "s.cache").exists() and (work / "s.stats.npz").exists()


ROOT = Path(__file__).resolve().parents[1]


def _docs_block() -> str:
    """The bash block of docs/torch.md's "From the command line" section, as written."""
    text = (ROOT / "docs" / "torch.md").read_text()
    section = text.split("## From the command line", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    return block


@pytest.mark.slow
def test_docs_commands_run_and_agree_with_the_onnx_path(tmp_path):
    """docs/torch.md's commands, then the ONNX path on the same model: the 8 shared amax agree."""
    pytest.importorskip("onnxruntime")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = "set -euo pipefail\n" + _docs_block()
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "names: 8 of 8 recorded tensors mapped" in done.stdout
    onnx_argv = [
        "calibrate",
        str(ROOT / "examples" / "fashion_mnist" / "model.onnx"),
        "--data",
        str(ROOT / "examples" / "fashion_mnist" / "calib.npz"),
        "--trt-version",
        "10.16",
        "--names",
        "onnx",
        "--no-progress",
        "--table",
        "0",
        "-o",
        str(tmp_path / "onnx.cache"),
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(onnx_argv) == 0
    from_torch = load_stats(tmp_path / "fashion_torch.stats.npz")
    from_onnx = load_stats(tmp_path / "onnx.stats.npz")
    assert from_torch.settings.source_kind == "torch"
    assert from_torch.settings.num_batches == from_onnx.settings.num_batches == 63
    torch_cache = read_cache(tmp_path / "fashion_torch.cache").scales
    onnx_cache = read_cache(tmp_path / "onnx.cache").scales
    assert len(torch_cache) == 8 and set(torch_cache) < set(onnx_cache)
    for name, scale in torch_cache.items():
        assert abs(float(scale) / float(onnx_cache[name]) - 1) < 1e-6, name
