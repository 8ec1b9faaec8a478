"""GPU figures for docs/performance.md: CUDA histogram throughput and calibration overhead.

Run on a machine with a CUDA GPU, torch, torchvision, transformers and CuPy:
``python -m benchmarks.gpu --json gpu.json``. Everything is timed with CUDA events after a
warm-up (median of repeats); the references run in the same process and the same run:

- copy bandwidth: ``dst.copy_(src)`` on 1 GiB, bytes read + written per second; read bandwidth:
  ``torch.amax`` over the same 1 GiB (bytes read per second);
- histograms: one steady batch (range already set: one read of the tensor) through calibkit's
  kernel (one launch per tensor, and two), through the same arithmetic in
  torch ops (the alternative to a custom kernel), and ``torch.histc`` of |x| (different
  semantics: float bins, no growth; a speed reference only);
- calibration overhead: forward time with calibkit's hooks over the plain forward, for
  torchvision ResNet-50 (batch 32) and a BERT-base-size encoder (batch 32, 128 tokens), random
  weights; the device time of the histogram kernels per forward, and the bytes they read, whose
  read time at the measured read bandwidth is the floor of any collector that reads every
  hooked tensor once; against a ``torch.histc`` collector modelled on pytorch-quantization's
  HistogramCalibrator (``torch_hist=True``: max, histc, re-binning on growth, one host sync
  per tensor).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics

import torch

import calibkit.torch.cuda
from calibkit.torch import collect
from calibkit.torch.cuda import CudaHistograms


def _time(fn, reps: int = 20, warmup: int = 3) -> float:
    """Median seconds of fn() measured with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)


def _kernel_seconds(fn, reps: int = 20) -> float:
    """Mean device time per fn() of calibkit's kernels (CUPTI, through torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    total = 0.0
    for e in prof.key_averages():
        if e.key.startswith("hist_"):
            total += getattr(e, "device_time_total", None) or e.cuda_time_total
    return total / reps / 1e6


@contextlib.contextmanager
def _histograms_class(cls):
    """Make the collector build its CUDA histograms from `cls` (a CudaHistograms subclass)."""
    base = calibkit.torch.cuda.CudaHistograms
    calibkit.torch.cuda.CudaHistograms = cls
    try:
        yield
    finally:
        calibkit.torch.cuda.CudaHistograms = base


def _launches(fused: bool):
    """Make the collector's CUDA histograms use one launch per tensor, or two."""

    class Chosen(CudaHistograms):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, fused=fused, **kwargs)

    return _histograms_class(Chosen)


def bandwidth() -> dict:
    src = torch.randn(2**28, device="cuda")  # 1 GiB
    dst = torch.empty_like(src)
    nbytes = src.numel() * 4
    copy = _time(lambda: dst.copy_(src))
    read = _time(lambda: torch.amax(src))
    return {"copy_GBps": 2 * nbytes / copy / 1e9, "read_GBps": nbytes / read / 1e9}


def _torch_ops_histogram(x, counts, upper: float):
    """The kernel's steady-state arithmetic in torch ops (exact, several passes)."""
    a = x.abs().double()
    y = a * (counts.numel() / upper)
    inside = y < counts.numel()
    counts += torch.bincount(y[inside].long(), minlength=counts.numel())
    return a.max(), (~inside).sum()


