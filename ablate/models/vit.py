"""A hierarchical (pyramid) vision transformer with a pluggable token mixer per stage.

The skeleton is the one Swin and Focal Transformer share (official code:
https://github.com/microsoft/Focal-Transformer ``classification/focal_transformer.py``,
https://github.com/microsoft/Swin-Transformer ``models/swin_transformer.py``):

    image -> patch embedding (conv, stride ``patch_size``, LayerNorm)
          -> stage 1 blocks -> downsample -> stage 2 blocks -> ... -> stage n blocks
          -> LayerNorm -> global average pool -> Linear head

Every block is pre-norm: ``x + drop_path(mixer(norm1(x), hw))`` then
``x + drop_path(mlp(norm2(x)))``. The mixer is any registered attention family
(:mod:`ablate.attention`), built with the stage's map size as ``input_resolution``.

Downsampling between stages (``downsample``):

* ``"conv"`` — Focal's: the official ``PatchEmbed`` reused with patch size 2, a
  ``Conv2d(C, C', 2, stride 2)`` followed by ``LayerNorm(C')`` (with
  ``use_conv_embed`` an overlapping ``3x3`` stride-2 conv, and a ``7x7`` stride-4 stem);
* ``"merge"`` — Swin's ``PatchMerging``: 2x2 neighbours concatenated,
  ``LayerNorm(4C)``, ``Linear(4C, C', bias=False)``; odd maps are zero-padded first;
* ``"conv_bn"`` — BiFormer's (``models/biformer.py``): ``Conv2d(C, C', 3, stride 2,
  padding 1)`` then ``BatchNorm2d(C')``;
* ``"bn_conv"`` — BiFormer-STL's (``models/biformer_stl.py``), norm *before* the conv:
  ``BatchNorm2d(C)`` then ``Conv2d(C, C', 2, stride 2)`` (odd maps are floored, as
  ``"conv"``); ``use_conv_embed`` does not change it (nor ``"conv_bn"``).

The stem (``stem``): ``"patch"`` is the conv patch embedding above (LayerNorm unless
``patch_norm`` is false); ``"patch_bn"`` the same conv followed by ``BatchNorm2d``
(BiFormer-STL's ``Conv2d(3, C, 4, stride 4)`` + ``BatchNorm2d``); ``"convs"`` BiFormer's
two overlapping 3x3 stride-2 convs with BatchNorm and a GELU between.

Deliberate deviations from the official code:

* The downsample layer opens stage ``i`` instead of closing stage ``i-1`` (timm's
  layout, so ``stages.i`` holds everything at reduction ``patch_size * 2**i``).
  Parameters and FLOPs are the same; checkpoint keys move by one stage.
* Any image size runs: the map of each stage is computed from the conv arithmetic and
  passed to the mixer at run time; ``img_size`` only fixes ``input_resolution`` (which
  window clamps and relative-position tables depend on) and what ``check_arch`` checks.
* A mixer option named ``shift_size`` is given to the odd blocks of a stage only and
  0 to the even ones: Swin's W-MSA / SW-MSA alternation, which Focal's ``use_shift``
  also follows. Focal's ``expand_layer`` (always "all" in the released configs) and
  ``focal_stages`` are expressed by per-stage option lists (``pool_method: [..., "none"]``).
* Initialisation is the official one for every ``nn.Linear`` (truncated normal, std
  0.02, zero bias) and ``nn.LayerNorm`` (ones, zeros), mixers included, exactly as
  the official ``_init_weights``; a mixer that must keep a special init can define
  ``init_weights()``, which the builder calls afterwards.

The arch dict
-------------
Everything a trial builds is described by one JSON-serialisable dict (stored as
``user_attrs["arch"]``). Keys: the builder keys in :data:`ARCH_DEFAULTS`, plus any option
of the stages' attention families at top level, as a scalar (all stages) or a list with
one value per stage. ``preset`` starts from a named preset; the other keys override it.
:func:`resolve_arch` fills every default and returns the canonical form;
:func:`check_arch` rejects impossible combinations cheaply; :func:`build` constructs.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ablate.attention import BlockContext, TokenMixer, check_mixer, create_mixer, get_attention, list_attention, parse_options
from ablate.errors import ConfigError, Infeasible

__all__ = [
    "ARCH_DEFAULTS",
    "HierarchicalViT",
    "build",
    "check_arch",
    "resolve_arch",
    "stage_resolutions",
]

# Builder keys and their defaults: Swin-T / Focal-T's skeleton with global softmax
# attention. ``dims=None`` means ``embed_dim * 2**i``; an int ``num_heads`` is the head
# count of stage 1, doubling per stage (the official 3, 6, 12, 24 of Focal-T and Swin-T).
ARCH_DEFAULTS: dict[str, Any] = {
    "preset": None,
    "img_size": 224,
    "in_chans": 3,
    "num_classes": 1000,
    "patch_size": 4,
    "embed_dim": 96,
    "dims": None,
    "depths": [2, 2, 6, 2],
    "num_heads": 3,
    "mlp_ratio": 4.0,
    "drop_rate": 0.0,
    "drop_path_rate": 0.1,
    "qkv_bias": True,
    "attention": "softmax",
    "use_conv_embed": False,
    "downsample": "conv",
    "stem": "patch",
    "patch_norm": True,
    "pos_embed": "none",
    "pos_conv": 0,
    "class_token": False,
    "norm_eps": 1e-5,
    "final_norm": "layer",
}
_DOWNSAMPLE = ("conv", "merge", "conv_bn", "bn_conv")
_STEMS = ("patch", "convs", "patch_bn")
_POS_EMBED = ("none", "absolute")
_FINAL_NORM = ("layer", "batch")


# ============================================================================ arch dict


def _did_you_mean(name: str, valid: Sequence[str]) -> str:
    hint = difflib.get_close_matches(name, list(valid), n=1)
    return f"; did you mean {hint[0]!r}?" if hint else ""


def _jsonable(value: Any) -> Any:
    """Tuples to lists, recursively, so the resolved dict survives a JSON round trip."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _as_int(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {key}={value}")
    return value


