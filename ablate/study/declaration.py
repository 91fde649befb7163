"""The study file and the search-space file as written, declared once as pydantic models.

This is the one declaration of what the two YAML files may contain (STYLE §7): every key,
its type, its bounds, its default and what it means. Three things come from it:

* the JSON Schema that ``ablate schema study|space`` prints and that ``schemas/`` ships, so
  an editor with the YAML language server completes and checks a file (the ``$schema``
  line at the top of each file under ``studies/`` and ``search_spaces/``);
* the key lists the hand-written loader accepts, section by section (``_STUDY_KEYS``,
  ``_DATA_KEYS``, ...), so adding a key means adding a field here;
* the training defaults the loader fills in (``_TRAIN_DEFAULTS``).

The loader (:mod:`ablate.study.load`) stays the authority: it checks what a schema cannot
say (a key in ``fixed`` or in ``grid``, ``warmup_epochs <= epochs``, a data set of the
task, ...) and writes the ``file:line: key.path`` errors. The declaration must never
refuse a file the loader accepts; ``tests/study/test_schema_declaration.py`` holds both to that.

Arch keys (under ``fixed``, ``grid``, ``proxy`` and a space's ``fixed``/``params``) stay
free-form: each attention family has its own options, checked against the model builders
when a study loads. Only the training keys among them are typed, and the keys the runner
derives from the data (``img_size``, ``num_classes``, ...) are refused.

A key that may be left out but not set to null defaults to :data:`pydantic.MISSING` (the
schema then neither lists ``null`` nor a default); its description says what the loader
does when it is left out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Union, get_args

from pydantic import MISSING, BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema
from typing_extensions import TypeAliasType

from ablate.metrics import OBJECTIVES, TASK_METRIC
from ablate.study.doc import _RANDAUGMENT_RE
from ablate.study.schema import (  # noqa: I001
    MAX_BATCH, MAX_CLIP, MAX_CONCURRENT, MAX_CPUS, MAX_DECAY, MAX_EPOCHS, MAX_GPUS, MAX_IMAGE_SIZE, MAX_LR,
    MAX_REDUCTION, MAX_TRIALS, MAX_WORKERS,
    _DATASETS,
    _NAME_RE,
    _RESERVED,
    _SAMPLERS,
    _SCHEDULERS,
    _TASK_DATASETS,
    _TASK_IMAGE_SIZE,
    _TASKS,
    _URL_RE,
    LABEL,
    RECIPE_NAMES,
    TRAIN_KEYS,
)
from ablate.study.reference import ReferenceSection
from ablate.study.trackers import TrackersSection
from ablate.study.weights import WeightsSection
from ablate.study.space import MAX_RANGE, FrozenDict
from ablate.train.recipes import BUDGET, RECIPES

__all__ = ["SCHEMA_KINDS", "DataSection", "ObjectiveEntry", "ParamSpec", "ProxySection", "ResourcesSection",
           "SamplerSection", "SchedulerSection", "SpaceFile", "StudyFile", "TrainSection", "json_schema",
           "json_schema_text"]


_SEED_MAX = 2**32 - 1

#: Arch keys a study may not set (the runner derives them from the data).
_RESERVED_KEYS = tuple(_RESERVED)
#: Training-section keys that are the same at both scales, so ``proxy:`` refuses them.
_SAME_AT_BOTH_SCALES = ("seed", "amp", "compile", "lr_batch")

Task = Literal[_TASKS]  # type: ignore[valid-type]
ObjectiveName = Literal[tuple(OBJECTIVES)]  # type: ignore[valid-type]
Direction = Literal["maximize", "minimize"]
Dataset = Literal[_DATASETS]  # type: ignore[valid-type]
Recipe = Literal[RECIPE_NAMES]  # type: ignore[valid-type]
Sampler = Literal[_SAMPLERS]  # type: ignore[valid-type]
Scheduler = Literal[_SCHEDULERS]  # type: ignore[valid-type]

#: A JSON scalar.
Scalar = Union[None, bool, int, float, str]  # noqa: UP007
#: A value a ``choice`` param can take: a JSON scalar or a (nested) list of them.
ChoiceValue = TypeAliasType("ChoiceValue", "None | bool | int | float | str | list[ChoiceValue]")
#: A non-empty list of values (a grid key's values, the values a `when` key allows).
Values = Annotated[list[Any], Field(min_length=1)]


def _refuse(value: Any, refused: tuple[str, ...], where: str) -> Any:
    if isinstance(value, Mapping):
        bad = [k for k in value if k in refused]
        if bad:
            raise ValueError(f"{', '.join(map(repr, bad))} cannot be set {where}")
    return value


class _RefuseKeys:
    """Annotation for a mapping that refuses some keys, in validation and in the schema
    (``propertyNames: {not: {enum: [...]}}``)."""

    def __init__(self, refused: tuple[str, ...], where: str) -> None:
        self.refused, self.where = refused, where

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(lambda v: _refuse(v, self.refused, self.where),
                                                            handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: Any) -> dict[str, Any]:
        out = handler(schema)
        out["propertyNames"] = {"not": {"enum": list(self.refused)}}
        return out


_NOT_RESERVED = _RefuseKeys(_RESERVED_KEYS, "in a study (they are set from the data)")
#: Arch keys and values, free-form apart from the keys the runner derives from the data.
ArchMapping = Annotated[dict[str, Any], _NOT_RESERVED]


class _Section(BaseModel):
    """A part of a file whose keys are all declared: an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _refused_names(schema: dict[str, Any], cls: type[_Open]) -> None:
    schema["propertyNames"] = {"not": {"enum": list(cls._refused)}}


