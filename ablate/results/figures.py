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
from ablate.metrics import COSTS
from ablate.results.curves import curve_figure, curves_figure
from ablate.results.figure_style import (FRONT_COLOR, IMPORTANCE_MIN_TRIALS, MEAN_COLOR, NEAR_COLOR, STATE_SYMBOL,
                                         base_layout as _layout, family_colors, family_of, label_of, spans_decades,
                                         with_note)
from ablate.results.reader import StudyResults, trial_metric

__all__ = ["axes_of", "family_of", "study_families", "pareto_points", "config_points", "pareto_figure",
           "curve_figure", "curves_figure", "parallel_figure", "hypervolume_figure", "hypervolume_note", "importance_figure",
           "importance_note", "config_figure", "COST_KEYS", "label_of"]

#: Trial attributes that are costs (lower is better) and can go on the Pareto plot's x axis.
COST_KEYS = COSTS

#: Above this many markers the Pareto plot draws with WebGL instead of SVG.
WEBGL_ABOVE = 5000
#: Parallel coordinates show at most this many trials (the best by the chosen objective).
PARALLEL_MAX = 500
#: The configuration-means plot shows at most this many configurations (the best).
CONFIGS_MAX = 40


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


def study_families(results: StudyResults) -> list[str]:
    """Every attention family among the study's trials, whatever their state (for stable colours)."""
    frame = results.trials
    if frame.empty:
        return []
    return sorted({family_of(p, a) for p, a in zip(frame["params"], frame["attrs"])})


