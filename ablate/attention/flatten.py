"""Focused linear attention (FLatten): ReLU kernel sharpened by a focusing power, plus a DWC.

Paper: Han et al., "FLatten Transformer: Vision Transformer using Focused Linear
Attention", ICCV 2023. Official code: https://github.com/LeapLabTHU/FLatten-Transformer
(``models/flatten_pvt.py`` and ``models/flatten_swin.py``: ``FocusedLinearAttention``, in
the May 2024 form that fixed its numerical instability; defaults from ``config.py``:
``LA.FOCUSING_FACTOR`` 3, ``LA.KERNEL_SIZE`` 5, ``QKV_BIAS`` True).

Per head, with ``phi(x) = f_p((ReLU(x) + 1e-6) / softplus(scale))`` and the focusing
function ``f_p(x) = ||x|| * x^p / ||x^p||`` (norms over all C channels, as official)::

    k   = kv(x)[:C] + positional_encoding
    out = phi(q) (phi(k)^T v / n) / (phi(q) . mean(phi(k)) + 1e-6) + DWC(v)

with ``n`` keys, in the cheap order ``q (k^T v)``. The depthwise convolution (rank
restoration) has ``head_dim`` channels and one kernel shared by all heads, as official.
Two layouts, as in the official models:

* global (``window_size=None``, FLatten-PVT): every token attends to every key; with
  ``sr_ratio`` > 1 the keys and values come from PVT's spatial reduction (strided conv +
  LayerNorm) and V is interpolated back to the query tokens, linearly over the flattened
  row-major sequence, before the DWC (official ``F.interpolate(..., mode='linear')``);
* windowed (FLatten-Swin ``attn_type`` 'L'): the same inside Swin windows, with Swin's
  clamp (a map not larger than the window is one window, no shift) and cyclic shift. The
  official block passes Swin's shift mask to ``FocusedLinearAttention``, which ignores
  it; so here too the shifted windows at the map border mix tokens across the
  wrap-around seam, and the DWC sees each rolled window with zero padding at its border.

``forward`` takes the cheap order; ``forward_reference`` builds each (window's) explicit
attention matrix ``A_ij = phi(q_i).phi(k_j) / (sum_j phi(q_i).phi(k_j) + n * 1e-6)``,
which is the same function as the official normaliser, epsilon included. The fast path
also swaps three pieces for cheaper equal ones (each tested against its plain form, values
and gradients): ``focus_fast`` (hand-written backward, see ``_FocusFunction``), the DWC run
once on all heads with the shared kernel tiled (``_dwc_fast``, channels-last, no per-head
copies), and the DWC added in the pass that merges the heads; ``1/n`` moves from k and v
onto the normaliser. ``forward_reference`` keeps the plain pieces.

Deliberate deviations, each to honour the ``forward(x, hw)`` contract or the builders:

* Separate ``q`` and ``kv`` linears in both layouts (official Swin variant: one
  ``qkv = Linear(C, 3C)``): same parameters, same function; a FLatten-Swin checkpoint
  maps by splitting ``qkv`` rows ``[:C]`` -> ``q`` and ``[C:]`` -> ``kv``.
* The positional encoding has one row per key of the build-time map
  (``input_resolution``): ``window^2`` rows with windows, ``(H//sr) * (W//sr)`` without.
  At another run-time size the global table is resized bilinearly over its 2-D layout;
  a global mixer built without ``input_resolution`` has no positional encoding.
* Windowed maps not divisible by the window are zero-padded at the bottom/right and
  cropped afterwards, as ``softmax.py`` does (padded keys are not masked); the official
  block requires divisible maps.
* Prefix tokens (global layout only, e.g. DeiT's class token, ``N = P + H*W``): the
  official repository has no DeiT code (its FLatten-DeiT-T script was shared off-repo,
  issue #12). Following the authors' DeiT versions of their later linear attentions
  (LeapLabTHU/Agent-Attention ``agent_deit.py``, LeapLabTHU/InLine ``inline_deit.py``),
  prefix tokens are queries, keys and values of the linear attention, while the DWC runs
  over the map tokens' values and is added to the map tokens' outputs only. The
  positional encoding covers the map keys only (the mixer does not know ``P`` when it is
  built; DeiT's own position embedding already covers the class token). With
  ``sr_ratio`` > 1, prefix tokens skip the reduction conv but share its LayerNorm.
* ``f_p`` divides each feature by its largest channel before the power: the same function
  (``x^p / ||x^p||`` is scale-free), but float32 ``x ** 32`` overflows in the official form
  (FLatten's Table 5 ablates p = 32; the official line diverged here at once).
* ``attn_drop`` and ``qk_scale`` are not options: the official module builds them and
  never uses them (there is no attention matrix to drop out in the cheap order).
* Linear layers keep PyTorch's default init; the model builder applies the official
  truncated-normal init. ``scale`` and ``positional_encoding`` start at zero, as official.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from ablate.attention._fast import depthwise_conv, register_window_order, tokens_to_windows, windows_to_tokens
from ablate.attention._registry import MixerOptions, TokenMixer, register_attention
from ablate.attention.softmax import check_rate, effective_window, pad_to_windows, window_partition, window_reverse
from ablate.errors import Infeasible

__all__ = ["FlattenAttention", "FlattenOptions", "focus", "focus_fast"]

EPS = 1e-6  # official: added after the ReLU kernel and to the normaliser
_TINY = 2.0 ** -60  # squares (~7.5e-37) stay normal in float32


def focus(x: torch.Tensor, scale: torch.Tensor, power: float) -> torch.Tensor:
    """The official focused kernel ``phi``: ReLU + 1e-6, divided by ``softplus(scale)``, then ``f_p``.

    ``f_p(x) = ||x|| * x^p / ||x^p||`` sharpens the direction of ``x`` towards its largest
    channels and keeps its norm; norms run over the last (all C channels) dim.

    Args:
        x: ``(..., C)`` queries or keys.
        scale: ``(1, 1, C)`` learnable temperature (before softplus).
        power: focusing factor ``p``.

    Returns:
        ``(..., C)`` positive features.
    """
    x = (F.relu(x) + EPS) / F.softplus(scale)  # ..., C
    norm = x.norm(dim=-1, keepdim=True)  # ..., 1
    # x^p / ||x^p|| does not change when x is scaled, so dividing by the largest entry first
    # is the same function; it keeps x^p in (0, 1], where float32 x^32 would overflow.
    x = (x / x.amax(dim=-1, keepdim=True)) ** power
    return x / x.norm(dim=-1, keepdim=True) * norm  # ..., C


class _FocusFunction(torch.autograd.Function):
    """:func:`focus` with a hand-written backward: the fast path's kernel.

    Autograd through :func:`focus` keeps about seven ``(..., C)`` intermediates alive per
    call and replays as many elementwise kernels backwards. With ``u = (ReLU(t) + eps) /
    softplus(s)`` and ``y = f_p(u)``, ``S = g . y`` and ``||y|| = ||u||``, the gradient is::

        du = p * (y / u) * (g - y * S / ||u||^2) + u * S / ||u||^2

    (the max-division and ``||u^p||`` drop out: ``f_p`` is scale-free in ``u^p``), then
    ``dt = du / softplus(s) * [t > 0]`` and ``ds = -sum(du * u) * sigmoid(s) / softplus(s)``.
    Only ``u``, ``y``, ``||u||`` and the ReLU mask are saved. The forward runs the
    operations of :func:`focus` in place, with ``||u|| / ||u^p||`` applied as one factor
    (equal to rounding) and entries below ``_TINY`` lifted inside ``||u^p||`` only, where
    they cannot change that norm's float value (its largest term is 1) while ``C < 1e28``.
    """

    @staticmethod
    def forward(ctx, t: torch.Tensor, scale: torch.Tensor, power: float) -> torch.Tensor:  # type: ignore[override]
        soft = F.softplus(scale)  # 1, 1, C
        u = F.relu(t).add_(EPS).div_(soft)  # ..., C
        norm = u.norm(dim=-1, keepdim=True)  # ..., 1
        y = (u / u.amax(dim=-1, keepdim=True)).pow_(power)  # ..., C, largest entry exactly 1
        # ||y|| >= 1, so entries below _TINY cannot move its float sum; lifting them inside the
        # norm only keeps their squares out of the subnormal range, which runs ~20x slower
        # on CPUs (ReLU'd channels sit at (eps/max)^p ~ 1e-19 for p = 3, squared 1e-38)
        y = y.mul_(norm / y.clamp_min(_TINY).norm(dim=-1, keepdim=True))  # ..., C
        ctx.power = power
        ctx.save_for_backward(t > 0, u, y, norm, scale, soft)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:  # type: ignore[override]
        mask, u, y, norm, scale, soft = ctx.saved_tensors
        p = ctx.power
        a = (g * y).sum(dim=-1, keepdim=True) / norm.square()  # ..., 1: S / ||u||^2
        # d = du / p = (y / u) (g - y a) + u a / p, in fused passes; p rides on the (1, 1, C) factors
        d = torch.addcmul(g, y, a, value=-1).mul_(y).div_(u).addcmul_(u, a / p)  # ..., C
        grad_t = grad_s = None
        if ctx.needs_input_grad[1]:
            dims = tuple(range(d.dim() - 1))
            grad_s = (d * u).sum(dim=dims).view_as(scale) * (-p * torch.sigmoid(scale) / soft)  # 1, 1, C
        if ctx.needs_input_grad[0]:
            grad_t = d.mul_(p / soft).mul_(mask)  # ..., C
        return grad_t, grad_s, None


class _LinearAttention(torch.autograd.Function):
    """The official normalised linear attention per head, plus a residual, with its own backward.

    ``out = residual + merge_heads( q (k^T v) / (q . mean(k) + eps) / n )`` for ``n`` keys.
    Autograd through :meth:`FlattenAttention._attend`'s reference formula replays a cat, a
    split, four elementwise kernels and the matmuls' strided copies; here q, k and v are
    copied heads-major once, the normaliser is one fused factor ``z = 1 / ((den + eps) n)``,
    and with ``o = num * z``, ``s = sum(g * o)`` over a head's channels::

        dnum = g z          dden = -s z n          dq = dnum kv^T + dden mean(k)
        dkv = q^T dnum      dk = v dkv^T + (dden^T q) / n      dv = k dkv

    (1.06-1.08x faster mixers than autograd's at 28x28 and 56x56, 2 threads).
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,  # type: ignore[override]
                residual: torch.Tensor | None, heads: int) -> torch.Tensor:
        b, n, c = q.shape
        nk, hd = k.shape[1], c // heads
        qh = q.reshape(b, n, heads, hd).transpose(1, 2).reshape(b * heads, n, hd)  # BH, n, hd (a copy)
        kh = k.reshape(b, nk, heads, hd).transpose(1, 2).reshape(b * heads, nk, hd)  # BH, nk, hd
        vh = v.reshape(b, nk, heads, hd).transpose(1, 2).reshape(b * heads, nk, hd)  # BH, nk, hd
        kv = torch.bmm(kh.transpose(1, 2), vh)  # BH, hd, hd
        km = kh.mean(dim=1, keepdim=True)  # BH, 1, hd
        z = torch.bmm(qh, km.transpose(1, 2)).add_(EPS).reciprocal_().div_(nk)  # BH, n, 1
        out = torch.bmm(qh, kv).mul_(z).view(b, heads, n, hd).transpose(1, 2)  # B, n, nH, hd (view)
        ctx.save_for_backward(qh, kh, vh, kv, km, z, out)
        ctx.heads, ctx.has_residual = heads, residual is not None
        if residual is None:
            return out.reshape(b, n, c)
        # residual first: the sum takes its (B, n, nH, hd) memory order, so the reshape is free
        return torch.add(residual.view(b, n, heads, hd), out).reshape(b, n, c)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        qh, kh, vh, kv, km, z, out = ctx.saved_tensors
        heads = ctx.heads
        bh, n, hd = qh.shape
        nk, b = kh.shape[1], bh // heads
        gh = g.new_empty(bh, n, hd)  # BH, n, hd: our own copy (written over below)
        gh.view(b, heads, n, hd).copy_(g.reshape(b, n, heads, hd).transpose(1, 2))
        oh = out.transpose(1, 2).reshape(bh, n, hd)  # BH, n, hd (a view: out is heads-major)
        g_den = (gh * oh).sum(dim=-1, keepdim=True).mul_(z).mul_(-nk)  # BH, n, 1
        g_num = gh.mul_(z)  # BH, n, hd (over the copy)
        # accumulated in place: baddbmm with an (expanded) input would first copy that input
        g_q = torch.bmm(g_num, kv.transpose(1, 2)).baddbmm_(g_den, km)  # BH, n, hd
        g_kv = torch.bmm(qh.transpose(1, 2), g_num)  # BH, hd, hd
        g_km = torch.bmm(g_den.transpose(1, 2), qh).div_(nk)  # BH, 1, hd
        g_k = torch.bmm(vh, g_kv.transpose(1, 2)).add_(g_km)  # BH, nk, hd
        g_v = torch.bmm(kh, g_kv)  # BH, nk, hd

        def tokens(t: torch.Tensor, m: int) -> torch.Tensor:  # BH, m, hd -> B, m, C
            return t.view(b, heads, m, hd).transpose(1, 2).reshape(b, m, heads * hd)

        return tokens(g_q, n), tokens(g_k, nk), tokens(g_v, nk), (g if ctx.has_residual else None), None


