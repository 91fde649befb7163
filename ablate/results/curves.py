"""Learning curves: one trial's, and every (running) trial's overlaid on one plot.

A trial's per-epoch numbers come from its ``curve`` user attribute (every metric the
trainer reports, written after each epoch while the trial runs) and, where a trial has no
curve, from its Optuna intermediate values (the first training objective at ``step =
epoch``, :func:`curve_objective`; what optuna-dashboard plots). Figures are plain plotly
JSON dicts, as in :mod:`ablate.results.figures`; nothing here reads a storage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ablate.metrics import TRAINING_METRICS
from ablate.results.figure_style import base_layout, family_colors, family_of, label_of, spans_decades, with_note
from ablate.results.reader import StudyResults

__all__ = ["trial_curve", "curve_objective", "curve_metrics", "curve_figure", "curves_figure", "CURVES_MAX"]

#: The overlay draws every RUNNING trial and at most this many finished ones (the latest).
CURVES_MAX = 200
_DASH = {"COMPLETE": "solid", "PRUNED": "dot", "FAIL": "dash", "RUNNING": "solid"}


def trial_curve(attrs: Mapping[str, Any], intermediate: Mapping[Any, Any] | None = None,
                objective: str | None = None) -> list[dict[str, Any]]:
    """A trial's per-epoch records (``{"epoch": e, METRIC: value, ...}``), oldest first.

    The ``curve`` attribute wins (it has every metric); without one, the intermediate
    values become ``{"epoch": step, objective: value}`` records.
    """
    curve = attrs.get("curve")
    if isinstance(curve, (list, tuple)) and curve:
        return [dict(c) for c in curve if isinstance(c, Mapping)]
    if not intermediate or not objective:
        return []
    out = []
    for step, value in intermediate.items():
        try:
            epoch, number = int(step), float(value)
        except (TypeError, ValueError, OverflowError):
            continue
        if math.isfinite(number):
            out.append({"epoch": epoch, objective: number})
    return sorted(out, key=lambda c: c["epoch"])


def _number(value: Any) -> float | None:
    """A plottable number (not a flag, not NaN or infinite), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _intermediate(row: Any) -> Mapping[Any, Any] | None:
    value = getattr(row, "intermediate", None)
    return value if isinstance(value, Mapping) else None


def curve_objective(results: StudyResults) -> str | None:
    """The objective a trial's intermediate values hold: the first one that trains (as the
    runner records them; costs have no curve), else the first objective."""
    names = [o["name"] for o in results.objectives]
    return next((n for n in names if n in TRAINING_METRICS), names[0] if names else None)


def curve_metrics(results: StudyResults) -> list[str]:
    """The per-epoch metrics any trial of the study has, the first objective first."""
    first = curve_objective(results)
    seen: dict[str, None] = {}
    for r in results.trials.itertuples(index=False) if not results.trials.empty else ():
        for record in trial_curve(r.attrs, _intermediate(r), first):
            seen.update((k, None) for k, v in record.items() if k != "epoch" and _number(v) is not None)
    names = list(seen)
    objectives = [o["name"] for o in results.objectives if o["name"] in seen]
    return list(dict.fromkeys([*objectives, *names]))


def curve_figure(attrs: Mapping[str, Any], metric: str, intermediate: Mapping[Any, Any] | None = None,
                 objective: str | None = None) -> Any:
    """A trial's per-epoch curve: the quality metric and the training loss (second axis).

    Without a ``curve`` attribute the trial's ``intermediate`` values (those of
    ``objective``, default ``metric``) are drawn instead.
    """
    curve = trial_curve(attrs, intermediate, objective or metric)
    epochs = [c.get("epoch") for c in curve]
    data = []
    if any(metric in c for c in curve):
        data.append({"type": "scatter", "x": epochs, "y": [c.get(metric) for c in curve], "name": label_of(metric),
                     "mode": "lines+markers"})
    if any("train_loss" in c for c in curve):
        data.append({"type": "scatter", "x": epochs, "y": [c.get("train_loss") for c in curve], "name": "train loss",
                     "mode": "lines+markers", "yaxis": "y2", "line": {"dash": "dot"}})
    layout = base_layout("learning curve" if curve else "learning curve (no epoch finished)", "epoch",
                         label_of(metric), 380,
                         yaxis2={"title": {"text": "train loss"}, "overlaying": "y", "side": "right",
                                 "showgrid": False})
    return {"data": data, "layout": layout}


