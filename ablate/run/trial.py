"""One trial, without Ray: candidate → model → costs → training → per-epoch reports.

The runner wraps :func:`run_trial` in a Ray Tune trainable; tests and users can call it
directly. Every report carries the cost figures too, so a trial stopped early by the
scheduler still has them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ablate.errors import DataError
from ablate.models import Architecture, build_model, resolve_architecture
from ablate.run.candidate import Candidate, detection_data
from ablate.study import Study

__all__ = ["TrialFn", "candidate_arch", "paper_arch", "finite", "run_trial", "measure_costs", "study_costs",
           "data_error_line"]

#: What the runner calls for each trial: ``fn(study, params, report, device=..., repeat=..., candidate=...)``;
#: ``candidate`` is what the driver resolved for ``params`` (:class:`~ablate.run.candidate.Candidate`).
TrialFn = Callable[..., dict]


def candidate_arch(study: Study, params: Mapping[str, Any]) -> Architecture:
    """The architecture one candidate trains (the data set's classes included)."""
    return Candidate.of(study, params).arch


def paper_arch(study: Study, params: Mapping[str, Any]) -> Architecture | None:
    """The paper-scale model of one candidate at ``paper_resolution`` (None without one).

    With a ``base`` the preset keeps its own classes (the paper's cost column); without
    one it is the trained candidate at the paper's resolution.
    """
    return Candidate.of(study, params).paper


def study_costs(study: Study, params: Mapping[str, Any], *, latency: bool = False,
                model: "torch.nn.Module | None" = None) -> dict[str, float]:
    """Every cost figure a trial of ``study`` stores (see :func:`measure_costs`)."""
    candidate = Candidate.of(study, params)
    return measure_costs(candidate.arch, paper=candidate.paper, latency=latency, model=model)


def measure_costs(arch: Architecture, *, paper: Architecture | None = None, paper_resolution: int | None = None,
                  latency: bool = False, model: "torch.nn.Module | None" = None) -> dict[str, float]:
    """Params (millions) and multiply-adds (1e9) of what trains and of its paper-scale model.

    ``params_m`` / ``gflops``: the trained model at its ``img_size``. ``params_m_paper`` /
    ``gflops_paper``: the ``paper`` architecture at its own ``img_size`` (or, given only
    ``paper_resolution``, the trained one at that size), the papers' cost column. YOLO
    adds ``gflops_ultralytics``: what ultralytics prints for the paper-scale model at 640.
    ``latency_ms`` is a CPU batch-1 forward when asked for. Pass ``model`` (built from
    ``arch``) to measure it instead of building another.
    """
    from ablate.measure import measure_latency, profile, ultralytics_gflops

    yolo = arch.task == "detect"
    if paper is None and paper_resolution:
        paper = resolve_architecture({**arch.to_dict(), "img_size": paper_resolution}, arch.task)
    model = model if model is not None else build_model(arch)
    size = arch.img_size
    costs = profile(model, size, in_chans=arch.in_chans)
    paper_model = model
    if paper is not None:
        # A ViT's position tables depend on img_size, so only an identical arch reuses the model.
        same = paper.same_model(arch) and (yolo or paper.img_size == size)
        paper_model = model if same else build_model(paper)
        measured = costs if paper_model is model and paper.img_size == size else profile(
            paper_model, paper.img_size, in_chans=paper.in_chans)
        costs["params_m_paper"] = measured["params_m"]
        costs["gflops_paper"] = measured["gflops"]
    if yolo:
        costs["gflops_ultralytics"] = ultralytics_gflops(paper_model, 640)
    if latency:
        costs["latency_ms"] = measure_latency(model, size)
    return costs


def run_trial(study: Study, params: Mapping[str, Any], report: Callable[[dict], None], *,
              device: str = "cpu", repeat: int = 0, candidate: Candidate | None = None) -> dict:
    """Build, measure and train one candidate; ``report`` receives one dict per epoch.

    ``repeat`` picks the seed (``train.seed + repeat``): initialisation, data order and
    augmentation change with it, the train/validation split does not. The training split
    gets the recipe's training transform, the validation split its evaluation transform
    (:func:`ablate.train.recipe_transforms`); loader workers follow ``data.num_workers``
    when set, else the trial's device and ``resources.cpu`` (:func:`ablate.data.loader_workers`).

    Each report holds the epoch's metrics, the cost figures and ``epochs_done`` (flat
    numbers only: Ray flattens nested results; the driver stores ``arch`` itself).
    ``candidate`` is what the driver resolved for ``params`` (resolved here when not given).
    Returns the last report. Raises on failure (the runner records the message); a data
    problem (a folder gone or changed since validate, an image that does not decode) is a
    :class:`~ablate.errors.DataError` of one line naming the folder or file.
    """
    from ablate.data import load_classification
    from ablate.models.memory import check_memory, device_memory
    from ablate.train import TrainConfig, recipe_transforms, train_classifier

    candidate = candidate if candidate is not None else Candidate.of(study, params)
    if study.task == "detect":
        return _run_detect_trial(study, candidate, report, device=device, repeat=repeat)
    train = study.train_for(params, repeat=repeat)
    # Before anything is allocated: a batch that cannot fit this device fails the trial with
    # the figures, instead of swapping the machine to a halt or dying by the OOM killer.
    check_memory(candidate.arch, batch=train.batch_size, limit=device_memory(device))
    cfg = TrainConfig(epochs=train.epochs, batch_size=train.batch_size, lr=train.effective_lr,
                      weight_decay=train.weight_decay, warmup_epochs=train.warmup_epochs,
                      label_smoothing=train.label_smoothing, seed=train.seed, amp=train.amp, device=device,
                      recipe=train.recipe, randaugment=train.randaugment, random_erasing=train.random_erasing,
                      mixup=train.mixup, cutmix=train.cutmix, clip_grad=train.clip_grad, ema_decay=train.ema_decay,
                      num_workers=study.data.num_workers, cpus=study.resources.cpu, compile=train.compile)
    train_tf, eval_tf = recipe_transforms(cfg, study.data.image_size)
    try:  # the folder may have changed since validate; an image may not decode
        data = load_classification(study.data.name, path=study.data.path, image_size=study.data.image_size,
                                   val_fraction=study.data.val_fraction, train_transform=train_tf,
                                   eval_transform=eval_tf)
        torch.manual_seed(train.seed)
        model = build_model(candidate.arch)
        from ablate.models.transfer import transfer_weights  # weights: name+shape matches, the rest stays fresh

        init = transfer_weights(model, candidate.arch, study.weights.path).counts() if study.weights else {}
        wants_latency = any(o.name == "latency_ms" for o in study.objectives)
        costs = measure_costs(candidate.arch, paper=candidate.paper, latency=wants_latency, model=model)
        on_epoch = _EpochReporter(report, {**costs, **init})
        from ablate.run.checkpoint import saving_weights  # the scored model's file, when the runner asks for one

        train_classifier(model, data, cfg, saving_weights(on_epoch, model, candidate.arch, report, cfg.epochs))
    except DataError as err:
        raise DataError(data_error_line(err)) from None
    return on_epoch.last


def data_error_line(err: DataError) -> str:
    """The one line of a data error, also after a DataLoader worker process re-raised it.

    Torch re-raises a worker's exception in the training process with the worker's whole
    traceback as its message ("Caught DataError in DataLoader worker process 0. Original
    Traceback ..."); the trial's stored ``error`` is the original one line naming the file.
    """
    text = str(err)
    prefix = f"{type(err).__module__}.{type(err).__qualname__}: "
    lines = [line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)]
    return lines[-1].strip() if lines else " ".join(text.split())


def _run_detect_trial(study: Study, candidate: Candidate, report: Callable[[dict], None], *,
                      device: str, repeat: int = 0) -> dict:
    """A YOLO candidate through ultralytics' trainer (:mod:`ablate.train.detect`)."""
    from ablate.train.detect import DetectConfig, train_detector

    data_yaml = detection_data(study)
    train = study.train_for(candidate.params, repeat=repeat)
    cfg = DetectConfig(epochs=train.epochs, batch_size=train.batch_size, image_size=study.data.image_size,
                       lr=train.effective_lr, weight_decay=train.weight_decay, warmup_epochs=train.warmup_epochs,
                       seed=train.seed, amp=train.amp, device=device, workers=study.data.num_workers or 0,
                       compile=train.compile, weights=study.weights.path if study.weights else None)
    torch.manual_seed(train.seed)
    wants_latency = any(o.name == "latency_ms" for o in study.objectives)
    costs = measure_costs(candidate.arch, paper=candidate.paper, latency=wants_latency,
                          model=build_model(candidate.arch))
    on_epoch = _EpochReporter(report, costs)
    train_detector(candidate.arch, data_yaml, cfg, on_epoch)
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
