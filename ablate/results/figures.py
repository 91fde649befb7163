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

from ablate.results import stats
from ablate.results.aggregate import front_and_indistinguishable
from ablate.results.pareto import hypervolume_history, nondominated
from ablate.metrics import COSTS, metric
from ablate.results.reader import StudyResults, trial_metric

__all__ = ["axes_of", "family_of", "pareto_points", "config_points", "pareto_figure", "curve_figure",
           "parallel_figure", "hypervolume_figure", "importance_figure", "COST_KEYS", "label_of"]

#: Trial attributes that are costs (lower is better) and can go on the Pareto plot's x axis.
COST_KEYS = COSTS

#: Above this many markers the Pareto plot draws with WebGL instead of SVG.
WEBGL_ABOVE = 5000
#: Parallel coordinates show at most this many trials (the best by the chosen objective).
PARALLEL_MAX = 500
_STATE_SYMBOL = {"COMPLETE": "circle", "PRUNED": "triangle-down", "FAIL": "x", "RUNNING": "diamond-open"}


def label_of(key: str) -> str:
    """A readable axis label for a metric or cost key."""
    found = metric(key)
    return found.label if found is not None else key


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
    return trial_metric(row.values if isinstance(row.values, Mapping) else None, row.attrs, key)


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


def config_points(results: StudyResults, x: str, y: str) -> pd.DataFrame:
    """One row per configuration: the means of its COMPLETE runs on the two axes and their intervals.

    Columns: ``key``, ``first`` (its first COMPLETE trial, what a click opens), ``trials``,
    ``n``, ``x``, ``y`` (means), ``x_minus``/``x_plus``/``y_minus``/``y_plus`` (distances
    from the mean to the 95 % interval's ends; 0 without one), ``family``, ``hover`` and
    ``kind``: ``front`` (on the 2-D front of the means for this pair of axes), ``near``
    (indistinguishable from it, :func:`ablate.results.front_and_indistinguishable`) or
    ``other``. With the study's two objectives as the axes these are the study's
    ``pareto_configs`` and ``indistinguishable``.
    """
    columns = ["key", "first", "trials", "n", "x", "y", "x_minus", "x_plus", "y_minus", "y_plus", "family", "hover",
               "kind"]
    frame = results.trials
    if frame.empty:
        return pd.DataFrame(columns=columns)
    groups: dict[str, list[Any]] = {}
    for key, r in zip(frame["config"], frame.itertuples(index=False)):
        if r.state != "COMPLETE":
            continue
        xv, yv = _metric(r, x), _metric(r, y)
        if xv is not None and yv is not None:
            groups.setdefault(key, []).append((int(r.number), xv, yv, r))
    rows, summaries = [], []
    for key, runs in sorted(groups.items(), key=lambda kv: min(n for n, *_ in kv[1])):
        runs.sort(key=lambda run: run[0])
        sx, sy = stats.summarize([run[1] for run in runs]), stats.summarize([run[2] for run in runs])
        summaries.append([sx, sy])
        first = runs[0][3]
        numbers = [run[0] for run in runs]
        settings = "<br>".join(f"{k} = {_short(v)}" for k, v in first.params.items())
        hover = (f"<b>configuration of trial{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}</b> "
                 f"(n = {len(numbers)})<br>{label_of(y)}: {_pm(sy)}<br>{label_of(x)}: {_pm(sx)}"
                 + ("" if len(numbers) > 1 else f"<br>{stats.ONE_SEED}") + (f"<br>{settings}" if settings else ""))
        rows.append({"key": key, "first": numbers[0], "trials": numbers, "n": len(numbers), "x": sx.mean,
                     "y": sy.mean, **_errors("x", sx), **_errors("y", sy),
                     "family": family_of(first.params, first.attrs), "hover": hover, "kind": "other"})
    out = pd.DataFrame(rows, columns=columns)
    if rows:
        front, near = front_and_indistinguishable(
            summaries, [_direction(results, x, "minimize"), _direction(results, y, "maximize")])
        out.loc[near, "kind"] = "near"
        out.loc[front, "kind"] = "front"
    return out


def _errors(axis: str, s: stats.Summary) -> dict[str, float]:
    lo, hi = s.ci95 if s.ci95 is not None else (s.mean, s.mean)
    return {f"{axis}_minus": s.mean - lo, f"{axis}_plus": hi - s.mean}


