"""OnnxModel: an ONNX model read once, and everything calibkit reads from it.

Every command that takes ``MODEL.onnx`` loads it once into an :class:`OnnxModel` and hands that
object to each stage: the activation source (which tensors, input specs), TensorRT's sharing
rules and cache names, Q/DQ export and import, and the cache check. It holds

- the ``ModelProto`` as stored (external weights stay in their files until a value is asked for);
- the dataflow :class:`~calibkit.onnx.graph.Graph` (plain data, saved with the statistics);
- element types and shapes from **one** ONNX shape inference (``strict_mode=False``,
  ``data_prop=True``), run the first time a type or shape is asked for;
- one reader for constant values: initializers and every form of ``Constant`` node
  (``value``, ``sparse_value``, ``value_float(s)``, ``value_int(s)``, ``value_string(s)``);
- the graph inputs as :class:`~calibkit.data.sources.InputSpec`.

A declared dimension that is not a positive integer (no value, or ``dim_value: -1`` or ``0`` as
Paddle and other exporters write) is dynamic; its symbolic name, if any, is kept. onnxruntime
also treats -1 as dynamic (a 0 it holds to size 0, so the activation source gives it onnxruntime
as unset). Initializer dimensions are real extents and are kept as they are.
"""

from __future__ import annotations

import logging
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._optional import require
from ..errors import CalibkitError, InvalidInputError, ModelFormatError
from ..inputs import check_regular_file
from .graph import Graph, Node

if TYPE_CHECKING:
    import onnx

    from ..data.sources import InputSpec

__all__ = ["FLOAT_TYPES", "OnnxModel", "dims_of"]

logger = logging.getLogger(__name__)

#: ONNX element types TensorRT calibrates: FLOAT, FLOAT16, DOUBLE, BFLOAT16.
FLOAT_TYPES = frozenset({1, 10, 11, 16})
_INT64, _FLOAT, _STRING = 7, 1, 8  # onnx.TensorProto element types of the scalar attributes
# Constant node attributes (ONNX operator spec), each holding the node's one output value.
_CONSTANT_ATTRIBUTES = (
    "value",
    "sparse_value",
    "value_float",
    "value_floats",
    "value_int",
    "value_ints",
    "value_string",
    "value_strings",
)


def dims_of(tensor_type: Any) -> tuple[int | str | None, ...] | None:
    """Return the declared shape of an ONNX ``TypeProto.Tensor``, or None if it has none.

    A dimension is an ``int`` when it is a positive integer; otherwise it is dynamic: its
    symbolic name (``dim_param``) or None. ``dim_value`` -1 (Paddle's dynamic batch) and 0 are
    dynamic.
    """
    if not tensor_type.HasField("shape"):
        return None
    return tuple(
        int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
        for d in tensor_type.shape.dim
    )


