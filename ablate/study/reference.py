"""``reference:``, the paper's numbers printed beside the measured ones: declared (for the
JSON Schema) and checked (for the loader) in one place.

Reports join each reference row to the grid row it names, by the row's grid keys or its
``label``, and print the paper's ``top1``, ``params_m``, ``gflops``, ... next to ours. A
typo here used to pass silently and show an empty paper column, so every key is typed:
a row holds grid keys (or ``label``), known metrics within their units' ranges (a
percentage in [0, 100], a fraction in [0, 1], a count >= 0), a ``note`` and the metrics it
leaves ``unchecked``; nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ablate.metrics import METRICS
from ablate.study.doc import _Doc, _float, _json, _mapping, _one_of, _str

__all__ = ["ReferenceSection", "ReferenceRow", "REFERENCE_METRICS", "study_reference"]

#: The metrics a paper's table can give: what trials measure and what they cost.
REFERENCE_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS.values() if m.kind in ("training", "cost"))
_ROW_KEYS = ("label", "note", "unchecked")
#: The largest cost a paper could print (1e6 GFLOPs, 1e6 M parameters): far above any model.
_MAX_COST = 1e6
RefMetric = Literal[REFERENCE_METRICS]  # type: ignore[valid-type]


def metric_range(name: str) -> tuple[float, float]:
    """The closed range a reference value of metric ``name`` must lie in, from its unit."""
    unit = METRICS[name].unit
    return (0.0, 100.0) if unit == "%" else (0.0, 1.0) if unit == "fraction" else (0.0, _MAX_COST)


def _metric_field(name: str) -> Any:
    low, high = metric_range(name)
    return Field(None, ge=low, le=high, description=f"The paper's {METRICS[name].label}, {low:g} to {high:g}.")


class ReferenceRow(BaseModel):
    """One row of the paper's table: the grid keys (or ``label``) naming the grid row it belongs
    to, and the paper's numbers. Keys other than those declared here must be grid keys."""

    model_config = ConfigDict(extra="allow", frozen=True)

    label: str | None = Field(None, description="The label of the list-form grid row this row belongs to.")
    note: str | None = Field(None, description="A remark printed with the row.")
    unchecked: list[RefMetric] | None = Field(None, description=(  # type: ignore[valid-type]
        "Metrics of this row the tests do not compare with the presets (the paper prints them rounded or wrong)."))
    top1: float | None = _metric_field("top1")
    map50_95: float | None = _metric_field("map50_95")
    map50: float | None = _metric_field("map50")
    gflops: float | None = _metric_field("gflops")
    gflops_paper: float | None = _metric_field("gflops_paper")
    gflops_ultralytics: float | None = _metric_field("gflops_ultralytics")
    params_m: float | None = _metric_field("params_m")
    params_m_paper: float | None = _metric_field("params_m_paper")
    latency_ms: float | None = _metric_field("latency_ms")


class ReferenceSection(BaseModel):
    """The paper's numbers, shown next to the measured ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1, description="The citation: paper, table, and anything read differently.")
    rows: list[ReferenceRow] = Field(min_length=1, description=(
        "The paper's rows: each names a grid row by its grid keys or label, plus the paper's metrics."))
    truncated: list[RefMetric] | None = Field(None, description=(  # type: ignore[valid-type]
        "Metrics the paper prints truncated rather than rounded (compared with a floor, not a round)."))


assert set(REFERENCE_METRICS) <= set(ReferenceRow.model_fields), "a reference metric without a declared field"


def study_reference(doc: _Doc, raw: Any, cells: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Check ``reference:`` against :class:`ReferenceSection` with file:line errors.

    Returns:
        The section as written (values are not converted: a stored spec must read back equal).

    Args:
        doc: where the study came from.
        raw: the section as read.
        cells: the study's grid cells (a list-form grid's rows with their labels): a row's
            other keys must be their keys. A row may name a configuration the study does not
            train (reports show it as the paper's own row), so its values are only typed.
    """
    m = _mapping(doc, ("reference",), raw, ("source", "rows", "truncated"), required=("source", "rows"))
    source = _str(doc, ("reference", "source"), m["source"])
    if not source.strip():
        raise doc.error(("reference", "source"), "is empty, allowed: the citation (paper, table)")
    if m.get("truncated") is not None:
        _metric_list(doc, ("reference", "truncated"), m["truncated"])
    rows = m["rows"]
    if not isinstance(rows, list) or not rows:
        raise doc.error(("reference", "rows"), f"must be a non-empty list of rows, got {rows!r}")
    grid_keys = sorted({k for c in cells for k in c} - set(_ROW_KEYS))
    allowed = (*_ROW_KEYS, *REFERENCE_METRICS, *grid_keys)
    for i, row in enumerate(rows):
        path = ("reference", "rows", i)
        r = _mapping(doc, path, row, allowed, what="a mapping of grid keys or label and the paper's metrics")
        for key, value in r.items():
            if key in REFERENCE_METRICS:
                low, high = metric_range(key)
                _float(doc, path + (key,), value, low, high)
            elif key in ("label", "note"):
                _str(doc, path + (key,), value)
            elif key == "unchecked":
                _metric_list(doc, path + (key,), value)
            else:
                _json(doc, path + (key,), value)
    return dict(m)


def _metric_list(doc: _Doc, path: tuple, value: Any) -> list[str]:
    if not isinstance(value, list):
        raise doc.error(path, f"must be a list of metric names, got {value!r}, allowed: "
                              + ", ".join(REFERENCE_METRICS))
    return [_one_of(doc, path + (i,), v, REFERENCE_METRICS) for i, v in enumerate(value)]
