"""Bi-level routing attention (BRA): region-to-region routing, then token-to-token attention.

Paper: Zhu et al., "BiFormer: Vision Transformer with Bi-Level Routing Attention",
CVPR 2023. Official code: https://github.com/rayleizhu/BiFormer
(``ops/bra_legacy.py``: ``BiLevelRoutingAttention``, ``TopkRouting``, ``KVGather``,
``QKVLinear``; ``models/_common.py``: ``Attention``, ``AttentionLePE``;
``models/biformer.py``: ``Block`` and the ``biformer_{tiny,small,base}`` presets).

With ``topk`` > 0 the padded map is cut into ``n_win x n_win`` regions (S² in all) and

1. one linear gives q, k (``qk_dim`` channels each) and v (``dim``) for every token;
2. region-level q and k are the means over each region's tokens; the routing logits
   are ``(q_r * scale) @ k_r^T`` (S² x S²) and every query region keeps its ``topk``
   key regions (``torch.topk``). As official (``diff_routing=False``) no gradient
   flows through the routing and its weights are unused (``mul_weight='none'``);
3. the k/v tokens of the routed regions, optionally downsampled per region
   (``kv_downsample_mode``), are gathered, and every query token attends, with
   multi-head softmax attention, to the ``topk * M`` gathered keys of its region;
4. local context enhancement (LCE, "lepe"): a depthwise ``Conv2d(dim, dim, side_dwconv,
   padding=side_dwconv // 2, groups=dim)`` over v as a map is added to the output,
   which goes through the output linear ``wo``.

``topk`` = -1 is the official ``Attention`` (plain global multi-head attention, no qkv
bias, ``head_dim ** -0.5``), ``topk`` = -2 the official ``AttentionLePE`` (the same plus a
depthwise conv over the mixer's *input* x, not over v, as in ``models/_common.py``), which
every official preset uses in its last stage. The official ``Block`` builds both without
passing a head count, so they run with their default ``num_heads=8`` whatever the stage's
``head_dim``: a faithful BiFormer-T/S passes ``num_heads`` 2, 4, 8 (``dim // 32``) to the
routing stages and 8 to the last stage (BiFormer-B: 3, 6, 12 and 8).

The logit scale of the routing attention is ``qk_dim ** -0.5`` over the *full* q/k width,
not over the head width (official, kept; the official ``nchwBRA`` keeps it "to be
consistent with old models"). ``qk_scale`` overrides it (``or``, as official).

Deliberate deviations, each to honour the ``forward(x, hw)`` contract or the house rules:

* ``auto_pad`` defaults to True (the official default is False for classification,
  where maps divide by ``n_win``; the official detection configs set True "to allow
  any-size input"). Padding is the official one: the mixer's input is zero-padded at
  the bottom/right *before* the qkv linear, so padded tokens carry the qkv bias, take
  part in the region means, are routed to and attended like any token (no mask), feed
  the lepe conv, and are cropped after ``wo``. Regions made only of padding occur when
  the map is small (e.g. an 8-row map with ``n_win=7`` has 2-row regions, three of
  them padding), as in the official detection code. ``check`` rejects a build-time map
  with fewer rows or columns than ``n_win``, and, with ``auto_pad=False``, a map that
  ``n_win`` does not divide; at run time such a map raises :class:`Infeasible` with
  ``auto_pad=False`` and is padded otherwise.
* Rather than crash (``assert`` / ``NotImplementedError`` / shape errors), ``check``
  reports as Infeasible what the official code cannot run: ``param_routing`` without
  ``diff_routing``, ``diff_routing`` without ``soft_routing`` (the unimplemented
  "hard" mode), an even ``side_dwconv`` (the conv output would be one token larger),
  ``topk`` > S², pooling regions smaller than ``kv_downsample_ratio``. The
  unimplemented kv modes ``fracpool`` and ``conv`` and the conv "pseudo attention" of
  ``topk=0`` are not offered; ``kv_downsample_kernel`` is not an option because the
  official code stores it and never uses it.
* Module names follow the official ones except one level of nesting: ``qkv`` is the
  official ``qkv.qkv`` (``QKVLinear``), ``emb`` is ``router.emb``; ``wo`` and ``lepe``
  (routing) and ``qkv``, ``proj``, ``lepe`` (``topk`` < 0) are unchanged. The kv
  poolings are parameter-free functions instead of modules (same state_dict).
* The qkv bias is fixed per mode as official (on for routing, off for ``topk`` < 0) and
  is not an option; the official BiFormer sets no dropout anywhere in its attention,
  so there are no dropout options. Options of routing (``n_win``, ``qk_dim``, kv
  downsampling, ...) are ignored when ``topk`` < 0, as the official ``Block`` does.
* Linear layers keep PyTorch's default init; the model builder applies the official
  truncated-normal init (convs keep PyTorch's default, as official).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ablate.attention._registry import MixerOptions, TokenMixer, register_attention
from ablate.attention.softmax import attend, pad_to_windows
from ablate.errors import Infeasible

__all__ = ["BiFormerAttention", "BiFormerOptions", "region_partition", "region_reverse"]

KvDownsampleMode = Literal["identity", "ada_avgpool", "ada_maxpool", "avgpool", "maxpool"]


def region_partition(x: torch.Tensor, n_win: int) -> torch.Tensor:
    """Cut a map into ``n_win x n_win`` regions, regions and their tokens row-major.

    Args:
        x: ``(B, H, W, D)`` map with ``H`` and ``W`` multiples of ``n_win``.
        n_win: regions per side S.

    Returns:
        ``(B, S*S, (H/S)*(W/S), D)``.
    """
    b, h, w, d = x.shape
    x = x.view(b, n_win, h // n_win, n_win, w // n_win, d)  # B, S, rh, S, rw, D
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, n_win * n_win, (h // n_win) * (w // n_win), d)


def region_reverse(x: torch.Tensor, n_win: int, hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`region_partition`: ``(B, S*S, rh*rw, D)`` -> ``(B, H, W, D)``."""
    h, w = hw
    b, _, _, d = x.shape
    x = x.view(b, n_win, n_win, h // n_win, w // n_win, d)  # B, S, S, rh, rw, D
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, d)


