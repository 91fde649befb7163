"""Plotly figures of a study: the Pareto plot, learning curves, parallel coordinates, hypervolume.

One place builds them so that the dashboard and ``ablate report --format html`` show the
same plots. Every function takes a :class:`~ablate.results.StudyResults` (or one trial's
attributes) and returns a figure as a plain plotly JSON dict (``{"data": [...], "layout":
{...}}``): building ``plotly.graph_objects`` validates every property and cost a third of
a second per plot on a 2,000-trial study. Nothing here reads a storage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ablate.results import StudyResults, hypervolume_history, nondominated

__all__ = ["axes_of", "family_of", "pareto_points", "pareto_figure", "curve_figure", "parallel_figure",
           "hypervolume_figure", "importance_figure", "COST_KEYS", "label_of"]

#: Trial attributes that are costs (lower is better) and can go on the Pareto plot's x axis.
COST_KEYS = ("gflops", "gflops_paper", "gflops_ultralytics", "params_m", "latency_ms")

_LABELS = {"top1": "top-1 accuracy (%)", "map50_95": "mAP50-95", "map50": "mAP50", "gflops": "GFLOPs",
           "gflops_paper": "GFLOPs at paper resolution", "gflops_ultralytics": "GFLOPs (ultralytics, 2 per MAC)",
           "params_m": "params (M)", "latency_ms": "latency (ms)", "train_loss": "train loss"}
_STATE_SYMBOL = {"COMPLETE": "circle", "PRUNED": "triangle-down", "FAIL": "x", "RUNNING": "diamond-open"}


def label_of(key: str) -> str:
    """A readable axis label for a metric or cost key."""
    return _LABELS.get(key, key)


def axes_of(results: StudyResults) -> tuple[str, str]:
    """(x, y) of the Pareto plot: the study's first cost objective and its first other objective.

    A study whose objectives are not one quality and one cost still gets a plot: y is the
    first maximised objective (else the first), x the first other one (else ``gflops``).
    """
    names = [o["name"] for o in results.objectives]
    maxed = [o["name"] for o in results.objectives if o["direction"] == "maximize"]
    y = maxed[0] if maxed else names[0]
    costs = [n for n in names if n != y]
    return (costs[0] if costs else "gflops"), y


def family_of(params: Mapping[str, Any], attrs: Mapping[str, Any]) -> str:
    """The attention family a trial used (per-stage lists joined), for colouring."""
    arch = attrs.get("arch") or {}
    value = params.get("attention", arch.get("attention") if isinstance(arch, Mapping) else None)
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        distinct = list(dict.fromkeys(str(v) for v in value))
        return "+".join(distinct)
    return str(value)


def _metric(row: Any, key: str) -> float | None:
    value = row.values.get(key) if isinstance(row.values, Mapping) else None
    if value is None:
        value = row.attrs.get(key)
        if value is None and row.attrs.get("curve"):
            value = row.attrs["curve"][-1].get(key)
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def pareto_points(results: StudyResults, x: str, y: str) -> pd.DataFrame:
    """One row per trial with the two plotted values, family, state and hover text.

    Columns: ``number``, ``state``, ``x``, ``y``, ``family``, ``hover``, ``front`` (on the
    2-D front of the COMPLETE trials for this pair of axes). Trials without objective
    values (PRUNED, FAIL, RUNNING) are placed at their measured cost and the last value
    their learning curve reached, if any.
    """
    rows = []
    for r in results.trials.itertuples(index=False) if not results.trials.empty else ():
        xv, yv = _metric(r, x), _metric(r, y)
        if xv is None or yv is None:
            continue
        settings = "<br>".join(f"{k} = {_short(v)}" for k, v in r.params.items())
        hover = (f"<b>trial {r.number}</b> ({r.state})<br>{label_of(y)}: {yv:.4g}<br>{label_of(x)}: {xv:.4g}"
                 + (f"<br>{settings}" if settings else ""))
        rows.append({"number": int(r.number), "state": r.state, "x": xv, "y": yv,
                     "family": family_of(r.params, r.attrs), "hover": hover})
    frame = pd.DataFrame(rows, columns=["number", "state", "x", "y", "family", "hover"])
    frame["front"] = False
    done = frame[frame["state"] == "COMPLETE"]
    if not done.empty:
        direction_y = _direction(results, y, "maximize")
        direction_x = _direction(results, x, "minimize")
        idx = nondominated(done[["x", "y"]].to_numpy().tolist(), [direction_x, direction_y])
        frame.loc[done.index[idx], "front"] = True
    return frame


def _direction(results: StudyResults, name: str, default: str) -> str:
    for o in results.objectives:
        if o["name"] == name:
            return o["direction"]
    return default


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


def pareto_figure(results: StudyResults, *, x: str | None = None, y: str | None = None,
                  states: Sequence[str] = ("COMPLETE",)) -> Any:
    """Quality against cost: one marker per trial coloured by family, the front as a step line.

    Args:
        x, y: keys to plot (default :func:`axes_of`); any objective or cost attribute.
        states: which trial states to show; PRUNED, FAIL and RUNNING trials appear with
            their own marker where they have both values, and never count for the front.
    """
    dx, dy = axes_of(results)
    x, y = x or dx, y or dy
    pts = pareto_points(results, x, y)
    pts = pts[pts["state"].isin(list(states))]
    data = []
    for family, group in pts.groupby("family", sort=True):
        for state, sub in group.groupby("state", sort=False):
            data.append({
                "type": "scatter", "x": sub["x"].tolist(), "y": sub["y"].tolist(), "mode": "markers",
                "name": family if state == "COMPLETE" else f"{family} ({state})", "legendgroup": family,
                "customdata": sub["number"].tolist(), "hovertext": sub["hover"].tolist(), "hoverinfo": "text",
                "marker": {"symbol": _STATE_SYMBOL.get(state, "circle"), "size": 9,
                           "line": {"width": 1, "color": "#333"}},
                "meta": {"kind": "trials", "state": state}})
    front = pts[pts["front"]].sort_values("x")
    if not front.empty:
        data.append({"type": "scatter", "x": front["x"].tolist(), "y": front["y"].tolist(), "mode": "lines+markers",
                     "name": "Pareto front",
                     "line": {"shape": "hv" if _direction(results, y, "maximize") == "maximize" else "vh",
                              "color": "#d62728", "width": 2},
                     "marker": {"size": 13, "symbol": "circle-open", "color": "#d62728", "line": {"width": 2}},
                     "customdata": front["number"].tolist(), "hovertext": front["hover"].tolist(),
                     "hoverinfo": "text", "meta": {"kind": "front"}})
    layout = _layout(f"{results.name}: {label_of(y)} against {label_of(x)}", label_of(x), label_of(y), 520)
    layout.update(clickmode="event", legend={"title": {"text": "attention"}})
    return {"data": data, "layout": layout}


def _layout(title: str, xtitle: str, ytitle: str, height: int, **extra: Any) -> dict[str, Any]:
    return {"title": {"text": title}, "xaxis": {"title": {"text": xtitle}, "gridcolor": "#eee", "zeroline": False},
            "yaxis": {"title": {"text": ytitle}, "gridcolor": "#eee", "zeroline": False}, "height": height,
            "plot_bgcolor": "white", "paper_bgcolor": "white", "hovermode": "closest",
            "margin": {"l": 60, "r": 60, "t": 50, "b": 50}, **extra}


def curve_figure(attrs: Mapping[str, Any], metric: str) -> Any:
    """A trial's per-epoch curve: the quality metric and the training loss (second axis)."""
    curve = list(attrs.get("curve") or [])
    epochs = [c.get("epoch") for c in curve]
    data = []
    if any(metric in c for c in curve):
        data.append({"type": "scatter", "x": epochs, "y": [c.get(metric) for c in curve], "name": label_of(metric),
                     "mode": "lines+markers"})
    if any("train_loss" in c for c in curve):
        data.append({"type": "scatter", "x": epochs, "y": [c.get("train_loss") for c in curve], "name": "train loss",
                     "mode": "lines+markers", "yaxis": "y2", "line": {"dash": "dot"}})
    layout = _layout("learning curve" if curve else "learning curve (no epoch finished)", "epoch",
                     label_of(metric), 380,
                     yaxis2={"title": {"text": "train loss"}, "overlaying": "y", "side": "right", "showgrid": False})
    return {"data": data, "layout": layout}


