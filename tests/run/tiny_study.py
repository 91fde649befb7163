"""The tiny grid study several runner tests build their specs from."""

from __future__ import annotations

from pathlib import Path


def tiny_grid_spec(tmp_path: Path, name: str, *, epochs: int = 3, **over) -> dict:
    """A softmax grid over window sizes 2, 3, 4 on digits, stored in ``tmp_path/study.db``; ``over`` replaces keys."""
    spec = {
        "name": name,
        "fixed": {"attention": "softmax", "depths": [1, 1], "embed_dim": 16, "num_heads": 2},
        "grid": {"window_size": [2, 3, 4]},
        "objectives": [{"name": "top1", "direction": "maximize"}, {"name": "gflops", "direction": "minimize"}],
        "data": {"name": "digits", "image_size": 32},
        "train": {"epochs": epochs, "batch_size": 64},
        "resources": {"cpu": 1, "gpu": 0},
        "storage": f"sqlite:///{tmp_path / 'study.db'}",
    }
    spec.update(over)
    return spec