class OnnxModel:
    """An ONNX model loaded once, with its graph, types, shapes, constants and inputs.

    Parameters
    ----------
    proto : onnx.ModelProto
        The model; it is not copied or changed (use :meth:`with_weights` for a copy to edit).
    path : path, optional
        The file it was read from (named in messages; its folder holds external data).
    base_dir : path, optional
        Folder of the external data (default: the folder of `path`, else the working folder).

    Examples
    --------
    >>> model = OnnxModel.load("examples/fashion_mnist/model.onnx")
    >>> model.inputs
    [InputSpec(name='image', dtype=dtype('float32'), shape=('batch', 1, 28, 28))]
    >>> model.graph.tensors[:3], model.types["conv2d"]  # 1: onnx.TensorProto.FLOAT
    (['image', 'conv2d', 'relu'], 1)
    """

    def __init__(
        self,
        proto: onnx.ModelProto,
        *,
        path: str | os.PathLike | None = None,
        base_dir: str | os.PathLike | None = None,
    ) -> None:
        self.proto = proto
        self.path = None if path is None else Path(path)
        if base_dir is not None:
            self.base_dir = Path(base_dir)
        else:
            self.base_dir = self.path.parent if self.path is not None else Path.cwd()

    @property
    def where(self) -> str:
        """The model's path, or ``"the model"`` for one given in memory (for messages)."""
        return str(self.path) if self.path is not None else "the model"

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def load(
        cls, path: str | os.PathLike, *, base_dir: str | os.PathLike | None = None
    ) -> OnnxModel:
        """Read the model at `path`; its external weights are read only when asked for.

        Raises
        ------
        FileNotFoundError, IsADirectoryError, PermissionError
            The path cannot be read as a file (the message names it).
        ModelFormatError
            The file is empty or not an ONNX model (truncated, another format).
        """
        onnx = require("onnx", "Reading an ONNX model")
        path = Path(path)
        if not path.exists():
            msg = f"ONNX model {path} not found"
            raise FileNotFoundError(msg)
        if path.is_dir():
            msg = f"ONNX model {path} is a directory, expected an .onnx file"
            raise IsADirectoryError(msg)
        check_regular_file(path, "ONNX model")  # a FIFO would block the read, /dev/zero not end
        data = path.read_bytes()
        if not data:
            msg = f"{path}: cannot be read as an ONNX model: the file is empty"
            raise ModelFormatError(msg)
        try:
            proto = onnx.load_from_string(data)
        except Exception as err:  # protobuf's DecodeError (and others): not a ModelProto
            msg = f"{path}: cannot be read as an ONNX model (truncated or another format): {err}"
            raise ModelFormatError(msg) from err
        if not proto.ir_version or not proto.HasField("graph"):
            msg = f"{path}: cannot be read as an ONNX model: it has no IR version or no graph"
            raise ModelFormatError(msg)
        return cls(proto, path=path, base_dir=base_dir)

    @classmethod
    def of(
        cls,
        model: OnnxModel | onnx.ModelProto | str | os.PathLike,
        *,
        base_dir: str | os.PathLike | None = None,
    ) -> OnnxModel:
        """Return `model` itself if it is an OnnxModel, else wrap a ModelProto or load a path."""
        if isinstance(model, OnnxModel):
            if base_dir is not None and Path(base_dir) != model.base_dir:
                msg = f"{model.where}: base_dir is set when the model is loaded, not after"
                raise InvalidInputError(msg)
            return model
        if isinstance(model, (str, os.PathLike)):
            return cls.load(model, base_dir=base_dir)
        onnx = require("onnx", "Reading an ONNX model")
        if not isinstance(model, onnx.ModelProto):
            msg = f"expected an ONNX model (path, ModelProto or OnnxModel), got {type(model)}"
            raise TypeError(msg)
        return cls(model, base_dir=base_dir)

    def derived(self, proto: onnx.ModelProto) -> OnnxModel:
        """Return a model made from this one (e.g. opset-upgraded) that keeps its tensor types.

        Tensors keep their names through such a change, so the shape inference already run for
        this model types them: the derived model runs none of its own.
        """
        other = OnnxModel(proto, path=self.path, base_dir=self.base_dir)
        other.__dict__["_inferred"] = self._inferred
        return other

    def with_weights(self) -> onnx.ModelProto:
        """Return a copy of the model with every external weight read into it (to edit, save)."""
        onnx = require("onnx", "Reading an ONNX model")
        copy = onnx.ModelProto()
        copy.CopyFrom(self.proto)
        if self.external_locations:
            try:
                onnx.external_data_helper.load_external_data_for_model(copy, str(self.base_dir))
            except OSError:
                raise
            except Exception as err:  # a path leaving the folder (CVE-2024-27318) or bad record
                msg = f"{self.where}: cannot load its external data: {err}"
                raise ModelFormatError(msg) from err
        return copy

    @cached_property
    def external_locations(self) -> tuple[str, ...]:
        """The external-data file names the model's tensors refer to (empty if none)."""
        helper = require("onnx", "Reading an ONNX model").external_data_helper
        return tuple(
            sorted(
                {
                    helper.ExternalDataInfo(tensor).location
                    for tensor in _stored_tensors(self.proto.graph)
                    if helper.uses_external_data(tensor)
                }
            )
        )

    # -- structure -------------------------------------------------------------------------
    @cached_property
    def graph(self) -> Graph:
        """The dataflow of the main graph (subgraphs of If/Loop/Scan are not entered)."""
        onnx = require("onnx", "Reading an ONNX graph")
        g = self.proto.graph
        initializers = frozenset(t.name for t in g.initializer)
        nodes = tuple(
            Node(
                op_type=n.op_type,
                inputs=tuple(n.input),
                outputs=tuple(n.output),
                name=n.name,
                attrs={a.name: onnx.helper.get_attribute_value(a) for a in n.attribute},
            )
            for n in g.node
        )
        # ONNX (IR < 4) may list initializers as graph inputs too; they are constants here.
        inputs = tuple(v.name for v in g.input if v.name not in initializers)
        try:
            return Graph(nodes, inputs, tuple(v.name for v in g.output), initializers)
        except ValueError as err:  # not topologically sorted, or a tensor written twice
            msg = f"{self.where}: {err}"
            raise ModelFormatError(msg) from err

    @cached_property
    def opset(self) -> int | None:
        """The default-domain opset version, or None if the model imports none."""
        return next(
            (int(o.version) for o in self.proto.opset_import if o.domain in ("", "ai.onnx")), None
        )

    @cached_property
    def inputs(self) -> list[InputSpec]:
        """The data inputs (graph inputs that are not initializers) as declared."""
        onnx = require("onnx", "Reading an ONNX model")
        from ..data.sources import InputSpec

        initializers = {t.name for t in self.proto.graph.initializer}
        specs = []
        for value in self.proto.graph.input:
            if value.name in initializers:  # an input with a default value: a weight, not data
                continue
            tensor_type = value.type.tensor_type
            if not value.type.HasField("tensor_type") or not tensor_type.elem_type:
                msg = (
                    f"{self.where}: model input {value.name!r} is not a typed tensor; calibkit"
                    " feeds tensors only"
                )
                raise CalibkitError(msg)
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
            specs.append(InputSpec(value.name, dtype, dims_of(tensor_type) or ()))
        return specs

    # -- types and shapes: one shape inference ---------------------------------------------
    @cached_property
    def _inferred(self) -> tuple[dict[str, int], dict[str, tuple]]:
        onnx = require("onnx", "Reading an ONNX model")
        try:
            inferred = onnx.shape_inference.infer_shapes(
                self.proto, strict_mode=False, data_prop=True
            )
        except Exception as err:  # noqa: BLE001 -- inference only sharpens; declared info remains
            logger.info("%s: ONNX shape inference failed (%s)", self.where, err)
            inferred = self.proto
        g = inferred.graph
        types: dict[str, int] = {}
        shapes: dict[str, tuple] = {}
        for info in (*g.input, *g.value_info, *g.output):
            if not info.type.HasField("tensor_type"):
                continue
            types[info.name] = info.type.tensor_type.elem_type
            dims = dims_of(info.type.tensor_type)
            if dims is not None:
                shapes[info.name] = dims
        return types, shapes

    @cached_property
    def types(self) -> dict[str, int]:
        """ONNX element type of each tensor typed by shape inference or stored as an initializer."""
        types = dict(self._inferred[0])
        types.update((t.name, t.data_type) for t in self.proto.graph.initializer)
        return types

    @cached_property
    def shapes(self) -> dict[str, tuple]:
        """Shape of every tensor whose rank is known (dynamic dimensions: a name or None)."""
        shapes = dict(self._inferred[1])
        shapes.update((t.name, tuple(int(d) for d in t.dims)) for t in self.proto.graph.initializer)
        return shapes

    @cached_property
    def float_tensors(self) -> frozenset[str]:
        """Tensors of a floating-point type (FLOAT, FLOAT16, DOUBLE, BFLOAT16)."""
        return frozenset(name for name, t in self.types.items() if t in FLOAT_TYPES)

    # -- constants -------------------------------------------------------------------------
    @cached_property
    def _constant_sources(self) -> dict[str, Any]:
        sources: dict[str, Any] = {t.name: t for t in self.proto.graph.initializer}
        for node in self.proto.graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
                attr = next((a for a in node.attribute if a.name in _CONSTANT_ATTRIBUTES), None)
                if attr is not None:
                    sources[node.output[0]] = attr
        return sources

    @property
    def constant_names(self) -> frozenset[str]:
        """Initializers and Constant node outputs."""
        return frozenset(self._constant_sources)

    def is_constant(self, name: str) -> bool:
        """Whether `name` is an initializer or the output of a Constant node."""
        return name in self._constant_sources

    def constant(self, name: str) -> np.ndarray:
        """Return the value of a constant (external data is read from its file now).

        Raises
        ------
        KeyError
            If `name` is not an initializer or a Constant node output.
        ModelFormatError
            If the stored value cannot be read (bad external-data record, unknown type).
        """
        source = self._constant_sources[name]
        try:
            return _constant_value(source, str(self.base_dir))
        except OSError:
            raise
        except Exception as err:  # onnx raises ValueError/TypeError for unreadable tensors
            msg = f"{self.where}: constant {name!r} cannot be read: {err}"
            raise ModelFormatError(msg) from err

    def constant_type(self, name: str) -> int:
        """ONNX element type of a constant, without reading its value."""
        source = self._constant_sources[name]
        return _constant_meta(source)[0]

    def constant_dims(self, name: str) -> tuple[int, ...]:
        """Shape of a constant, without reading its value."""
        return _constant_meta(self._constant_sources[name])[1]