def _pm(s: stats.Summary) -> str:
    return f"{s.mean:.4g} ± {s.half_width:.2g}" if s.half_width else f"{s.mean:.4g}"


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
    """Quality against cost: trials coloured by family, configuration means, the front as a step line.

    With repeats (a configuration with two runs or more), every configuration's mean is
    drawn with its 95 % intervals as error bars (``meta.kind == "configs"``; those
    indistinguishable from the front as open orange diamonds, ``meta.class == "near"``)
    and the trials fade behind them. The front (``meta.kind == "front"``) is the 2-D front
    of the configuration means for these axes; its ``customdata`` are each front
    configuration's first trial (a click opens it), as for every configuration marker.

    Args:
        x, y: keys to plot (default :func:`axes_of`); any objective or cost attribute.
        states: which trial states to show; PRUNED, FAIL and RUNNING trials appear with
            their own marker where they have both values, and never count for the front.
    """
    dx, dy = axes_of(results)
    x, y = x or dx, y or dy
    pts = pareto_points(results, x, y)
    pts = pts[pts["state"].isin(list(states))]
    configs = config_points(results, x, y)
    repeated = not configs.empty and int(configs["n"].max()) >= 2
    data = []
    kind = "scattergl" if len(pts) > WEBGL_ABOVE else "scatter"  # WebGL only pays off past a few thousand markers
    for family, group in pts.groupby("family", sort=True):
        for state, sub in group.groupby("state", sort=False):
            data.append({
                "type": kind, "x": sub["x"].tolist(), "y": sub["y"].tolist(), "mode": "markers",
                "name": family if state == "COMPLETE" else f"{family} ({state})", "legendgroup": family,
                "customdata": sub["number"].tolist(), "hovertext": sub["hover"].tolist(), "hoverinfo": "text",
                "marker": {"symbol": _STATE_SYMBOL.get(state, "circle"), "size": 6 if repeated else 9,
                           "line": {"width": 1, "color": "#333"}, **({"opacity": 0.4} if repeated else {})},
                "meta": {"kind": "trials", "state": state}})
    if repeated:
        for cls, name, marker in (
                ("other", "configuration mean ± 95 % CI",
                 {"symbol": "circle", "size": 10, "color": "#555", "line": {"width": 1, "color": "#222"}}),
                ("near", "indistinguishable from the front",
                 {"symbol": "diamond-open", "size": 12, "color": "#ff7f0e", "line": {"width": 2}})):
            sub = configs[configs["kind"] == cls]
            if sub.empty:
                continue
            data.append({"type": "scatter", "x": sub["x"].tolist(), "y": sub["y"].tolist(), "mode": "markers",
                         "name": name, "marker": marker, **_error_bars(sub, marker["color"]),
                         "customdata": sub["first"].tolist(), "hovertext": sub["hover"].tolist(),
                         "hoverinfo": "text", "meta": {"kind": "configs", "class": cls}})
    front = configs[configs["kind"] == "front"].sort_values("x")
    if not front.empty:
        # Steps through the corners the front attains: going right, x gets worse when x is
        # minimised (keep y until the next point: "hv") and better when maximised ("vh").
        data.append({"type": "scatter", "x": front["x"].tolist(), "y": front["y"].tolist(), "mode": "lines+markers",
                     "name": "Pareto front of the means" if repeated else "Pareto front",
                     "line": {"shape": "hv" if _direction(results, x, "minimize") == "minimize" else "vh",
                              "color": "#d62728", "width": 2},
                     "marker": {"size": 13, "symbol": "circle-open", "color": "#d62728", "line": {"width": 2}},
                     **(_error_bars(front, "#d62728") if repeated else {}),
                     "customdata": front["first"].tolist(), "hovertext": front["hover"].tolist(),
                     "hoverinfo": "text", "meta": {"kind": "front"}})
    title = f"{results.name}: {label_of(y)} against {label_of(x)}"
    if not configs.empty and not repeated:
        title += f" ({stats.ONE_SEED})"
    layout = _layout(title, label_of(x), label_of(y), 520)
    layout.update(clickmode="event", legend={"title": {"text": "attention"}})
    return {"data": data, "layout": layout}


