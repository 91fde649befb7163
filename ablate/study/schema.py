"""The study schema: the typed, frozen objects a study file becomes, and the vocabularies
(objectives, tasks, data sets, samplers, recipes) every check refers to."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Literal

from ablate.metrics import OBJECTIVES, TASK_METRIC, TRAINING_METRICS
from ablate.study.trackers import TrackersSpec
from ablate.study.weights import WeightsSpec
from ablate.study.space import (
    FrozenDict,
    Param,
    SearchSpace,
    decode_value,
    freeze,
    grid_cells,
    same_value,
    thaw,
)

__all__ = ["Objective", "DataSpec", "TrainSpec", "SamplerSpec", "SchedulerSpec", "Resources", "ProxySpec", "Study",
           "OBJECTIVES", "TRAINING_METRICS", "TRAIN_KEYS", "RECIPE_NAMES", "LABEL", "SCALES"]


#: Each task's metric (an objective of the other task is rejected); the objective names,
#: their directions and the training metrics come from :mod:`ablate.metrics`.
_TASK_METRIC = TASK_METRIC


#: Training settings that a study may also fix, grid or search (``lr: {float: ...}``);
#: every other key of a candidate goes to the model builder.
TRAIN_KEYS: frozenset[str] = frozenset({"lr", "weight_decay", "batch_size", "warmup_epochs", "label_smoothing",
                                        "recipe", "randaugment", "random_erasing", "mixup", "cutmix", "clip_grad",
                                        "ema_decay"})


#: The training recipes (``train.recipe``); see :mod:`ablate.train.recipes` for their values.
RECIPE_NAMES: tuple[str, ...] = ("proxy", "deit")


#: The recipe a study trains with when it names none, per scale.
_SCALE_RECIPE = FrozenDict({"proxy": "proxy", "paper": "deit"})


#: Arch keys a study may not set: the runner derives them from the data.
_RESERVED = FrozenDict({"img_size": "data.image_size", "num_classes": "the data set", "in_chans": "the data set",
                        "nc": "the data set"})


_TASKS = ("classify", "detect")


_SAMPLERS = ("grid", "random", "tpe", "nsga2")


_SCHEDULERS = ("asha",)


_DATASETS = ("digits", "imagefolder", "cifar10", "cifar100", "synth-det", "yolo")


#: Data sets each task can train on; the first is its default.
_TASK_DATASETS = {"classify": ("digits", "imagefolder", "cifar10", "cifar100"), "detect": ("synth-det", "yolo")}


#: Data sets read from a folder the user gives (never downloaded), and what that folder holds.
_FOLDER_DATASETS = FrozenDict({
    "imagefolder": "a folder with one sub-folder per class",
    "cifar10": "the folder holding torchvision's cifar-10-batches-py (or that folder itself)",
    "cifar100": "the folder holding torchvision's cifar-100-python (or that folder itself)",
})


#: Default image side per task.
_TASK_IMAGE_SIZE = {"classify": 32, "detect": 128}


#: The key of a list-form grid row that names it (the paper's row label); not an arch key.
LABEL = "label"


#: ``proxy`` (default) trains the study's ``proxy:`` overrides; ``paper`` the real models.
SCALES: tuple[str, ...] = ("proxy", "paper")


#: A study name becomes a file name (``runs/NAME.db``), Optuna's study name and part of Ray's
#: folders: letters, digits, ``_``, ``.``, ``-``, starting with a letter or digit (so never
#: ``..``, a hidden file or something a shell reads as a flag), at most 100 characters.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")

#: Upper bounds of a study's numbers: far above any real study, low enough that no typo
#: (``epochs: 1000000000``) starts something no machine could finish or hold. The models'
#: own keys are bounded by their builders (:data:`ablate.models.vit_arch.LIMITS`) and every
#: candidate's memory is estimated before it is built.
MAX_IMAGE_SIZE = 8192
MAX_EPOCHS = 100_000
MAX_BATCH = 65_536
MAX_TRIALS = 1_000_000
MAX_CONCURRENT = 10_000
MAX_CPUS = 1024.0
MAX_GPUS = 64.0
MAX_WORKERS = 256
MAX_LR = 10.0
MAX_DECAY = 10.0
MAX_CLIP = 1e6
MAX_REDUCTION = 100.0


_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


# The keys each section of a study file accepts, and the training defaults, come from the
# declaration of the file as written (ablate.study.declaration: _STUDY_KEYS, _DATA_KEYS,
# _TRAIN_SECTION_KEYS, _TRAIN_DEFAULTS, ...), which also gives the JSON Schema.


@dataclasses.dataclass(frozen=True)
class Objective:
    """One optimisation target; ``values`` of a trial follow the study's objective order."""

    name: str
    direction: Literal["maximize", "minimize"]


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """The data set a trial trains on.

    Attributes:
        name: ``digits`` (scikit-learn, bundled) or ``imagefolder`` (class sub-folders).
        path: Absolute folder for ``imagefolder``; None for ``digits``.
        image_size: Side of the square input images (also the model's ``img_size``).
        val_fraction: Share held out for validation, in (0, 1).
        num_workers: DataLoader workers; None derives them from the trial's CPUs and device
            (:func:`ablate.data.loader_workers`), 0 keeps a trial single-process.
    """

    name: str
    path: str | None
    image_size: int
    val_fraction: float
    num_workers: int | None = None


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """Training settings shared by every trial (a trial may override :data:`TRAIN_KEYS`).

    The recipe's keys (:data:`ablate.train.recipes.RECIPE_KEYS`) are None where the study
    leaves them to its recipe; :meth:`Study.train_for` gives a trial's settings with every
    one of them filled. ``recipe`` None means the scale's recipe (``proxy`` at
    ``--scale proxy``, ``deit`` at ``--scale paper``). ``lr`` is the rate for a batch of
    ``lr_batch`` images, scaled linearly to ``batch_size`` (no scaling when ``lr_batch``
    is None): :attr:`effective_lr` is what the optimiser sees. ``compile`` (torch.compile)
    changes how a trial runs, not what it computes, so a configuration's key leaves it out.
    """

    epochs: int
    batch_size: int
    lr: float | None
    weight_decay: float | None
    warmup_epochs: int | None
    seed: int
    amp: bool | None
    label_smoothing: float | None
    recipe: str | None = None
    lr_batch: int | None = None
    randaugment: str | None = None
    random_erasing: float | None = None
    mixup: float | None = None
    cutmix: float | None = None
    clip_grad: float | None = None
    ema_decay: float | None = None
    compile: bool = False

    def resolved(self, scale: str = "proxy") -> TrainSpec:
        """Every recipe key filled from the recipe (named, or the scale's)."""
        from ablate.train.recipes import resolve_recipe

        recipe = self.recipe or _SCALE_RECIPE[scale]
        return dataclasses.replace(self, recipe=recipe, **resolve_recipe(recipe, dataclasses.asdict(self)))

    @property
    def effective_lr(self) -> float:
        """The optimiser's peak rate: ``lr`` scaled by ``batch_size / lr_batch`` (resolved specs only)."""
        if self.lr is None:
            raise ValueError("effective_lr needs a resolved TrainSpec (see Study.train_for)")
        return self.lr * self.batch_size / self.lr_batch if self.lr_batch else self.lr


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """Which Optuna sampler proposes candidates, and its seed (None: unseeded).

    ``population_size`` (NSGA-II only; Optuna's default is 50) is what a small budget
    needs: a generation is that many COMPLETE trials, so with ASHA stopping most trials a
    population of 50 leaves a 10-minute search in its random first generation.
    """

    name: Literal["grid", "random", "tpe", "nsga2"]
    seed: int | None
    population_size: int | None = None


