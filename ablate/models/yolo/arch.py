"""YOLO candidates: the arch dict (base model, attention family, placement, sites), the
presets, and the model an arch builds (see :mod:`ablate.models.yolo` for the keys)."""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ablate.attention import check_mixer, get_attention, list_attention, parse_options
from ablate.errors import ConfigError, Infeasible, did_you_mean
from ablate.models.arch import Architecture
from ablate.models.presets import YOLO_PRESET_INFO, list_presets, preset_arch
from ablate.models.vit_arch import LIMITS, checked_int
from ablate.models.yolo.upstream import tasks
from ablate.models.yolo.blocks import attention_heads, register_ultralytics

__all__ = ["YOLO_ARCH_DEFAULTS", "YOLO_BASES", "YOLO_PLACEMENTS", "YOLO_PRESET_INFO", "Site", "build_yolo",
           "check_yolo_arch", "create_yolo_preset", "list_yolo_presets", "resolve_yolo_arch", "yolo_model_dict",
           "yolo_preset_arch", "yolo_sites"]


YOLO_ARCH_DEFAULTS: dict[str, Any] = {
    "preset": None,
    "base": "yolov8n",
    "nc": 80,
    "img_size": 640,
    "attention": "none",
    "placement": "sppf",
    "places": None,
    "head_dim": 32,
}

YOLO_PLACEMENTS = ("sppf", "neck", "backbone")

_SCALES = "nsmlx"

# base name -> (ultralytics YAML under cfg/models, scale)
YOLO_BASES: dict[str, tuple[str, str]] = {
    **{f"yolov5{s}": ("v5/yolov5.yaml", s) for s in _SCALES},
    **{f"yolov8{s}": ("v8/yolov8.yaml", s) for s in _SCALES},
    **{f"yolo11{s}": ("11/yolo11.yaml", s) for s in _SCALES},
}

_CSP = ("C2f", "C3k2")  # the stock rows a C2f_F / C3k2_F replaces

_DOWNSAMPLERS = ("Conv", "DWConv", "GhostConv", "SCDown")  # args [c2, k, s]

_MAX_STRIDE = 32

def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value

def _option_fields(family: str) -> list[str]:
    return [f.name for f in dataclasses.fields(get_attention(family).Options)]

def list_yolo_presets() -> list[str]:
    """Names of the YOLO presets, sorted (the ``detect`` part of :mod:`ablate.models.presets`)."""
    return list_presets("detect")


def yolo_preset_arch(name: str) -> dict[str, Any]:
    """A fresh copy of a YOLO preset's arch dict (not resolved).

    Raises:
        ConfigError: unknown name, listing the presets with a did-you-mean.
    """
    return preset_arch(name, "detect")


def create_yolo_preset(name: str, **overrides: Any) -> nn.Module:
    """Build a YOLO preset; keyword arguments override its arch keys (``img_size=128``, ``nc=3``)."""
    return build_yolo({"preset": name, **overrides})

@functools.lru_cache(maxsize=None)
def _base_yaml(path: str) -> dict[str, Any]:
    import yaml

    root = Path(tasks.__file__).resolve().parent.parent / "cfg" / "models"
    with open(root / path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)

def _base_dict(base: str) -> dict[str, Any]:
    """A deep copy of ultralytics' model dict for ``base`` (all scales, ``scale`` set)."""
    path, scale = YOLO_BASES[base]
    d = copy.deepcopy(_base_yaml(path))
    d["scale"] = scale
    return d

def _scaled(d: Mapping[str, Any], channels: int) -> int:
    """Channels ultralytics gives a row whose YAML asks for ``channels``."""
    _, width, max_channels = d["scales"][d["scale"]]
    return int(tasks.make_divisible(min(channels, max_channels) * width, 8))

