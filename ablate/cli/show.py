"""`ablate show`: a study's configurations and trials as a table, JSON or CSV (read-only)."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any, Optional

import typer

from ablate.cli.common import app, echo_json, resolve_target
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
    url, name = resolve_target(target, storage)
    results = load_results(url, study_name or name)
    if fmt == ShowFormat.json:
        echo_json(results.to_json())
    elif fmt == ShowFormat.csv:
        from ablate.results.report import configs_csv

        typer.echo(configs_csv(results) if chosen == ShowView.configs else _csv(results), nl=False)
    else:
        if chosen != ShowView.trials:
            print_configs(results)
        if chosen != ShowView.configs:
            _print_table(results)


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


def print_configs(results) -> None:
    """The per-configuration table of `ablate show`, then the study's noise floor."""
    from rich.console import Console
    from rich.table import Table

    from ablate.results.report import config_rows, noise_text

    title, header, rows = config_rows(results)
    table = Table(title=title)
    for i, col in enumerate(header):  # numbers stay on one line; settings and trial lists fold
        table.add_column(col, overflow="fold", no_wrap=any(" ± " in r[i] or r[i][:1] in "+-" for r in rows))
    for row in rows:
        table.add_row(*row)
    console = Console(width=max(120, Console().width))
    console.print(table)
    console.print(noise_text(results), highlight=False)


def _print_table(results) -> None:
    from rich.console import Console
    from rich.table import Table

    from ablate.storage import display_url

    objective_names = [o["name"] for o in results.objectives]
    param_names = sorted({k for p in results.trials.get("params", []) for k in p})
    attrs = [a for a in _COST_ATTRS if a not in objective_names]
    title = (f"{results.name} ({display_url(results.storage)}): {len(results.trials)} trial(s), "
             "★ = Pareto front of the trials")
    table = Table(title=title)
    for col in ["#", "state", "★", *param_names,
                *[f"{o['name']} {'↑' if o['direction'] == 'maximize' else '↓'}" for o in results.objectives],
                *[a.replace("epochs_done", "epochs") for a in attrs], "error"]:
        table.add_column(col, overflow="fold")
    for r in results.trials.itertuples(index=False):
        table.add_row(str(r.number), r.state, "★" if r.number in results.pareto else "",
                      *[_fmt(r.params.get(k)) for k in param_names],
                      *[_fmt(r.values.get(n)) for n in objective_names],
                      *[_fmt(r.attrs.get(a)) for a in attrs], _fmt(r.attrs.get("error"))[:120])
    Console(width=max(120, Console().width)).print(table)

