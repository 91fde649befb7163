"""Swin's windowed softmax attention as one autograd node, for training on the CPU.

Why it exists (measured with the scratch harness of issue 18 against the official
``WindowAttention`` inside the block's shift / partition / merge, and paired A/B runs
against the composed fast path it replaces, 2 threads, float32, batch 2):

* A training step of a 7x7 map (one window) took about 0.8 ms in the official module and
  in ablate's composed path alike: at Swin's small maps the step is mostly per-node cost
  (about fifteen autograd nodes: views, two linears, the relative-position gather, the
  packed attention, the head join). One node whose backward is one Python function cuts
  that to a few tensor calls.
* Against the composed path (paired A/B in one process, 2026-12-04): 0.88x its time at
  7x7, 0.93x at 28x28 (dim 64, 2 heads, with or without a shift) and at 56x56, 0.90-0.93x
  at 56x56 with dim 96, 3 heads (Swin-T's first stage).

What it computes is the composed path's function, term for term: the partition (or the
shift's row gather), ``x W_qkv^T + b``, :func:`ablate.attention._fast.packed_forward` with
the relative-position bias and the shift mask, the heads joined, ``y W_proj^T + b``, and
the partition (or gather) undone. Tests compare its values and every gradient with
``SoftmaxAttention.forward_reference``.

Memory: the forward keeps what autograd would keep (the windowed input, the packed q, k
and v, the attention and the joined heads) as attributes of ``ctx``, not through
``save_for_backward``, so the backward can drop each one as soon as it is used up, as
autograd does between nodes. The price is the packed kernel's: the graph can be
backpropagated once (``forward_reference`` has no such limit).
"""

from __future__ import annotations

from typing import Any

import torch

from ablate.attention._fast import (
    additive_term,
    gather_rows,
    join_heads,
    packed_backward,
    packed_forward,
    window_partition,
    window_reverse,
    windows_heads_to_map,
)

__all__ = ["WindowBlock", "window_block"]


