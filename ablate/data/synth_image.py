"""One image of the synthetic detection set: a textured background and shapes placed on it.

Filled shapes (the class is the shape; colour, size, rotation and aspect vary) at three
scales on textured backgrounds (gradients, smoothed noise, stripes, low-contrast blobs and
lines), 1–6 objects per image with moderate overlap, some cut by the border. Each box is
tight around its shape's drawn pixels, occluded parts included, and clipped to the image.

Drawing is kept apart from :mod:`ablate.data.synth_det` (parameters, files, cache) because
it is pure: an image is a function of ``(seed, split, index)`` and the parameters, with no
file system, so the tests re-render single images to compare boxes with masks. Any change
here that changes the pixels must bump :data:`ablate.data.synth_det.GENERATOR_VERSION`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ablate.errors import ConfigError

__all__ = ["SHAPES", "SynthObject", "render_image"]

SHAPES = ("circle", "square", "triangle", "cross", "star")
"""Shapes the generator can draw; a set's ``classes`` is any ordered subset."""

_SPLITS = {"train": 0, "val": 1}
# Object side (the shape's circumscribed-square side) as a fraction of the image side, per scale.
_SCALES = {"small": (0.06, 0.12), "medium": (0.12, 0.28), "large": (0.28, 0.55)}
_SCALE_P = (0.4, 0.4, 0.2)
_MAX_OVERLAP_IOU = 0.4       # between two objects' boxes
_MIN_LEFT_VISIBLE = 0.5      # of an earlier object's pixels once later ones are drawn over it
_MIN_INSIDE = 0.6            # of a shape's pixels inside the image (the rest is cut by the border)
_NEAR_BORDER_P = 0.2


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
