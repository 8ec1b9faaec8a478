"""CUDA histograms against the NumPy twin, bit for bit (run on a machine with a CUDA GPU)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

if torch.cuda.is_available():
    pytest.importorskip("cupy", reason="CUDA histograms need CuPy")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from calibkit import _reference  # noqa: E402
from calibkit.errors import NonFiniteError  # noqa: E402
from calibkit.histogram import Histogram  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@pytest.fixture(autouse=True)
def numpy_twin(monkeypatch):
    """The CPU histograms these tests compare with run on the pure-NumPy twin."""
    monkeypatch.setattr("calibkit.histogram._impl", _reference)


def _host(t):
    t = t.detach().cpu()
    return (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).numpy()


@pytest.fixture(params=[True, False], ids=["one-launch", "two-launches"])
def fused(request):
    """Each tensor in one launch, or in two."""
    return request.param


def _check(batches, fused, num_bins=2048, nan_policy="raise"):
    """Feed batches ({name: cuda tensor} each) to both; assert identical histograms."""
    from calibkit.torch.cuda import CudaHistograms

    dev = CudaHistograms(torch.device("cuda"), num_bins, nan_policy=nan_policy, fused=fused)
    assert dev.fused == fused
    cpu: dict[str, Histogram] = {}
    for batch in batches:
        for name, t in batch.items():
            dev.add(name, t)
            cpu.setdefault(name, Histogram(num_bins)).fill(_host(t), nan_policy=nan_policy)
        dev.end_batch()
    got = dev.histograms()
    assert list(got) == list(cpu)
    for name in cpu:
        a, b = got[name], cpu[name]
        assert a.upper == b.upper, name
        assert a.max_abs == b.max_abs, name
        assert (a.num_inf, a.num_nan) == (b.num_inf, b.num_nan), name
        np.testing.assert_array_equal(a.counts, b.counts, err_msg=name)
    return got


def _cuda(values, dtype):
    return torch.as_tensor(np.asarray(values, np.float64)).to(dtype).cuda()


@pytest.mark.parametrize("dtype", DTYPES)
def test_bin_edges_and_the_range_itself(dtype, rng, fused):
    # upper = 3.0 from the first batch; then every edge k * 3 / 2048, its neighbours, and 3.0
    edges = np.arange(2049) * (3.0 / 2048)
    near = np.concatenate([edges, np.nextafter(edges, 0), np.nextafter(edges, 10)])
    batches = [
        {"t": _cuda([3.0, -1.0, 0.5], dtype)},
        {"t": _cuda(rng.permutation(near) * rng.choice([-1, 1], near.size), dtype)},
        {"t": _cuda([3.0] * 7 + [-3.0] * 5, dtype)},  # exactly the range: the last bin
    ]
    _check(batches, fused)


@pytest.mark.parametrize("dtype", DTYPES)
def test_subnormals_huge_values_inf_and_nan(dtype, rng, fused):
    # float64: float32's extremes (a float64 subnormal range overflows num_bins / upper, and
    # doubling up to float64's max overflows the range, in the twin as on the GPU)
    info = torch.finfo(torch.float32 if dtype == torch.float64 else dtype)
    tiny = [info.smallest_normal * 2.0**-k for k in range(1, 8)]
    huge = [float(info.max), -float(info.max) / 3, float(info.max) / 2]
    batches = [
        {"t": _cuda([0.0] * 9, dtype)},  # only zeros: no range yet
        {"t": _cuda(tiny + [-t for t in tiny], dtype)},  # subnormal range
        {"t": _cuda(rng.standard_normal(5000) * info.smallest_normal, dtype)},
        {"t": _cuda([*huge, np.inf, -np.inf, np.nan, 0.0, 1.0], dtype)},
        {"t": _cuda(rng.standard_normal(10_001), dtype)},
    ]
    _check(batches, fused, nan_policy="skip")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_thousands_of_growths(dtype, rng, fused):
    # 24 tensors a batch; each grows by 1 to 5 doublings per batch
    names = [f"layer{i}" for i in range(24)]
    scale = {n: 2.0 ** float(rng.integers(-120, -100)) for n in names}
    batches = []
    for _ in range(60):
        batch = {}
        for n in names:
            scale[n] *= 2.0 ** float(rng.integers(1, 6)) * rng.uniform(0.6, 1.0)
            size = int(rng.integers(1, 3000))
            batch[n] = _cuda(rng.standard_normal(size) * scale[n], dtype)
        batches.append(batch)
    got = _check(batches, fused)
    assert all(h.upper > 2.0**-100 for h in got.values())


def test_large_tensors_odd_sizes_and_misaligned_views(rng, fused):
    big = torch.randn(16 * 2**20 + 3, device="cuda") * 4
    batches = [
        {"a": big[1:], "b": big[5:].half()},
        {"a": big[:-1] * 3, "b": (big[2:] * 0.5).half()},
        {"a": big.view(-1)[7::2], "b": big[: 2**20].bfloat16().half()},
        # growth on a tensor as large as a grid gets (the grid's cap)
        {"a": big * 1000, "b": big[: 2**22].half() * 7},
    ]
    _check(batches, fused)


def test_many_small_tensors(rng, fused):
    batches = [
        {f"t{i}": _cuda(rng.standard_normal(i + 1) * (b + 1), torch.float32) for i in range(300)}
        for b in range(4)
    ]
    _check(batches, fused)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=300),
        min_size=1,
        max_size=6,
    )
)
def test_property_identical_counts(batches):
    for fused in (True, False):
        _check(
            [{"x": _cuda(b, torch.float32), "h": _cuda(b, torch.float16)} for b in batches],
            fused,
            nan_policy="skip",
        )


def test_nan_under_raise_names_tensor_and_batch_and_leaves_that_batch_out(rng, fused):
    from calibkit.torch.cuda import CudaHistograms

    dev = CudaHistograms(torch.device("cuda"), fused=fused)
    cpu = Histogram()
    good = [rng.standard_normal(100) * k for k in (1, 5)]
    for k, values in enumerate([good[0], [1.0, np.nan, 100.0], good[1]]):
        dev.add("x", _cuda(values, torch.float32))
        if k != 1:
            cpu.fill(np.asarray(values, np.float32))
        if k < 2:
            dev.end_batch()
    with pytest.raises(NonFiniteError, match=r"tensor 'x', batch 1: 1 NaN"):
        dev.end_batch()
    assert dev.histograms()["x"] == cpu


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_collector_on_cuda_equals_collector_on_cpu(dtype):
    from calibkit.torch import collect

    torch.manual_seed(0)
    model = (
        torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(8 * 14 * 14, 10),
        )
        .eval()
        .to("cuda", dtype)
    )
    data = [torch.randn(4, 3, 16, 16, device="cuda", dtype=dtype) * (k + 1) for k in range(5)]
    results = {}
    for backend in ("auto", "cpu"):
        with torch.inference_mode(), collect(model, backend=backend) as c:
            for x in data:
                model(x)
        results[backend] = c.histograms_
    assert list(results["auto"]) == ["input.0", "0", "1", "2", "3", "4"]
    assert results["auto"] == results["cpu"]


class _Residual(torch.nn.Module):
    """torchvision's pattern: BN -> ReLU(inplace) overwrites BN's output; `out += x` too."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.relu = torch.nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn(self.conv(x)))
        out += x
        return self.relu(out)


