"""Classification data: scikit-learn's bundled digits (embedded, offline) or an ImageFolder.

Digits are 8×8 grey images; we upsample them to the study's ``image_size`` and repeat the
channel three times so that a trial uses the same RGB stems as the papers' models. The
train/validation split is stratified and seeded independently of the training seed, so every
trial of every study sees the same split and their accuracies are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from ablate.errors import DataError

__all__ = ["ClassificationData", "load_classification", "num_classes_of", "DATASETS"]

DATASETS = ("digits", "imagefolder")
_SPLIT_SEED = 0
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class ClassificationData:
    """A train/validation pair with what a model builder needs to know about it."""

    train: Dataset
    val: Dataset
    num_classes: int
    in_chans: int
    image_size: int
    name: str


def num_classes_of(name: str, path: str | None = None) -> int:
    """Number of classes without loading any image (for building and validating archs)."""
    if name == "digits":
        return 10
    if name == "imagefolder":
        return len(_class_dirs(_train_root(_existing(path))))
    raise DataError(f"unknown data set {name!r}, allowed: {', '.join(DATASETS)}")


def load_classification(name: str, *, path: str | None = None, image_size: int = 32,
                        val_fraction: float = 0.2) -> ClassificationData:
    """Load a classification data set by name; ``path`` is required for ``imagefolder``."""
    if name == "digits":
        return _load_digits(image_size, val_fraction)
    if name == "imagefolder":
        return _load_imagefolder(_existing(path), image_size, val_fraction)
    raise DataError(f"unknown data set {name!r}, allowed: {', '.join(DATASETS)}")


def _load_digits(image_size: int, val_fraction: float) -> ClassificationData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8) in [0, 1]
    labels = torch.tensor(digits.target, dtype=torch.long)
    images = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear",
                                             align_corners=False)  # (N, 1, S, S)
    images = ((images - 0.5) / 0.5).repeat(1, 3, 1, 1)  # (N, 3, S, S), zero-centred
    idx_train, idx_val = train_test_split(torch.arange(len(labels)).numpy(), test_size=val_fraction,
                                          random_state=_SPLIT_SEED, stratify=labels.numpy())
    idx_train, idx_val = torch.as_tensor(idx_train), torch.as_tensor(idx_val)
    return ClassificationData(
        train=TensorDataset(images[idx_train], labels[idx_train]),
        val=TensorDataset(images[idx_val], labels[idx_val]),
        num_classes=10, in_chans=3, image_size=image_size, name="digits",
    )


def _existing(path: str | None) -> Path:
    if not path:
        raise DataError("data.path is required for imagefolder")
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"data path {str(root)!r} does not exist or is not a directory")
    return root


def _train_root(root: Path) -> Path:
    """An ImageFolder may hold ``train/`` and ``val/`` splits, or class folders directly."""
    return root / "train" if (root / "train").is_dir() and (root / "val").is_dir() else root


def _class_dirs(root: Path) -> list[Path]:
    classes = sorted(d for d in root.iterdir() if d.is_dir() and any(
        f.suffix.lower() in _IMAGE_SUFFIXES for f in d.rglob("*")))
    if not classes:
        raise DataError(f"data path {str(root)!r} holds no class folders with images "
                        f"({', '.join(sorted(_IMAGE_SUFFIXES))})")
    return classes


def _load_imagefolder(root: Path, image_size: int, val_fraction: float) -> ClassificationData:
    from torchvision import datasets, transforms

    tf = transforms.Compose([
        transforms.Resize(image_size),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    classes = _class_dirs(_train_root(root))
    if _train_root(root) != root:
        train = datasets.ImageFolder(str(root / "train"), transform=tf)
        val = datasets.ImageFolder(str(root / "val"), transform=tf)
    else:
        full = datasets.ImageFolder(str(root), transform=tf)
        order = torch.randperm(len(full), generator=torch.Generator().manual_seed(_SPLIT_SEED)).tolist()
        n_val = max(1, int(round(len(full) * val_fraction)))
        train, val = Subset(full, order[n_val:]), Subset(full, order[:n_val])
    return ClassificationData(train=train, val=val, num_classes=len(classes), in_chans=3,
                              image_size=image_size, name="imagefolder")