def _error_bars(sub: pd.DataFrame, color: str) -> dict[str, Any]:
    def bars(axis: str) -> dict[str, Any]:
        return {"type": "data", "symmetric": False, "array": sub[f"{axis}_plus"].tolist(),
                "arrayminus": sub[f"{axis}_minus"].tolist(), "visible": True, "color": color, "thickness": 1.2,
                "width": 3}

    return {"error_x": bars("x"), "error_y": bars("y")}


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
    """Parallel coordinates of the COMPLETE trials: one axis per setting and objective, lines coloured by ``objective``.

    Drawn as SVG lines rather than plotly's WebGL ``parcoords``, which takes over 3 s to
    draw in a browser without a GPU (software WebGL) whatever the number of trials. Above
    :data:`PARALLEL_MAX` trials only the best ones by ``objective`` are drawn (the title
    says so).
    """
    done = results.trials[results.trials["state"] == "COMPLETE"] if not results.trials.empty else results.trials
    total = len(done)
    ascending = any(o["name"] == objective and o["direction"] == "minimize" for o in results.objectives)
    if total > PARALLEL_MAX and f"value.{objective}" in done.columns:
        done = done.sort_values(f"value.{objective}", ascending=ascending).head(PARALLEL_MAX)
    dims: list[dict[str, Any]] = []
    if not done.empty:
        names = list(dict.fromkeys(k for p in done["params"] for k in p))
        dims = [_dimension(n, [p.get(n) for p in done["params"]]) for n in names]
        dims += [_dimension(o["name"], [v.get(o["name"]) for v in done["values"]]) for o in results.objectives]
    color = [v.get(objective) for v in done["values"]] if not done.empty else []
    data: list[dict[str, Any]] = []
    known = [c for c in color if c is not None]
    lo, hi = (min(known), max(known)) if known else (0.0, 1.0)
    buckets: dict[int, tuple[list, list]] = {}
    for i, c in enumerate(color):
        b = 0 if c is None or hi == lo else min(len(_VIRIDIS) - 1, int((c - lo) / (hi - lo) * len(_VIRIDIS)))
        xs, ys = buckets.setdefault(b, ([], []))
        for j, d in enumerate(dims):
            xs.append(j)
            ys.append(d["pos"][i])
        xs.append(None)
        ys.append(None)
    for b in sorted(buckets):  # best lines last, on top
        xs, ys = buckets[b]
        data.append({"type": "scatter", "x": xs, "y": ys, "mode": "lines", "hoverinfo": "skip", "showlegend": False,
                     "line": {"width": 1, "color": _VIRIDIS[b]}, "opacity": 0.55})
    data.append({"type": "scatter", "x": [None], "y": [None], "mode": "markers", "showlegend": False,
                 "hoverinfo": "skip", "marker": {"color": [lo], "cmin": lo, "cmax": hi, "showscale": True,
                                                 "colorscale": [[i / (len(_VIRIDIS) - 1), c] for i, c in
                                                                enumerate(_VIRIDIS)],
                                                 "colorbar": {"title": {"text": objective}}}})
    shapes, notes = [], []
    for j, d in enumerate(dims):
        shapes.append({"type": "line", "x0": j, "x1": j, "y0": 0, "y1": 1, "line": {"color": "#555", "width": 1}})
        notes.append({"x": j, "y": 1.08, "text": f"<b>{d['label']}</b>", "showarrow": False})
        notes += [{"x": j, "y": pos, "text": text, "showarrow": False, "xanchor": "right", "xshift": -4,
                   "font": {"size": 10, "color": "#444"}} for pos, text in d["ticks"]]
    shown = (f"the {len(done)} best of {total} COMPLETE trials by {objective}" if len(done) < total
             else f"the {total} COMPLETE trials")
    layout = {"title": {"text": f"parallel coordinates of {shown}, coloured by {objective}"}, "height": 480,
              "shapes": shapes, "annotations": notes, "plot_bgcolor": "white", "paper_bgcolor": "white",
              "xaxis": {"visible": False, "range": [-0.6, max(len(dims) - 0.6, 0.4)]},
              "yaxis": {"visible": False, "range": [-0.05, 1.15]}, "margin": {"l": 40, "r": 40, "t": 60, "b": 20}}
    return {"data": data, "layout": layout}


#: Eight steps of the Viridis colour scale, darkest (worst) first.
_VIRIDIS = ["#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39", "#fde725"]


def _dimension(name: str, values: list[Any]) -> dict[str, Any]:
    """An axis: each value's position in [0, 1] and a few labelled ticks."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values if v is not None)
    present = [float(v) for v in values if v is not None] if numeric else []
    if len(set(present)) > 1:
        lo, hi = min(present), max(present)
        pos = [None if v is None else (float(v) - lo) / (hi - lo) for v in values]
        ticks = [(k / 4, f"{lo + (hi - lo) * k / 4:.4g}") for k in range(5)]
        return {"label": name, "pos": pos, "ticks": ticks}
    labels = sorted({_short(v) for v in values}, key=lambda t: (len(t), t))
    step = 1 / (len(labels) - 1) if len(labels) > 1 else 0.0
    index = {t: (i * step if len(labels) > 1 else 0.5) for i, t in enumerate(labels)}
    return {"label": name, "pos": [index[_short(v)] for v in values], "ticks": [(index[t], t) for t in labels]}


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
