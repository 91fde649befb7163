"""Classification data: scikit-learn's bundled digits, an ImageFolder, or CIFAR-10/100 from a folder.

Every data set yields PIL images, so one transform pipeline (:func:`classification_transforms`,
built from timm's ``create_transform``) serves them all, and the training split gets the
recipe's training transform while the validation split gets its evaluation transform.

* ``digits``: scikit-learn's 8×8 grey digits (embedded, offline), upsampled once at load
  time to the study's ``image_size`` (bilinear, as before) and held in memory as 8-bit
  images; each is served as a grey RGB image, so the papers' three-channel stems apply.
* ``imagefolder``: one sub-folder per class, under ``train/`` and ``val/``, under
  ``train/`` alone, or at the root (the last two hold a seeded ``val_fraction`` out).
  Checked structurally first by :func:`~ablate.data.folders.check_classification_data`, the
  check ``ablate validate`` runs too; an image that cannot be decoded fails the trial with
  its path (:class:`~ablate.data.folders.ImageFiles`).
* ``cifar10`` / ``cifar100``: torchvision's python version of CIFAR read from a local
  folder (the official train / test splits); never downloaded.

The train/validation split is fixed: it is seeded independently of the training seed, so
every trial of every study (and every repeat) sees the same split and their accuracies are
comparable. Data order and augmentation follow the training seed (see
:func:`ablate.train.train_classifier`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from ablate.data.folders import (
    CIFAR,
    DATASETS,
    ClassificationDataInfo,
    ImageFiles,
    check_classification_data,
)
from ablate.errors import ConfigError, DataError

__all__ = [
    "DATASETS",
    "TRANSFORM_RECIPES",
    "ClassificationData",
    "ClassificationDataInfo",
    "check_classification_data",
    "LabelledImages",
    "classification_transforms",
    "load_classification",
    "loader_workers",
    "num_classes_of",
]

#: Recipes whose image pipelines differ (:func:`classification_transforms`).
TRANSFORM_RECIPES = ("proxy", "deit")
_SPLIT_SEED = 0
#: Images at most this side train with DeiT's and Swin's small-image pipeline (see
#: :func:`classification_transforms`): both codes test ``input_size > 32``.
_SMALL_IMAGE = 32
#: DeiT ``--eval-crop-ratio`` / Swin ``TEST.CROP`` (224 / 256).
_EVAL_CROP_PCT = 0.875
#: DeiT ``--color-jitter`` (timm turns it off while RandAugment is on, as in DeiT's runs).
_COLOR_JITTER = 0.3


@dataclass(frozen=True)
class ClassificationData:
    """A train/validation pair with what a model builder and a loader need to know about it.

    Attributes:
        train: ``(image tensor, label)`` pairs through the recipe's training transform.
        val: ``(image tensor, label)`` pairs through its evaluation transform.
        num_classes: Number of classes (labels are ``0 .. num_classes - 1``).
        in_chans: Channels of every image tensor (3).
        image_size: Side of the square image tensors.
        name: The data set's name (:data:`DATASETS`).
        in_memory: True when the images are held decoded in memory (digits, CIFAR): there
            is no file to read or decode, so loader workers only pay off for augmentation.
    """

    train: Dataset
    val: Dataset
    num_classes: int
    in_chans: int
    image_size: int
    name: str
    in_memory: bool = False


class LabelledImages(Dataset):
    """``(transform(image), label)`` for chosen indices of a source of ``(PIL image, label)`` pairs.

    The two halves of a split share one source (its images are read or held once) and each
    applies its own transform: the training half augments, the validation half does not.

    Attributes:
        source: The data set of ``(PIL image, label)`` pairs.
        indices: The positions in ``source`` this half serves (None: all of them).
        transform: Applied to each image (None: the PIL image itself).
    """

    def __init__(self, source: Dataset, indices: Sequence[int] | None = None,
                 transform: Callable[[Any], Any] | None = None) -> None:
        self.source = source
        self.indices = None if indices is None else [int(i) for i in indices]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.source)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image, label = self.source[self.indices[i] if self.indices is not None else i]
        return (self.transform(image) if self.transform is not None else image), int(label)


class _GreyImages(Dataset):
    """8-bit grey images ``(N, S, S)`` held in memory, served as grey RGB PIL images."""

    def __init__(self, images: Any, labels: Any) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        return Image.fromarray(self.images[i]).convert("RGB"), int(self.labels[i])  # uint8 (S, S) -> L -> RGB


# --------------------------------------------------------------------------- transforms


def classification_transforms(image_size: int, *, recipe: str = "proxy", randaugment: str = "",
                              random_erasing: float = 0.0) -> tuple[Callable[[Any], torch.Tensor],
                                                                     Callable[[Any], torch.Tensor]]:
    """The training and evaluation transforms (PIL image -> normalised tensor) of a recipe.

    Both normalise with ImageNet's mean and std, as DeiT's and Swin's codes do for every
    data set, CIFAR included.

    ``deit`` follows DeiT's ``datasets.build_transform`` (which Swin's ``data/build.py``
    copies) through timm's ``create_transform``: for training a random-resized crop (scale
    0.08-1, bicubic) and a horizontal flip, then ``randaugment`` and ``random_erasing``
    (pixel mode, one box); for evaluation a resize to ``image_size / 0.875`` and a centre
    crop. At ``image_size`` <= 32 both codes switch to their small-image pipeline, and so
    does this one: a random crop with 4 px padding replaces the random-resized crop, and
    evaluation takes the image as it is (ablate first resizes and centre-crops it to
    ``image_size``, a no-op on 32 px CIFAR).

    ``proxy`` keeps ablate's laptop pipeline: no random geometry, and a resize and centre
    crop to ``image_size`` (bilinear) for both splits. A ``randaugment`` or
    ``random_erasing`` set explicitly still applies to its training images.

    Args:
        image_size: Side of the square output.
        recipe: ``proxy`` or ``deit`` (:data:`TRANSFORM_RECIPES`).
        randaugment: timm's RandAugment string (``rand-m9-mstd0.5-inc1``), empty for none.
        random_erasing: Probability of erasing a random box of each training image.

    Returns:
        ``(train_transform, eval_transform)``; the same object twice when training does
        not augment.

    Raises:
        ConfigError: an unknown recipe or a RandAugment string timm cannot read.
    """
    from timm.data import create_transform
    from torchvision import transforms

    if recipe not in TRANSFORM_RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}, allowed: {', '.join(TRANSFORM_RECIPES)}")
    small = image_size <= _SMALL_IMAGE
    paper = recipe == "deit"
    eval_tf = create_transform(image_size, is_training=False, interpolation="bicubic" if paper else "bilinear",
                               crop_pct=_EVAL_CROP_PCT if paper and not small else 1.0)
    if not (paper or randaugment or random_erasing > 0):
        return eval_tf, eval_tf
    try:
        primary, secondary, final = create_transform(
            image_size, is_training=True, auto_augment=randaugment or None, interpolation="bicubic",
            color_jitter=_COLOR_JITTER if paper else None, re_prob=random_erasing, re_mode="pixel", re_count=1,
            separate=True)
    except (AssertionError, KeyError, ValueError, IndexError) as err:
        raise ConfigError(f"randaugment {randaugment!r} is not a timm RandAugment string such as "
                          f"'rand-m9-mstd0.5-inc1' ({err})") from None
    if not paper:  # the proxy's fixed geometry, then the augmentations asked for
        primary = transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size)])
    elif small:  # DeiT / Swin: `if not resize_im: transform.transforms[0] = RandomCrop(size, padding=4)`
        primary = transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size),
                                      transforms.RandomCrop(image_size, padding=4),
                                      transforms.RandomHorizontalFlip()])
    for op in secondary.transforms:
        _posterize_to_black(op)
    return transforms.Compose([*primary.transforms, *secondary.transforms, *final.transforms]), eval_tf


def _posterize_to_black(transform: Any) -> None:
    """Give posterize to 0 bits its old meaning (an all-black image) inside a timm RandAugment.

    RandAugment's ``inc1`` ops posterize to ``4 - int(level * 0.4)`` bits, so 0 bits at
    magnitude 10, which ``mstd0.5`` around 9 draws for about one op in 40. Pillow 13 (this
    lock) rejects ``ImageOps.posterize(img, 0)`` with a ValueError that would end the trial;
    the Pillow that DeiT and Swin trained with zeroed every bit. The op's function is
    wrapped to do that, and left as timm has it for 1-8 bits.
    """
    for op in getattr(transform, "ops", ()):
        if getattr(op, "name", "").startswith("Posterize") and callable(getattr(op, "aug_fn", None)):
            op.aug_fn = _ZeroBitsPosterize(op.aug_fn)


class _ZeroBitsPosterize:
    """``fn(img, bits)``, but an all-black image of the same mode and size for ``bits`` <= 0."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, img: Any, bits: int, **kwargs: Any) -> Any:
        if bits <= 0:
            from PIL import Image

            return Image.new(img.mode, img.size)  # every channel 0, as the LUT of a 0-bit mask gives
        return self.fn(img, bits, **kwargs)