def pareto_figure(results: StudyResults, *, x: str | None = None, y: str | None = None,
                  states: Sequence[str] = ("COMPLETE",), log_x: bool = False, log_y: bool = False,
                  colors: Mapping[str, str] | None = None) -> Any:
    """Quality against cost: trials coloured by family, configuration means, the front as a step line.

    Colour means family and nothing else (:mod:`ablate.results.figure_style`): a family's
    colour comes from the registry, so showing or hiding PRUNED, FAIL or RUNNING trials
    never recolours anything, and no family is drawn in the front's red. The state is the
    marker (PRUNED a triangle, FAIL an x, RUNNING an open diamond).

    With repeats (a configuration with two runs or more), every configuration's mean is
    drawn with its 95 % intervals as error bars (``meta.kind == "configs"``; those
    indistinguishable from the front as open orange diamonds, ``meta.class == "near"``)
    and the trials fade behind them. The front (``meta.kind == "front"``) is the 2-D front
    of the configuration means for these axes; its ``customdata`` are each front
    configuration's first trial (a click opens it), as for every configuration marker.
    A plot with nothing to draw says why (``layout.meta.note``).

    Args:
        x, y: keys to plot (default :func:`axes_of`); any objective or cost attribute.
        states: which trial states to show; PRUNED, FAIL and RUNNING trials appear with
            their own marker where they have both values, and never count for the front.
        log_x, log_y: logarithmic axes (costs that span decades); ignored for an axis
            with a value of zero or below, which a log axis cannot place.
        colors: family → colour (default :func:`~ablate.results.figure_style.family_colors`
            over the registry and every family of the study).
    """
    dx, dy = axes_of(results)
    x, y = x or dx, y or dy
    palette = dict(colors) if colors is not None else family_colors(study_families(results))
    every = pareto_points(results, x, y)
    pts = every[every["state"].isin(list(states))]
    configs = config_points(results, x, y)
    repeated = not configs.empty and int(configs["n"].max()) >= 2
    data = []
    kind = "scattergl" if len(pts) > WEBGL_ABOVE else "scatter"  # WebGL only pays off past a few thousand markers
    for family, group in pts.groupby("family", sort=True):
        color = palette.get(family) or family_colors([family])[family]
        for state, sub in group.groupby("state", sort=False):
            data.append({
                "type": kind, "x": sub["x"].tolist(), "y": sub["y"].tolist(), "mode": "markers",
                "name": family if state == "COMPLETE" else f"{family} ({state})", "legendgroup": family,
                "customdata": sub["number"].tolist(), "hovertext": sub["hover"].tolist(), "hoverinfo": "text",
                "marker": {"symbol": STATE_SYMBOL.get(state, "circle"), "size": 6 if repeated else 9,
                           "color": color,
                           "line": {"width": 1.5 if state != "COMPLETE" else 1,
                                    "color": color if state != "COMPLETE" else "#333"},
                           **({"opacity": 0.55} if repeated else {})},
                "meta": {"kind": "trials", "state": state, "family": family}})
    if repeated:
        for cls, name, marker in (
                ("other", "configuration mean ± 95 % CI",
                 {"symbol": "circle", "size": 10, "color": MEAN_COLOR, "line": {"width": 1, "color": "#222"}}),
                ("near", "indistinguishable from the front",
                 {"symbol": "diamond-open", "size": 12, "color": NEAR_COLOR, "line": {"width": 2}})):
            sub = configs[configs["kind"] == cls]
            if sub.empty:
                continue
            data.append({"type": "scatter", "x": sub["x"].tolist(), "y": sub["y"].tolist(), "mode": "markers",
                         "name": name, "marker": marker, **_error_bars(sub, marker["color"]),
                         "customdata": sub["first"].tolist(), "hovertext": sub["hover"].tolist(),
                         "hoverinfo": "text", "meta": {"kind": "configs", "class": cls, "keys": sub["key"].tolist()}})
    front = configs[configs["kind"] == "front"].sort_values("x")
    if not front.empty:
        # Steps through the corners the front attains: going right, x gets worse when x is
        # minimised (keep y until the next point: "hv") and better when maximised ("vh").
        data.append({"type": "scatter", "x": front["x"].tolist(), "y": front["y"].tolist(), "mode": "lines+markers",
                     "name": "Pareto front of the means" if repeated else "Pareto front",
                     "line": {"shape": "hv" if _direction(results, x, "minimize") == "minimize" else "vh",
                              "color": FRONT_COLOR, "width": 2},
                     "marker": {"size": 13, "symbol": "circle-open", "color": FRONT_COLOR, "line": {"width": 2}},
                     **(_error_bars(front, FRONT_COLOR) if repeated else {}),
                     "customdata": front["first"].tolist(), "hovertext": front["hover"].tolist(),
                     "hoverinfo": "text", "meta": {"kind": "front", "keys": front["key"].tolist()}})
    title = f"{results.name}: {label_of(y)} against {label_of(x)}"
    if not configs.empty and not repeated:
        title += f" ({stats.ONE_SEED})"
    layout = _layout(title, label_of(x), label_of(y), 520)
    layout.update(clickmode="event", legend={"title": {"text": "attention"}})
    for axis, wanted, values in (("xaxis", log_x, every["x"]), ("yaxis", log_y, every["y"])):
        if wanted and spans_decades(values, 0.0):
            layout[axis]["type"] = "log"
    return with_note({"data": data, "layout": layout}, _pareto_note(results, every, pts, x, y, states))


def _pareto_note(results: StudyResults, every: pd.DataFrame, shown: pd.DataFrame, x: str, y: str,
                 states: Sequence[str]) -> str | None:
    """Why the Pareto plot is empty, or None when it has points."""
    if not shown.empty:
        return None
    n = len(results.trials)
    if n == 0:
        return "No trials yet: the plot fills in as trials finish (this page refreshes by itself)."
    counts = results.trials["state"].value_counts().to_dict()
    have = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    if every.empty:
        return (f"None of the {n} trials ({have}) has both {label_of(y)} and {label_of(x)} yet: "
                f"a trial is placed once it has both.")
    return (f"No {' or '.join(states)} trial has both values yet ({have}); "
            f"tick another state above to see the others.")


