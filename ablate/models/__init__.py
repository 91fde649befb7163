"""Model builders: the hierarchical ViT behind the arch dict, and the papers' presets.

``build(arch)`` is the one entry point a trial uses; ``resolve_arch`` gives the canonical
dict it stores; ``check_arch`` rejects impossible candidates without building them.
"""

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

__all__ = [
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
