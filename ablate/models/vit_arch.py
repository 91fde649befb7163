"""The ViT's arch dict: its keys and defaults, resolution to the canonical form, and the
cheap feasibility check, without building a model (:mod:`ablate.models.vit` builds).

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
import math
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from ablate.attention import check_mixer, get_attention, list_attention, parse_options
from ablate.errors import ConfigError, Infeasible, did_you_mean
from ablate.models.arch import Architecture
from ablate.models.presets import preset_arch

__all__ = ["ARCH_DEFAULTS", "LIMITS", "check_arch", "checked_int", "embed_geometry", "resolve_arch", "stage_resolutions"]

#: A preset is expanded by the resolver; the names come from :mod:`ablate.models.presets`.

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
_FINAL_NORM = ("layer", "batch", "none")  # none: FLatten-PVT's forward skips its norm


def _jsonable(value: Any) -> Any:
    """Tuples to lists, recursively, so the resolved dict survives a JSON round trip."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


#: Upper bounds on the builder keys: far above any published model (ViT-G: width 1664, depth
#: 48; ImageNet-21k: 21841 classes), far below what would exhaust a machine's memory before the
#: memory estimate (:mod:`ablate.models.memory`) could even be computed.
_MAX_STAGES = 8
LIMITS: dict[str, int | float] = {
    "img_size": 8192, "in_chans": 64, "num_classes": 1_000_000, "patch_size": 1024, "embed_dim": 32768,
    "dims": 32768, "depths": 1024, "num_heads": 4096, "mlp_ratio": 64.0, "pos_conv": 63, "norm_eps": 1.0,
}


def checked_int(key: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in ``[minimum, maximum]``, else a ConfigError naming ``key``.

    Shared by the ViT and YOLO architecture checks, so both refuse bad sizes with the same words.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        span = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{key} must be an integer {span}, got {key}={value}")
    return value


def _as_float(key: str, value: Any, low: float, high: float | None = None, *, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    value = float(value)
    bad_low = not math.isfinite(value) or (value <= low if open_low else value < low)
    if bad_low or (high is not None and value >= high):
        span = f"{'(' if open_low else '['}{low}, {high if high is not None else 'inf'})"
        raise ConfigError(f"{key} must be in {span}, got {key}={value}")
    return value


def _as_choice(key: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(map(repr, allowed))}, got {value!r}"
                          + did_you_mean(str(value), allowed))
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
    if isinstance(arch, Architecture):
        return _resolved(arch)
    if not isinstance(arch, Mapping):
        raise ConfigError(f"an arch must be a mapping of keys to values, got {type(arch).__name__}")
    preset, given = _expand_preset(arch)
    raw = {**ARCH_DEFAULTS, **given}

    depths_in = raw["depths"]
    if not isinstance(depths_in, (list, tuple)) or not depths_in:
        raise ConfigError(f"depths must be a non-empty list of block counts, one per stage, got {depths_in!r}")
    if len(depths_in) > _MAX_STAGES:
        raise ConfigError(f"depths must have at most {_MAX_STAGES} stages, got {len(depths_in)}")
    depths = [checked_int(f"depths[{i}]", d, 1, LIMITS["depths"]) for i, d in enumerate(depths_in)]
    n = len(depths)

    out: dict[str, Any] = {"preset": preset}
    out["img_size"] = checked_int("img_size", raw["img_size"], 1, LIMITS["img_size"])
    out["in_chans"] = checked_int("in_chans", raw["in_chans"], 1, LIMITS["in_chans"])
    out["num_classes"] = checked_int("num_classes", raw["num_classes"], 0, LIMITS["num_classes"])
    out["patch_size"] = checked_int("patch_size", raw["patch_size"], 1, LIMITS["patch_size"])

    embed_dim = checked_int("embed_dim", raw["embed_dim"], 1, LIMITS["embed_dim"])
    if raw["dims"] is None:
        dims = [embed_dim * 2 ** i for i in range(n)]
        if dims[-1] > LIMITS["dims"]:
            raise ConfigError(f"embed_dim={embed_dim} doubled over {n} stages gives {dims[-1]} channels, allowed: "
                              f"at most {LIMITS['dims']} per stage (lower embed_dim, or give dims)")
    else:
        dims = [checked_int(f"dims[{i}]", d, 1, LIMITS["dims"]) for i, d in enumerate(_per_stage_list("dims", raw["dims"], n))]
        if "embed_dim" in arch and arch["embed_dim"] != dims[0]:  # a preset's embed_dim yields to dims
            raise ConfigError(f"embed_dim={arch['embed_dim']} disagrees with dims[0]={dims[0]}: "
                              "give dims, or embed_dim alone (stage i then has embed_dim * 2**i channels)")
        embed_dim = dims[0]
    out["embed_dim"] = embed_dim
    out["dims"] = dims
    out["depths"] = depths

    heads = raw["num_heads"]
    if isinstance(heads, (list, tuple)):
        heads = [checked_int(f"num_heads[{i}]", h, 1, LIMITS["num_heads"]) for i, h in enumerate(_per_stage_list("num_heads", heads, n))]
    else:
        first = checked_int("num_heads", heads, 1, LIMITS["num_heads"])
        heads = [first * 2 ** i for i in range(n)]
        if heads[-1] > LIMITS["num_heads"]:
            raise ConfigError(f"num_heads={first} doubled over {n} stages gives {heads[-1]} heads, allowed: "
                              f"at most {LIMITS['num_heads']} per stage (lower num_heads, or give a list)")
    out["num_heads"] = heads

    ratios = raw["mlp_ratio"]
    if isinstance(ratios, (list, tuple)):
        ratios = [_as_float(f"mlp_ratio[{i}]", v, 0.0, LIMITS["mlp_ratio"], open_low=True)
                  for i, v in enumerate(_per_stage_list("mlp_ratio", ratios, n))]
        out["mlp_ratio"] = ratios[0] if len(set(ratios)) == 1 else ratios
    else:
        out["mlp_ratio"] = _as_float("mlp_ratio", ratios, 0.0, LIMITS["mlp_ratio"], open_low=True)
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
                          f"got {raw['downsample']!r}" + did_you_mean(str(raw["downsample"]), _DOWNSAMPLE))
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
    out["pos_conv"] = checked_int("pos_conv", raw["pos_conv"], 0, LIMITS["pos_conv"])
    if out["pos_conv"] and out["pos_conv"] % 2 == 0:
        raise ConfigError(f"pos_conv is the odd kernel of a depthwise conv (0 = off), got pos_conv={out['pos_conv']}")
    out["class_token"] = _as_bool("class_token", raw["class_token"])  # joins the last stage (DeiT, PVT v1)
    if out["class_token"] and out["pos_conv"]:
        raise ConfigError("class_token and pos_conv cannot be combined: the conv position embedding needs a pure map")
    out["norm_eps"] = _as_float("norm_eps", raw["norm_eps"], 0.0, LIMITS["norm_eps"], open_low=True)
    out["final_norm"] = _as_choice("final_norm", raw["final_norm"], _FINAL_NORM)
    if out["final_norm"] == "batch" and out["class_token"]:
        raise ConfigError("final_norm 'batch' normalises a feature map; it cannot be combined with class_token")

    given_options = {k: v for k, v in raw.items() if k not in ARCH_DEFAULTS}
    out.update(_resolve_options(given_options, families, out))
    return out


