"""Ultralytics YOLO with any registered attention family, without a fork of ultralytics.

Importing this module registers, for every attention family ``F`` in
:func:`ablate.attention.list_attention`, three layers under the names ultralytics' model
YAML uses (set as attributes of ``ultralytics.nn.tasks``, where ``parse_model`` looks
module names up):

* ``AttnBlock_F`` — a standalone, channel-preserving attention block for any place in
  a model, e.g. right after SPPF (YAML args ``[c2, cfg]``);
* ``C2f_F`` — YOLOv8's C2f with an attention block after each of its bottlenecks
  (YAML args ``[c2, cfg, shortcut, g, e]``: a stock C2f row with ``cfg`` inserted
  after the channel count);
* ``C3k2_F`` — the same for YOLO11's C3k2 (args ``[c2, cfg, c3k, e, attn, g,
  shortcut]``; ``attn`` must stay false, the attention is ours).

``cfg`` is a mapping: ``head_dim`` (channels per head, default 32; a block with ``C``
channels gets ``max(1, C // head_dim)`` heads), ``input_resolution`` (the map the
block sees at the training size, ``[H, W]``, or null; window clamps and position
tables depend on it, as in :mod:`ablate.models.vit`) and any option of family ``F``
(family defaults for the rest). Example, the focused linear attention of the seed
after yolov8n's SPPF, at 640 px::

    - [-1, 1, AttnBlock_flatten, [1024, {head_dim: 32, input_resolution: [20, 20], pos_encoding: false}]]

The block
---------
Every attention site is the same pre-norm residual unit, :class:`AttnResidual`::

    y = x + Mixer2d(mixer)(LayerNorm2d(x))        # (B, C, H, W) -> (B, C, H, W)

— the attention half of a transformer block (the layout of our ViT's blocks and of
ultralytics' own ``PSABlock``), without the MLP, so that a site adds attention and
nothing else. ``AttnBlock_F`` stacks ``n`` of them; ``C2f_F``/``C3k2_F`` put one after
each bottleneck (``nn.Sequential(Bottleneck, AttnResidual)``, the layout of
ultralytics' ``C3k2(attn=True)``, which follows each bottleneck with a ``PSABlock``).
Linear and LayerNorm weights get the official ViT init (truncated normal, std 0.02).

Compared with the seed (a blog's YOLOv8 + FocusedLinearAttention): its standalone block
is ``x -> FLA(x)`` without norm or residual, so at initialisation SPPF's features reach
the head only through a random projection; here the identity path keeps the pretrained
or stock behaviour available and the attention learns a correction. Its
``Bottleneck_FLA`` returns ``x + cv2(cv1(x))`` when the shortcut is on — the attention
it builds is then never called (every backbone C2f has the shortcut on) — and
``FLA(cv2(cv1(x)))`` otherwise; here the attention always runs, after the bottleneck.
Its positional encoding is a fresh zero tensor in every call (no encoding at all), so
the preset ``yolov8n_fla`` sets ``pos_encoding: false``; with 8 heads of 32 channels
(``head_dim`` 32 at 256 channels, the seed's ``num_heads=8``), focusing factor 3 and a
5x5 DWC it has the seed's parameters plus one LayerNorm (512).

Any H×W runs: ultralytics probes every model at 256×256 while building, trains with
other sizes and validates non-square (rect) batches; window and region families pad.
A stateful family (LaViT) gets a fresh state per call from :class:`Mixer2d`: a lone
VA layer.

How ultralytics is taught the channel counts (the one trick here)
----------------------------------------------------------------
``parse_model`` treats a module it does not know as channel-preserving and passes its
args as they are. That is right for ``AttnBlock_F`` but wrong for ``C2f_F`` (Concat in,
``c2`` out), and neither would be width-scaled. So each of our classes compares equal,
*inside ``parse_model`` only*, to the stock module it extends (``C2PSA`` for
``AttnBlock_F``, ``C2f``, ``C3k2``): ``m in base_modules`` then holds, and ultralytics
does for our rows exactly what it does for the stock ones (input channels from the
graph, ``c2`` scaled by the width multiple and capped, repeats inserted as ``n``). The
metaclass :class:`_ParsedLike` checks the calling frame, so everywhere else the classes
compare and hash as usual (only the hash equals the stock class's). If a future
ultralytics changes ``parse_model``, ``tests/test_yolo.py`` fails first.

The arch dict
-------------
A detection trial's candidate (stored as ``user_attrs["arch"]``); keys and defaults in
:data:`YOLO_ARCH_DEFAULTS`:

* ``base``: ``yolov8{n,s,m,l,x}`` or ``yolo11{n,s,m,l,x}``, ultralytics' own YAMLs
  (``cfg/models/v8/yolov8.yaml``, ``cfg/models/11/yolo11.yaml``) at that scale; also
  ``yolov5{n,...}`` (C3 blocks: only the ``sppf`` placement exists there);
* ``attention``: a family name or ``"none"`` (the stock model);
* ``placement``: ``"sppf"`` (one ``AttnBlock_F`` right after SPPF: every consumer of
  SPPF reads the block, every later ``from`` index moves by one), ``"neck"`` (the
  C2f/C3k2 rows feeding Detect, at P3/P4/P5, become ``C2f_F``/``C3k2_F``) or
  ``"backbone"`` (the backbone's C2f/C3k2 rows, P2 to P5);
* ``places``: how many of the placement's sites, deepest (largest stride) first;
  ``None`` = all of them;
* ``head_dim``: channels per attention head;
* ``nc``: number of classes; ``img_size``: the training size (a multiple of 32), which
  fixes each block's ``input_resolution``;
* ``preset``: start from a named preset (:func:`list_yolo_presets`), other keys override;
* any option of the family, at top level.

FLOPs
-----
``gflops`` everywhere in ablate is multiply-adds (:func:`ablate.measure.count_flops`).
:func:`ultralytics_gflops` gives the figure ultralytics prints; see its docstring for
why that is not simply twice the multiply-adds.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from ablate.offline import ultralytics_offline

ultralytics_offline()  # before the first import of ultralytics in this process

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from ultralytics.nn import tasks as _tasks  # noqa: E402
from ultralytics.nn.modules.block import C2PSA, C2f, C3k, C3k2, Bottleneck  # noqa: E402

from ablate.attention import Mixer2d, check_mixer, create_mixer, get_attention, list_attention  # noqa: E402
from ablate.attention import parse_options  # noqa: E402
from ablate.errors import ConfigError, Infeasible  # noqa: E402
from ablate.measure import count_flops, count_params  # noqa: E402
from ablate.models.vit import _as_int, _did_you_mean, init_weights  # noqa: E402  (shared arch checks)

__all__ = [
    "YOLO_ARCH_DEFAULTS",
    "YOLO_BASES",
    "YOLO_PLACEMENTS",
    "YOLO_PRESET_INFO",
    "AttnBlock",
    "Site",
    "AttnResidual",
    "C2fAttention",
    "C3k2Attention",
    "LayerNorm2d",
    "build_yolo",
    "check_yolo_arch",
    "create_yolo_preset",
    "export_yolo_yaml",
    "list_yolo_presets",
    "profile_yolo",
    "register_ultralytics",
    "resolve_yolo_arch",
    "ultralytics_gflops",
    "attention_heads",
    "yolo_model_dict",
    "yolo_preset_arch",
    "yolo_sites",
    "yolo_yaml_text",
]

# ============================================================================ blocks


class _ParsedLike(type):
    """Metaclass: inside ultralytics' ``parse_model`` the class equals one stock module.

    ``parse_model`` decides how to wire a layer with ``m in base_modules`` (and
    ``m in repeat_modules``), sets of stock classes. A class whose ``_parsed_like`` is,
    say, ``C2f`` hashes like ``C2f`` and compares equal to it when the comparison runs
    in ``ultralytics.nn.tasks.parse_model``, so that it is wired as a C2f: input
    channels from the graph, output channels scaled, repeats passed as ``n``. Anywhere
    else it compares by identity, as every class does.
    """

    def __eq__(cls, other: object) -> bool:
        if cls is other:
            return True
        like = cls.__dict__.get("_parsed_like")
        if like is not None and other is like and _called_from_parse_model():
            return True
        return NotImplemented  # type: ignore[return-value]

    def __hash__(cls) -> int:
        like = cls.__dict__.get("_parsed_like")
        return hash(like) if like is not None else type.__hash__(cls)


def _called_from_parse_model() -> bool:
    """Whether the code comparing classes (two frames up) is ultralytics' ``parse_model``."""
    frame = sys._getframe(2)  # 0: here, 1: _ParsedLike.__eq__, 2: the comparing code
    return frame.f_code.co_name == "parse_model" and frame.f_globals.get("__name__") == "ultralytics.nn.tasks"


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (a transformer's pre-norm on tokens)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # B, H, W, C
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # B, C, H, W


def attention_heads(dim: int, head_dim: int) -> int:
    """Heads of an attention block with ``dim`` channels: ``max(1, dim // head_dim)``."""
    return max(1, dim // head_dim)


def _split_cfg(family: str, cfg: Mapping[str, Any] | None) -> tuple[int, tuple[int, int] | None, dict[str, Any]]:
    """``(head_dim, input_resolution, family options)`` from a block's YAML ``cfg``."""
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"attention block {family!r}: cfg must be a mapping of options, got {cfg!r}")
    options = dict(cfg)
    head_dim = options.pop("head_dim", 32)
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1:
        raise ConfigError(f"attention block {family!r}: head_dim must be an integer >= 1, got {head_dim!r}")
    res = options.pop("input_resolution", None)
    if res is not None:
        if (not isinstance(res, (list, tuple)) or len(res) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in res)):
            raise ConfigError(f"attention block {family!r}: input_resolution must be [H, W] or null, got {res!r}")
        res = (int(res[0]), int(res[1]))
    return head_dim, res, options


