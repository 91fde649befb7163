"""One trial, without Ray: candidate → model → costs → training → per-epoch reports.

The runner wraps :func:`run_trial` in a Ray Tune trainable; tests and users can call it
directly. Every report carries the cost figures too, so a trial stopped early by the
scheduler still has them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ablate.study import Study

__all__ = ["TrialFn", "candidate_arch", "paper_arch", "finite", "run_trial", "measure_costs", "study_costs"]

#: What the runner calls for each trial: ``fn(study, params, report, device=..., repeat=...)``.
TrialFn = Callable[..., dict]


def detection_data(study: Study) -> Path:
    """The data YAML a detection study trains on: the user's, or the cached synthetic set."""
    from ablate.data.detection import default_detection_data

    return Path(study.data.path) if study.data.name == "yolo" else default_detection_data()


def candidate_arch(study: Study, params: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved architecture of one candidate, data-derived keys included."""
    return _resolve(study, study.candidate(params), with_data=True)


def paper_arch(study: Study, params: Mapping[str, Any]) -> dict[str, Any] | None:
    """The resolved paper-scale model of one candidate at ``paper_resolution`` (None without one).

    With a ``base`` the preset keeps its own classes (the paper's cost column); without
    one it is the trained candidate at the paper's resolution.
    """
    raw = study.paper_candidate(params)
    return None if raw is None else _resolve(study, raw, with_data=study.base is None)


def _resolve(study: Study, arch: dict[str, Any], *, with_data: bool) -> dict[str, Any]:
    from ablate.data import num_classes_of

    if study.task == "detect":
        from ablate.data.detection import check_detection_data
        from ablate.models.yolo import resolve_yolo_arch

        if with_data:
            arch.setdefault("nc", check_detection_data(detection_data(study)).nc)
        return resolve_yolo_arch(arch)
    from ablate.models import resolve_arch

    if with_data:
        arch.setdefault("num_classes", num_classes_of(study.data.name, study.data.path))
    arch.setdefault("in_chans", 3)
    return resolve_arch(arch)


def study_costs(study: Study, params: Mapping[str, Any], *, latency: bool = False,
                model: "torch.nn.Module | None" = None) -> dict[str, float]:
    """Every cost figure a trial of ``study`` stores (see :func:`measure_costs`)."""
    return measure_costs(candidate_arch(study, params), paper=paper_arch(study, params), latency=latency,
                         model=model)


def measure_costs(arch: Mapping[str, Any], *, paper: Mapping[str, Any] | None = None,
                  paper_resolution: int | None = None, latency: bool = False,
                  model: "torch.nn.Module | None" = None) -> dict[str, float]:
    """Params (millions) and multiply-adds (1e9) of what trains and of its paper-scale model.

    ``params_m`` / ``gflops``: the trained model at its ``img_size``. ``params_m_paper`` /
    ``gflops_paper``: the resolved ``paper`` arch at its own ``img_size`` (or, given only
    ``paper_resolution``, the trained arch at that size), the papers' cost column. YOLO
    adds ``gflops_ultralytics``: what ultralytics prints for the paper-scale model at 640.
    ``latency_ms`` is a CPU batch-1 forward when asked for. Pass ``model`` (built from
    ``arch``) to measure it instead of building another.
    """
    from ablate.measure import measure_latency, profile

    yolo = "base" in arch
    if yolo:
        from ablate.measure import ultralytics_gflops
        from ablate.models.yolo import build_yolo as build
    else:
        from ablate.models import build

    if paper is None and paper_resolution:
        paper = {**arch, "img_size": paper_resolution}
    in_chans = 3 if yolo else int(arch.get("in_chans", 3))
    model = model if model is not None else build(arch)
    size = int(arch["img_size"])
    costs = profile(model, size, in_chans=in_chans)
    paper_model = model
    if paper is not None:
        same = {k: v for k, v in paper.items() if k != "img_size"} == {k: v for k, v in arch.items() if k != "img_size"}
        paper_size = int(paper["img_size"])
        # A ViT's position tables depend on img_size, so only an identical arch reuses the model.
        paper_model = model if same and (yolo or paper_size == size) else build(paper)
        measured = costs if paper_model is model and paper_size == size else profile(paper_model, paper_size,
                                                                                    in_chans=in_chans)
        costs["params_m_paper"] = measured["params_m"]
        costs["gflops_paper"] = measured["gflops"]
    if yolo:
        costs["gflops_ultralytics"] = ultralytics_gflops(paper_model, 640)
    if latency:
        costs["latency_ms"] = measure_latency(model, size)
    return costs


def run_trial(study: Study, params: Mapping[str, Any], report: Callable[[dict], None], *,
              device: str = "cpu", repeat: int = 0) -> dict:
    """Build, measure and train one candidate; ``report`` receives one dict per epoch.

    ``repeat`` picks the seed (``train.seed + repeat``): initialisation, data order and
    augmentation change with it, the train/validation split does not. The training split
    gets the recipe's training transform, the validation split its evaluation transform
    (:func:`ablate.train.recipe_transforms`); loader workers follow ``data.num_workers``
    when set, else the trial's device and ``resources.cpu`` (:func:`ablate.data.loader_workers`).

    Each report holds the epoch's metrics, the cost figures and ``epochs_done`` (flat
    numbers only: Ray flattens nested results; the driver stores ``arch`` itself).
    Returns the last report. Raises on failure (the runner records the message).
    """
    from ablate.data import load_classification
    from ablate.models import build
    from ablate.train import TrainConfig, recipe_transforms, train_classifier

    if study.task == "detect":
        return _run_detect_trial(study, params, report, device=device, repeat=repeat)
    arch = candidate_arch(study, params)
    train = study.train_for(params, repeat=repeat)
    cfg = TrainConfig(epochs=train.epochs, batch_size=train.batch_size, lr=train.effective_lr,
                      weight_decay=train.weight_decay, warmup_epochs=train.warmup_epochs,
                      label_smoothing=train.label_smoothing, seed=train.seed, amp=train.amp, device=device,
                      recipe=train.recipe, randaugment=train.randaugment, random_erasing=train.random_erasing,
                      mixup=train.mixup, cutmix=train.cutmix, clip_grad=train.clip_grad, ema_decay=train.ema_decay,
                      num_workers=study.data.num_workers, cpus=study.resources.cpu)
    train_tf, eval_tf = recipe_transforms(cfg, study.data.image_size)
    data = load_classification(study.data.name, path=study.data.path, image_size=study.data.image_size,
                               val_fraction=study.data.val_fraction, train_transform=train_tf, eval_transform=eval_tf)
    torch.manual_seed(train.seed)
    model = build(arch)
    wants_latency = any(o.name == "latency_ms" for o in study.objectives)
    costs = measure_costs(arch, paper=paper_arch(study, params), latency=wants_latency, model=model)
    on_epoch = _EpochReporter(report, costs)
    train_classifier(model, data, cfg, on_epoch)
    return on_epoch.last


def _run_detect_trial(study: Study, params: Mapping[str, Any], report: Callable[[dict], None], *,
                      device: str, repeat: int = 0) -> dict:
    """A YOLO candidate through ultralytics' trainer (:mod:`ablate.train.detect`)."""
    from ablate.models.yolo import build_yolo
    from ablate.train.detect import DetectConfig, train_detector

    data_yaml = detection_data(study)
    arch = candidate_arch(study, params)
    train = study.train_for(params, repeat=repeat)
    cfg = DetectConfig(epochs=train.epochs, batch_size=train.batch_size, image_size=study.data.image_size,
                       lr=train.effective_lr, weight_decay=train.weight_decay, warmup_epochs=train.warmup_epochs,
                       seed=train.seed, amp=train.amp, device=device, workers=study.data.num_workers or 0)
    torch.manual_seed(train.seed)
    wants_latency = any(o.name == "latency_ms" for o in study.objectives)
    costs = measure_costs(arch, paper=paper_arch(study, params), latency=wants_latency, model=build_yolo(arch))
    on_epoch = _EpochReporter(report, costs)
    train_detector(arch, data_yaml, cfg, on_epoch)
    return on_epoch.last


class _EpochReporter:
    """Adds the cost figures and ``epochs_done`` to each epoch's metrics and reports them.

    ``wall_s`` is the worker's to add (:mod:`ablate.run.ray_tune`), once, for any trial function.
    """

    def __init__(self, report: Callable[[dict], None], costs: Mapping[str, float]) -> None:
        self.report, self.costs = report, dict(costs)
        self.last: dict = {}

    def __call__(self, metrics: dict) -> None:
        self.last = {**metrics, **self.costs, "epochs_done": metrics["epoch"]}
        self.report(self.last)


def finite(value: Any) -> bool:
    """True for a real, finite number (objective values must be)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
