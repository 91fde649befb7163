"""Less-attention (LaViT): vanilla attention in the first blocks of a stage, transformed attention after.

Paper: Zhang, Liu, Lin, He, "You Only Need Less Attention at Each Stage in Vision
Transformers", CVPR 2024, arXiv 2406.00427. No official code has been released; this
file follows the paper's method section and documents every point the text leaves open.

One mixer class plays three roles, chosen from the :class:`BlockContext` the model
builder passes (``context.index`` is the block's position in its stage):

* **VA layer** (``index < va_layers``; also a mixer built alone, ``context=None``):
  multi-head self-attention ``softmax(q k^T * scale) v``. Its *pre-softmax* scores
  ``A`` (B, nH, N, N) are left in ``state`` for the next block.
* **LA layer** (``index >= va_layers``): no query or key. It takes the scores ``A^{l-1}``
  of the block before it and transforms them with two learned N×N maps, the paper's
  ``A^l = Ψ(Θ(A^{l-1})^T)^T`` with ``Ψ(X) = X W_Ψ^T`` and ``Θ(X) = X W_Θ^T`` acting on
  rows as linear layers do; written out, ``A^l = W_Ψ A^{l-1} W_Θ^T`` (Θ mixes keys,
  Ψ mixes queries). Then ``softmax(A^l) v``, ``v`` from the layer's own value
  projection, and the output projection. ``A^l`` (pre-softmax) goes back into ``state``.
* **Attention residual** (first block of stage m > 0, ``attention_residual``): the
  previous stage's last scores ``A_{m-1}`` (B, H_{m-1}, N_{m-1}, N_{m-1}) pass a depthwise
  conv with kernel 2, stride 2 (heads as channels), a 1×1 conv across heads
  (H_{m-1} -> H_m) and LayerScale (CaiT), and are added to this block's pre-softmax
  scores ``q k^T * scale`` (the paper's attention residual, its Eq. 6).

A diagonality-preserving loss on every LA layer's attention, times ``dp_loss_weight``,
is appended to ``state["aux_losses"]`` in training mode.

State keys (``state`` lives for one forward pass of the whole model, shared by every
block of every stage, visited in block order):

* ``state["aux_losses"]``: list of scalar tensors, already weighted; LA layers append.
* ``state["lavit_attn"]``: ``(B, nH, N, N)`` pre-softmax scores of the latest block that
  stored them (VA layers that a later block may read, every LA layer).
* ``state["lavit_hw"]``: ``(H, W)`` map those scores belong to.

Timing one LA layer alone (the bench): build ``A`` with
``context=BlockContext(stage=0, index=0, depth=2)`` and ``B`` with ``index=1``, both
``va_layers=1`` and ``input_resolution=(r, r)``; run ``A(x, hw, state)`` once, then
``B(x, hw, state)`` as often as needed (each call reads and rewrites ``lavit_attn``).

Choices the paper leaves open, or gets inconsistent, made here:

* **Residual geometry.** The paper applies a k2s2 DWConv to the N×N matrix and states
  the result is N_m×N_m with N_m = N_{m-1}/2; but halving both sides of the map gives
  N_m = N_{m-1}/4 tokens, and a 2-D conv over the matrix would merge tokens that are
  neighbours in row-major order only. Here the matrix is viewed as
  ``(H, h, w, h, w)`` (query map × key map) and the depthwise kernel is 2×2 over the
  query map *and* 2×2 over the key map (16 weights and a bias per head), stride 2 in
  all four axes: the output is exactly (N_{m-1}/4)×(N_{m-1}/4) and pairs 2×2 blocks of
  queries with 2×2 blocks of keys, the same blocks the downsampling layer merges. A
  previous map with an odd side is cropped (``conv`` downsampling, floor) or zero-padded
  at the bottom/right (``merge``/``conv_bn``, ceil) to twice the current map.
* **LayerScale** is one scale per head (heads are the channels), initialised to
  ``layer_scale_init`` = 1e-5 (CaiT's value for its 24-layer models): the residual starts
  as a no-op and every stage starts as plain attention.
* **Ψ, Θ** are bias-free N×N matrices (paper: Ψ, Θ ∈ R^{N×N}; a bias on Ψ would be a
  per-row constant that softmax cancels), one pair per LA layer shared by all heads and
  images, initialised to the identity, so an untrained LA layer reproduces the previous
  layer's attention (the "attention saturation" the paper starts from). They are plain
  parameters, so the model builder's truncated-normal init of ``nn.Linear`` leaves them.
  They hold 2·N² parameters and cost 2·nH·N³ multiply-adds per image, against the
  2·N·C² + N²·C of the q, k projections and ``q k^T`` they replace: an LA layer saves
  FLOPs only where 2·nH·N² < 2·C² + N·C, i.e. on small maps (typically the last stage).
* **Fixed N.** Ψ and Θ are sized from ``input_resolution``; an LA layer built without it
  raises Infeasible, and run on another map raises ValueError.
* **Diagonality-preserving loss.** Its equations could not be retrieved (no official
  code; the copies available here lost the formulas). The text says a regular attention
  matrix has two properties, symmetry and diagonality, and that the loss of each
  transformed layer preserves both; read here as ``A_ij = A_ji`` and ``A_ii >= A_ij``
  (j ≠ i), penalised by how much they fail. Here, on the
  softmax probabilities ``P = softmax(A^l)`` of each image and head (bounded; a linear
  penalty on logits is unbounded below)::

      L_DP = (1/N) Σ_ij |P_ij − P_ji|  +  (1/N) Σ_i Σ_{j≠i} max(0, P_ij − P_ii)

  averaged over images and heads; zero exactly when both properties hold. Each LA layer
  appends ``dp_loss_weight * L_DP``. The paper's text adds the DP losses of all LA
  layers to the cross-entropy; whether a coefficient multiplies them could not be
  recovered, hence the default 1.0 (a hyperparameter to search).
* **Gradients** flow through the stored scores (no detach): LA layers train the q/k of
  the VA layer before them, as in an end-to-end reading of the paper.
* ``va_layers`` = 1 by default (the paper's per-variant counts could not be retrieved).
* No class token (``prefix_tokens`` is False): the residual needs every token on the map.
* A lone layer (``Mixer2d``, a fresh state) with a residual finds no previous attention
  and skips the residual; an LA layer without a previous attention raises ValueError.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ablate.attention._registry import BlockContext, MixerOptions, TokenMixer, register_attention
from ablate.attention.softmax import attend, check_rate
from ablate.errors import Infeasible

__all__ = [
    "ATTN_KEY",
    "HW_KEY",
    "AttentionResidual",
    "LaViTOptions",
    "LessAttention",
    "diagonality_loss",
]

ATTN_KEY = "lavit_attn"  # (B, nH, N, N) pre-softmax scores of the latest storing block
HW_KEY = "lavit_hw"  # (H, W) map of those scores


def diagonality_loss(probs: torch.Tensor) -> torch.Tensor:
    """Symmetry plus diagonal-dominance penalty of attention probabilities (see module doc).

    Args:
        probs: ``(..., N, N)`` attention probabilities (rows sum to 1).

    Returns:
        Scalar: ``(1/N) Σ_ij |P_ij − P_ji| + (1/N) Σ_ij max(0, P_ij − P_ii)`` averaged
        over the leading dims (the ``j = i`` term of the second sum is 0).
    """
    n = probs.shape[-1]
    sym = (probs - probs.transpose(-2, -1)).abs().sum(dim=(-2, -1))  # ...
    dom = F.relu(probs - probs.diagonal(dim1=-2, dim2=-1).unsqueeze(-1)).sum(dim=(-2, -1))  # ...
    return ((sym + dom) / n).mean()


def _fit_map(attn: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """View scores ``(B, H, hs*ws, hs*ws)`` as ``(B, H, hs, ws, hs, ws)`` sized ``2*dst``.

    Odd sides are cropped (floor downsampling) or zero-padded at the bottom/right
    (ceil downsampling), on the query map and on the key map alike.
    """
    (hs, ws), (h, w) = src, dst
    if abs(2 * h - hs) > 1 or abs(2 * w - ws) > 1:
        raise ValueError(f"the attention residual downsamples by 2, but the previous map {src} "
                         f"does not halve to the current map {dst}")
    b, c = attn.shape[:2]
    a = attn.reshape(b, c, hs, ws, hs, ws)[:, :, :2 * h, :2 * w, :2 * h, :2 * w]  # crop
    ph, pw = 2 * h - a.shape[2], 2 * w - a.shape[3]
    if ph or pw:
        a = F.pad(a, (0, pw, 0, ph, 0, pw, 0, ph))  # B, H, 2h, 2w, 2h, 2w
    return a


class AttentionResidual(nn.Module):
    """The paper's Eq. 6, ``LS(Conv1x1(DWConv(A_{m-1})))``: the previous stage's scores at this stage.

    Attributes:
        dw_weight: ``(H_prev, 2, 2, 2, 2)`` depthwise kernel over (query y, query x,
            key y, key x), stride 2 in every axis.
        dw_bias: ``(H_prev,)``.
        pw: ``Conv2d(H_prev, H, 1)`` across heads.
        gamma: ``(H,)`` LayerScale.
    """

    def __init__(self, prev_heads: int, heads: int, layer_scale_init: float) -> None:
        super().__init__()
        self.dw_weight = nn.Parameter(torch.empty(prev_heads, 2, 2, 2, 2))
        self.dw_bias = nn.Parameter(torch.empty(prev_heads))
        # PyTorch's Conv init for a depthwise kernel with fan-in 16.
        nn.init.kaiming_uniform_(self.dw_weight.view(prev_heads, 1, 16), a=math.sqrt(5))
        nn.init.uniform_(self.dw_bias, -0.25, 0.25)
        self.pw = nn.Conv2d(prev_heads, heads, 1)
        self.gamma = nn.Parameter(torch.full((heads,), float(layer_scale_init)))

    def forward(self, attn: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
        """``(B, H_prev, N_prev, N_prev)`` scores of map ``src`` -> ``(B, H, N, N)`` for map ``dst``."""
        h, w = dst
        a = _fit_map(attn, src, dst)  # B, Hp, 2h, 2w, 2h, 2w
        b, c = a.shape[:2]
        a = a.reshape(b, c, h, 2, w, 2, h, 2, w, 2)  # B, Hp, h, i, w, j, h, k, w, l
        # legend: y,x query cell; u,v key cell; i,j,k,l offsets inside the 2x2 blocks
        a = torch.einsum("bcyixjukvl,cijkl->bcyxuv", a, self.dw_weight)  # B, Hp, h, w, h, w
        a = a.reshape(b, c, h * w, h * w) + self.dw_bias.view(1, c, 1, 1)  # B, Hp, N, N
        return self.pw(a) * self.gamma.view(1, -1, 1, 1)  # B, H, N, N

    def forward_reference(self, attn: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
        """Same as ``forward``: a sum over the 16 kernel taps of strided slices, explicit 1×1 conv."""
        h, w = dst
        a = _fit_map(attn, src, dst)  # B, Hp, 2h, 2w, 2h, 2w
        b, c = a.shape[:2]
        out = self.dw_bias.view(1, c, 1, 1, 1, 1).expand(b, c, h, w, h, w).clone()  # B, Hp, h, w, h, w
        for i in range(2):
            for j in range(2):
                for k in range(2):
                    for l in range(2):
                        tap = self.dw_weight[:, i, j, k, l].view(1, c, 1, 1, 1, 1)
                        out = out + tap * a[:, :, i::2, j::2, k::2, l::2]
        out = out.reshape(b, c, h * w, h * w)  # B, Hp, N, N
        weight = self.pw.weight[:, :, 0, 0]  # H, Hp
        mixed = torch.einsum("oc,bcnm->bonm", weight, out) + self.pw.bias.view(1, -1, 1, 1)  # B, H, N, N
        return mixed * self.gamma.view(1, -1, 1, 1)


@dataclasses.dataclass(frozen=True)
class LaViTOptions(MixerOptions):
    """Options of :class:`LessAttention` (no official configuration exists; see module doc).

    Attributes:
        va_layers: blocks at the start of each stage that compute attention (VA); later
            blocks transform it (LA).
        attention_residual: add the previous stage's downsampled attention to the first
            block of every later stage.
        dp_loss_weight: weight of each LA layer's diagonality-preserving loss (0: off).
        qkv_bias: learnable bias in the q/k/v (VA) and v (LA) projections.
        qk_scale: logit scale; None means ``head_dim ** -0.5``.
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after the output projection.
        layer_scale_init: initial LayerScale of the attention residual.
    """

    va_layers: int = 1
    attention_residual: bool = True
    dp_loss_weight: float = 1.0
    qkv_bias: bool = True
    qk_scale: float | None = None
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    layer_scale_init: float = 1e-5


@register_attention("lavit")
class LessAttention(TokenMixer):
    """LaViT's token mixer: a VA layer, an LA layer, or a VA layer with the attention residual.

    ``forward(x, hw, state)`` takes the SDPA path for VA layers whose scores nobody
    reads; ``forward_reference`` computes everything with explicit loops and softmax.

    Attributes:
        role: ``"va"`` or ``"la"``.
        store: whether this block leaves its pre-softmax scores in ``state``.
        residual: the :class:`AttentionResidual` of a stage's first block, else None.
        fused: whether ``forward`` may use ``scaled_dot_product_attention``.
    """

    Options = LaViTOptions
    opts: LaViTOptions
    stateful = True

    def __init__(self, dim: int, num_heads: int, *, input_resolution: tuple[int, int] | None = None,
                 context: BlockContext | None = None, **options: object) -> None:
        super().__init__(dim, num_heads, input_resolution=input_resolution, context=context, **options)
        o = self.opts
        ctx = context if context is not None else BlockContext()
        self.fused = True
        self.head_dim = dim // num_heads
        self.scale = o.qk_scale or self.head_dim ** -0.5  # `or` as in softmax.py / the official ViTs
        self.attn_drop = o.attn_drop
        self.role = "la" if ctx.index >= o.va_layers else "va"
        # VA scores are read by the next block when it is an LA layer, or by the next
        # stage's residual when this is the stage's last block; LA scores always may be.
        self.store = context is not None and (self.role == "la" or ctx.index + 1 >= o.va_layers
                                              or ctx.index == ctx.depth - 1)
        self.residual: AttentionResidual | None = None

        if self.role == "la":
            if input_resolution is None:
                raise Infeasible(f"LA layers need a fixed token count per stage: block {ctx.index} of stage "
                                 f"{ctx.stage} is an LA layer (va_layers={o.va_layers}) and needs input_resolution")
            n = input_resolution[0] * input_resolution[1]
            self.v = nn.Linear(dim, dim, bias=o.qkv_bias)
            self.psi = nn.Parameter(torch.eye(n))  # N, N: mixes queries (rows)
            self.theta = nn.Parameter(torch.eye(n))  # N, N: mixes keys (columns)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=o.qkv_bias)
            if o.attention_residual and ctx.stage > 0 and ctx.index == 0:
                if ctx.prev_num_heads is None:
                    raise Infeasible(f"attention_residual needs the previous stage's head count "
                                     f"(context.prev_num_heads) for the first block of stage {ctx.stage}")
                self.residual = AttentionResidual(ctx.prev_num_heads, num_heads, o.layer_scale_init)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(o.proj_drop)

    @classmethod
    def check(cls, dim: int, num_heads: int, hw: tuple[int, int] | None, opts: LaViTOptions) -> None:  # type: ignore[override]
        """Raise Infeasible for settings that cannot be built (the LA map check is in ``__init__``)."""
        super().check(dim, num_heads, hw, opts)
        if hw is not None and min(hw) < 1:
            raise Infeasible(f"the map must be at least 1x1, got {hw=}")
        if opts.va_layers < 1:
            raise Infeasible(f"va_layers must be >= 1 (each stage needs a VA layer to compute attention), "
                             f"got va_layers={opts.va_layers}")
        check_rate("attn_drop", opts.attn_drop)
        check_rate("proj_drop", opts.proj_drop)
        if opts.qk_scale is not None and opts.qk_scale <= 0:
            raise Infeasible(f"qk_scale must be positive, got qk_scale={opts.qk_scale}")
        if not (math.isfinite(opts.dp_loss_weight) and opts.dp_loss_weight >= 0):
            raise Infeasible(f"dp_loss_weight must be a finite number >= 0, got dp_loss_weight={opts.dp_loss_weight}")
        if not math.isfinite(opts.layer_scale_init):
            raise Infeasible(f"layer_scale_init must be finite, got layer_scale_init={opts.layer_scale_init}")

    def extra_repr(self) -> str:
        return f"role={self.role!r}, " + super().extra_repr()

    def forward(self, x: torch.Tensor, hw: tuple[int, int], state: dict[str, Any]) -> torch.Tensor:
        """Mix ``(B, N, C)`` tokens of an ``hw`` map, reading and writing ``state``."""
        return self._forward(x, hw, state, reference=False)

    def forward_reference(self, x: torch.Tensor, hw: tuple[int, int], state: dict[str, Any]) -> torch.Tensor:
        """Same as ``forward`` through explicit per-head loops, the LA formula literally, and explicit softmax."""
        return self._forward(x, hw, state, reference=True)

    # ----------------------------------------------------------------------- internals

    def _forward(self, x: torch.Tensor, hw: tuple[int, int], state: dict[str, Any], *, reference: bool) -> torch.Tensor:
        b, n, c = x.shape
        h, w = hw
        if n != h * w:
            raise ValueError(f"expected {h}*{w}={h * w} tokens for {hw=}, got {n}")
        nh, hd = self.num_heads, self.head_dim
        drop = self.attn_drop if self.training else 0.0

        if self.role == "la":
            scores = self._transform(self._previous(state, n), reference=reference)  # B, nH, N, N
            v = self.v(x).view(b, n, nh, hd).transpose(1, 2)  # B, nH, N, hd
            out = self._softmax_v(scores, v, state, drop, reference=reference, dp_loss=True)  # B, nH, N, hd
        else:
            q, k, v = self.qkv(x).view(b, n, 3, nh, hd).permute(2, 0, 3, 1, 4)  # 3 x (B, nH, N, hd)
            bias = None
            if self.residual is not None and state.get(ATTN_KEY) is not None:
                prev, prev_hw = state[ATTN_KEY], tuple(state[HW_KEY])
                if prev.shape[1] != self.residual.dw_weight.shape[0]:
                    raise ValueError(f"the attention residual expects {self.residual.dw_weight.shape[0]} heads "
                                     f"from the previous stage, state holds {prev.shape[1]}")
                run = self.residual.forward_reference if reference else self.residual
                bias = run(prev, prev_hw, (h, w))  # B, nH, N, N
            if self.store:
                scores = self._scores(q, k, reference=reference)  # B, nH, N, N
                if bias is not None:
                    scores = scores + bias
                out = self._softmax_v(scores, v, state, drop, reference=reference, dp_loss=False)
            else:
                out = attend(q, k, v, bias, scale=self.scale, dropout_p=drop,
                             fused=self.fused and not reference)  # B, nH, N, hd
                scores = None
        if self.store:
            state[ATTN_KEY] = scores
            state[HW_KEY] = (h, w)
        out = out.transpose(1, 2).reshape(b, n, c)  # B, N, C
        return self.proj_drop(self.proj(out))

    def _previous(self, state: dict[str, Any], n: int) -> torch.Tensor:
        """The scores of the block before this LA layer, checked against the fixed token count."""
        fixed = self.input_resolution
        assert fixed is not None  # guaranteed by __init__
        if n != fixed[0] * fixed[1]:
            raise ValueError(f"LA layers need a fixed token count per stage: built for input_resolution={fixed} "
                             f"({fixed[0] * fixed[1]} tokens), got {n}")
        prev = state.get(ATTN_KEY)
        if prev is None:
            raise ValueError(f"an LA layer transforms the attention of the block before it, but state has no "
                             f"{ATTN_KEY!r}: run the stage's VA block first with the same state")
        if prev.shape[-1] != n or prev.shape[1] != self.num_heads:
            raise ValueError(f"LA layers need a fixed token count per stage: the stored attention is "
                             f"{tuple(prev.shape[1:])} (heads, N, N), this layer has {self.num_heads} heads "
                             f"and {n} tokens")
        return prev

    def _transform(self, prev: torch.Tensor, *, reference: bool) -> torch.Tensor:
        """The LA formula ``Ψ(Θ(A)^T)^T`` = ``W_Ψ A W_Θ^T`` on ``(B, nH, N, N)`` scores."""
        if reference:  # literally: Θ on rows, transpose, Ψ on rows, transpose
            t = F.linear(prev, self.theta).transpose(-2, -1)  # B, nH, N, N
            return F.linear(t, self.psi).transpose(-2, -1)  # B, nH, N, N
        return torch.matmul(self.psi, prev) @ self.theta.transpose(0, 1)  # B, nH, N, N

    def _scores(self, q: torch.Tensor, k: torch.Tensor, *, reference: bool) -> torch.Tensor:
        """``q k^T * scale``: ``(B, nH, N, hd)`` x2 -> ``(B, nH, N, N)``."""
        if not reference:
            return (q * self.scale) @ k.transpose(-2, -1)
        heads = [torch.einsum("bnd,bmd->bnm", q[:, i] * self.scale, k[:, i]) for i in range(q.shape[1])]
        return torch.stack(heads, dim=1)  # B, nH, N, N

    def _softmax_v(self, scores: torch.Tensor, v: torch.Tensor, state: dict[str, Any], drop: float, *,
                   reference: bool, dp_loss: bool) -> torch.Tensor:
        """``dropout(softmax(scores)) v``; an LA layer also adds its diagonality loss in training."""
        if reference:
            e = torch.exp(scores - scores.amax(dim=-1, keepdim=True))  # B, nH, N, N
            probs = e / e.sum(dim=-1, keepdim=True)
        else:
            probs = scores.softmax(dim=-1)  # B, nH, N, N
        if dp_loss and self.training and self.opts.dp_loss_weight > 0:
            state.setdefault("aux_losses", []).append(self.opts.dp_loss_weight * diagonality_loss(probs))
        probs = F.dropout(probs, p=drop, training=drop > 0)
        return probs @ v  # B, nH, N, hd
