"""The attention layers ultralytics' model YAML can name: ``AttnBlock_F``, ``C2f_F`` and
``C3k2_F`` for every registered family ``F`` (see :mod:`ablate.models.yolo`).

How ultralytics is taught the channel counts (the one trick here): ``parse_model`` treats
a module it does not know as channel-preserving and passes its args as they are. That is
right for ``AttnBlock_F`` but wrong for ``C2f_F`` (Concat in, ``c2`` out), and neither
would be width-scaled. So each of our classes compares equal, *while ``parse_model``
runs*, to the stock module it extends (``C2PSA`` for ``AttnBlock_F``, ``C2f``, ``C3k2``):
``m in base_modules`` then holds, and ultralytics does for our rows exactly what it does
for the stock ones. :func:`register_ultralytics` wraps ``tasks.parse_model`` so that a
context variable says when it runs; no frame is inspected. Everywhere else the classes
compare as usual (only the hash equals the stock class's). If a future ultralytics
changes ``parse_model``, ``tests/models/test_yolo.py`` fails first.
"""

from __future__ import annotations

import contextvars
import functools
import sys
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ablate.attention import Mixer2d, create_mixer, list_attention
from ablate.errors import ConfigError
from ablate.models.vit import init_weights
from ablate.models.yolo.upstream import C2PSA, Bottleneck, C2f, C3k, C3k2, tasks

__all__ = ["LayerNorm2d", "AttnResidual", "AttnBlock", "C2fAttention", "C3k2Attention", "attention_heads",
           "register_ultralytics", "KINDS", "PACKAGE"]

#: Where the per-family classes live (checkpoints pickle them as ``ablate.models.yolo.C2f_F``).
PACKAGE = "ablate.models.yolo"
#: True while ultralytics' ``parse_model`` runs in this context (set by its wrapper).
_PARSING: contextvars.ContextVar[bool] = contextvars.ContextVar("ablate_yolo_parsing", default=False)


class _ParsedLike(type):
    """Metaclass: while ultralytics' ``parse_model`` runs, the class equals one stock module.

    ``parse_model`` decides how to wire a layer with ``m in base_modules`` (and
    ``m in repeat_modules``), sets of stock classes. A class whose ``_parsed_like`` is,
    say, ``C2f`` hashes like ``C2f`` and compares equal to it while ``parse_model`` runs,
    so that it is wired as a C2f: input channels from the graph, output channels scaled,
    repeats passed as ``n``. Anywhere else it compares by identity, as every class does.
    """

    def __eq__(cls, other: object) -> bool:
        if cls is other:
            return True
        like = cls.__dict__.get("_parsed_like")
        if like is not None and other is like and _PARSING.get():
            return True
        return NotImplemented  # type: ignore[return-value]

    def __hash__(cls) -> int:
        like = cls.__dict__.get("_parsed_like")
        return hash(like) if like is not None else type.__hash__(cls)


def _parsing(parse_model: Callable[..., Any]) -> Callable[..., Any]:
    """``parse_model`` that marks its run, so that :class:`_ParsedLike` knows when to match."""
    if getattr(parse_model, "_ablate_marks_parsing", False):
        return parse_model

    @functools.wraps(parse_model)
    def marked(*args: Any, **kwargs: Any) -> Any:
        token = _PARSING.set(True)
        try:
            return parse_model(*args, **kwargs)
        finally:
            _PARSING.reset(token)

    marked._ablate_marks_parsing = True  # type: ignore[attr-defined]
    return marked


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
KINDS: dict[str, tuple[type, type]] = {
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
    module = sys.modules[PACKAGE]
    tasks.parse_model = _parsing(tasks.parse_model)
    for family in list_attention():
        for prefix, (base, like) in KINDS.items():
            name = f"{prefix}_{family}"
            cls = module.__dict__.get(name)
            if cls is None:
                cls = _ParsedLike(name, (base,), {
                    "family": family, "_parsed_like": like, "__module__": PACKAGE, "__qualname__": name,
                    "__doc__": f"{base.__name__} with attention {family!r} (see ablate.models.yolo)."})
                setattr(module, name, cls)
            setattr(tasks, name, cls)
            names.append(name)
    return sorted(names)