def _constant_meta(source: Any) -> tuple[int, tuple[int, ...]]:
    """(element type, shape) of an initializer or Constant attribute, from its metadata."""
    if hasattr(source, "data_type"):  # an initializer (TensorProto)
        return int(source.data_type), tuple(int(d) for d in source.dims)
    name = source.name
    if name == "value":
        return int(source.t.data_type), tuple(int(d) for d in source.t.dims)
    if name == "sparse_value":
        sparse = source.sparse_tensor
        return int(sparse.values.data_type), tuple(int(d) for d in sparse.dims)
    scalars = {"value_float": _FLOAT, "value_int": _INT64, "value_string": _STRING}
    if name in scalars:
        return scalars[name], ()
    lists = {"value_floats": (_FLOAT, source.floats), "value_ints": (_INT64, source.ints)}
    kind, values = lists.get(name, (_STRING, source.strings))
    return kind, (len(values),)


def _constant_value(source: Any, base_dir: str) -> np.ndarray:
    from onnx import numpy_helper

    if hasattr(source, "data_type"):  # an initializer
        return numpy_helper.to_array(source, base_dir)
    name = source.name
    if name == "value":
        return numpy_helper.to_array(source.t, base_dir)
    if name == "sparse_value":
        return _dense(source.sparse_tensor, base_dir)
    if name == "value_float":
        return np.asarray(source.f, np.float32)
    if name == "value_floats":
        return np.asarray(list(source.floats), np.float32)
    if name == "value_int":
        return np.asarray(source.i, np.int64)
    if name == "value_ints":
        return np.asarray(list(source.ints), np.int64)
    if name == "value_string":
        return np.asarray(source.s.decode("utf-8"), object)
    return np.asarray([s.decode("utf-8") for s in source.strings], object)  # value_strings


def _dense(sparse: Any, base_dir: str) -> np.ndarray:
    """Value of a SparseTensorProto: zeros with `values` at `indices` (flat or coordinates)."""
    from onnx import numpy_helper

    values = numpy_helper.to_array(sparse.values, base_dir)
    indices = numpy_helper.to_array(sparse.indices, base_dir).astype(np.int64)
    shape = tuple(int(d) for d in sparse.dims)
    dense = np.zeros(shape, values.dtype)
    if indices.ndim == 1:  # linearised positions
        dense.reshape(-1)[indices] = values
    else:  # [NNZ, rank] coordinates
        dense[tuple(indices.T)] = values
    return dense


def _stored_tensors(graph: Any):
    """Yield every TensorProto stored in a graph: initializers, node attributes, subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _stored_tensors(sub)
