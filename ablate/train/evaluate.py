"""Top-1 / top-5 accuracy of a classifier on an ImageFolder validation split: what ``ablate
eval PRESET --weights FILE --data PATH`` runs, so a user can confirm that a released
checkpoint reproduces its paper's number before fine-tuning or searching from it.

An accuracy without its sample size is not a result: every evaluation returns the image
count and a 95 % Wilson interval on top-1 (the binomial interval that stays inside 0-100 %
and keeps its coverage near 0 % and 100 %, where the normal approximation does not).

Data (:func:`find_val_split`), decided once and stated in every message:

* ``PATH`` holds ``val/``: its class folders are evaluated (ImageNet's usual
  ``imagenet/{train,val}``; with ``train/`` beside it, ``val/`` must hold ``train/``'s class
  folders, as for training, and labels are positions in ``train/``'s sorted list);
* ``PATH`` holds ``train/`` without ``val/``: refused, a training split is not a validation
  number;
* otherwise ``PATH``'s own sub-folders are the classes (point it at ``imagenet/val``).

The folders are checked by :func:`ablate.data.check_classification_data`, the check
training uses, with its messages; images are read by :class:`ablate.data.folders.ImageFiles`
(an undecodable file is one line naming it).

Labels: class folder ``i`` in sorted order is output ``i`` of the head, torchvision
ImageFolder's numbering, which the official releases (DeiT, Swin, PVT, Focal, FLatten,
BiFormer) trained with. The folder's class count must therefore equal the head's; a folder
holding a subset of the head's classes (ten ImageNet classes, say) is scored among all of
them when ``class_names`` lists the head's classes in output order (ImageNet's
``LOC_synset_mapping.txt`` works as it is: the first word of each line is the name).

Transform: the recipe's evaluation transform (:func:`ablate.data.classification_transforms`),
``deit`` by default: resize to ``image_size / 0.875`` (bicubic), centre crop, ImageNet mean
and std, as every one of those releases evaluates (DeiT ``--eval-crop-ratio 0.875``, Swin
``TEST.CROP``); ``image_size`` is the model's. ``crop_pct`` replaces the 0.875 where a
release evaluates otherwise (Swin's 384-pixel fine-tunes set ``TEST.CROP: False``: 1.0).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ablate.data import check_classification_data, classification_transforms
from ablate.data.classification import TRANSFORM_RECIPES
from ablate.data.folders import ImageFiles, existing_folder
from ablate.errors import ConfigError, DataError, EnvironmentProblem

__all__ = ["DEVICES", "Accuracy", "EvalResult", "ValSplit", "count_correct", "evaluate_checkpoint",
           "find_val_split", "head_labels", "read_class_names", "resolve_device", "wilson_interval"]

#: What ``device`` accepts: ``auto`` is CUDA when torch sees one, else the CPU.
DEVICES = ("auto", "cpu", "cuda")
#: The k of top-k reported besides top-1.
TOP_K = 5
#: Confidence of the interval on top-1.
CONFIDENCE = 0.95
#: Longest class-name file read (ImageNet-21k's list is about 300 KB).
_MAX_NAMES_BYTES = 8 * 1024 * 1024


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ValSplit:
    """The folder an evaluation reads and how it was found.

    Attributes:
        folder: The folder whose class folders are read.
        classes: Its class folder names in label order.
        layout: How ``PATH`` was read (stated in messages and in the result).
    """

    folder: Path
    classes: tuple[str, ...]
    layout: str


def find_val_split(path: str | os.PathLike[str]) -> ValSplit:
    """The validation split of ``path`` (see the module docstring for the three layouts).

    Raises:
        DataError: a missing or unreadable folder, a training split without ``val/``, class
            folders without images (one line from the training data check).
    """
    root = existing_folder(path, "eval --data")
    if (root / "train").is_dir():
        info = check_classification_data("imagefolder", root)  # val/ must hold train/'s classes
        if info.val_root is None:
            raise DataError(f"data path {str(root)!r} holds train/ but no val/, allowed: a folder with val/ (its class "
                            f"folders are evaluated) or a folder of class folders (point --data at the validation "
                            f"split itself); a training split gives no validation accuracy")
        return ValSplit(info.val_root, info.classes, "val/ (labels: train/'s sorted class folders)")
    if (root / "val").is_dir():
        info = check_classification_data("imagefolder", root / "val")
        return ValSplit(root / "val", info.classes, "val/ (labels: its sorted class folders)")
    info = check_classification_data("imagefolder", root)
    return ValSplit(root, info.classes, "class folders at the root (labels: their sorted names)")


def read_class_names(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The head's class names in output order: the first word of each non-empty line.

    Reads a plain list (``n01440764``, one per line) and ImageNet's ``LOC_synset_mapping.txt``
    (``n01440764 tench, Tinca tinca``) alike.

    Raises:
        ConfigError: a missing, unreadable, binary or oversized file, or a name given twice.
    """
    file = Path(path)
    try:
        if not file.is_file():
            raise ConfigError(f"{file}: no such class-name file, allowed: a text file with the head's class names "
                              f"in output order, one per line")
        if file.stat().st_size > _MAX_NAMES_BYTES:
            raise ConfigError(f"{file}: {file.stat().st_size} bytes, allowed: a class-name list of at most "
                              f"{_MAX_NAMES_BYTES} bytes")
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not UTF-8 text, allowed: a text file with one class name per line") from None
    except OSError as err:
        raise ConfigError(f"{file}: cannot read the class-name file ({err.strerror or err})") from None
    names = tuple(line.split()[0] for line in text.splitlines() if line.strip())
    if not names:
        raise ConfigError(f"{file}: holds no class name, allowed: one class name per line (the first word counts)")
    seen: dict[str, int] = {}
    for i, name in enumerate(names, 1):
        if name in seen:
            raise ConfigError(f"{file}: class {name!r} is named twice (lines {seen[name]} and {i} of its names), "
                              f"allowed: each class once, in the head's output order")
        seen[name] = i
    return names


