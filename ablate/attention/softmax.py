"""Multi-head softmax self-attention: global (ViT) or windowed with cyclic shift (Swin).

Paper: Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted
Windows", ICCV 2021. Official code: https://github.com/microsoft/Swin-Transformer
(``models/swin_transformer.py``: ``WindowAttention`` and the attention half of
``SwinTransformerBlock``). With ``window_size=None`` this is the global multi-head
self-attention of ViT (Dosovitskiy et al., ICLR 2021).

The mixer covers what the official block does between ``norm1`` and the residual:
window partition, cyclic shift with its attention mask, attention with the relative
position bias, window merge. With ``sr_ratio`` > 1 it is PVT's spatial-reduction attention (Wang et
al., "Pyramid Vision Transformer", ICCV 2021; https://github.com/whai362/PVT
``classification/pvt.py``: keys and values come from the map reduced by a
``Conv2d(dim, dim, sr, stride sr)`` and a LayerNorm, through separate ``q`` and ``kv``
linears). Global attention accepts prefix tokens (a class token, DeiT).

Deliberate deviations from the official code, each to honour the ``forward(x, hw)``
contract (any map size at run time):

* Maps not divisible by the window are zero-padded at the bottom/right and cropped
  afterwards, as in the official detection code (Swin-Transformer-Object-Detection);
  padded tokens are not masked there either. The shift mask is built for the padded
  map at run time instead of once at build time, which is identical whenever the
  map equals ``input_resolution`` and divides by the window.
* Global attention gets a relative position table over the whole ``input_resolution``
  map (Swin's table with the window replaced by the map). At a different run-time size
  the relative offsets are clipped to the table's range (Shaw et al., 2018), so larger
  maps still run; without ``input_resolution`` there is no table.
* Index tables are non-persistent buffers: ``state_dict`` holds parameters only, and
  an official checkpoint maps by dropping ``relative_position_index`` and ``attn_mask``.
* Prefix tokens with a relative position table get zero bias in their rows and
  columns (the map tokens keep Swin's table); the DeiT preset has no table.
* Linear layers keep PyTorch's default init; the model builder applies the paper's
  truncated-normal init to the whole network, as the official ``_init_weights`` does.

And one for speed: the fast path masks shifted pairs with ``FAST_MASK_VALUE`` (-1e4)
instead of -100, so their softmax weight is exactly 0 rather than a float32 subnormal
(about 1e-44, too small to change a float32 output; tests hold both paths to 1e-10 in
float64). ``forward_reference`` keeps the official -100. In CPU training the windowed
fast path is one autograd node (:mod:`ablate.attention._window_block`): the same terms,
fewer nodes, each intermediate dropped as soon as the backward has used it.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from ablate.attention._fast import (
    register_window_order,
    softmax_attention,
    tokens_to_windows,
    use_packed,
    window_order,
    window_order_of,
    window_partition,
    window_reverse,
    windows_heads_to_map,
    windows_to_tokens,
)
from ablate.attention._registry import MixerOptions, TokenMixer, register_attention
from ablate.attention._window_block import window_block
from ablate.errors import Infeasible

__all__ = [
    "FAST_MASK_VALUE",
    "MASK_VALUE",
    "SoftmaxAttention",
    "SoftmaxOptions",
    "attend",
    "check_rate",
    "effective_window",
    "pad_to_windows",
    "relative_position_index",
    "shifted_window_mask",
    "window_order",
    "window_partition",
    "window_reverse",
]

# Official Swin/Focal value for masked logits: large enough to vanish after softmax,
# finite so that rows with every key masked stay well defined.
MASK_VALUE = -100.0

# The fast windowed path's value for the shift mask. exp(-100 + logit) lands in float32's
# subnormal range (below 1.2e-38), where x86 arithmetic runs 20-100x slower: the official
# shifted block takes about 3x the time of its unshifted twin for that reason alone
# (measured: 10.7 vs 3.4 ms at 28x28, and 3.7 ms with subnormals flushed). At -1e4 the
# weight underflows to exactly 0 instead of ~1e-44, which a float32 sum of weights >= 1
# cannot hold anyway; every shifted row keeps its own token, so no row is all masked.
FAST_MASK_VALUE = -1.0e4


# --------------------------------------------------------------------------- helpers
# Shared with ``focal.py``; each is a pure function of its arguments (``window_partition`` and
# ``window_reverse`` live in ``_fast.py``, which the fast paths share, and are re-exported here).


def pad_to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """Zero-pad a ``(B, H, W, C)`` map at the bottom/right to multiples of ``window``.

    Zeros (not masked) follow the official Swin/Focal code, which pads after ``norm1``.
    """
    _, h, w, _ = x.shape
    pad_b, pad_r = (-h) % window, (-w) % window
    if pad_b or pad_r:
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))  # B, Hp, Wp, C
    return x


def relative_position_index(q_hw: tuple[int, int], k_hw: tuple[int, int],
                            table_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """Index into a relative-position table for every (query, key) pair.

    The table has ``(qh + kh - 1) * (qw + kw - 1)`` rows, one per relative offset
    ``query - key``, laid out as in Swin (row offset major). Focal's pooled-key tables
    use the same layout with a key grid that differs from the query grid.

    Args:
        q_hw: query grid size; queries are row-major.
        k_hw: key grid size; keys are row-major.
        table_hw: if given, the table was built for query = key grid ``table_hw`` and
            offsets beyond its range are clipped (global attention at a new size).

    Returns:
        ``(qh*qw, kh*kw)`` long tensor.
    """
    tq, tk = (table_hw, table_hw) if table_hw is not None else (q_hw, k_hw)
    qy, qx = torch.meshgrid(torch.arange(q_hw[0]), torch.arange(q_hw[1]), indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(k_hw[0]), torch.arange(k_hw[1]), indexing="ij")
    dy = qy.flatten()[:, None] - ky.flatten()[None, :]  # Lq, Lk
    dx = qx.flatten()[:, None] - kx.flatten()[None, :]  # Lq, Lk
    dy = dy.clamp(-(tk[0] - 1), tq[0] - 1) + tk[0] - 1
    dx = dx.clamp(-(tk[1] - 1), tq[1] - 1) + tk[1] - 1
    return dy * (tq[1] + tk[1] - 1) + dx


def shifted_window_mask(hw: tuple[int, int], window: int, shift: int, value: float = MASK_VALUE) -> torch.Tensor:
    """Swin's attention mask for cyclically shifted windows of a (padded) map.

    Tokens that were not neighbours before the shift get ``value`` (the official ``MASK_VALUE``
    unless the caller asks for :data:`FAST_MASK_VALUE`).

    Args:
        hw: map size, multiples of ``window``.
        window: window side.
        shift: cyclic shift, ``0 < shift < window``.
        value: the additive logit of a masked pair.

    Returns:
        ``(nW, window*window, window*window)`` additive mask of zeros and ``value``.
    """
    h, w = hw
    region = torch.zeros(1, h, w, 1)
    spans = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for hs in spans:
        for ws in spans:
            region[:, hs, ws, :] = label
            label += 1
    labels = window_partition(region, window)[0, :, :, 0]  # nW, L
    diff = labels[:, None, :] - labels[:, :, None]  # nW, L, L
    return torch.zeros_like(diff).masked_fill(diff != 0, value)


def effective_window(window: int, input_resolution: tuple[int, int] | None,
                     shift: int = 0, expand: int = 0) -> tuple[int, int, int]:
    """Window, shift and expand size after the official clamp to the map.

    Swin and Focal stop partitioning when the build-time map is not larger than the
    window: the window becomes the map's shorter side and shift/expand become 0. This
    changes the relative-position tables, hence parameter counts.

    Returns:
        ``(window, shift, expand)``.
    """
    if input_resolution is not None and min(input_resolution) <= window:
        return min(input_resolution), 0, 0
    return window, shift, expand


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, *,
           scale: float, dropout_p: float = 0.0, fused: bool = True) -> torch.Tensor:
    """``softmax(q k^T * scale + bias) v`` over the last two dims.

    Args:
        q: ``(..., L, E)`` queries.
        k: ``(..., S, E)`` keys.
        v: ``(..., S, E)`` values.
        bias: additive logits bias broadcastable to ``(..., L, S)``, or None.
        scale: logit scale (``head_dim ** -0.5`` unless overridden).
        dropout_p: attention dropout (pass 0 in eval mode).
        fused: use ``scaled_dot_product_attention``; otherwise the explicit reference.

    Returns:
        ``(..., L, E)``.
    """
    if fused:
        if bias is not None and bias.dim() != q.dim():
            # A contiguous mask with every leading dim (an expanded view, no copy) lets CPU
            # SDPA take its fused kernel; a broadcast (nH, L, S) one, or a permuted one, sends
            # it down the math path, ~5x slower at 56x56.
            bias = bias.contiguous().expand(*q.shape[:-2], *bias.shape[-2:])
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)
    logits = (q * scale) @ k.transpose(-2, -1)  # ..., L, S
    if bias is not None:
        logits = logits + bias
    weights = F.dropout(logits.softmax(dim=-1), p=dropout_p, training=dropout_p > 0)  # ..., L, S
    return weights @ v  # ..., L, E


def check_rate(name: str, value: float) -> None:
    """Raise Infeasible unless a dropout rate lies in ``[0, 1)``."""
    if not 0.0 <= value < 1.0:
        raise Infeasible(f"{name} must be in [0, 1), got {name}={value}")


# --------------------------------------------------------------------------- mixer


@dataclasses.dataclass(frozen=True)
class SoftmaxOptions(MixerOptions):
    """Options of :class:`SoftmaxAttention` (defaults: Swin's, except global attention).

    Attributes:
        window_size: side of the attention window; None means global attention.
        shift_size: Swin's cyclic shift (0 for W-MSA, ``window_size // 2`` for SW-MSA).
        qkv_bias: learnable bias in the qkv projection.
        qk_scale: logit scale; None means ``head_dim ** -0.5``.
        rel_pos_bias: add Swin's learned relative position bias.
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after the output projection.
        sr_ratio: PVT's spatial reduction of keys and values (1 = none; global only).
    """

    window_size: int | None = None
    shift_size: int = 0
    qkv_bias: bool = True
    qk_scale: float | None = None
    rel_pos_bias: bool = True
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    sr_ratio: int = 1


@register_attention("softmax")
class SoftmaxAttention(TokenMixer):
    """Global (ViT) or shifted-window (Swin) multi-head softmax self-attention.

    ``forward`` takes the fast path when ``fused`` is True (default): windows are cut by one
    token gather, and attention runs in the kernel that :func:`ablate.attention._fast.use_packed`
    picks by device and size (the packed-qkv kernel or ``scaled_dot_product_attention``);
    PVT's spatial reduction and attention dropout in training use SDPA through :func:`attend`.
    ``forward_reference`` always computes the explicit softmax with plain autograd, so tests
    can compare.

    Attributes:
        window: effective window side after the clamp to ``input_resolution`` (None: global).
        shift: effective cyclic shift.
        fused: whether ``forward`` takes the fast path.
    """

    Options = SoftmaxOptions
    opts: SoftmaxOptions
    prefix_tokens = True  # global attention only; windows refuse them at run time

    def __init__(self, dim: int, num_heads: int, *, input_resolution: tuple[int, int] | None = None,
                 **options: object) -> None:
        super().__init__(dim, num_heads, input_resolution=input_resolution, **options)
        o = self.opts
        self.fused = True
        self.head_dim = dim // num_heads
        self.scale = o.qk_scale or self.head_dim ** -0.5  # `or` as in the official code
        self.window: int | None = None
        self.shift = 0
        if o.window_size is not None:
            self.window, self.shift, _ = effective_window(o.window_size, input_resolution, o.shift_size)
        # The fast windowed path's token order and shift mask for the build-time map, as in the
        # official block (which builds its mask once); other sizes build theirs per call.
        self._order_hw = register_window_order(self, input_resolution, self.window, self.shift)
        if self._order_hw is not None and self.shift:
            self.register_buffer("shift_mask", shifted_window_mask(self._order_hw, self.window,  # type: ignore[arg-type]
                                                                   self.shift, FAST_MASK_VALUE), persistent=False)

        self.sr = o.sr_ratio
        if self.sr > 1:  # PVT: separate projections, keys and values from the reduced map
            self.q = nn.Linear(dim, dim, bias=o.qkv_bias)
            self.kv = nn.Linear(dim, 2 * dim, bias=o.qkv_bias)
            self.reduce = nn.Conv2d(dim, dim, self.sr, stride=self.sr)
            self.norm = nn.LayerNorm(dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=o.qkv_bias)
        self.attn_drop = o.attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(o.proj_drop)

        # Swin: a table over one window; global: a table over the build-time map.
        self.table_hw: tuple[int, int] | None = None
        if o.rel_pos_bias:
            if self.window is not None:
                self.table_hw = (self.window, self.window)
            elif input_resolution is not None:
                self.table_hw = tuple(input_resolution)  # type: ignore[assignment]
        if self.table_hw is not None:
            th, tw = self.table_hw
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * th - 1) * (2 * tw - 1), num_heads))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
            self.register_buffer("relative_position_index",
                                 relative_position_index(self.table_hw, self.table_hw), persistent=False)

    @classmethod
    def check(cls, dim: int, num_heads: int, hw: tuple[int, int] | None, opts: SoftmaxOptions) -> None:  # type: ignore[override]
        """Raise Infeasible for windows, shifts or dropout rates that cannot be built."""
        super().check(dim, num_heads, hw, opts)
        if hw is not None and min(hw) < 1:
            raise Infeasible(f"the map must be at least 1x1, got {hw=}")
        check_rate("attn_drop", opts.attn_drop)
        check_rate("proj_drop", opts.proj_drop)
        if opts.qk_scale is not None and opts.qk_scale <= 0:
            raise Infeasible(f"qk_scale must be positive, got qk_scale={opts.qk_scale}")
        if opts.shift_size < 0:
            raise Infeasible(f"shift_size must be >= 0, got shift_size={opts.shift_size}")
        if opts.sr_ratio < 1:
            raise Infeasible(f"sr_ratio must be >= 1, got sr_ratio={opts.sr_ratio}")
        if opts.sr_ratio > 1:
            if opts.window_size is not None:
                raise Infeasible(f"sr_ratio needs global attention, got sr_ratio={opts.sr_ratio} "
                                 f"with window_size={opts.window_size}")
            if opts.rel_pos_bias:
                raise Infeasible(f"rel_pos_bias needs sr_ratio=1 (keys are a reduced map), got "
                                 f"sr_ratio={opts.sr_ratio}; set rel_pos_bias: false")
            if hw is not None and opts.sr_ratio > min(hw):
                raise Infeasible(f"sr_ratio must be at most the map side, got sr_ratio={opts.sr_ratio} for {hw=}")
        if opts.window_size is None:
            if opts.shift_size:
                raise Infeasible(f"shift_size needs a window, got shift_size={opts.shift_size} with window_size=None")
            return
        if opts.window_size < 1:
            raise Infeasible(f"window_size must be >= 1, got window_size={opts.window_size}")
        window, shift, _ = effective_window(opts.window_size, hw, opts.shift_size)
        if shift >= window:
            raise Infeasible(f"shift_size must be < window_size, got shift_size={shift} and window_size={window}"
                             + (f" for {hw=}" if hw is not None else ""))

    def _bias(self, q_hw: tuple[int, int]) -> torch.Tensor | None:
        """Relative position bias ``(nH, L, L)`` for a query grid ``q_hw`` (keys = queries)."""
        if self.table_hw is None:
            return None
        if tuple(q_hw) == self.table_hw:
            index = self.relative_position_index
        else:  # global attention at a size other than input_resolution
            index = relative_position_index(q_hw, q_hw, self.table_hw).to(self.relative_position_bias_table.device)
        bias = self.relative_position_bias_table[index.flatten()]  # L*L, nH
        return bias.view(index.shape[0], index.shape[1], -1).permute(2, 0, 1)  # nH, L, L

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Attend over ``(B, N, C)`` tokens of an ``hw`` map; the fast path when ``self.fused``."""
        return self._forward(x, hw, fused=self.fused)

    def forward_reference(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Same as ``forward`` through the explicit ``softmax(q k^T * scale + bias) v``."""
        return self._forward(x, hw, fused=False)

    def _forward(self, x: torch.Tensor, hw: tuple[int, int], *, fused: bool) -> torch.Tensor:
        b, n, c = x.shape
        h, w = hw
        prefix = n - h * w
        if prefix < 0 or (prefix and (self.window is not None or self.sr > 1)):
            raise ValueError(f"expected {h}*{w}={h * w} tokens for {hw=}"
                             + (" (or a class token first, with global attention)" if self.window is None else "")
                             + f", got {n}")
        nh, hd = self.num_heads, self.head_dim
        drop = self.attn_drop if self.training else 0.0

        if self.window is None:  # global attention
            bias = self._bias((h, w))  # nH, HW, HW
            if bias is not None and prefix:  # prefix rows and columns get no bias
                bias = F.pad(bias, (prefix, 0, prefix, 0))  # nH, N, N
            if fused and not drop and self.sr == 1:
                out = softmax_attention(self.qkv(x), None if bias is None else bias.to(x.dtype), None,
                                        nh, self.scale)  # B, N, C
                return self.proj_drop(self.proj(out))
            if self.sr > 1:  # PVT's spatial reduction: keys/values from the reduced map
                q = self.q(x).view(b, n, nh, hd).transpose(1, 2)  # B, nH, N, hd
                fmap = self.reduce(x.transpose(1, 2).reshape(b, c, h, w))  # B, C, H/sr, W/sr
                kv = self.kv(self.norm(fmap.flatten(2).transpose(1, 2)))  # B, M, 2C
                kv = kv.view(b, -1, 2, nh, hd).permute(2, 0, 3, 1, 4)  # 2, B, nH, M, hd
                k, v = kv[0], kv[1]
            else:
                qkv = self.qkv(x).view(b, n, 3, nh, hd).permute(2, 0, 3, 1, 4)  # 3, B, nH, N, hd
                q, k, v = qkv[0], qkv[1], qkv[2]
            out = attend(q, k, v, None if bias is None else bias.to(q.dtype),
                         scale=self.scale, dropout_p=drop, fused=fused)  # B, nH, N, hd
            out = out.transpose(1, 2).reshape(b, n, c)  # B, N, C
            return self.proj_drop(self.proj(out))

        if fused and not drop:
            return self._forward_windows_fast(x, hw)
        ws, shift = self.window, self.shift
        xm = pad_to_windows(x.view(b, h, w, c), ws)  # B, Hp, Wp, C
        hp, wp = xm.shape[1:3]
        if shift:
            xm = torch.roll(xm, shifts=(-shift, -shift), dims=(1, 2))
        windows = window_partition(xm, ws)  # B, nW, L, C
        nw, L = windows.shape[1:3]
        qkv = self.qkv(windows).view(b, nw, L, 3, nh, hd).permute(3, 0, 1, 4, 2, 5)  # 3, B, nW, nH, L, hd
        bias = self._bias((ws, ws))  # nH, L, L
        if shift:
            mask = shifted_window_mask((hp, wp), ws, shift).to(x.device)[:, None]  # nW, 1, L, L
            bias = mask if bias is None else bias + mask  # nW, nH, L, L
        out = attend(qkv[0], qkv[1], qkv[2], None if bias is None else bias.to(qkv.dtype),
                     scale=self.scale, dropout_p=drop, fused=fused)  # B, nW, nH, L, hd
        out = out.transpose(2, 3).reshape(b, nw, L, c)  # B, nW, L, C
        out = self.proj_drop(self.proj(out))  # B, nW, L, C
        out = window_reverse(out, ws, (hp, wp))  # B, Hp, Wp, C
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        return out[:, :h, :w].reshape(b, n, c)

    def _window_mask(self, padded_hw: tuple[int, int]) -> torch.Tensor | None:
        """The shift mask ``(nW, 1, L, L)`` for a padded map, or None without a shift."""
        if not self.shift:
            return None
        if padded_hw == self._order_hw:
            mask = self.shift_mask
        else:
            mask = shifted_window_mask(padded_hw, self.window, self.shift,  # type: ignore[arg-type]
                                       FAST_MASK_VALUE).to(self.qkv.weight.device)
        return mask[:, None]  # nW, 1, L, L

    def _use_window_block(self, x: torch.Tensor, tokens: int) -> bool:
        """Whether the windowed fast path runs as one node (:mod:`ablate.attention._window_block`).

        Where the packed kernel is the measured choice (:func:`use_packed`: CPU training),
        without output dropout, autocast or ``torch.compile`` (which fuses the composed path
        itself), and with one dtype throughout.
        """
        table = getattr(self, "relative_position_bias_table", None)
        params = [self.qkv.weight, self.proj.weight] + ([] if table is None else [table])
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params))
        learned = needs_grad and table is not None and table.requires_grad
        return (needs_grad and use_packed(x.device, tokens, learned, needs_grad)
                and not (self.training and self.proj_drop.p > 0)
                and not torch.is_autocast_enabled(x.device.type) and not torch.compiler.is_compiling()
                and all(p.dtype == x.dtype for p in params))

    def _forward_windows_fast(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """The windowed path in one gather each way and one packed attention kernel.

        Same values as the reference path (tested): the shift and partition are a single
        token permutation, and :class:`ablate.attention._fast.PackedAttention` writes the
        gradient of q, k and v into one buffer.
        """
        b, n, c = x.shape
        h, w = hw
        ws = self.window
        assert ws is not None
        hp, wp = h + (-h) % ws, w + (-w) % ws
        if (hp, wp) != (h, w):
            x = pad_to_windows(x.view(b, h, w, c), ws).view(b, hp * wp, c)  # B, Hp*Wp, C
        if self._use_window_block(x, ws * ws):
            out = self._window_block(x, (hp, wp))  # B, Hp*Wp, C
        else:
            out = self._windows_composed(x, (hp, wp))  # B, Hp*Wp, C
        if (hp, wp) != (h, w):
            out = out.view(b, hp, wp, c)[:, :h, :w].reshape(b, n, c)
        return out

    def _window_block(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """``(B, H*W, C)`` -> same, ``hw`` multiples of the window, as one autograd node."""
        ws = self.window
        assert ws is not None
        order = window_order_of(self, self._order_hw, hw, ws, self.shift, x.device) if self.shift else None
        table = getattr(self, "relative_position_bias_table", None)
        index = None if table is None else self.relative_position_index.flatten()
        return window_block(x, self.qkv, self.proj, table, index, self._window_mask(hw), order, self.num_heads,
                            self.scale, ws, hw)

    def _windows_composed(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """``(B, H*W, C)`` -> same, ``hw`` multiples of the window, through autograd's nodes."""
        b, _, c = x.shape
        ws = self.window
        assert ws is not None
        L = ws * ws
        nw = hw[0] * hw[1] // L
        windows = tokens_to_windows(self, self._order_hw, x, hw, ws, self.shift)  # B, nW*L, C
        qkv = self.qkv(windows).view(b * nw, L, 3 * c)  # B*nW, L, 3C
        bias = self._bias((ws, ws))  # nH, L, L
        mask = self._window_mask(hw)  # nW, 1, L, L
        shift = self.shift
        out = softmax_attention(qkv, None if bias is None else bias.to(qkv.dtype),
                                None if mask is None else mask.to(qkv.dtype), self.num_heads, self.scale,
                                heads_first=not shift)
        if shift:  # B*nW, L, C; the shift's gather undoes the partition after proj
            out = self.proj_drop(self.proj(out)).view(b, nw * L, c)  # B, nW*L, C
            return windows_to_tokens(self, self._order_hw, out, hw, ws, shift)  # B, H*W, C
        # B*nW, nH, L, hd: heads joined and partition undone in one copy, then proj per token
        return self.proj_drop(self.proj(windows_heads_to_map(out, ws, hw)))  # B, H*W, C
