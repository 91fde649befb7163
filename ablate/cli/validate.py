"""`ablate validate`: check study files without running anything.

It runs :func:`ablate.study.load.check_study`, the same check ``ablate run`` (``--dry-run``
or not) makes before it starts, and prints a bad study as the same one ``error:`` line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ablate.cli.common import app
from ablate.errors import AblateError, ConfigError

if TYPE_CHECKING:
    from ablate.study import Study


class ValidateScale(str, Enum):
    proxy = "proxy"
    paper = "paper"
    both = "both"


def checked_study(path: Path, scale: str, storage: str | None = None,
                  overrides: Sequence[str] = ()) -> Study | None:
    """The study ``ablate run --scale SCALE`` would run, or None after printing why not.

    The one code path of ``validate`` and ``run``: a bad study is one ``error:`` line on
    stderr (its traceback only with ``ABLATE_DEBUG=1``), the same for both commands.
    """
    from ablate.study.load import check_study

    try:
        return check_study(path, scale=scale, storage=storage, overrides=overrides)
    except AblateError as err:
        if os.environ.get("ABLATE_DEBUG"):
            raise
        typer.echo(f"error: {err}", err=True)
        return None


@app.command()
def validate(
    study_files: list[str] = typer.Argument(..., help="Study YAML files, then any key=value overrides "
                                                       "(train.epochs=1) to check as `ablate run` would apply them "
                                                       "to each file.", metavar="STUDY|KEY=VALUE"),
    scale: ValidateScale = typer.Option(
        ValidateScale.both, "--scale",
        help="Check what `ablate run --scale proxy|paper` would run; both (the default): a study must be "
             "valid at both, the first failing scale's error is shown."),
) -> None:
    """Check study files (and the spaces they use) as `ablate run` does before it starts, without running
    or writing anything."""
    from ablate.storage import display_url

    scales = ("proxy", "paper") if scale is ValidateScale.both else (scale.value,)
    overrides = [p for p in study_files if _is_override(p)]
    paths = [Path(p) for p in study_files if not _is_override(p)]
    if not paths:
        raise ConfigError(f"no study file among {' '.join(_shown(study_files))}, allowed: STUDY.yaml ... [KEY=VALUE]...")
    failed = 0
    for path in paths:
        studies = []
        for s in scales:
            study = checked_study(path, s, overrides=overrides)
            if study is None:
                failed += 1
                break
            studies.append(study)
        else:
            study = studies[0]
            what = f"{len(study.cells())} grid cell(s)" if study.is_grid else \
                f"{len(study.free_space.params)} searched param(s), {study.trials} trial(s)"
            typer.echo(f"ok: {path}: {study.name}, {what}, storage {display_url(study.storage)}, "
                       f"checked at {' and '.join(scales)} scale"
                       + (f" with {' '.join(_shown(overrides))}" if overrides else ""))
    if failed:
        raise typer.Exit(2)


def _is_override(arg: str) -> bool:
    """``key=value`` (an override) rather than a study file: it has ``=`` before any ``/`` and
    names no existing file."""
    return "=" in arg.split("/")[0] and not Path(arg).exists()


def _shown(overrides: Sequence[str]) -> list[str]:
    from ablate.study.overrides import shown_value

    return [f"{k}={shown_value(v)}" for k, _, v in (o.partition("=") for o in overrides)]
