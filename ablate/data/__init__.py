"""Data sets: classification (the embedded digits default and ImageFolder paths) and detection
(the generated synthetic YOLO set and ultralytics data YAMLs)."""

from ablate.data.classification import ClassificationData, load_classification, num_classes_of
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
    "load_classification",
    "num_classes_of",
    "SHAPES",
    "DetectionDataInfo",
    "check_detection_data",
    "default_detection_data",
    "generate_synth_det",
    "synth_det_cache_dir",
]