def head_labels(split: ValSplit, outputs: int, class_names: Sequence[str] | None = None, *,
                where: str = "the model") -> tuple[int, ...]:
    """The head output each of ``split``'s classes is scored as (``split.classes`` order).

    Args:
        split: The validation split.
        outputs: The model's class count (its head's outputs).
        class_names: The head's class names in output order (None: class folder ``i`` is
            output ``i``, which needs as many class folders as outputs).
        where: How to name the model in messages.

    Raises:
        ConfigError: the class counts disagree, or a class folder is not among ``class_names``.
    """
    n = len(split.classes)
    if class_names is None:
        if n != outputs:
            raise ConfigError(
                f"data path {str(split.folder)!r} ({split.layout}) has {n} class folders but {where} has "
                f"{outputs} outputs, allowed: {outputs} class folders (folder i in sorted order is output i), "
                f"--classes FILE naming the head's {outputs} classes in output order (a subset folder is then scored "
                f"among all {outputs}), or --num-classes {n} for a checkpoint trained on these {n} classes")
        return tuple(range(n))
    if len(class_names) != outputs:
        raise ConfigError(f"the class-name list has {len(class_names)} names but {where} has {outputs} outputs, "
                          f"allowed: exactly one name per output, in output order")
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [c for c in split.classes if c not in index]
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ConfigError(f"data path {str(split.folder)!r}: class folder(s) {shown} are not in the class-name list, "
                          f"allowed: folders named as in the list (e.g. {class_names[0]!r})")
    return tuple(index[c] for c in split.classes)


# --------------------------------------------------------------------------- counting


