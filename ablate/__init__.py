"""ablate: neural-architecture search and ablation studies for vision attention.

Importing ablate has no side effects: no environment variable, settings file or import
hook changes. Heavy dependencies (torch, ray, optuna, ultralytics) are imported by the
sub-packages that need them, so ``import ablate`` and ``ablate --help`` stay instant;
``import ablate.models.yolo`` is what registers ablate's blocks with ultralytics.

The Python API (:mod:`ablate.api`, the calls the command line makes) is reached from here
and imported on first use: ``ablate.load_study(path, overrides=..., scale=...)``,
``ablate.run_study(study_or_path, ...)`` and ``ablate.read_results(path_or_url)`` (not ``run`` and
``results``: those are the ``ablate.run`` and ``ablate.results`` packages), and
``ablate.create_model(name, weights=None, **overrides)``, a preset built and loaded from a
local checkpoint (:func:`ablate.models.create_model`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ablate.errors import AblateError, ConfigError, DataError, EnvironmentProblem, Infeasible, StorageError

if TYPE_CHECKING:
    from ablate.api import Results, create_model, load_study, read_results, run_study

__version__ = "0.1.0"

#: Names served by :mod:`ablate.api`, imported when first asked for (PEP 562).
_API = ("load_study", "run_study", "read_results", "Results", "create_model")

__all__ = ["AblateError", "ConfigError", "DataError", "EnvironmentProblem", "Infeasible", "StorageError",
           "__version__", "load_study", "run_study", "read_results", "Results", "create_model"]


def __getattr__(name: str) -> Any:
    """``ablate.load_study`` and the other API names, from :mod:`ablate.api` on first use
    (the one import from the package root upward; tests/test_layout.py allows exactly it)."""
    if name in _API:
        from ablate import api

        value = getattr(api, name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'ablate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
