"""Classification data folders: a cheap structural check before anything trains, and a safe read while training.

:func:`check_classification_data` is what ``ablate validate`` (``study.check_study``) and
:func:`ablate.data.load_classification` both call, so the two can never disagree about a
folder. It is bounded for huge folders: one ``os.scandir`` of the root (the class list),
then per class folder the first file with an image suffix (the listing is abandoned there);
no image is opened. What it cannot see cheaply (a corrupt image, a folder that becomes
unreadable deeper down) is found while training and fails that trial with the file's name
(:class:`ImageFiles`, :func:`read_image`).

Layouts of an ``imagefolder`` (stated in every message, and in :attr:`ClassificationDataInfo.layout`):

* ``train/`` and ``val/``: both hold the same class folders;
* ``train/`` alone: its class folders; ``data.val_fraction`` of its images is held out;
* class folders at the root: ``data.val_fraction`` is held out.

Names starting with ``.`` are skipped everywhere (``.ipynb_checkpoints``, macOS's ``._x.jpg``
resource forks, which no decoder reads); ultralytics' ``glob`` skips them too. Symbolic links
are followed, each real folder once, so a link back to a parent is never followed forever.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ablate.errors import DataError

__all__ = ["DATASETS", "IMG_EXTENSIONS", "ClassificationDataInfo", "ImageFiles", "check_classification_data",
           "iter_files", "read_image"]

DATASETS = ("digits", "imagefolder", "cifar10", "cifar100")
#: The suffixes torchvision's ImageFolder accepts (``torchvision.datasets.folder.IMG_EXTENSIONS``).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: torchvision's folder, class count, and file names of each CIFAR version (python format).
CIFAR = {
    "cifar10": ("cifar-10-batches-py", 10, (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")),
    "cifar100": ("cifar-100-python", 100, ("train", "test", "meta")),
}
#: Class folders named in one message at most.
_NAMED = 5
LAYOUT_SPLIT = "train/ and val/"
LAYOUT_TRAIN = "train/ without val/: data.val_fraction of it held out"
LAYOUT_FLAT = "class folders at the root: data.val_fraction held out"


@dataclass(frozen=True)
class ClassificationDataInfo:
    """What a checked classification data set holds, without a single image opened.

    Attributes:
        name: The data set's name (:data:`DATASETS`).
        root: The folder given (None for digits).
        layout: How the folder is read (for an ImageFolder one of the three layouts above).
        num_classes: Number of classes.
        classes: Class folder names in label order (ImageFolder; empty otherwise).
        train_root: The folder whose class folders train (ImageFolder), or CIFAR's base folder.
        val_root: ImageFolder's ``val/`` (None: validation is held out of ``train_root``).
    """

    name: str
    root: Path | None
    layout: str
    num_classes: int
    classes: tuple[str, ...] = ()
    train_root: Path | None = None
    val_root: Path | None = None


def check_classification_data(name: str, path: str | os.PathLike[str] | None = None) -> ClassificationDataInfo:
    """Check a classification data set's folder structurally, cheaply, and say how it is read.

    Checked: the folder exists and can be listed; its layout is one the data set's name
    reads; an ImageFolder has at least 2 class folders, each with at least one file of an
    image suffix torchvision accepts, and ``val/`` (if any) has the classes of ``train/``;
    a CIFAR folder holds torchvision's files, non-empty and readable. Cost: one listing of
    the root (and of ``train/``, ``val/``), then per class folder up to its first image.

    Raises:
        DataError: one line naming the folder, its layout, and what is allowed.
    """
    if name == "digits":
        return ClassificationDataInfo(name="digits", root=None, layout="scikit-learn's digits (embedded)",
                                      num_classes=10, classes=tuple(str(i) for i in range(10)))
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}, allowed: {', '.join(DATASETS)}")
    root = existing_folder(path, name)
    if name == "imagefolder":
        return _check_imagefolder(root)
    return _check_cifar(root, name)


def existing_folder(path: str | os.PathLike[str] | None, name: str) -> Path:
    """``path`` as a folder that exists (DataError otherwise)."""
    if not path:
        raise DataError(f"data.path is required for {name}")
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"data path {str(root)!r} does not exist or is not a directory")
    return root


def _listing(folder: Path, where: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return [e for e in it if not e.name.startswith(".")]
    except OSError as err:
        raise DataError(f"{where}: cannot list {str(folder)!r} ({err.strerror or err}); the folder must be readable "
                        f"by the user that runs ablate") from None


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links; False for a dangling or looping one
    except OSError:
        return False


def _image_name(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in items[:_NAMED])
    return shown + (f" and {len(items) - _NAMED} more" if len(items) > _NAMED else "")


def _check_imagefolder(root: Path) -> ClassificationDataInfo:
    where = f"data path {str(root)!r}"
    top = {e.name: e for e in _listing(root, where) if _is_dir(e)}
    if "train" in top:
        val = root / "val" if "val" in top else None
        layout = LAYOUT_SPLIT if val is not None else LAYOUT_TRAIN
        classes = _classes(root / "train", f"{where} (ImageFolder layout: {layout}): train/")
        if val is not None:
            here = f"{where} (ImageFolder layout: {layout}): val/"
            val_classes = _classes(val, here, at_least=1)
            if val_classes != classes:
                lacks = [c for c in classes if c not in val_classes]
                extra = [c for c in val_classes if c not in classes]
                what = (f"lacks the class folder(s) {_names(lacks)} of train/" if lacks else "") + \
                    ("; " if lacks and extra else "") + \
                    (f"has class folder(s) {_names(extra)} that train/ lacks" if extra else "")
                raise DataError(f"{here} {what}, allowed: the same class folders as train/ (a label is the class "
                                f"folder's position in train/'s sorted list)")
        return ClassificationDataInfo(name="imagefolder", root=root, layout=layout, num_classes=len(classes),
                                      classes=classes, train_root=root / "train", val_root=val)
    if "val" in top:
        raise DataError(f"{where} has val/ but no train/, allowed: train/ (and optional val/) with one folder per "
                        f"class in each, or one folder per class at the root")
    classes = _classes(root, f"{where} (ImageFolder layout: {LAYOUT_FLAT}):")
    return ClassificationDataInfo(name="imagefolder", root=root, layout=LAYOUT_FLAT, num_classes=len(classes),
                                  classes=classes, train_root=root)


def _classes(folder: Path, where: str, *, at_least: int = 2) -> tuple[str, ...]:
    """The class folders of ``folder``, each checked to hold an image (its first one is enough)."""
    suffixes = ", ".join(sorted(IMG_EXTENSIONS))
    entries = _listing(folder, where)
    dirs = sorted(e.name for e in entries if _is_dir(e))
    if not dirs:
        images = sum(1 for e in entries if _image_name(e.name))
        found = f"{images} image(s) but no class folders" if images else "no class folders with images"
        raise DataError(f"{where} holds {found}, allowed: train/ (and optional val/) or one sub-folder per class, "
                        f"each holding images ({suffixes})")
    empty = [d for d in dirs if next(iter_files(folder / d, IMG_EXTENSIONS), None) is None]
    if len(empty) == len(dirs):
        raise DataError(f"{where} holds no class folders with images: {_names(empty)} hold no file named "
                        f"{suffixes}")
    if empty:
        raise DataError(f"{where} class folder(s) {_names(empty)} hold no image ({suffixes}); every class needs at "
                        f"least one (remove the folder or add its images)")
    if len(dirs) < at_least:
        raise DataError(f"{where} has {len(dirs)} class folder ({_names(dirs)}), allowed: at least {at_least} "
                        f"classes, one folder each")
    return tuple(dirs)


def _check_cifar(root: Path, name: str) -> ClassificationDataInfo:
    folder_name, classes, files = CIFAR[name]
    if (root / folder_name).is_dir():
        base = root
    elif root.name == folder_name:
        base = root.parent
    else:
        raise DataError(f"data path {str(root)!r} holds no {folder_name} folder: {name} reads torchvision's python "
                        f"version of CIFAR from the folder that holds {folder_name} (or from {folder_name} itself); "
                        "ablate never downloads it")
    folder = base / folder_name
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{str(folder)!r} lacks {', '.join(missing)}: {name} expects torchvision's python version of "
                        f"CIFAR ({', '.join(files)}); ablate never downloads it")
    bad = [f for f in files if (folder / f).stat().st_size == 0 or not os.access(folder / f, os.R_OK)]
    if bad:
        raise DataError(f"{str(folder)!r}: {', '.join(bad)} empty or unreadable: {name} expects torchvision's python "
                        f"version of CIFAR ({', '.join(files)}); ablate never downloads it")
    return ClassificationDataInfo(name=name, root=root, layout=f"{folder_name}/ (the official train and test splits)",
                                  num_classes=classes, train_root=base)


# --------------------------------------------------------------------------- walking and reading


def iter_files(top: str | os.PathLike[str], suffixes: tuple[str, ...], *,
               on_loop: Callable[[str, str], None] | None = None) -> Iterator[str]:
    """Paths of the files under ``top`` whose names end in ``suffixes`` (any case), lazily.

    Depth first; a folder's files come before its sub-folders, in the order the file system
    lists them, so stopping at the first match reads as little as possible. Symbolic links
    are followed, each real folder once: a link back to a folder above it (a loop, also
    one above ``top``) is skipped, or reported to ``on_loop(link, folder)``, which may raise. Names starting with
    ``.`` are skipped.

    Raises:
        DataError: a folder that cannot be listed (permissions), named.
    """
    try:
        real = Path(os.path.realpath(top))
        above = tuple((st.st_dev, st.st_ino) for st in map(os.stat, (*reversed(real.parents), real)))
    except OSError as err:
        raise DataError(f"{os.fspath(top)!r}: cannot read ({err.strerror or err})") from None
    seen = {above[-1]}
    # A folder's chain holds every real folder above it, those above ``top`` included: a
    # link to any of them leads back to itself.
    stack: list[tuple[str, tuple[tuple[int, int], ...]]] = [(os.fspath(top), above)]
    while stack:
        folder, chain = stack.pop()
        subdirs: list[tuple[str, tuple[tuple[int, int], ...]]] = []
        try:
            it = os.scandir(folder)
        except OSError as err:
            raise DataError(f"{folder!r}: cannot list the folder ({err.strerror or err}); it must be readable by the "
                            f"user that runs ablate") from None
        with it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                try:
                    key = None
                    if entry.is_dir():
                        est = entry.stat()
                        key = (est.st_dev, est.st_ino)
                    elif not entry.name.lower().endswith(suffixes) or not entry.is_file():
                        continue
                except OSError:  # a dangling or self-referencing link, a file gone meanwhile
                    continue
                if key is None:
                    yield entry.path
                elif key in chain:
                    if on_loop is not None:  # outside the try: what it raises (a DataError is an OSError) stands
                        on_loop(entry.path, folder)
                elif key not in seen:
                    seen.add(key)
                    subdirs.append((entry.path, (*chain, key)))
        stack.extend(reversed(subdirs))


def read_image(path: str) -> Any:
    """The RGB PIL image at ``path``, or a DataError naming the file (one line) if it cannot be decoded.

    A truncated PNG, a zero-byte file or text named ``.jpg`` surface here, while training:
    the message names the file so the trial fails with a reason a user can act on.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataError(f"{_shown(path)}: cannot read the image ({type(err).__name__}: {reason}); replace or remove "
                        f"the file") from None