def parallel_figure(results: StudyResults, objective: str) -> Any:
    """Parallel coordinates of the COMPLETE trials: one axis per setting, coloured by ``objective``."""
    done = results.trials[results.trials["state"] == "COMPLETE"] if not results.trials.empty else results.trials
    dims = []
    if not done.empty:
        names = list(dict.fromkeys(k for p in done["params"] for k in p))
        for name in names:
            values = [p.get(name) for p in done["params"]]
            dims.append(_dimension(name, values))
        for o in results.objectives:
            dims.append({"label": o["name"], "values": [v.get(o["name"]) for v in done["values"]]})
    color = [v.get(objective) for v in done["values"]] if not done.empty else []
    trace = {"type": "parcoords", "dimensions": dims,
             "line": {"color": color, "colorscale": "Viridis", "showscale": True,
                      "colorbar": {"title": {"text": objective}}}}
    return {"data": [trace], "layout": {"title": {"text": f"settings of the COMPLETE trials, coloured by {objective}"},
                                        "height": 460, "margin": {"l": 80, "r": 80, "t": 80, "b": 40}}}


def _dimension(name: str, values: list[Any]) -> dict[str, Any]:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values if v is not None)
    if numeric and any(v is not None for v in values):
        return {"label": name, "values": [float("nan") if v is None else v for v in values]}
    labels = sorted({_short(v) for v in values})
    index = {s: i for i, s in enumerate(labels)}
    return {"label": name, "values": [index[_short(v)] for v in values], "tickvals": list(range(len(labels))),
            "ticktext": labels}


def hypervolume_figure(results: StudyResults) -> Any:
    """Hypervolume of the COMPLETE trials as the study went on (two-objective studies)."""
    hv = hypervolume_history(results)
    data = [{"type": "scatter", "x": hv["number"].tolist(), "y": hv["hypervolume"].tolist(), "mode": "lines",
             "line": {"shape": "hv"}, "name": "hypervolume"}]
    names = " × ".join(o["name"] for o in results.objectives)
    title = (f"hypervolume ({names}; reference point: the worst value of each objective)"
             if len(results.objectives) == 2 else "hypervolume needs exactly two objectives")
    return {"data": data, "layout": _layout(title, "trial number", "hypervolume", 380)}


def importance_figure(importances: Mapping[str, float], objective: str, method: str) -> Any:
    """Horizontal bars of parameter importances for one objective."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    data = [{"type": "bar", "x": [float(v) for _, v in items], "y": [k for k, _ in items], "orientation": "h"}]
    layout = _layout(f"parameter importance for {objective} ({method})", "importance", "",
                     max(240, 60 + 40 * len(items)))
    layout["margin"]["l"] = 140
    return {"data": data, "layout": layout}