class _Open(BaseModel):
    """A mapping of free-form arch keys around some declared keys; ``_refused`` keys are errors."""

    model_config = ConfigDict(extra="allow", frozen=True, json_schema_extra=_refused_names)  # type: ignore[typeddict-item]
    _refused: ClassVar[tuple[str, ...]] = _RESERVED_KEYS
    _where: ClassVar[str] = "in a study (they are set from the data)"

    @model_validator(mode="before")
    @classmethod
    def _refuse_keys(cls, data: Any) -> Any:
        return _refuse(data, cls._refused, cls._where)


def _recipe_default(key: str) -> str:
    values = ", ".join(f"{name} {table[key]!r}" for name, table in RECIPES.items())
    return f"Left out or null: the recipe's value ({values})."


# --------------------------------------------------------------------------- study file


class ObjectiveEntry(_Section):
    """One objective: a metric and which way is better."""

    name: ObjectiveName = Field(description=(
        "The metric to optimise: " + ", ".join(OBJECTIVES) + ". A training metric must be the task's "
        f"({', '.join(f'{t}: {m}' for t, m in TASK_METRIC.items())}); gflops_paper needs paper_resolution."))
    direction: Direction | MISSING = Field(MISSING, description=(
        "maximize or minimize. Left out: the metric's own direction (maximize for accuracy and mAP, "
        "minimize for costs)."))


class DataSection(_Section):
    """The data set every trial trains and validates on."""

    name: Dataset | MISSING = Field(MISSING, description=(
        "The data set: " + "; ".join(f"for task {t}: {', '.join(names)}" for t, names in _TASK_DATASETS.items())
        + ". Left out: the task's first (digits or synth-det). imagefolder, cifar10, cifar100 and yolo read "
        "data.path; nothing is downloaded."))
    path: str | None = Field(None, description=(
        "Where the data is, relative to this file or absolute: a folder with one sub-folder per class "
        "(imagefolder), the folder holding torchvision's CIFAR batches (cifar10, cifar100), or an ultralytics "
        "data YAML (yolo). Only for those data sets."))
    image_size: int | MISSING = Field(MISSING, ge=4, le=MAX_IMAGE_SIZE, description=(
        f"Side of the square training images in pixels (also the model's img_size), 4 to {MAX_IMAGE_SIZE}. Left out: "
        + ", ".join(f"{s} for task {t}" for t, s in _TASK_IMAGE_SIZE.items())
        + ", or paper_resolution when the study has a base; proxy.image_size replaces it at --scale proxy."))
    val_fraction: float = Field(0.2, gt=0, lt=1, description=(
        "Share of the data held out for validation, strictly between 0 and 1."))
    num_workers: int | None = Field(None, ge=0, le=MAX_WORKERS, description=(
        f"DataLoader worker processes per trial, 0 to {MAX_WORKERS} (0 keeps a trial single-process). Null or left out: "
        "derived from the trial's CPUs and device."))


