"""Detection training through ultralytics' own trainer, with an ablate candidate as the model.

Ultralytics' supported way to train a custom model is a ``DetectionTrainer`` subclass
whose ``get_model`` builds it (DESIGN.md, known traps); everything else — data loading and
augmentation, the loss, EMA, validation and mAP — is ultralytics' code, so a candidate's
``map50_95`` means what it means in ultralytics. Per-epoch metrics leave through the
``on_fit_epoch_end`` callback as plain dicts, so this module knows nothing of Ray.

Offline by construction: ultralytics comes from :mod:`ablate.models.yolo.upstream`, which
switches its network paths off before importing it, plots are off (fonts), and the AMP check — which downloads
``yolo11n.pt`` on CUDA — is skipped: AMP is off unless asked for, and when asked for on
CUDA the check is replaced by "AMP works" for the duration of the call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ablate.models import Architecture, build_model, resolve_architecture
from ablate.train.classify import TrainingDiverged

__all__ = ["DetectConfig", "train_detector"]


@dataclasses.dataclass(frozen=True)
class DetectConfig:
    """What one detection trial trains with (ultralytics argument names in comments).

    Attributes:
        epochs: passes over the training images (``epochs``).
        batch_size: images per step (``batch``).
        image_size: square training and validation size (``imgsz``).
        lr: initial learning rate of AdamW (``lr0``; ``optimizer='AdamW'``).
        weight_decay: AdamW weight decay (``weight_decay``).
        warmup_epochs: linear warm-up (``warmup_epochs``), capped at half of training.
        seed: seeds ultralytics' RNGs (``seed``, ``deterministic``).
        amp: mixed precision on CUDA (``amp``); always off on CPU.
        device: ``"cpu"`` or ``"cuda"``.
        workers: data-loader worker processes (``workers``; 0 keeps a trial single-process).
        compile: ``torch.compile`` the model (``compile``: ultralytics compiles the forward
            and computes the loss outside the graph; its EMA and checkpoints keep the module).
        weights: a local ultralytics ``.pt`` the model starts from (ultralytics' ``pretrained``;
            every tensor matching by name and shape, :func:`ablate.models.transfer.transfer_weights`);
            None: from scratch.
    """

    epochs: int = 3
    batch_size: int = 16
    image_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0005
    warmup_epochs: float = 1.0
    seed: int = 0
    amp: bool = False
    device: str = "cpu"
    workers: int = 0
    compile: bool = False
    weights: str | None = None


def _metric(metrics: Mapping[str, Any], *names: str) -> float | None:
    for name in names:
        if name in metrics:
            return float(metrics[name])
    return None


def train_detector(arch: Mapping[str, Any] | Architecture, data_yaml: str | Path, cfg: DetectConfig,
                   on_epoch: Callable[[dict], None] | None = None, *,
                   build: Callable[[Architecture], Any] | None = None,
                   workdir: str | Path | None = None) -> list[dict]:
    """Train a YOLO candidate on a YOLO-format data set and return one metrics dict per epoch.

    Args:
        arch: a detect :class:`~ablate.models.Architecture` (or YOLO arch keys, resolved
            here once); the head's ``nc`` is taken from the data set.
        data_yaml: an ultralytics data YAML (the synthetic set's, or the user's).
        cfg: the training settings.
        on_epoch: called after each epoch's validation with ``epoch`` (1-based),
            ``map50_95``, ``map50``, ``precision``, ``recall``, ``train_loss`` (box + cls +
            dfl) and ``lr``; with ``cfg.weights`` also ``weights_transferred`` and ``weights_total``.
        build: ``Architecture -> DetectionModel`` (default :func:`ablate.models.build_model`).
        workdir: where ultralytics writes its run folder (default: a temporary directory,
            removed afterwards).

    Returns:
        The per-epoch dicts.

    Raises:
        ConfigError: ``cfg.weights`` cannot be read or sets no tensor of the model.
        TrainingDiverged: the training loss became NaN or infinite.
        EnvironmentProblem: ``cfg.compile`` without the compiler it needs (ultralytics
            itself would log a warning and train uncompiled).
    """
    from ablate.models.yolo.upstream import detection_trainer

    if cfg.compile:
        from ablate.train.toolchain import require_compiler

        require_compiler(cfg.device)

    DetectionTrainer = detection_trainer()  # noqa: N806 - a class

    resolved = resolve_architecture(arch, "detect")
    build = build or build_model
    train_cfg = cfg  # get_model's own `cfg` argument shadows it there

    history: list[dict] = []
    init: dict[str, int] = {}  # how many tensors came from cfg.weights, on every row

    class CandidateTrainer(DetectionTrainer):
        """``get_model`` builds the candidate instead of reading a model YAML (and starts it
        from ``cfg.weights``, where ultralytics' own ``get_model`` would call ``model.load``)."""

        def get_model(self, cfg: Any = None, weights: Any = None, verbose: bool = True) -> Any:
            arch_nc = resolved.with_classes(int(self.data["nc"]))
            model = build(arch_nc)
            if train_cfg.weights is not None:
                from ablate.models.transfer import transfer_weights

                init.update(transfer_weights(model, arch_nc, train_cfg.weights).counts())
            return model

    def epoch_end(trainer: Any) -> None:
        if trainer.epoch + 1 > cfg.epochs or trainer.epoch + 1 <= len(history):
            return  # ultralytics' final validation of best.pt calls this hook once more
        metrics = dict(trainer.metrics or {})
        items = trainer.label_loss_items(trainer.tloss, prefix="train")  # {"train/box_loss": ..., ...}
        train_loss = float(sum(float(v) for v in items.values()))
        if not math.isfinite(train_loss):
            raise TrainingDiverged(f"loss became {train_loss} at epoch {trainer.epoch + 1} (lr={cfg.lr:g}); "
                                   "try a lower lr")
        row = {
            "epoch": trainer.epoch + 1,
            "map50_95": _metric(metrics, "metrics/mAP50-95(B)") or 0.0,
            "map50": _metric(metrics, "metrics/mAP50(B)") or 0.0,
            "precision": _metric(metrics, "metrics/precision(B)") or 0.0,
            "recall": _metric(metrics, "metrics/recall(B)") or 0.0,
            "train_loss": train_loss,
            "lr": float(next(iter(trainer.lr.values()))) if getattr(trainer, "lr", None) else cfg.lr,
            **init,
        }
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)

    with contextlib.ExitStack() as stack:
        root = Path(workdir) if workdir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        amp = bool(cfg.amp and cfg.device.startswith("cuda"))
        if amp:
            from ablate.models.yolo.upstream import amp_check_skipped

            stack.enter_context(amp_check_skipped())
        overrides = dict(
            model="ablate-candidate.yaml", data=str(data_yaml), epochs=cfg.epochs, batch=cfg.batch_size,
            imgsz=cfg.image_size, optimizer="AdamW", lr0=cfg.lr, lrf=0.01, cos_lr=True,
            weight_decay=cfg.weight_decay, warmup_epochs=min(cfg.warmup_epochs, cfg.epochs / 2),
            seed=cfg.seed, deterministic=True, device=cfg.device, workers=cfg.workers, amp=amp,
            plots=False, val=True, save=True, project=str(root), name="train", exist_ok=True,
            verbose=False, close_mosaic=0, patience=max(cfg.epochs, 1), cache=False, compile=cfg.compile,
        )
        trainer = CandidateTrainer(overrides=overrides)
        trainer.add_callback("on_fit_epoch_end", epoch_end)
        trainer.train()
    return history
