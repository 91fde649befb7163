"""The Typer app every command registers with, and what several commands share: the error
contract (one line and exit 2 for bad input), JSON output, and how a target names a storage."""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer

from ablate.errors import AblateError, ConfigError

__all__ = ["app", "main", "echo_json", "resolve_target", "ProfileFormat"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Neural-architecture search and ablation studies for vision attention.")


class ProfileFormat(str, Enum):
    table = "table"
    json = "json"


def _print_version(value: bool) -> None:
    if value:
        from ablate import __version__

        typer.echo(f"ablate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print ablate's version and exit.")) -> None:
    """Neural-architecture search and ablation studies for vision attention."""


def echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=json_default))


def json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def resolve_target(target: str, storage: Optional[str]) -> tuple[str, Optional[str]]:
    """(storage URL, study name or None) for a study file, a database file or a URL.

    The URL keeps its ``${NAME}`` references (expanded only when the storage is opened);
    one that names an unset variable is refused here, naming the study file's ``storage``
    or ``--storage``. Nothing is opened or created.
    """
    from ablate.errors import StorageError
    from ablate.storage import expand_url, storage_url_for

    name = None
    if target.endswith((".yaml", ".yml")):
        from ablate.study import load_study

        study = load_study(target, check=False)
        url, name, where = storage or study.storage, study.name, "--storage" if storage else f"{target}: storage"
    elif storage is not None:
        url, where = storage, "--storage"
    elif "://" in target:
        url, where = target, "storage URL"
    elif not Path(target).exists():
        raise StorageError(f"no such study database: {target}")
    else:
        return storage_url_for(target), None
    try:
        expand_url(url)
    except StorageError as err:
        raise ConfigError(f"{where}: {err}") from None
    return url, name


def main() -> None:
    """Console-script entry: one line and exit 2 for bad input and for what the environment
    refuses (a full disk, a read-only folder, a path too long: ``ablate.errors.
    environment_problem_in``), tracebacks only for bugs; ``ABLATE_DEBUG=1`` keeps them all."""
    from ablate.errors import environment_problem_in

    try:
        code = app(standalone_mode=False, prog_name="ablate")  # click's own errors come back here, not as a boxed page
        if isinstance(code, int):  # --help, --version, typer.Exit
            sys.exit(code)
    except typer.Abort:  # Ctrl-C outside a run's own handling
        typer.echo("error: interrupted", err=True)
        sys.exit(130)
    except AblateError as err:
        if os.environ.get("ABLATE_DEBUG"):
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except Exception as err:
        if _is_usage_error(err):
            _usage_line(err)
        problem = environment_problem_in(err)
        if problem is None or os.environ.get("ABLATE_DEBUG"):
            raise
        typer.echo(f"error: {problem}", err=True)
        sys.exit(2)


def _is_usage_error(err: BaseException) -> bool:
    """A flag or argument the command does not take. Typer ships its own copy of click, whose
    usage errors are not public names: a usage error is what carries click's exit code 2 and
    a formatted message."""
    return getattr(err, "exit_code", None) == 2 and hasattr(err, "format_message")


def _usage_line(err: Any) -> None:
    """One ``error:`` line naming the command, or (bare ``ablate``) the help, as click would."""
    if type(err).__name__ == "NoArgsIsHelpError":
        err.show()
        sys.exit(2)
    ctx = getattr(err, "ctx", None)
    where = ctx.command_path if ctx is not None else "ablate"
    message = " ".join(err.format_message().split())
    typer.echo(f"error: {where}: {message} (see '{where} --help')", err=True)
    sys.exit(2)
