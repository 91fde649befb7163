"""`ablate schema study|space`: the JSON Schema of a study or search-space file, for editors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ablate.cli.common import app
from ablate.errors import ConfigError, did_you_mean

_KINDS = ("study", "space")


@app.command()
def schema(
    kind: Annotated[str | None, typer.Argument(metavar="study|space", help="A study or a search-space file.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the schema to FILE, not stdout.")] = None,
) -> None:
    """Print the JSON Schema (draft 2020-12) of a study or search-space file.

    Editors with the YAML language server complete and check a file whose first line is
    `# yaml-language-server: $schema=../schemas/study.schema.json`. The files in `schemas/`
    are this output: `ablate schema study -o schemas/study.schema.json` regenerates one.
    """
    if kind is None:
        raise ConfigError(f"schema: give the kind of file, allowed: {', '.join(_KINDS)}")
    if kind not in _KINDS:
        raise ConfigError(f"schema: must be one of {', '.join(map(repr, _KINDS))}, got {kind!r}"
                          + did_you_mean(kind, _KINDS))
    from ablate.study.declaration import json_schema_text

    text = json_schema_text(kind)
    if output is None:
        typer.echo(text, nl=False)
        return
    from ablate.atomic import write_atomic

    write_atomic(output, text, todo="allowed: a file in an existing, writable folder")
    typer.echo(f"wrote {output}", err=True)
