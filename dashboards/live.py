"""The dashboard's live pages: overlaid learning curves and the filterable trial table.

Plain functions from read results to Dash components, like :mod:`dashboards.pages`; the
callbacks that refresh them on the poll live in :mod:`dashboards.app`.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from typing import Any

from dash import dash_table, dcc, html

from ablate.metrics import COSTS
from ablate.results import StudyResults, trial_metric
from ablate.results.curves import curve_metrics, curves_figure
from ablate.results.figure_style import family_of, label_of

from ablate.dashboards.pages import STATES, nav, study_path
from ablate.dashboards.sources import StudyRef

__all__ = ["curves_controls", "curves_view", "trials_page", "trials_rows", "TRIAL_ATTRS"]

#: Trial attributes shown as table columns when any trial has them (costs and progress).
TRIAL_ATTRS = (*COSTS, "epochs_done", "wall_s", "seed", "repeat")


def curves_controls(ref: StudyRef, results: StudyResults) -> html.Div:
    """The curves page's frame: metric, states, log axis, and the graph (filled by the poll)."""
    metrics = curve_metrics(results) or [o["name"] for o in results.objectives]
    return html.Div([
        nav(ref, results, "curves"),
        html.Div([
            html.Label("metric: "),
            dcc.Dropdown(id="curves-metric", options=[{"label": label_of(m), "value": m} for m in metrics],
                         value=metrics[0] if metrics else None, clearable=False,
                         style={"width": "260px", "display": "inline-block", "verticalAlign": "middle"}),
            html.Label(" trials: ", style={"marginLeft": "2em"}),
            dcc.Checklist(id="curves-states", options=[{"label": s, "value": s} for s in ("RUNNING", *STATES[:3])],
                          value=["RUNNING"], inline=True),
            dcc.Checklist(id="curves-log", options=[{"label": "log y", "value": "y"}], value=[], inline=True,
                          style={"marginLeft": "2em"}),
        ], className="controls"),
        html.Div(id="curves-summary", className="summary"),
        dcc.Graph(id="curves-graph", config={"displaylogo": False}, style={"height": "500px"}),
        html.P("Curves of RUNNING trials grow at every refresh; click a line to open its trial.", className="muted"),
    ])


def curves_view(results: StudyResults, metric: str | None, states: Sequence[str], log: Sequence[str]) -> tuple[
        dict, str]:
    """The overlaid curves for the chosen metric and states, and a one-line summary."""
    metric = metric or (curve_metrics(results) or [o["name"] for o in results.objectives] or ["top1"])[0]
    fig = curves_figure(results, metric, states=list(states), log_y="y" in (log or []))
    frame = results.trials
    running = int((frame["state"] == "RUNNING").sum()) if not frame.empty else 0
    lines = sum(1 for t in fig["data"] if t.get("meta", {}).get("kind") == "curve")
    return fig, f"{running} RUNNING of {len(frame)} trials; {lines} curve(s) drawn."


def trials_rows(ref: StudyRef, results: StudyResults) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The trial table's columns and rows: one row per trial, numbers kept as numbers.

    Columns: the trial (a link), its state, its family (unless ``attention`` is a setting), every setting (``param.NAME``),
    every objective (``value.NAME``), the costs and progress attributes any trial has.
    Numeric columns are typed ``numeric`` so that the native filter understands ``> 80``.
    """
    frame = results.trials
    if frame.empty:
        return [], [{"name": "trial", "id": "number", "type": "numeric"}]
    params = list(dict.fromkeys(k for p in frame["params"] for k in p))
    objectives = [o["name"] for o in results.objectives]
    # an objective that is also an attribute (gflops) is shown once, as the objective
    attrs = [k for k in TRIAL_ATTRS if k not in objectives and any(k in a for a in frame["attrs"])]
    family = "attention" not in params  # else the setting's own column says it
    data = []
    for r in frame.itertuples(index=False):
        row: dict[str, Any] = {"number": int(r.number),
                               "link": f"[{int(r.number)}]({study_path(ref, f'trial/{int(r.number)}')})",
                               "state": r.state, "family": family_of(r.params, r.attrs)}
        row.update({f"param.{k}": _cell(r.params.get(k)) for k in params})
        # a cost objective is known before the trial ends (an attribute): PRUNED and RUNNING rows show it too
        row.update({f"value.{k}": _cell(trial_metric(r.values, r.attrs, k, from_curve=False)) for k in objectives})
        row.update({f"attr.{k}": _cell(r.attrs.get(k)) for k in attrs})
        data.append(row)
    numeric = {c for c in data[0] if c != "link" and all(isinstance(d.get(c), (int, float)) or d.get(c) is None
                                                            for d in data)}
    ids = ["link", "number", "state", *(["family"] if family else []), *[f"param.{k}" for k in params],
           *[f"value.{k}" for k in objectives], *[f"attr.{k}" for k in attrs]]
    names = {"link": "open", "number": "trial", "state": "state", "family": "attention",
             **{f"param.{k}": k for k in params}, **{f"value.{k}": label_of(k) for k in objectives},
             **{f"attr.{k}": label_of(k) for k in attrs}}
    columns = [{"name": names[c], "id": c, **({"type": "numeric"} if c in numeric else {"type": "text"}),
                **({"presentation": "markdown"} if c == "link" else {})} for c in ids]
    return data, columns


def trials_page(ref: StudyRef, results: StudyResults) -> html.Div:
    """Every trial in a table that filters (type ``> 80``, ``COMPLETE``, ``focal`` in a column's
    filter cell) and sorts (click a header); its rows refresh with the study, keeping the filter."""
    data, columns = trials_rows(ref, results)
    return html.Div([
        nav(ref, results, "trials"),
        html.P("Filter a column by typing in the cell under its header (e.g. > 80, < 0.01, COMPLETE, focal); "
               "click a header to sort.", className="muted"),
        dash_table.DataTable(id="trials-table", data=data, columns=columns, filter_action="native",
                             sort_action="native", sort_mode="multi", page_action="native", page_size=50,
                             markdown_options={"link_target": "_self"},
                             style_cell={"textAlign": "right", "fontFamily": "inherit", "padding": "4px 8px"},
                             style_table={"overflowX": "auto"}),
    ])


def _cell(value: Any) -> Any:
    """A table cell: numbers stay numbers (so they sort and filter by value), the rest becomes text."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        return float(f"{f:.6g}") if math.isfinite(f) else None
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, default=str)
