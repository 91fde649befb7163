"""Data sets: classification (the embedded digits default, ImageFolder and CIFAR folders checked
structurally before training by ``check_classification_data``, one transform pipeline per
recipe) and detection (the generated synthetic YOLO set and ultralytics data YAMLs)."""

from ablate.data.classification import (
    ClassificationData,
    ClassificationDataInfo,
    check_classification_data,
    LabelledImages,
    classification_transforms,
    load_classification,
    loader_workers,
    num_classes_of,
)
from ablate.data.detection import (
    SHAPES,
    DetectionDataInfo,
    check_detection_data,
    default_detection_data,
    generate_synth_det,
    synth_det_cache_dir,
)

__all__ = [
    "ClassificationData",
    "ClassificationDataInfo",
    "check_classification_data",
    "LabelledImages",
    "classification_transforms",
    "load_classification",
    "loader_workers",
    "num_classes_of",
    "SHAPES",
    "DetectionDataInfo",
    "check_detection_data",
    "default_detection_data",
    "generate_synth_det",
    "synth_det_cache_dir",
]
