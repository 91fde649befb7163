"""Models: the typed architecture a candidate becomes, and the builders behind it (the
hierarchical ViT with the papers' presets for ``classify``, YOLO for ``detect``).

``resolve_architecture(keys, task)`` validates a candidate once and returns an
:class:`Architecture`; ``check_architecture`` rejects impossible ones without building;
``build_model`` constructs; ``create_model(name, weights=FILE)`` builds a preset and loads
a released checkpoint into it (:mod:`ablate.models.weights`, key maps per family in
:mod:`ablate.models.weights_layouts`). The per-task functions (``resolve_arch`` / ``check_arch`` /
``build`` for the ViT, ``*_yolo_*`` in :mod:`ablate.models.yolo`) take either form. The
YOLO names are imported on first use, so ``import ablate.models`` does not import ultralytics.
"""

from typing import Any

from ablate.models.arch import TASKS, Architecture, Task
from ablate.models.factory import (
    architecture_from_json,
    build_model,
    check_architecture,
    create_model,
    resolve_architecture,
)
from ablate.models.presets import PRESET_INFO, list_presets, preset_arch, preset_task
from ablate.models.vit import HierarchicalViT, build, create_preset, focal_base, focal_small, focal_tiny, swin_tiny
from ablate.models.vit_arch import ARCH_DEFAULTS, check_arch, resolve_arch, stage_resolutions
from ablate.models.weights import LoadReport, load_weights

# Public names of ablate.models.yolo, imported on first access (it imports ultralytics and
# registers ablate's layers with it).
_YOLO_NAMES = (
    "YOLO_ARCH_DEFAULTS",
    "YOLO_PRESET_INFO",
    "build_yolo",
    "check_yolo_arch",
    "create_yolo_preset",
    "export_yolo_yaml",
    "list_yolo_presets",
    "register_ultralytics",
    "resolve_yolo_arch",
    "yolo_model_dict",
    "yolo_preset_arch",
)


def __getattr__(name: str) -> Any:
    if name in _YOLO_NAMES:
        from ablate.models import yolo

        return getattr(yolo, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    *_YOLO_NAMES,
    "ARCH_DEFAULTS",
    "Architecture",
    "HierarchicalViT",
    "LoadReport",
    "TASKS",
    "Task",
    "architecture_from_json",
    "build_model",
    "check_architecture",
    "create_model",
    "preset_task",
    "resolve_architecture",
    "PRESET_INFO",
    "build",
    "check_arch",
    "create_preset",
    "focal_base",
    "focal_small",
    "focal_tiny",
    "list_presets",
    "load_weights",
    "preset_arch",
    "resolve_arch",
    "stage_resolutions",
    "swin_tiny",
]
