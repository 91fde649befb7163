"""Detection data: a generated, seeded YOLO-format set (the offline default) and user data YAMLs.

The synthetic set draws filled shapes (the class is the shape; colour, size, rotation and
aspect vary) at three scales on textured backgrounds (gradients, smoothed noise, stripes,
low-contrast blobs and lines), 1–6 objects per image with moderate overlap, some cut by the
border. Each box is tight around its shape's drawn pixels, occluded parts included, and
clipped to the image. The layout is the one ultralytics reads::

    OUT/data.yaml                      path: OUT (absolute), train: images/train, val: images/val, names
    OUT/images/{train,val}/NNNNNN.png
    OUT/labels/{train,val}/NNNNNN.txt  one "class cx cy w h" line per object, normalised to [0, 1]
    OUT/synth-det.json                 the parameters, written last: a set without it is incomplete

Everything is a pure function of the parameters: the same seed gives byte-identical files.
:func:`default_detection_data` caches the set under ``$ABLATE_HOME/data`` (or a per-user temp
dir), keyed by a hash of the parameters and the generator version. :func:`check_detection_data`
validates any ultralytics data YAML before training, one clear line per problem; it never
downloads, and refuses YAMLs that ask for a download.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ablate.errors import ConfigError, DataError

__all__ = [
    "SHAPES",
    "DetectionDataInfo",
    "generate_synth_det",
    "default_detection_data",
    "check_detection_data",
    "synth_det_cache_dir",
]

SHAPES = ("circle", "square", "triangle", "cross", "star")
"""Shapes the generator can draw; a set's ``classes`` is any ordered subset."""

GENERATOR_VERSION = 1  # bump whenever a change to the generator changes its output: it keys the cache
MARKER = "synth-det.json"
_SPLITS = {"train": 0, "val": 1}
# Object side (the shape's circumscribed-square side) as a fraction of the image side, per scale.
_SCALES = {"small": (0.06, 0.12), "medium": (0.12, 0.28), "large": (0.28, 0.55)}
_SCALE_P = (0.4, 0.4, 0.2)
_MAX_OVERLAP_IOU = 0.4       # between two objects' boxes
_MIN_LEFT_VISIBLE = 0.5      # of an earlier object's pixels once later ones are drawn over it
_MIN_INSIDE = 0.6            # of a shape's pixels inside the image (the rest is cut by the border)
_NEAR_BORDER_P = 0.2
# Ultralytics' image suffixes (ultralytics.data.utils.IMG_FORMATS), without importing it.
IMG_FORMATS = frozenset({"avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpg", "mpo", "png", "tif",
                         "tiff", "webp"})
_DEFAULTS: dict[str, Any] = dict(seed=0, n_train=1024, n_val=64, image_size=128,
                                 classes=("circle", "square", "triangle"), min_objects=1, max_objects=6)


# --------------------------------------------------------------------------- generation


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

    ``BASE`` is ``cache_dir``, else ``$ABLATE_HOME/data``, else ``<tmp>/ablate-<uid>/data``.
    """
    resolved = _params(**dict(_DEFAULTS, **params))
    key = json.dumps({**resolved, "version": GENERATOR_VERSION}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    if cache_dir is None:
        home = os.environ.get("ABLATE_HOME")
        base = Path(home) / "data" if home else Path(tempfile.gettempdir()) / f"ablate-{os.getuid()}" / "data"
    else:
        base = Path(cache_dir)
    return base.expanduser().absolute() / f"synth-det-{digest}"


def default_detection_data(cache_dir: str | os.PathLike[str] | None = None, **params: Any) -> Path:
    """The embedded default detection set: generated on first use, then reused from the cache.

    A set is used only when its marker file (written last) is present; a folder without it
    (left by a killed process) is regenerated. Concurrent callers are serialised by a lock
    file where the platform has ``fcntl``, and in any case each writes into its own
    temporary folder and renames it into place, so a caller that loses the race uses the
    winner's set.

    Args:
        cache_dir: Base folder of the cache (default ``$ABLATE_HOME/data`` or a per-user temp dir).
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


