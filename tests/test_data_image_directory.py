"""Tests of `load_images` on a directory of PNG and JPEG images written by the test."""

import hashlib
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_sdn.data import directory_split
from keras_sdn.data import load_images

IMAGE_SIZE = 12


def _write(path, array, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """40 images of assorted formats, sizes and layouts; returns (root, expected 8-bit images)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    expected = {}
    for index in range(40):
        height, width = [(12, 20), (30, 18), (24, 24), (12, 12)][index % 4]
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        kind = index % 5
        if kind == 0:
            path = _write(root / f"a/{index:02d}.png", rgb)
        elif kind == 1:  # JPEG, upper-case extension, in a nested folder
            path = _write(root / f"a/b/{index:02d}.JPG", rgb, format="JPEG", quality=90)
            rgb = tf.io.decode_jpeg(path.read_bytes()).numpy()  # lossy: the decoded pixels
        elif kind == 2:
            path = _write(root / f"{index:02d}.jpeg", rgb, format="JPEG")
            rgb = tf.io.decode_jpeg(path.read_bytes()).numpy()
        elif kind == 3:  # grayscale: repeated over the colour channels
            path = _write(root / f"gray/{index:02d}.png", rgb[..., 0])
            rgb = np.repeat(rgb[..., :1], 3, axis=-1)
        else:  # RGBA: the alpha channel is dropped
            alpha = rng.integers(0, 256, (height, width, 1), dtype=np.uint8)
            path = _write(root / f"{index:02d}.png", np.concatenate([rgb, alpha], -1))
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = rgb[top : top + side, left : left + side].astype(np.float32)
        if side != IMAGE_SIZE:
            square = tf.image.resize(square, (IMAGE_SIZE, IMAGE_SIZE), antialias=True).numpy()
        expected[str(path)] = np.clip(np.round(square), 0, 255).astype(np.uint8)
    (root / "notes.txt").write_text("not an image")
    return root, expected


def _all_images(dataset):
    return np.concatenate([batch.numpy() for batch in dataset])


def _reference_split(root, test_fraction):
    """The documented rule: SHA-256 of the relative path, as a fraction of 2**64."""
    test = set()
    for path in root.rglob("*"):
        if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
            relative = path.relative_to(root).as_posix()
            digest = hashlib.sha256(relative.encode()).digest()
            if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction:
                test.add(str(path))
    return test


@pytest.mark.parametrize("split", ["train", "test"])
def test_images_are_center_cropped_resized_and_quantized(folder, split):
    root, expected = folder
    paths = directory_split(root, split, test_fraction=0.3)
    images = load_images(
        str(root), split, batch_size=8, num_bits=5, image_size=IMAGE_SIZE, shuffle=False,
        test_fraction=0.3,
    )  # fmt: skip
    assert images.element_spec.shape.as_list() == [None, IMAGE_SIZE, IMAGE_SIZE, 3]
    loaded = _all_images(images)
    assert loaded.dtype == np.uint8 and loaded.shape == (len(paths), IMAGE_SIZE, IMAGE_SIZE, 3)
    assert loaded.max() == 31 and loaded.min() == 0
    np.testing.assert_array_equal(loaded, np.stack([expected[p] for p in paths]) >> 3)


def test_split_is_deterministic_disjoint_and_covers_every_image(folder):
    root, expected = folder
    for fraction in (0.1, 0.3, 0.7):
        train = directory_split(root, "train", fraction)
        test = directory_split(pathlib.Path(root), "test", fraction)
        assert train == sorted(train, key=lambda p: pathlib.Path(p).relative_to(root).as_posix())
        assert not set(train) & set(test)
        assert set(train) | set(test) == set(expected)
        assert set(test) == _reference_split(root, fraction)
        assert directory_split(root, "train", fraction) == train
    assert len(directory_split(root, "test")) == len(_reference_split(root, 0.1)) > 0
    # 40 images: about 12 +- 2.9 in a 0.3 test split (a fixed draw of the hash).
    assert 6 <= len(directory_split(root, "test", 0.3)) <= 18


def test_adding_images_keeps_every_image_in_its_split(folder, tmp_path):
    root, expected = folder
    for path in sorted(expected)[:10]:
        copy = tmp_path / pathlib.Path(path).relative_to(root)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(pathlib.Path(path).read_bytes())
    before = directory_split(tmp_path, "train", 0.5)
    _write(tmp_path / "new" / "extra.png", np.zeros((8, 8, 3), np.uint8))
    after = directory_split(tmp_path, "train", 0.5)
    assert set(before) <= set(after) and len(after) - len(before) <= 1


def test_shuffling_flips_and_subsets(folder):
    root, _ = folder
    common = dict(batch_size=5, image_size=IMAGE_SIZE)
    ordered = _all_images(load_images(root, shuffle=False, **common))
    shuffled = _all_images(load_images(root, seed=4, **common))
    assert not np.array_equal(shuffled, ordered)
    assert sorted(map(bytes, shuffled)) == sorted(map(bytes, ordered))
    np.testing.assert_array_equal(shuffled, _all_images(load_images(root, seed=4, **common)))
    flipped = _all_images(load_images(root, shuffle=False, random_flip=True, **common))
    mirrored = np.all(flipped == ordered[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(mirrored | np.all(flipped == ordered, axis=(1, 2, 3))) and mirrored.any()
    first = _all_images(load_images(root, shuffle=False, num_examples=7, **common))
    np.testing.assert_array_equal(first, ordered[:7])
    every = _all_images(load_images(root, shuffle=False, num_examples=1000, **common))
    np.testing.assert_array_equal(every, ordered)


def test_unreadable_files_are_skipped_with_a_warning(folder, tmp_path):
    root, expected = folder
    for path in sorted(expected)[:6]:
        (tmp_path / pathlib.Path(path).name).write_bytes(pathlib.Path(path).read_bytes())
    (tmp_path / "broken.png").write_text("not a PNG")
    with pytest.warns(UserWarning, match="broken.png"):
        paths = directory_split(tmp_path, "train", 0.01) + directory_split(tmp_path, "test", 0.99)
    assert len(paths) == 6 + 6 and not any(p.endswith("broken.png") for p in paths)


def test_errors_name_the_argument(folder, tmp_path):
    root, _ = folder
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("text")
    cases = [
        (dict(name=str(tmp_path / "missing")), "name="),
        (dict(name=str(tmp_path / "empty")), "holds none"),
    ]
    (tmp_path / "unreadable").mkdir()
    (tmp_path / "unreadable" / "a.jpg").write_text("not a JPEG")
    (tmp_path / "unreadable" / "b.txt").write_text("text")
    cases.append((dict(name=str(tmp_path / "unreadable")), "readable"))
    single = tmp_path / "single"
    _write(single / "only.png", np.zeros((8, 8, 3), np.uint8))
    empty_split = "train" if directory_split(single, "test", 0.5) else "test"
    cases += [
        (dict(name=str(single), split=empty_split, test_fraction=0.5), "test_fraction"),
        (dict(name=root, image_size=None), "image_size"),
        (dict(name=root, test_fraction=0.0), "test_fraction"),
        (dict(name=root, test_fraction=1.0), "test_fraction"),
        (dict(name=root, test_fraction="0.2"), "test_fraction"),
        (dict(name="synthetic_shapes", test_fraction=0.2), "test_fraction"),
        (dict(name=root, num_examples=0), "num_examples"),
        (dict(name=root, split="test", random_flip=True), "random_flip"),
    ]
    for arguments, match in cases:
        arguments.setdefault("image_size", IMAGE_SIZE)
        with pytest.raises(ValueError, match=match):
            load_images(**arguments)