def _error_bars(sub: pd.DataFrame, color: str) -> dict[str, Any]:
    def bars(axis: str) -> dict[str, Any]:
        return {"type": "data", "symmetric": False, "array": sub[f"{axis}_plus"].tolist(),
                "arrayminus": sub[f"{axis}_minus"].tolist(), "visible": True, "color": color, "thickness": 1.2,
                "width": 3}

    return {"error_x": bars("x"), "error_y": bars("y")}


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
    note = None if total else ("No COMPLETE trial yet: each one adds a line across the settings and objectives "
                               "once it completes.")
    return with_note({"data": data, "layout": layout}, note)


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
    """Hypervolume of the COMPLETE trials as the study went on (two-objective studies).

    A curve that is missing or flat at 0 carries a sentence saying why (:func:`hypervolume_note`).
    """
    hv = hypervolume_history(results)
    data = [{"type": "scatter", "x": hv["number"].tolist(), "y": hv["hypervolume"].tolist(), "mode": "lines",
             "line": {"shape": "hv"}, "name": "hypervolume"}]
    names = " × ".join(o["name"] for o in results.objectives)
    title = (f"hypervolume ({names}; reference point: the worst value of each objective)"
             if len(results.objectives) == 2 else "hypervolume needs exactly two objectives")
    return with_note({"data": data, "layout": _layout(title, "trial number", "hypervolume", 380)},
                     hypervolume_note(results, hv))


def hypervolume_note(results: StudyResults, history: pd.DataFrame | None = None) -> str | None:
    """Why the hypervolume curve is empty or flat at 0, or None when it has risen.

    The reference point is the worst value of each objective over the COMPLETE trials, so
    the area stays 0 until one COMPLETE trial beats that point in both objectives: one
    trial alone, or trials that only trade one objective for the other, add nothing.
    """
    if len(results.objectives) != 2:
        return (f"Hypervolume is drawn for studies with two objectives; this one has "
                f"{len(results.objectives)}.")
    hv = hypervolume_history(results) if history is None else history
    n = len(hv)
    if n == 0:
        return "Hypervolume needs at least 2 COMPLETE trials; the study has none yet."
    if n < 2:
        return "Hypervolume needs at least 2 COMPLETE trials; the study has 1."
    if float(hv["hypervolume"].max()) <= 0.0:
        a, b = (o["name"] for o in results.objectives)
        return (f"Flat at 0: none of the {n} COMPLETE trials beats the reference point (the worst {a} and the "
                f"worst {b} seen) in both objectives yet; they only trade one for the other.")
    return None


def importance_note(results: StudyResults, needed: int = IMPORTANCE_MIN_TRIALS) -> str | None:
    """Why parameter importance cannot be drawn yet, or None when it can.

    It needs ``needed`` COMPLETE trials and at least one setting that takes two values
    among them (an importance ranks what varied).
    """
    frame = results.trials
    done = frame[frame["state"] == "COMPLETE"] if not frame.empty else frame
    n = len(done)
    varied = _varied_params(done)
    if n < needed:
        return (f"Parameter importance needs at least {needed} COMPLETE trials whose settings vary; "
                f"the study has {n}" + (f" ({len(varied)} setting(s) vary)." if n else "."))
    if not varied:
        return (f"Parameter importance needs settings that vary; all {n} COMPLETE trials share the same "
                f"settings.")
    return None


def _varied_params(done: pd.DataFrame) -> list[str]:
    seen: dict[str, set[str]] = {}
    for params in (done["params"] if not done.empty else ()):
        for k, v in params.items():
            seen.setdefault(k, set()).add(_short(v))
    return sorted(k for k, vs in seen.items() if len(vs) > 1)