class TrainSection(_Section):
    """How every trial trains; a trial's fixed, grid or searched training keys override these.

    Keys left out or null that a recipe decides come from the recipe (train.recipe).
    """

    epochs: int = Field(BUDGET["epochs"], ge=1, le=MAX_EPOCHS,
                        description=f"Training epochs, 1 to {MAX_EPOCHS}. proxy.epochs replaces it at --scale proxy.")
    batch_size: int = Field(BUDGET["batch_size"], ge=1, le=MAX_BATCH,
                            description=f"Images per optimiser step, 1 to {MAX_BATCH}.")
    lr: float | None = Field(None, gt=0, le=MAX_LR, description=(
        f"Peak learning rate (> 0, at most {MAX_LR:g}) of AdamW for a batch of lr_batch images, scaled linearly to batch_size "
        "(as given when lr_batch is unset). " + _recipe_default("lr")))
    weight_decay: float | None = Field(None, ge=0, le=MAX_DECAY, description=(
        f"AdamW weight decay, 0 to {MAX_DECAY:g} (none on norms, biases and each model's no_weight_decay() names). "
        + _recipe_default("weight_decay")))
    warmup_epochs: int | None = Field(None, ge=0, description=(
        "Epochs of linear warm-up before the cosine schedule, 0 to epochs. " + _recipe_default("warmup_epochs")))
    seed: int | MISSING = Field(MISSING, ge=0, le=_SEED_MAX, description=(
        "Seed of the first repeat (repeat r trains with seed + r), 0 to 2**32 - 1. Left out: the study's seed."))
    amp: bool | None = Field(None, description=(
        "Mixed precision on CUDA (the CPU always trains in float32). " + _recipe_default("amp")))
    compile: bool = Field(False, description=(
        "torch.compile the model for the training and evaluation steps (inductor; needs a C++ compiler, g++ or "
        "$CXX, on the CPU). Costs a one-off compile of tens of seconds per trial; same results within float "
        "rounding. Also ultralytics' compile for task detect."))
    label_smoothing: float | None = Field(None, ge=0, lt=1, description=(
        "Label smoothing of the cross-entropy, in [0, 1). " + _recipe_default("label_smoothing")))
    recipe: Recipe | None = Field(None, description=(
        "The table of training values for every key left out here: " + ", ".join(RECIPE_NAMES)
        + " (DeiT's, as the papers train). Null or left out: proxy at --scale proxy, deit at --scale paper. "
        "Detection always trains with ultralytics' own augmentation (proxy)."))
    lr_batch: int | None = Field(None, ge=1, le=MAX_BATCH, description=(
        f"The batch size lr is given for (lr scales by batch_size / lr_batch), 1 to {MAX_BATCH}. " + _recipe_default("lr_batch")))
    randaugment: str | None = Field(None, pattern=f"^(?:{_RANDAUGMENT_RE.pattern})?$", description=(
        "timm's RandAugment spec (e.g. rand-m9-mstd0.5-inc1: magnitude 9, its std 0.5, increasing) or '' for "
        "none. " + _recipe_default("randaugment")))
    random_erasing: float | None = Field(None, ge=0, le=1, description=(
        "Probability of random erasing (one box, pixel mode), in [0, 1]. " + _recipe_default("random_erasing")))
    mixup: float | None = Field(None, ge=0, le=1, description=(
        "Mixup alpha in [0, 1] (0 = off); with cutmix, one of the two per batch. " + _recipe_default("mixup")))
    cutmix: float | None = Field(None, ge=0, le=1, description=(
        "CutMix alpha in [0, 1] (0 = off). " + _recipe_default("cutmix")))
    clip_grad: float | None = Field(None, ge=0, le=MAX_CLIP, description=(
        f"Clip the gradient norm at this value, 0 to {MAX_CLIP:g} (0 = off). " + _recipe_default("clip_grad")))
    ema_decay: float | None = Field(None, ge=0, lt=1, description=(
        "Decay of a model EMA in [0, 1) (0 = off; reported as top1_ema). " + _recipe_default("ema_decay")))


