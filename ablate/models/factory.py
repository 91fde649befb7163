"""Resolve, check and build an :class:`~ablate.models.arch.Architecture`, per task.

The one place that maps a task to its builder: the hierarchical ViT for ``classify``,
ultralytics' YOLO with ablate's layers for ``detect``. The YOLO side is imported on first
use (it imports ultralytics), so resolving a ViT never pays for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from ablate.errors import ConfigError, shown_path
from ablate.models import vit, vit_arch
from ablate.models.arch import TASKS, Architecture, Task
from ablate.models.presets import list_presets, preset_task

__all__ = ["architecture_from_json", "build_model", "check_architecture", "create_model", "resolve_architecture"]


def resolve_architecture(arch: Mapping[str, Any] | Architecture, task: Task = "classify") -> Architecture:
    """Validate builder keys once and return the typed, fully resolved architecture.

    Args:
        arch: builder keys (:data:`ablate.models.ARCH_DEFAULTS` or
            :data:`ablate.models.YOLO_ARCH_DEFAULTS` plus family options); an
            ``Architecture`` is returned as it is when its task matches.
        task: which builder the keys are for.

    Raises:
        ConfigError: unknown task or key, a value of the wrong type (the builder's message).
    """
    if isinstance(arch, Architecture):
        if arch.task != task:
            raise ConfigError(f"a {arch.task} architecture was given where a {task} one is needed")
        return arch
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if task == "detect":
        from ablate.models.yolo import resolve_yolo_arch

        return Architecture("detect", resolve_yolo_arch(arch))
    return Architecture("classify", vit_arch.resolve_arch(arch))


def architecture_from_json(data: Mapping[str, Any], task: Task | None = None) -> Architecture:
    """An architecture from its stored form (:meth:`Architecture.to_json`), validated again.

    This is the check at every boundary a plain dict crosses (a Ray worker, a database):
    the keys are resolved as if they were new. ``task`` is for trials stored before the
    task was part of the stored form; a stored task must agree with it.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a stored architecture must be a mapping, got {type(data).__name__}")
    keys = dict(data)
    stored = keys.pop("task", None)
    if stored is not None and task is not None and stored != task:
        raise ConfigError(f"the stored architecture is for task {stored!r}, not {task!r}")
    chosen = stored or task
    if chosen is None:
        raise ConfigError("the stored architecture names no task (stored before tasks were; pass the study's task)")
    return resolve_architecture(keys, chosen)


def check_architecture(arch: Architecture) -> None:
    """Raise :class:`~ablate.errors.Infeasible` for a model that cannot be built (cheap: nothing is built)."""
    if arch.task == "detect":
        from ablate.models.yolo import check_yolo_arch

        check_yolo_arch(arch)
    else:
        vit_arch.check_arch(arch)


def build_model(arch: Architecture) -> nn.Module:
    """Check and construct the model of ``arch`` (training mode; ``model.arch`` holds its keys)."""
    if arch.task == "detect":
        from ablate.models.yolo import build_yolo

        return build_yolo(arch)
    return vit.build(arch)


def create_model(name: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None, *,
                 strict: bool = True, **overrides: Any) -> nn.Module:
    """Build any named preset, ViT or YOLO (timm's ``create_model``); keyword arguments
    override its arch keys, caller wins: ``create_model("focal_tiny", img_size=32, num_classes=10)``.

    ``name`` may also be a model file ``ablate export`` wrote (a path object, a name ending
    in ``.safetensors``, or an existing file that is no preset name): its architecture is
    rebuilt and its tensors loaded strictly (:func:`ablate.models.exported.load_exported`),
    so a study's winner is one call away: ``create_model("winner.safetensors").eval()``.

    Args:
        name: a preset (:func:`~ablate.models.list_presets`), or an exported model file.
        weights: a local checkpoint file to initialise the model from (an official release
            of Swin, DeiT, PVT, Focal, FLatten or BiFormer, a timm state dict, ablate's own
            ``state_dict()``, safetensors; see :mod:`ablate.models.weights`). Nothing is
            downloaded. A classifier of another class count is left freshly initialised
            (``num_classes=10`` to fine-tune a 1000-class release). The model's
            ``load_report`` attribute then holds the :class:`~ablate.models.weights.LoadReport`.
        strict: refuse a checkpoint that leaves keys over; False loads what fits (read
            ``model.load_report`` for the rest).
        overrides: arch keys.

    Raises:
        ConfigError: an unknown preset (every preset listed, with a did-you-mean) or key; an
            unreadable checkpoint, or (strict) one that does not fit (``FILE: ...``); a file
            name that is no model file ablate wrote, or such a file with ``weights``.
        Infeasible: overrides that cannot be built.
    """
    from ablate.models.exported import exported_file, load_exported

    file = exported_file(name)
    if file is not None:
        if weights is not None:  # the file holds its own weights: which ones would win is a guess
            raise ConfigError(f"{shown_path(file)}: an exported model file holds its weights; pass weights= only "
                              "with a preset name")
        return load_exported(file, strict=strict, **overrides)
    task = preset_task(str(name))
    if weights is not None and task == "detect":  # refused before ultralytics is imported and a model built
        raise ConfigError(f"{shown_path(weights)}: loading weights into a YOLO preset ({name!r}) is not supported by "
                          "create_model; classification presets are: " + ", ".join(list_presets("classify")))
    model = build_model(resolve_architecture({"preset": str(name), **overrides}, task))  # type: ignore[arg-type]
    if weights is not None:
        from ablate.models.weights import load_weights

        model.load_report = load_weights(model, weights, strict=strict)  # type: ignore[assignment]
    return model