def histograms(sizes_mib, copy_gbps: float) -> list[dict]:
    rows = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for mib in sizes_mib:
            n = (mib << 20) // torch.finfo(dtype).bits * 8
            x = torch.randn(n, device="cuda").to(dtype)
            states = {}
            for fused in (True, False):
                state = states[fused] = CudaHistograms(torch.device("cuda"), fused=fused)
                state.add("x", x * 8)  # sets a range the later batches stay under: one pass
                state.end_batch()

            def two(state=states[False], x=x):
                state.add("x", x)

            def ours(state=states[True], x=x):
                state.add("x", x)

            t_two = _time(two)
            k_two = _kernel_seconds(two)

            counts = torch.zeros(2048, dtype=torch.int64, device="cuda")
            t_ours = _time(ours)
            k_ours = _kernel_seconds(ours)
            t_ops = _time(lambda x=x, counts=counts: _torch_ops_histogram(x, counts, 40.0))
            t_histc = _time(lambda x=x: torch.histc(x.abs().float(), 2048, 0, 40.0))
            for state in states.values():
                state.histograms()
            nbytes = n * x.element_size()
            rows.append(
                {
                    "dtype": str(dtype).removeprefix("torch."),
                    "MiB": mib,
                    "calibkit_ms": t_ours * 1e3,
                    "calibkit_kernels_ms": k_ours * 1e3,
                    "kernels_GBps": nbytes / k_ours / 1e9,
                    "kernels_vs_copy": nbytes / k_ours / 1e9 / copy_gbps,
                    "call_vs_copy": nbytes / t_ours / 1e9 / copy_gbps,
                    "two_launch_ms": t_two * 1e3,
                    "two_launch_kernels_ms": k_two * 1e3,
                    "torch_ops_ms": t_ops * 1e3,
                    "histc_ms": t_histc * 1e3,
                }
            )
            print(rows[-1], flush=True)
    return rows


def small_tensors() -> dict:
    """1000 tensors of 64 KiB a batch, one launch or two launches each."""
    xs = [torch.randn(16384, device="cuda") for _ in range(1000)]
    out = {}
    for label, fused in (("one_launch", True), ("two_launch", False)):
        state = CudaHistograms(torch.device("cuda"), fused=fused)

        def batch(state=state):
            for i, x in enumerate(xs):
                state.add(str(i), x)
            state.end_batch()

        out[f"{label}_ms"] = _time(batch, reps=10) * 1e3
        state.histograms()
    return out