def _train_override(key: str) -> tuple[Any, Any]:
    """``train.<key>`` as a key of fixed, a grid row or proxy: same type and bounds, not null."""
    field = TrainSection.model_fields[key]
    kinds = tuple(a for a in get_args(field.annotation) if a is not type(None)) or (field.annotation,)
    kind = kinds[0] if len(kinds) == 1 else Union[kinds]  # noqa: UP007 - built from a tuple
    if field.metadata:  # bounds (ge, lt, pattern) apply to the value, as in train:
        kind = Annotated[(kind, *field.metadata)]
    return (Union[kind, MISSING],  # noqa: UP007
            Field(MISSING, description=f"Overrides train.{key} (not null): {_first_sentence(field.description)}"))


def _first_sentence(text: str | None) -> str:
    return re.split(r"(?<=\.) (?=[A-Z])", text or "")[0]


#: Arch keys (free-form) and the training keys a candidate may set next to them
#: (:data:`~ablate.study.schema.TRAIN_KEYS`, typed as in :class:`TrainSection`): a study's
#: ``fixed``, and the base of a grid row and of ``proxy``.
ArchValues = create_model(  # type: ignore[call-overload]
    "ArchValues", __base__=_Open, __module__=__name__,
    __doc__=("Arch keys and family options of the model builder (free-form: each attention family has its own), "
             "and training keys that override train:. img_size, num_classes, in_chans and nc come from the data."),
    **{key: _train_override(key) for key in TrainSection.model_fields if key in TRAIN_KEYS})


class GridRow(ArchValues):  # type: ignore[valid-type,misc]
    """One row of a list-form grid: the keys it sets (arch keys, family options, training keys)."""

    label: str | MISSING = Field(MISSING, description=(
        "The row's name as the paper labels it (not an arch key); baseline may name it. Label every row or none."))


class ProxySection(ArchValues):  # type: ignore[valid-type,misc]
    """Laptop-scale overrides, applied at --scale proxy (the default) only.

    Arch keys (narrower widths, fewer blocks) override base and fixed; training keys override train.
    The paper-scale cost column never sees them.
    """

    _refused: ClassVar[tuple[str, ...]] = (*_RESERVED_KEYS, *_SAME_AT_BOTH_SCALES)
    _where: ClassVar[str] = "in proxy (they are set from the data, or the same at both scales)"

    image_size: int | MISSING = Field(MISSING, ge=4, le=MAX_IMAGE_SIZE, description=(
        f"Training image side at proxy scale (replaces data.image_size), 4 to {MAX_IMAGE_SIZE}."))
    epochs: int | MISSING = Field(MISSING, ge=1, le=MAX_EPOCHS, description=(
        f"Training epochs at proxy scale (replaces train.epochs), 1 to {MAX_EPOCHS}."))
    repeats: int | MISSING = Field(MISSING, ge=1, le=1000, description=(
        "Seeds per configuration at proxy scale (replaces repeats), 1 to 1000: a proxy trains in seconds."))
    grid: (Annotated[dict[str, list[Any]], _NOT_RESERVED]
           | list[Annotated[dict[str, Any], _RefuseKeys((*_RESERVED_KEYS, LABEL, *sorted(TRAIN_KEYS)),
                                                         "in a proxy.grid row (arch keys only)")]]
           | None) = Field(None, description=(
               "The proxy value of each grid value. For a mapping grid: per grid key, a list as long as its "
               "grid values (e.g. window_size: [2, 4] for grid window_size: [7, 14]); for a list-form grid: "
               "one mapping of arch keys per row ({} for none)."))


