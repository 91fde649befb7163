"""Classification data: the embedded digits split and ImageFolder paths (flat and train/val).

ImageFolder trees are generated here (3 classes × 4 PNGs of 12×12 px), so nothing is read
from outside the test's temporary folder.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from ablate.data import ClassificationData, load_classification, num_classes_of
from ablate.errors import DataError

CLASSES = ("cat", "dog", "fox")


def _labels(dataset) -> list[int]:
    return [int(dataset[i][1]) for i in range(len(dataset))]


# --------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits16() -> ClassificationData:
    return load_classification("digits", image_size=16)


def test_digits_sizes_add_up_and_metadata(digits16):
    assert len(digits16.train) + len(digits16.val) == 1797
    assert len(digits16.val) == pytest.approx(0.2 * 1797, abs=1)
    assert (digits16.num_classes, digits16.in_chans, digits16.image_size, digits16.name) == (10, 3, 16, "digits")


@pytest.mark.parametrize("size", [8, 16, 32])
def test_digits_images_have_the_requested_size(size):
    data = load_classification("digits", image_size=size)
    image, label = data.train[0]
    assert image.shape == (3, size, size) and image.dtype == torch.float32
    assert isinstance(label, torch.Tensor) and label.dtype == torch.long
    images = data.val.tensors[0]
    assert images.shape[1:] == (3, size, size)
    assert torch.isfinite(images).all() and images.min() >= -1.0 - 1e-6 and images.max() <= 1.0 + 1e-6
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])  # grey → RGB


def test_digits_labels_are_0_to_9_and_split_is_stratified(digits16):
    train, val = Counter(_labels(digits16.train)), Counter(_labels(digits16.val))
    assert sorted(train) == sorted(val) == list(range(10))
    for c in range(10):  # every class keeps its share in both halves (± one image of rounding)
        total = train[c] + val[c]
        assert abs(val[c] - 0.2 * total) <= 1, (c, train[c], val[c])


def test_digits_split_is_deterministic_and_independent_of_image_size(digits16):
    again = load_classification("digits", image_size=16)
    for a, b in ((digits16.train, again.train), (digits16.val, again.val)):
        assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    other = load_classification("digits", image_size=8)
    assert torch.equal(other.val.tensors[1], digits16.val.tensors[1])  # same samples, whatever the size


def test_digits_val_fraction():
    data = load_classification("digits", image_size=8, val_fraction=0.5)
    assert len(data.train) + len(data.val) == 1797 and abs(len(data.val) - 1797 / 2) <= 1


def test_num_classes_of_digits_and_unknown():
    assert num_classes_of("digits") == 10
    with pytest.raises(DataError, match="unknown data set 'mnist'.*digits, imagefolder"):
        num_classes_of("mnist")
    with pytest.raises(DataError, match="unknown data set"):
        load_classification("mnist")


# --------------------------------------------------------------------------- ImageFolder


def _write_pngs(root: Path, per_class: int = 4, size: int = 12) -> None:
    from PIL import Image

    for k, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour = (80 * k, 20 * i, 255 - 60 * k)
            Image.new("RGB", (size, size), colour).save(folder / f"{i}.png")


def test_imagefolder_flat_is_split_by_val_fraction(tmp_path):
    _write_pngs(tmp_path)
    assert num_classes_of("imagefolder", str(tmp_path)) == 3
    data = load_classification("imagefolder", path=str(tmp_path), image_size=16, val_fraction=0.25)
    assert (len(data.train), len(data.val)) == (9, 3)
    assert (data.num_classes, data.in_chans, data.image_size, data.name) == (3, 3, 16, "imagefolder")
    image, label = data.train[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    labels = _labels(data.train) + _labels(data.val)
    assert sorted(labels) == sorted([0, 1, 2] * 4)
    # the split is seeded: the same path gives the same partition
    again = load_classification("imagefolder", path=str(tmp_path), image_size=16, val_fraction=0.25)
    assert list(again.val.indices) == list(data.val.indices)
    assert not set(data.train.indices) & set(data.val.indices)


def test_imagefolder_with_train_and_val_subfolders(tmp_path):
    _write_pngs(tmp_path / "train", per_class=4)
    _write_pngs(tmp_path / "val", per_class=2)
    assert num_classes_of("imagefolder", str(tmp_path)) == 3
    data = load_classification("imagefolder", path=str(tmp_path), image_size=8)
    assert (len(data.train), len(data.val)) == (12, 6)
    assert data.num_classes == 3
    assert data.train.classes == data.val.classes == list(CLASSES)
    assert data.val[0][0].shape == (3, 8, 8)
    assert sorted(_labels(data.val)) == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("path", [None, ""])
def test_imagefolder_without_path(path):
    with pytest.raises(DataError, match="data.path is required for imagefolder"):
        load_classification("imagefolder", path=path)


def test_imagefolder_missing_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist or is not a directory") as info:
        load_classification("imagefolder", path=str(missing))
    assert str(missing) in str(info.value)
    with pytest.raises(FileNotFoundError):  # DataError is also the builtin
        num_classes_of("imagefolder", str(missing))


def test_imagefolder_empty_folder(tmp_path):
    with pytest.raises(DataError, match="holds no class folders with images") as info:
        load_classification("imagefolder", path=str(tmp_path))
    assert str(tmp_path) in str(info.value) and ".png" in str(info.value)


def test_imagefolder_folders_without_images(tmp_path):
    for name in CLASSES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "notes.txt").write_text("not an image")
    (tmp_path / "stray.png").write_bytes(b"")  # an image outside any class folder does not count
    with pytest.raises(DataError, match="holds no class folders with images"):
        num_classes_of("imagefolder", str(tmp_path))
    with pytest.raises(DataError, match="holds no class folders with images"):
        load_classification("imagefolder", path=str(tmp_path))