@dataclasses.dataclass(frozen=True)
class SchedulerSpec:
    """Early stopping of weak trials (ASHA); it watches the first training-metric objective."""

    name: Literal["asha"]
    grace_period: int
    reduction_factor: float


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one trial reserves from Ray; fractions share a device between trials."""

    cpu: float
    gpu: float


@dataclasses.dataclass(frozen=True)
class ProxySpec:
    """What a study changes to train on a laptop (``proxy:``, applied at ``--scale proxy`` only).

    The paper's cost column never sees these: a study with a ``base`` stores the params and
    GFLOPs of the unscaled base at ``paper_resolution`` for every cell, whatever the scale.

    Attributes:
        arch: Arch keys that override ``base`` and ``fixed`` (narrower widths, fewer blocks).
        grid: Per grid key, the value each grid value trains with (same order and length):
            a window of 56 at 224 px has no meaning on a 32 px proxy, so it maps to, e.g., 8.
            For a list-form grid, one mapping of arch overrides per row.
        image_size: Training image side (``data.image_size``).
        epochs: Training epochs (``train.epochs``).
        train: Other training settings (``lr``, ``batch_size``, ``warmup_epochs``, ...).
        repeats: Seeds per configuration (``repeats``): a proxy trains in seconds, so it
            can afford more seeds than the paper's models.
    """

    arch: Mapping[str, Any]
    grid: Mapping[str, tuple[Any, ...]] | tuple[Mapping[str, Any], ...]
    image_size: int | None
    epochs: int | None
    train: Mapping[str, Any]
    repeats: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "arch", freeze(dict(self.arch)))
        if isinstance(self.grid, Mapping):
            object.__setattr__(self, "grid", FrozenDict((k, freeze(tuple(v))) for k, v in self.grid.items()))
        else:
            object.__setattr__(self, "grid", tuple(freeze(dict(r)) for r in self.grid))
        object.__setattr__(self, "train", freeze(dict(self.train)))

    def to_dict(self) -> dict[str, Any]:
        """The flat ``proxy:`` mapping as written in a study file."""
        out: dict[str, Any] = {**thaw(self.arch), **thaw(self.train)}
        if self.image_size is not None:
            out["image_size"] = self.image_size
        if self.epochs is not None:
            out["epochs"] = self.epochs
        if self.repeats is not None:
            out["repeats"] = self.repeats
        if self.grid:
            out["grid"] = [thaw(dict(r)) for r in self.grid] if isinstance(self.grid, tuple) else thaw(self.grid)
        return out


@dataclasses.dataclass(frozen=True)
class Study:
    """A validated study: what to vary, what to measure, how to train and where to store.

    Build it with :func:`load_study` or :func:`study_from_dict`, which check every field;
    ``source`` is provenance only and does not take part in ``==``.
    """

    name: str
    description: str
    task: Literal["classify", "detect"]
    space: SearchSpace
    fixed: Mapping[str, Any]
    grid: Mapping[str, tuple[Any, ...]]
    objectives: tuple[Objective, ...]
    data: DataSpec
    train: TrainSpec
    sampler: SamplerSpec
    scheduler: SchedulerSpec | None
    trials: int
    max_concurrent: int | None
    resources: Resources
    storage: str
    seed: int
    paper_resolution: int | None
    reference: Mapping[str, Any] | None
    base: str | None = None
    proxy: ProxySpec | None = None
    scale: Literal["proxy", "paper"] = "proxy"
    grid_rows: tuple[Mapping[str, Any], ...] | None = None
    repeats: int = 1
    baseline: Mapping[str, Any] | None = None
    source: str | None = dataclasses.field(default=None, compare=False)
    #: Where the driver also logs trials (MLflow, TensorBoard); not part of what is measured or stored.
    trackers: TrackersSpec | None = dataclasses.field(default=None, compare=False)
    #: The checkpoint every candidate starts from (``weights:``); None: from scratch.
    weights: WeightsSpec | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "fixed", freeze(dict(self.fixed)))
        object.__setattr__(self, "grid", FrozenDict((k, freeze(tuple(v))) for k, v in self.grid.items()))
        if self.grid_rows is not None:
            object.__setattr__(self, "grid_rows", tuple(freeze(dict(r)) for r in self.grid_rows))
        object.__setattr__(self, "objectives", tuple(self.objectives))
        if self.reference is not None:
            object.__setattr__(self, "reference", freeze(dict(self.reference)))
        if self.baseline is not None:
            object.__setattr__(self, "baseline", freeze(dict(self.baseline)))

    @property
    def is_grid(self) -> bool:
        """An ablation: every grid cell is trained once, in order (GridSampler)."""
        return bool(self.grid)

    def cells(self) -> list[dict[str, Any]]:
        """The grid cells in order, list values as lists: the rows of a list-form grid, else
        the product of a mapping grid (last key fastest)."""
        if self.grid_rows is not None:
            return [thaw(dict(r)) for r in self.grid_rows]
        return grid_cells(thaw(self.grid)) if self.grid else []

    def cell_index(self, params: Mapping[str, Any]) -> int | None:
        """Position of the grid cell ``params`` belong to (None outside the grid)."""
        for i, cell in enumerate(self.cells()):
            if all(k in params and same_value(freeze(v), freeze(params[k])) for k, v in cell.items()):
                return i
        return None

    def proxy_overrides(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The arch keys ``proxy.grid`` gives the cell of ``params`` (empty outside the grid)."""
        if self.proxy is None or not self.proxy.grid:
            return {}
        if isinstance(self.proxy.grid, tuple):  # list form: one mapping per row
            index = self.cell_index(params)
            return thaw(dict(self.proxy.grid[index])) if index is not None else {}
        out = {}
        for key, values in self.proxy.grid.items():
            if key in params:
                index = next((i for i, v in enumerate(self.grid[key]) if same_value(v, freeze(params[key]))), None)
                if index is not None:
                    out[key] = thaw(values[index])
        return out

    @property
    def free_space(self) -> SearchSpace:
        """The space a sampler explores: params that neither ``fixed`` nor ``grid`` set.

        Its ``fixed`` merges the space's and the study's, so ``when`` conditions see the
        study's choices. In a grid study, params outside the grid are not sampled: the
        model builder's defaults apply to them.
        """
        taken = set(self.fixed) | set(self.grid)
        fixed = {**self.space.fixed, **self.fixed}
        params = tuple(p for p in self.space.params if p.name not in taken)
        # A `when` that names a taken param now names a fixed key (grid values are not known
        # here; a grid study does not sample).
        params = tuple(p for p in params if all(k in fixed or any(q.name == k for q in params) for k in p.when))
        return SearchSpace(params=params, fixed=fixed, name=self.space.name, source=self.space.source)

    @property
    def scaled(self) -> bool:
        """Whether trials train the ``proxy:`` overrides (proxy scale and a proxy section)."""
        return self.scale == "proxy" and self.proxy is not None

    def candidate(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The model-builder arguments for one trial.

        ``{preset: base, **space.fixed, **study.fixed, **proxy.arch, **params, "img_size":
        data.image_size}`` minus the training keys (:data:`TRAIN_KEYS`, see
        :meth:`train_for`); ``proxy.arch`` and the ``proxy.grid`` mapping of grid values
        only at proxy scale. Data-derived keys such as ``num_classes`` are added by the runner.
        """
        merged = self._unscaled(params)
        if self.scaled:
            assert self.proxy is not None
            merged.update(thaw(self.proxy.arch))
            merged.update(thaw(dict(params or {})))
            merged.update(self.proxy_overrides(params or {}))
        arch = {k: v for k, v in merged.items() if k not in TRAIN_KEYS and k != LABEL}
        arch["img_size"] = self.data.image_size
        return arch

    def paper_candidate(self, params: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """The paper-scale model of one cell at ``paper_resolution``: its cost column.

        With a ``base`` this is the unscaled base with the study's fixed keys and the cell,
        keeping the preset's own classes (1000 for ImageNet, 80 for COCO), so the numbers
        compare with the paper's whatever data or scale was trained. Without a base it is
        the trained candidate at ``paper_resolution`` (data-derived keys added by the runner).
        None without a ``paper_resolution``.
        """
        if self.paper_resolution is None:
            return None
        if self.base is None:
            return {**self.candidate(params), "img_size": self.paper_resolution}
        arch = {k: v for k, v in self._unscaled(params).items() if k not in TRAIN_KEYS and k != LABEL}
        arch["img_size"] = self.paper_resolution
        return arch

    def _unscaled(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        base = {"preset": self.base} if self.base is not None else {}
        return {**base, **thaw(self.space.fixed), **thaw(self.fixed), **thaw(dict(params or {}))}

    def train_for(self, params: Mapping[str, Any] | None = None, repeat: int = 0) -> TrainSpec:
        """The training settings of one trial, every recipe key filled.

        ``train`` overridden by fixed/param training keys, then the recipe's values for
        what is still unset, and the seed of repeat ``repeat`` (``train.seed + repeat``).
        """
        merged = {**self.space.fixed, **self.fixed, **(params or {})}
        overrides = {k: merged[k] for k in TRAIN_KEYS if k in merged}
        for key in ("lr", "weight_decay", "label_smoothing", "random_erasing", "mixup", "cutmix", "clip_grad",
                    "ema_decay"):
            if overrides.get(key) is not None:
                overrides[key] = float(overrides[key])
        spec = dataclasses.replace(self.train, **overrides)
        if self.task == "detect":  # ultralytics' trainer brings its own augmentation: lr as given, unscaled
            spec = dataclasses.replace(spec, recipe="proxy")
        return dataclasses.replace(spec.resolved(self.scale), seed=self.train.seed + repeat)

    def baseline_cell(self) -> dict[str, Any] | None:
        """The grid cell the other rows are compared with (None for a sampled study)."""
        return thaw(dict(self.baseline)) if self.baseline is not None else None

    @property
    def grid_params(self) -> tuple[Param, ...]:
        """Each grid key as a choice param over its grid values: how trials store grid values."""
        return tuple(Param(name=k, kind="choice", choices=tuple(v)) for k, v in self.grid.items())

    def decode_params(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Plain values from a trial's stored ``params`` (list values travel as JSON strings)."""
        params = {p.name: p for p in self.space.params}
        params.update((p.name, p) for p in self.grid_params)
        return {k: decode_value(params[k], v) if k in params else v for k, v in raw.items()}

    @property
    def scheduler_metric(self) -> Objective | None:
        """The objective an early-stopping scheduler watches (first training metric), if any."""
        return next((o for o in self.objectives if o.name in TRAINING_METRICS), None)