def _shown(path: str) -> str:
    """The path as is, or quoted with escapes when it holds a line break or another control character."""
    return path if path.isprintable() else repr(path)


class ImageFiles(Dataset):
    """``(transform(RGB image), label)`` for every image file under a folder's class folders.

    The files are listed once, here (:func:`iter_files`), in torchvision ImageFolder's order
    (each folder's files by name, folders by path), so the seeded split matches what
    torchvision's class gave. Images are decoded when served, each failure a
    :class:`~ablate.errors.DataError` naming the file.

    Attributes:
        root: The folder whose class folders are read.
        classes: Class folder names; a label is the position in this list.
        samples: ``(path, label)`` pairs.
        targets: The labels of ``samples``.
        transform: Applied to each image (None: the PIL image itself).
    """

    def __init__(self, root: Path, classes: Sequence[str], transform: Callable[[Any], Any] | None = None) -> None:
        self.root, self.classes, self.transform = root, list(classes), transform
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = []
        for label, name in enumerate(self.classes):
            files = sorted(iter_files(root / name, IMG_EXTENSIONS), key=lambda p: (os.path.dirname(p), p))
            if not files:
                raise DataError(f"{str(root / name)!r}: the class folder holds no image any more "
                                f"({', '.join(sorted(IMG_EXTENSIONS))})")
            self.samples += [(p, label) for p in files]
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        path, label = self.samples[i]
        image = read_image(path)
        return (self.transform(image) if self.transform is not None else image), label
