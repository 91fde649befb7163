"""ablate: neural-architecture search and ablation studies for vision attention.

Importing ablate has no side effects: no environment variable, settings file or import
hook changes. Heavy dependencies (torch, ray, optuna, ultralytics) are imported by the
sub-packages that need them, so ``import ablate`` and ``ablate --help`` stay instant;
``import ablate.models.yolo`` is what registers ablate's blocks with ultralytics.
"""

from ablate.errors import AblateError, ConfigError, DataError, EnvironmentProblem, Infeasible, StorageError

__version__ = "0.1.0"

__all__ = ["AblateError", "ConfigError", "DataError", "EnvironmentProblem", "Infeasible", "StorageError",
           "__version__"]