@dataclass(frozen=True)
class Accuracy:
    """Counts and percentages of one evaluation.

    Attributes:
        images: Images scored (n).
        correct1: Images whose top-1 prediction is the label.
        correctk: Images whose label is among the top ``k`` predictions.
        k: The k of ``correctk`` (5, or the class count when there are fewer).
        top1: ``100 * correct1 / images``.
        topk: ``100 * correctk / images``.
        top1_low: Lower end of the 95 % Wilson interval on top-1, percent.
        top1_high: Upper end of it, percent.
    """

    images: int
    correct1: int
    correctk: int
    k: int
    top1: float
    topk: float
    top1_low: float
    top1_high: float


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion, in percent (scipy's ``binomtest``).

    Raises:
        ValueError: ``n`` < 1 or ``successes`` outside ``0..n``.
    """
    from scipy.stats import binomtest

    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes=} {n=}")
    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return 100.0 * float(ci.low), 100.0 * float(ci.high)


def count_correct(model: nn.Module, loader: DataLoader, device: torch.device, *,
                  labels: Sequence[int] | None = None,
                  progress: Callable[[int, int], None] | None = None) -> Accuracy:
    """Top-1 and top-k counts of ``model`` (put in eval mode) over every batch of ``loader``.

    Args:
        model: A classifier mapping ``(B, 3, H, W)`` to logits ``(B, K)``, on ``device``.
        loader: Yields ``(images, folder labels)``.
        device: Where the forward passes run.
        labels: Head output of each folder label (:func:`head_labels`); None: the identity.
        progress: Called after each batch with ``(images done, images in all)``.

    Raises:
        DataError: the loader yielded no image.
    """
    model.eval()
    lookup = torch.as_tensor(list(labels), dtype=torch.long) if labels is not None else None
    total_images = len(loader.dataset)  # type: ignore[arg-type]
    n = correct1 = correctk = 0
    k = TOP_K
    with torch.no_grad():
        for images, target in loader:
            logits = model(images.to(device, non_blocking=True)).float()  # B, K
            k = min(TOP_K, logits.shape[1])
            target = (lookup[target] if lookup is not None else target).to(logits.device)  # B
            top = logits.topk(k, dim=1).indices  # B, k (descending: column 0 is the argmax)
            hits = top == target[:, None]  # B, k
            correct1 += int(hits[:, 0].sum())
            correctk += int(hits.any(dim=1).sum())
            n += int(target.numel())
            if progress is not None:
                progress(n, total_images)
    if n == 0:
        raise DataError("the validation split yielded no image")
    low, high = wilson_interval(correct1, n)
    return Accuracy(images=n, correct1=correct1, correctk=correctk, k=k, top1=100.0 * correct1 / n,
                    topk=100.0 * correctk / n, top1_low=low, top1_high=high)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when torch sees a GPU, else the CPU; ``cuda`` without one is refused.

    Raises:
        ConfigError: a name outside :data:`DEVICES` (``cuda:1`` is accepted).
        EnvironmentProblem: ``cuda`` asked for on a machine where torch sees no GPU.
    """
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not (name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        raise ConfigError(f"device {name!r} is not one ablate evaluates on, allowed: {', '.join(DEVICES)} "
                          f"(or cuda:N)")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name[5:]) if ":" in name else 0
        if index >= count:
            raise EnvironmentProblem(f"device {name}: torch sees {count} CUDA device(s) on this machine, use "
                                     f"--device cpu or auto")
    return torch.device(name)


# --------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class EvalResult:
    """One checkpoint's accuracy on one validation split.

    Attributes:
        preset: The preset (or model name) built.
        weights: The checkpoint file loaded.
        data: The folder whose class folders were read.
        layout: How ``--data`` was read.
        images: Images scored (n).
        top1: Top-1 accuracy, percent.
        top5: Top-5 accuracy, percent (top-``k`` with ``k`` = the class count below 5 classes).
        top1_ci95: The 95 % Wilson interval on top-1, percent.
        correct1: Images right at top-1.
        correct5: Images right at top-5.
        num_classes: The head's outputs.
        class_folders: The class folders read (fewer than ``num_classes`` for a subset).
        image_size: The side the images were cropped to.
        recipe: Whose evaluation transform was used.
        crop_pct: The centre crop's share of the resized side (None: the recipe's).
        device: Where it ran.
        tensors_loaded: The model's tensors set from the checkpoint (of ``tensors``).
        tensors: The tensors the model's state dict holds.
        wall_s: Seconds from the first batch to the last (model building and loading excluded).
    """

    preset: str
    weights: str
    data: str
    layout: str
    images: int
    top1: float
    top5: float
    top1_ci95: tuple[float, float]
    correct1: int
    correct5: int
    num_classes: int
    class_folders: int
    image_size: int
    recipe: str
    crop_pct: float | None
    device: str
    tensors_loaded: int
    tensors: int
    wall_s: float

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (the interval as a two-element list)."""
        out = asdict(self)
        out["top1_ci95"] = list(self.top1_ci95)
        return out


def evaluate_checkpoint(preset: str, weights: str | os.PathLike[str], data: str | os.PathLike[str], *,
                        recipe: str = "deit", crop_pct: float | None = None, device: str = "auto",
                        batch_size: int = 64,
                        num_workers: int | None = None, class_names: Sequence[str] | None = None,
                        strict: bool = True, overrides: Mapping[str, Any] | None = None,
                        progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Build ``preset`` from ``weights`` (:func:`ablate.models.create_model`) and score it on ``data``.

    The data folder is checked first (cheap), then the model is built and loaded, then the
    images are listed and scored in batches under ``torch.no_grad``.

    Args:
        preset: A classification preset (``swin_tiny``, ``deit_tiny``, ...).
        weights: A checkpoint file in any layout ``create_model`` reads.
        data: The validation folder (see :func:`find_val_split`).
        recipe: Whose evaluation transform (:data:`ablate.data.classification.TRANSFORM_RECIPES`).
        crop_pct: Resize to ``image_size / crop_pct`` then centre-crop, instead of the recipe's
            share (``deit``: 0.875; ``proxy``: 1.0); the recipe's interpolation stays.
        device: ``auto``, ``cpu`` or ``cuda`` (:func:`resolve_device`).
        batch_size: Images per forward pass.
        num_workers: DataLoader workers (None: 0 on the CPU, ``cpus - 1`` (at most 8) on CUDA).
        class_names: The head's class names in output order, for a folder holding a subset
            (:func:`read_class_names`); None: folder ``i`` is output ``i``.
        strict: Passed to ``create_model``: every checkpoint key must map.
        overrides: Arch keys for ``create_model`` (``num_classes`` for a fine-tuned checkpoint).
        progress: Called after each batch with ``(images done, images in all)``.

    Raises:
        ConfigError: an unknown preset or key, a detection preset, an unreadable or
            mismatching checkpoint (``create_model``'s messages), class counts that disagree.
        DataError: a bad data folder or an undecodable image (named).
        EnvironmentProblem: ``cuda`` without a GPU.
    """
    from ablate.models import create_model, preset_task, resolve_architecture

    if recipe not in TRANSFORM_RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}, allowed: {', '.join(TRANSFORM_RECIPES)}")
    if crop_pct is not None and not 0.05 <= crop_pct <= 1.0:  # also NaN
        raise ConfigError(f"crop_pct must be in [0.05, 1.0] (the centre crop's share of the resized side), "
                          f"got {crop_pct}")
    if weights is None or not os.fspath(weights):
        raise ConfigError("weights: a checkpoint file is required, allowed: a path to a local checkpoint (an "
                          "evaluation of random weights measures chance)")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if preset_task(preset) != "classify":  # unknown -> every preset listed, with a did-you-mean
        raise ConfigError(f"preset {preset!r} is a detection model; eval scores classifiers on an ImageFolder "
                          f"(top-1/top-5), allowed: a classification preset")
    target = resolve_device(device)
    split = find_val_split(data)
    _check_batch_memory(resolve_architecture({"preset": preset, **dict(overrides or {})}), batch_size, target)
    model = create_model(preset, weights, strict=strict, **dict(overrides or {}))
    report = model.load_report  # ablate.models.weights.LoadReport
    if report.head_reinit:  # a fresh head scores chance, not the checkpoint
        ckpt, built = report.head_reinit
        raise ConfigError(f"{os.fspath(weights)}: its classifier has {ckpt} classes but {preset} was built with "
                          f"{built}, so the head would be random; an evaluation scores the checkpoint's own head, "
                          f"allowed: --num-classes {ckpt} (the checkpoint's class count)")
    outputs = int(model.num_classes)
    labels = head_labels(split, outputs, class_names, where=f"{preset} from {os.fspath(weights)}")
    image_size = int(model.arch["img_size"])
    transform = _eval_transform(image_size, recipe, crop_pct)
    dataset = ImageFiles(split.folder, split.classes, transform)
    workers = num_workers if num_workers is not None else (
        0 if target.type == "cpu" else max(0, min(8, (os.cpu_count() or 1) - 1)))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=target.type == "cuda", persistent_workers=False)
    start = time.perf_counter()
    try:
        with _out_of_memory_is_one_line(f"{preset} at {image_size}x{image_size}, --batch-size {batch_size}", target):
            model.to(target)
            acc = count_correct(model, loader, target,
                                labels=None if labels == tuple(range(len(labels))) else labels, progress=progress)
    except DataError as err:  # from a loader worker: torch puts the worker's traceback in the message
        raise DataError(_one_line(err)) from None
    wall = time.perf_counter() - start
    return EvalResult(preset=preset, weights=os.fspath(weights), data=str(split.folder), layout=split.layout,
                      images=acc.images, top1=acc.top1, top5=acc.topk, top1_ci95=(acc.top1_low, acc.top1_high),
                      correct1=acc.correct1, correct5=acc.correctk, num_classes=outputs,
                      class_folders=len(split.classes), image_size=image_size,
                      recipe=recipe, crop_pct=crop_pct, device=str(target), tensors_loaded=int(report.loaded),
                      tensors=int(report.total), wall_s=wall)