def _as_float(key: str, value: Any, low: float, high: float | None = None, *, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    value = float(value)
    bad_low = value <= low if open_low else value < low
    if bad_low or (high is not None and value >= high):
        span = f"{'(' if open_low else '['}{low}, {high if high is not None else 'inf'})"
        raise ConfigError(f"{key} must be in {span}, got {key}={value}")
    return value


def _as_choice(key: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(map(repr, allowed))}, got {value!r}"
                          + _did_you_mean(str(value), allowed))
    return value


def _as_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value


def _per_stage_list(key: str, value: Any, n: int) -> list[Any]:
    """A list with one entry per stage; a wrong length is a ConfigError naming both."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key} must be a list with one entry per stage, got {value!r}")
    if len(value) != n:
        raise ConfigError(f"{key} has {len(value)} entries but depths has {n} stages: "
                          f"give one value per stage or a single value for all, got {key}={list(value)}")
    return list(value)


def _is_sequence_annotation(annotation: Any) -> bool:
    """Whether an option's type is itself a list (then a flat list is one value, not per stage)."""
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, Sequence):
        return True
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return any(_is_sequence_annotation(a) for a in typing.get_args(annotation))
    return False


def _is_per_stage(value: Any, annotation: Any, n: int | None = None) -> bool:
    """Whether an option value is a per-stage list rather than one value for all stages.

    A list is per stage, except for options whose type is itself a list: for those only
    a list of lists (or nulls) is per stage. ``n`` also requires the right length.
    """
    if not isinstance(value, (list, tuple)):
        return False
    if _is_sequence_annotation(annotation) and not all(isinstance(v, (list, tuple)) or v is None for v in value):
        return False
    return n is None or len(value) == n


