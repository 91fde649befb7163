"""`ablate export`: a trial as a file that builds outside ablate's runner.

A classification trial becomes one safetensors model file (its trained state dict and its
typed architecture, :mod:`ablate.models.exported`) that ``ablate.create_model(FILE)``
rebuilds, optionally with a ``torch.export`` program beside it; a detection trial becomes
an ultralytics model YAML. A reader: the database is opened read-only and never written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ablate.cli.common import app, resolve_target
from ablate.errors import ConfigError, shown_path


@app.command()
def export(
    target: str = typer.Argument(..., help="Study YAML, a .db file or a storage URL."),
    trial: int = typer.Option(..., "--trial", min=0, help="Trial number (as `ablate show` lists it)."),
    out: Path = typer.Option(..., "-o", "--output", help="File to write: FILE.safetensors for a classification "
                                                         "trial, an ultralytics model FILE.yaml for a detection one."),
    storage: Optional[str] = typer.Option(None, "--storage", help="SQLAlchemy URL overriding the study's storage."),
    study_name: Optional[str] = typer.Option(None, "--study", help="Which study, when the storage holds several."),
    program: bool = typer.Option(False, "--program", help="Classification: also write a torch.export program "
                                                          "beside FILE (FILE with .pt2; torch.export.load runs it)."),
    artifacts: Optional[Path] = typer.Option(None, "--artifacts", metavar="DIR",
                                             help="Classification: the artifacts folder the run wrote, when it "
                                                  "moved (it holds <study>/trial-N.safetensors)."),
) -> None:
    """Write a trial as a model file: classification trials as safetensors weights with their architecture
    (`ablate.create_model(FILE)` rebuilds it), detection trials as an ultralytics model YAML (`YOLO(FILE)`)."""
    from ablate.results import load_results

    url, name = resolve_target(target, storage)
    results = load_results(url, study_name or name)
    from ablate.storage import display_url

    where = f"{display_url(target)}: study {results.name!r}"  # a URL target may carry a password
    task = (results.spec or {}).get("task")
    if task == "classify":
        _check_output(out, where)
    elif task is not None and task != "detect":
        raise ConfigError(f"{where} is a {task!r} study; export writes classification and detection trials")
    elif program or artifacts is not None:
        raise ConfigError(f"{where}: --program and --artifacts are for classification trials; a detection trial "
                          "exports as an ultralytics model YAML")
    frame = results.trials
    match = frame[frame["number"] == trial] if len(frame) else frame
    if not len(match):
        numbers = sorted(int(n) for n in frame["number"]) if len(frame) else []
        have = f"its trials are {numbers[0]}..{numbers[-1]}" if numbers else "it has no trials"
        raise ConfigError(f"{where} has no trial {trial}; {have}")
    row = match.iloc[0]
    if task == "classify":
        _export_classifier(row, url, results.name, where, out, program=program, artifacts=artifacts)
        return
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


def _check_output(out: Path, where: str) -> None:
    """A classification trial's output: a ``.safetensors`` file in an existing folder."""
    from ablate.models.exported import SUFFIX

    if out.suffix != SUFFIX:
        raise ConfigError(f"-o {shown_path(out)}: {where} is a 'classify' study, whose trials export as a model file "
                          f"ending in {SUFFIX} (-o winner{SUFFIX}); an ultralytics model YAML is for detection studies")
    if not out.parent.is_dir():
        raise ConfigError(f"-o {shown_path(out)}: folder {shown_path(out.parent)} does not exist")


def _weights_source(row: Any, url: str, where: str, artifacts: Optional[Path]) -> Path:
    """The trial's weights file, or a one-line reason why it has none."""
    from ablate.run.checkpoint import WEIGHTS_ATTR, weights_candidates

    attrs, number, state = row["attrs"], int(row["number"]), str(row["state"])
    if state == "FAIL":
        error = str(attrs.get("error") or "no reason stored").splitlines()[0][:200]
        raise ConfigError(f"{where}: trial {number} failed ({error}), so it kept no weights; export a COMPLETE "
                          "or PRUNED trial (`ablate show` lists them)")
    if state not in ("COMPLETE", "PRUNED"):
        raise ConfigError(f"{where}: trial {number} is {state}; its weights are kept when it finishes")
    stored = attrs.get(WEIGHTS_ATTR)
    if not isinstance(stored, str) or not stored:
        raise ConfigError(f"{where}: trial {number} ({state}) has no weights file: the run that trained it "
                          "predates ablate keeping trained weights; run a new trial to export one")
    looked = weights_candidates(stored, url, artifacts=artifacts)
    found = next((p for p in looked if p.is_file()), None)
    if found is None:
        hint = ("" if artifacts is not None else
                f"; if the artifacts folder moved, pass --artifacts DIR (the folder holding "
                f"{'/'.join(Path(stored).parts[-2:])})")
        raise ConfigError(f"{where}: trial {number}'s weights file is missing: looked at "
                          f"{', '.join(shown_path(p) for p in looked)}{hint}")
    return found


