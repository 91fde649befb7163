"""Image-classification training: the ``proxy`` and ``deit`` recipes in one seeded loop.

The loop reports each epoch through ``on_epoch(metrics)``; it knows nothing of Ray, so it
can be unit-tested and reused. A scheduler that wants to stop a trial early does so from
outside (Ray stops the worker at the next report).

What a recipe changes is data, not code: :class:`TrainConfig` carries every recipe key
(:mod:`ablate.train.recipes`) and each key acts the same under every recipe. The parts are
timm's maintained ones, as DeiT's and Swin's codes use them:

* AdamW through ``timm.optim.create_optimizer_v2``: no weight decay on norms, biases and
  the model's ``no_weight_decay()`` names (position tables, relative-position bias tables,
  class tokens: each family's official list, see ``HierarchicalViT.no_weight_decay``);
* a per-step schedule: linear warm-up, then cosine to zero (:func:`warmup_cosine`);
* ``timm.data.Mixup`` (mixup / cutmix, switched with probability 0.5, label smoothing
  inside it) with ``timm.loss.SoftTargetCrossEntropy`` when ``mixup`` or ``cutmix`` > 0,
  else cross-entropy with ``label_smoothing`` (the same function as timm's
  ``LabelSmoothingCrossEntropy``);
* gradient-norm clipping (``timm.utils.dispatch_clip_grad``) when ``clip_grad`` > 0;
* a model EMA (``timm.utils.ModelEmaV3``) when ``ema_decay`` > 0.

Image transforms come with the data (:func:`recipe_transforms` gives the recipe's pair).

On CUDA the loop also trains in channels-last memory format and under autocast: bfloat16
where the GPU supports it, else float16 with a gradient scaler; loader workers come from
the trial's CPUs (:func:`ablate.data.loader_workers`) with pinned memory and persistent
workers. The CPU trains in float32.

With ``compile`` the training and evaluation forward passes run through ``torch.compile``
(inductor); the optimiser, clipping, the EMA, checkpoints (``state_dict``) and FLOP counts
keep the module itself, so parameter names and counted costs do not change. The first steps
pay the compilation (and one more for evaluation, whose grad mode and dropout differ).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ablate.data import ClassificationData, classification_transforms, loader_workers
from ablate.errors import AblateError
from ablate.train.recipes import BUDGET, RECIPES

__all__ = ["TrainConfig", "TrainingDiverged", "autocast_dtype", "compile_model", "recipe_transforms",
           "train_classifier", "warmup_cosine"]

#: DeiT ``--mixup-switch-prob`` / Swin ``AUG.MIXUP_SWITCH_PROB``: cutmix instead of mixup
#: for this share of the batches when both are on.
MIXUP_SWITCH_PROB = 0.5


class TrainingDiverged(AblateError, ArithmeticError):
    """The loss became NaN or infinite: the trial is recorded as failed with this message."""


#: The recipe a config without one trains with.
_PROXY = RECIPES["proxy"]


@dataclass(frozen=True)
class TrainConfig:
    """The training budget, recipe and data-path settings of one trial.

    The defaults are the ``proxy`` recipe's table and the budget a study file defaults to
    (:data:`ablate.train.recipes.BUDGET`): one set of training defaults for the project.

    Attributes:
        epochs: Passes over the training split.
        batch_size: Images per optimiser step.
        lr: The peak learning rate the optimiser sees (a study's ``effective_lr``,
            already scaled to the batch).
        weight_decay: AdamW's decoupled decay of the weights that take it.
        warmup_epochs: Epochs of linear warm-up (at most half of training warms up).
        label_smoothing: Target smoothing, also inside mixup's soft targets.
        seed: Seeds data order, augmentation, mixing and dropout (not the split; the model's
            initialisation is the caller's).
        amp: Autocast on CUDA (bf16, else fp16 with a gradient scaler); ignored on the CPU.
        device: The torch device.
        recipe: ``proxy`` or ``deit``: picks the image pipeline (:func:`recipe_transforms`).
        randaugment: timm's RandAugment string for training images, empty for none.
        random_erasing: Probability of random erasing of training images.
        mixup: Mixup's beta-distribution alpha (0: off).
        cutmix: CutMix's alpha (0: off).
        clip_grad: Max global gradient norm (0: no clipping).
        ema_decay: Decay of a model EMA evaluated beside the model (0: no EMA).
        num_workers: Loader workers; None derives them (:func:`ablate.data.loader_workers`).
        cpus: The trial's CPU share, from which workers are derived.
        channels_last: Channels-last memory format; None means on CUDA only.
        compile: Run the model's forward (train and eval) through ``torch.compile``; needs
            the host's C++ compiler on the CPU (:func:`ablate.train.toolchain.missing_compiler`).
    """

    epochs: int = BUDGET["epochs"]
    batch_size: int = BUDGET["batch_size"]
    lr: float = _PROXY["lr"]
    weight_decay: float = _PROXY["weight_decay"]
    warmup_epochs: float = _PROXY["warmup_epochs"]
    label_smoothing: float = _PROXY["label_smoothing"]
    seed: int = 0
    amp: bool = _PROXY["amp"]
    device: str = "cpu"
    recipe: str = "proxy"
    randaugment: str = _PROXY["randaugment"]
    random_erasing: float = _PROXY["random_erasing"]
    mixup: float = _PROXY["mixup"]
    cutmix: float = _PROXY["cutmix"]
    clip_grad: float = _PROXY["clip_grad"]
    ema_decay: float = _PROXY["ema_decay"]
    num_workers: int | None = None
    cpus: float = 1.0
    channels_last: bool | None = None
    compile: bool = False

    @classmethod
    def for_recipe(cls, recipe: str, **overrides: Any) -> TrainConfig:
        """A config with every value of ``recipe``'s table (:data:`ablate.train.recipes.RECIPES`).

        The table's ``lr`` is scaled to ``batch_size`` by its ``lr_batch``, as a study's
        ``effective_lr`` is; keyword arguments (any field) win over the table.

        Raises:
            KeyError: an unknown recipe.
        """
        from ablate.train.recipes import RECIPES

        table = dict(RECIPES[recipe])
        lr_batch = table.pop("lr_batch")
        batch_size = overrides.get("batch_size", cls.batch_size)
        table["lr"] = table["lr"] * batch_size / lr_batch if lr_batch else table["lr"]
        return cls(**{**table, "recipe": recipe, **overrides})

    @property
    def mixing(self) -> bool:
        """Whether batches are mixed (mixup or cutmix on), with soft targets."""
        return self.mixup > 0 or self.cutmix > 0

    @property
    def augmented(self) -> bool:
        """Whether the training transform is random."""
        return self.recipe == "deit" or bool(self.randaugment) or self.random_erasing > 0


def recipe_transforms(cfg: TrainConfig, image_size: int) -> tuple[Callable[[Any], torch.Tensor],
                                                                  Callable[[Any], torch.Tensor]]:
    """The ``(train, eval)`` image transforms of ``cfg``'s recipe, for ``load_classification``."""
    return classification_transforms(image_size, recipe=cfg.recipe, randaugment=cfg.randaugment,
                                     random_erasing=cfg.random_erasing)


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier: linear warm-up to 1, then cosine decay to 0."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype of a trial: bfloat16 on GPUs that support it, else float16 (which
    needs a gradient scaler); None (float32) on the CPU or with ``amp`` off."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _seed_everything(seed: int) -> None:
    """Seed every generator the loop draws from in this process: torch (init by the caller,
    dropout, drop path, random erasing), ``random`` (crops, RandAugment) and numpy
    (RandAugment's choices, mixup's lambda). Loader workers are seeded from the loader."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _loaders(data: ClassificationData, cfg: TrainConfig, device: torch.device) -> tuple[DataLoader, DataLoader]:
    workers = loader_workers(cfg.num_workers, device=str(device), cpus=cfg.cpus, in_memory=data.in_memory,
                             augmented=cfg.augmented)
    common: dict[str, Any] = dict(num_workers=workers, pin_memory=device.type == "cuda",
                                  persistent_workers=workers > 0)
    # Own generators: the shuffle order and each worker's seed follow cfg.seed alone.
    train = DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True, drop_last=len(data.train) > cfg.batch_size,
                       generator=torch.Generator().manual_seed(cfg.seed), **common)
    val = DataLoader(data.val, batch_size=max(cfg.batch_size, 256),
                     generator=torch.Generator().manual_seed(cfg.seed + 1), **common)
    return train, val


def compile_model(model: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    """``torch.compile(model)`` once the compiler it needs on ``device`` was found.

    The result shares ``model``'s parameters and buffers; keep using ``model`` itself for
    ``state_dict``, the optimiser, an EMA and FLOP counts. Compilation happens lazily, at
    the first call, and again when grad mode, train/eval mode or a shape changes (a trial
    compiles its training batch, the evaluation batch and the last, shorter evaluation
    batch). Shapes are static (``dynamic=False``): torch's automatic dynamic shapes make a
    mixer compiled apart after a graph break (Focal's had one, called with each stage's map
    size) symbolic, and inductor 2.14 then failed on it ("cannot determine truth value of
    Relational"); a frame recompiled more than torch's limit (8) runs eagerly. Torch's
    compilation caches are reset first (``torch.compiler.reset``), so an earlier model in
    this process (a previous trial in a reused Ray worker) does not use up that limit.

    Raises:
        EnvironmentProblem: no C++ compiler (CPU) or C compiler (CUDA) was found.
    """
    from ablate.train.toolchain import require_compiler

    require_compiler(str(torch.device(device)))
    # A trial process trains one model at a time, and Ray reuses it for the next trial: torch
    # counts recompilations per Python function (every model's ``forward`` is one), so without
    # a reset the ninth compiled model would silently train eagerly.
    torch.compiler.reset()
    return torch.compile(model, dynamic=False)


def _evaluate(model: nn.Module, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None,
              channels_last: bool) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        for images, labels in loader:
            images = images.to(device, non_blocking=True)  # B, 3, H, W
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            logits = model(images)  # B, K
            correct += (logits.argmax(dim=1).cpu() == labels).sum().item()
            total += labels.numel()
    return 100.0 * correct / max(1, total)


def train_classifier(model: nn.Module, data: ClassificationData, cfg: TrainConfig,
                     on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``model`` on ``data`` and return one metrics dict per epoch.

    Each dict holds ``epoch`` (1-based), ``train_loss`` (against the mixed soft targets
    when mixing), ``top1`` (validation, percent, of the trained model itself), ``lr`` (at
    the epoch's end) and ``epoch_s`` (training and evaluation). With a model EMA it also
    holds ``top1_ema``, the EMA weights' accuracy: ``top1`` stays the trained model's, the
    number DeiT's and Swin's codes report (DeiT keeps its EMA only in checkpoints; FLatten
    logs both), so a study's objective means the same with or without an EMA.
    ``train_loss`` includes the model's ``aux_loss`` (LaViT's diagonality loss) when it
    has one.

    Seeding: ``cfg.seed`` seeds data order, augmentation, mixing, dropout and drop path;
    the same seed on the same device and worker count gives the same metrics. The
    train/validation split is the data's and does not change with it. With mixing, an odd
    batch loses its last image (mixing pairs images within the batch).

    With ``cfg.compile`` the forward passes run compiled (:func:`compile_model`); the
    metrics agree with an eager run to float rounding, not bit for bit.

    Raises:
        TrainingDiverged: on a non-finite loss.
        EnvironmentProblem: ``cfg.compile`` without the compiler it needs.
    """
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.utils import ModelEmaV3, dispatch_clip_grad

    _seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp_dtype = autocast_dtype(device, cfg.amp)
    # The compiled wrapper runs the forward passes; ``model`` stays what the optimiser, the
    # EMA and the caller's state_dict see (its parameter names carry no ``_orig_mod.``).
    forward = compile_model(model, device) if cfg.compile else model
    train_loader, val_loader = _loaders(data, cfg, device)
    optimizer = create_optimizer_v2(model, opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(train_loader))
    total = steps_per_epoch * cfg.epochs
    # At most half of training warms up, so that even a one-epoch run anneals its rate.
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total // 2)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total, warmup))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    mixup = (Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=1.0, switch_prob=MIXUP_SWITCH_PROB,
                   mode="batch", label_smoothing=cfg.label_smoothing, num_classes=data.num_classes)
             if cfg.mixing else None)
    loss_fn: nn.Module = SoftTargetCrossEntropy() if mixup else nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema_decay > 0 else None
    history: list[dict] = []
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        model.train()
        loss_sum, seen = 0.0, 0
        for images, labels in train_loader:
            images = images.to(device, non_blocking=True)  # B, 3, H, W
            targets = labels.to(device, non_blocking=True)  # B
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            if mixup is not None:
                if len(images) % 2:  # Mixup pairs image i with image B-1-i
                    images, targets = images[:-1], targets[:-1]
                if len(images) == 0:
                    continue
                images, targets = mixup(images, targets)  # B, 3, H, W mixed; B, K soft targets
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = loss_fn(forward(images), targets)
                aux = getattr(model, "aux_loss", None)  # e.g. LaViT's diagonality loss, already weighted
                if aux is not None:
                    loss = loss + aux
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"loss became {loss.item()} at epoch {epoch} (lr={cfg.lr:g}); "
                                       "lower train.lr or check the architecture")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.clip_grad > 0:
                scaler.unscale_(optimizer)  # clip the true gradients (a no-op without a scaler)
                dispatch_clip_grad(model.parameters(), cfg.clip_grad, mode="norm")
            scaler.step(optimizer)
            scaler.update()
            sched.step()
            step += 1
            if ema is not None:
                ema.update(model, step=step)
            loss_sum += loss.item() * len(images)
            seen += len(images)
        metrics = {
            "epoch": epoch,
            "train_loss": loss_sum / max(1, seen),
            "top1": _evaluate(forward, val_loader, device, amp_dtype, channels_last),
            "lr": optimizer.param_groups[0]["lr"],
        }
        if ema is not None:
            metrics["top1_ema"] = _evaluate(ema.module, val_loader, device, amp_dtype, channels_last)
        metrics["epoch_s"] = time.perf_counter() - start
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
    return history
