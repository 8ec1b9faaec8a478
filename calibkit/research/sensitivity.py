"""Per-tensor sensitivity: quantise one tensor at a time, keep the rest float, rank by output error.

This is the list people use to choose layers to keep in higher precision. For every activation
that the Q/DQ placement rules (:func:`calibkit.onnx.qdq.to_qdq`) would quantise, a copy of the model
gets a Q/DQ pair on that tensor only (scale = amax / 127 from the chosen algorithm), onnxruntime
runs it with graph optimisations off (so the Q/DQ nodes execute as written: fake quantisation),
and its output is compared with the float model's on the same inputs. One extra row quantises
every tensor at once, for scale.

Output error measures (:func:`output_error`), over all samples of one model output:

- ``rel_error``: ``||y_q - y|| / ||y||`` (the ranking key);
- ``cosine``: mean per-sample cosine similarity of ``y_q`` and ``y``;
- ``agreement``: fraction of samples whose argmax over the last axis is unchanged (top-1 for
  classifiers; NaN for a 1-D output).

Examples
--------
>>> import calibkit as ck
>>> import numpy as np
>>> stats = "tests/data/golden_stats/fashion.stats.npz"  # examples/fashion_mnist's histograms
>>> amax = ck.scales_from_stats(stats, "entropy2").amax  # as the cache
>>> x = np.load("examples/fashion_mnist/calib.npz")["image"][:64]  # use held-aside data
>>> model = "examples/fashion_mnist/model.onnx"
>>> result = ck.sensitivity(model, amax, [{"image": x}], algorithm="entropy2")
>>> print(result.format_table(limit=3))
rank           tensor   amax  rel. error    cosine  top-1 agree
1              relu_1  2.238 ...
2          max_pool2d  2.238 ...
3              relu_5  35.24 ...
-     (all quantised)    nan ...
... 5 more tensors (see --json)
output 'logits', 64 samples, entropy2; one tensor quantised at a time (activation Q/DQ), ...
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .._optional import require
from ..atomic import write_atomic
from ..errors import CalibkitError, InvalidInputError
from ..onnx.model import OnnxModel
from ..onnx.qdq import DEFAULT_OP_TYPES, to_qdq
from ..progress import track
from ..scale import scale_from_amax
from ..text import format_table

__all__ = ["SensitivityResult", "TensorSensitivity", "output_error", "run_model", "sensitivity"]

logger = logging.getLogger(__name__)

ALL_TENSORS = "(all quantised)"


@dataclass(frozen=True)
class TensorSensitivity:
    """The output error caused by quantising one tensor (or all, for ``ALL_TENSORS``)."""

    name: str
    amax: float
    rel_error: float
    cosine: float
    agreement: float


@dataclass
class SensitivityResult:
    """The result of :func:`sensitivity`: ``rows`` most harmful first, and the all-tensor row."""

    output: str
    algorithm: str
    num_samples: int
    rows: list[TensorSensitivity]
    all_quantized: TensorSensitivity

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN as null)."""

        def clean(r: TensorSensitivity) -> dict:
            return {
                k: None if isinstance(v, float) and math.isnan(v) else v
                for k, v in asdict(r).items()
            }

        return {
            "output": self.output,
            "algorithm": self.algorithm,
            "num_samples": self.num_samples,
            "all_quantized": clean(self.all_quantized),
            "tensors": [clean(r) for r in self.rows],
        }

    def write_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` to `path` (atomically)."""
        write_atomic(path, (json.dumps(self.to_dict(), indent=1) + "\n").encode())

    def format_table(self, *, limit: int | None = 30) -> str:
        """Return a terminal table, most harmful tensor first, with the all-tensor row last."""
        rows = [("rank", "tensor", "amax", "rel. error", "cosine", "top-1 agree")]
        shown = self.rows[:limit]
        for i, r in enumerate([*shown, self.all_quantized]):
            rows.append(
                (
                    str(i + 1) if r is not self.all_quantized else "-",
                    r.name,
                    f"{r.amax:.4g}",
                    f"{r.rel_error:.4g}",
                    f"{r.cosine:.6f}",
                    "-" if math.isnan(r.agreement) else f"{r.agreement:.3f}",
                )
            )
        text = format_table(rows)
        if limit is not None and len(self.rows) > limit:
            text += f"\n... {len(self.rows) - limit} more tensors (see --json)"
        scales = f", {self.algorithm}" if self.algorithm else ""  # empty: amax given directly
        return text + (
            f"\noutput {self.output!r}, {self.num_samples} samples{scales}; one tensor "
            "quantised at a time (activation Q/DQ), every other tensor float"
        )


def output_error(reference: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """Return ``rel_error``, ``cosine`` and ``agreement`` of `output` against `reference`.

    Both have the samples on the first axis. See the module docstring for the definitions.
    """
    y = np.asarray(reference, np.float64).reshape(len(reference), -1)
    q = np.asarray(output, np.float64).reshape(len(output), -1)
    if y.shape != q.shape:
        msg = f"output shapes differ: {np.shape(reference)} vs {np.shape(output)}"
        raise InvalidInputError(msg)
    norm = np.linalg.norm(y)
    rel = float(np.linalg.norm(q - y) / norm) if norm > 0 else float(np.linalg.norm(q - y))
    dots = np.einsum("ij,ij->i", y, q)
    norms = np.linalg.norm(y, axis=1) * np.linalg.norm(q, axis=1)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1), 1.0)
    agree = math.nan
    ref = np.asarray(reference)
    if ref.ndim >= 2:
        agree = float(np.mean(ref.argmax(-1) == np.asarray(output).argmax(-1)))
    return {"rel_error": rel, "cosine": float(cos.mean()), "agreement": agree}


def _session(model, num_threads: int | None):
    ort = require("onnxruntime", "Sensitivity analysis")
    opts = ort.SessionOptions()
    # Off: onnxruntime then executes Q/DQ as written (fake quantisation), never fused kernels.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if num_threads:
        opts.intra_op_num_threads = num_threads
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def run_model(
    model,
    batches: Sequence[Mapping[str, np.ndarray]],
    output: str | None = None,
    *,
    num_threads=None,
) -> np.ndarray:
    """Run `model` (path or ModelProto) on every batch with onnxruntime (optimisations off).

    Returns the chosen output (default: the first) of all batches, concatenated on axis 0.
    """
    session = _session(model, num_threads)
    names = [o.name for o in session.get_outputs()]
    name = output or names[0]
    if name not in names:
        msg = f"the model has no output {name!r}; outputs are {names}"
        raise InvalidInputError(msg)
    inputs = [i.name for i in session.get_inputs()]
    try:
        parts = [session.run([name], {k: b[k] for k in inputs})[0] for b in batches]
    except KeyError as err:
        msg = f"a batch lacks model input {err}; inputs are {inputs}"
        raise InvalidInputError(msg) from err
    return np.concatenate(parts)


def sensitivity(
    model: str | os.PathLike | OnnxModel,
    amax: Mapping[str, float],
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    output: str | None = None,
    algorithm: str = "",
    op_types: Iterable[str] = DEFAULT_OP_TYPES,
    quantize_weights: bool = False,
    num_threads: int | None = None,
    progress: bool = False,
) -> SensitivityResult:
    """Quantise each activation alone and rank the tensors by the output error they cause.

    Parameters
    ----------
    model : path
        The float ONNX model.
    amax : mapping
        Tensor name -> amax; ``scales_from_stats(stats, algorithm).amax`` gives the values the
        cache of the same selection deploys (TensorRT's sharing rules applied), as
        ``calibkit sensitivity`` uses.
    batches : iterable of dicts
        Evaluation inputs ``{input name: array}`` (kept in memory; use held-aside data).
    output : str, optional
        Model output to compare (default: the first).
    algorithm : str
        Recorded in the result (where the amax values came from).
    op_types, quantize_weights
        As for :func:`calibkit.onnx.qdq.to_qdq`; by default only the activation is quantised, so
        the ranking isolates activation error (``quantize_weights=True`` also quantises the
        weights of the ops reading that tensor).
    progress : bool
        Show a progress bar (tensors) on stderr when it is a terminal.

    Raises
    ------
    CalibkitError
        If no amax value gets a Q/DQ pair under the placement rules.
    """
    batches = list(batches)
    if not batches:
        msg = "no evaluation batches"
        raise InvalidInputError(msg)
    loaded = OnnxModel.of(model)  # read once: every Q/DQ variant reuses its graph and types
    proto = loaded.with_weights()
    scales = {
        name: scale_from_amax(a)
        for name, a in amax.items()
        if math.isfinite(a) and a > 0  # 0 / inf scales stay float, as in to_qdq
    }
    op_types = tuple(op_types)
    known = {o for n in proto.graph.node for o in n.output} | {i.name for i in proto.graph.input}
    if not any(name in known for name in scales):  # before to_qdq, which names no file here
        msg = (
            f"{loaded.where}: none of the {len(amax)} amax values gets a Q/DQ pair (names differ?)"
        )
        raise CalibkitError(msg)
    full, report = to_qdq(loaded, scales, op_types=op_types, quantize_weights=quantize_weights)
    if not report.activations:
        msg = (
            f"{loaded.where}: none of the {len(amax)} amax values gets a Q/DQ pair (names differ?)"
        )
        raise CalibkitError(msg)
    reference = run_model(proto, batches, output, num_threads=num_threads)
    name = output or proto.graph.output[0].name

    def row(tensor: str, model_q) -> TensorSensitivity:
        err = output_error(reference, run_model(model_q, batches, name, num_threads=num_threads))
        return TensorSensitivity(tensor, float(amax.get(tensor, math.nan)), **err)

    rows = []
    for tensor in track(
        list(report.activations), desc="sensitivity", unit="tensor", enabled=progress
    ):
        one, _ = to_qdq(
            loaded, {tensor: scales[tensor]}, op_types=op_types, quantize_weights=quantize_weights
        )
        rows.append(row(tensor, one))
        logger.info("%s: relative output error %.4g", tensor, rows[-1].rel_error)
    rows.sort(key=lambda r: -r.rel_error)
    return SensitivityResult(name, algorithm, len(reference), rows, row(ALL_TENSORS, full))