def _option_fields(family: str) -> dict[str, Any]:
    """``{option name: annotation}`` of a registered family."""
    cls = get_attention(family).Options
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _expand_preset(arch: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    name = arch.get("preset")
    if name is None:
        return None, dict(arch)
    if not isinstance(name, str):
        raise ConfigError(f"preset must be a preset name, got {name!r}")
    from ablate.models.presets import preset_arch  # presets build on this module

    merged = preset_arch(name)
    merged.update({k: v for k, v in arch.items() if k != "preset"})
    return name, merged


def resolve_arch(arch: Mapping[str, Any]) -> dict[str, Any]:
    """Validate an arch dict and return its canonical, fully resolved form.

    Fills every default (builder keys and every option of each stage's attention
    family), expands ``preset``, checks types and names, and normalises per-stage
    values: ``dims`` and ``num_heads`` become lists, ``attention`` and each option
    become a scalar when all stages agree and a per-stage list otherwise (``None``
    where a stage's family has no such option). The result is JSON-serialisable and
    a fixed point: ``resolve_arch(resolve_arch(a)) == resolve_arch(a)``.

    It does not check that the combination can be built (see :func:`check_arch`).

    Args:
        arch: builder keys (:data:`ARCH_DEFAULTS`) and family options at top level.

    Returns:
        The resolved dict, builder keys first, then the options in sorted order.

    Raises:
        ConfigError: an unknown key (with the allowed ones and a did-you-mean), a value
            of the wrong type, a per-stage list of the wrong length, an unknown
            attention family or preset.
    """
    if not isinstance(arch, Mapping):
        raise ConfigError(f"an arch must be a mapping of keys to values, got {type(arch).__name__}")
    preset, given = _expand_preset(arch)
    raw = {**ARCH_DEFAULTS, **given}

    depths_in = raw["depths"]
    if not isinstance(depths_in, (list, tuple)) or not depths_in:
        raise ConfigError(f"depths must be a non-empty list of block counts, one per stage, got {depths_in!r}")
    depths = [_as_int(f"depths[{i}]", d, 1) for i, d in enumerate(depths_in)]
    n = len(depths)

    out: dict[str, Any] = {"preset": preset}
    out["img_size"] = _as_int("img_size", raw["img_size"], 1)
    out["in_chans"] = _as_int("in_chans", raw["in_chans"], 1)
    out["num_classes"] = _as_int("num_classes", raw["num_classes"], 0)
    out["patch_size"] = _as_int("patch_size", raw["patch_size"], 1)

    embed_dim = _as_int("embed_dim", raw["embed_dim"], 1)
    if raw["dims"] is None:
        dims = [embed_dim * 2 ** i for i in range(n)]
    else:
        dims = [_as_int(f"dims[{i}]", d, 1) for i, d in enumerate(_per_stage_list("dims", raw["dims"], n))]
        if "embed_dim" in arch and arch["embed_dim"] != dims[0]:  # a preset's embed_dim yields to dims
            raise ConfigError(f"embed_dim={arch['embed_dim']} disagrees with dims[0]={dims[0]}: "
                              "give dims, or embed_dim alone (stage i then has embed_dim * 2**i channels)")
        embed_dim = dims[0]
    out["embed_dim"] = embed_dim
    out["dims"] = dims
    out["depths"] = depths

    heads = raw["num_heads"]
    if isinstance(heads, (list, tuple)):
        heads = [_as_int(f"num_heads[{i}]", h, 1) for i, h in enumerate(_per_stage_list("num_heads", heads, n))]
    else:
        first = _as_int("num_heads", heads, 1)
        heads = [first * 2 ** i for i in range(n)]
    out["num_heads"] = heads

    ratios = raw["mlp_ratio"]
    if isinstance(ratios, (list, tuple)):
        ratios = [_as_float(f"mlp_ratio[{i}]", v, 0.0, open_low=True)
                  for i, v in enumerate(_per_stage_list("mlp_ratio", ratios, n))]
        out["mlp_ratio"] = ratios[0] if len(set(ratios)) == 1 else ratios
    else:
        out["mlp_ratio"] = _as_float("mlp_ratio", ratios, 0.0, open_low=True)
    out["drop_rate"] = _as_float("drop_rate", raw["drop_rate"], 0.0, 1.0)
    out["drop_path_rate"] = _as_float("drop_path_rate", raw["drop_path_rate"], 0.0, 1.0)
    out["qkv_bias"] = _as_bool("qkv_bias", raw["qkv_bias"])

    attention = raw["attention"]
    families = _per_stage_list("attention", attention, n) if isinstance(attention, (list, tuple)) else [attention] * n
    for fam in families:
        if not isinstance(fam, str):
            raise ConfigError(f"attention must be a family name or a list of names, got {attention!r}")
        get_attention(fam)  # unknown -> ConfigError listing the families
    out["attention"] = families[0] if len(set(families)) == 1 else families
    out["use_conv_embed"] = _as_bool("use_conv_embed", raw["use_conv_embed"])
    if raw["downsample"] not in _DOWNSAMPLE:
        raise ConfigError(f"downsample must be one of {', '.join(map(repr, _DOWNSAMPLE))}, "
                          f"got {raw['downsample']!r}" + _did_you_mean(str(raw["downsample"]), _DOWNSAMPLE))
    out["downsample"] = raw["downsample"]
    out["stem"] = _as_choice("stem", raw["stem"], _STEMS)
    if out["stem"] == "convs" and out["patch_size"] != 4:
        raise ConfigError(f"stem 'convs' (two 3x3 stride-2 convs, BiFormer's) has stride 4: "
                          f"patch_size must be 4, got patch_size={out['patch_size']}")
    out["patch_norm"] = _as_bool("patch_norm", raw["patch_norm"])
    if out["stem"] == "patch_bn" and not out["patch_norm"]:
        raise ConfigError("stem 'patch_bn' is the patch stem with BatchNorm; patch_norm=false would drop that norm: "
                          "use stem 'patch' with patch_norm=false for a stem without a norm")
    out["pos_embed"] = _as_choice("pos_embed", raw["pos_embed"], _POS_EMBED)
    out["pos_conv"] = _as_int("pos_conv", raw["pos_conv"], 0)
    if out["pos_conv"] and out["pos_conv"] % 2 == 0:
        raise ConfigError(f"pos_conv is the odd kernel of a depthwise conv (0 = off), got pos_conv={out['pos_conv']}")
    out["class_token"] = _as_bool("class_token", raw["class_token"])
    if out["class_token"] and n != 1:
        raise ConfigError(f"class_token needs a single-stage (isotropic, DeiT-like) model, got {n} stages")
    if out["class_token"] and out["pos_conv"]:
        raise ConfigError("class_token and pos_conv cannot be combined: the conv position embedding needs a pure map")
    out["norm_eps"] = _as_float("norm_eps", raw["norm_eps"], 0.0, open_low=True)
    out["final_norm"] = _as_choice("final_norm", raw["final_norm"], _FINAL_NORM)
    if out["final_norm"] == "batch" and out["class_token"]:
        raise ConfigError("final_norm 'batch' normalises a feature map; it cannot be combined with class_token")

    given_options = {k: v for k, v in raw.items() if k not in ARCH_DEFAULTS}
    out.update(_resolve_options(given_options, families, out))
    return out


def _resolve_options(given: Mapping[str, Any], families: list[str], builder: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of every stage's family: checked, defaults filled, collapsed per key.

    Args:
        given: the option keys of the arch (everything that is not a builder key).
        families: the family of each stage.
        builder: the resolved builder keys; those that are also family options
            (``qkv_bias``) are passed on to the families that accept them.

    Returns:
        ``{option: value}`` in sorted order, a scalar when every stage has the same
        value, else a list with ``None`` for stages whose family lacks the option.
    """
    n = len(families)
    fields = [_option_fields(fam) for fam in families]
    option_names = sorted(set().union(*fields))
    # A per-stage list of nulls means "no stage has it": how a preset's per-stage option is
    # written off when a study changes every stage's family (FLatten's all-linear pattern).
    # It stays in the result as written, so re-resolving over a preset keeps it written off.
    nulls = {k: list(v) for k, v in given.items() if k not in option_names and isinstance(v, (list, tuple))
             and len(v) == n and all(x is None for x in v)}
    given = {k: v for k, v in given.items() if k not in nulls}
    for key in given:
        if key not in option_names:
            allowed = sorted(set(ARCH_DEFAULTS) | set(option_names))
            fams = ", ".join(dict.fromkeys(families))
            owners = [f for f in list_attention() if f not in families and key in _option_fields(f)]
            owned = f" ({key!r} is an option of attention {', '.join(map(repr, owners))})" if owners else ""
            raise ConfigError(f"unknown arch key {key!r} for attention {fams}{owned}; allowed: {', '.join(allowed)}"
                              + _did_you_mean(key, allowed))

    per_stage: list[dict[str, Any]] = [{k: builder[k] for k in f if k in builder} for f in fields]
    for key, value in given.items():
        annotation = next(f[key] for f in fields if key in f)
        if _is_per_stage(value, annotation):
            stage_values = _per_stage_list(key, value, n)
            for i, v in enumerate(stage_values):
                if key not in fields[i] and v is not None:
                    raise ConfigError(f"{key}[{i}]={v!r}, but stage {i} uses attention {families[i]!r}, "
                                      f"which has no option {key!r}; put null there")
        else:
            stage_values = [value] * n
        for i, v in enumerate(stage_values):
            if key in fields[i]:
                per_stage[i][key] = v

    resolved: list[dict[str, Any]] = []
    for i, fam in enumerate(families):
        try:
            opts = parse_options(fam, per_stage[i])
        except ConfigError as err:
            raise ConfigError(f"stage {i} ({fam}): {err}") from None
        resolved.append({k: _jsonable(v) for k, v in dataclasses.asdict(opts).items()})

    out: dict[str, Any] = {}
    for key in option_names:
        if key in ARCH_DEFAULTS:
            continue
        values = [stage.get(key) for stage in resolved]
        everywhere = all(key in f for f in fields)
        out[key] = values[0] if everywhere and all(v == values[0] for v in values) else values
    out.update(nulls)
    return out


def _stage_options(resolved: Mapping[str, Any], stage: int) -> tuple[str, dict[str, Any]]:
    """The family and its option dict for one stage of a resolved arch."""
    n = len(resolved["depths"])
    attention = resolved["attention"]
    family = attention[stage] if isinstance(attention, list) else attention
    opts: dict[str, Any] = {}
    for key, annotation in _option_fields(family).items():
        value = resolved[key]
        opts[key] = value[stage] if _is_per_stage(value, annotation, n) else value
    return family, opts


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return max((size + 2 * padding - kernel) // stride + 1, 0) if size > 0 else 0


def _embed_geometry(stride: int, overlap: bool) -> tuple[int, int]:
    """Kernel and padding of a patch embedding with this stride.

    Non-overlapping: kernel = stride. Overlapping (``use_conv_embed``): kernel
    ``2*stride - 1`` and padding ``stride // 2``, which gives the official 7x7/pad 2 stem
    at stride 4 and 3x3/pad 1 between stages at stride 2.
    """
    return (2 * stride - 1, stride // 2) if overlap else (stride, 0)


def stage_resolutions(arch: Mapping[str, Any], img_size: int | tuple[int, int] | None = None) -> list[tuple[int, int]]:
    """Feature-map size ``(H, W)`` of every stage, from the conv arithmetic.

    Args:
        arch: an arch dict (resolved or not).
        img_size: image size to use instead of ``arch["img_size"]``.

    Returns:
        One ``(H, W)`` per stage; a side of 0 means the image is too small.
    """
    r = resolve_arch(arch)
    size = img_size if img_size is not None else r["img_size"]
    h, w = (size, size) if isinstance(size, int) else size
    if r["stem"] == "convs":
        for _ in range(2):
            h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)
    else:
        k, p = _embed_geometry(r["patch_size"], r["use_conv_embed"])
        h, w = _conv_out(h, k, r["patch_size"], p), _conv_out(w, k, r["patch_size"], p)
    sizes = [(h, w)]
    for _ in range(1, len(r["depths"])):
        if r["downsample"] == "merge":
            h, w = (h + 1) // 2 if h > 0 else 0, (w + 1) // 2 if w > 0 else 0
        elif r["downsample"] == "conv_bn":
            h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)
        elif r["downsample"] == "bn_conv":
            h, w = _conv_out(h, 2, 2, 0), _conv_out(w, 2, 2, 0)
        else:
            k, p = _embed_geometry(2, r["use_conv_embed"])
            h, w = _conv_out(h, k, 2, p), _conv_out(w, k, 2, p)
        sizes.append((h, w))
    return sizes


def _fmt_hw(hw: tuple[int, int]) -> str:
    return str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}"


def _block_options(opts: Mapping[str, Any], index: int) -> dict[str, Any]:
    """Options for block ``index`` of a stage: ``shift_size`` on odd blocks only (Swin)."""
    if "shift_size" in opts and index % 2 == 0:
        return {**opts, "shift_size": 0}
    return dict(opts)


def check_arch(arch: Mapping[str, Any]) -> None:
    """Raise for an arch that cannot be built; cheap (no model is constructed).

    Checks, in order: the keys and types (:func:`resolve_arch`); that every stage keeps
    a map of at least 1x1; that heads divide each stage's channels; that no
    ``window_size`` is larger than every map it applies to (a window that only fits by
    being clamped everywhere is a mistake, not a configuration); then each family's own
    ``check`` with the stage's map size, for the even and the odd (shifted) blocks.

    Raises:
        ConfigError: bad keys or values (see :func:`resolve_arch`).
        Infeasible: a combination that cannot be built, with the reason.
    """
    r = resolve_arch(arch)
    n = len(r["depths"])
    maps = stage_resolutions(r)
    if any(min(hw) < 1 for hw in maps):
        valid = [_fmt_hw(hw) for hw in maps if min(hw) >= 1]
        raise Infeasible(f"img_size={r['img_size']} is too small for {n} stages with patch_size={r['patch_size']}: "
                         f"the feature maps would be ({', '.join(_fmt_hw(hw) for hw in maps)}); "
                         f"use fewer stages ({len(valid)} fit) or a larger image")
    for i, (dim, heads) in enumerate(zip(r["dims"], r["num_heads"])):
        if dim % heads:
            raise Infeasible(f"num_heads must divide the stage's channels, got dims[{i}]={dim} and "
                             f"num_heads[{i}]={heads} (head dim {dim / heads:g})")
    stages = [_stage_options(r, i) for i in range(n)]
    if r["class_token"]:
        family, opts = stages[0]
        if not get_attention(family).prefix_tokens or opts.get("window_size") is not None:
            raise Infeasible(f"class_token needs global attention that accepts prefix tokens; attention "
                             f"{family!r} with window_size={opts.get('window_size')!r} does not")
    windows: dict[int, list[int]] = {}
    for i, (_, opts) in enumerate(stages):
        w = opts.get("window_size")
        if isinstance(w, int) and not isinstance(w, bool):
            windows.setdefault(w, []).append(i)
    for w, where in windows.items():
        if all(w > min(maps[i]) for i in where):
            shown = ", ".join(_fmt_hw(maps[i]) for i in where)
            what = "every stage's feature map" if len(where) == n else f"the feature map of stages {where}"
            raise Infeasible(f"window_size={w} is larger than {what} ({shown}) at img_size={r['img_size']}; "
                             f"use window_size <= {max(min(maps[i]) for i in where)}")
    for i, (family, opts) in enumerate(stages):
        for block in (0, 1):  # even and odd (shifted) blocks; an unused shift is still checked
            try:
                check_mixer(family, r["dims"][i], r["num_heads"][i], maps[i], **_block_options(opts, block))
            except Infeasible as err:
                raise Infeasible(f"stage {i} ({family}, {_fmt_hw(maps[i])} map): {err}") from None


def build(arch: Mapping[str, Any]) -> HierarchicalViT:
    """Check an arch dict and construct its model.

    Args:
        arch: an arch dict (see the module docstring); resolved here.

    Returns:
        A :class:`HierarchicalViT` in training mode; ``model.arch`` holds the resolved dict.

    Raises:
        ConfigError, Infeasible: as :func:`check_arch`.
    """
    check_arch(arch)
    return HierarchicalViT(resolve_arch(arch))


# ============================================================================ modules


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``p`` (training only)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # B, 1, ...
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


class PatchEmbed(nn.Module):
    """Conv patch embedding + LayerNorm; the stem and Focal's / PVT's downsampling between stages.

    With ``batch_norm`` the norm is a ``BatchNorm2d`` over the conv's map instead
    (BiFormer-STL's stem).
    """

    def __init__(self, in_chans: int, dim: int, stride: int, *, overlap: bool = False, norm: bool = True,
                 batch_norm: bool = False) -> None:
        super().__init__()
        kernel, padding = _embed_geometry(stride, overlap)
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=kernel, stride=stride, padding=padding)
        self.batch_norm = batch_norm
        self.norm: nn.Module = nn.BatchNorm2d(dim) if batch_norm else nn.LayerNorm(dim) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(B, C_in, H, W)`` -> tokens ``(B, H'*W', C)`` and ``(H', W')``."""
        x = self.proj(x)  # B, C, H', W'
        hw = (x.shape[2], x.shape[3])
        if self.batch_norm:
            return self.norm(x).flatten(2).transpose(1, 2), hw  # B, H'*W', C
        return self.norm(x.flatten(2).transpose(1, 2)), hw  # B, H'*W', C


class ConvStem(nn.Module):
    """BiFormer's stem: two overlapping 3x3 stride-2 convs with BatchNorm and a GELU between."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1), nn.BatchNorm2d(dim // 2), nn.GELU(),
            nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(B, C_in, H, W)`` -> tokens ``(B, H/4*W/4, C)`` and the map size."""
        x = self.layers(x)  # B, C, H/4, W/4
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])  # B, N, C


class ConvBNDownsample(nn.Module):
    """BiFormer's downsampling between stages: a 3x3 stride-2 conv and BatchNorm."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Tokens ``(B, H*W, C)`` -> ``(B, ceil(H/2)*ceil(W/2), C')`` and the new map size."""
        b, _, c = x.shape
        x = self.norm(self.conv(x.transpose(1, 2).reshape(b, c, hw[0], hw[1])))  # B, C', H/2, W/2
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])  # B, N', C'