def _region_side(size: int, n_win: int) -> int:
    """Side of a region along one axis of a map of ``size`` tokens, after auto-padding."""
    return -(-size // n_win)


@dataclasses.dataclass(frozen=True)
class BiFormerOptions(MixerOptions):
    """Options of :class:`BiFormerAttention`; defaults are the official BiFormer presets'.

    Attributes:
        n_win: regions per side S (official 7: regions of 8x8 tokens at 56x56).
        topk: routed regions per query region (official BiFormer-T/S/B stages: 1, 4, 16,
            -2); -1 is plain global attention, -2 global attention with LePE.
        side_dwconv: kernel of the depthwise lepe conv (official 5); 0 disables it.
        qk_dim: width of q and k; None means ``dim`` (every official preset).
        qk_scale: logit scale; None means ``qk_dim ** -0.5`` (routing) or ``head_dim ** -0.5``
            (``topk`` < 0).
        kv_downsample_mode: per-region k/v downsampling: "identity" (official presets),
            "ada_avgpool" / "ada_maxpool" (to ``kv_per_win x kv_per_win`` tokens),
            "avgpool" / "maxpool" (kernel = stride = ``kv_downsample_ratio``).
        kv_per_win: pooled k/v tokens per region side for the "ada_*" modes (official 4).
        kv_downsample_ratio: pooling kernel for "avgpool"/"maxpool" (official 4; 1 = none).
        param_attention: "qkvo" (official) or "qkv" (no output linear).
        param_routing: a learned linear on region q/k before routing (needs
            ``diff_routing``).
        diff_routing: let gradients flow through the routing (needs ``soft_routing``).
        soft_routing: scale the gathered k/v by the softmax of the top-k routing logits.
        auto_pad: pad maps that ``n_win`` does not divide (see the module docstring).
    """

    n_win: int = 7
    topk: int = 4
    side_dwconv: int = 5
    qk_dim: int | None = None
    qk_scale: float | None = None
    kv_downsample_mode: KvDownsampleMode = "identity"
    kv_per_win: int = 4
    kv_downsample_ratio: int = 4
    param_attention: Literal["qkvo", "qkv"] = "qkvo"
    param_routing: bool = False
    diff_routing: bool = False
    soft_routing: bool = False
    auto_pad: bool = True


@register_attention("biformer")
class BiFormerAttention(TokenMixer):
    """Bi-level routing attention (``topk`` > 0) or BiFormer's global attention (-1, -2).

    ``forward`` gathers the routed regions' k/v and runs ``scaled_dot_product_attention``
    when ``fused`` is True (default), the explicit softmax otherwise;
    ``forward_reference`` computes dense ``N x N`` attention with every key outside the
    routed regions masked, from the same routing indices.

    Attributes:
        qk_dim: width of q and k.
        head_dim: per-head width of q/k (v: ``dim // num_heads``).
        scale: logit scale.
        fused: whether ``forward`` takes the SDPA path.
    """

    Options = BiFormerOptions
    opts: BiFormerOptions

    def __init__(self, dim: int, num_heads: int, *, input_resolution: tuple[int, int] | None = None,
                 **options: object) -> None:
        super().__init__(dim, num_heads, input_resolution=input_resolution, **options)
        o = self.opts
        self.fused = True
        self.routing = o.topk > 0
        if self.routing:  # official BiLevelRoutingAttention
            self.qk_dim = o.qk_dim or dim
            self.head_dim = self.qk_dim // num_heads
            self.scale = o.qk_scale or self.qk_dim ** -0.5  # full qk width, as official
            self.qkv = nn.Linear(dim, 2 * self.qk_dim + dim)  # official QKVLinear: bias on
            self.wo = nn.Linear(dim, dim) if o.param_attention == "qkvo" else nn.Identity()
            if o.param_routing:
                self.emb = nn.Linear(self.qk_dim, self.qk_dim)
        else:  # official Attention (-1) / AttentionLePE (-2)
            self.qk_dim = dim
            self.head_dim = dim // num_heads
            self.scale = o.qk_scale or self.head_dim ** -0.5
            self.qkv = nn.Linear(dim, 3 * dim, bias=False)
            self.proj = nn.Linear(dim, dim)
        self.lepe: nn.Conv2d | None = None
        if o.side_dwconv > 0 and o.topk != -1:
            self.lepe = nn.Conv2d(dim, dim, o.side_dwconv, padding=o.side_dwconv // 2, groups=dim)

    @classmethod
    def check(cls, dim: int, num_heads: int, hw: tuple[int, int] | None, opts: BiFormerOptions) -> None:  # type: ignore[override]
        """Raise Infeasible for settings the official code cannot build or run."""
        super().check(dim, num_heads, hw, opts)
        if hw is not None and min(hw) < 1:
            raise Infeasible(f"the map must be at least 1x1, got {hw=}")
        topk, n_win = opts.topk, opts.n_win
        if topk == 0 or topk < -2:
            raise Infeasible(f"topk must be > 0 (routing), -1 (global attention) or -2 (global attention "
                             f"with LePE), got {topk=}")
        if opts.qk_scale is not None and opts.qk_scale <= 0:
            raise Infeasible(f"qk_scale must be positive, got qk_scale={opts.qk_scale}")
        side = opts.side_dwconv
        if side < 0 or (side > 0 and side % 2 == 0):
            raise Infeasible(f"side_dwconv must be 0 (off) or an odd kernel, got side_dwconv={side}")
        if topk < 0:
            return
        if n_win < 1:
            raise Infeasible(f"n_win must be >= 1, got {n_win=}")
        if topk > n_win ** 2:
            raise Infeasible(f"topk must be at most n_win**2, got {topk=} for {n_win=}")
        qk_dim = opts.qk_dim if opts.qk_dim is not None else dim
        if qk_dim < 1 or qk_dim % num_heads:
            raise Infeasible(f"num_heads must divide qk_dim, got qk_dim={qk_dim} and {num_heads=}")
        if opts.param_routing and not opts.diff_routing:
            raise Infeasible("param_routing needs diff_routing (a learned router needs gradients), "
                             "got param_routing=True with diff_routing=False")
        if opts.diff_routing and not opts.soft_routing:
            raise Infeasible("diff_routing needs soft_routing (hard differentiable routing is not implemented "
                             "officially), got diff_routing=True with soft_routing=False")
        mode = opts.kv_downsample_mode
        if mode.startswith("ada_") and opts.kv_per_win < 1:
            raise Infeasible(f"kv_per_win must be >= 1, got kv_per_win={opts.kv_per_win}")
        if mode in ("avgpool", "maxpool") and opts.kv_downsample_ratio < 1:
            raise Infeasible(f"kv_downsample_ratio must be >= 1, got kv_downsample_ratio={opts.kv_downsample_ratio}")
        if hw is not None:
            cls._check_map(hw, opts)

    @staticmethod
    def _check_map(hw: tuple[int, int], opts: BiFormerOptions) -> None:
        """The map-dependent checks of a routing mixer (build time and run time)."""
        n_win = opts.n_win
        if n_win > min(hw):
            raise Infeasible(f"n_win must not exceed the map, got {n_win=} for {hw=}")
        if not opts.auto_pad and (hw[0] % n_win or hw[1] % n_win):
            raise Infeasible(f"n_win must divide the map unless auto_pad is on, got {n_win=} for {hw=}")
        ratio = opts.kv_downsample_ratio
        if opts.kv_downsample_mode in ("avgpool", "maxpool") and ratio > 1:
            region = (_region_side(hw[0], n_win), _region_side(hw[1], n_win))
            if min(region) < ratio:
                raise Infeasible(f"regions must be at least kv_downsample_ratio tokens a side, got region "
                                 f"{region[0]}x{region[1]} for {hw=} and {n_win=} with kv_downsample_ratio={ratio}")

    # ------------------------------------------------------------------ pieces

    def _project(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Pad the map to multiples of ``n_win`` (official ``auto_pad``) and apply qkv.

        Returns:
            ``(B, Hp, Wp, 2*qk_dim + C)``.
        """
        b, n, c = x.shape
        h, w = hw
        if n != h * w:
            raise ValueError(f"expected {h}*{w}={h * w} tokens for {hw=}, got {n}")
        n_win = self.opts.n_win
        if not self.opts.auto_pad and (h % n_win or w % n_win):
            raise Infeasible(f"n_win must divide the map unless auto_pad is on, got {n_win=} for {hw=}")
        xm = pad_to_windows(x.view(b, h, w, c), n_win)  # B, Hp, Wp, C  (zeros before qkv, as official)
        return self.qkv(xm)  # B, Hp, Wp, 2*qk+C

    def _route(self, q_win: torch.Tensor, k_win: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Official ``TopkRouting``: top-k key regions per query region.

        Args:
            q_win: ``(B, S*S, qk)`` region-mean queries.
            k_win: ``(B, S*S, qk)`` region-mean keys.

        Returns:
            ``(weights, index)``, each ``(B, S*S, topk)``: the softmax of the kept logits
            (used only with ``soft_routing``) and the key regions' indices.
        """
        if not self.opts.diff_routing:
            q_win, k_win = q_win.detach(), k_win.detach()
        if self.opts.param_routing:
            q_win, k_win = self.emb(q_win), self.emb(k_win)  # B, S², qk
        logits = (q_win * self.scale) @ k_win.transpose(-2, -1)  # B, S², S²
        top, index = torch.topk(logits, k=self.opts.topk, dim=-1)  # B, S², k
        return top.softmax(dim=-1), index

    def _region_qkv(self, qkv: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Regions of q and k/v and the routing of a projected, padded map.

        Returns:
            ``q_reg (B, S², L, qk)``, ``kv_reg (B, S², L, qk+C)``, ``weights`` and
            ``index`` ``(B, S², topk)``.
        """
        qk = self.qk_dim
        q_reg = region_partition(qkv[..., :qk], self.opts.n_win)  # B, S², L, qk
        kv_reg = region_partition(qkv[..., qk:], self.opts.n_win)  # B, S², L, qk+C
        weights, index = self._route(q_reg.mean(dim=2), kv_reg[..., :qk].mean(dim=2))  # B, S², k
        return q_reg, kv_reg, weights, index

    def _downsample(self, kv_reg: torch.Tensor, region: tuple[int, int]) -> torch.Tensor:
        """Official per-region ``kv_down``: ``(B, S², rh*rw, D)`` -> ``(B, S², M, D)``."""
        o = self.opts
        mode = o.kv_downsample_mode
        if mode == "identity" or (mode in ("avgpool", "maxpool") and o.kv_downsample_ratio <= 1):
            return kv_reg
        b, s2, _, d = kv_reg.shape
        rh, rw = region
        maps = kv_reg.reshape(b * s2, rh, rw, d).permute(0, 3, 1, 2)  # B*S², D, rh, rw
        if mode == "ada_avgpool":
            maps = F.adaptive_avg_pool2d(maps, o.kv_per_win)  # B*S², D, m, m
        elif mode == "ada_maxpool":
            maps = F.adaptive_max_pool2d(maps, o.kv_per_win)  # B*S², D, m, m
        else:
            ratio = o.kv_downsample_ratio
            if min(region) < ratio:
                raise Infeasible(f"regions must be at least kv_downsample_ratio tokens a side, got region "
                                 f"{rh}x{rw} with kv_downsample_ratio={ratio}")
            pool = F.avg_pool2d if mode == "avgpool" else F.max_pool2d
            maps = pool(maps, ratio)  # B*S², D, rh/r, rw/r
        return maps.flatten(2).transpose(1, 2).reshape(b, s2, -1, d)  # B, S², M, D

    def _add_lepe(self, out: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """``out + lepe(source)`` for ``(B, H, W, C)`` maps (identity without lepe)."""
        if self.lepe is None:
            return out
        return out + self.lepe(source.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # B, H, W, C

    # ------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Attend over ``(B, N, C)`` tokens of an ``hw`` map; SDPA when ``self.fused``."""
        if not self.routing:
            return self._forward_global(x, hw, fused=self.fused)
        b, _, c = x.shape
        h, w = hw
        n_win, nh, qk = self.opts.n_win, self.num_heads, self.qk_dim
        qkv = self._project(x, hw)  # B, Hp, Wp, 2*qk+C
        hp, wp = qkv.shape[1:3]
        region = (hp // n_win, wp // n_win)
        q_reg, kv_reg, weights, index = self._region_qkv(qkv)  # B, S², L, .. ; B, S², k
        s2, L = q_reg.shape[1:3]

        kv_pix = self._downsample(kv_reg, region)  # B, S², M, qk+C
        kv_sel = kv_pix[torch.arange(b, device=x.device)[:, None, None], index]  # B, S², k, M, qk+C
        if self.opts.soft_routing:
            kv_sel = kv_sel * weights[..., None, None]  # B, S², k, M, qk+C
        kv_sel = kv_sel.flatten(2, 3)  # B, S², k*M, qk+C
        keys = kv_sel.shape[2]
        q = q_reg.reshape(b * s2, L, nh, qk // nh).transpose(1, 2)  # B*S², nH, L, hd
        k = kv_sel[..., :qk].reshape(b * s2, keys, nh, qk // nh).transpose(1, 2)  # B*S², nH, k*M, hd
        v = kv_sel[..., qk:].reshape(b * s2, keys, nh, c // nh).transpose(1, 2)  # B*S², nH, k*M, hd_v
        out = attend(q, k, v, None, scale=self.scale, fused=self.fused)  # B*S², nH, L, hd_v
        out = out.transpose(1, 2).reshape(b, s2, L, c)  # B, S², L, C
        out = region_reverse(out, n_win, (hp, wp))  # B, Hp, Wp, C
        out = self._add_lepe(out, qkv[..., 2 * qk:])  # B, Hp, Wp, C  (lepe over v)
        out = self.wo(out)  # B, Hp, Wp, C
        return out[:, :h, :w].reshape(b, h * w, c)

    def forward_reference(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Dense attention over the whole padded map, keys outside the routed regions masked.

        Query token i may attend to key token j only if j's region is among the regions
        routed to i's region; with ``soft_routing`` the pair's routing weight scales k_j
        and v_j. Shares the projection, the routing and the kv pooling with ``forward``,
        not the gather or the region layout of the attention.
        """
        if not self.routing:
            return self._forward_global(x, hw, fused=False)
        b, _, c = x.shape
        h, w = hw
        n_win, nh, qk = self.opts.n_win, self.num_heads, self.qk_dim
        qkv = self._project(x, hw)  # B, Hp, Wp, 2*qk+C
        hp, wp = qkv.shape[1:3]
        rh, rw = hp // n_win, wp // n_win
        _, kv_reg, weights, index = self._region_qkv(qkv)  # B, S², L, qk+C ; B, S², k
        s2 = n_win * n_win

        # queries in row-major order of the padded map, each with its region label
        q = qkv[..., :qk].reshape(b, hp * wp, nh, qk // nh).transpose(1, 2)  # B, nH, Np, hd
        ys, xs = torch.meshgrid(torch.arange(hp), torch.arange(wp), indexing="ij")
        q_label = ((ys // rh) * n_win + xs // rw).flatten().to(x.device)  # Np
        # keys: every (pooled) k/v token of every region, labelled by its region
        kv_all = self._downsample(kv_reg, (rh, rw))  # B, S², M, qk+C
        m = kv_all.shape[2]
        kv_all = kv_all.reshape(b, s2 * m, qk + c)  # B, S²*M, qk+C
        k_label = torch.arange(s2, device=x.device).repeat_interleave(m)  # S²*M
        k = kv_all[..., :qk].reshape(b, s2 * m, nh, qk // nh).transpose(1, 2)  # B, nH, Nk, hd
        v = kv_all[..., qk:].reshape(b, s2 * m, nh, c // nh).transpose(1, 2)  # B, nH, Nk, hd_v

        # region pair weights: routed pairs get their weight (1 without soft routing)
        pair = torch.zeros(b, s2, s2, dtype=x.dtype, device=x.device)  # B, S², S²
        routed = weights.to(x.dtype) if self.opts.soft_routing else torch.ones_like(weights, dtype=x.dtype)
        pair.scatter_(2, index, routed)
        allowed = torch.zeros(b, s2, s2, dtype=torch.bool, device=x.device).scatter_(2, index, True)  # B, S², S²
        scale_qk = pair[:, q_label][:, :, k_label][:, None]  # B, 1, Np, Nk
        mask = allowed[:, q_label][:, :, k_label][:, None]  # B, 1, Np, Nk

        logits = ((q * self.scale) @ k.transpose(-2, -1)) * scale_qk  # B, nH, Np, Nk
        attn = logits.masked_fill(~mask, float("-inf")).softmax(dim=-1)  # B, nH, Np, Nk
        out = (attn * scale_qk) @ v  # B, nH, Np, hd_v
        out = out.transpose(1, 2).reshape(b, hp, wp, c)  # B, Hp, Wp, C
        out = self._add_lepe(out, qkv[..., 2 * qk:])  # B, Hp, Wp, C
        out = self.wo(out)  # B, Hp, Wp, C
        return out[:, :h, :w].reshape(b, h * w, c)

    def route(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The routing of a routing mixer for input tokens, for tests and visualisation.

        Returns:
            ``(weights, index)``, each ``(B, S*S, topk)``; regions are row-major over the
            padded map.
        """
        if not self.routing:
            raise ValueError(f"topk={self.opts.topk} does not route")
        _, _, weights, index = self._region_qkv(self._project(x, hw))
        return weights, index

    def _forward_global(self, x: torch.Tensor, hw: tuple[int, int], *, fused: bool) -> torch.Tensor:
        """Official ``Attention`` (topk -1) and ``AttentionLePE`` (-2, lepe over the input)."""
        b, n, c = x.shape
        h, w = hw
        if n != h * w:
            raise ValueError(f"expected {h}*{w}={h * w} tokens for {hw=}, got {n}")
        nh, hd = self.num_heads, self.head_dim
        qkv = self.qkv(x).view(b, n, 3, nh, hd).permute(2, 0, 3, 1, 4)  # 3, B, nH, N, hd
        out = attend(qkv[0], qkv[1], qkv[2], None, scale=self.scale, fused=fused)  # B, nH, N, hd
        out = out.transpose(1, 2).reshape(b, h, w, c)  # B, H, W, C
        out = self._add_lepe(out, x.view(b, h, w, c))  # B, H, W, C
        return self.proj(out).reshape(b, n, c)
