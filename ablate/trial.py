"""One trial, without Ray: candidate → model → costs → training → per-epoch reports.

The runner wraps :func:`run_trial` in a Ray Tune trainable; tests and users can call it
directly. Every report carries the cost figures too, so a trial stopped early by the
scheduler still has them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ablate.config import Study

__all__ = ["TrialFn", "candidate_arch", "finite", "run_trial", "measure_costs"]

#: What the runner calls for each trial: ``fn(study, params, report, device=...)``.
TrialFn = Callable[..., dict]


def detection_data(study: Study) -> Path:
    """The data YAML a detection study trains on: the user's, or the cached synthetic set."""
    from ablate.data.detection import default_detection_data

    return Path(study.data.path) if study.data.name == "yolo" else default_detection_data()


def candidate_arch(study: Study, params: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved architecture of one candidate, data-derived keys included."""
    from ablate.data import num_classes_of

    arch = study.candidate(params)
    if study.task == "detect":
        from ablate.data.detection import check_detection_data
        from ablate.models.yolo import resolve_yolo_arch

        arch.setdefault("nc", check_detection_data(detection_data(study)).nc)
        return resolve_yolo_arch(arch)
    from ablate.models import resolve_arch

    arch.setdefault("num_classes", num_classes_of(study.data.name, study.data.path))
    arch.setdefault("in_chans", 3)
    return resolve_arch(arch)


def measure_costs(arch: Mapping[str, Any], *, paper_resolution: int | None = None,
                  latency: bool = False, model: "torch.nn.Module | None" = None) -> dict[str, float]:
    """Params (millions) and multiply-adds (1e9) at the training and paper resolutions.

    ``gflops_paper`` is the same architecture at ``paper_resolution`` (the papers' cost
    column), ``latency_ms`` a CPU batch-1 forward when asked for. Pass ``model`` (built
    from ``arch``) to measure it instead of building another.
    """
    from ablate.measure import measure_latency, profile

    if "base" in arch:  # a YOLO candidate
        return _yolo_costs(arch, paper_resolution=paper_resolution, latency=latency, model=model)
    from ablate.models import build

    model = model if model is not None else build(arch)
    size = int(arch["img_size"])
    costs = profile(model, size, in_chans=int(arch.get("in_chans", 3)))
    if paper_resolution:
        paper = build({**arch, "img_size": paper_resolution})
        costs["gflops_paper"] = profile(paper, paper_resolution, in_chans=int(arch.get("in_chans", 3)))["gflops"]
    if latency:
        costs["latency_ms"] = measure_latency(model, size)
    return costs


def _yolo_costs(arch: Mapping[str, Any], *, paper_resolution: int | None, latency: bool,
                model: "torch.nn.Module | None") -> dict[str, float]:
    """YOLO costs: multiply-adds at the training size and at ``paper_resolution``, and
    ``gflops_ultralytics`` (what ultralytics prints at 640; see ``ultralytics_gflops``)."""
    from ablate.measure import measure_latency, profile
    from ablate.models.yolo import build_yolo, ultralytics_gflops

    model = model if model is not None else build_yolo(arch)
    size = int(arch["img_size"])
    costs = profile(model, size, in_chans=3)
    at_640 = costs["gflops"] if size == 640 else profile(model, 640, in_chans=3)["gflops"]
    costs["gflops_ultralytics"] = ultralytics_gflops(model, 640)
    if paper_resolution:
        costs["gflops_paper"] = at_640 if paper_resolution == 640 else profile(model, paper_resolution, 3)["gflops"]
    if latency:
        costs["latency_ms"] = measure_latency(model, size)
    return costs


def run_trial(study: Study, params: Mapping[str, Any], report: Callable[[dict], None], *,
              device: str = "cpu") -> dict:
    """Build, measure and train one candidate; ``report`` receives one dict per epoch.

    Each report holds the epoch's metrics, the cost figures and ``epochs_done`` (flat
    numbers only: Ray flattens nested results; the driver stores ``arch`` itself).
    Returns the last report. Raises on failure (the runner records the message).
    """
    from ablate.data import load_classification
    from ablate.models import build
    from ablate.train import TrainConfig, train_classifier

    if study.task == "detect":
        return _run_detect_trial(study, params, report, device=device)
    start = time.perf_counter()
    arch = candidate_arch(study, params)
    data = load_classification(study.data.name, path=study.data.path, image_size=study.data.image_size,
                               val_fraction=study.data.val_fraction)
    train = study.train_for(params)
    cfg = TrainConfig(epochs=train.epochs, batch_size=train.batch_size, lr=train.lr,
                      weight_decay=train.weight_decay, warmup_epochs=train.warmup_epochs,
                      label_smoothing=train.label_smoothing, seed=train.seed, amp=train.amp, device=device)
    torch.manual_seed(train.seed)
    model = build(arch)
    wants_latency = any(o.name == "latency_ms" for o in study.objectives)
    costs = measure_costs(arch, paper_resolution=study.paper_resolution, latency=wants_latency, model=model)
    on_epoch = _EpochReporter(report, costs, start)
    train_classifier(model, data, cfg, on_epoch)
    return on_epoch.last


def _run_detect_trial(study: Study, params: Mapping[str, Any], report: Callable[[dict], None], *,
                      device: str) -> dict:
    """A YOLO candidate through ultralytics' trainer (:mod:`ablate.train.detect`)."""
    from ablate.models.yolo import build_yolo
    from ablate.train.detect import DetectConfig, train_detector

    start = time.perf_counter()
    data_yaml = detection_data(study)
    arch = candidate_arch(study, params)
    train = study.train_for(params)
    cfg = DetectConfig(epochs=train.epochs, batch_size=train.batch_size, image_size=study.data.image_size,
                       lr=train.lr, weight_decay=train.weight_decay, warmup_epochs=train.warmup_epochs,
                       seed=train.seed, amp=train.amp, device=device, workers=study.data.num_workers)
    torch.manual_seed(train.seed)
    wants_latency = any(o.name == "latency_ms" for o in study.objectives)
    costs = measure_costs(arch, paper_resolution=study.paper_resolution, latency=wants_latency,
                          model=build_yolo(arch))
    on_epoch = _EpochReporter(report, costs, start)
    train_detector(arch, data_yaml, cfg, on_epoch)
    return on_epoch.last


class _EpochReporter:
    """Adds the cost figures, ``epochs_done`` and ``wall_s`` to each epoch's metrics and reports them."""

    def __init__(self, report: Callable[[dict], None], costs: Mapping[str, float], start: float) -> None:
        self.report, self.costs, self.start = report, dict(costs), start
        self.last: dict = {}

    def __call__(self, metrics: dict) -> None:
        self.last = {**metrics, **self.costs, "epochs_done": metrics["epoch"],
                     "wall_s": time.perf_counter() - self.start}
        self.report(self.last)


def finite(value: Any) -> bool:
    """True for a real, finite number (objective values must be)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
