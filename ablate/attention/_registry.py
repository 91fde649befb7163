"""The token-mixer contract and the registry that names every attention family.

Every family subclasses :class:`TokenMixer`, declares its hyperparameters as a frozen
dataclass ``Options`` (defaults from its paper's official configuration) and registers
itself with ``@register_attention("name")``. Importing :mod:`ablate.attention` fills the
registry, so Ray workers that import the package see the same names as the driver.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from ablate.errors import ConfigError, Infeasible, unknown_name

__all__ = [
    "BlockContext",
    "MixerOptions",
    "TokenMixer",
    "Mixer2d",
    "register_attention",
    "get_attention",
    "list_attention",
    "parse_options",
    "create_mixer",
    "check_mixer",
]

_REGISTRY: dict[str, type["TokenMixer"]] = {}


@dataclasses.dataclass(frozen=True)
class MixerOptions:
    """Base of every family's typed options; subclasses add fields with official defaults."""


@dataclasses.dataclass(frozen=True)
class BlockContext:
    """Where a mixer sits in its model, for families whose layers differ by position.

    LaViT is the reason: its first ``va_layers`` blocks of a stage compute attention,
    the later ones transform it, and the first block of a stage downsamples the previous
    stage's attention (which needs that stage's head count and map). The builder passes
    one to every mixer; a mixer built alone gets ``None``.

    Attributes:
        stage: index of the stage (0-based).
        index: index of the block within its stage (0-based).
        depth: number of blocks in the stage.
        prev_num_heads: heads of the previous stage's mixers (None in the first stage).
        prev_resolution: map ``(H, W)`` of the previous stage (None in the first stage).
    """

    stage: int = 0
    index: int = 0
    depth: int = 1
    prev_num_heads: int | None = None
    prev_resolution: tuple[int, int] | None = None


class TokenMixer(nn.Module):
    """Maps tokens ``(B, N, C)`` of an ``H×W`` map (row-major) to ``(B, N, C)``.

    Subclasses set ``Options`` and implement ``forward(x, hw)``; ``check`` raises
    :class:`~ablate.errors.Infeasible` for combinations that cannot be built, so a
    search space can reject a candidate before any training.

    Two optional extensions of the contract, declared as class attributes:

    * ``prefix_tokens = True``: the family accepts ``N = P + H*W`` tokens, the ``P``
      prefix tokens (a class token) first; the map's tokens follow in row-major order.
      Families without it see exactly ``H*W`` tokens (the builder refuses a class token
      with them).
    * ``stateful = True``: ``forward(x, hw, state)`` also gets a dict that lives for one
      forward pass of the whole model and is shared by every block in every stage (the
      model creates it). Cross-layer data (LaViT's stored attention) travels there, and a
      family appends auxiliary losses, already weighted, to ``state["aux_losses"]``.
    """

    family: ClassVar[str] = ""
    Options: ClassVar[type[MixerOptions]] = MixerOptions
    prefix_tokens: ClassVar[bool] = False
    stateful: ClassVar[bool] = False

    def __init__(self, dim: int, num_heads: int, *, input_resolution: tuple[int, int] | None = None,
                 context: BlockContext | None = None, **options: Any) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.input_resolution = input_resolution
        self.context = context
        self.opts = parse_options(self.family or type(self).__name__, options, type(self).Options)
        type(self).check(dim, num_heads, input_resolution, self.opts)

    @classmethod
    def check(cls, dim: int, num_heads: int, hw: tuple[int, int] | None, opts: MixerOptions) -> None:
        """Raise Infeasible for settings that cannot be built; ``hw`` is None when unknown."""
        if num_heads < 1 or dim % num_heads:
            raise Infeasible(f"num_heads must divide dim, got {dim=} and {num_heads=}")

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def extra_repr(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self.opts, f.name)!r}" for f in dataclasses.fields(self.opts))
        return f"dim={self.dim}, num_heads={self.num_heads}" + (f", {fields}" if fields else "")