def _resolved(arch: Mapping[str, Any] | Architecture) -> dict[str, Any]:
    """The resolved keys: an :class:`Architecture`'s as they are (it was resolved when made), a dict's resolved now."""
    if isinstance(arch, Architecture):
        if arch.task != "classify":
            raise ConfigError(f"the ViT builder takes a classify architecture, got a {arch.task} one")
        return arch.to_dict()
    return resolve_arch(arch)


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
                              + did_you_mean(key, allowed))

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


def embed_geometry(stride: int, overlap: bool) -> tuple[int, int]:
    """Kernel and padding of a patch embedding with this stride.

    Non-overlapping: kernel = stride. Overlapping (``use_conv_embed``): kernel
    ``2*stride - 1`` and padding ``stride // 2``, which gives the official 7x7/pad 2 stem
    at stride 4 and 3x3/pad 1 between stages at stride 2.
    """
    return (2 * stride - 1, stride // 2) if overlap else (stride, 0)


def stage_resolutions(arch: Mapping[str, Any] | Architecture,
                      img_size: int | tuple[int, int] | None = None) -> list[tuple[int, int]]:
    """Feature-map size ``(H, W)`` of every stage, from the conv arithmetic.

    Args:
        arch: an arch dict (resolved or not).
        img_size: image size to use instead of ``arch["img_size"]``.

    Returns:
        One ``(H, W)`` per stage; a side of 0 means the image is too small.
    """
    return _maps(_resolved(arch), img_size)


def _maps(r: Mapping[str, Any], img_size: int | tuple[int, int] | None = None) -> list[tuple[int, int]]:
    """:func:`stage_resolutions` of resolved keys."""
    size = img_size if img_size is not None else r["img_size"]
    h, w = (size, size) if isinstance(size, int) else size
    if r["stem"] == "convs":
        for _ in range(2):
            h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)
    else:
        k, p = embed_geometry(r["patch_size"], r["use_conv_embed"])
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
            k, p = embed_geometry(2, r["use_conv_embed"])
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


def check_arch(arch: Mapping[str, Any] | Architecture) -> None:
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
    r = _resolved(arch)
    n = len(r["depths"])
    maps = _maps(r)
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
    if r["class_token"]:  # the token joins the last stage: its attention must be global and take it
        family, opts = stages[-1]
        reduced = family == "softmax" and opts.get("sr_ratio", 1) > 1  # softmax's reduction refuses prefixes
        if not get_attention(family).prefix_tokens or opts.get("window_size") is not None or reduced:
            raise Infeasible(f"class_token joins the last stage, whose attention must be global and accept prefix "
                             f"tokens; attention {family!r} with window_size={opts.get('window_size')!r}"
                             + (f", sr_ratio={opts['sr_ratio']}" if reduced else "") + " does not")
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
