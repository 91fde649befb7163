"""`ablate weights check PRESET FILE`: how a checkpoint's tensors map onto a preset.

Prints the layout found, how many tensors mapped, and the leftovers grouped by module (a
checkpoint of another family can leave hundreds of keys; one line per group with a count and
the first names, never thousands of lines). Exit 0 when every tensor found its place, 2
when keys are left over (the same verdict as ``create_model(PRESET, weights=FILE)``).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import typer

from ablate.cli.common import app
from ablate.errors import shown_path

weights_app = typer.Typer(no_args_is_help=True, help="Checkpoints: check how a released checkpoint maps onto a preset.")

app.add_typer(weights_app, name="weights")

#: Lines printed per kind of leftover before "... N more groups".
GROUPS_SHOWN = 12


def _group(name: str) -> str:
    """A key's module pattern with block and stage numbers folded: ``stages.*.blocks.*.attn.q``."""
    folded = re.sub(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.)|(?<=[a-z_])\d+(?=\.|$)", "*", name)
    return re.sub(r"\.(weight|bias|running_mean|running_var|num_batches_tracked)$", "", folded)


def _print_grouped(title: str, names: list[str]) -> None:
    if not names:
        return
    typer.echo(f"{title}: {len(names)}")
    groups = Counter(_group(n) for n in names)
    firsts: dict[str, str] = {}
    for n in names:
        firsts.setdefault(_group(n), n)
    for i, (pattern, count) in enumerate(groups.most_common()):
        if i == GROUPS_SHOWN:
            typer.echo(f"  ... {len(groups) - GROUPS_SHOWN} more groups")
            break
        typer.echo(f"  {shown_path(pattern)}  x{count}  (e.g. {shown_path(firsts[pattern])})")


@weights_app.command("check")
def weights_check(
    preset: str = typer.Argument(..., help="A classification preset (ablate presets: see the README)."),
    file: Path = typer.Argument(..., help="A local checkpoint: .pth/.pt (read with weights_only) or .safetensors."),
) -> None:
    """Print how FILE's tensors map onto PRESET: layout, mapped count, missing/unexpected keys, shapes."""
    from ablate.errors import ConfigError
    from ablate.models import create_model, preset_task

    if preset_task(preset) != "classify":
        raise ConfigError(f"{file}: weights check is for classification presets, {preset!r} is a detection preset")
    model = create_model(preset, weights=file, strict=False)
    r = model.load_report
    typer.echo(f"{r.path} -> {preset}")
    typer.echo(f"layout: {r.layout}" + (f" (tensors under {r.wrapper!r})" if r.wrapper else " (bare state dict)"))
    typer.echo(f"mapped: {r.loaded} of the model's {r.total} tensors"
               + (f"; {r.split_qkv} qkv linears split or packed" if r.split_qkv else "")
               + (f"; {r.dropped} derived or unused tensors skipped" if r.dropped else ""))
    if r.head_reinit:
        typer.echo(f"head: re-initialised (checkpoint {r.head_reinit[0]} classes, model {r.head_reinit[1]})")
    _print_grouped("missing (in the model, not in the file)", list(r.missing))
    _print_grouped("unexpected (in the file, not in the model)", list(r.unexpected))
    if r.mismatched:
        typer.echo(f"shape mismatches: {len(r.mismatched)}")
        for name, got, want in r.mismatched[:GROUPS_SHOWN]:
            typer.echo(f"  {name}: file {list(got)}, model {list(want)}")
        if len(r.mismatched) > GROUPS_SHOWN:
            typer.echo(f"  ... {len(r.mismatched) - GROUPS_SHOWN} more")
    if not r.clean:
        typer.echo("verdict: keys left over (create_model refuses it unless strict=False)")
        raise typer.Exit(2)
    typer.echo("verdict: clean")