class WindowBlock(torch.autograd.Function):
    """``proj(attention(qkv(windows(x))))`` for Swin windows, as one node; see the module docstring.

    Inputs:
        x: ``(B, H*W, C)`` map tokens, ``H`` and ``W`` multiples of ``window``.
        qkv_weight, qkv_bias: the ``(3C, C)`` projection and its ``(3C,)`` bias (or None).
        table: ``((2w-1)^2, nH)`` relative-position bias table, or None.
        proj_weight, proj_bias: the ``(C, C)`` output projection and its ``(C,)`` bias.
        rel_index: ``(L*L,)`` index into ``table`` (None without a table).
        mask: ``(R, 1, L, L)`` constant shift mask, or None.
        order, inverse: the shift's token permutation and its inverse (None without a shift).
        heads, scale, window, hw: heads, logit scale, window side, map size.

    Returns:
        ``(B, H*W, C)`` map tokens.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, qkv_weight: torch.Tensor,  # type: ignore[override]
                qkv_bias: torch.Tensor | None, table: torch.Tensor | None, proj_weight: torch.Tensor,
                proj_bias: torch.Tensor | None, rel_index: torch.Tensor | None, mask: torch.Tensor | None,
                order: torch.Tensor | None, inverse: torch.Tensor | None, heads: int, scale: float, window: int,
                hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        h, w = hw
        L = window * window
        g, hd = b * n // L, c // heads
        if order is None:
            xw = window_partition(x.view(b, h, w, c), window).view(b * n, c)  # B*nW*L, C
        else:
            xw = gather_rows(x, order).view(b * n, c)  # B*nW*L, C: shift and partition in one gather
        qkv = _linear(xw, qkv_weight, qkv_bias)  # B*nW*L, 3C
        qkvh = qkv.view(g, L, 3, heads, hd).permute(2, 0, 3, 1, 4).contiguous()  # 3, G, nH, L, hd
        del qkv
        bias = None
        if table is not None:
            bias = table[rel_index].view(L, L, heads).permute(2, 0, 1)  # nH, L, L
        attn, out = packed_forward(qkvh, additive_term(bias, mask), heads, scale)  # G*nH, L, L; G, nH, L, hd
        if order is None:
            y = windows_heads_to_map(out, window, hw).view(b * n, c)  # B*H*W, C in map order
        else:
            y = join_heads(out).view(b * n, c)  # B*nW*L, C in window order
        del out
        z = _linear(y, proj_weight, proj_bias).view(b, n, c)  # B, N, C
        if inverse is not None:
            z = gather_rows(z, inverse)  # map order, shift undone
        ctx.save_for_backward(qkv_weight, proj_weight, rel_index, order, inverse)
        ctx.xw, ctx.qkvh, ctx.attn, ctx.y = xw, qkvh, attn, y
        ctx.meta = (heads, scale, window, hw, None if table is None else table.shape)
        return z

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        if not hasattr(ctx, "qkvh"):
            raise RuntimeError("the fused Swin window attention can be backpropagated once; "
                               "use forward_reference for a graph that is backpropagated again")
        qkv_weight, proj_weight, rel_index, order, inverse = ctx.saved_tensors
        xw, qkvh, attn, y = ctx.xw, ctx.qkvh, ctx.attn, ctx.y
        del ctx.xw, ctx.qkvh, ctx.attn, ctx.y  # each is dropped below once used up
        heads, scale, window, hw, table_shape = ctx.meta
        needs = ctx.needs_input_grad
        b, n, c = grad.shape
        h, w = hw
        L = window * window
        g, hd = b * n // L, c // heads

        gz = (grad if order is None else gather_rows(grad, order)).reshape(b * n, c)
        gz = gz.contiguous()  # one copy when the gradient is expanded (``sum().backward()``)
        g_proj_w = gz.t().mm(y) if needs[4] else None  # C, C
        g_proj_b = gz.sum(0) if needs[5] else None  # C (needs_input_grad is False for a None bias)
        del y
        gy = gz.mm(proj_weight)  # B*N, C
        del gz
        if order is None:  # map order -> G, nH, L, hd: the partition and the heads split in one copy
            nwh, nww = h // window, w // window
            go = gy.view(b, nwh, window, nww, window, heads, hd).permute(0, 1, 3, 5, 2, 4, 6).reshape(g, heads, L, hd)
        else:
            go = gy.view(g, L, heads, hd).transpose(1, 2).contiguous()  # G, nH, L, hd
        del gy
        grad_bias = packed_backward(qkvh, attn, go, heads, scale, bias_grad=needs[3])
        del attn, go
        dqkv = qkvh.permute(1, 3, 0, 2, 4).reshape(b * n, 3 * c)  # B*nW*L, 3C
        del qkvh
        g_qkv_w = dqkv.t().mm(xw) if needs[1] else None  # 3C, C
        g_qkv_b = dqkv.sum(0) if needs[2] else None  # 3C
        del xw
        gx = None
        if needs[0]:
            gxw = dqkv.mm(qkv_weight).view(b, n, c)  # window order
            if order is None:
                gx = window_reverse(gxw.view(b, -1, L, c), window, hw).view(b, n, c)
            else:
                gx = gather_rows(gxw, inverse)
        g_table = None
        if grad_bias is not None:
            g_table = grad_bias.new_zeros(table_shape).index_add_(
                0, rel_index, grad_bias.permute(1, 2, 0).reshape(L * L, heads))  # table rows, nH
        return gx, g_qkv_w, g_qkv_b, g_table, g_proj_w, g_proj_b, None, None, None, None, None, None, None, None


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x W^T + b`` for 2-D ``x``."""
    return torch.mm(x, weight.t()) if bias is None else torch.addmm(bias, x, weight.t())


def window_block(x: torch.Tensor, qkv: torch.nn.Linear, proj: torch.nn.Linear, table: torch.Tensor | None,
                 rel_index: torch.Tensor | None, mask: torch.Tensor | None,
                 order: tuple[torch.Tensor, torch.Tensor] | None, heads: int, scale: float, window: int,
                 hw: tuple[int, int]) -> torch.Tensor:
    """Apply :class:`WindowBlock` with the two linears' parameters; ``order`` is ``(index, inverse)`` or None."""
    index, inverse = (None, None) if order is None else order
    return WindowBlock.apply(x, qkv.weight, qkv.bias, table, proj.weight, proj.bias, rel_index, mask, index,
                             inverse, heads, scale, window, hw)
