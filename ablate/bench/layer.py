"""The module the benchmark times: one token mixer as an image model, built at a feasible setting.

:mod:`ablate.measure` times and counts image models (``(B, C, H, W)`` in); a mixer maps
``(B, N, C)`` tokens plus ``hw``. :class:`BenchLayer` bridges the two and, for a stateful
family, runs the block before the measured one untimed. The option search for a grid the
family's defaults do not fit lives here too, since building and fitting go together.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ablate.attention import BlockContext, TokenMixer, create_mixer, get_attention, parse_options
from ablate.bench.config import VARIANTS, BenchConfig
from ablate.errors import ConfigError, Infeasible

__all__ = ["BenchLayer", "build_layer", "clamp_note", "feasible_options", "row_label"]

# Options the second-layer measurement of a stateful family sets when the family has them.
_STATEFUL_OPTIONS: dict[str, Any] = {"va_layers": 1}

# Options a family clamps itself to the map: (mixer attribute, option field).
_CLAMPED = (("window", "window_size"), ("shift", "shift_size"), ("expand", "expand_size"))


def feasible_options(family: str, dim: int, heads: int, hw: tuple[int, int],
                     options: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The family's options, or the nearest feasible ones at ``hw`` and a note saying so.

    "Nearest": one integer option moved by the smallest distance (smaller first, the
    options' declaration order breaks ties).

    Raises:
        Infeasible: no single integer option can be moved to make the family fit.
    """
    cls = get_attention(family)
    opts = parse_options(family, options, cls.Options)
    try:
        cls.check(dim, heads, hw, opts)
        return options, ""
    except Infeasible as err:
        reason = str(err)
    for distance in range(1, 1 + max([getattr(opts, f.name) for f in dataclasses.fields(opts)
                                      if type(getattr(opts, f.name)) is int] or [0])):
        for field in dataclasses.fields(opts):
            value = getattr(opts, field.name)
            if type(value) is not int:
                continue
            for candidate in (value - distance, value + distance):
                if candidate < 0 or candidate > 2 * value:
                    continue
                try:
                    cls.check(dim, heads, hw, dataclasses.replace(opts, **{field.name: candidate}))
                except (Infeasible, ConfigError):
                    continue
                return ({**options, field.name: candidate},
                        f"{field.name}={value}->{candidate} (default infeasible at {hw[0]}x{hw[1]}: {reason})")
    raise Infeasible(reason)


def clamp_note(mixer: TokenMixer) -> str:
    """What the family clamped to the map by itself (``window_size=7->4``), or "" when nothing."""
    notes = []
    for attr, field in _CLAMPED:
        asked = getattr(mixer.opts, field, None)
        used = getattr(mixer, attr, None)
        if isinstance(asked, int) and isinstance(used, int) and asked != used:
            notes.append(f"{field}={asked}->{used}")
    return f"{', '.join(notes)} (clamped to the map by the family)" if notes else ""


def _copy_state(obj: Any) -> Any:
    """A copy of a state's containers (dicts, lists, tuples); tensors are shared, not cloned."""
    if isinstance(obj, dict):
        return {k: _copy_state(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy_state(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_copy_state(v) for v in obj)
    return obj


class BenchLayer(nn.Module):
    """One mixer as an image model, so :mod:`ablate.measure` can time and count it.

    ``(B, C, r, r)`` input is viewed as ``(B, r*r, C)`` tokens. For a stateful family,
    ``first`` is the block before the measured one: :meth:`prepare` runs it once per mode
    and input shape, and every forward gets a fresh copy of the state it left.
    """

    def __init__(self, mixer: TokenMixer, hw: tuple[int, int], first: TokenMixer | None = None) -> None:
        super().__init__()
        self.mixer = mixer
        self.first = first
        self.hw = hw
        self.aux_losses: list[torch.Tensor] = []
        self._states: dict[tuple[Any, ...], dict[str, Any]] = {}

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        return x.view(b, self.hw[0] * self.hw[1], c)  # B, N, C (a view; random data)

    def _key(self, x: torch.Tensor) -> tuple[Any, ...]:
        return self.training, tuple(x.shape), x.device

    def prepare(self, x: torch.Tensor) -> None:
        """Run the first block (untimed, no gradients) for inputs shaped like ``x`` in this mode."""
        if self.first is None or self._key(x) in self._states:
            return
        state: dict[str, Any] = {"aux_losses": []}
        with torch.no_grad():
            self.first(self._tokens(x), self.hw, state)
        state["aux_losses"] = []  # the first block's losses are not the measured block's cost
        self._states[self._key(x)] = state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self._tokens(x)
        if self.first is None:
            return self.mixer(tokens, self.hw)
        try:
            state = _copy_state(self._states[self._key(x)])
        except KeyError:
            raise RuntimeError(f"prepare() was not called for {self._key(x)}") from None
        out = self.mixer(tokens, self.hw, state)
        self.aux_losses = state["aux_losses"]
        return out


def build_layer(family: str, options: dict[str, Any], cfg: BenchConfig, r: int) -> BenchLayer:
    """The timed module for ``family`` at an ``r×r`` grid, on ``cfg.device``, seeded for repeatability."""
    torch.manual_seed(0)
    if not get_attention(family).stateful:
        layer = BenchLayer(create_mixer(family, cfg.dim, cfg.heads, input_resolution=(r, r), **options), (r, r))
    else:
        first, second = (create_mixer(family, cfg.dim, cfg.heads, input_resolution=(r, r),
                                      context=BlockContext(stage=0, index=i, depth=2), **options)
                         for i in range(2))
        layer = BenchLayer(second, (r, r), first)
    return layer.to(cfg.device)


def row_label(name: str) -> tuple[str, str, dict[str, Any]]:
    """(row label, family, options) for a row name."""
    family, options = VARIANTS.get(name, (name, {}))
    if get_attention(family).stateful:
        fields = {f.name for f in dataclasses.fields(get_attention(family).Options)}
        extra = {k: v for k, v in _STATEFUL_OPTIONS.items() if k in fields}
        return (f"{name} (LA layer)" if "va_layers" in extra else f"{name} (second layer)"), family, \
            {**options, **extra}
    return name, family, options
