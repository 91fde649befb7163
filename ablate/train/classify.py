"""Image-classification training: AdamW, warm-up then cosine, seeded, AMP on CUDA.

The loop reports each epoch through ``on_epoch(metrics)``; it knows nothing of Ray, so it
can be unit-tested and reused. A scheduler that wants to stop a trial early does so from
outside (Ray stops the worker at the next report).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from ablate.data import ClassificationData
from ablate.errors import AblateError

__all__ = ["TrainConfig", "TrainingDiverged", "train_classifier", "warmup_cosine"]


class TrainingDiverged(AblateError, ArithmeticError):
    """The loss became NaN or infinite: the trial is recorded as failed with this message."""


@dataclass(frozen=True)
class TrainConfig:
    """The training budget and optimiser settings of one trial."""

    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    seed: int = 0
    amp: bool = True
    device: str = "cpu"


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier: linear warm-up to 1, then cosine decay to 0."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            logits = model(images.to(device, non_blocking=True))
            correct += (logits.argmax(dim=1).cpu() == labels).sum().item()
            total += labels.numel()
    return 100.0 * correct / max(1, total)


def train_classifier(model: nn.Module, data: ClassificationData, cfg: TrainConfig,
                     on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``model`` on ``data`` and return one metrics dict per epoch.

    Each dict holds ``epoch`` (1-based), ``train_loss``, ``top1`` (validation, percent),
    ``lr`` (at the epoch's end) and ``epoch_s``. ``train_loss`` includes the model's
    ``aux_loss`` (LaViT's diagonality loss) when it has one. Raises TrainingDiverged on a
    non-finite loss.
    """
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    model = model.to(device)
    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True, generator=generator,
                              drop_last=len(data.train) > cfg.batch_size)
    val_loader = DataLoader(data.val, batch_size=max(cfg.batch_size, 256))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith("bias") else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    steps_per_epoch = max(1, len(train_loader))
    total = steps_per_epoch * cfg.epochs
    # At most half of training warms up, so that even a one-epoch run anneals its rate.
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total // 2)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total, warmup))
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    history: list[dict] = []
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        model.train()
        loss_sum, seen = 0.0, 0
        for images, labels in train_loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, enabled=use_amp):
                loss = loss_fn(model(images), labels)
                aux = getattr(model, "aux_loss", None)  # e.g. LaViT's diagonality loss, already weighted
                if aux is not None:
                    loss = loss + aux
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"loss became {loss.item()} at epoch {epoch} (lr={cfg.lr:g}); "
                                       "lower train.lr or check the architecture")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            sched.step()
            loss_sum += loss.item() * labels.numel()
            seen += labels.numel()
        metrics = {
            "epoch": epoch,
            "train_loss": loss_sum / max(1, seen),
            "top1": _evaluate(model, val_loader, device),
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_s": time.perf_counter() - start,
        }
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
    return history
