"""One exception family for the whole project.

The CLI prints a single line for any :class:`AblateError` and exits 2 (bad input);
anything else is a bug and keeps its traceback. Each subclass also inherits a
builtin so callers that catch ``ValueError`` keep working.
"""

from __future__ import annotations

__all__ = ["AblateError", "ConfigError", "Infeasible", "DataError", "StorageError"]


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
