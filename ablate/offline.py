"""Switch off every network path of ultralytics before it is imported.

Ultralytics reaches for the network in several places: update checks and hub/telemetry
sync (settings ``sync``), the font it downloads for plots (``Arial.ttf`` into its config
directory), pip auto-install of missing requirements (``YOLO_AUTOINSTALL``), the AMP check
that downloads ``yolo11n.pt`` on CUDA (the trainer passes ``amp=False`` or the check is
patched there), and data-set downloads (only a data YAML that names a download script;
ablate checks data paths before training). Everything but the AMP check is decided by the
environment and the settings file, which ultralytics reads at import: so this module must
run before the first ``import ultralytics`` in a process (Ray workers included), and
:func:`ultralytics_offline` is idempotent and cheap.
"""

from __future__ import annotations

import os
from pathlib import Path

from ablate.atomic import write_atomic
from ablate.cache import cache_dir
from ablate.errors import environment_errors

__all__ = ["ultralytics_offline", "config_dir"]

_FONTS = ("Arial.ttf", "Arial.Unicode.ttf")


def config_dir() -> Path:
    """Where ablate keeps ultralytics' settings and fonts: ``<ablate cache>/ultralytics``
    (:func:`ablate.cache.cache_dir`: private to this user, created and checked, since
    ultralytics trusts the settings file it reads there)."""
    return cache_dir("ultralytics")


def _bundled_font() -> Path | None:
    """A TTF shipped with matplotlib (an ultralytics dependency), used in place of Arial."""
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - ultralytics requires matplotlib
        return None
    font = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    return font if font.is_file() else None


def ultralytics_offline() -> Path:
    """Set the environment so that importing and using ultralytics touches no network.

    Returns:
        The ultralytics config directory in use (``YOLO_CONFIG_DIR``).
    """
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    os.environ.setdefault("YOLO_VERBOSE", "False")
    if not os.environ.get("YOLO_CONFIG_DIR"):  # a folder the user chose is theirs to keep
        os.environ["YOLO_CONFIG_DIR"] = str(config_dir())
    cfg = Path(os.environ["YOLO_CONFIG_DIR"])
    fonts = cfg / "Ultralytics"
    todo = "free space there, or set YOLO_CONFIG_DIR or ABLATE_HOME to a writable folder of yours"
    with environment_errors(fonts, todo):
        fonts.mkdir(parents=True, exist_ok=True)
    source = _bundled_font()
    for name in _FONTS:
        target = fonts / name
        if source is not None and not target.exists():
            write_atomic(target, source.read_bytes(), todo=todo)  # a cut-off font would break plots
    settings = fonts / "settings.json"
    if not settings.exists():
        # Read by ultralytics at import; the keys it lacks are filled with its defaults.
        write_atomic(settings, '{"sync": false, "hub": false, "clearml": false, "comet": false, "dvc": false, '
                               '"mlflow": false, "neptune": false, "raytune": false, "tensorboard": false, '
                               '"wandb": false}\n', todo=todo)
    return cfg
