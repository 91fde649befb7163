"""`ablate show`: a study's configurations and trials as a table, JSON or CSV (read-only)."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any, Optional

import typer

from ablate.cli.common import app, echo_json, resolve_target
from ablate.cli.table_fit import TextColumn, chosen_columns, count_text, fit, flops_text, render, seconds_text, \
    terminal_width, wrapped
from ablate.errors import ConfigError

_COST_ATTRS = ("params_m", "gflops", "gflops_paper", "epochs_done", "wall_s")


class ShowFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class ShowView(str, Enum):
    both = "both"
    configs = "configs"
    trials = "trials"


@app.command()
def show(
    target: str = typer.Argument(..., help="Study YAML, a .db file or a storage URL."),
    storage: Optional[str] = typer.Option(None, "--storage", help="SQLAlchemy URL overriding the study's storage."),
    fmt: ShowFormat = typer.Option(ShowFormat.table, "--format", help="Output format."),
    study_name: Optional[str] = typer.Option(None, "--study", help="Which study, when the storage holds several."),
    columns: Optional[str] = typer.Option(
        None, "--columns", help="Comma-separated columns of the table, in this order (e.g. "
                                "number,state,attention,top1,gflops); an unknown name lists the allowed ones. "
                                "Default: every column that fits the terminal, the least important hidden first."),
    view: Optional[ShowView] = typer.Option(
        None, "--view", help="configs (one row per configuration: n, mean ± 95 % interval, verdict against the "
                             "baseline), trials (one row per trial) or both. Default: both for the table, configs "
                             "for csv; json always has both."),
) -> None:
    """Print a study's configurations (mean ± 95 % interval over the seeds) and trials, and mark the Pareto front."""
    from ablate.results import load_results

    chosen = view or (ShowView.configs if fmt == ShowFormat.csv else ShowView.both)
    if fmt == ShowFormat.csv and chosen == ShowView.both:
        raise ConfigError("--view both: a CSV holds one table, allowed: --view configs or --view trials")
    if columns is not None and fmt != ShowFormat.table:
        raise ConfigError(f"--columns: chooses the table's columns, allowed: --format table (json and csv keep "
                          f"every column, in full precision), got --format {fmt.value}")
    url, name = resolve_target(target, storage)
    results = load_results(url, study_name or name)
    if fmt == ShowFormat.json:
        echo_json(results.to_json())
    elif fmt == ShowFormat.csv:
        from ablate.results.report import configs_csv

        typer.echo(configs_csv(results) if chosen == ShowView.configs else _csv(results), nl=False)
    else:
        tables = ([_config_columns(results)] if chosen != ShowView.trials else []) + \
                 ([_trial_columns(results)] if chosen != ShowView.configs else [])
        allowed = list(dict.fromkeys(c.name for cols, *_ in tables for c in cols))
        order = chosen_columns(columns, allowed)
        if chosen != ShowView.trials:
            print_configs(results, order)
        if chosen != ShowView.configs:
            _print_table(results, order)


def _csv(results) -> str:
    import csv
    import io

    objective_names = [o["name"] for o in results.objectives]
    param_names = sorted({k for p in results.trials.get("params", []) for k in p})
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["number", "state", "pareto", *param_names, *[f"value_{n}" for n in objective_names],
                     *_COST_ATTRS, "error"])
    for r in results.trials.itertuples(index=False):
        writer.writerow([r.number, r.state, int(r.number in results.pareto),
                         *[json.dumps(r.params[k]) if isinstance(r.params.get(k), list) else r.params.get(k, "")
                           for k in param_names],
                         *[r.values.get(n, "") for n in objective_names],
                         *[r.attrs.get(a, "") for a in _COST_ATTRS], r.attrs.get("error", "")])
    return buf.getvalue()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


#: Header and formatter of each cost column in a text table: readable units, not GFLOPs to 6 places.
_COSTS = {"gflops": ("FLOPs", flops_text), "gflops_paper": ("FLOPs paper", flops_text),
          "params_m": ("params", count_text), "params_m_paper": ("params paper", count_text),
          "wall_s": ("wall", seconds_text), "epochs_done": ("epochs", _fmt)}
#: What each cost header stands for, printed under a table that shows it.
_LEGEND = {"gflops": "FLOPs = gflops (multiply-adds at the trained size)",
           "gflops_paper": "FLOPs paper = gflops_paper (at the paper's resolution)",
           "params_m": "params = params_m", "params_m_paper": "params paper = params_m_paper",
           "wall_s": "wall = wall_s"}


def _header_name(header: str, objectives: list[str]) -> tuple[str, str]:
    """(name for --columns, header) of a config_rows header: objectives lose their arrow in the name."""
    plain = header.rstrip(" ↑↓")
    if header == "★":
        return "pareto", header
    if plain in objectives:
        arrow = header[len(plain):]
        return plain, (_COSTS[plain][0] + arrow) if plain in _COSTS else header
    if header.startswith("Δ "):
        return "delta_" + header[2:], header
    if header.startswith("vs baseline"):
        return ("verdict_" + header[len("vs baseline ("):-1]) if "(" in header else "verdict", header
    return header, header


