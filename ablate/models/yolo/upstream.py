"""The one module that imports ultralytics, after switching off every network path it has
(:func:`ablate.offline.ultralytics_offline`: environment, settings file, fonts). Everything
in ablate that needs ultralytics takes it from here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ablate.offline import ultralytics_offline

ultralytics_offline()  # before the first import of ultralytics in this process

from ultralytics.nn import tasks  # noqa: E402
from ultralytics.nn.modules.block import C2PSA, C2f, C3k, C3k2, Bottleneck  # noqa: E402
from ultralytics.utils.torch_utils import intersect_dicts  # noqa: E402

__all__ = ["tasks", "C2PSA", "C2f", "C3k", "C3k2", "Bottleneck", "intersect_dicts", "detection_trainer",
           "amp_check_skipped"]


def detection_trainer() -> type:
    """Ultralytics' ``DetectionTrainer`` (imported on first use: it pulls in the data pipeline)."""
    from ultralytics.models.yolo.detect import DetectionTrainer

    return DetectionTrainer


@contextlib.contextmanager
def amp_check_skipped() -> Iterator[None]:
    """Ultralytics' AMP check downloads weights to compare outputs: trust AMP instead, while
    the block runs (the trainer looks the check up in its module at call time)."""
    import ultralytics.engine.trainer as engine

    original = engine.check_amp
    engine.check_amp = lambda *args, **kwargs: True
    try:
        yield
    finally:
        engine.check_amp = original
