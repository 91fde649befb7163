"""One exception family for the whole project.

The CLI prints a single line for any :class:`AblateError` and exits 2 (bad input);
anything else is a bug and keeps its traceback. Each subclass also inherits a
builtin so callers that catch ``ValueError`` keep working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["AblateError", "ConfigError", "Infeasible", "DataError", "StorageError", "did_you_mean", "unknown_name"]


class AblateError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class ConfigError(AblateError, ValueError):
    """A study or search-space file (or an equivalent dict) is invalid."""


class Infeasible(AblateError, ValueError):
    """A combination of settings that cannot be built (window larger than the map, ...)."""


class DataError(AblateError, FileNotFoundError):
    """A data path is missing or holds no usable samples."""


class StorageError(AblateError, RuntimeError):
    """A storage URL cannot be opened or holds no ablate study."""


def did_you_mean(name: object, valid: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest valid name (or ``""``): the one hint every
    "unknown name" message in the project ends with."""
    hint = difflib.get_close_matches(str(name), list(valid), n=1)
    return f"; did you mean {hint[0]!r}?" if hint else ""


def unknown_name(what: str, name: object, valid: Iterable[str]) -> str:
    """``unknown WHAT 'name', allowed: a, b, c; did you mean 'a'?``"""
    valid = list(valid)
    return f"unknown {what} {name!r}, allowed: {', '.join(valid)}{did_you_mean(name, valid)}"
