"""`ablate validate`: check study files without running anything."""

from __future__ import annotations

from pathlib import Path

import typer

from ablate.cli.common import app
from ablate.errors import AblateError


@app.command()
def validate(study_files: list[Path] = typer.Argument(..., help="Study YAML files.")) -> None:
    """Check study files (and the spaces they use) without running anything."""
    from ablate.study import load_study

    failed = 0
    for path in study_files:
        try:
            study = load_study(path)
        except AblateError as err:
            typer.echo(f"error: {err}", err=True)
            failed += 1
            continue
        what = f"{len(study.cells())} grid cell(s)" if study.is_grid else \
            f"{len(study.free_space.params)} searched param(s), {study.trials} trial(s)"
        typer.echo(f"ok: {path}: {study.name}, {what}, storage {study.storage}")
    if failed:
        raise typer.Exit(2)

