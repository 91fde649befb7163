"""The one vocabulary of what a trial measures: each metric's name, direction, unit, label and
format, used by the schema (which names an objective may take), the runner (what a trial
stores), the readers, reports, dashboard and CLI (how a number is shown).

Costs are measured on the built model and do not depend on the seed; training metrics come
from the validation set after each epoch; curve metrics are logged per epoch only; init
figures say how a trial started (tensors taken from the study's ``weights:`` checkpoint).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["Metric", "METRICS", "OBJECTIVES", "TRAINING_METRICS", "COSTS", "INIT_KEYS", "CURVE_KEYS", "TASK_METRIC",
           "metric"]


@dataclass(frozen=True)
class Metric:
    """One measured quantity.

    Attributes:
        name: The key in trial values, user attributes and study files.
        direction: Which way is better when it is an objective.
        unit: What one unit is (``%``, ``1e9 multiply-adds``, ...).
        label: How tables and figures name it.
        kind: ``training`` (validation, per epoch), ``cost`` (the built model), ``curve``
            (per-epoch bookkeeping such as the loss) or ``init`` (how the model was initialised).
        fmt: Format spec for one value in a table.
        objective: Whether a study may optimise it.
    """

    name: str
    direction: Literal["maximize", "minimize"]
    unit: str
    label: str
    kind: Literal["training", "cost", "curve", "init"]
    fmt: str = ".4g"
    objective: bool = True


_ALL = (
    Metric("top1", "maximize", "%", "top-1 accuracy (%)", "training", ".2f"),
    Metric("map50_95", "maximize", "fraction", "mAP50-95", "training", ".4f"),
    Metric("map50", "maximize", "fraction", "mAP50", "training", ".4f", objective=False),
    Metric("gflops", "minimize", "1e9 multiply-adds", "GFLOPs", "cost", ".4g"),
    Metric("gflops_paper", "minimize", "1e9 multiply-adds", "GFLOPs at paper resolution", "cost", ".4g"),
    Metric("gflops_ultralytics", "minimize", "1e9 FLOPs (2 per multiply-add)", "GFLOPs (ultralytics, 2 per MAC)",
           "cost", ".1f", objective=False),
    Metric("params_m", "minimize", "1e6 parameters", "params (M)", "cost", ".2f"),
    Metric("params_m_paper", "minimize", "1e6 parameters", "Params (M), paper scale", "cost", ".2f", objective=False),
    Metric("latency_ms", "minimize", "ms", "latency (ms)", "cost", ".3g"),
    Metric("train_loss", "minimize", "", "train loss", "curve", ".4g", objective=False),
    Metric("lr", "minimize", "", "learning rate", "curve", ".3g", objective=False),
    Metric("epoch_s", "minimize", "s", "epoch time (s)", "curve", ".3g", objective=False),
    Metric("top1_ema", "maximize", "%", "top-1 of the EMA weights (%)", "curve", ".2f", objective=False),
    Metric("weights_transferred", "maximize", "tensors", "tensors from weights:", "init", ".0f", objective=False),
    Metric("weights_total", "maximize", "tensors", "tensors in the model", "init", ".0f", objective=False),
)

#: Every metric by name.
METRICS: Mapping[str, Metric] = {m.name: m for m in _ALL}
#: Objective name → its direction: what a study's ``objectives`` may name.
OBJECTIVES: Mapping[str, str] = {m.name: m.direction for m in _ALL if m.objective}
#: Objectives measured by training (the others are measured on the built model).
TRAINING_METRICS: tuple[str, ...] = tuple(m.name for m in _ALL if m.kind == "training" and m.objective)
#: Figures measured on the built model, which a trial stores as user attributes.
COSTS: tuple[str, ...] = tuple(m.name for m in _ALL if m.kind == "cost")
#: How a trial started, stored as user attributes when the study has ``weights:``.
INIT_KEYS: tuple[str, ...] = tuple(m.name for m in _ALL if m.kind == "init")
#: What a trial's per-epoch ``curve`` keeps.
CURVE_KEYS: tuple[str, ...] = ("epoch", *(m.name for m in _ALL if m.kind in ("training", "curve")))
#: The metric each task trains for; an objective of the other task is rejected.
TASK_METRIC: Mapping[str, str] = {"classify": "top1", "detect": "map50_95"}


def metric(name: str) -> Metric | None:
    """The metric called ``name``, or None for a key that is not a metric."""
    return METRICS.get(name)