def curves_figure(results: StudyResults, metric: str, *, states: Sequence[str] = ("RUNNING",),
                  log_y: bool = False, colors: Mapping[str, str] | None = None) -> Any:
    """Overlaid per-epoch curves of ``metric`` for the trials in ``states``, coloured by family.

    RUNNING trials are drawn thick with their last epoch marked (they grow at every
    refresh); finished ones thin and faded, dotted when PRUNED, dashed when FAIL. Every
    RUNNING trial is drawn and at most :data:`CURVES_MAX` finished ones (the latest). Each
    line's ``customdata`` is its trial number (a click opens the trial); ``meta`` says
    ``{"kind": "curve", "number", "state", "family"}``. Without a line to draw the figure
    says why (``layout.meta.note``).

    Args:
        metric: any per-epoch metric (``top1``, ``train_loss``, ...; :func:`curve_metrics`).
        states: trial states to draw.
        log_y: a logarithmic y axis (a loss over decades); ignored when a value is 0 or below.
        colors: family → colour (default: the registry's stable mapping over the study's families).
    """
    frame = results.trials
    first = curve_objective(results)
    rows = [r for r in frame.itertuples(index=False)] if not frame.empty else []
    palette = dict(colors) if colors is not None else family_colors(
        {family_of(r.params, r.attrs) for r in rows})
    wanted = set(states)
    picked = [r for r in rows if r.state in wanted]
    running = [r for r in picked if r.state == "RUNNING"]
    finished = sorted((r for r in picked if r.state != "RUNNING"), key=lambda r: r.number)[-CURVES_MAX:]
    data: list[dict[str, Any]] = []
    families_drawn: dict[str, None] = {}
    ys: list[float] = []
    for r in [*finished, *sorted(running, key=lambda r: r.number)]:
        curve = [c for c in trial_curve(r.attrs, _intermediate(r), first) if _number(c.get(metric)) is not None]
        if not curve:
            continue
        family = family_of(r.params, r.attrs)
        color = palette.get(family) or family_colors([family])[family]
        live = r.state == "RUNNING"
        xs, values = [c.get("epoch") for c in curve], [_number(c[metric]) for c in curve]
        ys += values
        families_drawn[family] = None
        data.append({
            "type": "scatter", "x": xs, "y": values, "mode": "lines+markers" if live else "lines",
            "name": f"trial {r.number}", "legendgroup": family, "showlegend": False,
            "customdata": [int(r.number)] * len(xs), "hoverinfo": "text",
            "hovertext": [f"<b>trial {r.number}</b> ({r.state}, {family})<br>epoch {e}: {label_of(metric)} {v:.4g}"
                          for e, v in zip(xs, values)],
            "line": {"color": color, "width": 3 if live else 1.2, "dash": _DASH.get(r.state, "solid")},
            "marker": {"color": color, "size": [0] * (len(xs) - 1) + [9] if live else 0},
            "opacity": 1.0 if live else 0.45,
            "meta": {"kind": "curve", "number": int(r.number), "state": r.state, "family": family}})
    for family in sorted(families_drawn):  # one legend entry per family; a click hides its lines
        data.append({"type": "scatter", "x": [None], "y": [None], "mode": "lines", "name": family,
                     "legendgroup": family, "line": {"color": palette.get(family) or family_colors([family])[family],
                                                     "width": 3}, "hoverinfo": "skip", "meta": {"kind": "legend"}})
    n_run = sum(1 for r in rows if r.state == "RUNNING")
    shown = len(finished) + len(running)
    title = (f"{label_of(metric)} per epoch: {len(running)} RUNNING"
             + (f", {len(finished)} finished" if wanted - {"RUNNING"} else "") + " trial(s)")
    layout = base_layout(title, "epoch", label_of(metric), 480)
    layout.update(legend={"title": {"text": "attention"}}, uirevision=f"curves-{metric}")
    if log_y and spans_decades(ys, 0.0):
        layout["yaxis"]["type"] = "log"
    note = None
    if not data:
        if not rows:
            note = "No trials yet: curves appear as soon as a trial finishes its first epoch."
        elif shown == 0:
            note = (f"No trial is {' or '.join(sorted(wanted)) or 'selected'} now ({n_run} RUNNING, {len(rows)} in "
                    f"all); tick finished states to see their curves.")
        else:
            note = (f"None of the {shown} {' or '.join(sorted(wanted))} trial(s) has finished an epoch with "
                    f"{label_of(metric)} yet; their curves appear after their first epoch.")
    return with_note({"data": data, "layout": layout}, note)