def _collect_both(model, data, streams):
    """Histograms from the CUDA and the CPU backend; batch k runs on streams[k]."""
    from calibkit.torch import collect

    results = {}
    for backend in ("auto", "cpu"):
        with torch.inference_mode(), collect(model, backend=backend) as c:
            for x, stream in zip(data, streams, strict=True):
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    model(x)
                torch.cuda.current_stream().wait_stream(stream)
        results[backend] = c.histograms_
    return results


def test_in_place_ops_after_the_hook_do_not_change_what_was_recorded():
    torch.manual_seed(0)
    model = torch.nn.Sequential(_Residual(), _Residual()).eval().cuda()
    data = [torch.randn(4, 8, 16, 16, device="cuda") * (k + 1) for k in range(4)]
    results = _collect_both(model, data, [torch.cuda.current_stream()] * 4)
    assert results["auto"] == results["cpu"]
    # the test can fail: BN's output before and after the in-place ReLU differ
    assert results["cpu"]["0.bn"] != results["cpu"]["0.relu"]


def test_forward_moving_to_another_stream():
    torch.manual_seed(0)
    model = torch.nn.Sequential(_Residual(), torch.nn.Flatten(), torch.nn.Linear(2048, 5))
    model = model.eval().cuda()
    data = [torch.randn(8, 8, 16, 16, device="cuda") * (k + 1) for k in range(4)]
    side = torch.cuda.Stream()
    streams = [torch.cuda.current_stream(), side, side, torch.cuda.current_stream()]
    results = _collect_both(model, data, streams)
    assert results["auto"] == results["cpu"]