class HistcCollector:
    """pytorch-quantization's HistogramCalibrator (torch_hist=True) logic, per tensor."""

    def __init__(self, model, num_bins: int = 2048):
        self.model, self.num_bins, self.state, self.handles = model, num_bins, {}, []

    def __enter__(self):
        for name, m in self.model.named_modules():
            if next(m.children(), None) is None:
                self.handles.append(m.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()

    def _hook(self, name):
        def hook(module, args, out):
            if not isinstance(out, torch.Tensor) or not out.is_floating_point():
                return
            x = out.detach().abs().float()
            x_max = x.max()
            hist, edges = self.state.get(name, (None, None))
            if hist is None:
                hist = torch.histc(x, bins=self.num_bins, min=0, max=x_max.item())
                edges = torch.linspace(0, x_max.item(), self.num_bins + 1, device=x.device)
            else:
                if x_max.item() > edges[-1].item():
                    width = (edges[1] - edges[0]).item()
                    n = int(torch.ceil(x_max / width).item())
                    edges = torch.arange(0, x_max.item() + width, width, device=x.device)
                    edges = edges[: n + 1]
                new = torch.histc(x, bins=edges.numel() - 1, min=0, max=edges[-1].item())
                new[: hist.numel()] += hist
                hist = new
            self.state[name] = (hist, edges)

        return hook


def _models():
    import torchvision
    from transformers import BertConfig, BertModel

    resnet = torchvision.models.resnet50(weights=None).eval().cuda()
    images = [torch.randn(32, 3, 224, 224, device="cuda") for _ in range(4)]
    bert = BertModel(BertConfig()).eval().cuda()  # bert-base: 12 layers, 768 wide
    ids = [torch.randint(0, 30522, (32, 128), device="cuda") for _ in range(4)]
    return {
        "resnet50_b32": (resnet, images, lambda m, x: m(x)),
        "bert_base_b32_s128": (bert, ids, lambda m, x: m(input_ids=x)),
    }


def _bytes_per_forward(model, x, call) -> int:
    """Bytes the collector reads in one forward (every tensor it bins, once)."""
    seen = []

    class Counting(CudaHistograms):
        def add(self, name, t):
            seen.append(t.numel() * t.element_size())
            super().add(name, t)

    with _histograms_class(Counting), torch.inference_mode(), collect(model):
        call(model, x)
    return sum(seen)


def overhead(read_gbps: float, reps: int = 10) -> list[dict]:
    rows = []
    for label, (model, data, call) in _models().items():
        for dtype in (torch.float32, torch.float16):
            model = model.to(dtype)
            inputs = [x.to(dtype) if x.is_floating_point() else x for x in data]

            def forward(model=model, inputs=inputs, call=call):
                for x in inputs:
                    call(model, x)

            with torch.inference_mode():
                base = _time(forward, reps=reps)
                timed = {}
                for fused in (True, False):
                    with _launches(fused), collect(model) as c:
                        timed[fused] = _time(forward, reps=reps)
                        if fused:
                            kernels = _kernel_seconds(forward, reps=3)
                hists = c.histograms_
                with HistcCollector(model):
                    histc = _time(forward, reps=max(3, reps // 3), warmup=1)
            binned = _bytes_per_forward(model, inputs[0], call) * len(inputs)
            row = {
                "model": label,
                "dtype": str(dtype).removeprefix("torch."),
                "forward_ms": base / len(inputs) * 1e3,
                "calibkit_ms": timed[True] / len(inputs) * 1e3,
                "calibkit_overhead": timed[True] / base - 1,
                "two_launch_ms": timed[False] / len(inputs) * 1e3,
                "two_launch_overhead": timed[False] / base - 1,
                "kernels_ms": kernels / len(inputs) * 1e3,
                "binned_MiB": binned / len(inputs) / 2**20,
                "read_floor": binned / (read_gbps * 1e9) / base,
                "histc_ms": histc / len(inputs) * 1e3,
                "histc_overhead": histc / base - 1,
                "tensors": len(hists),
            }
            print(row, flush=True)
            rows.append(row)
    return rows


def markdown(result: dict) -> str:
    """The tables of docs/performance.md's GPU section."""
    bw = result["bandwidth"]
    out = [
        f"Device: {result['device']}, torch {result['torch']}. Copy {bw['copy_GBps']:.0f} GB/s "
        f"(read + written), read {bw['read_GBps']:.0f} GB/s.",
        "",
        "| dtype | MiB | calibkit kernel ms | GB/s | x copy | calibkit call ms | x copy "
        "| two launches: kernels ms | call ms | torch ops ms | torch.histc ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["histograms"]:
        out.append(
            f"| {r['dtype']} | {r['MiB']} | {r['calibkit_kernels_ms']:.3f} | "
            f"{r['kernels_GBps']:.0f} | {r['kernels_vs_copy']:.2f} | {r['calibkit_ms']:.3f} | "
            f"{r['call_vs_copy']:.2f} | {r['two_launch_kernels_ms']:.3f} | "
            f"{r['two_launch_ms']:.3f} | {r['torch_ops_ms']:.3f} | {r['histc_ms']:.3f} |"
        )
    st = result["small_tensors"]
    out += [
        "",
        f"1000 tensors of 64 KiB per batch: {st['one_launch_ms']:.2f} ms with one "
        f"launch each, {st['two_launch_ms']:.2f} ms with two launches each.",
        "",
        "| model | dtype | tensors | MiB binned | forward ms | calibkit ms | overhead "
        "| two launches | kernels ms | read floor | histc-based ms | overhead |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["overhead"]:
        out.append(
            f"| {r['model']} | {r['dtype']} | {r['tensors']} | {r['binned_MiB']:.0f} | "
            f"{r['forward_ms']:.2f} | {r['calibkit_ms']:.2f} | "
            f"{100 * r['calibkit_overhead']:.1f} % | {100 * r['two_launch_overhead']:.1f} % | "
            f"{r['kernels_ms']:.2f} | {100 * r['read_floor']:.1f} % | "
            f"{r['histc_ms']:.2f} | {100 * r['histc_overhead']:.0f} % |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the tables here")
    parser.add_argument("--sizes", default="16,64,256,1024", help="histogram sizes in MiB")
    parser.add_argument("--no-models", action="store_true", help="skip the model overheads")
    args = parser.parse_args()
    props = torch.cuda.get_device_properties(0)
    result = {"device": props.name, "torch": torch.__version__}
    result["bandwidth"] = bandwidth()
    print(result, flush=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    result["histograms"] = histograms(sizes, result["bandwidth"]["copy_GBps"])
    result["small_tensors"] = small_tensors()
    print(result["small_tensors"], flush=True)
    result["overhead"] = [] if args.no_models else overhead(result["bandwidth"]["read_GBps"])
    print(markdown(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
