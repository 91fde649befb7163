"""The one module that imports ultralytics, after switching off every network path it has
(:func:`ablate.offline.ultralytics_offline`: environment, settings file, fonts). Everything
in ablate that needs ultralytics takes it from here."""

from __future__ import annotations

from ablate.offline import ultralytics_offline

ultralytics_offline()  # before the first import of ultralytics in this process

from ultralytics.nn import tasks  # noqa: E402
from ultralytics.nn.modules.block import C2PSA, C2f, C3k, C3k2, Bottleneck  # noqa: E402

__all__ = ["tasks", "C2PSA", "C2f", "C3k", "C3k2", "Bottleneck"]