def _strides(rows: Sequence[Sequence[Any]]) -> list[int | None]:
    """Output stride of every row (None for heads), from the downsampling convs and upsamples."""
    out: list[int | None] = []
    for i, (f, _, m, args) in enumerate(rows):
        src = f if isinstance(f, int) else f[0]
        s_in = 1 if i == 0 else out[src if src >= 0 else i + src]
        if s_in is None or m in ("Detect", "Segment", "Pose", "OBB", "v10Detect"):
            out.append(None)
        elif m in _DOWNSAMPLERS:
            out.append(s_in * (int(args[2]) if len(args) > 2 else 1))
        elif m == "nn.Upsample":
            out.append(max(s_in // int(args[1]), 1))
        else:
            out.append(s_in)
    return out

def _map(size: int, stride: int) -> tuple[int, int]:
    """Feature map of a square ``size`` image at ``stride`` (3x3 stride-2 convs: ceil halving)."""
    side = size
    for _ in range(int(round(math.log2(stride)))):
        side = (side + 1) // 2
    return side, side

@dataclasses.dataclass(frozen=True)
class Site:
    """One place a placement can put attention, in the base model's own row numbering.

    Attributes:
        index: row of the base YAML (backbone + head) that is replaced, or after which
            the block is inserted (``sppf``).
        module: the stock module there (``SPPF``, ``C2f``, ``C3k2``).
        stride: its output stride.
        dim: channels the attention sees at this scale.
    """

    index: int
    module: str
    stride: int
    dim: int

def _csp_dim(d: Mapping[str, Any], module: str, args: Sequence[Any]) -> int:
    """Hidden channels of a C2f / C3k2 row (its bottlenecks' width): ``int(c2 * e)``."""
    c2 = _scaled(d, int(args[0]))
    e_index = 3 if module == "C2f" else 2  # C2f args [c2, shortcut, g, e]; C3k2 [c2, c3k, e, ...]
    e = float(args[e_index]) if len(args) > e_index else 0.5
    return int(c2 * e)

def yolo_sites(base: str, placement: str) -> list[Site]:
    """Sites of a placement in a base model, deepest (largest stride) first.

    Returns an empty list when the base has no such place.
    """
    d = _base_dict(base)
    rows = d["backbone"] + d["head"]
    strides = _strides(rows)
    sites: list[Site] = []
    if placement == "sppf":
        for i, (_, _, m, args) in enumerate(rows):
            if m == "SPPF":
                sites.append(Site(i, m, strides[i], _scaled(d, int(args[0]))))
    elif placement == "neck":
        heads = [i for i, row in enumerate(rows) if row[2] == "Detect"]
        if heads:
            for i in rows[heads[-1]][0]:
                if rows[i][2] in _CSP:
                    sites.append(Site(i, rows[i][2], strides[i], _csp_dim(d, rows[i][2], rows[i][3])))
    elif placement == "backbone":
        for i, (_, _, m, args) in enumerate(d["backbone"]):
            if m in _CSP:
                sites.append(Site(i, m, strides[i], _csp_dim(d, m, args)))
    return sorted(sites, key=lambda s: (-s.stride, -s.index))

def _site_label(base: str, site: Site) -> str:
    return f"layer {site.index} of {base} ({site.module} at P{int(round(math.log2(site.stride)))}/{site.stride})"

def _resolved(arch: Mapping[str, Any] | Architecture) -> dict[str, Any]:
    """The resolved keys: an :class:`Architecture`'s as they are, a dict's resolved now."""
    if isinstance(arch, Architecture):
        if arch.task != "detect":
            raise ConfigError(f"the YOLO builder takes a detect architecture, got a {arch.task} one")
        return arch.to_dict()
    return resolve_yolo_arch(arch)


def resolve_yolo_arch(arch: Mapping[str, Any] | Architecture) -> dict[str, Any]:
    """Validate a YOLO arch dict and return its canonical, JSON-able form.

    Fills the defaults (:data:`YOLO_ARCH_DEFAULTS` and every option of the family),
    expands ``preset``, checks names and types. ``places`` becomes the number of sites
    (``None`` = all the placement has; it stays ``None`` where the base has none, which
    :func:`check_yolo_arch` reports). With ``attention: none`` the model is the stock
    one: ``placement`` becomes ``"none"``, ``places`` 0 and ``head_dim`` None, so every
    way of writing the stock model resolves to the same dict. A fixed point:
    ``resolve_yolo_arch(resolve_yolo_arch(a)) == resolve_yolo_arch(a)``.

    It does not check that the combination can be built (:func:`check_yolo_arch`).

    Raises:
        ConfigError: an unknown key, base, family, placement or preset (with the allowed
            ones and a did-you-mean), or a value of the wrong type.
    """
    if isinstance(arch, Architecture):
        return _resolved(arch)
    if not isinstance(arch, Mapping):
        raise ConfigError(f"a YOLO arch must be a mapping of keys to values, got {type(arch).__name__}")
    given = dict(arch)
    preset = given.pop("preset", None)
    if preset is not None:
        if not isinstance(preset, str):
            raise ConfigError(f"preset must be a YOLO preset name, got {preset!r}")
        given = {**yolo_preset_arch(preset), **given}
    raw = {**YOLO_ARCH_DEFAULTS, **given}

    base = raw["base"]
    if base not in YOLO_BASES:
        raise ConfigError(f"unknown base {base!r}, allowed: {', '.join(YOLO_BASES)}" + did_you_mean(base, YOLO_BASES))
    out: dict[str, Any] = {"preset": preset, "base": base}
    out["nc"] = checked_int("nc", raw["nc"], 1, LIMITS["num_classes"])
    size = checked_int("img_size", raw["img_size"], _MAX_STRIDE, LIMITS["img_size"])
    if size % _MAX_STRIDE:
        raise ConfigError(f"img_size must be a multiple of {_MAX_STRIDE} (the largest stride of a YOLO model), "
                          f"got img_size={size}")
    out["img_size"] = size

    attention = raw["attention"]
    families = list_attention()
    if attention != "none" and attention not in families:
        valid = ["none", *families]
        raise ConfigError(f"unknown attention {attention!r}, allowed: {', '.join(valid)}"
                          + did_you_mean(attention, valid))
    out["attention"] = attention
    placement = raw["placement"]
    allowed_placements = YOLO_PLACEMENTS + (("none",) if attention == "none" else ())
    if placement not in allowed_placements:
        extra = "" if attention == "none" or placement != "none" else " ('none' only with attention: none)"
        raise ConfigError(f"placement must be one of {', '.join(map(repr, YOLO_PLACEMENTS))}{extra}, "
                          f"got {placement!r}" + did_you_mean(placement, YOLO_PLACEMENTS))
    places = raw["places"]
    if places is not None:
        places = checked_int("places", places, 0 if attention == "none" else 1, 64)
    head_dim = raw["head_dim"]
    if head_dim is not None or attention != "none":
        head_dim = checked_int("head_dim", head_dim, 1, LIMITS["dims"])

    options = {k: v for k, v in raw.items() if k not in YOLO_ARCH_DEFAULTS}
    fields = [] if attention == "none" else _option_fields(attention)
    for key in options:
        if key not in fields:
            owners = [f for f in families if f != attention and key in _option_fields(f)]
            owned = f" ({key!r} is an option of attention {', '.join(map(repr, owners))})" if owners else ""
            allowed = sorted(set(YOLO_ARCH_DEFAULTS) | set(fields))
            raise ConfigError(f"unknown arch key {key!r} for attention {attention!r}{owned}; allowed: "
                              f"{', '.join(allowed)}" + did_you_mean(key, allowed))
    if attention == "none":
        out.update(placement="none", places=0, head_dim=None)
        return out
    out["placement"] = placement
    out["places"] = (len(yolo_sites(base, placement)) or None) if places is None else places
    out["head_dim"] = head_dim
    parsed = parse_options(attention, options)
    out.update({k: _jsonable(v) for k, v in sorted(dataclasses.asdict(parsed).items())})
    return out

def _family_options(r: Mapping[str, Any]) -> dict[str, Any]:
    """The family options of a resolved arch (everything that is not a builder key)."""
    return {k: v for k, v in r.items() if k not in YOLO_ARCH_DEFAULTS}

def check_yolo_arch(arch: Mapping[str, Any] | Architecture) -> None:
    """Raise for a YOLO arch that cannot be built; cheap (no model is constructed).

    Checks the keys (:func:`resolve_yolo_arch`), that the placement exists in the base
    and has at least ``places`` sites, and, at every chosen site, the family's own
    ``check`` with the site's channels and heads on the map it sees at ``img_size`` and
    at 256 px (ultralytics runs every model once at 256x256 while building it).

    Raises:
        ConfigError: bad keys or values.
        Infeasible: a combination that cannot be built, with the reason, in one line.
    """
    _check_resolved(_resolved(arch))


def _check_resolved(r: Mapping[str, Any]) -> None:
    family = r["attention"]
    if family == "none":
        return
    base, placement = r["base"], r["placement"]
    sites = yolo_sites(base, placement)
    if not sites:
        what = {"sppf": "an SPPF layer", "neck": "C2f/C3k2 layers feeding Detect",
                "backbone": "C2f/C3k2 layers in its backbone"}[placement]
        raise Infeasible(f"placement {placement!r} does not exist in base {base}: it has no {what}")
    if r["places"] > len(sites):
        where = ", ".join(_site_label(base, s) for s in sites)
        raise Infeasible(f"places={r['places']} but placement {placement!r} has {len(sites)} site(s) in {base}: "
                         f"{where}")
    options = _family_options(r)
    sizes = [r["img_size"]] + ([256] if r["img_size"] != 256 else [])
    for site in sites[:r["places"]]:
        heads = attention_heads(site.dim, r["head_dim"])
        for size in sizes:
            hw = _map(size, site.stride)
            try:
                check_mixer(family, site.dim, heads, hw, **options)
            except Infeasible as err:
                why = "the training size" if size == r["img_size"] else "ultralytics builds every model at 256"
                raise Infeasible(f"attention {family!r} cannot run at {_site_label(base, site)}: {site.dim} channels, "
                                 f"{heads} head(s), a {hw[0]}x{hw[1]} map at {size} px ({why}): {err}") from None

def _block_cfg(r: Mapping[str, Any], site: Site) -> dict[str, Any]:
    return {"head_dim": r["head_dim"], "input_resolution": list(_map(r["img_size"], site.stride)),
            **_family_options(r)}

def _insert_after(rows: list[list[Any]], at: int, new: list[Any]) -> list[list[Any]]:
    """Insert ``new`` (which reads row ``at``) right after row ``at``.

    Every later row that read row ``at`` now reads ``new`` (the block sits in the path);
    absolute ``from`` indices beyond ``at`` move by one; relative ones (``-1``) are kept
    where they still point at the same layer.
    """
    def target(old: int) -> int:
        return old + 1 if old >= at else old  # rows after `at` move; readers of `at` read the block (at + 1)

    out: list[list[Any]] = []
    for i, row in enumerate(rows):
        f, rest = row[0], row[1:]
        if i > at:
            new_i = i + 1
            froms = [f] if isinstance(f, int) else list(f)
            mapped = []
            for x in froms:
                t = target(i + x if x < 0 else x)
                mapped.append(x if x < 0 and new_i + x == t else t)
            f = mapped[0] if isinstance(row[0], int) else mapped
        out.append([f, *rest])
        if i == at:
            out.append(new)
    return out

def yolo_model_dict(arch: Mapping[str, Any] | Architecture) -> dict[str, Any]:
    """The ultralytics model dict of a YOLO arch (what a model YAML holds).

    The base's dict with ``nc`` set, ``scale`` set and the arch's scale listed first in
    ``scales``, and the placement applied: ``AttnBlock_F`` rows inserted (``from``
    indices fixed up) or C2f/C3k2 rows renamed to ``C2f_F``/``C3k2_F`` with ``cfg``
    inserted after the channel count. Checks the arch first.

    Raises:
        ConfigError, Infeasible: as :func:`check_yolo_arch`.
    """
    r = _resolved(arch)
    _check_resolved(r)
    d = _base_dict(r["base"])
    scale = d["scale"]
    d["nc"] = r["nc"]
    d["scales"] = {scale: d["scales"][scale], **{k: v for k, v in d["scales"].items() if k != scale}}
    family = r["attention"]
    if family == "none":
        return d
    n_backbone = len(d["backbone"])
    rows = d["backbone"] + d["head"]
    chosen = yolo_sites(r["base"], r["placement"])[:r["places"]]
    if r["placement"] == "sppf":
        for site in sorted(chosen, key=lambda s: -s.index):  # from the end, so earlier indices stay valid
            block = [-1, 1, f"AttnBlock_{family}", [rows[site.index][3][0], _block_cfg(r, site)]]
            rows = _insert_after(rows, site.index, block)
            if site.index < n_backbone:
                n_backbone += 1
    else:
        for site in chosen:
            f, n, m, args = rows[site.index]
            args = [args[0], _block_cfg(r, site), *args[1:]]
            if m == "C3k2" and scale in "mlx":  # what parse_model does for a stock C3k2 at scales m/l/x
                args[2:3] = [True]
            rows[site.index] = [f, n, f"{m}_{family}", args]
    d["backbone"], d["head"] = rows[:n_backbone], rows[n_backbone:]
    return d

def build_yolo(arch: Mapping[str, Any] | Architecture, *, verbose: bool = False) -> nn.Module:
    """Check a YOLO arch and build its ``ultralytics`` ``DetectionModel``.

    Args:
        arch: a detect :class:`Architecture` (already resolved), or a YOLO arch dict
            (module docstring), resolved here once.
        verbose: print ultralytics' layer table.

    Returns:
        A ``DetectionModel`` in training mode; ``model.arch`` holds the resolved arch,
        ``model.yaml`` the model dict.

    Raises:
        ConfigError, Infeasible: as :func:`check_yolo_arch`.
    """
    resolved = arch if isinstance(arch, Architecture) else Architecture("detect", resolve_yolo_arch(arch))
    r = resolved.to_dict()
    d = yolo_model_dict(resolved)
    register_ultralytics()  # families registered since import
    model = tasks.DetectionModel(d, ch=3, nc=r["nc"], verbose=verbose)
    model.arch = r
    return model
