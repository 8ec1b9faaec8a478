"""calibkit.torch on the CPU: hooks, names, selection, files, ONNX names (CUDA: test_torch_cuda)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from calibkit.errors import NonFiniteError  # noqa: E402
from calibkit.histogram import Histogram  # noqa: E402
from calibkit.stats import load_stats  # noqa: E402
from calibkit.torch import TorchCollector, collect, onnx_names  # noqa: E402


class Net(torch.nn.Module):
    """Conv-BN-ReLU, a Sequential, a ReLU called twice and a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.relu = torch.nn.ReLU()
        self.layers = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), torch.nn.ReLU())
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x):
        y = self.relu(self.bn(self.conv(x)))
        y = self.relu(self.layers(y) + y)
        return self.fc(y.mean((2, 3)))


@pytest.fixture
def net():
    torch.manual_seed(0)
    return Net().eval()


def _data(n=3, scale=1.0):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(2, 3, 8, 8, generator=g) * scale * (k + 1) for k in range(n)]


def _expected(net, data):
    """Histograms built by hand from the activations the model computes."""
    hists: dict[str, Histogram] = {}

    def fill(name, t):
        hists.setdefault(name, Histogram()).fill(t.detach().numpy())

    for x in data:
        c = net.conv(x)
        b = net.bn(c)
        r = net.relu(b)
        l0 = net.layers[0](r)
        l1 = net.layers[1](l0)
        r2 = net.relu(l1 + r)
        out = net.fc(r2.mean((2, 3)))
        for name, t in [
            ("input.0", x),
            ("conv", c),
            ("bn", b),
            ("relu", r),
            ("layers.0", l0),
            ("layers.1", l1),
            ("relu#1", r2),
            ("fc", out),
        ]:
            fill(name, t)
    return hists


def test_leaf_modules_inputs_and_repeated_calls(net):
    data = _data()
    with torch.no_grad(), collect(net) as c:
        for x in data:
            net(x)
    assert c.n_batches_ == 3
    expected = _expected(net, data)
    assert list(c.histograms_) == list(expected)
    for name, h in expected.items():
        assert c.histograms_[name] == h, name
    assert c.origins_["relu#1"] == ("relu", 1, "")
    assert c.origins_["input.0"] == (None, 0, "0")


def test_hooks_removed_on_exit_and_on_error(net):
    def hooks():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())

    with collect(net):
        assert hooks() > 0
    assert hooks() == 0

    def fail():
        with collect(net):
            net(_data(1)[0])
            msg = "boom"
            raise RuntimeError(msg)

    with pytest.raises(RuntimeError, match="boom"):
        fail()
    assert hooks() == 0


def test_selection_by_pattern_type_and_no_inputs(net):
    with torch.no_grad(), collect(net, modules="layers.*", inputs=False) as c:
        net(_data(1)[0])
    assert list(c.histograms_) == ["layers.0", "layers.1"]
    with torch.no_grad(), collect(net, types=torch.nn.Conv2d, inputs=False) as c:
        net(_data(1)[0])
    assert list(c.histograms_) == ["conv", "layers.0"]
    with torch.no_grad(), collect(net, modules=["fc", "layers"], types=torch.nn.Linear) as c:
        net(_data(1)[0])
    assert list(c.histograms_) == ["input.0", "fc"]
    with pytest.raises(ValueError, match="no module of the model matches"):
        collect(net, modules="nothing", inputs=False).__enter__()


def test_several_outputs_and_keyword_inputs():
    class Two(torch.nn.Module):
        def forward(self, x, *, scale):
            return {"a": x * scale, "b": (x - 1, torch.arange(3))}

    m = Two()
    with collect(m) as c:
        m(torch.ones(4), scale=torch.full((1,), 3.0))
    assert list(c.histograms_) == ["input.0", "input.scale", "output.a", "output.b.0"]
    assert c.histograms_["output.a"].upper == 3.0
    assert c.origins_["output.b.0"] == ("", 0, "b.0")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_and_high_precision_tensors_widen_exactly(dtype):
    x = (torch.randn(1000, generator=torch.Generator().manual_seed(2)) * 7).to(dtype)
    m = torch.nn.Identity()
    with collect(m) as c:
        m(x)
    expected = Histogram().fill(x.double().numpy())
    assert c.histograms_["input.0"] == expected
    assert c.histograms_["output"] == expected


