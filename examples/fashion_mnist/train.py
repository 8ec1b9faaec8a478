"""Train the bundled Fashion-MNIST CNN and write model.onnx, calib.npz, test.npz, model.json.

Needs torch (CPU), onnx and onnxscript, and Debian's ``dataset-fashion-mnist`` package; calibkit
itself never imports torch. Run from the repository root::

    apt-get install -y dataset-fashion-mnist
    pip install torch==2.13.0 onnx onnxscript onnxruntime
    python examples/fashion_mnist/train.py            # ~2-3 min on 2 CPU cores

The network is small (115 386 parameters, 480 KB of ONNX) but has the operators a
calibration study needs: Conv, Relu, a residual Add, MaxPool, a two-branch Concat, Flatten and
two Gemm layers. Images are float32 in [0, 1], shape [N, 1, 28, 28], input name ``image``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATASET = Path("/usr/share/datasets/fashion-mnist")
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
NUM_CALIB = 500  # training images (a seeded sample) for calib.npz
NUM_TEST = 2000  # the first NUM_TEST images of t10k, for test.npz


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte; the low byte is the number of dimensions
        msg = f"{path}: expected an IDX uint8 file, got magic {magic:#010x}"
        raise ValueError(msg)
    ndim = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] or [N, 1, 28, 28] -> float32 [N, 1, 28, 28] in [0, 1] (the model input)."""
    return (images.reshape(-1, 1, 28, 28).astype(np.float32) / np.float32(255)).astype(np.float32)


def build_model():
    """Return the CNN (a torch.nn.Module); torch is imported here, not at module level."""
    import torch
    from torch import nn

    class FashionCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(1, 16, 3, padding=1)
            self.res = nn.Conv2d(16, 16, 3, padding=1)
            self.branch1 = nn.Conv2d(16, 16, 1)
            self.branch3 = nn.Conv2d(16, 16, 3, padding=1)
            self.head = nn.Conv2d(32, 32, 3, padding=1)
            self.fc1 = nn.Linear(32 * 7 * 7, 64)
            self.fc2 = nn.Linear(64, 10)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            x = torch.relu(x + self.res(x))  # residual Add
            x = nn.functional.max_pool2d(x, 2)  # 14x14
            x = torch.cat([torch.relu(self.branch1(x)), torch.relu(self.branch3(x))], dim=1)
            x = nn.functional.max_pool2d(x, 2)  # 7x7
            x = torch.relu(self.head(x))
            x = torch.relu(self.fc1(torch.flatten(x, 1)))
            return self.fc2(x)

    return FashionCNN()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()

    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(args.seed)

    train_x = read_idx(DATASET / "train-images-idx3-ubyte.gz")
    train_y = read_idx(DATASET / "train-labels-idx1-ubyte.gz")
    test_x = read_idx(DATASET / "t10k-images-idx3-ubyte.gz")
    test_y = read_idx(DATASET / "t10k-labels-idx1-ubyte.gz")
    xs, ys = torch.from_numpy(to_float(train_x)), torch.from_numpy(train_y.astype(np.int64))

    model = build_model()
    steps = args.epochs * -(-len(xs) // args.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(xs)))
        total = 0.0
        for i in range(0, len(xs), args.batch_size):
            idx = order[i : i + args.batch_size]
            loss = torch.nn.functional.cross_entropy(model(xs[idx]), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        print(f"epoch {epoch + 1}: loss {total / len(xs):.4f}  {time.perf_counter() - start:.0f} s")
    train_seconds = time.perf_counter() - start

    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(to_float(test_x))).numpy()
    pred = logits.argmax(axis=1)
    full_acc = float((pred == test_y).mean())
    subset_correct = int((pred[:NUM_TEST] == test_y[:NUM_TEST]).sum())
    print(f"FP32 (torch) test accuracy: {full_acc:.4f} on 10000", end="; ")
    print(f"{subset_correct}/{NUM_TEST} on test.npz")

    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "model.onnx"
    example = torch.from_numpy(to_float(test_x[:2]))
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        external_data=False,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    program.save(str(onnx_path))

    calib_idx = np.sort(rng.choice(len(train_x), NUM_CALIB, replace=False))
    # calib.npz is float32 so `calibkit calibrate model.onnx --data calib.npz` takes it as is;
    # test.npz keeps uint8 (4x smaller): convert with to_float() / `x.astype(np.float32) / 255`.
    np.savez_compressed(args.out / "calib.npz", **{INPUT_NAME: to_float(train_x[calib_idx])})
    np.savez_compressed(
        args.out / "test.npz",
        **{INPUT_NAME: test_x[:NUM_TEST].reshape(-1, 1, 28, 28), "label": test_y[:NUM_TEST]},
    )
    meta = {
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "torch_version": torch.__version__,
        "train_seconds": round(train_seconds, 1),
        "fp32_test_accuracy_10000": full_acc,
        "test_npz_samples": NUM_TEST,
        "test_npz_correct_fp32": subset_correct,
        "calib_npz_samples": NUM_CALIB,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
    }
    tmp = args.out / "model.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, args.out / "model.json")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
