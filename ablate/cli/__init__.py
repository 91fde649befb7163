"""The ``ablate`` command line: a thin Typer app over the library, one module per command.

Heavy imports (torch, ray, optuna) happen inside the commands so ``ablate --help`` is instant.
Any :class:`~ablate.errors.AblateError` becomes one line on stderr and exit code 2;
anything else is a bug and keeps its traceback (``ABLATE_DEBUG=1`` shows tracebacks always).
Importing a command's module registers it with :data:`app`; the order below is ``--help``'s.
"""

# isort: off
from ablate.cli.common import app, main
from ablate.cli import run, show, report, dashboard, validate, profile, eval, export, weights, bench, data, schema  # noqa: F401,E402
# isort: on

__all__ = ["app", "main"]