def test_nan_raises_naming_tensor_and_batch_and_skip_counts(net):
    bad = _data(1)[0].clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"tensor 'input.0', batch 1: 1 NaN"):  # noqa: PT012
        with torch.no_grad(), collect(net) as c:
            net(_data(1)[0])
            net(bad)
    with torch.no_grad(), collect(net, nan_policy="skip") as c:
        net(bad)
    assert c.histograms_["input.0"].num_nan == 1


def test_bad_arguments():
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        TorchCollector(object())
    with pytest.raises(ValueError, match="nan_policy"):
        TorchCollector(torch.nn.ReLU(), nan_policy="drop")
    with pytest.raises(ValueError, match="backend"):
        TorchCollector(torch.nn.ReLU(), backend="gpu")
    with pytest.raises(ValueError, match="power of two"):
        TorchCollector(torch.nn.ReLU(), num_bins=1000)


def test_saved_statistics_feed_select(net, tmp_path):
    with torch.no_grad(), collect(net) as c:
        for x in _data():
            net(x)
    path = c.save(tmp_path / "stats.npz")
    stats = load_stats(path)
    assert stats.histograms == c.histograms_
    assert stats.settings.source_kind == "torch"
    assert stats.settings.source == "Net"
    assert stats.settings.num_batches == 3
    cache = tmp_path / "model.cache"
    cmd = [sys.executable, "-m", "calibkit", "select", str(path), "-a", "entropy2"]
    cmd += ["--trt-version", "10.3", "-o", str(cache)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    lines = cache.read_text().splitlines()
    assert lines[0].startswith("TRT-10")
    assert {line.split(":")[0] for line in lines[1:]} == set(c.histograms_)


# torch's exporter warns about its own use of a deprecated pytree API
_EXPORT_WARNINGS = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


@_EXPORT_WARNINGS
def test_onnx_names_follow_the_exporters_scopes(net, tmp_path):
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    with torch.no_grad(), collect(net) as c:
        for x in _data():
            net(x)
    path = tmp_path / "net.onnx"
    torch.onnx.export(
        net, (_data(1)[0],), str(path), dynamo=True, input_names=["x"], output_names=["y"]
    )
    names = onnx_names(path, c.origins_)
    proto = onnx.load(str(path))
    producer = {out: n for n in proto.graph.node for out in n.output}
    assert names.mapping["input.0"] == "x"
    assert names.mapping["fc"] == "y"
    # the exporter folds the BatchNorm into the Conv: the BatchNorm's output is that Conv's
    assert producer[names.mapping["bn"]].op_type == "Conv"
    assert "conv" in names.unmapped
    assert producer[names.mapping["relu"]].op_type == "Relu"
    assert producer[names.mapping["relu#1"]].op_type == "Relu"
    assert names.mapping["relu"] != names.mapping["relu#1"]
    # relu#1 reads the Add, relu the folded Conv: the calls are told apart by data flow
    add = producer[producer[names.mapping["relu#1"]].input[0]]
    assert add.op_type == "Add"
    renamed = load_stats(c.save(tmp_path / "onnx.npz", names=names.mapping))
    assert set(renamed.histograms) == set(names.mapping.values())
    assert renamed.histograms["y"] == c.histograms_["fc"]
    # the renamed statistics give a Q/DQ model of the exported graph
    qdq = tmp_path / "q.onnx"
    cmd = [
        sys.executable,
        "-m",
        "calibkit",
        "qdq",
        str(path),
        "--stats",
        str(tmp_path / "onnx.npz"),
    ]
    cmd += ["--algorithm", "entropy2", "-o", str(qdq)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    q = onnx.load(str(qdq))
    quantized = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    assert "x" in quantized


@_EXPORT_WARNINGS
def test_onnx_names_refuses_the_torchscript_exporter(net, tmp_path):
    pytest.importorskip("onnx")
    path = tmp_path / "ts.onnx"
    torch.onnx.export(net, (_data(1)[0],), str(path), dynamo=False)
    with pytest.raises(ValueError, match="dynamo=True"):
        onnx_names(path, {"conv": ("conv", 0, "")})


def test_importing_calibkit_does_not_import_torch():
    code = "import sys, calibkit, calibkit.stats, calibkit.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_cpu_backend_counts_match_numpy(net):
    x = _data(1)[0]
    with torch.no_grad(), collect(net, backend="cpu", modules="conv", inputs=False) as c:
        net(x)
    h = c.histograms_["conv"]
    a = np.abs(net.conv(x).detach().numpy().astype(np.float64)).ravel()
    assert h.total == a.size
    assert h.max_abs == a.max()
