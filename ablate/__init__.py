"""ablate: neural-architecture search and ablation studies for vision attention.

Heavy dependencies (torch, ray, optuna) are imported by the sub-packages that need
them, so ``import ablate`` and ``ablate --help`` stay instant.
"""

from ablate.errors import AblateError, ConfigError, DataError, Infeasible, StorageError

__version__ = "0.1.0"

__all__ = ["AblateError", "ConfigError", "DataError", "Infeasible", "StorageError", "__version__"]


def _register_blocks_with_ultralytics() -> None:
    """Make ``import ablate`` enough for ``YOLO("file.yaml")`` to find ablate's blocks.

    Ultralytics' ``parse_model`` looks module names up in ``ultralytics.nn.tasks``;
    :mod:`ablate.models.yolo` adds the attention blocks there. Importing it here would
    import torch and ultralytics on every ``import ablate``, so instead a one-shot import
    hook runs it right after ``ultralytics.nn.tasks`` is first imported (or now, if it
    already was).
    """
    import importlib.abc
    import importlib.util
    import sys

    name = "ultralytics.nn.tasks"
    if name in sys.modules:
        import ablate.models.yolo  # noqa: F401
        return

    class _AfterUltralyticsTasks(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
            if fullname != name:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            if spec is None or spec.loader is None:
                return spec
            run = spec.loader.exec_module

            def exec_module(module):  # type: ignore[no-untyped-def]
                run(module)
                import ablate.models.yolo  # noqa: F401

            spec.loader.exec_module = exec_module  # type: ignore[method-assign]
            return spec

    if not any(type(f).__name__ == "_AfterUltralyticsTasks" for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterUltralyticsTasks())


_register_blocks_with_ultralytics()
