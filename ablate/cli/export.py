"""`ablate export`: a detection trial as an ultralytics model YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ablate.cli.common import app, resolve_target
from ablate.errors import ConfigError


@app.command()
def export(
    target: str = typer.Argument(..., help="Study YAML, a .db file or a storage URL."),
    trial: int = typer.Option(..., "--trial", min=0, help="Trial number (as `ablate show` lists it)."),
    out: Path = typer.Option(..., "-o", "--output", help="Model YAML to write (.yaml)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="SQLAlchemy URL overriding the study's storage."),
    study_name: Optional[str] = typer.Option(None, "--study", help="Which study, when the storage holds several."),
) -> None:
    """Write a detection trial's candidate as an ultralytics model YAML (`YOLO(FILE)` builds it)."""
    from ablate.results import load_results

    url, name = resolve_target(target, storage)
    results = load_results(url, study_name or name)
    from ablate.storage import display_url

    where = f"{display_url(target)}: study {results.name!r}"  # a URL target may carry a password
    task = (results.spec or {}).get("task")
    if task not in (None, "detect"):
        raise ConfigError(f"{where} is a {task!r} study; export writes ultralytics models of detection studies "
                          f"(task: 'detect')")
    frame = results.trials
    match = frame[frame["number"] == trial] if len(frame) else frame
    if not len(match):
        numbers = sorted(int(n) for n in frame["number"]) if len(frame) else []
        have = f"its trials are {numbers[0]}..{numbers[-1]}" if numbers else "it has no trials"
        raise ConfigError(f"{where} has no trial {trial}; {have}")
    row = match.iloc[0]
    arch = row["attrs"].get("arch")
    if arch is None:
        error = row["attrs"].get("error")
        raise ConfigError(f"{where}: trial {trial} ({row['state']}) stored no arch"
                          + (f" (it failed: {str(error).splitlines()[0][:200]})" if error else ""))
    from ablate.models import architecture_from_json

    try:
        resolved = architecture_from_json(arch, "detect")
    except ConfigError as err:
        raise ConfigError(f"{where}: trial {trial}'s arch is not a YOLO candidate ({err}); "
                          "export writes ultralytics models of detection studies") from None
    if not out.parent.is_dir():
        raise ConfigError(f"{out}: folder {out.parent} does not exist")
    from ablate.models.yolo import export_yolo_yaml

    path = export_yolo_yaml(resolved, out)
    typer.echo(f"wrote {path}: trial {trial} of {results.name} ({resolved.spec['base']}, "
               f"attention {resolved.spec['attention']!r})")
    typer.echo(f"build it: python -c \"import ablate.models.yolo; from ultralytics import YOLO; YOLO('{path}')\"")