def focus_fast(x: torch.Tensor, scale: torch.Tensor, power: float) -> torch.Tensor:
    """:func:`focus` with a fused backward (same values, same gradients to rounding).

    Used by :meth:`FlattenAttention.forward`; ``forward_reference`` keeps :func:`focus`
    with plain autograd. It is first-order only (no double backward).
    """
    if x.dim() < 3 or x.dtype != scale.dtype or scale.dim() != 3 or scale.shape[:2] != (1, 1) or x.shape[-1] != scale.shape[-1]:
        return focus(x, scale, power)  # shapes whose broadcast the in-place forward does not cover
    return _FocusFunction.apply(x, scale, power)


@dataclasses.dataclass(frozen=True)
class FlattenOptions(MixerOptions):
    """Options of :class:`FlattenAttention`; defaults are the official ones (FLatten-PVT layout).

    Attributes:
        focusing_factor: power ``p`` of the focusing function (official 3). ``p = 1`` is
            plain ReLU linear attention (the paper's baseline); values below 1 would blunt
            the attention and are rejected.
        kernel_size: side of the depthwise rank-restoration conv (official 5); odd.
        window_size: Swin window side; None means global attention (FLatten-PVT/DeiT).
        shift_size: Swin cyclic shift (0, or ``window_size // 2`` on odd blocks).
        sr_ratio: PVT spatial reduction of the keys/values (global layout only; the
            official FLatten-PVT configs use 1 in every stage, ``PVT_LA_SR_RATIOS``).
        qkv_bias: learnable bias in the ``q`` and ``kv`` projections.
        pos_encoding: add the learnable positional encoding to the keys.
        focusing: the focused kernel (learned scale, then ``f_p``); False gives the
            paper's "vanilla linear attention" kernel ``ReLU(x) + 1e-6`` (Table 4, row 1).
        dwc: add the depthwise-conv rank restoration (Table 4 ablates it off).
        proj_drop: dropout after the output projection.
    """

    focusing_factor: float = 3.0
    kernel_size: int = 5
    window_size: int | None = None
    shift_size: int = 0
    sr_ratio: int = 1
    qkv_bias: bool = True
    pos_encoding: bool = True
    focusing: bool = True
    dwc: bool = True
    proj_drop: float = 0.0