# --------------------------------------------------------------------------- one image


@dataclass(frozen=True)
class SynthObject:
    """One drawn object: class index, box in pixel edges ``(x0, y0, x1, y1)``, scale, full mask (H, W)."""

    cls: int
    box: tuple[int, int, int, int]
    scale: str
    mask: np.ndarray


def render_image(params: Mapping[str, Any], split: str, index: int) -> tuple[np.ndarray, list[SynthObject]]:
    """Image ``index`` of ``split`` as (uint8 array (H, W, 3), its objects in drawing order).

    Each image has its own generator seeded by (seed, split, index), so an image can be
    re-rendered alone (the tests use this to compare boxes with masks).
    """
    size = int(params["image_size"])
    rng = np.random.default_rng(np.random.SeedSequence([int(params["seed"]), _SPLITS[split], index]))
    image = _background(rng, size)  # (H, W, 3) float in [0, 1]
    owner = np.full((size, size), -1, dtype=np.int16)  # which object's pixel is on top, -1 = background
    visible: list[int] = []
    objects: list[SynthObject] = []
    for _ in range(int(rng.integers(params["min_objects"], params["max_objects"] + 1))):
        placed = _place(rng, size, tuple(params["classes"]), objects, owner, visible)
        if placed is None:
            continue
        obj, colour = placed
        image[obj.mask] = _contrasting(rng, colour, image[obj.mask])
        owner[obj.mask] = len(objects)
        visible.append(int(obj.mask.sum()))
        objects.append(obj)
    image += rng.normal(0.0, rng.uniform(0.0, 0.03), image.shape)  # sensor-like noise over everything
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), objects


def _place(rng: np.random.Generator, size: int, classes: tuple[str, ...], objects: list[SynthObject], owner: np.ndarray,
           visible: list[int]) -> tuple[SynthObject, np.ndarray] | None:
    """A new object that overlaps the others only moderately, or None after a few tries."""
    cls = int(rng.integers(len(classes)))
    scale = str(rng.choice(list(_SCALES), p=_SCALE_P))
    colour = rng.uniform(0.0, 1.0, 3)
    for _ in range(30):
        side = max(5.0, rng.uniform(*_SCALES[scale]) * size)
        if rng.random() < _NEAR_BORDER_P:  # centre near an edge, part of the shape may be cut
            cx, cy = rng.uniform(0, size, 2)
            edge = int(rng.integers(4))
            off = rng.uniform(0.1, 0.5) * side
            cx, cy = [(off, cy), (size - off, cy), (cx, off), (cx, size - off)][edge]
        else:
            cx, cy = rng.uniform(side / 2, size - side / 2, 2)
        inside, full = _shape_mask(rng, classes[cls], size, cx, cy, side)
        area = int(inside.sum())
        if area < 12 or area < _MIN_INSIDE * full:
            continue
        ys, xs = np.nonzero(inside.any(axis=1))[0], np.nonzero(inside.any(axis=0))[0]
        box = (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)
        if any(_iou(box, o.box) > _MAX_OVERLAP_IOU for o in objects):
            continue
        covered = owner[inside]
        if any(visible[i] - int((covered == i).sum()) < _MIN_LEFT_VISIBLE * int(o.mask.sum())
               for i, o in enumerate(objects)):
            continue
        return SynthObject(cls=cls, box=box, scale=scale, mask=inside), colour
    return None


