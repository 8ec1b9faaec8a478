"""OnnxActivationSource: run an ONNX model with onnxruntime on the CPU, yield its activations.

TensorRT calibrates every float tensor of the network it builds from the ONNX graph, and names
each after the ONNX tensor. The source therefore yields, per input batch, every float tensor of
the graph *as given* that TensorRT computes per batch: the graph inputs and the node outputs
that depend on the input values, or on the input shapes together with a weight tensor (position
embeddings gathered up to the sequence length). It skips integer and bool tensors, initializers
and tensors computed from weights only (constants), and "shape arithmetic" (tensors computed
from ``Shape``/``Size`` outputs and scalars only, which TensorRT folds).

To read intermediate tensors, each one is added as a graph output, typed by ONNX shape
inference where it knows the type (otherwise onnxruntime types it when it loads the model).
onnxruntime runs with graph optimisations off (``ORT_DISABLE_ALL``), so nothing is fused or
renamed and the values are those of the graph as written; a graph output is never renamed at
any level, so ``optimization="all"`` gives the same names and may run faster.

Memory is one batch of activations: nothing is kept between batches. When one batch would still
be too large, ``max_tensors_per_run`` splits the tensors into groups, each read by its own
onnxruntime session (the model then runs once per group and batch).
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import re
import tempfile
import time
import weakref
from collections.abc import Generator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._optional import require
from ..data.sources import check_batch
from ..errors import CalibkitError, InvalidInputError
from .model import FLOAT_TYPES, OnnxModel

if TYPE_CHECKING:
    import onnx

__all__ = ["OPTIMIZATION_LEVELS", "OnnxActivationSource"]

logger = logging.getLogger(__name__)

#: ``optimization=`` values and the onnxruntime GraphOptimizationLevel each selects.
OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_FLOAT_ORT_TYPES = {"tensor(float)", "tensor(float16)", "tensor(double)", "tensor(bfloat16)"}
_SHAPE_OPS = {"Shape", "Size"}  # outputs depend on the input's shape, not on its values
_PROTOBUF_LIMIT = 2**31 - 2**20  # a serialized ModelProto must stay under 2 GB


class OnnxActivationSource:
    """Run an ONNX model on the CPU and yield ``{tensor name: activation}`` per input batch.

    Parameters
    ----------
    model : str, Path, onnx.ModelProto or OnnxModel
        The model (an :class:`~calibkit.onnx.model.OnnxModel` is used as loaded). External
        data is read relative to the model's folder (or `base_dir`).
    data : iterable of dict, optional
        Input batches ``{input name: array}``; iterating the source runs them. See also
        :meth:`run`.
    tensors : str, optional
        Regular expression (``re.search``) selecting tensor names; default all.
    max_tensors_per_run : int, optional
        Read at most this many tensors per onnxruntime run; the model then runs
        ``ceil(len(tensor_names) / max_tensors_per_run)`` times per batch and each run's
        tensors come as their own dict. Default: all at once.
    optimization : {"disable", "basic", "extended", "all"}
        onnxruntime graph optimisation level (see :data:`OPTIMIZATION_LEVELS`).
    num_threads : int, optional
        onnxruntime intra-op threads (default: onnxruntime's choice, one per core).
    base_dir : str or Path, optional
        Folder of the external data of a ModelProto given in memory.
    spinning : bool
        Let idle onnxruntime threads spin (its default). Turn off when other work (binning)
        runs beside inference: spinning threads take its cores (measured: docs/performance.md).

    Attributes
    ----------
    model : OnnxModel
        The model as loaded.
    inputs : list of InputSpec
        The model inputs (graph inputs that are not initializers); a dimension that is not a
        positive integer in the file (0, -1 or a name) is dynamic.
    tensor_names : list of str
        The tensors yielded, in graph order.
    inference_seconds : float
        Time spent inside onnxruntime so far.

    Examples
    --------
    >>> source = OnnxActivationSource("model.onnx")  # doctest: +SKIP
    >>> for batch in source.run(batches):  # doctest: +SKIP
    ...     collector.update(batch)
    """

    def __init__(
        self,
        model: str | os.PathLike | onnx.ModelProto | OnnxModel,
        data: Iterable[Mapping[str, np.ndarray]] | None = None,
        *,
        tensors: str | None = None,
        max_tensors_per_run: int | None = None,
        optimization: str = "disable",
        num_threads: int | None = None,
        base_dir: str | os.PathLike | None = None,
        spinning: bool = True,
    ) -> None:
        if optimization not in OPTIMIZATION_LEVELS:
            msg = f"optimization must be one of {sorted(OPTIMIZATION_LEVELS)}, got {optimization!r}"
            raise InvalidInputError(msg)
        if max_tensors_per_run is not None and max_tensors_per_run < 1:
            msg = f"max_tensors_per_run must be a positive int, got {max_tensors_per_run!r}"
            raise InvalidInputError(msg)
        self.data = data
        self.spinning = spinning
        self.inference_seconds = 0.0
        self.model = OnnxModel.of(model, base_dir=base_dir)
        self.model_path: Path | None = self.model.path
        proto, base = self.model.proto, self.model.base_dir
        where = self._where = self.model.where
        self.inputs = self.model.inputs
        elem_types = self.model.types
        candidates = [
            name
            for name in _data_tensors(proto.graph, self.model)
            if elem_types.get(name, 0) in FLOAT_TYPES or elem_types.get(name, 0) == 0
        ]
        if tensors is not None:
            try:
                pattern = re.compile(tensors)
            except re.error as err:
                msg = f"bad --tensors regular expression {tensors!r}: {err}"
                raise InvalidInputError(msg) from err
            candidates = [name for name in candidates if pattern.search(name)]
            if not candidates:
                msg = f"{where}: no float activation matches --tensors {tensors!r}"
                raise InvalidInputError(msg)
        input_names = {spec.name for spec in self.inputs}
        self._input_tensors = [n for n in candidates if n in input_names]
        outputs = [n for n in candidates if n not in input_names]
        size = max_tensors_per_run or max(len(outputs), 1)
        groups = [outputs[i : i + size] for i in range(0, len(outputs), size)]
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._runs = [
            self._session(proto, group, elem_types, base, optimization, num_threads, len(groups))
            for group in groups
        ]
        self._runs = [(sess, fetch) for sess, fetch in self._runs if fetch]
        fetched = {name for _, fetch in self._runs for name in fetch}
        self.tensor_names = [n for n in candidates if n in fetched or n in self._input_tensors]
        if not self.tensor_names:
            msg = f"{where}: the model has no float activation to calibrate"
            raise CalibkitError(msg)
        logger.info(
            "%s: %d inputs, %d float activations in %d run(s) per batch",
            where,
            len(self.inputs),
            len(self.tensor_names),
            max(len(self._runs), 1),
        )

    def _session(self, proto, group, elem_types, base, optimization, num_threads, n_groups):
        """Build one onnxruntime session exposing `group`; return (session, fetch names)."""
        onnx = require("onnx", "ONNX calibration")
        ort = require("onnxruntime", "ONNX calibration")
        model = onnx.ModelProto()
        model.CopyFrom(proto)
        _dynamic_dims_unset(model.graph)
        present = {out.name for out in model.graph.output}
        for name in group:
            if name in present:
                continue
            info = onnx.ValueInfoProto(name=name)
            if elem_types.get(name, 0):
                info.type.tensor_type.elem_type = elem_types[name]  # no shape: ORT infers it
            model.graph.output.append(info)
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[optimization]
        )
        options.log_severity_level = 3  # onnxruntime warnings go to stderr unasked otherwise
        if num_threads:
            options.intra_op_num_threads = num_threads
        if not self.spinning:  # idle onnxruntime threads would spin on the cores binning uses
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if n_groups > 1:  # one arena per session would keep every group's peak allocated
            options.enable_cpu_mem_arena = False
        serialized = self._serialize(model, base, onnx, options)
        try:
            session = ort.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's errors share no useful base class
            msg = f"{self._where}: onnxruntime cannot load the model: {err}"
            raise CalibkitError(msg) from err
        types = {out.name: out.type for out in session.get_outputs()}
        fetch = [name for name in group if types.get(name) in _FLOAT_ORT_TYPES]
        return session, fetch

    def _serialize(self, model, base: Path, onnx, options):
        """Return the model for onnxruntime: bytes, or a temporary file when over 2 GB."""
        locations = self.model.external_locations
        for location in locations:
            if not (base / location).is_file():
                msg = f"external data file {base / location} not found (model folder {base})"
                raise FileNotFoundError(msg)
        ort = require("onnxruntime", "ONNX calibration")
        if locations and _version(ort.__version__) >= (1, 22):
            # weights stay in their files: onnxruntime reads them from the model's folder
            key = "session.model_external_initializers_file_folder_path"
            options.add_session_config_entry(key, str(base.resolve()))
        elif locations:  # older onnxruntime cannot be told the folder: read the weights in
            onnx.external_data_helper.load_external_data_for_model(model, str(base))
        if model.ByteSize() < _PROTOBUF_LIMIT:
            return model.SerializeToString()
        # weights loaded in memory but over protobuf's 2 GB: write them beside a temporary copy
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="calibkit-onnx-")
            weakref.finalize(self, self._tmp.cleanup)
        path = Path(tempfile.mkdtemp(dir=self._tmp.name)) / "model.onnx"
        onnx.save_model(model, str(path), save_as_external_data=True, location=path.stem + ".data")
        return str(path)

    def run(
        self, batches: Iterable[Mapping[str, np.ndarray]]
    ) -> Generator[dict[str, np.ndarray], None, None]:
        """Yield the activations of each input batch (one dict per onnxruntime run).

        Raises
        ------
        ValueError
            If a batch does not match the model inputs (names, dtype, rank, static dims).
        """
        # numpy has no bfloat16: onnxruntime's session.run refuses such outputs, so sessions
        # that fetch one hand over OrtValues, read as ml_dtypes.bfloat16 (what onnx uses)
        bfloat16 = [
            any(out.type == "tensor(bfloat16)" for out in session.get_outputs())
            for session, _ in self._runs
        ]
        for index, batch in enumerate(batches):
            check_batch(batch, self.inputs, f"batch {index}")
            feeds = {spec.name: batch[spec.name] for spec in self.inputs}
            first = {name: feeds[name] for name in self._input_tensors}
            if not self._runs:
                yield first
                continue
            for (session, fetch), by_value in zip(self._runs, bfloat16, strict=True):
                start = time.perf_counter()
                try:
                    if by_value:
                        values = _run_with_bfloat16(session, fetch, feeds)
                    else:
                        values = session.run(fetch, feeds)
                except Exception as err:  # e.g. a dimension the graph cannot take
                    msg = f"{self._where}: onnxruntime failed on batch {index}: {err}"
                    raise CalibkitError(msg) from err
                self.inference_seconds += time.perf_counter() - start
                out = dict(first)
                out.update(zip(fetch, values, strict=True))
                first = {}
                yield out
                del out, values  # drop this run's activations before the next run

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        """Run the data given at construction."""
        if self.data is None:
            msg = "no data: pass data= to OnnxActivationSource or call .run(batches)"
            raise InvalidInputError(msg)
        return self.run(self.data)


def _dynamic_dims_unset(graph) -> None:
    """Write the graph's dynamic ``dim_value`` 0 or -1 (Paddle) as unset dimensions, in place.

    calibkit takes them as dynamic (:func:`calibkit.onnx.model.dims_of`); onnxruntime does so
    for -1 but holds a 0 to size 0 and rejects every batch.
    """
    for value in (*graph.input, *graph.output, *graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value <= 0:
                dim.ClearField("dim_value")


def _run_with_bfloat16(session, fetch: list[str], feeds: Mapping[str, np.ndarray]) -> list:
    """``session.run`` for outputs that include bfloat16: those come as ml_dtypes.bfloat16."""
    ort = require("onnxruntime", "ONNX calibration")
    ml_dtypes = require("ml_dtypes", "bfloat16 activations")
    values = session.run_with_ort_values(
        fetch,
        {k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()},
    )
    out = []
    for value in values:
        if value.data_type() != "tensor(bfloat16)":
            out.append(value.numpy())
            continue
        shape = tuple(value.shape())
        size = int(np.prod(shape))
        bits = np.zeros(size, np.uint16)
        if size:  # copy out: the OrtValue's memory goes with it
            buffer = memoryview((ctypes.c_uint16 * size).from_address(value.data_ptr()))
            bits[:] = np.frombuffer(buffer, np.uint16)
        out.append(bits.reshape(shape).view(ml_dtypes.bfloat16))
    return out


def _version(text: str) -> tuple[int, ...]:
    """Return ``(1, 22)`` for ``"1.22.0"`` (numeric leading parts only)."""
    parts = []
    for part in text.split(".")[:2]:
        digits = re.match(r"\d+", part)
        parts.append(int(digits.group()) if digits else 0)
    return tuple(parts)


def _subgraph_names(node) -> set[str]:
    """Return every tensor name read inside the subgraphs (If/Loop/Scan bodies) of a node."""
    names: set[str] = set()
    for attr in node.attribute:
        for graph in [attr.g] if attr.HasField("g") else list(attr.graphs):
            for inner in graph.node:
                names.update(inner.input)
                names |= _subgraph_names(inner)
    return names


def _weight_names(model: OnnxModel) -> set[str]:
    """Return the float constants (initializers, Constant outputs) with more than one element."""
    return {
        name
        for name in model.constant_names
        if model.constant_type(name) in FLOAT_TYPES and math.prod(model.constant_dims(name)) > 1
    }


def _spread(graph, seeds: set[str], *, through_shape_ops: bool) -> set[str]:
    """Return `seeds` plus every node output that (transitively) reads one of them.

    Shape/Size outputs are left out unless `through_shape_ops`. Repeated to a fixed point, so a
    graph that is not topologically sorted works too.
    """
    reached = set(seeds)
    changed = True
    while changed:
        changed = False
        for node in graph.node:
            if (
                not through_shape_ops
                and node.op_type in _SHAPE_OPS
                and node.domain in ("", "ai.onnx")
            ):
                continue
            new = [out for out in node.output if out and out not in reached]
            if new and (set(node.input) | _subgraph_names(node)) & reached:
                reached.update(new)
                changed = True
    return reached


def _data_tensors(graph, model: OnnxModel) -> list[str]:
    """Return the graph inputs and node outputs TensorRT computes per batch, in graph order.

    That is every tensor that depends on the input values, plus every tensor that depends on
    the input shapes *and* reads a weight tensor (e.g. position embeddings gathered up to the
    sequence length). Tensors computed from shapes and scalars only are shape arithmetic;
    tensors computed from weights only are constants: neither is calibrated.
    """
    initializers = {init.name for init in graph.initializer}
    inputs = {value.name for value in graph.input if value.name not in initializers}
    values = _spread(graph, inputs, through_shape_ops=False)
    shaped = _spread(graph, inputs, through_shape_ops=True)
    weighted = _spread(graph, _weight_names(model), through_shape_ops=False)
    keep = values | (shaped & weighted)
    ordered = [value.name for value in graph.input if value.name in keep]
    ordered += [out for node in graph.node for out in node.output if out in keep]
    return list(dict.fromkeys(ordered))
