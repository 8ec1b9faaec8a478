"""Calibration data: files users already have, turned into checked model-input batches.

Sources follow the conventions of ModelOpt and Polygraphy:

- ``calib.npy``: one array for a single-input model, first axis = samples;
- ``calib.npz``: one array per input, keyed by input name, first axis = samples;
- a folder of per-sample ``.npy`` / ``.npz`` files (searched recursively, sorted by path);
- a folder of images, with a stated preprocessing (:class:`ImagePreprocess`, presets
  :data:`PRESETS`);
- a Python data-loader script ``loader.py[:function]`` (default function ``load_data``, as in
  Polygraphy's ``--data-loader-script``; its folder leads ``sys.path`` while it is imported,
  as there) returning an iterable of ``{input name: array}`` batches;
- Polygraphy's saved inputs (``polygraphy run --save-inputs X.json``, its ``--load-inputs``);
- from Python, any iterable of ``{input name: array}`` batches.

The first axis of every model input is its batch axis. An array whose rank is one less than the
model input's is a single sample without that axis. Every batch is checked against the model
(names, dtype, rank, static dimensions) before it is run, and a mismatch names what differs.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..errors import CalibkitError, InputLimitError
from ..inputs import NpzFormatError, load_npy, load_npz

__all__ = [
    "IMAGE_SUFFIXES",
    "PRESETS",
    "DataError",
    "DataSource",
    "ImagePreprocess",
    "InputSpec",
    "at_calibration_shapes",
    "check_batch",
    "open_data",
    "parse_shape",
    "read_polygraphy_inputs",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")
_ARRAY_SUFFIXES = (".npy", ".npz")
_DEFAULT_BATCH_SIZE = 8  # ~400 MB of EfficientNet-Lite0 activations per batch: fits anywhere


class DataError(CalibkitError, ValueError):
    """Calibration data that cannot be read, or does not fit the model's inputs."""


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, dtype and shape (an int per static dimension).

    A dynamic dimension is ``None`` or its symbolic name (``"batch"``).
    """

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]

    def __str__(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {np.dtype(self.dtype).name}[{dims}]"

    @property
    def static_batch(self) -> int | None:
        """The fixed batch size (first dimension) of this input, or None if it is dynamic."""
        first = self.shape[0] if self.shape else None
        return first if isinstance(first, int) else None


def check_batch(batch: Mapping[str, np.ndarray], inputs: Sequence[InputSpec], where: str) -> None:
    """Raise ValueError unless `batch` matches the model inputs exactly.

    Checks the names (none missing, none unknown), then per input the dtype, the rank and every
    static dimension. `where` names the batch in the message (``"calib.npz, batch 3"``).
    """
    expected = {spec.name: spec for spec in inputs}
    missing = [name for name in expected if name not in batch]
    unknown = [name for name in batch if name not in expected]
    if missing or unknown:
        msg = (
            f"{where}: the data has inputs {sorted(batch)}, the model has {sorted(expected)}"
            + (f"; missing {missing}" if missing else "")
            + (f"; not in the model {unknown}" if unknown else "")
        )
        raise DataError(msg)
    for name, spec in expected.items():
        arr = batch[name]
        if not isinstance(arr, np.ndarray):
            msg = f"{where}: input {name!r} is a {type(arr).__name__}, expected a numpy array"
            raise DataError(msg)
        if arr.dtype != spec.dtype:
            msg = (
                f"{where}: input {name!r} has dtype {arr.dtype}, the model expects "
                f"{np.dtype(spec.dtype).name} ({spec}); convert with .astype(np.{spec.dtype})"
            )
            raise DataError(msg)
        if arr.ndim != len(spec.shape):
            msg = (
                f"{where}: input {name!r} has shape {arr.shape} (rank {arr.ndim}), the model "
                f"expects rank {len(spec.shape)} ({spec})"
            )
            raise DataError(msg)
        for axis, (got, want) in enumerate(zip(arr.shape, spec.shape, strict=True)):
            if isinstance(want, int) and got != want:
                msg = (
                    f"{where}: input {name!r} has shape {arr.shape}, the model expects {spec}: "
                    f"dimension {axis} is {got}, expected {want}"
                )
                raise DataError(msg)


# -- image preprocessing ---------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePreprocess:
    """How an image file becomes one model input sample (torchvision conventions).

    ``resize`` then ``crop``, then ``x * scale``, then ``(x - mean) / std`` per channel, in
    ``channels`` order, laid out as ``layout``.

    Parameters
    ----------
    resize : int or (int, int), optional
        An int resizes the shorter side to it (aspect kept, like torchvision ``Resize(256)``);
        ``(h, w)`` resizes to exactly that; None with a crop: ``crop / resize_ratio``.
    crop : (int, int), optional
        Centre crop ``(h, w)``; defaults to the model's static height and width.
    resize_ratio : float, optional
        Crop / resize ratio used when `resize` is None (0.875 = 224/256); None resizes
        straight to the crop size.
    scale, mean, std : float or tuple
        ``(x * scale - mean) / std``, per channel when a tuple.
    channels : {"RGB", "BGR", "L"}, optional
        Channel order; defaults to "L" for a one-channel model, else "RGB".
    layout : {"NCHW", "NHWC"}, optional
        Defaults from the model's input shape (where the 1 or 3 channels sit).
    """

    resize: int | tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    resize_ratio: float | None = None
    scale: float = 1.0
    mean: float | tuple[float, ...] = 0.0
    std: float | tuple[float, ...] = 1.0
    channels: str | None = None
    layout: str | None = None

    def describe(self) -> str:
        """One line for logs and the saved settings."""
        parts = [f"{k}={v}" for k, v in self.__dict__.items() if v is not None]
        return ", ".join(parts)

    def resolve(self, spec: InputSpec) -> ImagePreprocess:
        """Fill layout, channels, crop and resize from the model input; raise if impossible."""
        if len(spec.shape) != 4:
            msg = f"an image folder needs a rank-4 image input; the model input is {spec}"
            raise DataError(msg)
        layout = self.layout or _guess_layout(spec)
        if layout not in ("NCHW", "NHWC"):
            msg = f"layout must be 'NCHW' or 'NHWC', got {layout!r}"
            raise DataError(msg)
        c, h, w = (spec.shape[1:4]) if layout == "NCHW" else (spec.shape[3], *spec.shape[1:3])
        channels = self.channels or ("L" if c == 1 else "RGB")
        if channels not in ("RGB", "BGR", "L"):
            msg = f"channels must be 'RGB', 'BGR' or 'L', got {channels!r}"
            raise DataError(msg)
        if isinstance(c, int) and c != (1 if channels == "L" else 3):
            msg = f"channels {channels!r} does not fit the model input {spec} ({layout}, C={c})"
            raise DataError(msg)
        crop = self.crop
        if crop is None:
            if not (isinstance(h, int) and isinstance(w, int)):
                msg = f"the model input {spec} has a dynamic height/width: give a crop size"
                raise DataError(msg)
            crop = (h, w)
        resize = self.resize
        if resize is None:
            ratio = self.resize_ratio
            resize = crop if ratio is None else round(min(crop) / ratio)
        return replace(self, crop=crop, resize=resize, channels=channels, layout=layout)

    def __call__(self, path: Path, dtype: np.dtype) -> np.ndarray:
        """Load one image file and return one sample (no batch axis) of `dtype`.

        Pixels are on the 0..255 scale the presets expect. A 16-bit image keeps its precision
        (``x * 255 / 65535`` in float32, never clipped to 8 bits); a floating-point image has
        no agreed pixel range and is refused.
        """
        image_mod = require("PIL.Image", "Reading calibration images")
        with warnings.catch_warnings():
            # Pillow warns between 1x and 2x its pixel limit and raises above; both refuse
            warnings.simplefilter("error", image_mod.DecompressionBombWarning)
            try:
                img_file = image_mod.open(path)
            except (image_mod.DecompressionBombError, image_mod.DecompressionBombWarning) as err:
                msg = f"{path}: {err} (raise PIL.Image.MAX_IMAGE_PIXELS to allow it)"
                raise InputLimitError(msg) from err
        with img_file as img:
            if img.mode == "F" or img.mode.startswith("RGBF"):
                msg = (
                    f"{path}: a floating-point image (mode {img.mode}) has no 0..255 pixel range; "
                    "convert it to 8- or 16-bit, or feed arrays (.npy) instead"
                )
                raise DataError(msg)
            if img.mode.startswith("I"):  # 16/32-bit grey: resize in float, keep the range
                img = img.convert("I").convert("F")
                scale = 255.0 / 65535.0 if img.getextrema()[1] <= 65535 else None
                if scale is None:
                    msg = f"{path}: 32-bit pixel values above 65535; expected at most 16 bits"
                    raise DataError(msg)
                img = _resize(img, self.resize, image_mod)
                img = _center_crop(img, self.crop)
                x = np.asarray(img, dtype=np.float32) * np.float32(scale)
                if self.channels != "L":
                    x = np.repeat(x[:, :, None], 3, axis=2)
            else:
                img = img.convert("L" if self.channels == "L" else "RGB")
                img = _resize(img, self.resize, image_mod)
                img = _center_crop(img, self.crop)
                x = np.asarray(img, dtype=np.float32)
        if x.ndim == 2:
            x = x[:, :, None]
        if self.channels == "BGR":
            x = x[:, :, ::-1]
        x = (x * np.float32(self.scale) - np.asarray(self.mean, np.float32)) / np.asarray(
            self.std, np.float32
        )
        if self.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x, dtype=dtype)


_IMAGENET: dict[str, Any] = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
#: Named preprocessings; fields given next to a preset override it.
PRESETS: dict[str, ImagePreprocess] = {
    # torchvision ImageNet models: Resize(256), CenterCrop(224), ToTensor, Normalize
    "imagenet": ImagePreprocess(resize_ratio=0.875, scale=1 / 255, **_IMAGENET),
    # EfficientNet-Lite (designed for INT8): same crop, (x - 127) / 128
    "efficientnet-lite": ImagePreprocess(resize_ratio=0.875, mean=127.0, std=128.0),
    # resize to the input size, x / 255 in [0, 1]
    "unit": ImagePreprocess(scale=1 / 255),
    # resize to the input size, raw 0..255 values (models that normalise inside the graph)
    "raw": ImagePreprocess(),
}


def _guess_layout(spec: InputSpec) -> str:
    nchw, nhwc = spec.shape[1] in (1, 3), spec.shape[3] in (1, 3)
    if nchw != nhwc:
        return "NCHW" if nchw else "NHWC"
    if nchw and nhwc:
        return "NCHW"
    msg = f"cannot tell the image layout of the model input {spec}: give layout NCHW or NHWC"
    raise DataError(msg)


def _resize(img, size, image_mod):  # PIL types: PIL stays an optional import
    if isinstance(size, int):  # shorter side to `size`, like torchvision.transforms.Resize
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = size, int(size * long / short)
        new = (new_short, new_long) if w <= h else (new_long, new_short)
    else:
        new = (size[1], size[0])
    if new == img.size:
        return img
    return img.resize(new, image_mod.Resampling.BILINEAR)


def _center_crop(img, crop):
    w, h = img.size
    ch, cw = crop
    if ch > h or cw > w:
        msg = f"crop {ch}x{cw} is larger than the resized image {h}x{w}; resize to at least it"
        raise DataError(msg)
    top, left = round((h - ch) / 2.0), round((w - cw) / 2.0)  # torchvision CenterCrop
    return img.crop((left, top, left + cw, top + ch))


# -- readers: each yields chunks {name: array with a leading sample axis} ------------------------


def _as_chunk(arrays: Mapping[str, np.ndarray], inputs: Sequence[InputSpec], where: str):
    """Give every array a leading sample axis (adding it for a single sample)."""
    ranks = {spec.name: len(spec.shape) for spec in inputs}
    out = {}
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        rank = ranks.get(name)
        if rank is not None and arr.ndim == rank - 1:
            arr = arr[None]
        elif rank is not None and arr.ndim != rank:
            msg = (
                f"{where}: input {name!r} has shape {arr.shape}; the model input has rank {rank}"
                f" ({next(s for s in inputs if s.name == name)}): give samples x rank-{rank} or "
                f"one sample of rank {rank - 1}"
            )
            raise DataError(msg)
        out[name] = arr
    counts = {name: arr.shape[0] for name, arr in out.items()}
    if len(set(counts.values())) > 1:
        msg = f"{where}: the inputs hold different numbers of samples {counts}"
        raise DataError(msg)
    return out


def _single_input(inputs: Sequence[InputSpec], what: str) -> InputSpec:
    if len(inputs) != 1:
        names = [spec.name for spec in inputs]
        msg = (
            f"{what} feeds one input, but the model has {len(inputs)}: {names}; "
            "use a .npz keyed by input name"
        )
        raise DataError(msg)
    return inputs[0]


def _read_array_file(path: Path, inputs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
    """Read one .npy (single input, memory-mapped) or .npz (keyed by input name) file."""
    try:
        if path.suffix.lower() == ".npy":
            spec = _single_input(inputs, f"{path} (a .npy file)")
            arrays = {spec.name: load_npy(path, "calibration data (.npy)")}
        else:
            arrays = load_npz(path, "calibration data (.npz, key = input name)")
    except NpzFormatError as err:  # the data's own error class, same message
        raise DataError(str(err)) from err
    if not arrays:
        msg = f"{path}: holds no arrays; expected one per model input {[s.name for s in inputs]}"
        raise DataError(msg)
    return _as_chunk(arrays, inputs, str(path))


def _count(chunk: Mapping[str, np.ndarray]) -> int:
    return next(iter(chunk.values())).shape[0] if chunk else 0


def _script_error(
    err: BaseException, path: Path, what: str, *, role: str = "data-loader script"
) -> DataError:
    """One line for an exception raised by a user's script: its own file, line and message.

    The line is the deepest frame in the script itself, so the user sees where in *their*
    code it failed, not calibkit's frames; if it was raised deeper (a module the script
    imports), that place is named too. `role` names the script (``"model script"`` for a
    PyTorch entry point).
    """
    import traceback

    frames = traceback.extract_tb(err.__traceback__)
    own = [f for f in frames if Path(f.filename).resolve() == path.resolve()]
    where = f"{path}:{own[-1].lineno}" if own else str(path)
    if frames and own and frames[-1] is not own[-1]:
        raised = f" (raised at {frames[-1].filename}:{frames[-1].lineno})"
    else:
        raised = ""
    if isinstance(err, SystemExit):
        return DataError(f"{where}: the {role} called sys.exit({err.code!r}) {what}")
    text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return DataError(f"{where}: the {role} failed {what}: {text}{raised}")


def _load_script(
    spec: str, *, role: str = "data-loader script", default: str = "load_data"
) -> tuple[Callable[[], Any], str, Path]:
    """Import ``FILE.py[:FUNCTION]`` (a dotted FUNCTION: an attribute of an attribute).

    Returns the function, ``"FILE.py:FUNCTION"`` and the file's path. Failures name the file:
    the script's own exception becomes one line (:func:`_script_error`), `role` says what the
    file is in every message.
    """
    path_text, _, func_name = spec.partition(".py:")
    path_text = path_text + ".py" if func_name else path_text
    func_name = func_name or default
    path = Path(path_text)
    if not path.exists():
        msg = f"{role} {path} not found"
        raise FileNotFoundError(msg)
    if not path.is_file():  # a folder, or a FIFO or device that would block the import
        msg = f"{role} {path}: not a regular file"
        raise DataError(msg)
    kind = re.sub(r"\W", "_", role.removesuffix(" script"))  # data-loader -> data_loader
    mod_name = f"calibkit_{kind}_" + re.sub(r"\W", "_", path.stem)
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    if module_spec is None or module_spec.loader is None:  # not a file Python can import
        msg = f"data-loader script {path}: cannot be imported as a Python module"
        raise DataError(msg)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[mod_name] = module  # so pickling and dataclasses inside the script work
    # As Polygraphy's import_from_script: the script's folder leads sys.path while it is
    # imported, so it can import a module beside it; removed again afterwards.
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        module_spec.loader.exec_module(module)
    except (Exception, SystemExit) as err:  # the script's own failure, not ours
        raise _script_error(err, path, "on import", role=role) from err
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    func: Any = module
    for part in func_name.split("."):
        func = getattr(func, part, None)
    if not callable(func):
        msg = f"{path}: no function {func_name!r} (give it as {path}:FUNCTION)"
        raise DataError(msg)
    return func, f"{path}:{func_name}", path


@dataclass
class DataSource:
    """Checked model-input batches from one data source; iterate it for the batches.

    Build it with :func:`open_data`. Iterating yields ``{input name: array}`` dicts of
    `batch_size` samples (the last may be smaller for a dynamic batch axis), each checked with
    :func:`check_batch`; it can be iterated again (a script is called again).

    Attributes
    ----------
    description : str
        What the data is (path, kind, preprocessing), for logs and saved settings.
    num_samples : int or None
        Number of samples iteration yields, when known before reading.
    batch_size : int or None
        Samples per batch; None passes a loader's batches through as they come.
    """

    description: str
    inputs: Sequence[InputSpec]
    chunks: Callable[[], Iterator[tuple[dict[str, np.ndarray], str]]] = field(repr=False)
    num_samples: int | None = None
    batch_size: int | None = None
    max_samples: int | None = None

    def __post_init__(self) -> None:
        if self.num_samples is not None and self.max_samples is not None:
            self.num_samples = min(self.num_samples, self.max_samples)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        """Yield checked batches."""
        index, seen = 0, 0
        for batch, where in self._batches():
            if self.max_samples is not None and seen + _count(batch) > self.max_samples:
                if self._static_batch() is not None:
                    self._warn_unused(self.max_samples - seen)
                    break
                batch = {k: v[: self.max_samples - seen] for k, v in batch.items()}
            if not _count(batch):
                break
            check_batch(batch, self.inputs, f"{where}, batch {index}")
            yield batch
            index, seen = index + 1, seen + _count(batch)
            if self.max_samples is not None and seen >= self.max_samples:
                break

    def _static_batch(self) -> int | None:
        return next((s.static_batch for s in self.inputs if s.static_batch), None)

    def _warn_unused(self, n: int) -> None:
        logger.warning(
            "%s: the last %d sample(s) are not used: the model's batch size is fixed at %d",
            self.description,
            n,
            self._static_batch(),
        )

    def _batches(self) -> Iterator[tuple[dict[str, np.ndarray], str]]:
        """Re-cut the reader's chunks into batches of exactly `batch_size` samples."""
        if self.batch_size is None:
            yield from self.chunks()
            return
        pending: list[dict[str, np.ndarray]] = []
        n_pending, where = 0, self.description
        for chunk, where in self.chunks():
            pending.append(chunk)
            n_pending += _count(chunk)
            while n_pending >= self.batch_size:
                batch, pending, n_pending = _take(pending, self.batch_size, where)
                yield batch, where
        if n_pending:
            if self._static_batch() is not None:
                self._warn_unused(n_pending)
                return
            batch, _, _ = _take(pending, n_pending, where)
            yield batch, where