def _shape_mask(rng: np.random.Generator, shape: str, size: int, cx: float, cy: float,
                side: float) -> tuple[np.ndarray, int]:
    """(mask of the shape inside the image (H, W) bool, pixel count of the whole shape)."""
    from PIL import Image, ImageDraw

    pad = int(np.ceil(side))  # draw on a padded canvas so the part outside the image is counted
    canvas = Image.new("L", (size + 2 * pad, size + 2 * pad), 0)
    draw = ImageDraw.Draw(canvas)
    x, y, r = cx + pad, cy + pad, side / 2
    theta = rng.uniform(0, 2 * np.pi)
    if shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    elif shape == "square":  # rectangles of moderate aspect, tilted by at most 20°
        aspect = rng.uniform(0.6, 1.0)
        w, h = (r, r * aspect) if rng.random() < 0.5 else (r * aspect, r)
        draw.polygon(_rotate([(-w, -h), (w, -h), (w, h), (-w, h)], rng.uniform(-0.35, 0.35), x, y), fill=255)
    elif shape == "triangle":  # near-equilateral, any rotation
        angles = theta + np.array([0.0, 2.0, 4.0]) * np.pi / 3 + rng.uniform(-0.25, 0.25, 3)
        draw.polygon([(x + r * np.cos(a), y + r * np.sin(a)) for a in angles], fill=255)
    elif shape == "cross":  # a plus sign with arms a third of its side wide
        t = r / 3
        arm = [(-t, -r), (t, -r), (t, -t), (r, -t), (r, t), (t, t), (t, r), (-t, r), (-t, t), (-r, t),
               (-r, -t), (-t, -t)]
        draw.polygon(_rotate(arm, rng.uniform(-0.35, 0.35), x, y), fill=255)
    elif shape == "star":  # five points, inner radius 0.45 r
        pts = [(x + rr * np.cos(theta + k * np.pi / 5), y + rr * np.sin(theta + k * np.pi / 5))
               for k, rr in zip(range(10), [r, 0.45 * r] * 5)]
        draw.polygon(pts, fill=255)
    else:  # pragma: no cover - _params rejects unknown shapes
        raise ConfigError(f"unknown shape {shape!r}, allowed: {', '.join(SHAPES)}")
    full = np.asarray(canvas) > 0  # (H + 2 pad, W + 2 pad)
    return full[pad:pad + size, pad:pad + size].copy(), int(full.sum())


def _rotate(points: list[tuple[float, float]], angle: float, x: float, y: float) -> list[tuple[float, float]]:
    c, s = np.cos(angle), np.sin(angle)
    return [(x + px * c - py * s, y + px * s + py * c) for px, py in points]


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _contrasting(rng: np.random.Generator, colour: np.ndarray, under: np.ndarray) -> np.ndarray:
    """A fill colour far enough from the background it covers, shaded by a faint gradient."""
    mean = under.mean(axis=0)
    for _ in range(8):
        if np.abs(colour - mean).sum() >= 0.45:
            break
        colour = rng.uniform(0.0, 1.0, 3)
    else:
        colour = np.where(mean > 0.5, 0.1, 0.9)
    return colour + rng.uniform(-0.04, 0.04, (len(under), 1))  # (n_pixels, 3)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured background (H, W, 3) in [0, 1]: a gradient plus some of noise, stripes, blobs, lines."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size  # (H, W) each, in [0, 1)
    a, b = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    image = a + (b - a) * rng.uniform(0.0, 0.6) * t[..., None]  # (H, W, 3)
    if rng.random() < 0.7:  # smooth noise: a coarse random grid, upsampled
        cells = int(rng.integers(4, 17))
        coarse = rng.normal(0.0, 1.0, (cells, cells, 3))
        image += rng.uniform(0.03, 0.12) * _upsample(coarse, size)
    if rng.random() < 0.4:  # stripes
        freq, phase, angle = rng.uniform(3, 20), rng.uniform(0, 2 * np.pi), rng.uniform(0, np.pi)
        wave = np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
        image += rng.uniform(0.03, 0.1) * wave[..., None] * rng.uniform(-1.0, 1.0, 3)
    for _ in range(int(rng.integers(0, 5))):  # low-contrast blobs
        bx, by, s = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.2)
        blob = np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * s * s))
        image += rng.uniform(0.05, 0.15) * blob[..., None] * rng.uniform(-1.0, 1.0, 3)
    for _ in range(int(rng.integers(0, 3))):  # faint lines
        p, q = rng.uniform(0, 1, 2), rng.uniform(0, 1, 2)
        d = np.abs((q[1] - p[1]) * xx - (q[0] - p[0]) * yy + q[0] * p[1] - q[1] * p[0]) / (
            np.hypot(*(q - p)) + 1e-6)
        image += rng.uniform(0.04, 0.1) * (d < rng.uniform(0.3, 1.5) / size)[..., None] * rng.uniform(-1, 1, 3)
    return np.clip(image, 0.0, 1.0).astype(np.float64)


