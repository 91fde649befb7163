"""Training loops that yield per-epoch metrics through a plain callback (no Ray import)."""

from ablate.train.classify import TrainConfig, TrainingDiverged, train_classifier

__all__ = ["TrainConfig", "TrainingDiverged", "train_classifier"]
