"""A hierarchical (pyramid) vision transformer with a pluggable token mixer per stage.

The skeleton is the one Swin and Focal Transformer share (official code:
https://github.com/microsoft/Focal-Transformer ``classification/focal_transformer.py``,
https://github.com/microsoft/Swin-Transformer ``models/swin_transformer.py``):

    image -> patch embedding (conv, stride ``patch_size``, LayerNorm)
          -> stage 1 blocks -> downsample -> stage 2 blocks -> ... -> stage n blocks
          -> LayerNorm (``final_norm``; none: FLatten-PVT) -> average pool -> Linear head

``class_token``: a token joins the *last* stage (after its downsampling, before its position
table; DeiT's order with one stage, PVT v1's with four) and the head reads it, not the mean.

Every block is pre-norm: ``x + drop_path(mixer(norm1(x), hw))`` then
``x + drop_path(mlp(norm2(x)))``. The mixer is any registered attention family
(:mod:`ablate.attention`), built with the stage's map size as ``input_resolution``.

Downsampling between stages (``downsample``):

* ``"conv"`` — Focal's: the official ``PatchEmbed`` reused with patch size 2, a
  ``Conv2d(C, C', 2, stride 2)`` followed by ``LayerNorm(C')`` (with
  ``use_conv_embed`` an overlapping ``3x3`` stride-2 conv, and a ``7x7`` stride-4 stem);
* ``"merge"`` — Swin's ``PatchMerging``: 2x2 neighbours concatenated,
  ``LayerNorm(4C)``, ``Linear(4C, C', bias=False)``; odd maps are zero-padded first;
* ``"conv_bn"`` — BiFormer's (``models/biformer.py``): ``Conv2d(C, C', 3, stride 2,
  padding 1)`` then ``BatchNorm2d(C')``;
* ``"bn_conv"`` — BiFormer-STL's (``models/biformer_stl.py``), norm *before* the conv:
  ``BatchNorm2d(C)`` then ``Conv2d(C, C', 2, stride 2)`` (odd maps are floored, as
  ``"conv"``); ``use_conv_embed`` does not change it (nor ``"conv_bn"``).

The stem (``stem``): ``"patch"`` is the conv patch embedding above (LayerNorm unless
``patch_norm`` is false); ``"patch_bn"`` the same conv followed by ``BatchNorm2d``
(BiFormer-STL's ``Conv2d(3, C, 4, stride 4)`` + ``BatchNorm2d``); ``"convs"`` BiFormer's
two overlapping 3x3 stride-2 convs with BatchNorm and a GELU between.

Deliberate deviations from the official code:

* The downsample layer opens stage ``i`` instead of closing stage ``i-1`` (timm's
  layout, so ``stages.i`` holds everything at reduction ``patch_size * 2**i``).
  Parameters and FLOPs are the same; checkpoint keys move by one stage.
* Any image size runs: the map of each stage is computed from the conv arithmetic and
  passed to the mixer at run time; ``img_size`` only fixes ``input_resolution`` (which
  window clamps and relative-position tables depend on) and what ``check_arch`` checks.
* A mixer option named ``shift_size`` is given to the odd blocks of a stage only and
  0 to the even ones: Swin's W-MSA / SW-MSA alternation, which Focal's ``use_shift``
  also follows. Focal's ``expand_layer`` (always "all" in the released configs) and
  ``focal_stages`` are expressed by per-stage option lists (``pool_method: [..., "none"]``).
* Initialisation is the official one for every ``nn.Linear`` (truncated normal, std
  0.02, zero bias) and ``nn.LayerNorm`` (ones, zeros), mixers included, exactly as
  the official ``_init_weights``; a mixer that must keep a special init can define
  ``init_weights()``, which the builder calls afterwards.

What a model is built from is an :class:`~ablate.models.arch.Architecture` (or an arch
dict, resolved by :mod:`ablate.models.vit_arch`); :func:`build` checks it and constructs. The
stems, downsampling layers, stochastic depth and MLP live in :mod:`ablate.models.vit_layers`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ablate.attention import BlockContext, TokenMixer, create_mixer
from ablate.models.arch import Architecture
from ablate.models.vit_arch import (
    _block_options,
    _maps,
    _resolved,
    _stage_options,
    check_arch,
    resolve_arch,
)
from ablate.models.vit_layers import (
    BNConvDownsample,
    ConvBNDownsample,
    ConvDownsample,
    ConvStem,
    DropPath,
    Mlp,
    PatchEmbed,
    PatchMerging,
)

__all__ = ["HierarchicalViT", "build", "create_preset", "focal_base", "focal_small", "focal_tiny", "init_weights",
           "swin_tiny"]


def build(arch: Mapping[str, Any] | Architecture) -> HierarchicalViT:
    """Check an architecture and construct its model.

    Args:
        arch: an :class:`Architecture` (already resolved), or an arch dict (see
            :mod:`ablate.models.vit_arch`), resolved here once.

    Returns:
        A :class:`HierarchicalViT` in training mode; ``model.arch`` holds the resolved dict.

    Raises:
        ConfigError, Infeasible: as :func:`check_arch`.
    """
    resolved = arch if isinstance(arch, Architecture) else Architecture("classify", resolve_arch(arch))
    check_arch(resolved)
    return HierarchicalViT(resolved)


def create_preset(name: str, **overrides: Any) -> nn.Module:
    """Build a preset; keyword arguments override its arch keys (caller wins).

    Args:
        name: a name from :func:`list_presets`.
        **overrides: any arch key (``img_size=32``, ``num_classes=10``, ``depths=[...]``).

    Returns:
        The model; ``model.arch`` is its resolved arch dict (with ``preset=name``).
    """
    return build({"preset": name, **overrides})


def focal_tiny(**kwargs: Any) -> nn.Module:
    """Focal-T (28.9M params, 4.9 GFLOPs at 224)."""
    return create_preset("focal_tiny", **kwargs)


def focal_small(**kwargs: Any) -> nn.Module:
    """Focal-S (51.1M params, 9.4 GFLOPs at 224)."""
    return create_preset("focal_small", **kwargs)


def focal_base(**kwargs: Any) -> nn.Module:
    """Focal-B (89.8M params, 16.4 GFLOPs at 224)."""
    return create_preset("focal_base", **kwargs)


def swin_tiny(**kwargs: Any) -> nn.Module:
    """Swin-T (28.3M params, 4.5 GFLOPs at 224), the softmax-window baseline."""
    return create_preset("swin_tiny", **kwargs)


class Block(nn.Module):
    """Pre-norm transformer block around any token mixer.

    With ``pos_conv`` > 0 the block first adds a depthwise-conv position embedding of
    its input map (BiFormer's ``before_attn_dwconv``): ``x = x + dwconv(x)``.
    """

    def __init__(self, dim: int, mixer: TokenMixer, mlp_ratio: float, drop: float, drop_path: float, *,
                 norm_eps: float = 1e-5, pos_conv: int = 0) -> None:
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, pos_conv, padding=pos_conv // 2, groups=dim) if pos_conv else None
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = mixer
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], state: dict[str, Any] | None = None) -> torch.Tensor:
        """Tokens ``(B, [P+]H*W, C)`` of an ``hw`` map -> same shape; ``state`` feeds stateful mixers."""
        if self.pos_embed is not None:
            b, n, c = x.shape
            fmap = x.transpose(1, 2).reshape(b, c, hw[0], hw[1])  # B, C, H, W
            x = x + self.pos_embed(fmap).flatten(2).transpose(1, 2)  # B, N, C
        if self.attn.stateful:
            mixed = self.attn(self.norm1(x), hw, state if state is not None else {"aux_losses": []})
        else:
            mixed = self.attn(self.norm1(x), hw)
        x = self.drop_path.residual(x, mixed)  # B, N, C: x + drop_path(mixed)
        return self.drop_path.residual(x, self.mlp(self.norm2(x)))  # B, N, C


def resize_pos_embed(table: torch.Tensor, prefix: int, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """A learned ``(1, P+H*W, C)`` position table at another map size (bilinear, as PVT's code).

    The ``P`` prefix (class-token) rows are kept as they are.
    """
    if tuple(src) == tuple(dst):
        return table
    c = table.shape[-1]
    grid = table[:, prefix:].reshape(1, src[0], src[1], c).permute(0, 3, 1, 2)  # 1, C, H, W
    grid = nn.functional.interpolate(grid, size=dst, mode="bilinear", align_corners=False)  # 1, C, H', W'
    return torch.cat([table[:, :prefix], grid.flatten(2).transpose(1, 2)], dim=1)  # 1, P+H'*W', C


class Stage(nn.Module):
    """Optional downsampling, prefix tokens (a class token), a learned position table (PVT, DeiT), ``depth`` blocks."""

    def __init__(self, downsample: nn.Module | None, blocks: list[Block], *,
                 pos_embed: tuple[int, int] | None = None, dim: int = 0, prefix: int = 0) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)
        self.pos_hw = pos_embed
        self.prefix = prefix
        if pos_embed is not None:
            self.pos_embed = nn.Parameter(torch.zeros(1, prefix + pos_embed[0] * pos_embed[1], dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor, hw: tuple[int, int],
                state: dict[str, Any] | None = None,
                prefix: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        if self.downsample is not None:
            x, hw = self.downsample(x, hw)  # B, N', C'
        if prefix is not None:
            x = torch.cat([prefix.expand(x.shape[0], -1, -1), x], dim=1)  # B, P+N, C
        if self.pos_hw is not None:
            x = x + resize_pos_embed(self.pos_embed, self.prefix, self.pos_hw, hw)  # B, P+N, C
        for block in self.blocks:
            x = block(x, hw, state)  # B, P+N, C
        return x, hw


def init_weights(module: nn.Module) -> None:
    """The official init of every ViT the papers train: truncated-normal (0.02) linears with
    zero bias, unit LayerNorms (``model.apply(init_weights)``)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class HierarchicalViT(nn.Module):
    """Hierarchical ViT following timm's backbone contract.

    Build it with :func:`build` (which checks the arch first) or directly from a
    resolved arch dict. One stage with ``class_token``: an isotropic DeiT-style ViT.

    Attributes:
        arch: the resolved arch dict the model was built from.
        num_features: channels of the last stage (the head's input).
        feature_info: ``[dict(num_chs, reduction, module)]``, one per stage, as timm.
        aux_loss: the sum of the auxiliary losses stateful mixers (LaViT's diagonality
            loss) added during the last forward pass, already weighted; ``None`` when
            there were none. The trainer adds it to the task loss.
    """

    def __init__(self, arch: Mapping[str, Any] | Architecture) -> None:
        super().__init__()
        r = _resolved(arch)
        self.arch = r
        n = len(r["depths"])
        dims, depths, heads, maps = r["dims"], r["depths"], r["num_heads"], _maps(r)
        ratios = r["mlp_ratio"] if isinstance(r["mlp_ratio"], list) else [r["mlp_ratio"]] * n
        self.num_classes = r["num_classes"]
        self.num_features = dims[-1]
        self.prefix = 1 if r["class_token"] else 0
        self.aux_loss: torch.Tensor | None = None

        if r["stem"] == "convs":
            self.patch_embed: nn.Module = ConvStem(r["in_chans"], dims[0])
        else:
            self.patch_embed = PatchEmbed(r["in_chans"], dims[0], r["patch_size"], overlap=r["use_conv_embed"],
                                          norm=r["patch_norm"], batch_norm=r["stem"] == "patch_bn")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dims[-1])) if self.prefix else None
        if self.cls_token is not None:  # joins the last stage (PVT v1; DeiT's only stage)
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.pos_drop = nn.Dropout(r["drop_rate"])
        total = sum(depths)
        rates = [r["drop_path_rate"] * j / (total - 1) if total > 1 else 0.0 for j in range(total)]

        stages: list[Stage] = []
        self.feature_info: list[dict[str, Any]] = []
        for i in range(n):
            family, opts = _stage_options(r, i)
            downsample: nn.Module | None = None
            if i > 0:
                if r["downsample"] == "merge":
                    downsample = PatchMerging(dims[i - 1], dims[i])
                elif r["downsample"] == "conv_bn":
                    downsample = ConvBNDownsample(dims[i - 1], dims[i])
                elif r["downsample"] == "bn_conv":
                    downsample = BNConvDownsample(dims[i - 1], dims[i])
                else:
                    downsample = ConvDownsample(dims[i - 1], dims[i], overlap=r["use_conv_embed"])
            first = sum(depths[:i])
            blocks = []
            for j in range(depths[i]):
                context = BlockContext(stage=i, index=j, depth=depths[i],
                                       prev_num_heads=heads[i - 1] if i else None,
                                       prev_resolution=maps[i - 1] if i else None)
                mixer = create_mixer(family, dims[i], heads[i], input_resolution=maps[i], context=context,
                                     **_block_options(opts, j))
                blocks.append(Block(dims[i], mixer, ratios[i], r["drop_rate"], rates[first + j],
                                    norm_eps=r["norm_eps"], pos_conv=r["pos_conv"]))
            pos = maps[i] if r["pos_embed"] == "absolute" else None
            stages.append(Stage(downsample, blocks, pos_embed=pos, dim=dims[i], prefix=self.prefix * (i == n - 1)))
            self.feature_info.append(dict(num_chs=dims[i], reduction=r["patch_size"] * 2 ** i, module=f"stages.{i}"))
        self.stages = nn.ModuleList(stages)
        self._stateful = any(isinstance(m, TokenMixer) and m.stateful for m in self.modules())

        self.norm: nn.Module = (nn.BatchNorm2d(self.num_features) if r["final_norm"] == "batch"
                                else nn.Identity() if r["final_norm"] == "none"
                                else nn.LayerNorm(self.num_features, eps=r["norm_eps"]))
        self.head_drop = nn.Dropout(r["drop_rate"])
        self.head = nn.Linear(self.num_features, self.num_classes) if self.num_classes > 0 else nn.Identity()

        self.apply(init_weights)
        for module in self.modules():
            if isinstance(module, TokenMixer) and callable(getattr(module, "init_weights", None)):
                module.init_weights()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay, beyond norms and biases.

        The trainer (timm's ``create_optimizer_v2``) exempts every 1-D parameter and bias
        anyway; these are the tables that each family's ``no_weight_decay()`` and
        ``no_weight_decay_keywords()`` add, as timm's models of the same families do:

        * every relative-position bias table (Swin, FLatten-Swin: the keyword
          ``relative_position_bias_table``; Focal also lists its ``_to_neighbors`` and
          ``_to_windows`` tables; timm's ``SwinTransformer.no_weight_decay``);
        * the class token and the learned position tables (DeiT's and timm's
          ``VisionTransformer``: ``{'pos_embed', 'cls_token'}``).

        Not exempt, as in the official codes: FLatten's ``positional_encoding`` and
        ``scale`` (3-D, in none of its lists) and anything of BiFormer (its list names
        ``pos_embed`` and ``cls_token``, which match none of its parameters: its
        ``pos_embed`` is a conv). One deliberate deviation: PVT's and FLatten-PVT's codes
        list only ``{'cls_token'}`` (their per-stage ``pos_embed`` tables decay, with the
        comment that exempting them "may be better"); here every learned position table
        is exempt, DeiT's rule.
        """
        return {name for name, _ in self.named_parameters()
                if "relative_position_bias_table" in name or name.endswith((".pos_embed", "cls_token"))}

    def _run(self, x: torch.Tensor) -> Iterator[tuple[torch.Tensor, tuple[int, int]]]:
        """Yield each stage's tokens ``(B, P+N_i, C_i)`` and map size; sets :attr:`aux_loss` at the end."""
        tokens, hw = self.patch_embed(x)  # B, N, C
        tokens = self.pos_drop(tokens)
        state: dict[str, Any] | None = {"aux_losses": []} if self._stateful else None
        self.aux_loss = None
        for i, stage in enumerate(self.stages):
            last = i == len(self.stages) - 1
            tokens, hw = stage(tokens, hw, state, self.cls_token if last else None)  # B, P+N_i, C_i
            if last and state is not None and state["aux_losses"]:
                self.aux_loss = torch.stack([loss.float() for loss in state["aux_losses"]]).sum()
            yield tokens, hw

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-stage feature maps ``(B, C_i, H_i, W_i)`` (before the final norm; class token dropped), for necks."""
        outs = []
        for i, (tokens, hw) in enumerate(self._run(x)):
            b, _, c = tokens.shape
            tokens = tokens[:, self.prefix:] if i == len(self.stages) - 1 else tokens  # the class token dropped
            outs.append(tokens.transpose(1, 2).reshape(b, c, hw[0], hw[1]))  # B, C_i, H_i, W_i
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> the normalised last stage: a map ``(B, H_n, W_n, C_n)`` (timm's Swin layout), or
        tokens ``(B, 1+N, C)`` with a class token (timm's ViT layout)."""
        for tokens, hw in self._run(x):
            pass
        if self.cls_token is not None:
            return self.norm(tokens)  # B, 1+N, C
        b, _, c = tokens.shape
        if isinstance(self.norm, nn.BatchNorm2d):
            fmap = self.norm(tokens.transpose(1, 2).reshape(b, c, hw[0], hw[1]))  # B, C, H, W
            return fmap.permute(0, 2, 3, 1)  # B, H, W, C
        return self.norm(tokens).view(b, hw[0], hw[1], c)  # B, H_n, W_n, C_n

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features -> pooled ``(B, C)`` (class token, or mean over the map) if ``pre_logits`` else logits."""
        x = x[:, 0] if self.cls_token is not None else x.mean(dim=(1, 2))  # B, C
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C_in, H, W)`` -> logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))
