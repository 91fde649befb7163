"""`ablate validate`: check study files without running anything.

It runs :func:`ablate.study.load.check_study`, the same check ``ablate run`` (``--dry-run``
or not) makes before it starts, and prints a bad study as the same one ``error:`` line.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ablate.cli.common import app
from ablate.errors import AblateError

if TYPE_CHECKING:
    from ablate.study import Study


class ValidateScale(str, Enum):
    proxy = "proxy"
    paper = "paper"
    both = "both"


def checked_study(path: Path, scale: str, storage: str | None = None) -> Study | None:
    """The study ``ablate run --scale SCALE`` would run, or None after printing why not.

    The one code path of ``validate`` and ``run``: a bad study is one ``error:`` line on
    stderr (its traceback only with ``ABLATE_DEBUG=1``), the same for both commands.
    """
    from ablate.study.load import check_study

    try:
        return check_study(path, scale=scale, storage=storage)
    except AblateError as err:
        if os.environ.get("ABLATE_DEBUG"):
            raise
        typer.echo(f"error: {err}", err=True)
        return None


@app.command()
def validate(
    study_files: list[Path] = typer.Argument(..., help="Study YAML files."),
    scale: ValidateScale = typer.Option(
        ValidateScale.both, "--scale",
        help="Check what `ablate run --scale proxy|paper` would run; both (the default): a study must be "
             "valid at both, the first failing scale's error is shown."),
) -> None:
    """Check study files (and the spaces they use) as `ablate run` does before it starts, without running
    or writing anything."""
    from ablate.storage import display_url

    scales = ("proxy", "paper") if scale is ValidateScale.both else (scale.value,)
    failed = 0
    for path in study_files:
        studies = []
        for s in scales:
            study = checked_study(path, s)
            if study is None:
                failed += 1
                break
            studies.append(study)
        else:
            study = studies[0]
            what = f"{len(study.cells())} grid cell(s)" if study.is_grid else \
                f"{len(study.free_space.params)} searched param(s), {study.trials} trial(s)"
            typer.echo(f"ok: {path}: {study.name}, {what}, storage {display_url(study.storage)}, "
                       f"checked at {' and '.join(scales)} scale")
    if failed:
        raise typer.Exit(2)