class AttnResidual(nn.Module):
    """``x + attn(norm(x))`` over a ``(B, C, H, W)`` map, ``attn`` any registered family.

    Args:
        dim: channels ``C``.
        family: a registered attention family.
        cfg: ``head_dim``, ``input_resolution`` and family options (module docstring).
    """

    def __init__(self, dim: int, family: str, cfg: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        head_dim, res, options = _split_cfg(family, cfg)
        self.norm = LayerNorm2d(dim)
        mixer = create_mixer(family, dim, attention_heads(dim, head_dim), input_resolution=res, **options)
        self.attn = Mixer2d(mixer)
        self.apply(init_weights)
        if callable(getattr(mixer, "init_weights", None)):
            mixer.init_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(self.norm(x))  # B, C, H, W


class AttnBlock(nn.Module, metaclass=_ParsedLike):
    """``n`` stacked :class:`AttnResidual` units, channel-preserving; parsed like ``C2PSA``.

    Subclassed once per family as ``AttnBlock_<family>`` (:func:`register_ultralytics`).

    Args:
        c1: input channels (from ultralytics).
        c2: output channels (the YAML's, width-scaled by ultralytics); must equal ``c1``.
        n: number of units (the YAML row's repeats, depth-scaled).
        cfg: ``head_dim``, ``input_resolution`` and family options.
    """

    family: ClassVar[str] = ""

    def __init__(self, c1: int, c2: int, n: int = 1, cfg: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if c1 != c2:
            raise ConfigError(f"{type(self).__name__} keeps the channel count, but gets {c1} channels and is "
                              f"asked for {c2}: its YAML channel argument must equal its input's")
        self.m = nn.Sequential(*(AttnResidual(c1, self.family, cfg) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)  # B, C, H, W


class C2fAttention(C2f, metaclass=_ParsedLike):
    """C2f with an :class:`AttnResidual` after each bottleneck; parsed like ``C2f``.

    Subclassed once per family as ``C2f_<family>``. Arguments are C2f's with ``cfg``
    after ``n``: ``(c1, c2, n, cfg, shortcut, g, e)``.
    """

    family: ClassVar[str] = ""

    def __init__(self, c1: int, c2: int, n: int = 1, cfg: Mapping[str, Any] | None = None,
                 shortcut: bool = False, g: int = 1, e: float = 0.5) -> None:
        super().__init__(c1, c2, n, shortcut, g, e)
        self.m = nn.ModuleList(
            nn.Sequential(Bottleneck(self.c, self.c, shortcut, g, k=((3, 3), (3, 3)), e=1.0),
                          AttnResidual(self.c, self.family, cfg))
            for _ in range(n))


class C3k2Attention(C3k2, metaclass=_ParsedLike):
    """C3k2 with an :class:`AttnResidual` after each inner block; parsed like ``C3k2``.

    Subclassed once per family as ``C3k2_<family>``. Arguments are C3k2's with ``cfg``
    after ``n``: ``(c1, c2, n, cfg, c3k, e, attn, g, shortcut)``; ``attn`` (ultralytics'
    own PSABlock) must be false.
    """

    family: ClassVar[str] = ""

    def __init__(self, c1: int, c2: int, n: int = 1, cfg: Mapping[str, Any] | None = None, c3k: bool = False,
                 e: float = 0.5, attn: bool = False, g: int = 1, shortcut: bool = True) -> None:
        if attn:
            raise ConfigError(f"{type(self).__name__} brings its own attention: its attn argument must be false")
        super().__init__(c1, c2, n, c3k, e, False, g, shortcut)
        self.m = nn.ModuleList(
            nn.Sequential(C3k(self.c, self.c, 2, shortcut, g) if c3k else Bottleneck(self.c, self.c, shortcut, g),
                          AttnResidual(self.c, self.family, cfg))
            for _ in range(n))


# prefix -> (generic class, the stock module it is parsed like)
_KINDS: dict[str, tuple[type, type]] = {
    "AttnBlock": (AttnBlock, C2PSA),
    "C2f": (C2fAttention, C2f),
    "C3k2": (C3k2Attention, C3k2),
}


def register_ultralytics() -> list[str]:
    """Create ``AttnBlock_F``, ``C2f_F`` and ``C3k2_F`` for every registered family ``F``.

    Each class becomes an attribute of this module (checkpoints pickle it as
    ``ablate.models.yolo.C2f_F``) and of ``ultralytics.nn.tasks`` (where ``parse_model``
    finds YAML module names). Runs at import; call it again after registering a new
    family. Idempotent.

    Returns:
        The names of every registered layer, sorted.
    """
    names = []
    module = sys.modules[__name__]
    for family in list_attention():
        for prefix, (base, like) in _KINDS.items():
            name = f"{prefix}_{family}"
            cls = module.__dict__.get(name)
            if cls is None:
                cls = _ParsedLike(name, (base,), {
                    "family": family, "_parsed_like": like, "__module__": __name__, "__qualname__": name,
                    "__doc__": f"{base.__name__} with attention {family!r} (see ablate.models.yolo)."})
                setattr(module, name, cls)
            setattr(_tasks, name, cls)
            names.append(name)
    return sorted(names)


def __getattr__(name: str) -> Any:
    """Layers of families registered after this module was imported (unpickling a checkpoint)."""
    prefix, _, family = name.partition("_")
    if prefix in _KINDS and family in list_attention():
        register_ultralytics()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_ultralytics()

# ============================================================================ arch dict

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


# --------------------------------------------------------------------------- presets

_PRESETS: dict[str, Callable[[], dict[str, Any]]] = {}


def _preset(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    _PRESETS[fn.__name__.removeprefix("_")] = fn
    return fn


@_preset
def _yolov8n() -> dict[str, Any]:
    return {"base": "yolov8n"}


@_preset
def _yolov8s() -> dict[str, Any]:
    return {"base": "yolov8s"}


@_preset
def _yolo11n() -> dict[str, Any]:
    return {"base": "yolo11n"}


@_preset
def _yolo11s() -> dict[str, Any]:
    return {"base": "yolo11s"}


@_preset
def _yolov8n_fla() -> dict[str, Any]:
    """The seed's yolov8n: focused linear attention (8 heads at 256 channels, focusing
    factor 3, 5x5 DWC, no positional encoding) right after SPPF."""
    return {"base": "yolov8n", "attention": "flatten", "placement": "sppf", "places": 1, "head_dim": 32,
            "focusing_factor": 3.0, "kernel_size": 5, "pos_encoding": False}


# Figures at 640x640. ``params`` and ``gflops_ultralytics`` for the stock models are what
# this ultralytics (8.4) prints (``YOLO("yolov8n.yaml").info()``); ``tests/test_yolo.py``
# checks our count equals ``ultralytics.utils.torch_utils.get_flops`` exactly.
# ``gflops`` is multiply-adds (ablate's convention). yolov8n_fla: our own count; the
# seed's blog reports 8.9 -> 9.1 GFLOPs (ultralytics' convention) for the same change.
YOLO_PRESET_INFO: dict[str, dict[str, Any]] = {
    "yolov8n": dict(params_m=3.1572, gflops=4.372, gflops_ultralytics=8.9, resolution=640, verified=True,
                    source="ultralytics 8.4 cfg/models/v8/yolov8.yaml, scale n (3,157,200 params, 8.9 GFLOPs)"),
    "yolov8s": dict(params_m=11.1666, gflops=14.301, gflops_ultralytics=28.8, resolution=640, verified=True,
                    source="ultralytics 8.4 cfg/models/v8/yolov8.yaml, scale s (11,166,560 params, 28.8 GFLOPs)"),
    "yolo11n": dict(params_m=2.6241, gflops=3.271, gflops_ultralytics=6.7, resolution=640, verified=True,
                    source="ultralytics 8.4 cfg/models/11/yolo11.yaml, scale n (2,624,080 params, 6.7 GFLOPs; "
                           "the YAML comment's 6.6 is an older count)"),
    "yolo11s": dict(params_m=9.4588, gflops=10.795, gflops_ultralytics=21.8, resolution=640, verified=True,
                    source="ultralytics 8.4 cfg/models/11/yolo11.yaml, scale s (9,458,752 params, 21.8 GFLOPs; "
                           "the YAML comment's 21.7 is an older count)"),
    "yolov8n_fla": dict(params_m=3.4220, gflops=4.486, gflops_ultralytics=9.1, resolution=640, verified=False,
                        source="yolov8n + focused linear attention after SPPF (the seed's blog: 8.9 -> 9.1 "
                               "GFLOPs); our own count"),
}


def list_yolo_presets() -> list[str]:
    """Names of the YOLO presets, sorted."""
    return sorted(_PRESETS)


def yolo_preset_arch(name: str) -> dict[str, Any]:
    """A fresh copy of a YOLO preset's arch dict (not resolved).

    Raises:
        ConfigError: unknown name, listing the presets with a did-you-mean.
    """
    try:
        fn = _PRESETS[name]
    except (KeyError, TypeError):
        valid = list_yolo_presets()
        raise ConfigError(f"unknown YOLO preset {name!r}, allowed: {', '.join(valid)}"
                          + _did_you_mean(name, valid)) from None
    return fn()


def create_yolo_preset(name: str, **overrides: Any) -> nn.Module:
    """Build a YOLO preset; keyword arguments override its arch keys (``img_size=128``, ``nc=3``)."""
    return build_yolo({"preset": name, **overrides})


# --------------------------------------------------------------------------- base YAMLs


@functools.lru_cache(maxsize=None)
def _base_yaml(path: str) -> dict[str, Any]:
    import yaml

    root = Path(_tasks.__file__).resolve().parent.parent / "cfg" / "models"
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
    return int(_tasks.make_divisible(min(channels, max_channels) * width, 8))


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


# --------------------------------------------------------------------------- resolve / check


def resolve_yolo_arch(arch: Mapping[str, Any]) -> dict[str, Any]:
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
        raise ConfigError(f"unknown base {base!r}, allowed: {', '.join(YOLO_BASES)}" + _did_you_mean(base, YOLO_BASES))
    out: dict[str, Any] = {"preset": preset, "base": base}
    out["nc"] = _as_int("nc", raw["nc"], 1)
    size = _as_int("img_size", raw["img_size"], _MAX_STRIDE)
    if size % _MAX_STRIDE:
        raise ConfigError(f"img_size must be a multiple of {_MAX_STRIDE} (the largest stride of a YOLO model), "
                          f"got img_size={size}")
    out["img_size"] = size

    attention = raw["attention"]
    families = list_attention()
    if attention != "none" and attention not in families:
        valid = ["none", *families]
        raise ConfigError(f"unknown attention {attention!r}, allowed: {', '.join(valid)}"
                          + _did_you_mean(attention, valid))
    out["attention"] = attention
    placement = raw["placement"]
    allowed_placements = YOLO_PLACEMENTS + (("none",) if attention == "none" else ())
    if placement not in allowed_placements:
        extra = "" if attention == "none" or placement != "none" else " ('none' only with attention: none)"
        raise ConfigError(f"placement must be one of {', '.join(map(repr, YOLO_PLACEMENTS))}{extra}, "
                          f"got {placement!r}" + _did_you_mean(placement, YOLO_PLACEMENTS))
    places = raw["places"]
    if places is not None:
        places = _as_int("places", places, 0 if attention == "none" else 1)
    head_dim = raw["head_dim"]
    if head_dim is not None or attention != "none":
        head_dim = _as_int("head_dim", head_dim, 1)

    options = {k: v for k, v in raw.items() if k not in YOLO_ARCH_DEFAULTS}
    fields = [] if attention == "none" else _option_fields(attention)
    for key in options:
        if key not in fields:
            owners = [f for f in families if f != attention and key in _option_fields(f)]
            owned = f" ({key!r} is an option of attention {', '.join(map(repr, owners))})" if owners else ""
            allowed = sorted(set(YOLO_ARCH_DEFAULTS) | set(fields))
            raise ConfigError(f"unknown arch key {key!r} for attention {attention!r}{owned}; allowed: "
                              f"{', '.join(allowed)}" + _did_you_mean(key, allowed))
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


def check_yolo_arch(arch: Mapping[str, Any]) -> None:
    """Raise for a YOLO arch that cannot be built; cheap (no model is constructed).

    Checks the keys (:func:`resolve_yolo_arch`), that the placement exists in the base
    and has at least ``places`` sites, and, at every chosen site, the family's own
    ``check`` with the site's channels and heads on the map it sees at ``img_size`` and
    at 256 px (ultralytics runs every model once at 256x256 while building it).

    Raises:
        ConfigError: bad keys or values.
        Infeasible: a combination that cannot be built, with the reason, in one line.
    """
    r = resolve_yolo_arch(arch)
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


# --------------------------------------------------------------------------- model dict


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


def yolo_model_dict(arch: Mapping[str, Any]) -> dict[str, Any]:
    """The ultralytics model dict of a YOLO arch (what a model YAML holds).

    The base's dict with ``nc`` set, ``scale`` set and the arch's scale listed first in
    ``scales``, and the placement applied: ``AttnBlock_F`` rows inserted (``from``
    indices fixed up) or C2f/C3k2 rows renamed to ``C2f_F``/``C3k2_F`` with ``cfg``
    inserted after the channel count. Checks the arch first.

    Raises:
        ConfigError, Infeasible: as :func:`check_yolo_arch`.
    """
    check_yolo_arch(arch)
    r = resolve_yolo_arch(arch)
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


def build_yolo(arch: Mapping[str, Any], *, verbose: bool = False) -> nn.Module:
    """Check a YOLO arch and build its ``ultralytics`` ``DetectionModel``.

    Args:
        arch: a YOLO arch dict (module docstring); resolved here.
        verbose: print ultralytics' layer table.

    Returns:
        A ``DetectionModel`` in training mode; ``model.arch`` holds the resolved arch,
        ``model.yaml`` the model dict.

    Raises:
        ConfigError, Infeasible: as :func:`check_yolo_arch`.
    """
    r = resolve_yolo_arch(arch)
    d = yolo_model_dict(r)
    register_ultralytics()  # families registered since import
    model = _tasks.DetectionModel(d, ch=3, nc=r["nc"], verbose=verbose)
    model.arch = r
    return model


# --------------------------------------------------------------------------- YAML export


def _yaml_scalar(value: Any) -> str:
    """One scalar in a form PyYAML (YAML 1.1, ultralytics' loader) reads back as the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        if "e" in text:  # YAML 1.1 floats need a dot and a signed exponent: 1e-05 -> 1.0e-05
            mantissa, exp = text.split("e")
            mantissa = mantissa if "." in mantissa else mantissa + ".0"
            exp = exp if exp[0] in "+-" else "+" + exp
            text = f"{mantissa}e{exp}"
        return text
    if isinstance(value, str):
        return json.dumps(value)
    raise ConfigError(f"cannot write {value!r} ({type(value).__name__}) to a model YAML")


def _yaml_flow(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_yaml_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_flow(v) for v in value) + "]"
    return _yaml_scalar(value)


def _yaml_row(row: Sequence[Any]) -> str:
    f, n, m, args = row
    return f"  - [{_yaml_flow(f)}, {n}, {m}, {_yaml_flow(args)}]"


def yolo_yaml_text(arch: Mapping[str, Any]) -> str:
    """The model YAML of a YOLO arch, in ultralytics' own layout, with the arch as a comment."""
    r = resolve_yolo_arch(arch)
    d = yolo_model_dict(r)
    lines = [
        f"# ablate candidate: {r['base']} with attention {r['attention']!r}"
        + (f" ({r['placement']}, {r['places']} site(s))" if r["attention"] != "none" else ""),
        f"# arch: {json.dumps(r, sort_keys=False)}",
        "# Build: import ablate.models.yolo (it registers AttnBlock_*/C2f_*/C3k2_* with ultralytics), then",
        "#   from ultralytics import YOLO; YOLO(\"this file\")",
        "# ultralytics reads the scale from the file name (yolov8n-..., yolo11s-...); a name without one",
        f"# builds the first scale listed below, {d['scale']!r}, the candidate's.",
        "",
        f"nc: {d['nc']}",
        f"scale: {d['scale']}",
        "scales: # [depth, width, max_channels]",
        *(f"  {k}: {_yaml_flow(v)}" for k, v in d["scales"].items()),
    ]
    for key, value in d.items():
        if key not in ("nc", "scale", "scales", "backbone", "head"):
            lines.append(f"{key}: {_yaml_flow(value)}")
    lines += ["", "backbone:", *(_yaml_row(row) for row in d["backbone"]),
              "", "head:", *(_yaml_row(row) for row in d["head"]), ""]
    return "\n".join(lines)


def export_yolo_yaml(arch: Mapping[str, Any], path: str | Path) -> Path:
    """Write a YOLO arch as an ultralytics model YAML that ``YOLO(path)`` builds.

    The scale stays inside the file: its ``scales`` list the candidate's first, which
    ultralytics uses when the file name names no scale; a name that does
    (``yolov8s-x.yaml``) must name the candidate's, or this raises (ultralytics would
    build another model).

    Returns:
        The path written.

    Raises:
        ConfigError: a bad arch, or a file name that makes ultralytics pick another scale.
        Infeasible: an arch that cannot be built.
    """
    r = resolve_yolo_arch(arch)
    path = Path(path)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError(f"{path}: a model YAML must end in .yaml or .yml")
    scale = YOLO_BASES[r["base"]][1]
    guessed = _tasks.guess_model_scale(path)
    if guessed and guessed != scale:
        raise ConfigError(f"{path}: ultralytics reads scale {guessed!r} from this file name, but the candidate is "
                          f"{r['base']} (scale {scale!r}); name it e.g. {r['base']}-{r['attention']}.yaml")
    text = yolo_yaml_text(r)
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- FLOPs


def _norm_ops(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """``(multiply-adds, thop's normalisation count)`` of one forward pass at ``x``."""
    total = [0]

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        ops = 2 * inputs[0].numel()  # thop: (x - mean) / std
        if getattr(module, "affine", False) or getattr(module, "elementwise_affine", False):
            ops *= 2  # thop: * weight + bias
        total[0] += ops

    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, norms)]
    try:
        macs = count_flops(model, x)
    finally:
        for h in handles:
            h.remove()
    return macs, total[0]


def _input(model: nn.Module, size: int) -> torch.Tensor:
    p = next(model.parameters())
    return torch.zeros(1, 3, size, size, device=p.device, dtype=p.dtype)  # 1, 3, S, S


def ultralytics_gflops(model: nn.Module, imgsz: int = 640) -> float:
    """GFLOPs as ultralytics prints them (``YOLO("yolov8n.yaml").info()``: 8.9 for yolov8n).

    Ultralytics counts with thop on the model as built (BatchNorm not fused) and doubles
    thop's count. thop counts a multiply-add as one and each BatchNorm / LayerNorm /
    GroupNorm element as 2 (normalise), 4 with an affine — operations ablate's counter,
    following fvcore and the papers, does not count, and which vanish when ultralytics
    fuses BN into the convolutions for inference (``model.fuse()`` prints 8.7 for
    yolov8n, exactly 2 x ablate's multiply-adds). So the printed figure is::

        2 * (multiply-adds + thop's normalisation count) / 1e9

    computed here with :func:`ablate.measure.count_flops` (the project's one counter)
    and a hook per norm layer. For the stock models this equals
    ``ultralytics.utils.torch_utils.get_flops`` exactly; with attention it is higher,
    because thop counts a three-operand einsum (linear attention's ``q (k^T v)``
    normaliser) as zero and ours counts every attention FLOP.

    Args:
        model: a ``DetectionModel`` (or any module taking ``(1, 3, S, S)`` images).
        imgsz: square image side (ultralytics reports 640).
    """
    macs, norms = _norm_ops(model, _input(model, imgsz))
    return 2 * (macs + norms) / 1e9


def profile_yolo(arch: Mapping[str, Any], resolution: int | None = None) -> dict[str, float]:
    """Params, multiply-adds at ``resolution`` and ultralytics' GFLOPs at 640 of a YOLO arch.

    The model is built for ``img_size = resolution`` (the blocks' ``input_resolution``
    follows, as :func:`ablate.models.build` does for the ViT).

    Args:
        arch: a YOLO arch dict.
        resolution: image side (default: the arch's ``img_size``; presets: 640).

    Returns:
        ``{"params_m", "gflops" (multiply-adds / 1e9 at resolution), "gflops_ultralytics"
        (:func:`ultralytics_gflops` at 640)}``.
    """
    r = resolve_yolo_arch(arch)
    size = int(resolution or r["img_size"])
    model = build_yolo({**r, "img_size": size})
    macs_640, norms = _norm_ops(model, _input(model, 640))
    macs = macs_640 if size == 640 else count_flops(model, _input(model, size))
    return {"params_m": count_params(model) / 1e6, "gflops": macs / 1e9,
            "gflops_ultralytics": 2 * (macs_640 + norms) / 1e9}


if typing.TYPE_CHECKING:  # pragma: no cover - names created by register_ultralytics()
    AttnBlock_flatten: type[AttnBlock]
    C2f_flatten: type[C2fAttention]
    C3k2_flatten: type[C3k2Attention]
