"""Data sets for classification trials: the embedded digits default and ImageFolder paths."""

from ablate.data.classification import ClassificationData, load_classification, num_classes_of

__all__ = ["ClassificationData", "load_classification", "num_classes_of"]