def _upsample(coarse: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a (h, w, 3) grid to (size, size, 3)."""
    h, w, _ = coarse.shape
    ys, xs = np.linspace(0, h - 1, size), np.linspace(0, w - 1, size)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x1] * fx
    bottom = coarse[y1][:, x0] * (1 - fx) + coarse[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


# --------------------------------------------------------------------------- user data YAMLs


@dataclass(frozen=True)
class DetectionDataInfo:
    """A checked ultralytics data YAML, with every path resolved.

    Attributes:
        yaml: The data YAML.
        root: The data set root (``path:``, resolved).
        names: Class names in index order.
        train: Resolved ``train:`` entries (folders or image-list files).
        val: Resolved ``val:`` entries.
        n_train: Training images found.
        n_val: Validation images found.
    """

    yaml: Path
    root: Path
    names: tuple[str, ...]
    train: tuple[Path, ...]
    val: tuple[Path, ...]
    n_train: int
    n_val: int

    @property
    def nc(self) -> int:
        """Number of classes."""
        return len(self.names)

    def to_yaml_dict(self) -> dict[str, Any]:
        """A data YAML mapping with absolute paths and no ``download:``, valid from any working directory."""
        def one(paths: tuple[Path, ...]) -> str | list[str]:
            return str(paths[0]) if len(paths) == 1 else [str(p) for p in paths]

        return {"path": str(self.root), "train": one(self.train), "val": one(self.val),
                "names": dict(enumerate(self.names))}


def check_detection_data(path: str | os.PathLike[str]) -> DetectionDataInfo:
    """Check an ultralytics data YAML before any training; nothing is downloaded.

    Paths resolve as ultralytics resolves them: ``train``/``val`` relative to ``path:``, which
    defaults to the YAML's folder; a relative ``path:`` is looked up in the working directory
    and then, unlike ultralytics, next to the YAML (ultralytics would try its own datasets
    folder). Use :meth:`DetectionDataInfo.to_yaml_dict` to hand ultralytics the resolved paths.

    Raises:
        DataError: The file, the root or a split is missing, or a split has no images or no labels.
        ConfigError: The YAML does not parse, lacks ``train``, ``val`` or ``names``, has invalid
            names, or names a ``download:`` (ablate never downloads).
    """
    import yaml

    file = Path(path).expanduser()
    if not file.exists():
        raise DataError(f"{file}: data YAML not found")
    if file.is_dir():
        raise DataError(f"{file}: is a folder, allowed: a data YAML file (ultralytics format)")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{file}: cannot read: {err}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{file}:{mark.line + 1}" if mark is not None else str(file)
        raise ConfigError(f"{where}: invalid YAML: {' '.join(str(err.problem or err.context).split())}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: invalid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: a data YAML must be a mapping with train, val and names, got "
                          f"{type(data).__name__}")
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)} \
        if isinstance(node, yaml.MappingNode) else {}

    def where(key: str) -> str:
        return f"{file}:{lines[key]}: {key}" if key in lines else f"{file}: {key}"

    for key in ("train", "val", "names"):
        if data.get(key) in (None, "", []):
            hint = " (ultralytics' 'validation' key: rename it to 'val')" if key == "val" and "validation" in data \
                else ""
            allowed = "a list of class names or a mapping {0: name, ...}" if key == "names" else \
                "a folder of images, an image-list .txt file, or a list of them, relative to path:"
            raise ConfigError(f"{where(key)}: required key is missing{hint}, allowed: {allowed}")
    if data.get("download"):
        raise ConfigError(f"{where('download')}: ablate never downloads data; put the images where train: and "
                          f"val: point and remove the download: key")
    names = _names(data["names"], where("names"))
    if data.get("nc") is not None and data["nc"] != len(names):
        raise ConfigError(f"{where('nc')}: nc: {data['nc']!r} does not match the {len(names)} names")
    root = _root(data.get("path"), file, where("path"))
    train, n_train = _split(data["train"], root, where("train"))
    val, n_val = _split(data["val"], root, where("val"))
    return DetectionDataInfo(yaml=file.absolute(), root=root, names=names, train=train, val=val,
                             n_train=n_train, n_val=n_val)


def _names(raw: Any, where: str) -> tuple[str, ...]:
    if isinstance(raw, dict):
        if sorted(raw, key=str) != sorted(range(len(raw)), key=str):
            raise ConfigError(f"{where}: keys must be the class indices 0..{len(raw) - 1}, "
                              f"got {', '.join(map(repr, raw))}")
        raw = [raw[i] for i in range(len(raw))]
    if not isinstance(raw, list) or not raw or not all(isinstance(n, (str, int)) for n in raw):
        raise ConfigError(f"{where}: allowed: a non-empty list of class names or a mapping {{0: name, ...}}, "
                          f"got {raw!r}")
    return tuple(str(n) for n in raw)


def _root(raw: Any, file: Path, where: str) -> Path:
    if raw in (None, ""):
        return file.parent.absolute().resolve()
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: allowed: a folder path, got {raw!r}")
    given = Path(os.path.expanduser(raw))
    tried = [given] if given.is_absolute() else [Path.cwd() / given, file.parent.absolute() / given]
    for candidate in tried:
        if candidate.is_dir():
            return candidate.resolve()
    raise DataError(f"{where}: folder not found: {raw!r} (looked at {', '.join(map(str, tried))})")


def _split(raw: Any, root: Path, where: str) -> tuple[tuple[Path, ...], int]:
    entries = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(e, str) and e for e in entries):
        raise ConfigError(f"{where}: allowed: a folder or image-list file path, or a list of them, got {raw!r}")
    resolved, images = [], []
    for entry in entries:
        p = (root / os.path.expanduser(entry)).resolve()
        if not p.exists() and entry.startswith("../"):  # ultralytics' own fallback
            p = (root / entry[3:]).resolve()
        if not p.exists():
            raise DataError(f"{where}: {p} does not exist")
        found = _images(p)
        if not found:
            raise DataError(f"{where}: {p} has no images ({', '.join(sorted(IMG_FORMATS))})")
        resolved.append(p)
        images += found
    if not any(os.path.isfile(label) for label in _label_paths(images)):
        raise DataError(f"{where}: none of the {len(images)} images has a label file (ultralytics reads "
                        f"labels/.../NAME.txt for images/.../NAME.jpg), e.g. {_label_paths(images[:1])[0]}")
    return tuple(resolved), len(images)


def _images(p: Path) -> list[str]:
    """Image files of a folder (recursively) or listed in a text file, as ultralytics finds them."""
    if p.is_dir():
        found = glob.glob(str(Path(glob.escape(str(p))) / "**" / "*.*"), recursive=True)
    else:
        try:
            lines = p.read_text(encoding="utf-8-sig").strip().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{p}: cannot read the image list: {err}") from None
        parent = str(p.parent) + os.sep
        found = [x.replace("./", parent, 1) if x.startswith("./") else x for x in (s.strip() for s in lines)]
        found = [x for x in found if os.path.isfile(x)]
    return sorted(x for x in found if x.rpartition(".")[-1].lower() in IMG_FORMATS)


def _label_paths(images: list[str]) -> list[str]:
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return [sb.join(x.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt" for x in images]
