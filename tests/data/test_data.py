"""Classification data: the embedded digits split and ImageFolder paths (flat and train/val).

ImageFolder trees are generated here (3 classes × 4 PNGs of 12×12 px), so nothing is read
from outside the test's temporary folder.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from ablate.data import (
    ClassificationData,
    classification_transforms,
    load_classification,
    loader_workers,
    num_classes_of,
)
from ablate.errors import DataError

CLASSES = ("cat", "dog", "fox")
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


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
    assert isinstance(label, int)
    # Each digit is served as a grey RGB PIL image, upsampled once at load time ...
    picture, _ = data.val.source[data.val.indices[0]]
    assert picture.mode == "RGB" and picture.size == (size, size)
    # ... and normalised with ImageNet's statistics, as every data set is: undone, the three
    # channels are equal and lie in [0, 1].
    images = torch.stack([data.val[i][0] for i in range(50)])  # 50, 3, S, S
    pixels = images * IMAGENET_STD + IMAGENET_MEAN
    assert torch.isfinite(images).all() and pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    torch.testing.assert_close(pixels[:, 0], pixels[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(pixels[:, 0], pixels[:, 2], atol=1e-5, rtol=0)


def test_digits_keep_the_bilinear_upsampling_of_the_8px_originals():
    """The images the proxy always trained on (bilinear from 8 px), now held as 8-bit grey."""
    from sklearn.datasets import load_digits

    data = load_classification("digits", image_size=16)
    originals = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16.0  # 1797, 1, 8, 8
    upsampled = torch.nn.functional.interpolate(originals, size=(16, 16), mode="bilinear", align_corners=False)
    for i in data.train.indices[:20]:
        picture, _ = data.train.source[i]
        grey = torch.from_numpy(np.asarray(picture)[..., 0].astype(np.float32)) / 255.0  # 16, 16
        torch.testing.assert_close(grey, upsampled[i, 0], atol=0.5 / 255 + 1e-6, rtol=0)  # 8-bit rounding


def test_digits_labels_are_0_to_9_and_split_is_stratified(digits16):
    train, val = Counter(_labels(digits16.train)), Counter(_labels(digits16.val))
    assert sorted(train) == sorted(val) == list(range(10))
    for c in range(10):  # every class keeps its share in both halves (± one image of rounding)
        total = train[c] + val[c]
        assert abs(val[c] - 0.2 * total) <= 1, (c, train[c], val[c])


def test_digits_split_is_deterministic_and_independent_of_image_size(digits16):
    again = load_classification("digits", image_size=16)
    assert again.train.indices == digits16.train.indices and again.val.indices == digits16.val.indices
    assert torch.equal(again.val[3][0], digits16.val[3][0])
    assert not set(digits16.train.indices) & set(digits16.val.indices)
    other = load_classification("digits", image_size=8)
    assert other.val.indices == digits16.val.indices  # same samples, whatever the size
    assert _labels(other.val) == _labels(digits16.val)


def test_each_split_gets_its_own_transform():
    train_tf, eval_tf = classification_transforms(16, recipe="deit")
    data = load_classification("digits", image_size=16, train_transform=train_tf, eval_transform=eval_tf)
    assert data.train.transform is train_tf and data.val.transform is eval_tf and data.in_memory
    assert data.train.source is data.val.source  # the images are held once


def test_digits_val_fraction():
    data = load_classification("digits", image_size=8, val_fraction=0.5)
    assert len(data.train) + len(data.val) == 1797 and abs(len(data.val) - 1797 / 2) <= 1


def test_num_classes_of_digits_and_unknown():
    assert num_classes_of("digits") == 10
    with pytest.raises(DataError, match="unknown data set 'mnist'.*digits, imagefolder, cifar10, cifar100"):
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


def test_imagefolder_splits_get_their_own_transforms(tmp_path):
    train_tf, eval_tf = classification_transforms(16, recipe="deit")
    _write_pngs(tmp_path)
    flat = load_classification("imagefolder", path=str(tmp_path), image_size=16, train_transform=train_tf,
                               eval_transform=eval_tf)
    assert flat.train.transform is train_tf and flat.val.transform is eval_tf and not flat.in_memory
    _write_pngs(tmp_path / "split" / "train")
    _write_pngs(tmp_path / "split" / "val")
    split = load_classification("imagefolder", path=str(tmp_path / "split"), image_size=16,
                                train_transform=train_tf, eval_transform=eval_tf)
    assert split.train.transform is train_tf and split.val.transform is eval_tf


# --------------------------------------------------------------------------- CIFAR


def _write_cifar(root: Path, name: str, per_split: tuple[int, int] = (10, 4)) -> dict[str, list]:
    """A tiny CIFAR folder in torchvision's pickle format; returns each file's MD5 table for
    torchvision's class (the real files' checksums are what it checks)."""
    import hashlib
    import pickle

    rng = np.random.default_rng(0)
    classes = 10 if name == "cifar10" else 100
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    key = "labels" if name == "cifar10" else "fine_labels"
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else ["train"]
    test_files = ["test_batch"] if name == "cifar10" else ["test"]

    def write(file: str, n: int, offset: int) -> list[str]:
        labels = [(offset + i) % classes for i in range(n)]
        data = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        (folder / file).write_bytes(pickle.dumps({"data": data, key: labels}))
        return [file, hashlib.md5((folder / file).read_bytes()).hexdigest()]

    meta_file, meta_key = ("batches.meta", "label_names") if name == "cifar10" else ("meta", "fine_label_names")
    (folder / meta_file).write_bytes(pickle.dumps({meta_key: [f"c{i}" for i in range(classes)]}))
    return {
        "train_list": [write(f, per_split[0], 3 * i) for i, f in enumerate(train_files)],
        "test_list": [write(f, per_split[1], 7) for f in test_files],
        "meta": {"filename": meta_file, "key": meta_key,
                 "md5": hashlib.md5((folder / meta_file).read_bytes()).hexdigest()},
    }


@pytest.fixture(params=["cifar10", "cifar100"])
def cifar(request, tmp_path, monkeypatch):
    from torchvision import datasets

    name = request.param
    tables = _write_cifar(tmp_path, name)
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    for attr, value in tables.items():  # the fake files' checksums in place of the real ones
        monkeypatch.setattr(cls, attr, value)
    return name, tmp_path


@pytest.mark.parametrize("given", ["parent", "folder itself"])
def test_cifar_loads_from_a_local_folder(cifar, given):
    name, root = cifar
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    path = str(root if given == "parent" else folder)
    classes = 10 if name == "cifar10" else 100
    assert num_classes_of(name, path) == classes
    train_tf, eval_tf = classification_transforms(16, recipe="deit")
    data = load_classification(name, path=path, image_size=16, train_transform=train_tf, eval_transform=eval_tf)
    files = 5 if name == "cifar10" else 1
    assert (len(data.train), len(data.val)) == (10 * files, 4)  # the official train / test splits
    assert (data.num_classes, data.in_chans, data.image_size, data.name, data.in_memory) == (classes, 3, 16, name, True)
    image, label = data.val[1]
    assert image.shape == (3, 16, 16) and label == 8 % classes
    assert data.train.transform is train_tf and data.val.transform is eval_tf


@pytest.mark.parametrize(("name", "folder", "other"), [("cifar10", "cifar-10-batches-py", "cifar-100-python"),
                                                   ("cifar100", "cifar-100-python", "cifar-10-batches-py")])
def test_cifar_folder_without_the_data_names_path_and_expectation(tmp_path, name, folder, other):
    (tmp_path / other).mkdir()  # the other version is no substitute
    with pytest.raises(DataError, match=f"holds no {folder} folder") as info:
        num_classes_of(name, str(tmp_path))
    assert str(tmp_path) in str(info.value) and "never downloads" in str(info.value)
    with pytest.raises(DataError, match=f"holds no {folder} folder"):
        load_classification(name, path=str(tmp_path))
    with pytest.raises(DataError, match=f"data.path is required for {name}"):
        load_classification(name)


def test_cifar_missing_or_corrupted_files(tmp_path):
    _write_cifar(tmp_path, "cifar10")  # checksums not patched: torchvision's real ones
    folder = tmp_path / "cifar-10-batches-py"
    with pytest.raises(DataError, match="does not hold torchvision's cifar10 files intact") as info:
        load_classification("cifar10", path=str(tmp_path))
    assert str(folder) in str(info.value)
    assert num_classes_of("cifar10", str(tmp_path)) == 10  # no image is read (nor checksummed) for the class count
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="lacks test_batch: cifar10 expects torchvision's python version"):
        load_classification("cifar10", path=str(folder))
    with pytest.raises(DataError, match="lacks test_batch"):  # the check validate runs sees it too
        num_classes_of("cifar10", str(tmp_path))


# --------------------------------------------------------------------------- loader workers


@pytest.mark.parametrize(("explicit", "device", "cpus", "in_memory", "augmented", "expected"), [
    (None, "cpu", 8, False, True, 0),       # the CPU's cores train the model
    (None, "cuda", 8, True, False, 0),      # digits / CIFAR under proxy: nothing to prepare
    (None, "cuda", 8, True, True, 7),       # augmentation on the GPU: all but one CPU prepare batches
    (None, "cuda:1", 4, False, False, 3),   # files to decode
    (None, "cuda", 1, False, True, 1),      # at least one worker
    (None, "cuda", 0.5, False, True, 1),
    (2, "cpu", 1, True, False, 2),          # data.num_workers wins
    (0, "cuda", 16, False, True, 0),
])
def test_loader_workers(explicit, device, cpus, in_memory, augmented, expected):
    assert loader_workers(explicit, device=device, cpus=cpus, in_memory=in_memory, augmented=augmented) == expected