# --------------------------------------------------------------------------- loading


def num_classes_of(name: str, path: str | None = None) -> int:
    """Number of classes without loading any image (for building and validating archs).

    Raises:
        DataError: an unknown name, or a folder that is missing or holds no such data set
            (:func:`check_classification_data`).
    """
    return check_classification_data(name, path).num_classes


def load_classification(name: str, *, path: str | None = None, image_size: int = 32, val_fraction: float = 0.2,
                        train_transform: Callable[[Any], Any] | None = None,
                        eval_transform: Callable[[Any], Any] | None = None) -> ClassificationData:
    """Load a classification data set by name, each split through its transform.

    Args:
        name: One of :data:`DATASETS`.
        path: The folder of ``imagefolder`` / ``cifar10`` / ``cifar100`` (unused for digits).
        image_size: Side of the images (digits are upsampled to it once, at load time).
        val_fraction: Share held out for validation where the data set has no split of its
            own (digits, a flat ImageFolder); CIFAR uses its official test split.
        train_transform: PIL image -> tensor for the training split (default: the eval one).
        eval_transform: PIL image -> tensor for the validation split (default: the proxy
            recipe's, :func:`classification_transforms`).

    Raises:
        DataError: an unknown name, or a folder that is missing or holds no such data set
            (:func:`check_classification_data`, the check ``ablate validate`` runs too).
    """
    info = check_classification_data(name, path)
    if eval_transform is None:
        eval_transform = classification_transforms(image_size)[1]
    if train_transform is None:
        train_transform = eval_transform
    tfs = (train_transform, eval_transform)
    if name == "digits":
        return _load_digits(image_size, val_fraction, tfs)
    if name == "imagefolder":
        return _load_imagefolder(info, image_size, val_fraction, tfs)
    return _load_cifar(info, image_size, tfs)


