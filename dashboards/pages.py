"""The dashboard's pages as plain functions from read results to Dash components.

No callbacks here (they live in :mod:`dashboards.app`), so each page can be built and
checked in a test without a server or a browser.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from dash import dash_table, dcc, html

from ablate.results.curves import curve_figure, curve_objective
from ablate.results.figure_style import spans_decades
from ablate.results.figures import COST_KEYS, axes_of, label_of, pareto_figure, pareto_points
from ablate.results.report import ablation_table, front_text, noise_text, text_cell
from ablate.results import StudyResults
from ablate.storage import display_url

from ablate.dashboards.sources import StudyRef

__all__ = ["study_path", "studies_page", "study_summary", "pareto_controls", "pareto_summary", "trial_page",
           "table_page", "analysis_controls", "message", "nav"]

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")
PAGES = (("pareto", "Pareto"), ("curves", "curves"), ("trials", "trials"), ("table", "ablation table"),
         ("analysis", "analysis"))


def study_path(ref: StudyRef, page: str = "pareto") -> str:
    """The dashboard path of one page of a study."""
    return f"/study/{ref.key}/{page}"


def message(text: str, kind: str = "error") -> html.Div:
    """A one-line notice in the page (errors never become tracebacks)."""
    return html.Div(text, className=f"notice {kind}", role="alert" if kind == "error" else None)


def nav(ref: StudyRef | None, results: StudyResults | None, current: str) -> html.Div:
    """Breadcrumbs and the study's page tabs."""
    items: list[Any] = [dcc.Link("studies", href="/")]
    if ref is not None:
        items += [" / ", html.B(ref.name), html.Span(f"  ({display_url(ref.url)})", className="muted")]
        tabs = [dcc.Link(label, href=study_path(ref, page), className="tab active" if page == current else "tab")
                for page, label in PAGES]
        return html.Div([html.Div(items, className="crumbs"), html.Div(tabs, className="tabs")])
    return html.Div(html.Div(items, className="crumbs"))


# --------------------------------------------------------------------------- studies


def study_summary(ref: StudyRef, results: StudyResults) -> dict[str, Any]:
    """One row of the studies page: counts by state, objectives, best values, last update."""
    frame = results.trials
    counts = frame["state"].value_counts().to_dict() if not frame.empty else {}
    best = []
    for o in results.objectives:
        col = f"value.{o['name']}"
        if not frame.empty and col in frame.columns:
            done = frame.loc[frame["state"] == "COMPLETE", col].dropna()
            if not done.empty:
                value = done.max() if o["direction"] == "maximize" else done.min()
                best.append(f"{o['name']} {_num(value)}")
    last = None
    if not frame.empty:
        stamps = [t for t in list(frame["datetime_complete"]) + list(frame["datetime_start"])
                  if t is not None and not (isinstance(t, float) and math.isnan(t))]
        last = max(stamps) if stamps else None
    return {
        "study": f"[{ref.name}]({study_path(ref)})",
        "storage": display_url(ref.url),
        "description": (results.spec or {}).get("description") or "",
        "trials": len(frame),
        **{s.lower(): int(counts.get(s, 0)) for s in STATES},
        "objectives": ", ".join(f"{o['name']} {'↑' if o['direction'] == 'maximize' else '↓'}"
                                for o in results.objectives),
        "best": "; ".join(best),
        "front": front_text(results) if results.configs else "",  # configurations by their trials
        "last update": last.strftime("%Y-%m-%d %H:%M:%S") if last is not None else "",
    }


def studies_page(rows: Sequence[Mapping[str, Any]], errors: Sequence[tuple[str, str]]) -> html.Div:
    """Every study in the given storages, with links to its pages."""
    children: list[Any] = [nav(None, None, ""), html.H2("Studies")]
    children += [message(f"{display_url(url)}: {err}") for url, err in errors]
    if not rows:
        children.append(message("No study yet in these storages: run one with `ablate run STUDY.yaml`; "
                                 "this page refreshes by itself.", kind="info"))
        return html.Div(children)
    columns = [{"name": c, "id": c, **({"presentation": "markdown"} if c == "study" else {})} for c in rows[0]]
    children.append(dash_table.DataTable(id="studies-table", data=list(rows), columns=columns,
                                         markdown_options={"link_target": "_self"}, sort_action="native",
                                         style_cell={"textAlign": "left", "fontFamily": "inherit", "padding": "4px"},
                                         style_table={"overflowX": "auto"}))
    return html.Div(children)


# --------------------------------------------------------------------------- Pareto