class SamplerSection(_Section):
    """The Optuna sampler that proposes candidates."""

    name: Sampler | MISSING = Field(MISSING, description=(
        "grid (every grid cell, in order), random, tpe or nsga2 (multi-objective). Left out: grid for a grid "
        "study, tpe otherwise. A grid study takes only grid."))
    seed: int | None | MISSING = Field(MISSING, ge=0, le=_SEED_MAX, description=(
        "The sampler's seed, 0 to 2**32 - 1; null: unseeded (several drivers on one study then propose "
        "different candidates). Left out: the study's seed."))
    population_size: int | None = Field(None, ge=2, le=10_000, description=(
        "NSGA-II only: COMPLETE trials per generation, 2 to 10000 (Optuna's default 50 is large for a small "
        "budget with early stopping)."))


class SchedulerSection(_Section):
    """Early stopping of weak trials (ASHA); it watches the first training objective."""

    name: Scheduler = Field("asha", description="The scheduler: " + ", ".join(_SCHEDULERS) + ".")
    grace_period: int = Field(1, ge=1, description="Epochs every trial trains before it can be stopped, "
                                                   "1 to train.epochs.")
    reduction_factor: float = Field(2, gt=1, le=MAX_REDUCTION, description=(
        f"Keep 1 / reduction_factor of the trials at each rung, > 1 and at most {MAX_REDUCTION:g}."))


class ResourcesSection(_Section):
    """What one trial reserves from Ray; fractions share a device between trials."""

    cpu: float = Field(1, gt=0, le=MAX_CPUS, description=f"CPUs per trial, > 0 and at most {MAX_CPUS:g}.")
    gpu: float = Field(0, ge=0, le=MAX_GPUS, description=(
        f"GPUs per trial, 0 to {MAX_GPUS:g} (0.5 puts two trials on one GPU)."))


_Bound = Annotated[int, Field(ge=-MAX_RANGE, le=MAX_RANGE)]
_FBound = Annotated[float, Field(ge=-MAX_RANGE, le=MAX_RANGE)]


