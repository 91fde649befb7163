"""ablate: neural-architecture search and ablation studies for vision attention.

Heavy dependencies (torch, ray, optuna) are imported by the sub-packages that need
them, so ``import ablate`` and ``ablate --help`` stay instant.
"""

from ablate.errors import AblateError, ConfigError, DataError, Infeasible, StorageError

__version__ = "0.1.0"

__all__ = ["AblateError", "ConfigError", "DataError", "Infeasible", "StorageError", "__version__"]
