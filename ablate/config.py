"""Study and search-space files → typed, frozen objects (the one validation boundary).

``load_study("studies/x.yaml")`` reads YAML, checks every key and value once, and returns
a :class:`Study`; past this module only typed objects travel (STYLE §7). Every mistake is
one :class:`~ablate.errors.ConfigError` whose message is a single line::

    studies/x.yaml:7: fixed.attention: unknown attention 'focl', allowed: focal, softmax; did you mean 'focal'?
    studies/x.yaml:3: train.epochs: must be an integer >= 1, got 0

Line numbers come from PyYAML's node graph (:func:`yaml.compose`), kept in a map from
key path to line next to the plain data. A dict that arrives as JSON (the Ray boundary,
a study spec read back from the database) goes through the same functions with
``<spec>`` as the file name and no line: :func:`study_from_dict` and :func:`study_to_dict`
round-trip exactly.

Paths: ``space:`` and ``data.path`` are relative to the study file (to ``base_dir`` for a
dict); a relative SQLite storage URL (``sqlite:///runs/x.db``) is made absolute against
the *current working directory* at load time, because Ray changes each worker's working
directory and every process must open the same file.

Keys that are not training settings are checked against the model builder
(:func:`ablate.models.resolve_arch`, :func:`ablate.models.check_arch`), imported lazily:
this module must import fast and without torch so ``ablate --help`` stays instant.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from ablate.errors import AblateError, ConfigError, Infeasible
from ablate.space import (
    FrozenDict,
    Param,
    SearchSpace,
    _FieldError,
    dotted,
    freeze,
    grid_cells,
    in_domain,
    decode_value,
    same_value,
    thaw,
)

__all__ = [
    "OBJECTIVES",
    "TRAINING_METRICS",
    "TRAIN_KEYS",
    "Objective",
    "DataSpec",
    "TrainSpec",
    "SamplerSpec",
    "SchedulerSpec",
    "Resources",
    "ProxySpec",
    "SCALES",
    "Study",
    "load_space",
    "space_from_dict",
    "space_to_dict",
    "load_study",
    "study_from_dict",
    "study_to_dict",
    "validate_study",
    "arch_api",
]

#: Objective name → default direction. ``gflops`` is counted at the training resolution,
#: ``gflops_paper`` at the study's ``paper_resolution`` (multiply-adds, 1e9).
OBJECTIVES: Mapping[str, str] = FrozenDict({
    "top1": "maximize",
    "map50_95": "maximize",
    "gflops": "minimize",
    "gflops_paper": "minimize",
    "params_m": "minimize",
    "latency_ms": "minimize",
})
#: Objectives measured by training (the others are measured on the built model).
TRAINING_METRICS: tuple[str, ...] = ("top1", "map50_95")
#: The metric each task trains for; an objective of the other task is rejected.
_TASK_METRIC = {"classify": "top1", "detect": "map50_95"}
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
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


# --------------------------------------------------------------------------- value objects


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
    is None): :attr:`effective_lr` is what the optimiser sees.
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
    """Which Optuna sampler proposes candidates, and its seed.

    ``population_size`` (NSGA-II only; Optuna's default is 50) is what a small budget
    needs: a generation is that many COMPLETE trials, so with ASHA stopping most trials a
    population of 50 leaves a 10-minute search in its random first generation.
    """

    name: Literal["grid", "random", "tpe", "nsga2"]
    seed: int
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


# --------------------------------------------------------------------------- YAML with lines


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)

@dataclasses.dataclass(frozen=True)
class _Doc:
    """Where values came from: a file name, its key-path → line map, and the folder for paths."""

    source: str
    lines: Mapping[tuple, int]
    base_dir: Path
    prefix: tuple = ()

    def at(self, *prefix: str | int) -> _Doc:
        return dataclasses.replace(self, prefix=self.prefix + prefix)

    def error(self, path: Sequence[str | int], what: str) -> ConfigError:
        full = self.prefix + tuple(path)
        line = None
        for n in range(len(full), -1, -1):
            line = self.lines.get(full[:n])
            if line is not None:
                break
        where = f"{self.source}:{line}" if line is not None else self.source
        key = dotted(full)
        return ConfigError(f"{where}: {key}: {what}" if key else f"{where}: {what}")


def _read_yaml(path: Path, display: str) -> tuple[Any, dict[tuple, int]]:
    """Plain data plus a map from key path to 1-based line (the key's line for mapping entries)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{display}: file not found, allowed: an existing YAML file") from None
    except IsADirectoryError:
        raise ConfigError(f"{display}: is a folder, allowed: a YAML file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{display}: cannot read: {err}") from None
    loader = _Loader(text)
    lines: dict[tuple, int] = {}
    try:
        node = loader.get_single_node()
        if node is None:
            return None, lines
        _index_lines(node, (), lines, display)
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{display}:{mark.line + 1}" if mark is not None else display
        problem = " ".join(str(err.problem or err.context or "syntax error").split())
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{display}: invalid YAML: {' '.join(str(err).split())}") from None
    finally:
        loader.dispose()


def _index_lines(node: yaml.Node, path: tuple, lines: dict[tuple, int], display: str, depth: int = 0) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if depth > 64:  # aliases can make cycles; nothing real is this deep
        return
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node)
            child = path + (key,)
            if key in seen:
                raise ConfigError(f"{display}:{key_node.start_mark.line + 1}: {dotted(child)}: "
                                  f"duplicate key, allowed: each key once")
            seen.add(key)
            lines[child] = key_node.start_mark.line + 1
            _index_lines(value_node, child, lines, display, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _index_lines(item, path + (i,), lines, display, depth + 1)


# --------------------------------------------------------------------------- checkers


def _did_you_mean(name: object, valid: Sequence[str]) -> str:
    hint = difflib.get_close_matches(str(name), list(valid), n=1)
    return f"; did you mean {hint[0]!r}?" if hint else ""


def _mapping(doc: _Doc, path: tuple, value: Any, allowed: Sequence[str] | None = None,
             required: Sequence[str] = (), what: str = "a mapping") -> dict[str, Any]:
    """Check that ``value`` is a mapping with string keys, only ``allowed`` ones, all ``required``."""
    if not isinstance(value, Mapping):
        keys = f" with keys {', '.join(allowed)}" if allowed else ""
        raise doc.error(path, f"must be {what}{keys}, got {_show(value)}")
    for key in value:
        if not isinstance(key, str):
            raise doc.error(path + (str(key),), f"keys must be strings, got {key!r}")
        if allowed is not None and key not in allowed:
            raise doc.error(path + (key,), f"unknown key {key!r}, allowed: {', '.join(allowed)}"
                            + _did_you_mean(key, allowed))
    for key in required:
        if key not in value:
            raise doc.error(path + (key,), "required key is missing")
    return dict(value)


def _show(value: Any) -> str:
    if isinstance(value, (Mapping, list, tuple)):
        return f"{type(value).__name__ if not isinstance(value, Mapping) else 'a mapping'} {thaw(value)!r}"
    return repr(value)


def _int(doc: _Doc, path: tuple, value: Any, low: int | None = None, high: int | None = None) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or (low is not None and value < low) or (high is not None and value > high):
        rng = (f" in [{low}, {high}]" if low is not None and high is not None
               else f" >= {low}" if low is not None else f" <= {high}" if high is not None else "")
        raise doc.error(path, f"must be an integer{rng}, got {_show(value)}")
    return value


def _float(doc: _Doc, path: tuple, value: Any, low: float | None = None, high: float | None = None,
           open_low: bool = False, open_high: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = ((low is None or (value > low if open_low else value >= low))
              and (high is None or (value < high if open_high else value <= high)))
    if not ok:
        if low is not None and high is not None:
            rng = f" in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        elif low is not None:
            rng = f" {'>' if open_low else '>='} {low}"
        elif high is not None:
            rng = f" {'<' if open_high else '<='} {high}"
        else:
            rng = ""
        raise doc.error(path, f"must be a number{rng}, got {_show(value)}")
    return float(value)


def _bool(doc: _Doc, path: tuple, value: Any) -> bool:
    if not isinstance(value, bool):
        raise doc.error(path, f"must be true or false, got {_show(value)}")
    return value


def _str(doc: _Doc, path: tuple, value: Any) -> str:
    if not isinstance(value, str):
        raise doc.error(path, f"must be a string, got {_show(value)}")
    return value


def _one_of(doc: _Doc, path: tuple, value: Any, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        hint = _did_you_mean(value, allowed) if isinstance(value, str) else ""
        raise doc.error(path, f"must be one of {', '.join(map(repr, allowed))}, got {_show(value)}{hint}")
    return value


def _json(doc: _Doc, path: tuple, value: Any) -> Any:
    """Check that ``value`` is plain JSON (YAML can also produce dates, sets, ...)."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise doc.error(path + (str(k),), f"keys must be strings, got {k!r}")
            _json(doc, path + (k,), v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _json(doc, path + (i,), v)
    elif isinstance(value, float) and not math.isfinite(value):
        raise doc.error(path, f"must be a finite number, got {value!r}")
    elif not isinstance(value, (type(None), bool, int, float, str)):
        raise doc.error(path, f"must be null, a boolean, a number, a string, a list or a mapping, "
                              f"got {type(value).__name__} {value!r}")
    return value


def _check_not_reserved(doc: _Doc, path: tuple, key: str) -> None:
    if key in _RESERVED:
        raise doc.error(path, f"{key!r} is set from {_RESERVED[key]}, allowed: any other arch key, a family "
                              f"option or one of {', '.join(sorted(TRAIN_KEYS))}")


def _check_train_value(doc: _Doc, path: tuple, key: str, value: Any) -> Any:
    """A training key set in fixed/grid/params obeys the same rules as in ``train``."""
    if key == "lr":
        return _float(doc, path, value, 0, open_low=True)
    if key == "weight_decay":
        return _float(doc, path, value, 0)
    if key == "label_smoothing":
        return _float(doc, path, value, 0, 1, open_high=True)
    if key == "batch_size":
        return _int(doc, path, value, 1)
    if key == "warmup_epochs":
        return _int(doc, path, value, 0)
    if key == "recipe":
        return _one_of(doc, path, value, RECIPE_NAMES)
    if key == "randaugment":
        return _randaugment(doc, path, value)
    if key in ("random_erasing", "mixup", "cutmix"):
        return _float(doc, path, value, 0, 1)
    if key == "clip_grad":
        return _float(doc, path, value, 0)
    if key == "ema_decay":
        return _float(doc, path, value, 0, 1, open_high=True)
    raise AssertionError(key)  # pragma: no cover - keys come from TRAIN_KEYS


_RANDAUGMENT_RE = re.compile(r"rand(-(m\d+(\.\d+)?|n\d+|mstd\d+(\.\d+)?|mmax\d+(\.\d+)?|inc[01]|w\d+|p\d+(\.\d+)?))*")


def _randaugment(doc: _Doc, path: tuple, value: Any) -> str:
    """timm's RandAugment string (``rand-m9-mstd0.5-inc1``), or empty for none."""
    text = _str(doc, path, value) if value != "" else ""
    if text and not _RANDAUGMENT_RE.fullmatch(text):
        raise doc.error(path, f"must be timm's RandAugment spec or '' for none, got {text!r}, allowed: e.g. "
                              "'rand-m9-mstd0.5-inc1' (magnitude 9, its std 0.5, increasing)")
    return text


# --------------------------------------------------------------------------- search space

_SPACE_KEYS = ("name", "fixed", "params")
_PARAM_KEYS = ("choice", "int", "float", "step", "log", "when")


def load_space(path: str | os.PathLike[str]) -> SearchSpace:
    """Read and validate a search-space YAML file.

    Raises:
        ConfigError: one line ``file:line: key.path: what is wrong, allowed: ...``.
    """
    display = os.fspath(path)
    data, lines = _read_yaml(Path(path), display)
    doc = _Doc(display, lines, Path(path).resolve().parent)
    return _parse_space(doc, data, source=display)


def space_from_dict(d: Mapping[str, Any], source: str = "<spec>") -> SearchSpace:
    """Validate a search space given as a dict (same rules as a file, no line numbers)."""
    return _parse_space(_Doc(source, {}, Path.cwd()), d, source=None)


def space_to_dict(space: SearchSpace) -> dict[str, Any]:
    """The JSON-able form of ``space`` that :func:`space_from_dict` reads back to an equal space."""
    params: dict[str, Any] = {}
    for p in space.params:
        if p.kind == "choice":
            spec: dict[str, Any] = {"choice": thaw(p.choices)}
        else:
            spec = {p.kind: [p.low, p.high]}
            if p.step is not None and not (p.kind == "int" and p.step == 1):
                spec["step"] = p.step
            if p.log:
                spec["log"] = True
        if p.when:
            spec["when"] = thaw(p.when)
        params[p.name] = spec
    return {"name": space.name, "fixed": thaw(space.fixed), "params": params}


def _parse_space(doc: _Doc, data: Any, source: str | None) -> SearchSpace:
    if data is None:
        raise doc.error((), f"is empty, allowed: a mapping with keys {', '.join(_SPACE_KEYS)}")
    m = _mapping(doc, (), data, _SPACE_KEYS)
    name = m.get("name")
    if name is not None:
        _str(doc, ("name",), name)
    fixed = _mapping(doc, ("fixed",), m.get("fixed") or {})
    _json(doc, ("fixed",), fixed)
    for key in fixed:
        _check_not_reserved(doc, ("fixed", key), key)
    raw_params = _mapping(doc, ("params",), m.get("params") or {}, what="a mapping of param name to spec")
    params: list[Param] = []
    for pname, spec in raw_params.items():
        _check_not_reserved(doc, ("params", pname), pname)
        if pname in fixed:
            raise doc.error(("params", pname), "also set in fixed, allowed: a key in either fixed or params")
        params.append(_parse_param(doc, ("params", pname), pname, spec, params, fixed, list(raw_params)))
    try:
        return SearchSpace(params=tuple(params), fixed=fixed, name=name, source=source)
    except _FieldError as err:  # pragma: no cover - the checks above come first
        raise doc.error(err.key, err.reason) from None


def _parse_param(doc: _Doc, path: tuple, name: str, spec: Any, earlier: list[Param],
                 fixed: Mapping[str, Any], all_names: Sequence[str]) -> Param:
    m = _mapping(doc, path, spec, _PARAM_KEYS)
    kinds = [k for k in ("choice", "int", "float") if k in m]
    if len(kinds) != 1:
        got = ", ".join(kinds) if kinds else "none"
        raise doc.error(path, f"must have exactly one of choice, int, float, got {got}")
    kind = kinds[0]
    raw = m[kind]
    kwargs: dict[str, Any] = {}
    if kind == "choice":
        if not isinstance(raw, list) or not raw:
            raise doc.error(path + (kind,), f"must be a non-empty list of values, got {_show(raw)}")
        _json(doc, path + (kind,), raw)
        kwargs["choices"] = freeze(raw)
    else:
        if not isinstance(raw, list) or len(raw) != 2:
            raise doc.error(path + (kind,), f"must be [low, high] (inclusive), got {_show(raw)}")
        kwargs["low"], kwargs["high"] = raw
    if "step" in m:
        kwargs["step"] = m["step"]
    if "log" in m:
        kwargs["log"] = _bool(doc, path + ("log",), m["log"])
    when: dict[str, tuple] = {}
    if m.get("when") is not None:
        raw_when = _mapping(doc, path + ("when",), m["when"], what="a mapping of key to allowed values")
        known = {p.name: p for p in earlier}
        for key, values in raw_when.items():
            kpath = path + ("when", key)
            if key not in known and key not in fixed:
                later = (" (a param cannot depend on itself)" if key == name
                         else " (declared later; move it up)" if key in all_names else "")
                allowed = sorted(set(known) | set(fixed))
                raise doc.error(kpath, f"unknown key {key!r}{later}, allowed: an earlier param or a fixed key: "
                                       f"{', '.join(allowed) or '(none)'}" + _did_you_mean(key, allowed))
            values = values if isinstance(values, list) else [values]
            _json(doc, kpath, values)
            if not values:
                raise doc.error(kpath, "must list at least one value")
            if key in known:
                for i, v in enumerate(values):
                    if not in_domain(known[key], v):
                        raise doc.error(kpath + (i,), f"{v!r} is not a value of param {key!r}, allowed: "
                                                      f"{_describe_domain(known[key])}")
            elif not any(same_value(fixed[key], v) for v in values):
                raise doc.error(kpath, f"fixed {key}={thaw(fixed[key])!r} is not one of {values!r}, so {name!r} "
                                       f"would never be sampled, allowed: values that include {thaw(fixed[key])!r}")
            when[key] = freeze(values)
    kwargs["when"] = when
    try:
        return Param(name=name, kind=kind, **kwargs)
    except _FieldError as err:
        raise doc.error(path + err.key[2:], err.reason) from None


def _describe_domain(p: Param) -> str:
    if p.kind == "choice":
        return ", ".join(repr(thaw(c)) for c in p.choices)
    step = f" step {p.step}" if p.step not in (None, 1) else ""
    return f"{'integers' if p.kind == 'int' else 'numbers'} in [{p.low}, {p.high}]{step}{' (log)' if p.log else ''}"


# --------------------------------------------------------------------------- study

_STUDY_KEYS = ("name", "description", "task", "base", "space", "fixed", "grid", "proxy", "objectives", "data",
               "train", "sampler", "scheduler", "trials", "max_concurrent", "resources", "storage", "seed",
               "paper_resolution", "reference", "repeats", "baseline")
_DATA_KEYS = ("name", "path", "image_size", "val_fraction", "num_workers")
_TRAIN_SECTION_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "seed", "amp", "label_smoothing",
                       "recipe", "lr_batch", "randaugment", "random_erasing", "mixup", "cutmix", "clip_grad",
                       "ema_decay")
#: Defaults of the keys no recipe decides; the recipe's keys default to its table.
_TRAIN_DEFAULTS: Mapping[str, Any] = FrozenDict(dict(epochs=3, batch_size=128))


def load_study(path: str | os.PathLike[str], *, check: bool = True, scale: str = "proxy") -> Study:
    """Read and validate a study YAML file.

    Args:
        path: The study file; ``space:`` and ``data.path`` are relative to its folder.
        check: Also check every fixed/grid key against the model builder and every grid
            cell for feasibility (imports torch). Turn off only for quick schema checks.
        scale: ``proxy`` applies the file's ``proxy:`` overrides to what trials train;
            ``paper`` trains the unscaled models.

    Raises:
        ConfigError: one line ``file:line: key.path: what is wrong, allowed: ...``.
    """
    display = os.fspath(path)
    data, lines = _read_yaml(Path(path), display)
    doc = _Doc(display, lines, Path(path).resolve().parent)
    if isinstance(data, Mapping) and "scale" in data:
        raise doc.error(("scale",), "is chosen when running (ablate run --scale proxy|paper), "
                                    "allowed: drop it from the study file")
    study, space_doc = _parse_study(doc, data, source=display, scale=_scale_arg(scale))
    if check:
        _check_against_models(study, doc, space_doc)
    return study


def _scale_arg(scale: str) -> str:
    if scale not in SCALES:
        raise ConfigError(f"--scale: must be one of {', '.join(map(repr, SCALES))}, got {scale!r}")
    return scale


def study_from_dict(d: Mapping[str, Any], source: str = "<spec>", *, base_dir: str | os.PathLike[str] | None = None,
                    check: bool = True) -> Study:
    """Validate a study given as a dict (a JSON spec from Ray or the database).

    Same rules as :func:`load_study`; errors name ``source`` instead of a file and carry
    no line. Relative paths resolve against ``base_dir`` (default: the working directory).
    The scale is the dict's ``scale`` (default ``proxy``); ``data`` and ``train`` are taken
    as written, and at proxy scale the ``proxy`` overrides are applied to them again (they
    set absolute values, so a spec written by :func:`study_to_dict` reads back equal).
    """
    doc = _Doc(source, {}, Path(base_dir) if base_dir is not None else Path.cwd())
    raw_scale = d.get("scale", "proxy") if isinstance(d, Mapping) else "proxy"
    _one_of(doc, ("scale",), raw_scale, SCALES)
    body = {k: v for k, v in d.items() if k != "scale"} if isinstance(d, Mapping) else d
    study, space_doc = _parse_study(doc, body, source=None if source == "<spec>" else source, scale=raw_scale)
    if check:
        _check_against_models(study, doc, space_doc)
    return study


def study_to_dict(study: Study) -> dict[str, Any]:
    """A JSON-able dict with every setting resolved (space inlined, paths absolute).

    ``study_from_dict(study_to_dict(s)) == s``; the runner stores it in the database as
    ``study.user_attrs["spec"]`` so dashboards need nothing else.
    """
    return {
        "name": study.name,
        "description": study.description,
        "task": study.task,
        "space": space_to_dict(study.space),
        "fixed": thaw(study.fixed),
        "grid": [thaw(dict(r)) for r in study.grid_rows] if study.grid_rows is not None else thaw(study.grid),
        "objectives": [dataclasses.asdict(o) for o in study.objectives],
        "data": dataclasses.asdict(study.data),
        "train": dataclasses.asdict(study.train),
        "sampler": dataclasses.asdict(study.sampler),
        "scheduler": dataclasses.asdict(study.scheduler) if study.scheduler else None,
        "trials": study.trials,
        "max_concurrent": study.max_concurrent,
        "resources": dataclasses.asdict(study.resources),
        "storage": study.storage,
        "seed": study.seed,
        "paper_resolution": study.paper_resolution,
        "reference": thaw(study.reference) if study.reference is not None else None,
        "repeats": study.repeats,
        "baseline": thaw(dict(study.baseline)) if study.baseline is not None else None,
        "base": study.base,
        "proxy": study.proxy.to_dict() if study.proxy is not None else None,
        "scale": study.scale,
    }


def validate_study(study: Study) -> None:
    """Check a study's fixed/grid keys and every grid cell against the model builder.

    :func:`load_study` already does this with line numbers; use this for a study built
    in code. Errors name ``study.source`` (or ``<spec>``) and the key path.

    Raises:
        ConfigError: unknown key or bad value, or an infeasible grid cell.
    """
    doc = _Doc(study.source or "<spec>", {}, Path.cwd())
    _check_against_models(study, doc, doc.at("space"))


def _parse_study(doc: _Doc, data: Any, source: str | None, scale: str = "proxy") -> tuple[Study, _Doc]:
    if data is None:
        raise doc.error((), "is empty, allowed: a study mapping with at least name, objectives and a grid or trials")
    m = _mapping(doc, (), data, _STUDY_KEYS, required=("name",))

    name = _str(doc, ("name",), m["name"])
    if not _NAME_RE.fullmatch(name):
        raise doc.error(("name",), f"must use only letters, digits, '_', '.', '-', got {name!r}")
    description = _str(doc, ("description",), m.get("description") or "")
    task = _one_of(doc, ("task",), m.get("task", "classify"), _TASKS)
    seed = _int(doc, ("seed",), m.get("seed", 0), 0, 2**32 - 1)

    space, space_doc = _study_space(doc, m.get("space"))
    base = m.get("base")
    if base is not None:
        base = _str(doc, ("base",), base)

    fixed = _mapping(doc, ("fixed",), m.get("fixed") or {})
    _json(doc, ("fixed",), fixed)
    for key, value in fixed.items():
        _check_not_reserved(doc, ("fixed", key), key)
        if key in TRAIN_KEYS:
            fixed[key] = _check_train_value(doc, ("fixed", key), key, value)

    grid, grid_rows = _study_grid(doc, m.get("grid") or {}, fixed, space)

    paper_resolution = m.get("paper_resolution")
    if paper_resolution is not None:
        paper_resolution = _int(doc, ("paper_resolution",), paper_resolution, 1)
    proxy = _study_proxy(doc, m.get("proxy"), grid, grid_rows) if m.get("proxy") is not None else None

    objectives = _study_objectives(doc, m.get("objectives"), task, paper_resolution)
    raw_data = _mapping(doc, ("data",), m.get("data") or {}, _DATA_KEYS)
    raw_train = _mapping(doc, ("train",), m.get("train") or {}, _TRAIN_SECTION_KEYS)
    if base is not None and paper_resolution is not None and "image_size" not in raw_data:
        raw_data["image_size"] = paper_resolution  # the base's own resolution, unless scaled down
    if scale == "proxy" and proxy is not None:
        # Applied before the sections are checked, so the combined values obey the same rules
        # (warmup_epochs <= epochs, ...); an error then names the proxy key that set the value.
        data_doc, train_doc = doc, doc
        if proxy.image_size is not None:
            raw_data["image_size"] = proxy.image_size
            data_doc = _Redirect(doc, {("data", "image_size"): ("proxy", "image_size")})
        moved = {**thaw(proxy.train), **({"epochs": proxy.epochs} if proxy.epochs is not None else {})}
        raw_train.update(moved)
        train_doc = _Redirect(doc, {("train", k): ("proxy", k) for k in moved})
        data_spec = _study_data(data_doc, raw_data, task)  # type: ignore[arg-type]
        train = _study_train(train_doc, raw_train, seed)  # type: ignore[arg-type]
    else:
        data_spec = _study_data(doc, raw_data, task)
        train = _study_train(doc, raw_train, seed)

    if task == "detect" and train.recipe not in (None, "proxy"):
        raise doc.error(("train", "recipe"), f"{train.recipe!r} is a classification recipe; detection trains with "
                                             "ultralytics' own augmentation, allowed: drop recipe")
    sampler = _study_sampler(doc, m.get("sampler") or {}, grid, seed)
    scheduler = _study_scheduler(doc, m.get("scheduler"), train, objectives)

    n_cells = len(grid_rows) if grid_rows is not None else len(grid_cells(grid)) if grid else 0
    if grid:
        trials = _int(doc, ("trials",), m["trials"], 1, n_cells) if m.get("trials") is not None else n_cells
    else:
        if m.get("trials") is None:
            raise doc.error(("trials",), "required key is missing (a study without a grid needs a budget), "
                                         "allowed: an integer >= 1")
        trials = _int(doc, ("trials",), m["trials"], 1)
        taken = set(fixed)
        if not any(p.name not in taken for p in space.params):
            where = ("space",) if "space" in m else ()
            raise doc.error(where, "nothing to search: every param is fixed or there is no space, "
                                   "allowed: a space with params that fixed does not set, or a grid")

    max_concurrent = m.get("max_concurrent")
    if max_concurrent is not None:
        max_concurrent = _int(doc, ("max_concurrent",), max_concurrent, 1)

    res = _mapping(doc, ("resources",), m.get("resources") or {}, ("cpu", "gpu"))
    resources = Resources(cpu=_float(doc, ("resources", "cpu"), res.get("cpu", 1), 0, open_low=True),
                          gpu=_float(doc, ("resources", "gpu"), res.get("gpu", 0), 0))

    storage = _storage(doc, m.get("storage", f"sqlite:///runs/{name}.db"))

    reference = m.get("reference")
    if reference is not None:
        reference = _json(doc, ("reference",), _mapping(doc, ("reference",), reference))

    repeats = _int(doc, ("repeats",), m.get("repeats", 1), 1, 1000)
    if scale == "proxy" and proxy is not None and proxy.repeats is not None:
        repeats = proxy.repeats
    cells = ([dict(r) for r in grid_rows] if grid_rows is not None else grid_cells(thaw(grid))) if grid else []
    baseline = _study_baseline(doc, m.get("baseline"), cells)

    study = Study(name=name, description=description, task=task, space=space, fixed=fixed, grid=grid,
                  objectives=objectives, data=data_spec, train=train, sampler=sampler, scheduler=scheduler,
                  trials=trials, max_concurrent=max_concurrent, resources=resources, storage=storage, seed=seed,
                  paper_resolution=paper_resolution, reference=reference, base=base, proxy=proxy,
                  scale=scale, grid_rows=grid_rows, repeats=repeats, baseline=baseline,
                  source=source)  # type: ignore[arg-type]
    return study, space_doc


class _Redirect:
    """A :class:`_Doc` whose errors for some key paths point at another key (``train.epochs``
    set by ``proxy.epochs`` is reported as ``proxy.epochs``, on that key's line)."""

    def __init__(self, doc: _Doc, moves: Mapping[tuple, tuple]) -> None:
        self.doc, self.moves = doc, dict(moves)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.doc, name)

    def error(self, path: Sequence[str | int], what: str) -> ConfigError:
        path = tuple(path)
        for old, new in self.moves.items():
            if path[:len(old)] == old:
                return self.doc.error(new + path[len(old):], what)
        return self.doc.error(path, what)


_PROXY_SPECIAL = ("image_size", "epochs", "grid", "repeats")


def _study_proxy(doc: _Doc, raw: Any, grid: Mapping[str, tuple],
                 grid_rows: tuple[dict[str, Any], ...] | None) -> ProxySpec:
    m = _mapping(doc, ("proxy",), raw, what="a mapping of overrides (arch keys, image_size, epochs, "
                                            "training keys, grid)")
    _json(doc, ("proxy",), m)
    arch: dict[str, Any] = {}
    train: dict[str, Any] = {}
    for key, value in m.items():
        path = ("proxy", key)
        if key in _PROXY_SPECIAL:
            continue
        if key in _TRAIN_SECTION_KEYS and key not in TRAIN_KEYS:
            raise doc.error(path, f"{key!r} is the same at both scales, allowed: image_size, epochs, grid, "
                                  f"{', '.join(sorted(TRAIN_KEYS))} or an arch key")
        _check_not_reserved(doc, path, key)
        if key in grid:
            raise doc.error(path, f"{key!r} is a grid key, allowed: map its values with proxy.grid")
        if key in TRAIN_KEYS:
            train[key] = _check_train_value(doc, path, key, value)
        else:
            arch[key] = value
    image_size = _int(doc, ("proxy", "image_size"), m["image_size"], 4) if "image_size" in m else None
    epochs = _int(doc, ("proxy", "epochs"), m["epochs"], 1) if "epochs" in m else None
    proxy_grid: dict[str, tuple] | tuple[dict[str, Any], ...] = {}
    raw_grid = m.get("grid")
    if raw_grid is not None:
        path = ("proxy", "grid")
        if not grid:
            raise doc.error(path, "the study has no grid, allowed: drop proxy.grid")
        if grid_rows is not None:
            n = len(grid_rows)
            if not isinstance(raw_grid, list) or len(raw_grid) != n:
                raise doc.error(path, f"must be a list of {n} mappings, one per grid row (arch keys that row "
                                      f"trains with at proxy scale; {{}} for none), got {_show(raw_grid)}")
            rows = []
            for i, item in enumerate(raw_grid):
                row = _mapping(doc, path + (i,), item, what="a mapping of arch keys")
                for key in row:
                    _check_not_reserved(doc, path + (i, key), key)
                    if key == LABEL or key in TRAIN_KEYS:
                        raise doc.error(path + (i, key), f"{key!r} is not an arch key, allowed: arch keys")
                rows.append(row)
            proxy_grid = tuple(rows)
        else:
            g = _mapping(doc, path, raw_grid, allowed=list(grid), what="a mapping of grid key to its proxy values")
            out: dict[str, tuple] = {}
            for key, values in g.items():
                n = len(grid[key])
                if not isinstance(values, list) or len(values) != n:
                    raise doc.error(path + (key,), f"must be a list of {n} values, one per value of grid.{key} "
                                                   f"{thaw(list(grid[key]))!r}, got {_show(values)}")
                out[key] = tuple(freeze(v) for v in values)
            proxy_grid = out
    repeats = _int(doc, ("proxy", "repeats"), m["repeats"], 1, 1000) if "repeats" in m else None
    return ProxySpec(arch=arch, grid=proxy_grid, image_size=image_size, epochs=epochs, train=train, repeats=repeats)


def _study_space(doc: _Doc, raw: Any) -> tuple[SearchSpace, _Doc]:
    if raw is None:
        return SearchSpace(), doc.at("space")
    if isinstance(raw, str):
        display = os.path.normpath(os.path.join(os.path.dirname(doc.source), raw)) \
            if not os.path.isabs(raw) and not doc.source.startswith("<") else raw
        path = doc.base_dir / raw
        if not path.is_file():
            raise doc.error(("space",), f"file not found: {raw!r} (looked at {path.resolve()}), "
                                        f"allowed: a search-space YAML path relative to this file, or a mapping")
        data, lines = _read_yaml(path, display)
        space_doc = _Doc(display, lines, path.resolve().parent)
        return _parse_space(space_doc, data, source=display), space_doc
    if isinstance(raw, Mapping):
        space_doc = doc.at("space")
        return _parse_space(space_doc, raw, source=None), space_doc
    raise doc.error(("space",), f"must be a search-space file path or a mapping, got {_show(raw)}")


def _study_grid(doc: _Doc, raw: Any, fixed: Mapping[str, Any],
                space: SearchSpace) -> tuple[dict[str, tuple], tuple[dict[str, Any], ...] | None]:
    """``(values per key, rows)``: a mapping grid has no rows (its cells are the product); a
    list of mappings is one row per paper row, for ablations whose rows change several keys
    together (``+ focusing``, ``+ DWC``), each optionally named by ``label``."""
    if isinstance(raw, list):
        return _study_grid_rows(doc, raw, fixed, space)
    m = _mapping(doc, ("grid",), raw, what="a mapping of key to a list of values, or a list of rows (mappings)")
    grid: dict[str, tuple] = {}
    for key, values in m.items():
        path = ("grid", key)
        _check_grid_key(doc, path, key, fixed)
        if not isinstance(values, list) or not values:
            raise doc.error(path, f"must be a non-empty list of values, got {_show(values)}")
        _json(doc, path, values)
        out: list[Any] = []
        for i, value in enumerate(values):
            value = _grid_value(doc, path + (i,), key, value, space)
            if any(same_value(value, v) for v in out):
                raise doc.error(path + (i,), f"duplicate value {thaw(value)!r}, allowed: each value once")
            out.append(value)
        grid[key] = tuple(out)
    return grid, None


def _check_grid_key(doc: _Doc, path: tuple, key: str, fixed: Mapping[str, Any]) -> None:
    _check_not_reserved(doc, path, key)
    if key in fixed:
        raise doc.error(path, "also set in fixed, allowed: a key in either fixed or grid")


def _grid_value(doc: _Doc, path: tuple, key: str, value: Any, space: SearchSpace) -> Any:
    if key in TRAIN_KEYS:
        value = _check_train_value(doc, path, key, value)
    param = space.param(key)
    if param is not None:
        if param.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # so cell keys match what a sampler would store
        if not in_domain(param, value):
            raise doc.error(path, f"{thaw(value)!r} is outside the space's domain for {key!r}, "
                                  f"allowed: {_describe_domain(param)}")
    return freeze(value)


def _study_grid_rows(doc: _Doc, raw: list, fixed: Mapping[str, Any],
                     space: SearchSpace) -> tuple[dict[str, tuple], tuple[dict[str, Any], ...]]:
    if not raw:
        raise doc.error(("grid",), "must be a non-empty list of rows, got an empty list")
    rows: list[dict[str, Any]] = []
    values: dict[str, list] = {}
    for i, item in enumerate(raw):
        path = ("grid", i)
        row_in = _mapping(doc, path, item, what="a mapping of key to value (one row)")
        _json(doc, path, row_in)
        if not row_in or set(row_in) == {LABEL}:
            raise doc.error(path, "a row must set at least one key besides label")
        row: dict[str, Any] = {}
        for key, value in row_in.items():
            if key == LABEL:
                row[key] = _str(doc, path + (key,), value)
                continue
            _check_grid_key(doc, path + (key,), key, fixed)
            row[key] = _grid_value(doc, path + (key,), key, value, space)
        if rows and (LABEL in row) != (LABEL in rows[0]):
            raise doc.error(path, "every row needs a label when one has it, allowed: label all rows or none")
        for j, other in enumerate(rows):
            if LABEL in row and row[LABEL] == other[LABEL]:
                raise doc.error(path + (LABEL,), f"duplicate label {row[LABEL]!r} (also row {j}), allowed: each once")
            if set(other) == set(row) and all(same_value(other[k], row[k]) for k in row):
                raise doc.error(path, f"duplicate of row {j}, allowed: each row once")
        for key, value in row.items():
            known = values.setdefault(key, [])
            if not any(same_value(value, v) for v in known):
                known.append(value)
        rows.append(row)
    return {k: tuple(v) for k, v in values.items()}, tuple(rows)


def _study_objectives(doc: _Doc, raw: Any, task: str, paper_resolution: int | None) -> tuple[Objective, ...]:
    if raw is None:
        return (Objective(_TASK_METRIC[task], OBJECTIVES[_TASK_METRIC[task]]),)
    if not isinstance(raw, list) or not raw:
        raise doc.error(("objectives",), f"must be a non-empty list of {{name, direction}}, got {_show(raw)}")
    names = list(OBJECTIVES)
    out: list[Objective] = []
    for i, item in enumerate(raw):
        path = ("objectives", i)
        if isinstance(item, str):
            item = {"name": item}
        m = _mapping(doc, path, item, ("name", "direction"), required=("name",))
        name = _one_of(doc, path + ("name",), m["name"], names)
        direction = _one_of(doc, path + ("direction",), m.get("direction", OBJECTIVES[name]), ("maximize", "minimize"))
        if any(o.name == name for o in out):
            raise doc.error(path + ("name",), f"duplicate objective {name!r}, allowed: each objective once")
        metric = _TASK_METRIC[task]
        if name in TRAINING_METRICS and name != metric:
            raise doc.error(path + ("name",), f"{name!r} is not measured by task {task!r}, allowed: {metric!r}, "
                                              + ", ".join(repr(n) for n in names if n not in TRAINING_METRICS))
        if name == "gflops_paper" and paper_resolution is None:
            raise doc.error(path + ("name",), "'gflops_paper' needs paper_resolution, allowed: set "
                                              "paper_resolution (e.g. 224) or use 'gflops'")
        out.append(Objective(name, direction))  # type: ignore[arg-type]
    return tuple(out)


def _study_data(doc: _Doc, raw: Any, task: str = "classify") -> DataSpec:
    m = _mapping(doc, ("data",), raw, _DATA_KEYS)
    allowed = _TASK_DATASETS[task]
    name = _one_of(doc, ("data", "name"), m.get("name", allowed[0]), _DATASETS)
    if name not in allowed:
        raise doc.error(("data", "name"), f"{name!r} is not a data set for task {task!r}, "
                                          f"allowed: {', '.join(map(repr, allowed))}")
    path: str | None = None
    if name == "yolo":
        if m.get("path") is None:
            raise doc.error(("data", "path"), "required key is missing for 'yolo', allowed: an ultralytics data YAML")
        raw_path = _str(doc, ("data", "path"), m["path"])
        resolved = (doc.base_dir / os.path.expanduser(raw_path)).resolve()
        if not resolved.is_file():
            raise doc.error(("data", "path"), f"file not found: {raw_path!r} (looked at {resolved}), "
                                              f"allowed: an ultralytics data YAML relative to this file, or absolute")
        from ablate.data.detection import check_detection_data

        try:
            check_detection_data(resolved)
        except AblateError as err:
            raise doc.error(("data", "path"), str(err)) from None
        path = str(resolved)
    elif name in _FOLDER_DATASETS:
        if m.get("path") is None:
            raise doc.error(("data", "path"), f"required key is missing for {name!r}, allowed: {_FOLDER_DATASETS[name]}")
        raw_path = _str(doc, ("data", "path"), m["path"])
        resolved = (doc.base_dir / os.path.expanduser(raw_path)).resolve()
        if not resolved.is_dir():
            raise doc.error(("data", "path"), f"folder not found: {raw_path!r} (looked at {resolved}), "
                                              f"allowed: a folder relative to this file, or absolute")
        path = str(resolved)
    elif m.get("path") is not None:
        raise doc.error(("data", "path"), f"not used by {name!r}, allowed: only with name "
                                          + ", ".join(map(repr, ("yolo", *_FOLDER_DATASETS))))
    return DataSpec(
        name=name,
        path=path,
        image_size=_int(doc, ("data", "image_size"), m.get("image_size", _TASK_IMAGE_SIZE[task]), 4),
        val_fraction=_float(doc, ("data", "val_fraction"), m.get("val_fraction", 0.2), 0, 1,
                            open_low=True, open_high=True),
        num_workers=None if m.get("num_workers") is None else _int(doc, ("data", "num_workers"), m["num_workers"], 0),
    )


def _study_train(doc: _Doc, raw: Any, seed: int) -> TrainSpec:
    """``train:``; a recipe key left out (or null) stays None: the recipe decides it."""
    m = _mapping(doc, ("train",), raw, _TRAIN_SECTION_KEYS)
    v = {**_TRAIN_DEFAULTS, "seed": seed, **m}
    p = lambda key: ("train", key)  # noqa: E731
    epochs = _int(doc, p("epochs"), v["epochs"], 1)

    def given(key: str, check: Callable[[Any], Any]) -> Any:
        return None if v.get(key) is None else check(v[key])

    return TrainSpec(
        epochs=epochs,
        batch_size=_check_train_value(doc, p("batch_size"), "batch_size", v["batch_size"]),
        lr=given("lr", lambda x: _check_train_value(doc, p("lr"), "lr", x)),
        weight_decay=given("weight_decay", lambda x: _check_train_value(doc, p("weight_decay"), "weight_decay", x)),
        warmup_epochs=given("warmup_epochs", lambda x: _int(doc, p("warmup_epochs"), x, 0, epochs)),
        seed=_int(doc, p("seed"), v["seed"], 0, 2**32 - 1),
        amp=given("amp", lambda x: _bool(doc, p("amp"), x)),
        label_smoothing=given("label_smoothing",
                              lambda x: _check_train_value(doc, p("label_smoothing"), "label_smoothing", x)),
        recipe=given("recipe", lambda x: _check_train_value(doc, p("recipe"), "recipe", x)),
        lr_batch=given("lr_batch", lambda x: _int(doc, p("lr_batch"), x, 1)),
        **{key: given(key, lambda x, key=key: _check_train_value(doc, p(key), key, x))
           for key in ("randaugment", "random_erasing", "mixup", "cutmix", "clip_grad", "ema_decay")},
    )


def _study_baseline(doc: _Doc, raw: Any, cells: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The grid cell every other row is compared with: the one ``baseline`` picks (grid keys
    and values, or a row's label), else the first cell. Sampled studies have none."""
    path = ("baseline",)
    if not cells:
        if raw is not None:
            raise doc.error(path, "a baseline is a row of a grid, and this study has no grid, allowed: drop baseline")
        return None
    if raw is None:
        return dict(cells[0])
    if isinstance(raw, str):
        labelled = [c for c in cells if c.get(LABEL) == raw]
        if not labelled:
            labels = [c[LABEL] for c in cells if LABEL in c]
            raise doc.error(path, f"no grid row is labelled {raw!r}, allowed: "
                                  + (", ".join(map(repr, labels)) if labels else "grid keys and values, e.g. "
                                     + repr({k: thaw(v) for k, v in cells[0].items()})))
        return dict(labelled[0])
    m = _mapping(doc, path, raw, what="the grid keys and values of one row, or a row's label")
    matching = [c for c in cells if all(k in c and same_value(freeze(c[k]), freeze(v)) for k, v in m.items())]
    if len(matching) != 1:
        rows = "; ".join(repr({k: thaw(v) for k, v in c.items()}) for c in cells[:6])
        what = "matches no grid row" if not matching else f"matches {len(matching)} grid rows"
        raise doc.error(path, f"{thaw(m)!r} {what}, allowed: keys and values that pick one row of: {rows}")
    return dict(matching[0])


def _study_sampler(doc: _Doc, raw: Any, grid: Mapping[str, Any], seed: int) -> SamplerSpec:
    m = _mapping(doc, ("sampler",), raw, ("name", "seed", "population_size"))
    name = _one_of(doc, ("sampler", "name"), m.get("name", "grid" if grid else "tpe"), _SAMPLERS)
    if name == "grid" and not grid:
        raise doc.error(("sampler", "name"), "'grid' needs a grid, allowed: add grid: {key: [values]}, "
                                             "or one of 'random', 'tpe', 'nsga2'")
    if grid and name != "grid":
        raise doc.error(("sampler", "name"), f"a study with a grid trains every cell once, so {name!r} has nothing "
                                             f"to choose, allowed: 'grid' (or drop grid and give trials)")
    population = m.get("population_size")
    if population is not None:
        if name != "nsga2":
            raise doc.error(("sampler", "population_size"), f"only NSGA-II has a population, got sampler {name!r}, "
                                                            "allowed: name: nsga2, or drop population_size")
        population = _int(doc, ("sampler", "population_size"), population, 2, 10_000)
    return SamplerSpec(name=name, seed=_int(doc, ("sampler", "seed"), m.get("seed", seed), 0, 2**32 - 1),  # type: ignore[arg-type]
                       population_size=population)


def _study_scheduler(doc: _Doc, raw: Any, train: TrainSpec, objectives: tuple[Objective, ...]) -> SchedulerSpec | None:
    if raw is None:
        return None
    m = _mapping(doc, ("scheduler",), raw, ("name", "grace_period", "reduction_factor"))
    name = _one_of(doc, ("scheduler", "name"), m.get("name", "asha"), _SCHEDULERS)
    if not any(o.name in TRAINING_METRICS for o in objectives):
        raise doc.error(("scheduler",), "early stopping needs a training objective to watch, "
                                        f"allowed: add objective {', '.join(map(repr, TRAINING_METRICS))}, "
                                        "or drop scheduler")
    grace = _int(doc, ("scheduler", "grace_period"), m.get("grace_period", 1), 1, train.epochs)
    factor = _float(doc, ("scheduler", "reduction_factor"), m.get("reduction_factor", 2), 1, open_low=True)
    return SchedulerSpec(name=name, grace_period=grace, reduction_factor=factor)  # type: ignore[arg-type]


def _storage(doc: _Doc, raw: Any) -> str:
    url = _str(doc, ("storage",), raw)
    if not _URL_RE.match(url):
        raise doc.error(("storage",), f"must be an SQLAlchemy URL, got {url!r}, "
                                      f"allowed: e.g. sqlite:///runs/x.db, postgresql://host/db")
    prefix = "sqlite:///"
    if url.startswith(prefix):
        rest, sep, query = url[len(prefix):].partition("?")
        if rest and not rest.startswith("/") and not rest.startswith(":memory:"):
            url = prefix + os.path.abspath(rest) + sep + query
    return url


# --------------------------------------------------------------------------- feasibility


def arch_api(task: str = "classify") -> tuple[Callable[[Mapping[str, Any]], dict],
                                               Callable[[Mapping[str, Any]], None]]:
    """``(resolve, check)`` of the task's model builder (imported here: it imports torch)."""
    if task == "detect":
        from ablate.models import yolo

        return yolo.resolve_yolo_arch, yolo.check_yolo_arch
    from ablate import models

    return models.resolve_arch, models.check_arch


def _strip_key(message: str, key: str) -> str:
    """Drop a leading ``key:`` the builder may have put in front of its message (we add the path)."""
    for prefix in (f"{key}: ", f"{key!r}: ", f"arch.{key}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def _check_against_models(study: Study, doc: _Doc, space_doc: _Doc) -> None:
    """Every fixed/grid/param key must be one the builder knows; every grid cell must build."""
    resolve_arch, check_arch = arch_api(study.task)
    # (key, value, where, path) in the order the candidate is assembled; `attention` first,
    # because which family options exist depends on it.
    entries: list[tuple[str, Any, _Doc, tuple]] = []
    if study.base is not None:
        entries.append(("preset", study.base, doc, ("base",)))
    for key, value in study.space.fixed.items():
        if key not in study.fixed and key not in study.grid:
            entries.append((key, value, space_doc, ("fixed", key)))
    entries += [(k, v, doc, ("fixed", k)) for k, v in study.fixed.items()]
    if study.proxy is not None:
        entries += [(k, v, doc, ("proxy", k)) for k, v in study.proxy.arch.items()]
    if study.grid_rows is None:  # a list-form grid's rows may set unrelated keys: each row is checked below
        entries += [(k, vs[0], doc, ("grid", k)) for k, vs in study.grid.items()]
    entries.sort(key=lambda e: (e[0] != "preset", e[0] != "attention"))

    arch: dict[str, Any] = {"img_size": study.data.image_size}
    for key, value, where, path in entries:
        if key in TRAIN_KEYS:
            continue
        arch[key] = thaw(value)
        try:
            resolve_arch(dict(arch))
        except Infeasible:
            pass  # a combination problem, not an unknown key; grid cells are checked below
        except ConfigError as err:
            message = str(err) if key == "preset" else _strip_key(str(err), key)
            raise where.error(path, message.replace("preset", "base", 1) if key == "preset" else message) from None

    # Searched params: probe each declared value (both bounds of a range) with its `when` met.
    free = study.free_space
    for p in free.params:
        if p.name in TRAIN_KEYS:
            for value in p.choices or (p.low, p.high):
                _check_train_value(space_doc, ("params", p.name), p.name, value)
            continue
        if not all(any(same_value(free.fixed[k], v) for v in vs) for k, vs in p.when.items() if k in free.fixed):
            continue  # never active under this study's fixed values (e.g. another family's option)
        base = {**arch, **{k: thaw(v[0]) for k, v in p.when.items() if k not in free.fixed}}
        # A searched `attention` (e.g. per-stage patterns LLLL / LLSS): a family option is
        # valid when at least one of the families it can meet accepts it.
        families = [{}]
        searched = next((q for q in free.params if q.name == "attention"), None)
        if searched is not None and p.name != "attention" and "attention" not in p.when:
            families = [{"attention": thaw(c)} for c in searched.choices or ()] or [{}]
        for value in p.choices or (p.low, p.high):
            first: ConfigError | None = None
            for family in families:
                try:
                    resolve_arch({**base, **family, p.name: thaw(value)})
                except Infeasible:
                    first = None
                    break  # the sampler marks such candidates infeasible at run time
                except ConfigError as err:
                    first = first or err
                    continue
                first = None
                break
            if first is not None:
                raise space_doc.error(("params", p.name), _strip_key(str(first), p.name)) from None

    if not study.grid:
        return
    keys = [k for k in study.grid if k != LABEL]
    for row, cell in enumerate(study.cells()):
        # What trains, and the paper-scale model of the cost column (the unscaled base).
        candidates = [(study.candidate(cell), study.data.image_size)]
        paper = study.paper_candidate(cell)
        if paper is not None:
            candidates.append((paper, study.paper_resolution))
        for i, (candidate, res) in enumerate(candidates):
            try:
                check_arch(candidate)
            except (Infeasible, ConfigError) as err:
                reason = str(err)
                # Point at the key the reason names: a grid key, a proxy override (what
                # trains at proxy scale), else a fixed one (heads not dividing a fixed width
                # is the fixed value's fault, whatever the cell).
                proxied = study.proxy.arch if study.scaled and i == 0 and study.proxy is not None else {}
                at = (lambda k: ("grid", row, k)) if study.grid_rows is not None else (lambda k: ("grid", k))
                path = next((at(k) for k in keys if k in reason and k in cell), None) or next(
                    (("proxy", k) for k in proxied if k in reason), None) or next(
                    (("fixed", k) for k in study.fixed if k in reason), None) or (
                    ("grid", row) if study.grid_rows is not None else
                    ("grid", keys[0]) if len(keys) == 1 else ("grid",))
                extra = []
                if study.grid_rows is not None and LABEL in cell:
                    extra.append(f"row {cell[LABEL]!r}")
                elif len(keys) > 1:
                    extra.append("cell " + ", ".join(f"{k}={v!r}" for k, v in cell.items()))
                if i == 1:
                    extra.append(f"the paper-scale model at paper_resolution {res}")
                elif study.scaled:
                    extra.append("the proxy-scale model")
                suffix = f" ({'; '.join(extra)})" if extra else ""
                raise doc.error(path, reason + suffix) from None
