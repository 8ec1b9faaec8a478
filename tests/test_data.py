"""Calibration data sources: files and loaders in, checked model-input batches out."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibkit.data.sources import (
    PRESETS,
    DataError,
    ImagePreprocess,
    InputSpec,
    check_batch,
    open_data,
)

F32 = np.dtype(np.float32)
IMAGE = InputSpec("x", F32, ("batch", 3, 8, 8))
TWO = [InputSpec("a", F32, ("n", 4)), InputSpec("ids", np.dtype(np.int64), ("n", 4))]


def _samples(rng, n, shape=(3, 8, 8)):
    return rng.normal(size=(n, *shape)).astype(np.float32)


def _concat(batches, name="x"):
    return np.concatenate([b[name] for b in batches])


# -- check_batch --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        (
            {"x": np.zeros((2, 3, 8, 8), np.float64)},
            "input 'x' has dtype float64, the model expects",
        ),
        ({"x": np.zeros((2, 3, 8), np.float32)}, r"rank 3\), the model expects rank 4"),
        ({"x": np.zeros((2, 3, 8, 9), np.float32)}, "dimension 3 is 9, expected 8"),
        ({"y": np.zeros((2, 3, 8, 8), np.float32)}, r"missing \['x'\]; not in the model \['y'\]"),
        ({"x": [[1.0]]}, "is a list, expected a numpy array"),
    ],
    ids=["dtype", "rank", "static-dim", "names", "not-array"],
)
def test_check_batch_says_what_differs(batch, match):
    with pytest.raises(DataError, match=match):
        check_batch(batch, [IMAGE], "here")


def test_check_batch_accepts_any_dynamic_dim():
    check_batch({"x": np.zeros((5, 3, 8, 8), np.float32)}, [IMAGE], "here")


def test_check_batch_checks_a_static_batch_dim():
    spec = InputSpec("x", F32, (4, 3))
    with pytest.raises(DataError, match="dimension 0 is 2, expected 4"):
        check_batch({"x": np.zeros((2, 3), np.float32)}, [spec], "here")


# -- .npy / .npz ----------------------------------------------------------------------------------


def test_npy_first_axis_is_samples(rng, tmp_path):
    x = _samples(rng, 10)
    np.save(tmp_path / "x.npy", x)
    source = open_data(tmp_path / "x.npy", [IMAGE], batch_size=4)
    batches = list(source)
    assert [len(b["x"]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(_concat(batches), x)
    assert source.num_samples == 10


def test_npy_default_batch_size_is_eight(rng, tmp_path):
    np.save(tmp_path / "x.npy", _samples(rng, 10))
    assert [len(b["x"]) for b in open_data(tmp_path / "x.npy", [IMAGE])] == [8, 2]


def test_npy_single_sample_without_batch_axis(rng, tmp_path):
    x = _samples(rng, 1)[0]
    np.save(tmp_path / "one.npy", x)
    (batch,) = open_data(tmp_path / "one.npy", [IMAGE])
    np.testing.assert_array_equal(batch["x"], x[None])


def test_npy_for_a_multi_input_model_is_refused(rng, tmp_path):
    np.save(tmp_path / "x.npy", _samples(rng, 2, (4,)))
    with pytest.raises(DataError, match=r"feeds one input, but the model has 2: \['a', 'ids'\]"):
        open_data(tmp_path / "x.npy", TWO)


def test_npz_keyed_by_input_name(rng, tmp_path):
    a = _samples(rng, 5, (4,))
    ids = rng.integers(0, 9, size=(5, 4))
    np.savez(tmp_path / "d.npz", a=a, ids=ids)
    batches = list(open_data(tmp_path / "d.npz", TWO, batch_size=2))
    np.testing.assert_array_equal(_concat(batches, "a"), a)
    np.testing.assert_array_equal(_concat(batches, "ids"), ids)


def test_npz_with_a_missing_input(rng, tmp_path):
    np.savez(tmp_path / "d.npz", a=_samples(rng, 5, (4,)))
    with pytest.raises(DataError, match=r"missing \['ids'\]"):
        list(open_data(tmp_path / "d.npz", TWO))


def test_npz_inputs_with_different_sample_counts(rng, tmp_path):
    np.savez(tmp_path / "d.npz", a=_samples(rng, 5, (4,)), ids=np.zeros((4, 4), np.int64))
    with pytest.raises(DataError, match="different numbers of samples"):
        open_data(tmp_path / "d.npz", TWO)


def test_wrong_rank_names_the_file_and_input(rng, tmp_path):
    np.save(tmp_path / "x.npy", rng.normal(size=(2, 2, 3, 8, 8)).astype(np.float32))
    with pytest.raises(DataError, match=r"x\.npy: input 'x' has shape \(2, 2, 3, 8, 8\)"):
        open_data(tmp_path / "x.npy", [IMAGE])


def test_unreadable_file(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match=r"x\.npy: cannot read as \.npy"):
        open_data(tmp_path / "x.npy", [IMAGE])


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"calibration data .* not found"):
        open_data(tmp_path / "nothing.npz", [IMAGE])


def test_other_file_kinds_are_refused(tmp_path):
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(DataError, match=r"expected a \.npy or \.npz file"):
        open_data(tmp_path / "x.csv", [IMAGE])


def test_shuffle_is_a_seeded_permutation(rng, tmp_path):
    x = _samples(rng, 20)
    np.save(tmp_path / "x.npy", x)
    path = tmp_path / "x.npy"
    first = _concat(open_data(path, [IMAGE], shuffle=True, seed=1, batch_size=3))
    again = _concat(open_data(path, [IMAGE], shuffle=True, seed=1, batch_size=3))
    other = _concat(open_data(path, [IMAGE], shuffle=True, seed=2, batch_size=3))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, x)
    order = np.argsort(first[:, 0, 0, 0])
    np.testing.assert_array_equal(first[order], x[np.argsort(x[:, 0, 0, 0])])


def test_max_samples_cuts_the_last_batch(rng, tmp_path):
    np.save(tmp_path / "x.npy", _samples(rng, 20))
    source = open_data(tmp_path / "x.npy", [IMAGE], batch_size=4, max_samples=10)
    assert [len(b["x"]) for b in source] == [4, 4, 2]
    assert source.num_samples == 10


@pytest.mark.parametrize("bad", [0, -1, 2.5, True], ids=["zero", "negative", "float", "bool"])
def test_bad_batch_size_or_max_samples(rng, tmp_path, bad):
    np.save(tmp_path / "x.npy", _samples(rng, 2))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        open_data(tmp_path / "x.npy", [IMAGE], batch_size=bad)
    with pytest.raises(ValueError, match="max_samples must be a positive int"):
        open_data(tmp_path / "x.npy", [IMAGE], max_samples=bad)


# -- fixed batch size -----------------------------------------------------------------------------


def test_fixed_batch_model_sets_the_batch_size_and_reports_leftovers(rng, tmp_path, caplog):
    spec = InputSpec("x", F32, (4, 3, 8, 8))
    x = _samples(rng, 10)
    np.save(tmp_path / "x.npy", x)
    with caplog.at_level(logging.WARNING, logger="calibkit.data.sources"):
        batches = list(open_data(tmp_path / "x.npy", [spec]))
    assert [len(b["x"]) for b in batches] == [4, 4]
    np.testing.assert_array_equal(_concat(batches), x[:8])
    assert "the last 2 sample(s) are not used: the model's batch size is fixed at 4" in caplog.text


def test_fixed_batch_model_with_max_samples_uses_whole_batches(rng, tmp_path, caplog):
    spec = InputSpec("x", F32, (4, 3, 8, 8))
    np.save(tmp_path / "x.npy", _samples(rng, 20))
    with caplog.at_level(logging.WARNING, logger="calibkit.data.sources"):
        batches = list(open_data(tmp_path / "x.npy", [spec], max_samples=10))
    assert [len(b["x"]) for b in batches] == [4, 4]
    assert "the last 2 sample(s) are not used" in caplog.text


def test_batch_size_conflicting_with_the_model(rng, tmp_path):
    np.save(tmp_path / "x.npy", _samples(rng, 4))
    with pytest.raises(DataError, match="batch size 2 given, but the model's batch size is fixed"):
        open_data(tmp_path / "x.npy", [InputSpec("x", F32, (4, 3, 8, 8))], batch_size=2)


# -- folders of arrays ----------------------------------------------------------------------------


def test_folder_of_per_sample_npy_in_path_order(rng, tmp_path):
    x = _samples(rng, 5)
    for i, sample in enumerate(x):
        np.save(tmp_path / f"s{i:02d}.npy", sample)
    source = open_data(tmp_path, [IMAGE], batch_size=2)
    np.testing.assert_array_equal(_concat(source), x)
    assert "5 array files" in source.description


def test_folder_of_npz_for_two_inputs_searched_recursively(rng, tmp_path):
    (tmp_path / "sub").mkdir()
    a = _samples(rng, 3, (4,))
    for i in range(3):
        folder = tmp_path / "sub" if i else tmp_path
        np.savez(folder / f"s{i}.npz", a=a[i], ids=np.full(4, i))
    batches = list(open_data(tmp_path, TWO, batch_size=3))
    got = dict(zip(_concat(batches, "ids")[:, 0].tolist(), _concat(batches, "a"), strict=True))
    for i in range(3):
        np.testing.assert_array_equal(got[i], a[i])


def test_folder_samples_of_different_shapes_cannot_share_a_batch(rng, tmp_path):
    spec = InputSpec("tokens", F32, ("n", "seq"))
    np.save(tmp_path / "a.npy", _samples(rng, 1, (5,))[0])
    np.save(tmp_path / "b.npy", _samples(rng, 1, (7,))[0])
    with pytest.raises(DataError, match=r"different shapes \[\(5,\), \(7,\)\]; use batch size 1"):
        list(open_data(tmp_path, [spec], batch_size=2))
    assert [b["tokens"].shape for b in open_data(tmp_path, [spec], batch_size=1)] == [
        (1, 5),
        (1, 7),
    ]


def test_folder_shuffle_visits_every_file(rng, tmp_path):
    x = _samples(rng, 6)
    for i, sample in enumerate(x):
        np.save(tmp_path / f"s{i}.npy", sample)
    got = _concat(open_data(tmp_path, [IMAGE], shuffle=True, seed=3, batch_size=4))
    assert not np.array_equal(got, x)
    np.testing.assert_array_equal(np.sort(got, axis=None), np.sort(x, axis=None))


def test_folder_mixing_arrays_and_images_is_refused(rng, tmp_path):
    pil = pytest.importorskip("PIL.Image")
    np.save(tmp_path / "a.npy", _samples(rng, 1)[0])
    pil.new("RGB", (8, 8)).save(tmp_path / "b.png")
    with pytest.raises(DataError, match=r"holds both arrays \(1\) and images \(1\)"):
        open_data(tmp_path, [IMAGE])


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match=r"no \.npy/\.npz or image files"):
        open_data(tmp_path, [IMAGE])


def test_preprocess_applies_to_image_folders_only(rng, tmp_path):
    np.save(tmp_path / "x.npy", _samples(rng, 2))
    with pytest.raises(DataError, match="a preprocessing applies to a folder of images"):
        open_data(tmp_path / "x.npy", [IMAGE], preprocess="unit")
    with pytest.raises(DataError, match="holds arrays"):
        open_data(tmp_path, [IMAGE], preprocess="unit")


# -- images ---------------------------------------------------------------------------------------


@pytest.fixture
def pil():
    return pytest.importorskip("PIL.Image")


def _image(pil, folder, name, pixels):
    folder.mkdir(exist_ok=True)
    mode = "L" if pixels.ndim == 2 else "RGB"
    pil.fromarray(pixels.astype(np.uint8), mode).save(folder / name)
    return pixels.astype(np.float32)


def test_unit_preset_on_model_sized_images(pil, rng, tmp_path):
    pixels = [_image(pil, tmp_path, f"{i}.png", rng.integers(0, 256, (8, 8, 3))) for i in range(3)]
    source = open_data(tmp_path, [IMAGE], preprocess="unit", batch_size=2)
    want = np.stack(pixels).transpose(0, 3, 1, 2) / 255
    np.testing.assert_allclose(_concat(source), want, rtol=1e-6)
    assert source.num_samples == 3


def test_nhwc_layout_is_read_from_the_model(pil, rng, tmp_path):
    pixels = _image(pil, tmp_path, "a.png", rng.integers(0, 256, (8, 8, 3)))
    spec = InputSpec("x", F32, (1, 8, 8, 3))
    (batch,) = open_data(tmp_path, [spec], preprocess="unit")
    np.testing.assert_allclose(batch["x"][0], pixels / 255, rtol=1e-6)


def test_grayscale_model_gets_one_channel(pil, rng, tmp_path):
    pixels = _image(pil, tmp_path, "a.png", rng.integers(0, 256, (8, 8)))
    spec = InputSpec("x", F32, ("n", 1, 8, 8))
    (batch,) = open_data(tmp_path, [spec], preprocess="raw")
    np.testing.assert_array_equal(batch["x"][0, 0], pixels)


def test_center_crop_follows_torchvision(pil, rng, tmp_path):
    pixels = _image(pil, tmp_path, "a.png", rng.integers(0, 256, (11, 14, 3)))
    prep = ImagePreprocess(crop=(8, 8), resize=(11, 14))
    (batch,) = open_data(tmp_path, [IMAGE], preprocess=prep)
    top, left = round((11 - 8) / 2), round((14 - 8) / 2)  # torchvision CenterCrop offsets
    want = pixels[top : top + 8, left : left + 8].transpose(2, 0, 1)
    np.testing.assert_array_equal(batch["x"][0], want)


@pytest.mark.parametrize(
    ("preset", "formula"),
    [
        ("imagenet", lambda v, c: (v / 255 - (0.485, 0.456, 0.406)[c]) / (0.229, 0.224, 0.225)[c]),
        ("efficientnet-lite", lambda v, c: (v - 127) / 128),
        ("unit", lambda v, c: v / 255),
        ("raw", lambda v, c: float(v)),
    ],
    ids=lambda p: p if isinstance(p, str) else "",
)
def test_presets_normalise_as_stated(pil, tmp_path, preset, formula):
    # a flat colour survives any resize and crop unchanged, so only the arithmetic is tested
    colour = (10, 128, 250)
    _image(pil, tmp_path, "a.png", np.broadcast_to(np.array(colour), (20, 30, 3)))
    (batch,) = open_data(tmp_path, [IMAGE], preprocess=preset)
    for c in range(3):
        np.testing.assert_allclose(batch["x"][0, c], formula(colour[c], c), rtol=1e-5)


def test_resize_keeps_the_aspect_ratio_then_crops(pil, rng, tmp_path):
    _image(pil, tmp_path, "a.png", rng.integers(0, 256, (20, 40, 3)))
    prep = replace(PRESETS["unit"], resize=10, crop=(8, 8))
    assert prep.resolve(IMAGE).resize == 10
    (batch,) = open_data(tmp_path, [IMAGE], preprocess=prep)
    assert batch["x"].shape == (1, 3, 8, 8)


def test_imagenet_resize_ratio():
    # 224 / 0.875 = 256: torchvision's Resize(256) + CenterCrop(224)
    spec = InputSpec("x", F32, ("n", 3, 224, 224))
    assert PRESETS["imagenet"].resolve(spec).resize == 256


def test_image_folder_needs_a_preprocessing(pil, rng, tmp_path):
    _image(pil, tmp_path, "a.png", rng.integers(0, 256, (8, 8, 3)))
    with pytest.raises(DataError, match="a folder of images needs a preprocessing"):
        open_data(tmp_path, [IMAGE])
    with pytest.raises(DataError, match="unknown preprocessing 'vgg'"):
        open_data(tmp_path, [IMAGE], preprocess="vgg")


def test_image_folder_for_a_model_without_image_input(pil, rng, tmp_path):
    _image(pil, tmp_path, "a.png", rng.integers(0, 256, (8, 8, 3)))
    with pytest.raises(DataError, match="needs a rank-4 image input"):
        open_data(tmp_path, [InputSpec("x", F32, ("n", 64))], preprocess="unit")
    with pytest.raises(DataError, match="dynamic height/width: give a crop size"):
        open_data(tmp_path, [InputSpec("x", F32, ("n", 3, "h", "w"))], preprocess="unit")


def test_broken_image_is_named(pil, tmp_path):
    tmp_path.joinpath("bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"bad\.jpg: cannot preprocess"):
        list(open_data(tmp_path, [IMAGE], preprocess="unit"))


def test_crop_larger_than_image(pil, rng, tmp_path):
    _image(pil, tmp_path, "a.png", rng.integers(0, 256, (8, 8, 3)))
    prep = ImagePreprocess(resize=(6, 6), crop=(8, 8))
    with pytest.raises(DataError, match="crop 8x8 is larger than the resized image 6x6"):
        list(open_data(tmp_path, [IMAGE], preprocess=prep))


# -- loader scripts and iterables -----------------------------------------------------------------

LOADER = """
import numpy as np

