"""Model builders: the hierarchical ViT behind the arch dict, the papers' presets, and YOLO.

``build(arch)`` is the one entry point a classification trial uses; ``resolve_arch`` gives
the canonical dict it stores; ``check_arch`` rejects impossible candidates without
building them. Detection candidates go through ``build_yolo`` / ``resolve_yolo_arch`` /
``check_yolo_arch`` (:mod:`ablate.models.yolo`), which are imported on first use, so
``import ablate.models`` does not import ultralytics.
"""

from typing import Any

from ablate.models.vit import ARCH_DEFAULTS, HierarchicalViT, build, check_arch, resolve_arch, stage_resolutions
from ablate.models.presets import (
    PRESET_INFO,
    create_preset,
    focal_base,
    focal_small,
    focal_tiny,
    list_presets,
    preset_arch,
    swin_tiny,
)

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
    "HierarchicalViT",
    "PRESET_INFO",
    "build",
    "check_arch",
    "create_preset",
    "focal_base",
    "focal_small",
    "focal_tiny",
    "list_presets",
    "preset_arch",
    "resolve_arch",
    "stage_resolutions",
    "swin_tiny",
]
