"""Fast paths shared by the softmax mixers: a packed-qkv attention kernel and token permutations.

Why these exist (measured on CPU, float32, against the official Swin ``WindowAttention``):

* Autograd through ``qkv[0], qkv[1], qkv[2]`` allocates a zero tensor of the whole qkv size
  for each of the three selects in the backward pass and adds them up; on small windows
  that zero-filling cost about as much as the two attention matmuls. :class:`PackedAttention`
  copies q, k and v heads-major once and writes the three gradients over that copy as q, k
  and v are used up.
* ``scaled_dot_product_attention`` cannot differentiate a learned additive mask with its
  fused CPU kernel, so with Swin's relative position bias it takes the math path plus mask
  checks, slower than an explicit matmul-softmax-matmul.
* Swin's cyclic shift and window partition are three copies each way (two for ``roll``, one
  for the partition); both are one permutation of the tokens, so :class:`TokenPermutation`
  does one gather forward and one gather backward.

Each kernel has a plain autograd reference in ``softmax.py`` (``forward_reference``), and
tests compare values and gradients.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["additive_term", "depthwise_conv", "DepthwiseConv", "FOLD_MAX_CHANNELS", "FOLD_MAX_ELEMENTS",
           "fold_weight_grad", "gather_rows", "join_heads", "packed_attention", "packed_backward", "packed_forward",
           "PackedAttention", "permute_tokens", "register_window_order", "sdpa_attention", "softmax_attention",
           "TokenPermutation", "tokens_to_windows", "use_packed", "window_order", "window_order_of",
           "window_partition", "window_reverse", "windows_heads_to_map", "windows_to_tokens"]

# The backward pass works on at most _CHUNKS slices of the windows, each with at least
# _CHUNK_MIN_ELEMENTS logits (4 MiB in float32), so only large batches are sliced: slicing
# halves the L x L temporaries of the softmax backward. Smaller slices lost time: at
# 256 KiB a step took 1.02-1.03x the unsliced time at Swin's 28x28 and 56x56 maps (paired
# A/B, 2 threads, 2026-12-04), and more slices meant hundreds of small matmuls per block,
# each waiting for every thread (a Swin-T step fell to 0.4x timm's speed on a loaded machine).
_CHUNKS = 2
_CHUNK_MIN_ELEMENTS = 1 << 20


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """Cut a map into non-overlapping windows, keeping windows and tokens row-major.

    Args:
        x: ``(B, H, W, C)`` map with ``H`` and ``W`` multiples of ``window``.
        window: side of the square window.

    Returns:
        ``(B, nW, window*window, C)`` with ``nW = (H/window)*(W/window)``.
    """
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)  # B, nWh, ws, nWw, ws, C
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, (h // window) * (w // window), window * window, c)


def window_reverse(windows: torch.Tensor, window: int, hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B, nW, window*window, C)`` -> ``(B, H, W, C)``."""
    h, w = hw
    b, _, _, c = windows.shape
    x = windows.view(b, h // window, w // window, window, window, c)  # B, nWh, nWw, ws, ws, C
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


class PackedAttention(torch.autograd.Function):
    """``softmax(q k^T * scale + bias + mask) v`` for heads-major q, k, v.

    Inputs:
        qkvh: ``(3, G, nH, L, hd)`` q, k and v: a view of the qkv projection's ``(G, L, 3C)``
            output (:func:`packed_attention` makes it), laid out ``(3, heads, head_dim)`` per
            token as in the official code.
        bias: ``(heads, L, L)`` learned additive bias (Swin's relative positions), or None.
        mask: ``(R, 1, L, L)`` constant additive mask with ``G`` a multiple of ``R`` (windows
            repeat with period ``R`` along ``G = B * R``), or None; it gets no gradient.
        heads: number of heads.
        scale: logit scale.

    Returns:
        ``(G, nH, L, hd)`` the heads' outputs, heads first (:func:`packed_attention` joins
        them per token; a windowed caller can join them and undo the partition in one copy).

    Work: q, k and v are copied heads-major once (the three matmuls would each copy their
    strided operand, forward and backward); the logit scale rides in the GEMMs' ``alpha``.
    Memory: the backward pass writes dv, dq and dk over v, q and k as each is used up, so
    the gradient is that copy itself, returned in its own layout; autograd lays it out as
    qkv after this node has let go of the attention matrix. The price: that graph can be
    backpropagated once (a second backward with ``retain_graph=True`` stops with PyTorch's
    "modified by an inplace operation" error); ``forward_reference`` has no such limit.
    """

    @staticmethod
    def forward(ctx: Any, qkvh: torch.Tensor, bias: torch.Tensor | None,  # type: ignore[override]
                mask: torch.Tensor | None, heads: int, scale: float) -> torch.Tensor:
        qkvh = qkvh.contiguous()  # 3, G, nH, L, hd: the one copy
        attn, out = packed_forward(qkvh, additive_term(bias, mask), heads, scale)
        ctx.save_for_backward(qkvh, attn)
        ctx.heads, ctx.scale = heads, scale
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        qkvh, attn = ctx.saved_tensors
        grad_bias = packed_backward(qkvh, attn, grad_out, ctx.heads, ctx.scale, bias_grad=ctx.needs_input_grad[1])
        return qkvh, grad_bias, None, None, None


def packed_forward(qkvh: torch.Tensor, add: torch.Tensor | None, heads: int,
                   scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention of :class:`PackedAttention` without autograd: ``(attn, out)``.

    Args:
        qkvh: contiguous ``(3, G, nH, L, hd)`` q, k and v.
        add: the logits' additive term ``(R, nH|1, L, L)`` (:func:`additive_term`), or None.
        heads: number of heads.
        scale: logit scale.

    Returns:
        ``attn`` ``(G*nH, L, L)`` (kept for :func:`packed_backward`) and ``out`` ``(G, nH, L, hd)``.
    """
    _, g, _, n, hd = qkvh.shape
    q, k, v = (t.view(g * heads, n, hd) for t in qkvh)  # each G*nH, L, hd (views)
    attn = torch.empty(g * heads, n, n, dtype=qkvh.dtype, device=qkvh.device)
    attn.baddbmm_(q, k.transpose(-2, -1), beta=0, alpha=scale)  # G*nH, L, L: q k^T * scale
    if add is not None:
        r = add.shape[0]
        attn.view(g // r, r, -1, n, n).add_(add)  # in place; repeats over B
    attn = torch.softmax(attn, dim=-1)  # G*nH, L, L
    out = torch.bmm(attn, v).view(g, heads, n, hd)  # G, nH, L, hd
    return attn, out


def packed_backward(qkvh: torch.Tensor, attn: torch.Tensor, grad_out: torch.Tensor, heads: int, scale: float, *,
                    bias_grad: bool) -> torch.Tensor | None:
    """Backward of :func:`packed_forward`: writes dq, dk and dv over ``qkvh``; returns the bias gradient.

    Args:
        qkvh: the forward's ``(3, G, nH, L, hd)``; holds the gradients of q, k and v on return.
        attn: the forward's ``(G*nH, L, L)`` attention.
        grad_out: ``(G, nH, L, hd)`` gradient of ``out``, any strides.
        heads: number of heads.
        scale: logit scale.
        bias_grad: whether to sum the logits' gradient over windows, ``(nH, L, L)``.
    """
    _, g, _, n, hd = qkvh.shape
    q, k, v = qkvh  # each G, nH, L, hd (contiguous views); overwritten by their gradients
    attn = attn.view(g, heads, n, n)
    grad_bias = attn.new_zeros(heads, n, n) if bias_grad else None  # nH, L, L
    # Chunks of windows: each chunk's L x L temporaries stay small (and in cache), and a
    # chunk's q, k, v are overwritten by their gradients as soon as they are used up.
    step = max(-(-g // _CHUNKS), -(-_CHUNK_MIN_ELEMENTS // (heads * n * n)))  # windows per slice
    for lo in range(0, g, step):
        hi = min(lo + step, g)
        m = (hi - lo) * heads
        a = attn[lo:hi].reshape(m, n, n)  # m, L, L (view)
        go = grad_out[lo:hi].reshape(m, n, hd)  # m, L, hd (a copy only when grad_out is strided)
        qs, ks, vs = (t[lo:hi].view(m, n, hd) for t in (q, k, v))  # views into qkvh
        gl = torch.bmm(go, vs.transpose(-2, -1))  # m, L, L: d attn (v's last use)
        vs.baddbmm_(a.transpose(-2, -1), go, beta=0)  # dv = attn^T dout, over v
        # softmax backward in place: dlogits = attn*dattn - attn*sum(attn*dattn)
        gl.mul_(a)
        gl.addcmul_(a, gl.sum(dim=-1, keepdim=True), value=-1.0)
        if grad_bias is not None:
            grad_bias += gl.view(hi - lo, heads, n, n).sum(dim=0)
        dk = torch.bmm(gl.transpose(-2, -1), qs)  # dk / scale (q's last use)
        qs.baddbmm_(gl, ks, beta=0, alpha=scale)  # dq = dlogits k * scale, over q (k's last use)
        torch.mul(dk, scale, out=ks)  # dk over k
    return grad_bias


def additive_term(bias: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor | None:
    """The logits' additive term ``(R, nH|1, L, L)``: a ``(nH, L, L)`` bias plus a ``(R, 1, L, L)`` mask."""
    if bias is None:
        return mask
    return bias[None] if mask is None else bias + mask


def packed_attention(qkv: torch.Tensor, bias: torch.Tensor | None, mask: torch.Tensor | None,
                     heads: int, scale: float, *, heads_first: bool = False) -> torch.Tensor:
    """Apply :class:`PackedAttention` (see there) to ``(G, L, 3C)`` qkv; returns ``(G, L, C)``.

    ``heads_first`` returns ``(G, nH, L, hd)`` instead, for a caller that rearranges anyway.
    ``qkv`` itself is never written.
    """
    g, n, c3 = qkv.shape
    qkvh = qkv.view(g, n, 3, heads, c3 // (3 * heads)).permute(2, 0, 3, 1, 4)  # 3, G, nH, L, hd (view)
    out = PackedAttention.apply(qkvh, bias, mask, heads, scale)  # G, nH, L, hd
    return out if heads_first else join_heads(out)


def join_heads(out: torch.Tensor) -> torch.Tensor:
    """``(G, nH, L, hd)`` -> ``(G, L, nH*hd)``, the heads concatenated per token."""
    g, nh, n, hd = out.shape
    return out.transpose(1, 2).reshape(g, n, nh * hd)


def windows_heads_to_map(out: torch.Tensor, window: int, hw: tuple[int, int]) -> torch.Tensor:
    """``(B*nW, nH, L, hd)`` per-window head outputs -> ``(B, H*W, nH*hd)`` map tokens, one copy.

    Joining the heads and undoing the window partition are both permutations of the same
    elements, so one strided copy does what the official code does in two (and its
    backward is one copy too). ``hw`` must be multiples of ``window``.
    """
    g, nh, _, hd = out.shape
    h, w = hw
    nwh, nww = h // window, w // window
    b = g // (nwh * nww)
    out = out.view(b, nwh, nww, nh, window, window, hd)  # B, nWh, nWw, nH, ws, ws, hd
    return out.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, h * w, nh * hd)  # B, H*W, C


# Longest sequence the packed kernel takes without a learned bias on the CPU.
# ``benchmarks/softmax_vs_timm.py`` part 2 (2 cores, float32, fwd+bwd with a dense output
# gradient, packed / SDPA, 2026-12-03): up to 64 tokens the packed kernel is as fast or a
# little faster (0.83-1.05) at the same or a larger peak (1.00-1.20x); from 144 tokens on
# SDPA's flash kernel is faster (packed 1.2-1.9x) and keeps O(L) memory (packed 1.8-4.6x).
PACKED_MAX_TOKENS = 64


def use_packed(device: torch.device, tokens: int, learned_bias: bool, needs_grad: bool = True) -> bool:
    """Whether :class:`PackedAttention` or ``scaled_dot_product_attention`` computes attention.

    Measured (``benchmarks/softmax_vs_timm.py``, part 2), not assumed:

    * CPU, training, a learned bias (Swin's relative positions) at any length: SDPA's fused
      CPU kernel cannot differentiate a mask, so it runs its math path; the packed kernel
      took 0.65-0.95x its time from 16 to 785 tokens (0.65x at Swin's 49).
    * CPU, training, no learned bias: packed up to :data:`PACKED_MAX_TOKENS` tokens (as fast
      or a little faster), SDPA's flash kernel beyond.
    * CPU without gradients (evaluation): SDPA at every size; in the Swin mixer its fused
      forward took 0.78-0.93x the packed kernel's time (28x28 to 56x56 maps, batch 8).
    * CUDA and other devices: SDPA, whose fused kernels differentiate a mask; no GPU was at
      hand to measure the packed kernel there, so the library's kernels keep the job.
    """
    if device.type != "cpu" or not needs_grad:
        return False
    return learned_bias or tokens <= PACKED_MAX_TOKENS


def softmax_attention(qkv: torch.Tensor, bias: torch.Tensor | None, mask: torch.Tensor | None, heads: int,
                      scale: float, *, heads_first: bool = False) -> torch.Tensor:
    """``(G, L, 3C)`` packed qkv -> ``(G, L, C)``, by the kernel :func:`use_packed` picks.

    Same arguments as :func:`packed_attention`; both kernels compute the same values
    (tested at the boundary of the choice).
    """
    n = qkv.shape[1]
    needs_grad = torch.is_grad_enabled() and (qkv.requires_grad or (bias is not None and bias.requires_grad))
    learned = needs_grad and bias is not None and bias.requires_grad
    if use_packed(qkv.device, n, learned, needs_grad):
        return packed_attention(qkv, bias, mask, heads, scale, heads_first=heads_first)
    return sdpa_attention(qkv, bias, mask, heads, scale, heads_first=heads_first)


def sdpa_attention(qkv: torch.Tensor, bias: torch.Tensor | None, mask: torch.Tensor | None, heads: int,
                   scale: float, *, heads_first: bool = False) -> torch.Tensor:
    """:func:`packed_attention`'s function through ``scaled_dot_product_attention``."""
    g, n, c3 = qkv.shape
    c = c3 // 3
    q, k, v = qkv.view(g, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)  # each G, nH, L, hd
    add = additive_term(bias, mask)  # R, nH|1, L, L
    if add is not None:
        r = add.shape[0]
        # A contiguous mask with every leading dim lets CPU SDPA take its fused kernel; a
        # broadcast one sends it down the math path (about 5x slower at 56x56).
        add = add.reshape(1, r, -1, n, n).expand(g // r, r, heads, n, n).reshape(g, heads, n, n)
        if not torch.is_grad_enabled():
            # A mask that requires grad sends CPU SDPA down its math path even under no_grad
            # (measured 3.4 vs 1.1 ms at 128 windows of 49 tokens).
            add = add.detach()
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=add, scale=scale)  # G, nH, L, hd
    return out if heads_first else join_heads(out)


class TokenPermutation(torch.autograd.Function):
    """``x[:, index]`` along the token dim, with the inverse gather as its backward.

    ``index`` must be a permutation of ``range(N)`` and ``inverse`` its inverse; autograd's
    own ``index_select`` backward scatters into zeros, which costs a fill and an atomic add.
    Rows are gathered from the flattened ``(B*N, C)`` tensor, the fastest gather on the CPU
    (0.6-0.7x the time of ``index_select`` along dim 1, measured at 56x56).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, index: torch.Tensor,  # type: ignore[override]
                inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return gather_rows(x, index)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        (inverse,) = ctx.saved_tensors
        return gather_rows(grad, inverse), None, None


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[:, index]`` for ``(B, N, C)`` ``x`` as one row gather over ``B*N`` rows."""
    b, n, c = x.shape
    rows = (index[None, :] + torch.arange(0, b * n, n, device=index.device)[:, None]).flatten()  # B*N
    return x.reshape(b * n, c).index_select(0, rows).view(b, n, c)


def permute_tokens(x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """``(B, N, C)`` -> ``(B, N, C)`` with token ``i`` of the output = token ``index[i]`` of ``x``."""
    return TokenPermutation.apply(x, index, inverse)


def window_order(hw: tuple[int, int], window: int, shift: int,
                 device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The token permutation of a cyclic shift by ``-shift`` followed by window partition.

    Args:
        hw: map size, multiples of ``window``.
        window: window side.
        shift: cyclic shift (0 for none).
        device: where the index tensors live.

    Returns:
        ``(index, inverse)``, each ``(H*W,)`` long: window-major token ``i`` (windows
        row-major, tokens row-major inside) is map token ``index[i]``; ``inverse[index[i]] == i``.
    """
    h, w = hw
    tokens = torch.arange(h * w, device=device).view(h, w)  # H, W
    if shift:
        tokens = torch.roll(tokens, shifts=(-shift, -shift), dims=(0, 1))  # H, W
    index = window_partition(tokens.view(1, h, w, 1), window).flatten()  # H*W
    inverse = torch.empty_like(index)
    inverse[index] = torch.arange(index.numel(), device=device)
    return index, inverse


def register_window_order(module: nn.Module, input_resolution: tuple[int, int] | None, window: int | None,
                          shift: int) -> tuple[int, int] | None:
    """Keep the build-time map's window order on ``module`` (non-persistent buffers).

    The official blocks build their shift mask once for ``input_resolution``; the order is
    the same kind of table. Returns the padded build-time map, or None when there is none
    (no shift needs no order: the partition is a strided copy).
    """
    if window is None or input_resolution is None or not shift:
        return None
    padded = (input_resolution[0] + (-input_resolution[0]) % window,
              input_resolution[1] + (-input_resolution[1]) % window)
    index, inverse = window_order(padded, window, shift)
    module.register_buffer("window_index", index, persistent=False)
    module.register_buffer("window_inverse", inverse, persistent=False)
    return padded


def window_order_of(module: nn.Module, built_hw: tuple[int, int] | None, padded_hw: tuple[int, int], window: int,
                    shift: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The order kept by :func:`register_window_order` for ``built_hw``, else a fresh one."""
    if padded_hw == built_hw:
        return module.window_index, module.window_inverse  # type: ignore[return-value]
    return window_order(padded_hw, window, shift, device)


def tokens_to_windows(module: nn.Module, built_hw: tuple[int, int] | None, x: torch.Tensor, hw: tuple[int, int],
                      window: int, shift: int) -> torch.Tensor:
    """``(B, H*W, C)`` map tokens -> ``(B, nW*L, C)`` window-major, after a cyclic shift by ``-shift``.

    Without a shift this is the partition as one strided copy (none at all for a single
    window); with one, the shift and the partition are one row gather (:class:`TokenPermutation`)
    instead of the official three copies. ``hw`` must be multiples of ``window``.
    """
    if not shift:
        b, _, c = x.shape
        return window_partition(x.view(b, hw[0], hw[1], c), window).view(b, -1, c)  # B, nW*L, C
    index, inverse = window_order_of(module, built_hw, hw, window, shift, x.device)
    return permute_tokens(x, index, inverse)


def windows_to_tokens(module: nn.Module, built_hw: tuple[int, int] | None, y: torch.Tensor, hw: tuple[int, int],
                      window: int, shift: int) -> torch.Tensor:
    """The inverse of :func:`tokens_to_windows`: ``(B, nW*L, C)`` -> ``(B, H*W, C)``, shift undone."""
    if not shift:
        b, _, c = y.shape
        return window_reverse(y.view(b, -1, window * window, c), window, hw).view(b, -1, c)  # B, H*W, C
    index, inverse = window_order_of(module, built_hw, hw, window, shift, y.device)
    return permute_tokens(y, inverse, index)


class DepthwiseConv(torch.autograd.Function):
    """A stride-1, same-padded depthwise conv whose backward is two cheap convolutions.

    On CPU, autograd's depthwise ``convolution_backward`` took 1.5 ms for a 5x5 kernel over
    a 2x64x28x28 map whose forward takes 0.09 ms (1 thread). The input gradient is the
    same depthwise conv with the kernel flipped (0.09 ms). The weight gradient is, for a
    few maps, a depthwise conv of the padded input with the output gradient as the kernel,
    batch folded into channels (0.39 ms, channels-last); for many maps (Swin's windows:
    B*C folded channels of 7x7) that conv falls off (1.2-1.7x autograd's whole backward
    at 128-512 windows), and ``torch.nn.grad.conv2d_weight`` takes over
    (:func:`fold_weight_grad` says which, by measurement).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=x.shape[1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        b, c, h, w = x.shape
        k = weight.shape[-1]
        pad = k // 2
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(g, weight.flip(-1, -2), padding=pad, groups=c)  # B, C, H, W
        if ctx.needs_input_grad[1] and not fold_weight_grad(b, c, h, w):
            grad_w = torch.nn.grad.conv2d_weight(x, weight.shape, g, padding=pad, groups=c)  # C, 1, k, k
        elif ctx.needs_input_grad[1]:
            # dW[c, i, j] = sum_{b,y,x} g[b, c, y, x] * xpad[b, c, y+i, x+j]: a "valid" depthwise conv
            # of xpad by g over B*C channels, laid out channels-last (H, W, B*C)
            xp = F.pad(x.permute(2, 3, 0, 1), (0, 0, 0, 0, pad, pad, pad, pad))  # Hp, Wp, B, C
            inp = xp.reshape(1, h + 2 * pad, w + 2 * pad, b * c).permute(0, 3, 1, 2)  # 1, B*C, Hp, Wp
            kern = g.reshape(b * c, 1, h, w)  # B*C, 1, H, W
            grad_w = F.conv2d(inp, kern, groups=b * c).view(b, c, k, k).sum(0).unsqueeze(1)  # C, 1, k, k
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(dim=(0, 2, 3))  # C
        return grad_x, grad_w, grad_b


# Folded over conv2d_weight, fwd+bwd of the whole conv (5x5 kernel, C 64, 2 threads,
# `benchmarks/depthwise_grad.py`, 2026-12-03, quiet 2-core machine): 7x7 maps 0.86x at 16 of
# them, 0.94x at 32, 1.10x at 64, 1.28x at 128; 14x14 0.80x at 8, 0.90x at 32, 1.02x at 128;
# 28x28 0.82x at 2, 0.87x at 8, 1.01x at 16; 56x56 0.75x at 1, 0.80x at 2, 1.00x at 4, 1.16x at 8.
FOLD_MAX_CHANNELS = 2048
FOLD_MAX_ELEMENTS = 1 << 19


def fold_weight_grad(b: int, c: int, h: int, w: int) -> bool:
    """Whether :class:`DepthwiseConv` computes its weight gradient as one batch-folded conv.

    The folded conv has ``b * c`` channels of an ``h x w`` map; measured, it wins while both
    the channels and the map's elements stay small, and ``torch.nn.grad.conv2d_weight``
    (autograd's own kernel, weight part only) wins beyond.
    """
    return b * c <= FOLD_MAX_CHANNELS and b * c * h * w <= FOLD_MAX_ELEMENTS


def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=k // 2, groups=C)`` for an odd square kernel.

    On CPU the backward is :class:`DepthwiseConv`'s; elsewhere (CUDA's cuDNN has its own
    depthwise kernels) the plain call.

    Args:
        x: ``(B, C, H, W)`` map, any memory format.
        weight: ``(C, 1, k, k)``, ``k`` odd.
        bias: ``(C,)`` or None.
    """
    if x.device.type != "cpu" or weight.shape[-1] != weight.shape[-2] or weight.shape[-1] % 2 == 0:
        return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=x.shape[1])
    return DepthwiseConv.apply(x, weight, bias)
