"""Training loops that yield per-epoch metrics through a plain callback (no Ray import).

The loops import torch; :mod:`ablate.train.recipes` does not, so the study schema can read
the recipe tables without it (names below are imported on first use).
"""

from __future__ import annotations

from typing import Any

__all__ = ["EvalResult", "TrainConfig", "TrainingDiverged", "evaluate_checkpoint", "recipe_transforms",
           "train_classifier"]

_FROM_EVALUATE = ("EvalResult", "evaluate_checkpoint")


def __getattr__(name: str) -> Any:
    if name in _FROM_EVALUATE:
        from ablate.train import evaluate

        return getattr(evaluate, name)
    if name in __all__:
        from ablate.train import classify

        return getattr(classify, name)
    raise AttributeError(f"module 'ablate.train' has no attribute {name!r}")