def _take(pending: list[dict[str, np.ndarray]], n: int, where: str):
    """Split the first `n` samples off the pending chunks; return (batch, rest, n_rest)."""
    parts: list[dict[str, np.ndarray]] = []
    need = n
    while need:
        chunk = pending[0]
        size = _count(chunk)
        if size <= need:
            parts.append(chunk)
            pending = pending[1:]
            need -= size
        else:
            parts.append({k: v[:need] for k, v in chunk.items()})
            pending = [{k: v[need:] for k, v in chunk.items()}, *pending[1:]]
            need = 0
    if len(parts) == 1:
        batch = {k: np.asarray(v) for k, v in parts[0].items()}
    else:
        batch = {}
        for name in parts[0]:
            shapes = {p[name].shape[1:] for p in parts}
            if len(shapes) > 1:
                msg = (
                    f"{where}: cannot batch samples of input {name!r} with different shapes "
                    f"{sorted(shapes)}; use batch size 1 or pad them to one shape"
                )
                raise DataError(msg)
            batch[name] = np.concatenate([p[name] for p in parts])
    return batch, pending, sum(_count(c) for c in pending)


def _check_batch_size(inputs: Sequence[InputSpec], batch_size: int | None) -> int | None:
    static = {s.static_batch for s in inputs if s.static_batch is not None}
    if len(static) > 1:
        msg = f"the model inputs have different fixed batch sizes {sorted(static)}"
        raise DataError(msg)
    fixed = static.pop() if static else None
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            msg = f"batch_size must be a positive int, got {batch_size!r}"
            raise DataError(msg)
        if fixed is not None and batch_size != fixed:
            msg = f"batch size {batch_size} given, but the model's batch size is fixed at {fixed}"
            raise DataError(msg)
    return batch_size if batch_size is not None else fixed