class BNConvDownsample(nn.Module):
    """BiFormer-STL's downsampling between stages: BatchNorm, then a 2x2 stride-2 conv."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)
        self.conv = nn.Conv2d(dim, out_dim, 2, stride=2)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Tokens ``(B, H*W, C)`` -> ``(B, floor(H/2)*floor(W/2), C')`` and the new map size."""
        b, _, c = x.shape
        x = self.conv(self.norm(x.transpose(1, 2).reshape(b, c, hw[0], hw[1])))  # B, C', H/2, W/2
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])  # B, N', C'


class PatchMerging(nn.Module):
    """Swin's downsampling: concatenate 2x2 neighbours, LayerNorm(4C), Linear(4C, C')."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Tokens ``(B, H*W, C)`` of an ``hw`` map -> ``(B, ceil(H/2)*ceil(W/2), C')``."""
        b, _, c = x.shape
        h, w = hw
        x = x.view(b, h, w, c)  # B, H, W, C
        if h % 2 or w % 2:
            x = nn.functional.pad(x, (0, 0, 0, w % 2, 0, h % 2))  # B, H+h%2, W+w%2, C
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)  # B, H/2, W/2, 4C
        hw2 = (x.shape[1], x.shape[2])
        return self.reduction(self.norm(x.flatten(1, 2))), hw2  # B, H/2*W/2, C'


