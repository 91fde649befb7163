"""How one value of a study prints in every text view, and the columns those views share.

The ablation table (:mod:`ablate.results.table` and :mod:`ablate.results.report`), ``ablate
show``'s per-configuration view (:mod:`ablate.results.config_text`) and the dashboard all
print numbers through these functions, so a cost or a metric reads the same everywhere.
They live apart from both views so that neither has to import the other for them.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["COST_COLUMNS", "NEAR_MARK", "cell_text", "format_value", "is_missing", "is_true"]

#: The cost columns of a report, in the order a paper prints them (names from ablate.metrics).
COST_COLUMNS = ("params_m", "gflops", "params_m_paper", "gflops_paper", "gflops_ultralytics")
#: What the front column shows for a configuration indistinguishable from the front.
NEAR_MARK = "≈"


def format_value(value: float, column: str) -> str:
    """``value`` with the digits its column prints (a ``paper.``, ``delta.`` or ``noise.``
    column as the value it refers to)."""
    key = column.removeprefix("paper.").removeprefix("delta.").removeprefix("noise.")
    key = key.split(".")[0]
    if key == "params_m":
        return f"{value:.2f}"
    if key.startswith("gflops"):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"
    if key in ("top1",):
        return f"{value:.2f}"
    if key.startswith("map"):
        return f"{value:.4f}"
    return f"{value:.4g}"


def cell_text(value: Any, column: str) -> str:
    """One cell of a text table: empty when missing, ``*`` on the front, numbers formatted
    for their column, lists in brackets."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column == "pareto":
        return "*" if value else ""
    if column in ("trial", "n"):
        return str(int(value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format_value(value, column)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(cell_text(v, "") for v in value) + "]"
    return str(value)


def is_true(value: Any) -> bool:
    """Whether a flag column is set (a missing value is not)."""
    return not is_missing(value) and bool(value)


def is_missing(value: Any) -> bool:
    """Whether a value is absent: ``None`` or NaN (pandas' blank)."""
    return value is None or (isinstance(value, float) and math.isnan(value))