_Transforms = tuple[Callable[[Any], Any], Callable[[Any], Any]]


def _load_digits(image_size: int, val_fraction: float, tfs: _Transforms) -> ClassificationData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8) in [0, 1]
    images = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear",
                                             align_corners=False)  # (N, 1, S, S)
    pixels = (images.squeeze(1) * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()  # (N, S, S), 8-bit grey
    labels = digits.target
    idx_train, idx_val = train_test_split(range(len(labels)), test_size=val_fraction, random_state=_SPLIT_SEED,
                                          stratify=labels)
    source = _GreyImages(pixels, labels)
    return ClassificationData(train=LabelledImages(source, idx_train, tfs[0]),
                              val=LabelledImages(source, idx_val, tfs[1]),
                              num_classes=10, in_chans=3, image_size=image_size, name="digits", in_memory=True)


def _load_imagefolder(info: ClassificationDataInfo, image_size: int, val_fraction: float,
                      tfs: _Transforms) -> ClassificationData:
    root = info.train_root if info.train_root is not None else info.root  # set for every ImageFolder
    if info.val_root is not None:
        train: Dataset = ImageFiles(root, info.classes, tfs[0])
        val: Dataset = ImageFiles(info.val_root, info.classes, tfs[1])
    else:
        full = ImageFiles(root, info.classes)  # PIL images; each half applies its own transform
        order = torch.randperm(len(full), generator=torch.Generator().manual_seed(_SPLIT_SEED)).tolist()
        n_val = min(len(full) - 1, max(1, int(round(len(full) * val_fraction))))  # >= 1 image on each side
        train, val = LabelledImages(full, order[n_val:], tfs[0]), LabelledImages(full, order[:n_val], tfs[1])
    return ClassificationData(train=train, val=val, num_classes=info.num_classes, in_chans=3,
                              image_size=image_size, name="imagefolder", in_memory=False)


def _load_cifar(info: ClassificationDataInfo, image_size: int, tfs: _Transforms) -> ClassificationData:
    from torchvision import datasets

    name, base = info.name, info.train_root if info.train_root is not None else info.root
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    folder = base / CIFAR[name][0]
    try:
        train = cls(str(base), train=True, transform=tfs[0], download=False)
        val = cls(str(base), train=False, transform=tfs[1], download=False)
    except (RuntimeError, OSError, EOFError, ValueError, KeyError) as err:  # torchvision checks every file's MD5
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataError(f"{str(folder)!r} does not hold torchvision's {name} files intact ({reason}); "
                        "ablate never downloads it") from None
    return ClassificationData(train=train, val=val, num_classes=info.num_classes, in_chans=3,
                              image_size=image_size, name=name, in_memory=True)


# --------------------------------------------------------------------------- loading workers


def loader_workers(num_workers: int | None, *, device: str, cpus: float, in_memory: bool,
                   augmented: bool) -> int:
    """DataLoader worker processes for one trial.

    An explicit ``num_workers`` wins. Otherwise workers are used only where they pay: on a
    CUDA device, when each image costs real CPU work (files to decode, or random
    augmentation), with one of the trial's CPUs left to the training process, the rest
    preparing batches ahead of the GPU. On the CPU the model's own arithmetic needs the
    trial's cores, and workers would compete with it for them; an in-memory set without
    augmentation (digits or CIFAR under ``proxy``) costs microseconds per image, less than
    handing a batch between processes. Both keep 0 (load in the training process).

    Args:
        num_workers: ``data.num_workers`` when the study sets it, else None.
        device: The trial's torch device (``cpu``, ``cuda``, ``cuda:1``).
        cpus: The trial's CPU share (``resources.cpu``).
        in_memory: The images are held decoded in memory (:attr:`ClassificationData.in_memory`).
        augmented: The training transform is random (the recipe augments).
    """
    if num_workers is not None:
        return max(0, int(num_workers))
    if not str(device).startswith("cuda") or (in_memory and not augmented):
        return 0
    return max(1, math.floor(cpus) - 1)