class ParamSpec(_Section):
    """One searched parameter: exactly one of choice, int or float, and optionally step, log and when."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": [k]} for k in ("choice", "int", "float")]})

    choice: Annotated[list[ChoiceValue], Field(min_length=1)] | MISSING = Field(MISSING, description=(
        "Categorical: the values to choose from, in order (null, booleans, numbers, strings, or lists of them)."))
    int_: tuple[_Bound, _Bound] | MISSING = Field(MISSING, alias="int", description=(
        f"Integer range [low, high], both inclusive (low <= high), within +-{MAX_RANGE:g}."))
    float_: tuple[_FBound, _FBound] | MISSING = Field(MISSING, alias="float", description=(
        f"Real range [low, high], both inclusive (low <= high), within +-{MAX_RANGE:g}."))
    step: float | None = Field(None, gt=0, le=MAX_RANGE, description=(
        "Spacing of an int or float param, > 0 (an integer for int; int defaults to 1); it must divide "
        "high - low so that high is reachable. Not with log."))
    log: bool = Field(False, description="Sample an int or float param uniformly in log space (needs low > 0).")
    when: dict[str, Values | Scalar | dict[str, Any]] | None = Field(None, description=(
        "Sample this param only if, for every key (an earlier param or a fixed key), the candidate's value is "
        "one of the listed values (a single value means a list of one), e.g. {attention: [focal]}."))

    @model_validator(mode="after")
    def _one_kind(self) -> ParamSpec:
        kinds = [k for k, v in (("choice", self.choice), ("int", self.int_), ("float", self.float_))
                 if v is not MISSING]
        if len(kinds) != 1:
            raise ValueError(f"must have exactly one of choice, int, float, got {', '.join(kinds) or 'none'}")
        return self


class SpaceFile(_Section):
    """A search space: values shared by every candidate, and the parameters a sampler explores."""

    name: str | None = Field(None, description="A display name for the space.")
    fixed: ArchMapping | None = Field(None, description=(
        "Arch keys and family options applied to every candidate (e.g. attention: focal, num_heads: 2); a study's "
        "fixed overrides them. A key is in fixed or in params, not both."))
    params: Annotated[dict[str, ParamSpec], _NOT_RESERVED] | None = Field(None, description=(
        "The searched parameters in order, by the arch key, family option or training key they set; a when may "
        "only name an earlier param or a fixed key."))


class StudyFile(_Section):
    """An ablation or search study: what to vary, what to measure, how to train and where to store."""

    name: str = Field(pattern=f"^(?:{_NAME_RE.pattern})$", description=(
        "The study's name: the Optuna study name and the default database (runs/<name>.db). Letters, digits, "
        "'_', '.', '-', starting with a letter or digit, at most 100 characters (it names files)."))
    description: str | None = Field(None, description="A one-line summary shown by show, report and dashboards.")
    task: Task = Field("classify", description=(
        "classify (image classification) or detect (object detection in an ultralytics YOLO): decides the data "
        "sets, the training metric and the default objective."))
    base: str | None = Field(None, description=(
        "A model preset every candidate starts from, the paper-scale model (e.g. focal_tiny, yolov8n; "
        "`ablate profile --list` lists them); fixed, grid and proxy override its arguments."))
    space: str | SpaceFile | None = Field(None, description=(
        "The search space: a search-space YAML file relative to this one (e.g. ../search_spaces/focal.yaml), or "
        "the same mapping inline. A sampled study explores its params; a grid study checks grid values against it."))
    fixed: ArchValues | None = Field(None, description=(  # type: ignore[valid-type]
        "Arch keys, family options and training keys set for every candidate (e.g. attention: focal, "
        "num_heads: 2, lr: 1.0e-3). A key is in fixed or in grid, not both."))
    grid: Annotated[dict[str, Values], _NOT_RESERVED] | list[GridRow] | None = Field(  # type: ignore[valid-type]
        None, description=(
            "The ablation, every cell trained once per repeat (grid sampler). Either a mapping of key to its "
            "values (every combination, last key fastest), or a list of rows, each the keys it sets and "
            "optionally a label (for rows that change several keys together). Values of a space param must lie "
            "in its domain."))
    proxy: ProxySection | None = Field(None, description=(
        "Laptop-scale overrides used by --scale proxy (the default): arch keys, training keys, image_size, "
        "epochs, repeats and grid (the proxy value of each grid value). --scale paper ignores them."))
    objectives: Annotated[list[ObjectiveName | ObjectiveEntry], Field(min_length=1)] | None = Field(
        None, description=(
            "What to optimise, in order (the first one drives early stopping and per-epoch values): objective "
            "names or {name, direction} mappings, each once. Null or left out: the task's metric."))
    data: DataSection | None = Field(None, description="The data set; null or left out: the task's default.")
    train: TrainSection | None = Field(None, description="Training settings shared by every trial.")
    sampler: SamplerSection | None = Field(None, description=(
        "Which sampler proposes candidates; null or left out: grid for a grid study, tpe otherwise."))
    scheduler: SchedulerSection | None = Field(None, description=(
        "Early stopping of weak trials; null or left out: every trial trains to the end. Needs a training "
        "objective."))
    trials: int | None = Field(None, ge=1, le=MAX_TRIALS, description=(
        f"How many trials to run: required without a grid (the search budget, 1 to {MAX_TRIALS}); with a grid at most the "
        "number of cells (null or left out: all of them)."))
    max_concurrent: int | None = Field(None, ge=1, le=MAX_CONCURRENT, description=(
        f"At most this many trials at once, 1 to {MAX_CONCURRENT}; null or left out: as many as the resources allow."))
    resources: ResourcesSection | None = Field(None, description="What one trial reserves from Ray.")
    storage: str | MISSING = Field(MISSING, pattern=f"^{_URL_RE.pattern}", description=(
        "Where trials are stored: an SQLAlchemy URL, e.g. sqlite:///runs/x.db (relative to the working "
        "directory) or postgresql://host/db. Left out: sqlite:///runs/<name>.db."))
    seed: int = Field(0, ge=0, le=_SEED_MAX, description=(
        "The study's seed, 0 to 2**32 - 1: the default of train.seed and sampler.seed."))
    paper_resolution: int | None = Field(None, ge=1, le=MAX_IMAGE_SIZE, description=(
        f"Image side (1 to {MAX_IMAGE_SIZE}) at which the paper-scale cost column (gflops_paper, params_m_paper) is counted, e.g. 224; "
        "with a base also the default data.image_size. Null or left out: no paper-scale costs."))
    reference: ReferenceSection | None = Field(None, description=(
        "The paper's numbers, shown next to the measured ones: source (the citation), rows (each names a grid "
        "row by its grid keys or label, plus the paper's params_m, gflops, top1, ...) and truncated."))
    repeats: int = Field(1, ge=1, le=1000, description=(
        "Seeds per configuration (train.seed, train.seed + 1, ...), 1 to 1000; proxy.repeats replaces it at "
        "--scale proxy."))
    baseline: str | dict[str, Any] | None = Field(None, description=(
        "The grid row the others are compared with: its grid keys and values (e.g. {window_size: 7}) or a row's "
        "label. Null or left out: the first cell. Grid studies only."))
    trackers: TrackersSection | None = Field(None, description=(
        "Also log every trial to MLflow and/or TensorBoard (mlflow: DIR or URI, tensorboard: DIR); left out: neither."))
    weights: str | WeightsSection | None = Field(None, description=(
        "A local checkpoint every candidate starts from, relative to this file or absolute (never downloaded), or "
        "{path, sha256}: each tensor matching by name and shape is transferred, the rest stays fresh; detect takes an "
        "ultralytics .pt. Null or left out: from scratch."))


# --------------------------------------------------------------------------- what the loader reads


def _keys(model: type[BaseModel]) -> tuple[str, ...]:
    """The keys a file writes for ``model``, in declaration order (the order errors list them)."""
    return tuple(f.alias or name for name, f in model.model_fields.items())


def _required(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(f.alias or name for name, f in model.model_fields.items() if f.is_required())


_STUDY_KEYS = _keys(StudyFile)
_STUDY_REQUIRED = _required(StudyFile)
_OBJECTIVE_KEYS = _keys(ObjectiveEntry)
_OBJECTIVE_REQUIRED = _required(ObjectiveEntry)
_DATA_KEYS = _keys(DataSection)
_TRAIN_SECTION_KEYS = _keys(TrainSection)
_SAMPLER_KEYS = _keys(SamplerSection)
_SCHEDULER_KEYS = _keys(SchedulerSection)
_RESOURCE_KEYS = _keys(ResourcesSection)
#: The keys of ``proxy:`` that are neither arch nor training keys.
_PROXY_SPECIAL = tuple(k for k in _keys(ProxySection) if k not in TRAIN_KEYS)
_SPACE_KEYS = _keys(SpaceFile)
_PARAM_KEYS = _keys(ParamSpec)
#: Defaults of the training keys no recipe decides (the recipe's keys default to its table;
#: ``seed`` to the study's).
_TRAIN_DEFAULTS: Mapping[str, Any] = FrozenDict(
    (name, f.default) for name, f in TrainSection.model_fields.items() if f.default not in (None, MISSING))


# --------------------------------------------------------------------------- JSON Schema

#: What ``ablate schema KIND`` prints: the model of each file.
SCHEMA_KINDS: Mapping[str, type[BaseModel]] = {"study": StudyFile, "space": SpaceFile}

_TITLES = {"study": "ablate study file", "space": "ablate search-space file"}


class _Generate(GenerateJsonSchema):
    """Pydantic's generator without a title per property: the description is the hover text."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a study file (``study``) or a search-space file (``space``).

    It describes the file as written: an editor checks keys, types, bounds and values with it;
    :func:`~ablate.study.load_study` still decides (cross-key rules, files, the model builders).

    Raises:
        KeyError: ``kind`` is not a key of :data:`SCHEMA_KINDS`.
    """
    body = SCHEMA_KINDS[kind].model_json_schema(by_alias=True, schema_generator=_Generate)
    head = {"$schema": _Generate.schema_dialect, "$id": f"urn:ablate:schema:{kind}", "title": _TITLES[kind]}
    return {**head, **{k: v for k, v in body.items() if k != "title"}}


def json_schema_text(kind: str) -> str:
    """:func:`json_schema` as the text ``schemas/<kind>.schema.json`` holds (two-space indent, final newline)."""
    return json.dumps(json_schema(kind), indent=2, ensure_ascii=False) + "\n"