def _export_classifier(row: Any, url: str, study: str, where: str, out: Path, *, program: bool,
                       artifacts: Optional[Path]) -> None:
    """Check the trial's weights file against the stored trial, then write it to ``out``."""
    from ablate.atomic import write_atomic
    from ablate.models import architecture_from_json
    from ablate.models.exported import exported_arch, exported_bytes, load_exported, state_tensors

    number = int(row["number"])
    source = _weights_source(row, url, where, artifacts)
    arch, meta = exported_arch(source)
    stored_arch = row["attrs"].get("arch")
    try:
        same = stored_arch is not None and architecture_from_json(stored_arch, "classify") == arch
    except ConfigError:
        same = False
    if meta.get("study") != study or meta.get("trial") != str(number) or not same:
        raise ConfigError(f"{where}: {shown_path(source)} is not trial {number}'s weights (it holds study "
                          f"{meta.get('study')!r} trial {meta.get('trial')!r}"
                          f"{'' if same else ', another architecture'}): the artifacts folder was reused or "
                          "the file replaced")
    model = load_exported(source).eval()  # strict: the file fits the architecture it names
    kept = {k: v for k, v in meta.items() if k in ("study", "trial", "epoch", "top1")}
    payload = exported_bytes(state_tensors(model), arch, kept)
    program_bytes, program_path, shape_note = None, out.with_suffix(".pt2"), ""
    if program:
        program_bytes, shape_note = _program(model, arch, where, number)
    path = write_atomic(out, payload)
    if program_bytes is not None:
        try:
            write_atomic(program_path, program_bytes)
        except BaseException:  # both files or neither
            out.unlink(missing_ok=True)
            raise
    try:
        score = f", top1 {float(meta['top1']):.2f}" if "top1" in meta else ""
    except ValueError:  # the file's own note: shown only when it is a number
        score = ""
    epoch = f" after epoch {meta['epoch']}" if meta.get("epoch", "").isdigit() else ""
    typer.echo(f"wrote {shown_path(path)}: trial {number} of {study} ({str(row['state'])}{epoch}{score}; attention "
               f"{arch.spec.get('attention')!r}, {arch.img_size} px, {arch.num_classes} classes)")
    if program_bytes is not None:
        typer.echo(f"wrote {shown_path(program_path)}: its torch.export program{shape_note}")
    typer.echo(f"load it: python -c \"import ablate; m = ablate.create_model({str(path)!r}).eval()\"")


def _program(model: Any, arch: Any, where: str, number: int) -> tuple[bytes, str]:
    """The ``torch.export`` program of ``model`` (eval mode) as bytes, with a batch dimension
    that varies when torch can export one, and what shape it takes."""
    import io

    import torch

    example = (torch.zeros(2, arch.in_chans, arch.img_size, arch.img_size),)
    note = f" (input: any batch x {arch.in_chans} x {arch.img_size} x {arch.img_size})"
    try:
        batch = torch.export.Dim("batch", min=1)
        exported = torch.export.export(model, example, dynamic_shapes=({0: batch},))
    except Exception:  # a family torch cannot export with a symbolic batch: a fixed batch of 1
        example = (torch.zeros(1, arch.in_chans, arch.img_size, arch.img_size),)
        note = f" (input: 1 x {arch.in_chans} x {arch.img_size} x {arch.img_size}; a varying batch did not export)"
        try:
            exported = torch.export.export(model, example)
        except Exception as err:  # torch's own errors are many lines: the first one
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise ConfigError(f"{where}: torch.export cannot capture trial {number}'s model ({type(err).__name__}: "
                              f"{first}); export without --program") from None
    buffer = io.BytesIO()
    torch.export.save(exported, buffer)
    return buffer.getvalue(), note
