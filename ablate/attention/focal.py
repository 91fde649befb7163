"""Focal self-attention: fine-grained local keys plus pooled, coarse-grained global keys.

Paper: Yang et al., "Focal Self-attention for Local-Global Interactions in Vision
Transformers", NeurIPS 2021. Official code: https://github.com/microsoft/Focal-Transformer
(``classification/focal_transformer.py``: ``WindowAttention`` and the attention half
of ``FocalTransformerBlock``; defaults from ``configs/focal_*_patch4_window7_224.yaml``).

Each query window of ``window_size`` (sp) tokens attends to

1. its own tokens (Swin's window-local relative position bias);
2. with ``expand_size`` e > 0, the fine-grained ring around the window, gathered as the
   official four rolled maps (rolls by ±e) minus the tokens inside the window, so there
   are ``4*sp^2 - 4*(sp-e)^2`` ring keys, some positions twice; rolls wrap around the
   (padded) map border exactly as ``torch.roll`` does in the official code; each ring
   key slot has its own free bias (``relative_position_bias_table_to_neighbors``);
3. for every level k = 0 .. focal_level-2 (with ``pool_method`` != "none"): the map cut
   into ``floor(sp / 2^k)``-sized sub-windows (trimmed centrally to fit), each pooled to
   one token ("fc": a learned linear over the sub-window shared by channels, official
   default; "conv": depthwise conv; "mean"; "max"); the window attends to the
   ``(focal_window + 2^k - 1)^2`` pooled tokens around it (the official ``nn.Unfold``
   region), with a relative position bias per level; pooled positions outside the map
   have zero key/value and get -100 added to their logits, as official.

The pooled tokens go through the full ``qkv`` projection (the query part is unused), as
in the official code and its FLOP formula. With ``shift_size`` > 0 the map is rolled
first and Swin's mask is added to the window-local keys only, as official
(``use_shift``, off in every released config). ``expand_layer`` and ``focal_stages`` are
the model builder's business: it passes ``expand_size=0`` / ``pool_method="none"``.

Deliberate deviations, each to honour the ``forward(x, hw)`` contract (any map size):

* The official block requires the map to equal ``input_resolution`` and builds the
  shift mask for it; here the shift mask is built for the padded run-time map (same
  result whenever the map is ``input_resolution``). The window/expand/shift clamp
  (map not larger than the window) still follows ``input_resolution`` only, as official;
  without it the configured window is used and small maps are padded up to it.
* Ring and pooled keys are gathered with index tensors instead of ``torch.roll`` and
  ``nn.Unfold``: same keys, same order, same biases, so official weights map 1:1
  (``attn.X`` -> ``X``, ``pool_layers.*`` -> ``pool_layers.*``).
* Index tables are non-persistent buffers; ``state_dict`` holds parameters only.
* ``expand_size`` > ``window_size`` and an even ``focal_window`` crash the official code
  (shape mismatches); here ``check`` reports them as Infeasible.
* Linear layers keep PyTorch's default init (the model builder applies the official
  truncated-normal init, which also overrides the "fc" pool's 1/sw^2 fill).
* Focal Transformer v2's top-k routing (``focal_topK``) is not part of this family.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ablate.attention._registry import MixerOptions, TokenMixer, register_attention
from ablate.attention.softmax import (
    MASK_VALUE,
    check_rate,
    attend,
    effective_window,
    pad_to_windows,
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)
from ablate.errors import Infeasible

__all__ = ["FocalAttention", "FocalOptions", "ring_offsets"]

PoolMethod = Literal["fc", "conv", "mean", "max", "none"]


def ring_offsets(window: int, expand: int) -> torch.Tensor:
    """Offsets of the official rolled ring keys relative to a window's top-left token.

    The official code rolls the key map by (-e,-e), (-e,+e), (+e,-e), (+e,+e) (top-left,
    top-right, bottom-left, bottom-right), cuts each rolled map into windows, and keeps
    the tokens whose source lies outside the window. Token ``(a, b)`` of a window in the
    map rolled by ``(sy, sx)`` comes from ``(a - sy, b - sx)``.

    Args:
        window: window side sp.
        expand: ring width e, ``1 <= e <= sp``.

    Returns:
        ``(R, 2)`` long tensor of (dy, dx), ``R = 4*sp^2 - 4*(sp-e)^2``, official order.
    """
    out = []
    for sy, sx in ((-expand, -expand), (-expand, expand), (expand, -expand), (expand, expand)):
        for a in range(window):
            for b in range(window):
                dy, dx = a - sy, b - sx
                if not (0 <= dy < window and 0 <= dx < window):
                    out.append((dy, dx))
    return torch.tensor(out, dtype=torch.long).view(-1, 2)


@dataclasses.dataclass(frozen=True)
class FocalOptions(MixerOptions):
    """Options of :class:`FocalAttention`; defaults are Focal-T stage 1 (official configs).

    Attributes:
        window_size: query window side sp (official ``WINDOW_SIZE``: 7).
        focal_level: number of levels including the finest (official ``FOCAL_LEVELS``: 2,
            i.e. window + ring keys and one pooled level).
        focal_window: pooled region side sr at level 0 (official ``FOCAL_WINDOWS``:
            7, 5, 3, 1 for stages 1-4).
        expand_size: width e of the fine-grained ring (official ``EXPAND_SIZES``: 3).
        pool_method: "fc" (official default), "conv", "mean", "max", or "none" (no pooled
            keys, the official setting for stages outside ``focal_stages``).
        shift_size: Swin cyclic shift (official ``use_shift`` is off: 0).
        qkv_bias: learnable bias in the qkv projection.
        qk_scale: logit scale; None means ``head_dim ** -0.5``.
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after the output projection.
    """

    window_size: int = 7
    focal_level: int = 2
    focal_window: int = 7
    expand_size: int = 3
    pool_method: PoolMethod = "fc"
    shift_size: int = 0
    qkv_bias: bool = True
    qk_scale: float | None = None
    attn_drop: float = 0.0
    proj_drop: float = 0.0


@register_attention("focal")
class FocalAttention(TokenMixer):
    """Focal self-attention (Focal Transformer), the token mixer of one block.

    ``forward`` uses ``scaled_dot_product_attention`` when ``fused`` is True (default);
    ``forward_reference`` computes the explicit softmax over the same gathered keys.

    Attributes:
        window: effective window side sp after the clamp to ``input_resolution``.
        shift: effective shift.
        expand: effective ring width e (0 when the map is not larger than the window).
        pool_windows: sub-window side ``floor(sp / 2^k)`` of each pooled level.
        region_sizes: pooled region side ``focal_window + 2^k - 1`` of each pooled level.
        fused: whether ``forward`` takes the SDPA path.
    """

    Options = FocalOptions
    opts: FocalOptions

    def __init__(self, dim: int, num_heads: int, *, input_resolution: tuple[int, int] | None = None,
                 **options: object) -> None:
        super().__init__(dim, num_heads, input_resolution=input_resolution, **options)
        o = self.opts
        self.fused = True
        self.head_dim = dim // num_heads
        self.scale = o.qk_scale or self.head_dim ** -0.5  # `or` as in the official code
        self.window, self.shift, self.expand = effective_window(
            o.window_size, input_resolution, o.shift_size, o.expand_size)
        ws = self.window
        n_pooled = o.focal_level - 1 if o.pool_method != "none" else 0
        self.pool_windows = [ws // 2 ** k for k in range(n_pooled)]
        self.region_sizes = [o.focal_window + 2 ** k - 1 for k in range(n_pooled)]
        self.attn_drop = o.attn_drop

        # Pooling layers (official FocalTransformerBlock.pool_layers).
        self.pool_layers = nn.ModuleList()
        for sw in self.pool_windows:
            if o.pool_method == "fc":
                fc = nn.Linear(sw * sw, 1)
                nn.init.constant_(fc.weight, 1.0 / (sw * sw))
                nn.init.zeros_(fc.bias)
                self.pool_layers.append(fc)
            elif o.pool_method == "conv":
                self.pool_layers.append(nn.Conv2d(dim, dim, kernel_size=sw, stride=sw, groups=dim))

        # Window-local relative position bias (official: zeros, not re-initialised).
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index",
                             relative_position_index((ws, ws), (ws, ws)), persistent=False)
        # Ring keys: one free bias per (head, query, ring slot).
        if self.expand > 0:
            offsets = ring_offsets(ws, self.expand)  # R, 2
            self.register_buffer("ring_offsets", offsets, persistent=False)
            self.relative_position_bias_table_to_neighbors = nn.Parameter(
                torch.zeros(1, num_heads, ws * ws, offsets.shape[0]))
            nn.init.trunc_normal_(self.relative_position_bias_table_to_neighbors, std=0.02)
        # Pooled keys: a relative position table per level.
        self.relative_position_bias_table_to_windows = nn.ParameterList()
        for k, size in enumerate(self.region_sizes):
            table = nn.Parameter(torch.zeros(num_heads, (ws + size - 1) ** 2))
            nn.init.trunc_normal_(table, std=0.02)
            self.relative_position_bias_table_to_windows.append(table)
            self.register_buffer(f"relative_position_index_{k}",
                                 relative_position_index((ws, ws), (size, size)), persistent=False)

        self.qkv = nn.Linear(dim, 3 * dim, bias=o.qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(o.proj_drop)

    @classmethod
    def check(cls, dim: int, num_heads: int, hw: tuple[int, int] | None, opts: FocalOptions) -> None:  # type: ignore[override]
        """Raise Infeasible for settings the official code cannot build or run."""
        super().check(dim, num_heads, hw, opts)
        if hw is not None and min(hw) < 1:
            raise Infeasible(f"the map must be at least 1x1, got {hw=}")
        for name in ("window_size", "focal_level", "focal_window"):
            if getattr(opts, name) < 1:
                raise Infeasible(f"{name} must be >= 1, got {name}={getattr(opts, name)}")
        if opts.expand_size < 0:
            raise Infeasible(f"expand_size must be >= 0, got expand_size={opts.expand_size}")
        if opts.shift_size < 0:
            raise Infeasible(f"shift_size must be >= 0, got shift_size={opts.shift_size}")
        check_rate("attn_drop", opts.attn_drop)
        check_rate("proj_drop", opts.proj_drop)
        if opts.qk_scale is not None and opts.qk_scale <= 0:
            raise Infeasible(f"qk_scale must be positive, got qk_scale={opts.qk_scale}")
        window, shift, expand = effective_window(opts.window_size, hw, opts.shift_size, opts.expand_size)
        at = f" for {hw=}" if hw is not None else ""
        if shift >= window:
            raise Infeasible(f"shift_size must be < window_size, got shift_size={shift} and window_size={window}{at}")
        if expand > window:
            raise Infeasible(f"expand_size must be <= window_size, got expand_size={expand} "
                             f"and window_size={window}{at}")
        if opts.focal_level > 1 and opts.pool_method != "none":
            if opts.focal_window % 2 == 0:
                raise Infeasible(f"focal_window must be odd to centre the pooled region on the window, "
                                 f"got focal_window={opts.focal_window}")
            coarsest = window // 2 ** (opts.focal_level - 2)
            if coarsest < 1:
                raise Infeasible(f"focal_level={opts.focal_level} pools sub-windows of window_size // "
                                 f"2**{opts.focal_level - 2} = 0 tokens with window_size={window}{at}")

    # ------------------------------------------------------------------ key sets

    def _pool(self, xm: torch.Tensor, level: int) -> torch.Tensor:
        """Pool the (padded, shifted) map into sub-window tokens of level ``level``.

        Args:
            xm: ``(B, Hp, Wp, C)`` map, ``Hp`` and ``Wp`` multiples of the window.
            level: pooled level k.

        Returns:
            ``(B, Ph, Pw, C)`` with ``Ph = Hp / sp * 2^k``.
        """
        b, hp, wp, c = xm.shape
        sw = self.pool_windows[level]
        ph, pw = hp // self.window * 2 ** level, wp // self.window * 2 ** level
        top, left = (hp - ph * sw) // 2, (wp - pw * sw) // 2  # official central trim
        xm = xm[:, top:top + ph * sw, left:left + pw * sw]  # B, Ph*sw, Pw*sw, C
        method = self.opts.pool_method
        if method == "conv":
            pooled = self.pool_layers[level](xm.permute(0, 3, 1, 2))  # B, C, Ph, Pw
            return pooled.permute(0, 2, 3, 1)  # B, Ph, Pw, C
        cells = xm.reshape(b, ph, sw, pw, sw, c)  # B, Ph, sw, Pw, sw, C
        if method == "mean":
            return cells.mean(dim=(2, 4))  # B, Ph, Pw, C
        if method == "max":
            return cells.amax(dim=(2, 4))  # B, Ph, Pw, C
        cells = cells.permute(0, 1, 3, 5, 2, 4).reshape(b, ph, pw, c, sw * sw)  # B, Ph, Pw, C, sw*sw
        return self.pool_layers[level](cells).squeeze(-1)  # B, Ph, Pw, C

    def _ring_index(self, hp: int, wp: int) -> torch.Tensor:
        """``(nW, R)`` flat indices into the padded map of each window's ring keys (wrapping)."""
        device = self.ring_offsets.device
        oy = torch.arange(0, hp, self.window, device=device)
        ox = torch.arange(0, wp, self.window, device=device)
        oy, ox = torch.meshgrid(oy, ox, indexing="ij")  # nWh, nWw
        y = (oy.reshape(-1, 1) + self.ring_offsets[:, 0]) % hp  # nW, R
        x = (ox.reshape(-1, 1) + self.ring_offsets[:, 1]) % wp  # nW, R
        return y * wp + x

    def _pooled_index(self, nwh: int, nww: int, level: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices of each window's pooled region at ``level`` and which of them are on the map.

        Window ``(i, j)`` takes pooled tokens ``(i*2^k - sr//2 + a, j*2^k - sr//2 + b)`` for
        ``a, b < sr + 2^k - 1`` (the official stride-2^k unfold minus its first
        ``2^k - 1`` rows/columns). Off-map positions point at one extra (zero) row.

        Returns:
            ``(nW, K*K)`` flat indices into ``Ph*Pw + 1`` rows, and a ``(nW, K*K)`` bool mask.
        """
        stride, size = 2 ** level, self.region_sizes[level]
        ph, pw = nwh * stride, nww * stride
        a = torch.arange(size, device=device)
        y = torch.arange(nwh, device=device)[:, None] * stride - self.opts.focal_window // 2 + a  # nWh, K
        x = torch.arange(nww, device=device)[:, None] * stride - self.opts.focal_window // 2 + a  # nWw, K
        y = y[:, None, :, None].expand(nwh, nww, size, size).reshape(nwh * nww, size * size)  # nW, K*K
        x = x[None, :, None, :].expand(nwh, nww, size, size).reshape(nwh * nww, size * size)  # nW, K*K
        valid = (y >= 0) & (y < ph) & (x >= 0) & (x < pw)
        return torch.where(valid, y * pw + x, ph * pw), valid

    def _pooled_on_map(self, nwh: int, nww: int, level: int) -> bool:
        """Whether every pooled key of every window at ``level`` lies on the map.

        The same bounds as :meth:`_pooled_index`'s mask, in integers: deciding it from the
        mask tensor would make the forward branch on data (a graph break under torch.compile).
        """
        stride, size = 2 ** level, self.region_sizes[level]
        first = -(self.opts.focal_window // 2)  # the smallest pooled row/column a window reads
        return first >= 0 and all(
            (n - 1) * stride + first + size - 1 < n * stride for n in (nwh, nww))

    def _bias(self, hp: int, wp: int, valids: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        """Additive logits bias ``(nW or 1, nH, L, S)`` in key order window, ring, levels."""
        ws, nh = self.window, self.num_heads
        L = ws * ws
        parts = [self.relative_position_bias_table[self.relative_position_index.flatten()]
                 .view(L, L, nh).permute(2, 0, 1)]  # nH, L, L
        if self.expand > 0:
            parts.append(self.relative_position_bias_table_to_neighbors[0])  # nH, L, R
        for k, table in enumerate(self.relative_position_bias_table_to_windows):
            parts.append(table[:, getattr(self, f"relative_position_index_{k}")])  # nH, L, K*K
        bias = torch.cat(parts, dim=-1).to(dtype)[None]  # 1, nH, L, S
        on_map = all(self._pooled_on_map(hp // ws, wp // ws, level) for level in range(len(valids)))
        if not self.shift and on_map:
            return bias
        nw = (hp // ws) * (wp // ws)
        extra = bias.new_zeros(nw, 1, L, bias.shape[-1])  # nW, 1, L, S
        if self.shift:
            extra[:, 0, :, :L] = shifted_window_mask((hp, wp), ws, self.shift).to(extra)
        offset = L + (self.ring_offsets.shape[0] if self.expand > 0 else 0)  # first pooled key
        for valid in valids:
            width = valid.shape[1]
            extra[:, 0, :, offset:offset + width] = torch.where(valid, 0.0, MASK_VALUE).to(extra)[:, None, :]
            offset += width
        return bias + extra  # nW, nH, L, S

    # ------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Focal attention over ``(B, N, C)`` tokens of an ``hw`` map; SDPA when ``self.fused``."""
        return self._forward(x, hw, fused=self.fused)

    def forward_reference(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Same as ``forward`` through the explicit ``softmax(q k^T * scale + bias) v``."""
        return self._forward(x, hw, fused=False)

    def _forward(self, x: torch.Tensor, hw: tuple[int, int], *, fused: bool) -> torch.Tensor:
        b, n, c = x.shape
        h, w = hw
        if n != h * w:
            raise ValueError(f"expected {h}*{w}={h * w} tokens for {hw=}, got {n}")
        ws, nh, hd = self.window, self.num_heads, self.head_dim
        xm = pad_to_windows(x.view(b, h, w, c), ws)  # B, Hp, Wp, C
        hp, wp = xm.shape[1:3]
        nwh, nww = hp // ws, wp // ws
        if self.shift:
            xm = torch.roll(xm, shifts=(-self.shift, -self.shift), dims=(1, 2))

        q, k, v = self.qkv(xm).chunk(3, dim=-1)  # each B, Hp, Wp, C
        queries = window_partition(q, ws)  # B, nW, L, C
        keys, values = [window_partition(k, ws)], [window_partition(v, ws)]  # B, nW, L, C
        if self.expand > 0:
            index = self._ring_index(hp, wp)  # nW, R
            keys.append(k.reshape(b, hp * wp, c)[:, index])  # B, nW, R, C
            values.append(v.reshape(b, hp * wp, c)[:, index])  # B, nW, R, C
        valids = []
        for level in range(len(self.pool_windows)):
            pooled = self._pool(xm, level)  # B, Ph, Pw, C
            kv = self.qkv(pooled)[..., c:].flatten(1, 2)  # B, Ph*Pw, 2C  (full qkv, as official)
            kv = F.pad(kv, (0, 0, 0, 1))  # B, Ph*Pw+1, 2C: a zero row for off-map positions
            index, valid = self._pooled_index(nwh, nww, level, x.device)  # nW, K*K
            kp, vp = kv[:, index].chunk(2, dim=-1)  # each B, nW, K*K, C
            keys.append(kp)
            values.append(vp)
            valids.append(valid)

        def heads(t: torch.Tensor) -> torch.Tensor:  # B, nW, T, C -> B, nW, nH, T, hd
            return t.view(b, t.shape[1], t.shape[2], nh, hd).transpose(2, 3)

        bias = self._bias(hp, wp, valids, queries.dtype)  # nW|1, nH, L, S
        out = attend(heads(queries), heads(torch.cat(keys, 2)), heads(torch.cat(values, 2)), bias,
                     scale=self.scale, dropout_p=self.attn_drop if self.training else 0.0,
                     fused=fused)  # B, nW, nH, L, hd
        out = out.transpose(2, 3).reshape(b, nwh * nww, ws * ws, c)  # B, nW, L, C
        out = self.proj_drop(self.proj(out))  # B, nW, L, C
        out = window_reverse(out, ws, (hp, wp))  # B, Hp, Wp, C
        if self.shift:
            out = torch.roll(out, shifts=(self.shift, self.shift), dims=(1, 2))
        return out[:, :h, :w].reshape(b, n, c)