def importance_figure(importances: Mapping[str, float], objective: str, method: str, *,
                      note: str | None = None) -> Any:
    """Horizontal bars of parameter importances for one objective (``note``: why there are none)."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    data = [{"type": "bar", "x": [float(v) for _, v in items], "y": [k for k, _ in items], "orientation": "h"}]
    title = f"parameter importance for {objective}" + (f" ({method})" if method else "")
    layout = _layout(title, "importance", "", max(240, 60 + 40 * len(items)))
    layout["margin"]["l"] = 140
    return with_note({"data": data, "layout": layout}, note)


def config_figure(results: StudyResults, objective: str, *, colors: Mapping[str, str] | None = None) -> Any:
    """Every configuration's mean of ``objective`` with its 95 % interval as error bars.

    The numbers are the study's aggregates (``results.configs``: the ``mean`` and ``ci95``
    that ``ablate show --format json`` prints), one marker per configuration coloured by
    its family, best first, the front's configurations ringed in its red; a configuration
    with one run has no bar and says so on hover. At most :data:`CONFIGS_MAX` (the best)
    are drawn; the title says how many there are.
    """
    configs = [c for c in results.configs if c["mean"].get(objective) is not None]
    maximize = _direction(results, objective, "maximize") == "maximize"
    configs.sort(key=lambda c: -c["mean"][objective] if maximize else c["mean"][objective])
    total = len(configs)
    configs = configs[:CONFIGS_MAX]  # one labelled tick each: hundreds took a browser 50 s to lay out
    palette = dict(colors) if colors is not None else family_colors(study_families(results))
    front, near = set(results.pareto_configs), set(results.indistinguishable)
    by_family: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    frame = results.trials
    attrs_of = dict(zip(frame["number"], frame["attrs"])) if not frame.empty else {}
    for i, c in enumerate(configs):
        by_family.setdefault(family_of(c["params"], attrs_of.get(c["trials"][0], {})), []).append((i, c))
    data = []
    for family in sorted(by_family):
        rows = by_family[family]
        color = palette.get(family) or family_colors([family])[family]
        means = [c["mean"][objective] for _, c in rows]
        cis = [c["ci95"].get(objective) for _, c in rows]
        hover = []
        for (_, c), mean, ci in zip(rows, means, cis):
            where = " (on the front)" if c["key"] in front else " (indistinguishable from the front)" \
                if c["key"] in near else ""
            spread = f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else f" ({stats.ONE_SEED})"
            settings = "<br>".join(f"{k} = {_short(v)}" for k, v in c["params"].items())
            hover.append(f"<b>configuration {c['key']}</b>{where}<br>n = {c['n']}: trials "
                         f"{', '.join(map(str, c['trials']))}<br>{objective} {mean:.4g}{spread}<br>{settings}")
        data.append({"type": "scatter", "mode": "markers", "name": family, "x": [i for i, _ in rows], "y": means,
                     "customdata": [c["trials"][0] for _, c in rows], "hovertext": hover, "hoverinfo": "text",
                     "marker": {"color": color, "size": 10, "symbol": "circle", "line": {"width": 1, "color": "#333"}},
                     "error_y": {"type": "data", "symmetric": False, "visible": True, "color": color,
                                 "array": [(ci[1] - m) if ci else 0.0 for m, ci in zip(means, cis)],
                                 "arrayminus": [(m - ci[0]) if ci else 0.0 for m, ci in zip(means, cis)]},
                     "meta": {"kind": "config-means", "family": family, "keys": [c["key"] for _, c in rows]}})
    ringed = [(i, c) for i, c in enumerate(configs) if c["key"] in front]
    if ringed:  # the front's red ring, as on the Pareto plot
        data.append({"type": "scatter", "mode": "markers", "name": "on the Pareto front", "x": [i for i, _ in ringed],
                     "y": [c["mean"][objective] for _, c in ringed], "hoverinfo": "skip",
                     "customdata": [c["trials"][0] for _, c in ringed],
                     "marker": {"symbol": "circle-open", "size": 16, "color": FRONT_COLOR, "line": {"width": 2}},
                     "meta": {"kind": "config-front", "keys": [c["key"] for _, c in ringed]}})
    shown = f"the {len(configs)} best of {total} configurations" if total > len(configs) else "per configuration"
    layout = _layout(f"{label_of(objective)}, {shown}: mean and 95 % interval, best first",
                     "", label_of(objective), 460)
    layout["xaxis"].update(tickmode="array", tickvals=list(range(len(configs))),
                           ticktext=[_config_label(c) for c in configs], tickangle=-35, automargin=True)
    layout["legend"] = {"title": {"text": "attention"}}
    note = None
    if not configs:
        note = f"No COMPLETE trial has {objective} yet: each configuration appears once one of its runs completes."
    elif max(c["n"] for c in configs) < 2:
        note = (f"{len(configs)} configuration(s), each with 1 run: no error bars until a configuration has "
                f"2 COMPLETE runs (repeats: 2 or more).")
    return with_note({"data": data, "layout": layout}, note)


def _config_label(config: Mapping[str, Any]) -> str:
    text = ", ".join(f"{k}={_short(v)}" for k, v in config["params"].items()) or str(config["key"])
    return text if len(text) <= 32 else text[:31] + "…"