def _config_columns(results) -> tuple[list[TextColumn], str, list[str]]:
    """The configurations table as columns (title, legend keys): costs in readable units."""
    from ablate.results.report import config_rows

    title, header, rows = config_rows(results)
    names = [o["name"] for o in results.objectives]
    agg = results.aggregates
    cols = []
    for i, h in enumerate(header):
        name, shown = _header_name(h, names)
        cells = [r[i] for r in rows]
        if name in names and name in _COSTS:  # a cost is the same for every seed: its mean, in units
            cells = [_COSTS[name][1](c["mean"][name]) for c in agg.configs]
        numeric = name in names or name == "n" or name.startswith("delta_")
        cols.append(TextColumn(name, shown, tuple(cells), wrap=not numeric and name != "pareto",
                               justify="right" if numeric else "left"))
    return cols, title, [n for n in names if n in _LEGEND]


def _trial_columns(results) -> tuple[list[TextColumn], str, list[str]]:
    """The trials table as columns (title, legend keys)."""
    from ablate.storage import display_url

    objective_names = [o["name"] for o in results.objectives]
    param_names = sorted({k for p in results.trials.get("params", []) for k in p})
    attrs = [a for a in _COST_ATTRS if a not in objective_names]
    title = (f"{results.name} ({display_url(results.storage)}): {len(results.trials)} trial(s), "
             "★ = Pareto front of the trials")
    rows = list(results.trials.itertuples(index=False))
    cols = [TextColumn("number", "#", tuple(str(r.number) for r in rows), justify="right"),
            TextColumn("state", "state", tuple(r.state for r in rows)),
            TextColumn("pareto", "★", tuple("★" if r.number in results.pareto else "" for r in rows))]
    cols += [TextColumn(k, k, tuple(_fmt(r.params.get(k)) for r in rows), wrap=True) for k in param_names]
    for o in results.objectives:
        n = o["name"]
        arrow = " ↑" if o["direction"] == "maximize" else " ↓"
        header, text = _COSTS.get(n, (n, _fmt))[:2]
        cols.append(TextColumn(n, header + arrow, tuple(text(r.values.get(n)) for r in rows), justify="right"))
    for a in attrs:
        header, text = _COSTS[a]
        cols.append(TextColumn(a, header, tuple(text(r.attrs.get(a)) for r in rows), justify="right"))
    cols.append(TextColumn("error", "error", tuple(_fmt(r.attrs.get("error"))[:120] for r in rows), wrap=True))
    legend = [n for n in (*objective_names, *attrs) if n in _LEGEND]
    return cols, title, legend


def _importance(results, table: str) -> list[str]:
    """Column names, most important first: what a too-narrow terminal hides last."""
    objectives = [o["name"] for o in results.objectives]
    if table == "configs":
        return ["pareto", *objectives, "n", "trials"]
    return ["number", "state", "pareto", *objectives, "error"]


def _print_columns(cols: list[TextColumn], title: str, legend: list[str], order: list[str] | None,
                   first: list[str]) -> None:
    """Print ``cols`` chosen (``order``) or fitted to the terminal, the title above and a legend
    and what was hidden below."""
    width = terminal_width()
    if order is not None:
        by_name = {c.name: c for c in cols}
        cols = [by_name[n] for n in order if n in by_name]
        if not cols:
            typer.echo(f"{title}\n(none of --columns {','.join(order)} is a column of this table)")
            return
    else:  # a column with nothing in it (no trial failed: error) says nothing
        cols = [c for c in cols if any(c.cells)] or cols
    ranking = list(order) if order is not None else first + [c.name for c in cols if c.name not in first]
    shown, hidden = fit(cols, width, ranking)
    typer.echo(wrapped(title, width))
    typer.echo(render(shown, width), nl=False)
    notes = [_LEGEND[n] for n in legend if any(c.name == n for c in shown)]
    if notes:
        typer.echo(wrapped("; ".join(notes), width))
    if hidden:
        typer.echo(wrapped(f"hidden to fit {width} columns: {', '.join(hidden)} (choose with --columns "
                           f"{','.join(c.name for c in shown)},...; or set COLUMNS wider)", width))


def print_configs(results, order: list[str] | None = None) -> None:
    """The per-configuration table of `ablate show`, then the study's noise floor."""
    from ablate.results.report import noise_text

    cols, title, legend = _config_columns(results)
    _print_columns(cols, title, legend, order, _importance(results, "configs"))
    typer.echo(wrapped(noise_text(results), terminal_width()))


def _print_table(results, order: list[str] | None = None) -> None:
    cols, title, legend = _trial_columns(results)
    _print_columns(cols, title, legend, order, _importance(results, "trials"))
