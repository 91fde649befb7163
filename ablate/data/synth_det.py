"""The generated, seeded YOLO-format detection set (the offline default): parameters, files, cache.

The images are drawn by :mod:`ablate.data.synth_image`; this module checks the
parameters, writes the set in the layout ultralytics reads, and caches it::

    OUT/data.yaml                      path: OUT (absolute), train: images/train, val: images/val, names
    OUT/images/{train,val}/NNNNNN.png
    OUT/labels/{train,val}/NNNNNN.txt  one "class cx cy w h" line per object, normalised to [0, 1]
    OUT/synth-det.json                 the parameters, written last: a set without it is incomplete

Everything is a pure function of the parameters: the same seed gives byte-identical files.
:func:`default_detection_data` caches the set in ablate's private cache folder (``data``, see
:mod:`ablate.cache`), keyed by a hash of the parameters and the generator version. A set is written into a
temporary sibling folder and renamed into place, so no reader ever sees half a set.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ablate.data.synth_image import SHAPES, SynthObject, render_image
from ablate.cache import cache_dir as ablate_cache_dir
from ablate.errors import ConfigError, DataError, environment_errors

__all__ = [
    "SHAPES",
    "GENERATOR_VERSION",
    "MARKER",
    "generate_synth_det",
    "default_detection_data",
    "synth_det_cache_dir",
]

# Bump whenever a change to the generator (this module or synth_image) changes its output: it keys the cache.
GENERATOR_VERSION = 1
MARKER = "synth-det.json"
_DEFAULTS: dict[str, Any] = dict(seed=0, n_train=1024, n_val=64, image_size=128,
                                 classes=("circle", "square", "triangle"), min_objects=1, max_objects=6)


def generate_synth_det(out: str | os.PathLike[str], *, seed: int = 0, n_train: int = 1024, n_val: int = 64,
                       image_size: int = 128, classes: tuple[str, ...] = ("circle", "square", "triangle"),
                       min_objects: int = 1, max_objects: int = 6) -> Path:
    """Write the synthetic detection set into ``out`` (a new or empty folder).

    The set is written into a temporary sibling folder and renamed into place, so ``out``
    never holds a partial set.

    Args:
        out: The folder to create; it must not exist, or be empty.
        seed: Seed of every random choice; the same seed gives byte-identical files.
        n_train: Training images.
        n_val: Validation images.
        image_size: Side of the square images, in pixels.
        classes: Shapes to draw, in class-index order (any of :data:`SHAPES`).
        min_objects: Fewest objects in one image.
        max_objects: Most objects in one image.

    Returns:
        The path of the set's ``data.yaml``.

    Raises:
        ConfigError: A parameter is out of range.
        DataError: ``out`` exists and is not an empty folder, or cannot be written.
    """
    params = _params(seed=seed, n_train=n_train, n_val=n_val, image_size=image_size, classes=classes,
                     min_objects=min_objects, max_objects=max_objects)
    final = Path(out).expanduser().absolute()
    if final.exists() and not (final.is_dir() and not any(final.iterdir())):
        raise DataError(f"{final}: already exists and is not an empty folder; choose a new folder or remove it")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{final}: cannot create the folder: {err.strerror or err}") from None
    tmp = _tmp_dir(final)
    try:
        _write_set(tmp, final, params)
        try:
            os.rename(tmp, final)  # atomic; replaces an empty folder
        except OSError:
            raise DataError(f"{final}: already exists and is not an empty folder; "
                            f"choose a new folder or remove it") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / "data.yaml"


def synth_det_cache_dir(cache_dir: str | os.PathLike[str] | None = None, **params: Any) -> Path:
    """Folder of the cached synthetic set for ``params`` (not created): ``BASE/synth-det-<hash>``.

    ``BASE`` is ``cache_dir``, else ablate's private cache folder ``data``
    (:func:`ablate.cache.cache_dir`: ``$ABLATE_HOME/data``, ``~/.cache/ablate/data``, ...;
    created and checked for its owner, since the set found there is trained on).
    """
    resolved = _params(**dict(_DEFAULTS, **params))
    key = json.dumps({**resolved, "version": GENERATOR_VERSION}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    base = ablate_cache_dir("data") if cache_dir is None else Path(cache_dir)
    return base.expanduser().absolute() / f"synth-det-{digest}"


def default_detection_data(cache_dir: str | os.PathLike[str] | None = None, **params: Any) -> Path:
    """The embedded default detection set: generated on first use, then reused from the cache.

    A set is used only when its marker file (written last) is present; a folder without it
    (left by a killed process) is regenerated. Concurrent callers are serialised by a lock
    file where the platform has ``fcntl``, and in any case each writes into its own
    temporary folder and renames it into place, so a caller that loses the race uses the
    winner's set.

    Args:
        cache_dir: Base folder of the cache (default: ``data`` in :func:`ablate.cache.cache_dir`).
        **params: Keyword arguments of :func:`generate_synth_det` (seed, n_train, ...).

    Returns:
        The path of the cached set's ``data.yaml``.
    """
    unknown = sorted(set(params) - set(_DEFAULTS))
    if unknown:
        raise ConfigError(f"synthetic detection data: unknown parameter(s) {', '.join(unknown)}, "
                          f"allowed: {', '.join(_DEFAULTS)}")
    resolved = _params(**dict(_DEFAULTS, **params))
    final = synth_det_cache_dir(cache_dir, **resolved)
    if (final / MARKER).is_file():
        return final / "data.yaml"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{final.parent}: cannot create the data cache folder: {err.strerror or err}") from None
    with _locked(final.parent / f"{final.name}.lock"):
        if (final / MARKER).is_file():  # another process finished it while we waited
            return final / "data.yaml"
        for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by killed processes
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # incomplete: no marker
            trash = _tmp_dir(final, "trash")
            with contextlib.suppress(OSError):
                os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        tmp = _tmp_dir(final)
        try:
            _write_set(tmp, final, resolved)
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / MARKER).is_file():  # pragma: no cover - neither we nor anyone else wrote it
                    raise DataError(f"{final}: cannot write the synthetic data cache") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final / "data.yaml"


def _params(*, seed: int, n_train: int, n_val: int, image_size: int, classes: tuple[str, ...] | list[str] | str,
            min_objects: int, max_objects: int) -> dict[str, Any]:
    """Checked, JSON-ready generator parameters."""
    def whole(name: str, value: Any, low: int, high: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"synthetic detection data: {name} must be an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            allowed = f"at least {low}" if high is None else f"between {low} and {high}"
            raise ConfigError(f"synthetic detection data: {name} must be {allowed}, got {name}={value}")
        return int(value)

    if isinstance(classes, str):
        classes = tuple(c.strip() for c in classes.split(",") if c.strip())
    classes = tuple(classes)
    bad = [c for c in classes if c not in SHAPES]
    if bad or not classes or len(set(classes)) != len(classes):
        what = f"unknown shape(s) {', '.join(map(repr, bad))}" if bad else \
            "no shape given" if not classes else f"repeated shapes in {', '.join(classes)}"
        raise ConfigError(f"synthetic detection data: classes: {what}, allowed: distinct names from "
                          f"{', '.join(SHAPES)}")
    min_objects = whole("min_objects", min_objects, 1, 20)
    return dict(seed=whole("seed", seed, 0), n_train=whole("n_train", n_train, 1),
                n_val=whole("n_val", n_val, 1), image_size=whole("image_size", image_size, 32, 4096),
                classes=list(classes), min_objects=min_objects,
                max_objects=whole("max_objects", max_objects, min_objects, 20))


def _tmp_dir(final: Path, kind: str = "tmp") -> Path:
    return final.parent / f".{final.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``lock_path`` (a no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the atomic rename alone keeps the cache valid
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_set(root: Path, final: Path, params: Mapping[str, Any]) -> None:
    """Write every file of the set into ``root``; ``data.yaml`` names ``final``; the marker goes last."""
    with environment_errors(final.parent):  # a full disk or quota: one line naming the folder
        _write_files(root, final, params)


def _write_files(root: Path, final: Path, params: Mapping[str, Any]) -> None:
    from PIL import Image

    names = params["classes"]
    counts = {"train": params["n_train"], "val": params["n_val"]}
    for split, count in counts.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for index in range(count):
            image, objects = render_image(params, split, index)
            Image.fromarray(image).save(root / "images" / split / f"{index:06d}.png", compress_level=1)
            (root / "labels" / split / f"{index:06d}.txt").write_text(
                "".join(_label_line(o, params["image_size"]) for o in objects))
    header = (f"# ablate synthetic detection set (generator v{GENERATOR_VERSION}): seed {params['seed']}, "
              f"{counts['train']} train / {counts['val']} val images of {params['image_size']} px\n")
    (root / "data.yaml").write_text(
        header + f"path: {json.dumps(str(final))}\ntrain: images/train\nval: images/val\nnames:\n"
        + "".join(f"  {i}: {json.dumps(n)}\n" for i, n in enumerate(names)))
    (root / MARKER).write_text(json.dumps({"generator_version": GENERATOR_VERSION, **params}, indent=2) + "\n")


def _label_line(obj: SynthObject, size: int) -> str:
    x0, y0, x1, y1 = obj.box
    return (f"{obj.cls} {(x0 + x1) / 2 / size:.6f} {(y0 + y1) / 2 / size:.6f} "
            f"{(x1 - x0) / size:.6f} {(y1 - y0) / size:.6f}\n")
