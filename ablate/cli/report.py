"""`ablate report`: the ablation table, noise floor and front in md, LaTeX, CSV, HTML or PNG."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from ablate.cli.common import app, resolve_target
from ablate.errors import ConfigError

_REPORT_SUFFIXES = {".md": "md", ".tex": "latex", ".csv": "csv", ".html": "html", ".htm": "html", ".png": "png"}


class ReportFormat(str, Enum):
    md = "md"
    latex = "latex"
    csv = "csv"
    html = "html"
    png = "png"


@app.command()
def report(
    target: str = typer.Argument(..., help="Study YAML, a .db file or a storage URL."),
    storage: Optional[str] = typer.Option(None, "--storage", help="SQLAlchemy URL overriding the study's storage."),
    fmt: Optional[ReportFormat] = typer.Option(None, "--format", help="md | latex | csv | html | png "
                                                                      "(default: from -o's suffix, else md)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write here instead of standard output."),
    study_name: Optional[str] = typer.Option(None, "--study", help="Which study, when the storage holds several."),
) -> None:
    """The ablation table and Pareto front of a study, for a paper or a pull request."""
    chosen = fmt.value if fmt is not None else _REPORT_SUFFIXES.get(output.suffix.lower(), "md") if output else "md"
    if chosen == "png" and output is None:
        raise ConfigError("--format png writes an image: give -o FILE.png")
    if output is not None and not output.parent.exists():
        raise ConfigError(f"-o {output}: folder {str(output.parent)!r} does not exist")
    from ablate.errors import StorageError
    from ablate.results import load_results
    from ablate.results.report import render_report

    url, name = resolve_target(target, storage)
    results = load_results(url, study_name or name)
    if results.trials.empty:
        from ablate.storage import display_url

        raise StorageError(f"study {results.name!r} in {display_url(url)!r} has no trials yet: nothing to report "
                           f"(run it with `ablate run`)")
    out = render_report(results, chosen)
    if output is None:
        typer.echo(out, nl=False)
        return
    from ablate.atomic import write_atomic

    write_atomic(output, out)  # whole or not at all: a full disk leaves no cut-off report
    from ablate.results.report import front_text

    typer.echo(f"wrote {output} ({chosen}, {len(results.trials)} trial(s), {len(results.configs)} configuration(s), "
               f"front of the means: trials {front_text(results)})", err=True)