class ConvDownsample(nn.Module):
    """Focal's downsampling between stages: :class:`PatchEmbed` with stride 2 on the token map."""

    def __init__(self, dim: int, out_dim: int, *, overlap: bool = False) -> None:
        super().__init__()
        self.embed = PatchEmbed(dim, out_dim, 2, overlap=overlap)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Tokens ``(B, H*W, C)`` -> ``(B, H'*W', C')`` and ``(H', W')``."""
        b, _, c = x.shape
        x = x.transpose(1, 2).reshape(b, c, hw[0], hw[1])  # B, C, H, W
        return self.embed(x)


class Mlp(nn.Module):
    """Linear -> GELU -> Dropout -> Linear -> Dropout."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))  # B, N, C


class Block(nn.Module):
    """Pre-norm transformer block around any token mixer.

    With ``pos_conv`` > 0 the block first adds a depthwise-conv position embedding of
    its input map (BiFormer's ``before_attn_dwconv``): ``x = x + dwconv(x)``.
    """

    def __init__(self, dim: int, mixer: TokenMixer, mlp_ratio: float, drop: float, drop_path: float, *,
                 norm_eps: float = 1e-5, pos_conv: int = 0) -> None:
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, pos_conv, padding=pos_conv // 2, groups=dim) if pos_conv else None
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = mixer
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, hw: tuple[int, int], state: dict[str, Any] | None = None) -> torch.Tensor:
        """Tokens ``(B, [P+]H*W, C)`` of an ``hw`` map -> same shape; ``state`` feeds stateful mixers."""
        if self.pos_embed is not None:
            b, n, c = x.shape
            fmap = x.transpose(1, 2).reshape(b, c, hw[0], hw[1])  # B, C, H, W
            x = x + self.pos_embed(fmap).flatten(2).transpose(1, 2)  # B, N, C
        if self.attn.stateful:
            mixed = self.attn(self.norm1(x), hw, state if state is not None else {"aux_losses": []})
        else:
            mixed = self.attn(self.norm1(x), hw)
        x = x + self.drop_path(mixed)  # B, N, C
        return x + self.drop_path(self.mlp(self.norm2(x)))  # B, N, C


def resize_pos_embed(table: torch.Tensor, prefix: int, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """A learned ``(1, P+H*W, C)`` position table at another map size (bilinear, as PVT's code).

    The ``P`` prefix (class-token) rows are kept as they are.
    """
    if tuple(src) == tuple(dst):
        return table
    c = table.shape[-1]
    grid = table[:, prefix:].reshape(1, src[0], src[1], c).permute(0, 3, 1, 2)  # 1, C, H, W
    grid = nn.functional.interpolate(grid, size=dst, mode="bilinear", align_corners=False)  # 1, C, H', W'
    return torch.cat([table[:, :prefix], grid.flatten(2).transpose(1, 2)], dim=1)  # 1, P+H'*W', C


class Stage(nn.Module):
    """Optional downsampling, an optional learned position table (PVT, DeiT), then ``depth`` blocks."""

    def __init__(self, downsample: nn.Module | None, blocks: list[Block], *,
                 pos_embed: tuple[int, int] | None = None, dim: int = 0, prefix: int = 0) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)
        self.pos_hw = pos_embed
        self.prefix = prefix
        if pos_embed is not None:
            self.pos_embed = nn.Parameter(torch.zeros(1, prefix + pos_embed[0] * pos_embed[1], dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor, hw: tuple[int, int],
                state: dict[str, Any] | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        if self.downsample is not None:
            x, hw = self.downsample(x, hw)  # B, N', C'
        if self.pos_hw is not None:
            x = x + resize_pos_embed(self.pos_embed, self.prefix, self.pos_hw, hw)  # B, P+N, C
        for block in self.blocks:
            x = block(x, hw, state)  # B, P+N, C
        return x, hw


def init_weights(module: nn.Module) -> None:
    """The official init of every ViT the papers train: truncated-normal (0.02) linears with
    zero bias, unit LayerNorms (``model.apply(init_weights)``)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class HierarchicalViT(nn.Module):
    """Hierarchical ViT following timm's backbone contract.

    Build it with :func:`build` (which checks the arch first) or directly from a
    resolved arch dict. With one stage and ``class_token`` it is an isotropic
    DeiT-style ViT.

    Attributes:
        arch: the resolved arch dict the model was built from.
        num_features: channels of the last stage (the head's input).
        feature_info: ``[dict(num_chs, reduction, module)]``, one per stage, as timm.
        aux_loss: the sum of the auxiliary losses stateful mixers (LaViT's diagonality
            loss) added during the last forward pass, already weighted; ``None`` when
            there were none. The trainer adds it to the task loss.
    """

    def __init__(self, arch: Mapping[str, Any]) -> None:
        super().__init__()
        r = resolve_arch(arch)
        self.arch = r
        n = len(r["depths"])
        dims, depths, heads, maps = r["dims"], r["depths"], r["num_heads"], stage_resolutions(r)
        ratios = r["mlp_ratio"] if isinstance(r["mlp_ratio"], list) else [r["mlp_ratio"]] * n
        self.num_classes = r["num_classes"]
        self.num_features = dims[-1]
        self.prefix = 1 if r["class_token"] else 0
        self.aux_loss: torch.Tensor | None = None

        if r["stem"] == "convs":
            self.patch_embed: nn.Module = ConvStem(r["in_chans"], dims[0])
        else:
            self.patch_embed = PatchEmbed(r["in_chans"], dims[0], r["patch_size"], overlap=r["use_conv_embed"],
                                          norm=r["patch_norm"], batch_norm=r["stem"] == "patch_bn")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dims[0])) if self.prefix else None
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.pos_drop = nn.Dropout(r["drop_rate"])
        total = sum(depths)
        rates = [r["drop_path_rate"] * j / (total - 1) if total > 1 else 0.0 for j in range(total)]

        stages: list[Stage] = []
        self.feature_info: list[dict[str, Any]] = []
        for i in range(n):
            family, opts = _stage_options(r, i)
            downsample: nn.Module | None = None
            if i > 0:
                if r["downsample"] == "merge":
                    downsample = PatchMerging(dims[i - 1], dims[i])
                elif r["downsample"] == "conv_bn":
                    downsample = ConvBNDownsample(dims[i - 1], dims[i])
                elif r["downsample"] == "bn_conv":
                    downsample = BNConvDownsample(dims[i - 1], dims[i])
                else:
                    downsample = ConvDownsample(dims[i - 1], dims[i], overlap=r["use_conv_embed"])
            first = sum(depths[:i])
            blocks = []
            for j in range(depths[i]):
                context = BlockContext(stage=i, index=j, depth=depths[i],
                                       prev_num_heads=heads[i - 1] if i else None,
                                       prev_resolution=maps[i - 1] if i else None)
                mixer = create_mixer(family, dims[i], heads[i], input_resolution=maps[i], context=context,
                                     **_block_options(opts, j))
                blocks.append(Block(dims[i], mixer, ratios[i], r["drop_rate"], rates[first + j],
                                    norm_eps=r["norm_eps"], pos_conv=r["pos_conv"]))
            pos = maps[i] if r["pos_embed"] == "absolute" else None
            stages.append(Stage(downsample, blocks, pos_embed=pos, dim=dims[i], prefix=self.prefix if i == 0 else 0))
            self.feature_info.append(dict(num_chs=dims[i], reduction=r["patch_size"] * 2 ** i, module=f"stages.{i}"))
        self.stages = nn.ModuleList(stages)
        self._stateful = any(isinstance(m, TokenMixer) and m.stateful for m in self.modules())

        self.norm: nn.Module = (nn.BatchNorm2d(self.num_features) if r["final_norm"] == "batch"
                                else nn.LayerNorm(self.num_features, eps=r["norm_eps"]))
        self.head_drop = nn.Dropout(r["drop_rate"])
        self.head = nn.Linear(self.num_features, self.num_classes) if self.num_classes > 0 else nn.Identity()

        self.apply(init_weights)
        for module in self.modules():
            if isinstance(module, TokenMixer) and callable(getattr(module, "init_weights", None)):
                module.init_weights()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay, beyond norms and biases.

        The trainer (timm's ``create_optimizer_v2``) exempts every 1-D parameter and bias
        anyway; these are the tables that each family's ``no_weight_decay()`` and
        ``no_weight_decay_keywords()`` add, as timm's models of the same families do:

        * every relative-position bias table (Swin, FLatten-Swin: the keyword
          ``relative_position_bias_table``; Focal also lists its ``_to_neighbors`` and
          ``_to_windows`` tables; timm's ``SwinTransformer.no_weight_decay``);
        * the class token and the learned position tables (DeiT's and timm's
          ``VisionTransformer``: ``{'pos_embed', 'cls_token'}``).

        Not exempt, as in the official codes: FLatten's ``positional_encoding`` and
        ``scale`` (3-D, in none of its lists) and anything of BiFormer (its list names
        ``pos_embed`` and ``cls_token``, which match none of its parameters: its
        ``pos_embed`` is a conv). One deliberate deviation: PVT's and FLatten-PVT's codes
        list only ``{'cls_token'}`` (their per-stage ``pos_embed`` tables decay, with the
        comment that exempting them "may be better"); here every learned position table
        is exempt, DeiT's rule.
        """
        return {name for name, _ in self.named_parameters()
                if "relative_position_bias_table" in name or name.endswith((".pos_embed", "cls_token"))}

    def _run(self, x: torch.Tensor) -> Iterator[tuple[torch.Tensor, tuple[int, int]]]:
        """Yield each stage's tokens ``(B, P+N_i, C_i)`` and map size; sets :attr:`aux_loss` at the end."""
        tokens, hw = self.patch_embed(x)  # B, N, C
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)  # B, 1+N, C
        tokens = self.pos_drop(tokens)
        state: dict[str, Any] | None = {"aux_losses": []} if self._stateful else None
        self.aux_loss = None
        for i, stage in enumerate(self.stages):
            tokens, hw = stage(tokens, hw, state)  # B, P+N_i, C_i
            if i == len(self.stages) - 1 and state is not None and state["aux_losses"]:
                self.aux_loss = torch.stack([loss.float() for loss in state["aux_losses"]]).sum()
            yield tokens, hw

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-stage feature maps ``(B, C_i, H_i, W_i)`` (before the final norm; class token dropped), for necks."""
        outs = []
        for tokens, hw in self._run(x):
            b, _, c = tokens.shape
            outs.append(tokens[:, self.prefix:].transpose(1, 2).reshape(b, c, hw[0], hw[1]))  # B, C_i, H_i, W_i
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> the normalised last stage: a map ``(B, H_n, W_n, C_n)`` (timm's Swin layout), or
        tokens ``(B, 1+N, C)`` with a class token (timm's ViT layout)."""
        for tokens, hw in self._run(x):
            pass
        if self.cls_token is not None:
            return self.norm(tokens)  # B, 1+N, C
        b, _, c = tokens.shape
        if isinstance(self.norm, nn.BatchNorm2d):
            fmap = self.norm(tokens.transpose(1, 2).reshape(b, c, hw[0], hw[1]))  # B, C, H, W
            return fmap.permute(0, 2, 3, 1)  # B, H, W, C
        return self.norm(tokens).view(b, hw[0], hw[1], c)  # B, H_n, W_n, C_n

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features -> pooled ``(B, C)`` (class token, or mean over the map) if ``pre_logits`` else logits."""
        x = x[:, 0] if self.cls_token is not None else x.mean(dim=(1, 2))  # B, C
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C_in, H, W)`` -> logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))