def pareto_controls(ref: StudyRef, results: StudyResults) -> html.Div:
    """The Pareto page's frame: which states to show, the x axis, and the graph."""
    x, _ = axes_of(results)
    options = list(dict.fromkeys([x, *[k for k in COST_KEYS if _has_attr(results, k)]]))
    return html.Div([
        nav(ref, results, "pareto"),
        html.Div([
            html.Label("show also: "),
            dcc.Checklist(id="pareto-states", options=[{"label": s, "value": s} for s in STATES[1:]], value=[],
                          inline=True),
            html.Label(" x axis: ", style={"marginLeft": "2em"}),
            dcc.Dropdown(id="pareto-x", options=[{"label": label_of(k), "value": k} for k in options], value=x,
                         clearable=False, style={"width": "320px", "display": "inline-block", "verticalAlign": "middle"}),
            dcc.Checklist(id="pareto-log", options=[{"label": "log x", "value": "x"}, {"label": "log y", "value": "y"}],
                          value=["x"] if _spans_decades(results, x) else [], inline=True, style={"marginLeft": "2em"}),
        ], className="controls"),
        html.Div(id="pareto-summary", className="summary"),
        dcc.Graph(id="pareto-graph", config={"displaylogo": False}, style={"height": "540px"}),
        html.P("Click a point to open its trial.", className="muted"),
    ])


def _spans_decades(results: StudyResults, x: str) -> bool:
    """Whether the x axis's values span a decade or more: then the log axis is on by default."""
    _, y = axes_of(results)
    return spans_decades(pareto_points(results, x, y)["x"]) if not results.trials.empty else False


def _has_attr(results: StudyResults, key: str) -> bool:
    return not results.trials.empty and any(key in a for a in results.trials["attrs"])


def pareto_view(ref: StudyRef, results: StudyResults, states: Sequence[str], x: str | None,
                log: Sequence[str] = ()) -> tuple[dict, Any]:
    """The Pareto figure and its summary line for the chosen states, x axis and log axes."""
    fig = pareto_figure(results, x=x, states=("COMPLETE", *states), log_x="x" in log, log_y="y" in log)
    fig["layout"]["uirevision"] = ref.key  # keep zoom and legend clicks across refreshes
    return fig, pareto_summary(results)


def pareto_summary(results: StudyResults) -> html.Span:
    """Counts, the front of the configuration means, the noise floor: text the browser test can read.

    ``#pareto-front-list`` lists the front's configurations by their trials (``1, 2`` with
    one run each, ``(0, 1, 2), (6, 7, 8)`` with repeats); ``#pareto-near-list`` those
    indistinguishable from it; ``#pareto-noise`` the noise floor ("1 seed: no error bars"
    without repeats).
    """
    frame = results.trials
    counts = frame["state"].value_counts().to_dict() if not frame.empty else {}
    parts = [f"{counts.get(s, 0)} {s}" for s in STATES if counts.get(s, 0)]
    agg = results.aggregates
    front = front_text(results) if agg is not None and agg.configs else "none yet"
    children: list[Any] = [f"{len(frame)} trials ({', '.join(parts) or 'none yet'}); "]
    if agg is not None and agg.configs:
        children.append(f"{len(agg.configs)} configurations, up to {agg.max_n} run(s) each; ")
    children += ["Pareto front" + (" of the configuration means" if agg is not None and agg.max_n >= 2 else "")
                 + ": ", html.Span(front, id="pareto-front-list")]
    if agg is not None and agg.max_n >= 2:
        near = ", ".join("(" + ", ".join(map(str, c["trials"])) + ")" for k in agg.indistinguishable
                         if (c := agg.config(k)) is not None)
        children += ["; indistinguishable from the front: ", html.Span(near or "none", id="pareto-near-list")]
    children += [html.Br(), html.Span(noise_text(results), id="pareto-noise", className="muted")]
    return html.Span(children)


# --------------------------------------------------------------------------- trial


def trial_page(ref: StudyRef, results: StudyResults, number: int) -> html.Div:
    """One trial: settings, costs, metrics, learning curve, architecture, error."""
    frame = results.trials
    hit = frame[frame["number"] == number] if not frame.empty else frame
    if hit.empty:
        return html.Div([nav(ref, results, ""), message(f"study {ref.name!r} has no trial {number}")])
    row = hit.iloc[0]
    attrs, params, values = row["attrs"], row["params"], row["values"]
    intermediate = row.get("intermediate")  # Optuna's intermediate values, where the reader gives them
    _, y = axes_of(results)
    costs = {k: attrs[k] for k in (*COST_KEYS, "epochs_done", "wall_s") if k in attrs}
    children: list[Any] = [
        nav(ref, results, ""),
        html.H2([f"trial {number} ", html.Span(row["state"], className=f"state {row['state'].lower()}")],
                id="trial-title"),
    ]
    if number in results.pareto:
        children.append(html.P("on the Pareto front", className="front-badge"))
    config = results.aggregates.config(row["config"]) if results.aggregates is not None else None
    if config is not None:
        children.append(html.P(_config_line(results, config, number), id="trial-config", className="muted"))
    if attrs.get("error"):
        children.append(html.Div([html.B("error: "), html.Pre(str(attrs["error"]), id="trial-error")],
                                 className="notice error"))
    children += [
        html.Div([
            _kv_table("settings (sampled or grid)", params),
            _kv_table("objectives", values),
            _kv_table("costs", costs),
        ], className="row"),
        dcc.Graph(id="trial-curve", figure=curve_figure(
            attrs, y, intermediate if isinstance(intermediate, dict) else None,
            curve_objective(results)), config={"displaylogo": False}),
        html.H3("full architecture"),
        html.Pre(json.dumps(attrs.get("arch", {}), indent=2, default=str), id="trial-arch", className="arch"),
    ]
    if attrs.get("train"):
        children += [html.H3("training"), html.Pre(json.dumps(attrs["train"], indent=2, default=str))]
    return html.Div(children)