def _check_batch_memory(arch: Any, batch_size: int, device: torch.device) -> None:
    """Refuse, before anything is built, a batch whose forward pass cannot fit ``device``.

    Raises:
        DoesNotFit: the lower bound of weights plus ``batch_size`` images' forward peak is
            more than the device holds (names the largest batch that could fit).
    """
    from ablate.models.memory import DoesNotFit, device_memory, estimate_memory, format_bytes

    est = estimate_memory(arch)
    need = est.params * 4 + batch_size * est.peak_forward
    total, what = device_memory(str(device))
    if need > total:
        fits = (total - est.params * 4) // max(1, est.peak_forward)
        allowed = f"--batch-size {fits} or less" if fits >= 1 else "a smaller model or image size"
        raise DoesNotFit(f"--batch-size {batch_size}: one forward pass needs at least {format_bytes(need)} at "
                         f"{arch.spec.get('img_size')}x{arch.spec.get('img_size')}, more than the "
                         f"{format_bytes(total)} of this machine's {what}; allowed: {allowed}")


@contextlib.contextmanager
def _out_of_memory_is_one_line(what: str, device: torch.device) -> Iterator[None]:
    """Running out of RAM (:func:`ablate.models.memory.memory_guard`) or of GPU memory inside
    the block is :class:`~ablate.models.memory.DoesNotFit` naming ``what``, with the way out."""
    from ablate.models.memory import DoesNotFit, memory_guard

    if device.type != "cuda":
        with memory_guard(what):
            yield
        return
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        raise DoesNotFit(f"{what}: ran out of GPU memory on {device}, allowed: a smaller --batch-size") from None


def _one_line(err: DataError) -> str:
    """A data error's own line, also after a DataLoader worker re-raised it with its traceback
    as the message (the same rule as :func:`ablate.run.trial.data_error_line`)."""
    prefix = f"{type(err).__module__}.{type(err).__qualname__}: "
    lines = [line[len(prefix):] for line in str(err).splitlines() if line.startswith(prefix)]
    return lines[-1].strip() if lines else " ".join(str(err).split())


def _eval_transform(image_size: int, recipe: str, crop_pct: float | None) -> Callable[[Any], torch.Tensor]:
    """The recipe's evaluation transform; with ``crop_pct`` timm's same pipeline at that crop."""
    if crop_pct is None:
        return classification_transforms(image_size, recipe=recipe)[1]
    from timm.data import create_transform

    return create_transform(image_size, is_training=False, crop_pct=crop_pct,
                            interpolation="bicubic" if recipe == "deit" else "bilinear")
