"""The classification loop: LR schedule, per-epoch callback, determinism, divergence, a real ViT.

Models are tiny (a linear probe on 8 px digits, a two-stage Focal ViT on a digits subset)
so the file runs in seconds on a shared CPU. Torch runs single-threaded here, as in a Ray
trial with ``resources.cpu: 1``: on a loaded two-core machine two intra-op threads made
the ViT several times slower, not faster.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from ablate.data import ClassificationData, load_classification
from ablate.errors import AblateError
from ablate.train import TrainConfig, TrainingDiverged, train_classifier
from ablate.train.classify import warmup_cosine

EPOCH_KEYS = {"epoch", "train_loss", "top1", "lr", "epoch_s"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits8() -> ClassificationData:
    return load_classification("digits", image_size=8)


def _linear() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))


# --------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(("step", "total", "warmup", "expected"), [
    (0, 10, 2, 0.5),      # linear warm-up: (step + 1) / warmup
    (1, 10, 2, 1.0),
    (2, 10, 2, 1.0),      # cosine starts at its peak
    (6, 10, 2, 0.5),      # halfway through the decay
    (4, 10, 2, 0.5 * (1 + math.cos(math.pi * 2 / 8))),
    (10, 10, 2, 0.0),     # the last step reaches zero
    (15, 10, 2, 0.0),     # and stays there
    (0, 10, 0, 1.0),      # no warm-up: cosine from the first step
    (5, 10, 0, 0.5),
    (0, 4, 4, 0.25),
    (3, 4, 4, 1.0),
])
def test_warmup_cosine_table(step, total, warmup, expected):
    assert warmup_cosine(step, total, warmup) == pytest.approx(expected, abs=1e-12)


def test_warmup_cosine_is_monotone_in_each_phase():
    values = [warmup_cosine(s, 100, 10) for s in range(101)]
    assert all(a < b for a, b in zip(values[:10], values[1:10]))
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert all(0.0 <= v <= 1.0 for v in values)


# --------------------------------------------------------------------------- the loop


def test_two_epochs_report_twice_and_learn(digits8):
    seen: list[dict] = []
    cfg = TrainConfig(epochs=2, batch_size=64, lr=1e-2, warmup_epochs=1.0, seed=0)
    history = train_classifier(_linear(), digits8, cfg, on_epoch=seen.append)
    assert seen == history and len(history) == 2
    for i, metrics in enumerate(history, start=1):
        assert set(metrics) == EPOCH_KEYS
        assert metrics["epoch"] == i
        assert math.isfinite(metrics["train_loss"]) and metrics["epoch_s"] > 0
        assert 0.0 <= metrics["top1"] <= 100.0
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["top1"] > 50.0  # chance is 10 %
    # one warm-up epoch reaches the peak LR, the cosine ends at zero
    assert history[0]["lr"] == pytest.approx(1e-2)
    assert history[1]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_without_callback_and_with_a_train_set_smaller_than_a_batch(digits8):
    small = ClassificationData(train=Subset(digits8.train, range(10)), val=Subset(digits8.val, range(20)),
                               num_classes=10, in_chans=3, image_size=8, name="digits")
    history = train_classifier(_linear(), small, TrainConfig(epochs=1, batch_size=128))
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])


def _run(data: ClassificationData, seed: int) -> list[tuple]:
    torch.manual_seed(seed)  # the model's init is the caller's, as in ablate.run.trial.run_trial
    history = train_classifier(_linear(), data, TrainConfig(epochs=2, batch_size=64, lr=5e-3, seed=seed))
    return [(m["epoch"], m["train_loss"], m["top1"], m["lr"]) for m in history]


def test_same_seed_gives_identical_history(digits8):
    first, second = _run(digits8, seed=3), _run(digits8, seed=3)
    assert first == second  # exact: losses, accuracies and learning rates
    assert _run(digits8, seed=4) != first


class _NaNAfter(nn.Module):
    """A linear probe whose output turns NaN after ``steps`` training forwards."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.net = _linear()
        self.steps = steps
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)  # B, 10
        if self.training:
            self.calls += 1
            if self.calls > self.steps:
                out = out * float("nan")
        return out


def test_nan_loss_raises_training_diverged_naming_the_epoch(digits8):
    cfg = TrainConfig(epochs=3, batch_size=128, lr=1e-3)
    steps_per_epoch = len(digits8.train) // cfg.batch_size  # drop_last
    seen: list[dict] = []
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2 \(lr=0\.001\)") as info:
        train_classifier(_NaNAfter(steps_per_epoch), digits8, cfg, on_epoch=seen.append)
    assert isinstance(info.value, AblateError) and isinstance(info.value, ArithmeticError)
    assert "lower train.lr" in str(info.value)
    assert [m["epoch"] for m in seen] == [1]  # the finished epoch was still reported


def test_nan_in_the_first_epoch(digits8):
    with pytest.raises(TrainingDiverged, match="at epoch 1"):
        train_classifier(_NaNAfter(0), digits8, TrainConfig(epochs=1, batch_size=256))


# --------------------------------------------------------------------------- a real ViT


def test_tiny_focal_vit_trains_one_epoch():
    from ablate.models import build

    model = build({"attention": "focal", "depths": [1, 1], "embed_dim": 16, "num_heads": 2, "img_size": 16,
                   "num_classes": 10, "window_size": 2, "expand_size": 1})  # Focal-T's expand_size 3 > window 2
    data = load_classification("digits", image_size=16)
    data = ClassificationData(train=Subset(data.train, range(256)), val=Subset(data.val, range(128)),
                              num_classes=10, in_chans=3, image_size=16, name="digits")
    seen: list[dict] = []
    history = train_classifier(model, data, TrainConfig(epochs=1, batch_size=64), on_epoch=seen.append)
    assert len(seen) == 1 and set(history[0]) == EPOCH_KEYS
    assert math.isfinite(history[0]["train_loss"]) and 0.0 <= history[0]["top1"] <= 100.0
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_warmup_longer_than_training_still_anneals():
    import torch
    from torch import nn

    from ablate.data import load_classification
    from ablate.train import TrainConfig, train_classifier

    data = load_classification("digits", image_size=8)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    history = train_classifier(model, data, TrainConfig(epochs=1, batch_size=256, lr=1e-2, warmup_epochs=1.0))
    assert history[-1]["lr"] < 1e-2 * 0.5


class _WithAux(nn.Module):
    """A linear probe that leaves an auxiliary loss, as LaViT's diagonality loss does."""

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.net = _linear()
        self.weight = weight
        self.aux_loss: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.aux_loss = self.weight * self.net[1].weight.square().sum() if self.weight else None
        return self.net(x)  # B, 10


def test_the_models_aux_loss_is_added_and_trained(digits8):
    cfg = TrainConfig(epochs=1, batch_size=64, lr=1e-2, seed=0)
    torch.manual_seed(0)
    without = _WithAux(0.0)
    plain = train_classifier(without, digits8, cfg)
    torch.manual_seed(0)
    model = _WithAux(10.0)
    with_aux = train_classifier(model, digits8, cfg)
    assert with_aux[0]["train_loss"] > plain[0]["train_loss"]  # the weighted penalty is in the loss
    # and its gradient reaches the weights: the penalised run ends with smaller ones
    assert model.net[1].weight.norm() < 0.9 * without.net[1].weight.norm()