def _config_line(results: StudyResults, config: Mapping[str, Any], number: int) -> str:
    """Where a trial stands among its configuration's runs (mean ± 95 % interval per objective)."""
    from ablate.results import stats

    others = ", ".join(str(n) for n in config["trials"] if n != number) or "none"
    parts = []
    for o in results.objectives:
        name, ci = o["name"], config["ci95"][o["name"]]
        mean = config["mean"][name]
        parts.append(f"{name} {mean:.5g}" + (f" ± {(ci[1] - ci[0]) / 2:.2g}" if ci and ci[1] > ci[0] else ""))
    where = ("on the front of the configuration means" if config["key"] in results.pareto_configs
             else "indistinguishable from the front" if config["key"] in results.indistinguishable else "")
    return (f"configuration {config['key']}: n = {config['n']} COMPLETE run(s) (others: {others}); "
            f"mean {', '.join(parts)}" + ("" if config["n"] > 1 else f" ({stats.ONE_SEED})")
            + (f"; {where}" if where else ""))


def _kv_table(title: str, values: Mapping[str, Any]) -> html.Div:
    rows = [html.Tr([html.Td(k), html.Td(_num(v))]) for k, v in values.items()]
    return html.Div([html.H3(title), html.Table(html.Tbody(rows) if rows else html.Tbody(
        html.Tr(html.Td("none"))), className="kv")], className="col")


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.5g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return str(value)


# --------------------------------------------------------------------------- ablation table


def table_page(ref: StudyRef, results: StudyResults) -> html.Div:
    """The paper-style table: one row per configuration (n, mean ± 95 % interval, the
    verdict against the baseline, the front and "≈ indistinguishable from it"), reference
    values beside ours, the caption and the noise floor below.

    Cells are the report's text (:func:`ablate.results.report.text_cell`), except plain numbers,
    which stay numbers so that the columns sort by value.
    """
    table = ablation_table(results)
    data = []
    for rec in table.frame.to_dict("records"):
        out = {}
        for key in table.shown:
            value = rec.get(key)
            if key == "trial" and value is not None and not (isinstance(value, float) and math.isnan(value)):
                out[key] = f"[{int(value)}]({study_path(ref, f'trial/{int(value)}')})"
            elif key == "pareto":
                out[key] = text_cell(table, rec, key).replace("*", "★")
            else:
                text = text_cell(table, rec, key)
                out[key] = _cell(value) if " ± " not in text and not key.startswith(("delta.", "verdict.")) else text
        data.append(out)
    columns = [{"name": table.labels[c], "id": c, **({"presentation": "markdown"} if c == "trial" else {})}
               for c in table.shown]
    return html.Div([
        nav(ref, results, "table"),
        html.H2(table.title),
        dash_table.DataTable(id="ablation-table", data=data, columns=columns, page_size=50, sort_action="native",
                             markdown_options={"link_target": "_self"},
                             style_cell={"textAlign": "right", "fontFamily": "inherit", "padding": "4px 8px"},
                             style_table={"overflowX": "auto"}),
        html.P(table.caption, className="caption"),
        html.P(table.noise, id="ablation-noise", className="caption"),
        html.P(["The same table as a file: ", html.Code(f"ablate report {display_url(ref.url)} --study {ref.name} "
                                                        f"--format md|latex|csv|html|png -o FILE")],
               className="muted"),
    ])


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return float(f"{value:.5g}")
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


# --------------------------------------------------------------------------- analysis


def analysis_controls(ref: StudyRef, results: StudyResults) -> html.Div:
    """The analysis page's frame: objective chooser and the four plots (parallel coordinates, the
    configuration means with their intervals, importance, hypervolume)."""
    names = [o["name"] for o in results.objectives]
    return html.Div([
        nav(ref, results, "analysis"),
        html.Div([html.Label("objective: "),
                  dcc.Dropdown(id="analysis-objective", options=names, value=names[0] if names else None,
                               clearable=False, style={"width": "240px", "display": "inline-block",
                                                       "verticalAlign": "middle"})], className="controls"),
        dcc.Graph(id="analysis-parallel", config={"displaylogo": False}),
        dcc.Graph(id="analysis-configs", config={"displaylogo": False}),
        html.Div(id="analysis-importance-note", className="muted"),
        dcc.Graph(id="analysis-importance", config={"displaylogo": False}),
        dcc.Graph(id="analysis-hypervolume", config={"displaylogo": False}),
    ])