M = TypeVar("M", bound=type[TokenMixer])


def register_attention(name: str):
    """Class decorator: add a family to the registry under ``name`` (duplicates raise)."""

    def deco(cls: M) -> M:
        if name in _REGISTRY:
            raise ValueError(f"attention family {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        if not (isinstance(cls, type) and issubclass(cls, TokenMixer)):
            raise TypeError(f"{cls!r} must subclass TokenMixer")
        cls.family = name
        _REGISTRY[name] = cls
        return cls

    return deco


def list_attention() -> list[str]:
    """Names of every registered family, sorted."""
    return sorted(_REGISTRY)


def get_attention(name: str) -> type[TokenMixer]:
    """The family class for ``name``; an unknown name lists the valid ones with a "did you mean"."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(_unknown_message("attention", name, list_attention())) from None


def _unknown_message(what: str, name: object, valid: list[str]) -> str:
    return unknown_name(what, name, valid)


#: What any family option can hold: every official setting is a small window, kernel, count
#: or weight, and these bounds keep a typo (``window_size: 7000000``) from reaching a builder
#: that would try to allocate it. A family's ``check`` narrows them further.
OPTION_INT_MAX = 2 ** 16
OPTION_FLOAT_MAX = 1e6


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check a YAML-ish value against a dataclass field annotation; convert int → float."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        errors = []
        for arg in args:
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(name, value, arg)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"{name} must be {_describe(annotation)}, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, args))}, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(f"{name}[{i}]", v, inner) for i, v in enumerate(value))
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > OPTION_INT_MAX:
                raise ConfigError(f"{name} must be an integer in [-{OPTION_INT_MAX}, {OPTION_INT_MAX}], got {value!r}")
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value) or abs(value) > OPTION_FLOAT_MAX:
                raise ConfigError(f"{name} must be a finite number in [-{OPTION_FLOAT_MAX:g}, {OPTION_FLOAT_MAX:g}], "
                                  f"got {value!r}")
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(f"{name} must be {_describe(annotation)}, got {value!r}")


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(annotation)))
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def parse_options(family: str, options: dict[str, Any], options_cls: type[MixerOptions] | None = None) -> MixerOptions:
    """Validate a plain dict of options into the family's typed ``Options``.

    Unknown keys raise :class:`ConfigError` naming the allowed ones; values are type
    checked against the dataclass annotations, so YAML mistakes surface here.
    """
    cls = options_cls or get_attention(family).Options
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in options:
        if key not in fields:
            raise ConfigError(_unknown_message(f"option for attention {family!r}:", key, sorted(fields)))
    values = {k: _coerce(k, v, hints[k]) for k, v in options.items()}
    return cls(**values)


def create_mixer(name: str, dim: int, num_heads: int, *, input_resolution: tuple[int, int] | None = None,
                 context: BlockContext | None = None, **options: Any) -> TokenMixer:
    """Build a registered mixer by name."""
    return get_attention(name)(dim, num_heads, input_resolution=input_resolution, context=context, **options)


def check_mixer(name: str, dim: int, num_heads: int, hw: tuple[int, int] | None, **options: Any) -> None:
    """Raise ConfigError / Infeasible if this family cannot be built with these settings."""
    cls = get_attention(name)
    cls.check(dim, num_heads, hw, parse_options(name, options, cls.Options))


class Mixer2d(nn.Module):
    """Wraps a token mixer for ``(B, C, H, W)`` feature maps (YOLO necks and backbones).

    A stateful family gets a fresh state per call, so it behaves as a lone layer.
    """

    def __init__(self, mixer: TokenMixer) -> None:
        super().__init__()
        self.mixer = mixer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, H*W, C)
        if self.mixer.stateful:
            tokens = self.mixer(tokens, (h, w), {"aux_losses": []})
        else:
            tokens = self.mixer(tokens, (h, w))
        return tokens.transpose(1, 2).reshape(b, c, h, w)