def _list_files(folder: Path) -> tuple[list[Path], list[Path]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    arrays = [p for p in files if p.suffix.lower() in _ARRAY_SUFFIXES]
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    other = len(files) - len(arrays) - len(images)
    if other:
        logger.warning("%s: ignoring %d file(s) that are neither arrays nor images", folder, other)
    if arrays and images:
        msg = (
            f"{folder}: holds both arrays ({len(arrays)}) and images ({len(images)}); keep one kind"
        )
        raise DataError(msg)
    if not arrays and not images:
        msg = f"{folder}: no .npy/.npz or image files ({', '.join(IMAGE_SUFFIXES)}) found"
        raise DataError(msg)
    return arrays, images


def open_data(
    data: str | os.PathLike | Iterable[Mapping[str, np.ndarray]],
    inputs: Sequence[InputSpec],
    *,
    batch_size: int | None = None,
    max_samples: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    preprocess: str | ImagePreprocess | None = None,
) -> DataSource:
    """Open calibration data for a model with the given inputs.

    Parameters
    ----------
    data : path, "script.py[:function]" or iterable of dicts
        A .npy/.npz file, a folder of .npy/.npz files or of images, a data-loader script, or
        an iterable of ``{input name: array}`` batches.
    inputs : sequence of InputSpec
        The model inputs (``OnnxActivationSource.inputs``).
    batch_size : int, optional
        Samples per batch. Defaults to the model's fixed batch size, else to a loader's own
        batches, else 8. The batch size changes the result, as in TensorRT: the histogram
        range starts at the first batch's max.
    max_samples : int, optional
        Stop after this many samples.
    shuffle, seed
        Visit samples (or files) in a random order drawn from `seed`; not for loaders.
    preprocess : str or ImagePreprocess, optional
        For an image folder (required there): a preset name from :data:`PRESETS` or an
        ImagePreprocess.

    Returns
    -------
    DataSource

    Raises
    ------
    ValueError
        If the data cannot fit the model; FileNotFoundError if a path does not exist.
    """
    inputs = list(inputs)
    fixed = _check_batch_size(inputs, batch_size)
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        msg = f"max_samples must be a positive int, got {max_samples!r}"
        raise DataError(msg)
    is_dir = isinstance(data, (str, os.PathLike)) and Path(data).is_dir()
    if preprocess is not None and not is_dir:
        msg = f"a preprocessing applies to a folder of images; {data} is not one"
        raise DataError(msg)
    feeds: Iterable | Callable[[], Iterable] | None = None
    if not isinstance(data, (str, os.PathLike)):  # an iterable of feed dicts
        feeds, where, script = data, "iterable", None
    else:
        text = os.fspath(data)
        path = Path(text)
        if text.endswith(".py") or ".py:" in text:
            feeds, where, script = _load_script(text)
    if feeds is not None:
        if shuffle:
            msg = f"{where}: shuffle works on files and arrays; shuffle in the loader"
            raise DataError(msg)
        chunks = _loader_chunks(feeds, inputs, where, script)
        return DataSource(where, inputs, chunks, None, fixed, max_samples)
    if not path.exists():
        msg = f"calibration data {path} not found"
        raise FileNotFoundError(msg)
    if not is_dir and path.suffix.lower() == ".json":
        feeds = read_polygraphy_inputs(path)
        chunks = _loader_chunks(feeds, inputs, str(path), None)
        where = f"{path} (Polygraphy inputs, {len(feeds)} iterations)"
        return DataSource(where, inputs, chunks, None, fixed, max_samples)
    size = fixed or _DEFAULT_BATCH_SIZE
    order = np.random.default_rng(seed).permutation if shuffle else None
    note = ", shuffled" if shuffle else ""
    if not is_dir:
        if path.suffix.lower() not in _ARRAY_SUFFIXES:
            msg = (
                f"{path}: expected a .npy or .npz file, a folder, a loader script.py, or "
                "Polygraphy's --save-inputs .json"
            )
            raise DataError(msg)
        chunk = _read_array_file(path, inputs)
        n = _count(chunk)
        chunks = _array_chunks(chunk, order, size, str(path))
        return DataSource(f"{path} ({n} samples{note})", inputs, chunks, n, size, max_samples)
    arrays, images = _list_files(path)
    files = arrays or images
    files = [files[i] for i in order(len(files))] if order else files
    if arrays:
        if preprocess is not None:
            msg = f"a preprocessing applies to a folder of images; {path} holds arrays"
            raise DataError(msg)
        desc = f"{path}/ ({len(files)} array files{note})"
        chunks = _file_chunks(files, inputs)
        return DataSource(desc, inputs, chunks, None, size, max_samples)
    spec = _single_input(inputs, f"{path} (a folder of images)")
    prep = _resolve_preprocess(preprocess).resolve(spec)
    desc = f"{path}/ ({len(files)} images{note}; {prep.describe()})"
    chunks = _image_chunks(files, spec, prep)
    return DataSource(desc, inputs, chunks, len(files), size, max_samples)


def _resolve_preprocess(preprocess: str | ImagePreprocess | None) -> ImagePreprocess:
    if preprocess is None:
        msg = f"a folder of images needs a preprocessing: one of {sorted(PRESETS)}"
        raise DataError(msg)
    if isinstance(preprocess, ImagePreprocess):
        return preprocess
    if preprocess not in PRESETS:
        msg = f"unknown preprocessing {preprocess!r}; choose one of {sorted(PRESETS)}"
        raise DataError(msg)
    return PRESETS[preprocess]


_Chunks = Callable[[], Iterator[tuple[dict[str, np.ndarray], str]]]


def _array_chunks(chunk: dict[str, np.ndarray], order, size: int, where: str) -> _Chunks:
    n = _count(chunk)

    def chunks():
        idx_all = order(n) if order else None  # drawn per pass: the same seed, the same order
        for start in range(0, n, size):
            idx = slice(start, start + size) if idx_all is None else idx_all[start : start + size]
            yield {k: np.asarray(v[idx]) for k, v in chunk.items()}, where

    return chunks


def _file_chunks(files: list[Path], inputs: Sequence[InputSpec]) -> _Chunks:
    def chunks():
        for f in files:
            yield _read_array_file(f, inputs), str(f)

    return chunks


def _image_chunks(files: list[Path], spec: InputSpec, prep: ImagePreprocess) -> _Chunks:
    def chunks():
        for f in files:
            try:
                sample = prep(f, spec.dtype)
            except (OSError, ValueError) as err:
                if isinstance(err, CalibkitError):
                    raise
                msg = f"{f}: cannot preprocess: {err}"
                raise DataError(msg) from err
            yield {spec.name: sample[None]}, str(f)

    return chunks


def read_polygraphy_inputs(path: str | Path) -> list[dict[str, np.ndarray]]:
    """Read the inputs ``polygraphy run --save-inputs X.json`` wrote (its ``--load-inputs``).

    The file is a JSON list with one ``{input name: array}`` feed per iteration; each array is
    ``{"array": base64 of an .npy file, "polygraphy_class": "ndarray"}`` (Polygraphy's JSON
    encoding; arrays are read with ``allow_pickle=False``). Each feed is one batch.

    Raises
    ------
    DataError
        If the file is not that, naming the iteration and input.
    """
    import base64
    import binascii
    import io
    import json

    path = Path(path)
    try:
        obj = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as err:
        msg = f"{path}: not valid JSON ({err})"
        raise DataError(msg) from err
    if not isinstance(obj, list):
        msg = f"{path}: expected Polygraphy's saved inputs, a JSON list of {{input: array}} feeds"
        raise DataError(msg)
    feeds = []
    for i, feed in enumerate(obj):
        if not isinstance(feed, dict):
            msg = f"{path}: iteration {i} is a {type(feed).__name__}, expected {{input: array}}"
            raise DataError(msg)
        arrays = {}
        for name, value in feed.items():
            where = f"{path}: iteration {i}, input {name!r}"
            if not (
                isinstance(value, dict)
                and value.get("polygraphy_class") == "ndarray"
                and isinstance(value.get("array"), str)
            ):
                msg = f"{where}: expected a Polygraphy ndarray {{'array': base64, ...}}"
                raise DataError(msg)
            try:
                raw = base64.b64decode(value["array"].encode(), validate=True)
                arr = np.load(io.BytesIO(raw), allow_pickle=False)
            except (binascii.Error, ValueError, OSError, EOFError) as err:
                msg = f"{where}: not a base64 .npy array ({err})"
                raise DataError(msg) from err
            if not isinstance(arr, np.ndarray):  # Polygraphy's older NPZ payload: one array
                values = list(arr.values())
                if len(values) != 1:
                    msg = f"{where}: expected one array in the NPZ payload, got {len(values)}"
                    raise DataError(msg)
                arr = values[0]
            arrays[name] = arr
        feeds.append(arrays)
    return feeds


def _script_items(
    data, where: str, script: Path | None, expected: str
) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, item)`` from a loader's function (called now) or a Python iterable.

    An exception (or ``sys.exit``) from a script's function or its iterator is the script's
    failure: it becomes one line naming the script's file and line. `expected` says what the
    items should be, for the error when the function returns no iterable.
    """

    def guarded(step, what):
        if script is None:
            return step()
        try:
            return step()
        except StopIteration:
            raise
        except (Exception, SystemExit) as err:
            raise _script_error(err, script, what) from err

    result = guarded(lambda: data() if callable(data) else data, "when called")
    if isinstance(result, Mapping) or not isinstance(result, Iterable):
        kind = type(result).__name__
        msg = f"{where}: expected an iterable of {expected}, got {kind}"
        raise DataError(msg)
    items = guarded(lambda: iter(result), "when iterated")
    for i in range(sys.maxsize):
        try:
            item = guarded(lambda: next(items), f"producing item {i}")
        except StopIteration:
            return
        yield i, item


def _loader_chunks(data, inputs: Sequence[InputSpec], where: str, script: Path | None) -> _Chunks:
    """Chunks from a script's function (called per pass) or a Python iterable.

    An exception (or ``sys.exit``) from a script's function or its iterator is the script's
    failure: it becomes one line naming the script's file and line.
    """
    if isinstance(data, Iterator):
        logger.info("%s is an iterator: it can be iterated only once", where)

    def chunks():
        for i, item in _script_items(data, where, script, "{input name: array} dicts"):
            if not isinstance(item, Mapping):
                msg = f"{where}: item {i} is a {type(item).__name__}, expected a dict of arrays"
                raise DataError(msg)
            yield _as_chunk(item, inputs, f"{where}, item {i}"), f"{where}, item {i}"

    return chunks


def _dims(text: str) -> tuple[int, ...] | None:
    """``1x3x224x224`` or Polygraphy's ``[1,3,224,224]`` -> dims; None if neither."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        parts = text[1:-1].split(",")
    else:
        parts = text.lower().split("x")
    try:
        dims = tuple(int(d.strip()) for d in parts)
    except ValueError:
        return None
    return dims if dims and min(dims) >= 1 else None


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``NAME=1x3x224x224``, or Polygraphy's ``NAME:[1,3,224,224]`` / ``NAME:1x3x224x224``.

    Names may contain ``=`` and ``:``: the last separator whose right-hand side is a shape
    splits.

    Examples
    --------
    >>> parse_shape("image=1x3x224x224")
    ('image', (1, 3, 224, 224))
    >>> parse_shape("input:0:[1,3,224,224]")
    ('input:0', (1, 3, 224, 224))
    """
    candidates = []
    for sep in ("=", ":"):
        name, found, dims = text.rpartition(sep)
        shape = _dims(dims) if found else None
        if name and shape is not None:
            candidates.append((len(name), name, shape))
    if not candidates:
        msg = (
            f"expected NAME=DxDx..., NAME:DxDx... or NAME:[D,D,...] with positive dimensions, "
            f"got {text!r}"
        )
        raise DataError(msg)
    _, name, shape = max(candidates)  # the separator nearest the end: names keep the others
    return name, shape


def _partial_batch_hint(total: int, need: int, shape: Sequence[int]) -> str:
    """Hint for the last batch falling short: the sample count is not a multiple of it."""
    per_sample = need // shape[0] if shape and shape[0] else 0
    if not per_sample or total % per_sample:
        return ""
    samples = total // per_sample
    usable = samples // shape[0] * shape[0]
    # TensorRT's calibrators stop at the first batch they cannot fill (getBatch returns false)
    return (
        f"; it is the last batch, partly filled ({samples} samples are not a multiple of "
        f"{shape[0]}): pass --max-samples {usable} (or a --batch-size that divides {samples}) "
        "so that every batch is full: TensorRT reads a whole calibration batch from every buffer"
    )


def at_calibration_shapes(
    batches: Iterable[Mapping[str, np.ndarray]], shapes: Mapping[str, Sequence[int]]
) -> Iterator[dict[str, np.ndarray]]:
    """Give each input the calibration shape TensorRT would read it at.

    With dynamic shapes TensorRT calibrates at the calibration profile's optimum shape: it
    reads that many elements from the start of the buffer the calibrator filled and ignores
    the rest (in a TensorRT 8.2 case it read the first 32 of 512 values). So each listed input
    becomes the first ``prod(shape)`` elements of the batch in memory order, reshaped; a batch
    larger than that is used in part, with a warning (once per input), and a smaller one is an
    error (TensorRT would read past the data).

    Raises
    ------
    DataError
        If a batch lacks a listed input or holds fewer elements than its shape needs.
    """
    warned: set[str] = set()
    seen: dict[str, int] = {}  # values of each input so far, for the partial-batch hint
    iterator = iter(batches)
    upcoming = next(iterator, None)
    index = -1
    while upcoming is not None:
        batch, upcoming, index = upcoming, next(iterator, None), index + 1
        out = dict(batch)
        for name, shape in shapes.items():
            if name not in out:
                msg = f"batch {index}: no input {name!r} for its calibration shape {tuple(shape)}"
                raise DataError(msg)
            x = np.ascontiguousarray(out[name]).reshape(-1)
            need = int(np.prod(shape))
            seen[name] = seen.get(name, 0) + x.size
            if x.size < need:
                msg = (
                    f"batch {index}: input {name!r} holds {x.size} values, fewer than its "
                    f"calibration shape {tuple(shape)} needs ({need})"
                )
                if upcoming is None:
                    msg += _partial_batch_hint(seen[name], need, shape)
                raise DataError(msg)
            if x.size > need and name not in warned:
                warned.add(name)
                logger.warning(
                    "input %r: batches hold %d values but the calibration shape %s reads %d; "
                    "TensorRT calibrates on the first %d only, and so does calibkit",
                    name,
                    x.size,
                    tuple(shape),
                    need,
                    need,
                )
            out[name] = x[:need].reshape(tuple(shape))
        yield out