def load_data():
    rng = np.random.default_rng(7)
    for _ in range(3):
        yield {"a": rng.normal(size=(2, 4)).astype(np.float32), "ids": np.zeros((2, 4), np.int64)}

def single():
    return [{"a": np.ones(4, np.float32), "ids": np.zeros(4, np.int64)}]

def not_dicts():
    return [np.ones(4)]
"""


def _expected_loader_batches():
    rng = np.random.default_rng(7)
    return [rng.normal(size=(2, 4)).astype(np.float32) for _ in range(3)]


def test_loader_script_batches_pass_through(tmp_path):
    (tmp_path / "loader.py").write_text(LOADER)
    source = open_data(str(tmp_path / "loader.py"), TWO)
    assert source.description.endswith("loader.py:load_data")
    batches = list(source)
    assert len(batches) == 3
    for batch, want in zip(batches, _expected_loader_batches(), strict=True):
        np.testing.assert_array_equal(batch["a"], want)
    assert len(list(source)) == 3  # the function is called again on each pass


def test_loader_script_rebatched(tmp_path):
    (tmp_path / "loader.py").write_text(LOADER)
    batches = list(open_data(f"{tmp_path / 'loader.py'}", TWO, batch_size=4, max_samples=5))
    assert [len(b["a"]) for b in batches] == [4, 1]
    np.testing.assert_array_equal(
        _concat(batches, "a"), np.concatenate(_expected_loader_batches())[:5]
    )


def test_loader_script_named_function_with_single_samples(tmp_path):
    (tmp_path / "loader.py").write_text(LOADER)
    (batch,) = open_data(f"{tmp_path / 'loader.py'}:single", TWO)
    assert batch["a"].shape == (1, 4)


@pytest.mark.parametrize(
    ("suffix", "match"),
    [(":nothing", "no function 'nothing'"), (":not_dicts", "item 0 is a ndarray, expected a dict")],
    ids=["missing-function", "not-dicts"],
)
def test_loader_script_errors(tmp_path, suffix, match):
    (tmp_path / "loader.py").write_text(LOADER)
    with pytest.raises(DataError, match=match):
        list(open_data(f"{tmp_path / 'loader.py'}{suffix}", TWO))


def test_loader_script_that_fails_on_import(tmp_path):
    (tmp_path / "bad.py").write_text("raise ImportError('no torch here')\n")
    with pytest.raises(DataError, match="failed on import: ImportError: no torch here"):
        open_data(str(tmp_path / "bad.py"), TWO)


def test_loader_script_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data-loader script .* not found"):
        open_data(str(tmp_path / "none.py"), TWO)


def test_loaders_cannot_be_shuffled(tmp_path):
    with pytest.raises(DataError, match="shuffle works on files and arrays"):
        open_data([], TWO, shuffle=True)


def test_iterable_of_dicts(rng):
    batches = [{"x": _samples(rng, 2)} for _ in range(3)]
    np.testing.assert_array_equal(_concat(open_data(batches, [IMAGE])), _concat(batches))


def test_a_dict_is_not_an_iterable_of_batches(rng):
    with pytest.raises(DataError, match=r"expected an iterable of \{input name: array\} dicts"):
        list(open_data({"x": _samples(rng, 2)}, [IMAGE]))


@settings(max_examples=50, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=8),
    batch_size=st.integers(1, 6),
    max_samples=st.one_of(st.none(), st.integers(1, 40)),
)
def test_rebatching_keeps_every_sample_in_order(sizes, batch_size, max_samples):
    spec = InputSpec("v", F32, ("n",))
    total = sum(sizes)
    values = np.arange(total, dtype=np.float32)
    chunks = np.split(values, np.cumsum(sizes)[:-1])
    source = open_data(
        [{"v": c} for c in chunks], [spec], batch_size=batch_size, max_samples=max_samples
    )
    got = [b["v"] for b in source]
    n = total if max_samples is None else min(total, max_samples)
    np.testing.assert_array_equal(np.concatenate(got), values[:n])
    assert all(len(b) == batch_size for b in got[:-1])
    assert 1 <= len(got[-1]) <= batch_size