@register_attention("flatten")
class FlattenAttention(TokenMixer):
    """Focused linear attention, global (PVT/DeiT) or in shifted windows (Swin).

    Attributes:
        window: effective window side after the clamp to ``input_resolution`` (None: global).
        shift: effective cyclic shift.
        head_dim: channels per head (and of the shared DWC).
        pos_hw: grid of the positional encoding's rows, or None without one.
    """

    Options = FlattenOptions
    opts: FlattenOptions
    prefix_tokens = True  # global layout only; windows reject them in forward

    def __init__(self, dim: int, num_heads: int, *, input_resolution: tuple[int, int] | None = None,
                 **options: object) -> None:
        super().__init__(dim, num_heads, input_resolution=input_resolution, **options)
        o = self.opts
        self.head_dim = dim // num_heads
        self.window: int | None = None
        self.shift = 0
        if o.window_size is not None:
            self.window, self.shift, _ = effective_window(o.window_size, input_resolution, o.shift_size)
        # The fast windowed path's token order (shift + partition as one gather) for the build-time map.
        self._order_hw = register_window_order(self, input_resolution, self.window, self.shift)

        self.q = nn.Linear(dim, dim, bias=o.qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=o.qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(o.proj_drop)
        self.sr_ratio = o.sr_ratio
        if o.sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=o.sr_ratio, stride=o.sr_ratio)
            self.norm = nn.LayerNorm(dim)
        self.dwc = nn.Conv2d(self.head_dim, self.head_dim, kernel_size=o.kernel_size, groups=self.head_dim,
                             padding=o.kernel_size // 2) if o.dwc else None
        self.scale = nn.Parameter(torch.zeros(1, 1, dim)) if o.focusing else None

        self.pos_hw: tuple[int, int] | None = None
        if o.pos_encoding:
            if self.window is not None:
                self.pos_hw = (self.window, self.window)
            elif input_resolution is not None:
                self.pos_hw = (input_resolution[0] // o.sr_ratio, input_resolution[1] // o.sr_ratio)
        if self.pos_hw is not None:
            self.positional_encoding = nn.Parameter(torch.zeros(1, self.pos_hw[0] * self.pos_hw[1], dim))

    @classmethod
    def check(cls, dim: int, num_heads: int, hw: tuple[int, int] | None, opts: FlattenOptions) -> None:  # type: ignore[override]
        """Raise Infeasible for settings the official module cannot build or run."""
        super().check(dim, num_heads, hw, opts)
        at = f" for {hw=}" if hw is not None else ""
        if hw is not None and min(hw) < 1:
            raise Infeasible(f"the map must be at least 1x1, got {hw=}")
        if not (math.isfinite(opts.focusing_factor) and opts.focusing_factor >= 1):
            raise Infeasible(f"focusing_factor must be >= 1, got focusing_factor={opts.focusing_factor}")
        if opts.kernel_size < 1 or opts.kernel_size % 2 == 0:
            raise Infeasible(f"kernel_size must be odd and >= 1 so the DWC keeps the map size, "
                             f"got kernel_size={opts.kernel_size}")
        if opts.sr_ratio < 1:
            raise Infeasible(f"sr_ratio must be >= 1, got sr_ratio={opts.sr_ratio}")
        if opts.shift_size < 0:
            raise Infeasible(f"shift_size must be >= 0, got shift_size={opts.shift_size}")
        check_rate("proj_drop", opts.proj_drop)
        if opts.window_size is None:
            if opts.shift_size:
                raise Infeasible(f"shift_size needs a window, got shift_size={opts.shift_size} with window_size=None")
            if hw is not None and opts.sr_ratio > min(hw):
                raise Infeasible(f"sr_ratio must not exceed the map, got sr_ratio={opts.sr_ratio}{at}")
            return
        if opts.window_size < 1:
            raise Infeasible(f"window_size must be >= 1, got window_size={opts.window_size}")
        if opts.sr_ratio > 1:
            raise Infeasible(f"sr_ratio needs global attention (window_size=None), got sr_ratio={opts.sr_ratio} "
                             f"with window_size={opts.window_size}")
        window, shift, _ = effective_window(opts.window_size, hw, opts.shift_size)
        if shift >= window:
            raise Infeasible(f"shift_size must be < window_size, got shift_size={shift} and window_size={window}{at}")

    # ------------------------------------------------------------------ pieces

    def _positions(self, grid: tuple[int, int]) -> torch.Tensor:
        """Positional encoding ``(1, gh*gw, C)`` for a key grid, resized bilinearly if needed."""
        table = self.positional_encoding
        if tuple(grid) == self.pos_hw:
            return table
        ph, pw = self.pos_hw  # type: ignore[misc]
        table = table.view(1, ph, pw, self.dim).permute(0, 3, 1, 2)  # 1, C, ph, pw
        table = F.interpolate(table, size=grid, mode="bilinear", align_corners=False)  # 1, C, gh, gw
        return table.flatten(2).transpose(1, 2)  # 1, gh*gw, C

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, reference: bool,
                residual: torch.Tensor | None = None) -> torch.Tensor:
        """Linear attention with the official normaliser, per head.

        Args:
            q: ``(B', Nq, C)`` focused queries.
            k: ``(B', Nk, C)`` focused keys.
            v: ``(B', Nk, C)`` values.
            reference: build the explicit ``(Nq, Nk)`` attention matrix instead of
                :class:`_LinearAttention`'s cheap order.
            residual: optional ``(B', Nq, C)`` term (the DWC), added where the heads merge.

        Returns:
            ``(B', Nq, C)``.
        """
        b, nq, c = q.shape
        nk = k.shape[1]
        nh, hd = self.num_heads, self.head_dim
        if not reference:
            # official: q ((k/sqrt n)^T (v/sqrt n)) / (q . mean(k) + eps); the 1/n moves onto
            # the normaliser instead of two scaled copies of k and v (same dot products)
            return _LinearAttention.apply(q, k, v, residual, nh)  # B', Nq, C
        q = q.view(b, nq, nh, hd).transpose(1, 2)  # B', nH, Nq, hd
        k = k.view(b, nk, nh, hd).transpose(1, 2)  # B', nH, Nk, hd
        v = v.view(b, nk, nh, hd).transpose(1, 2)  # B', nH, Nk, hd
        attn = q @ k.transpose(-2, -1)  # B', nH, Nq, Nk
        attn = attn / (attn.sum(dim=-1, keepdim=True) + nk * EPS)
        out = attn @ v  # B', nH, Nq, hd
        if residual is not None:
            out = out + residual.view(b, nq, nh, hd).transpose(1, 2)  # B', nH, Nq, hd
        return out.transpose(1, 2).reshape(b, nq, c)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``q(x)`` and ``kv(x)`` as one ``(C, 3C)`` GEMM (fast path): the same rows, one pass."""
        weight = torch.cat([self.q.weight, self.kv.weight])  # 3C, C
        bias = torch.cat([self.q.bias, self.kv.bias]) if self.q.bias is not None else None  # 3C
        q, k, v = F.linear(x, weight, bias).chunk(3, dim=-1)  # each ..., C
        return q, k, v

    def _kernel(self, x: torch.Tensor, *, reference: bool) -> torch.Tensor:
        """The feature map of queries and keys: focused, or plain ReLU (``focusing=False``)."""
        if self.scale is None:
            return F.relu(x) + EPS  # ..., C
        if reference:
            return focus(x, self.scale, self.opts.focusing_factor)
        return focus_fast(x, self.scale, self.opts.focusing_factor)

    def _dwc(self, v: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The shared depthwise conv over each head's values: ``(B', gh*gw, C)`` -> same (zeros without one)."""
        if self.dwc is None:
            return torch.zeros_like(v)
        b, n, c = v.shape
        nh, hd = self.num_heads, self.head_dim
        fmap = v.reshape(b, grid[0], grid[1], nh, hd).permute(0, 3, 4, 1, 2)  # B', nH, hd, gh, gw
        fmap = fmap.reshape(b * nh, hd, grid[0], grid[1])  # B'*nH, hd, gh, gw
        out = self.dwc(fmap).reshape(b, nh * hd, n)  # B', C, gh*gw  (channel = head * hd + d)
        return out.transpose(1, 2)  # B', gh*gw, C

    def _dwc_fast(self, v: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor | None:
        """Fast :meth:`_dwc` (None without one): the same conv, run on all heads at once.

        The shared ``hd``-channel kernel, tiled ``nH`` times, is a ``C``-channel depthwise
        kernel whose channel ``head * hd + d`` is kernel ``d``; the same products, summed in
        the same order. It reads the ``(B', gh*gw, C)`` tokens as a channels-last map and
        writes one, so no per-head copy goes in and none comes out.
        """
        if self.dwc is None:
            return None
        b, n, c = v.shape
        nh = self.num_heads
        weight = self.dwc.weight.repeat(nh, 1, 1, 1)  # C, 1, k, k
        bias = self.dwc.bias.repeat(nh) if self.dwc.bias is not None else None  # C
        fmap = v.contiguous().view(b, grid[0], grid[1], c).permute(0, 3, 1, 2)  # B', C, gh, gw (channels-last view)
        out = depthwise_conv(fmap, weight, bias)  # B', C, gh, gw
        return out.permute(0, 2, 3, 1).reshape(b, n, c)  # B', gh*gw, C

    # ------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Focused linear attention over ``(B, N, C)`` tokens of an ``hw`` map (cheap order)."""
        return self._forward(x, hw, reference=False)

    def forward_reference(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Same as ``forward`` through each (window's) explicit attention matrix."""
        return self._forward(x, hw, reference=True)

    def _forward(self, x: torch.Tensor, hw: tuple[int, int], *, reference: bool) -> torch.Tensor:
        n = x.shape[1]
        h, w = hw
        if self.window is None:
            if n < h * w:
                raise ValueError(f"expected at least {h}*{w}={h * w} tokens for {hw=}, got {n}")
            return self._global(x, hw, reference=reference)
        if n > h * w:
            raise Infeasible(f"windowed flatten attention takes no prefix tokens: expected {h}*{w}={h * w} tokens "
                             f"for {hw=}, got {n}; use window_size=None")
        if n != h * w:
            raise ValueError(f"expected {h}*{w}={h * w} tokens for {hw=}, got {n}")
        return self._windowed(x, hw, self.window, reference=reference)

    def _global(self, x: torch.Tensor, hw: tuple[int, int], *, reference: bool) -> torch.Tensor:
        b, n, c = x.shape
        h, w = hw
        p = n - h * w  # prefix tokens, first
        sr = self.sr_ratio
        if sr == 1 and not reference:  # one GEMM, as the official Swin variant's qkv
            grid = (h, w)
            q, k, v = self._qkv(x)  # each B, N, C
        elif sr > 1:
            q = self.q(x)  # B, N, C
            if min(hw) < sr:
                raise Infeasible(f"sr_ratio must not exceed the map, got sr_ratio={sr} for {hw=}")
            fmap = x[:, p:].transpose(1, 2).reshape(b, c, h, w)  # B, C, H, W
            reduced = self.sr(fmap)  # B, C, H//sr, W//sr
            grid = (reduced.shape[2], reduced.shape[3])
            kv_in = self.norm(torch.cat([x[:, :p], reduced.flatten(2).transpose(1, 2)], dim=1))  # B, P+n', C
            k, v = self.kv(kv_in).chunk(2, dim=-1)  # each B, P+n', C
        else:
            grid, q = (h, w), self.q(x)  # B, N, C
            k, v = self.kv(x).chunk(2, dim=-1)  # each B, N, C
        if self.pos_hw is not None:
            if p:
                k = torch.cat([k[:, :p], k[:, p:] + self._positions(grid)], dim=1)  # B, P+n', C
            else:
                k = k + self._positions(grid)  # B, n', C
        q, k = self._kernel(q, reference=reference), self._kernel(k, reference=reference)

        v_map = v[:, p:]  # B, n', C
        if sr > 1:  # official: linear interpolation over the flattened row-major sequence
            v_map = F.interpolate(v_map.transpose(1, 2), size=h * w, mode="linear").transpose(1, 2)  # B, H*W, C
        if reference or p:
            out = self._attend(q, k, v, reference=reference)  # B, N, C
            out = torch.cat([out[:, :p], out[:, p:] + self._dwc(v_map, (h, w))], dim=1)  # B, N, C
        else:
            out = self._attend(q, k, v, reference=False, residual=self._dwc_fast(v_map, (h, w)))  # B, N, C
        return self.proj_drop(self.proj(out))

    def _windowed(self, x: torch.Tensor, hw: tuple[int, int], ws: int, *, reference: bool) -> torch.Tensor:
        if not reference:
            return self._windowed_fast(x, hw, ws)
        b, n, c = x.shape
        h, w = hw
        shift = self.shift
        xm = pad_to_windows(x.view(b, h, w, c), ws)  # B, Hp, Wp, C
        hp, wp = xm.shape[1:3]
        if shift:
            xm = torch.roll(xm, shifts=(-shift, -shift), dims=(1, 2))  # no mask: official ignores it
        windows = window_partition(xm, ws)  # B, nW, L, C
        nw, L = windows.shape[1:3]
        windows = windows.reshape(b * nw, L, c)  # B*nW, L, C
        q = self.q(windows)  # B*nW, L, C
        k, v = self.kv(windows).chunk(2, dim=-1)  # each B*nW, L, C
        if self.pos_hw is not None:
            k = k + self.positional_encoding  # table of one window: 1, L, C
        q, k = self._kernel(q, reference=True), self._kernel(k, reference=True)
        out = self._attend(q, k, v, reference=True) + self._dwc(v, (ws, ws))  # B*nW, L, C
        out = self.proj_drop(self.proj(out)).view(b, nw, L, c)  # B, nW, L, C
        out = window_reverse(out, ws, (hp, wp))  # B, Hp, Wp, C
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        return out[:, :h, :w].reshape(b, n, c)

    def _windowed_fast(self, x: torch.Tensor, hw: tuple[int, int], ws: int) -> torch.Tensor:
        """The windowed path with the shift and partition as one token gather each way."""
        b, n, c = x.shape
        h, w = hw
        hp, wp = h + (-h) % ws, w + (-w) % ws
        if (hp, wp) != (h, w):
            x = pad_to_windows(x.view(b, h, w, c), ws).view(b, hp * wp, c)  # B, Hp*Wp, C
        L = ws * ws
        nw = hp * wp // L
        windows = tokens_to_windows(self, self._order_hw, x, (hp, wp), ws, self.shift).view(b * nw, L, c)  # no mask
        q, k, v = self._qkv(windows)  # each B*nW, L, C
        if self.pos_hw is not None:
            k = k + self.positional_encoding  # table of one window: 1, L, C
        q, k = self._kernel(q, reference=False), self._kernel(k, reference=False)
        out = self._attend(q, k, v, reference=False, residual=self._dwc_fast(v, (ws, ws)))  # B*nW, L, C
        out = self.proj_drop(self.proj(out)).view(b, nw * L, c)  # B, nW*L, C
        out = windows_to_tokens(self, self._order_hw, out, (hp, wp), ws, self.shift)  # B, Hp*Wp, C
        if (hp, wp) != (h, w):
            out = out.view(b, hp, wp, c)[:, :h, :w].reshape(b, n, c)
        return out
