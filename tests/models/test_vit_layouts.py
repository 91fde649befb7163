"""The builder's other skeletons: PVT (per-stage position tables, spatial reduction),
DeiT (isotropic, class token), BiFormer (conv stem, conv+BN downsampling, conv position
embedding, final BatchNorm), and the auxiliary-loss path of stateful mixers."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate.attention import MixerOptions, TokenMixer, create_mixer, register_attention
from ablate.attention import _registry
from ablate.errors import ConfigError, Infeasible
from ablate.models import build, check_arch, resolve_arch, stage_resolutions
from ablate.models.vit import resize_pos_embed

PVT = dict(img_size=64, dims=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_heads=[1, 2, 3, 4],
           mlp_ratio=[8, 8, 4, 4], num_classes=5, pos_embed="absolute", norm_eps=1e-6,
           attention="softmax", sr_ratio=[4, 2, 1, 1], rel_pos_bias=False)
DEIT = dict(img_size=32, patch_size=8, dims=[24], depths=[2], num_heads=[3], num_classes=5,
            class_token=True, pos_embed="absolute", patch_norm=False, attention="softmax", rel_pos_bias=False)
BIFORMER = dict(img_size=32, dims=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_heads=[1, 2, 3, 4], num_classes=5,
                stem="convs", downsample="conv_bn", pos_conv=3, final_norm="batch", mlp_ratio=3, norm_eps=1e-6)


# --------------------------------------------------------------------------- PVT


def test_pvt_layout_has_a_position_table_per_stage_and_mlp_ratios_per_stage() -> None:
    model = build(PVT)
    maps = stage_resolutions(PVT)
    assert maps == [(16, 16), (8, 8), (4, 4), (2, 2)]
    for stage, dim, hw in zip(model.stages, PVT["dims"], maps):
        assert stage.pos_embed.shape == (1, hw[0] * hw[1], dim)
    assert [s.blocks[0].mlp.fc1.out_features for s in model.stages] == [64, 128, 96, 128]
    assert {"stages.0.pos_embed", "stages.3.pos_embed"} <= model.no_weight_decay()
    assert model.arch["mlp_ratio"] == [8.0, 8.0, 4.0, 4.0]


def test_pvt_runs_at_other_image_sizes_by_resizing_the_tables() -> None:
    model = build(PVT).eval()
    for size in (64, 96, 48):
        maps = model.forward_stages(torch.randn(1, 3, size, size))
        assert [tuple(m.shape[2:]) for m in maps] == stage_resolutions(PVT, size)
        assert all(torch.isfinite(m).all() for m in maps)


def test_resize_pos_embed_keeps_prefix_rows_and_is_bilinear() -> None:
    table = torch.randn(1, 1 + 4 * 4, 3)
    assert resize_pos_embed(table, 1, (4, 4), (4, 4)) is table
    out = resize_pos_embed(table, 1, (4, 4), (8, 6))
    assert out.shape == (1, 1 + 48, 3)
    torch.testing.assert_close(out[:, :1], table[:, :1])
    grid = table[:, 1:].reshape(1, 4, 4, 3).permute(0, 3, 1, 2)
    expect = F.interpolate(grid, size=(8, 6), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(out[:, 1:], expect)


def _pvt_reference(mixer: nn.Module, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """PVT's spatial-reduction attention written out: reduce the map, attend, project."""
    b, n, c = x.shape
    nh, hd = mixer.num_heads, c // mixer.num_heads
    q = mixer.q(x).view(b, n, nh, hd).transpose(1, 2)
    reduced = mixer.reduce(x.transpose(1, 2).reshape(b, c, *hw)).flatten(2).transpose(1, 2)
    k, v = mixer.kv(mixer.norm(reduced)).chunk(2, dim=-1)
    k = k.reshape(b, -1, nh, hd).transpose(1, 2)
    v = v.reshape(b, -1, nh, hd).transpose(1, 2)
    attn = (q @ k.transpose(-2, -1) * hd ** -0.5).softmax(-1)
    return mixer.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


@pytest.mark.parametrize("hw", [(8, 8), (6, 10)])
def test_softmax_spatial_reduction_is_pvts_attention(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    mixer = create_mixer("softmax", 16, 2, input_resolution=(8, 8), sr_ratio=2, rel_pos_bias=False).double().eval()
    x = torch.randn(2, hw[0] * hw[1], 16, dtype=torch.float64)
    expect = _pvt_reference(mixer, x, hw)
    torch.testing.assert_close(mixer(x, hw), expect, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(mixer.forward_reference(x, hw), expect, atol=1e-10, rtol=1e-10)
    # Same parameter count as one qkv linear plus PVT's reduction conv and norm.
    plain = create_mixer("softmax", 16, 2, rel_pos_bias=False)
    extra = sum(p.numel() for p in mixer.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == (16 * 16 * 2 * 2 + 16) + 2 * 16


@pytest.mark.parametrize(("opts", "pattern"), [
    ({"sr_ratio": 2}, "rel_pos_bias needs sr_ratio=1"),
    ({"sr_ratio": 2, "rel_pos_bias": False, "window_size": 4}, "sr_ratio needs global attention"),
    ({"sr_ratio": 16, "rel_pos_bias": False}, "at most the map side"),
    ({"sr_ratio": 0, "rel_pos_bias": False}, "sr_ratio must be >= 1"),
])
def test_softmax_spatial_reduction_infeasible(opts: dict, pattern: str) -> None:
    with pytest.raises(Infeasible, match=pattern):
        create_mixer("softmax", 16, 2, input_resolution=(8, 8), **opts)


# --------------------------------------------------------------------------- DeiT


def test_deit_layout_uses_a_class_token() -> None:
    torch.manual_seed(0)
    model = build(DEIT).eval()
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (2, 1 + 16, 24)  # B, 1+N, C (timm's ViT layout)
    assert model.stages[0].pos_embed.shape == (1, 17, 24)
    torch.testing.assert_close(model.forward_head(feats), model.head(feats[:, 0]))
    torch.testing.assert_close(model(x), model.head(feats[:, 0]))
    maps = model.forward_stages(x)
    assert [tuple(m.shape) for m in maps] == [(2, 24, 4, 4)]  # class token dropped
    assert isinstance(model.patch_embed.norm, nn.Identity)
    assert {"cls_token", "stages.0.pos_embed"} <= model.no_weight_decay()
    # Larger images: the table is resized, the class token row kept.
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 5)


def test_softmax_with_a_class_token_is_plain_attention_over_all_tokens() -> None:
    torch.manual_seed(0)
    mixer = create_mixer("softmax", 16, 2, input_resolution=(4, 4), rel_pos_bias=False).double().eval()
    x = torch.randn(2, 1 + 16, 16, dtype=torch.float64)
    b, n, c = x.shape
    q, k, v = mixer.qkv(x).view(b, n, 3, 2, 8).permute(2, 0, 3, 1, 4)
    expect = mixer.proj(((q @ k.transpose(-2, -1)) * 8 ** -0.5).softmax(-1).matmul(v).transpose(1, 2).reshape(b, n, c))
    torch.testing.assert_close(mixer(x, (4, 4)), expect)
    with pytest.raises(ValueError, match="class token first"):
        mixer(torch.randn(1, 15, 16, dtype=torch.float64), (4, 4))
    windowed = create_mixer("softmax", 16, 2, input_resolution=(4, 4), window_size=2)
    with pytest.raises(ValueError, match="tokens"):
        windowed(torch.randn(1, 17, 16), (4, 4))


def test_class_token_with_a_table_gives_prefix_rows_no_bias() -> None:
    torch.manual_seed(0)
    mixer = create_mixer("softmax", 16, 2, input_resolution=(4, 4)).eval()
    x = torch.randn(1, 17, 16)
    torch.testing.assert_close(mixer(x, (4, 4)), mixer.forward_reference(x, (4, 4)), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("arch", "error", "pattern"), [
    (dict(DEIT, window_size=2), Infeasible, "class_token joins the last stage"),
    # A class token joins the last stage only: a windowed last stage refuses it, a windowed first one does not.
    (dict(DEIT, dims=[24, 48], depths=[1, 1], num_heads=[3, 6], window_size=[None, 2]), Infeasible,
     r"class_token joins the last stage.*window_size=2"),
    (dict(PVT, class_token=True, sr_ratio=[4, 2, 1, 2]), Infeasible, r"class_token joins.*sr_ratio=2"),
    (dict(PVT, final_norm="nothing"), ConfigError, r"final_norm must be one of 'layer', 'batch', 'none'"),
    (dict(DEIT, pos_conv=3), ConfigError, "cannot be combined"),
    (dict(DEIT, final_norm="batch"), ConfigError, "cannot be combined with class_token"),
    (dict(BIFORMER, patch_size=8), ConfigError, "patch_size must be 4"),
    (dict(BIFORMER, pos_conv=2), ConfigError, "odd kernel"),
    (dict(BIFORMER, stem="conv"), ConfigError, "did you mean 'convs'"),
    (dict(PVT, pos_embed="abs"), ConfigError, "pos_embed must be one of"),
    (dict(PVT, mlp_ratio=[4, 4]), ConfigError, "mlp_ratio has 2 entries"),
])
def test_layout_errors(arch: dict[str, Any], error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        check_arch(arch)


# --------------------------------------------------------------------------- BiFormer


@pytest.mark.parametrize("size", [32, 36, 30])
def test_biformer_skeleton_maps_match_the_forward_pass(size: int) -> None:
    model = build(dict(BIFORMER, img_size=size)).eval()
    maps = model.forward_stages(torch.randn(1, 3, size, size))
    assert [tuple(m.shape[2:]) for m in maps] == stage_resolutions(dict(BIFORMER, img_size=size))
    assert model(torch.randn(2, 3, size, size)).shape == (2, 5)


def test_biformer_skeleton_modules() -> None:
    model = build(BIFORMER)
    stem = model.patch_embed.layers
    assert [type(m) for m in stem] == [nn.Conv2d, nn.BatchNorm2d, nn.GELU, nn.Conv2d, nn.BatchNorm2d]
    assert stem[0].out_channels == 4 and stem[0].kernel_size == (3, 3) and stem[0].stride == (2, 2)
    down = model.stages[1].downsample
    assert down.conv.kernel_size == (3, 3) and down.conv.stride == (2, 2) and isinstance(down.norm, nn.BatchNorm2d)
    block = model.stages[0].blocks[0]
    assert block.pos_embed.groups == 8 and block.pos_embed.kernel_size == (3, 3)
    assert math.isclose(block.norm1.eps, 1e-6) and block.mlp.fc1.out_features == 24
    assert isinstance(model.norm, nn.BatchNorm2d)


def test_conv_position_embedding_is_a_residual_depthwise_conv() -> None:
    model = build(BIFORMER).eval()
    block = model.stages[0].blocks[0]
    x = torch.randn(1, 64, 8)
    hw = (8, 8)
    with torch.no_grad():
        y = x + block.pos_embed(x.transpose(1, 2).reshape(1, 8, 8, 8)).flatten(2).transpose(1, 2)
        y = y + block.attn(block.norm1(y), hw)
        y = y + block.mlp(block.norm2(y))
        torch.testing.assert_close(block(x, hw), y)


# --------------------------------------------------------------------------- stateful mixers


@dataclasses.dataclass(frozen=True)
class _ToyOptions(MixerOptions):
    weight: float = 0.5


class _Toy(TokenMixer):
    """A stateful mixer that counts the blocks it has seen and adds a weighted aux loss."""

    Options = _ToyOptions
    stateful = True

    def __init__(self, dim: int, num_heads: int, **kw: Any) -> None:
        super().__init__(dim, num_heads, **kw)
        self.lin = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], state: dict) -> torch.Tensor:
        state["seen"] = state.get("seen", []) + [(self.context.stage, self.context.index)]
        y = self.lin(x)
        state["aux_losses"].append(self.opts.weight * y.square().mean())
        return y


@pytest.fixture
def toy_family():
    register_attention("toy_stateful")(_Toy)
    yield "toy_stateful"
    _registry._REGISTRY.pop("toy_stateful")


def test_model_sums_the_aux_losses_of_stateful_mixers(toy_family: str) -> None:
    model = build(dict(img_size=16, dims=[8, 16], depths=[2, 1], num_heads=[1, 2], num_classes=3,
                       attention=toy_family))
    contexts = [(b.attn.context.stage, b.attn.context.index, b.attn.context.depth, b.attn.context.prev_num_heads,
                 b.attn.context.prev_resolution) for s in model.stages for b in s.blocks]
    assert contexts == [(0, 0, 2, None, None), (0, 1, 2, None, None), (1, 0, 1, 1, (4, 4))]
    captured: list[torch.Tensor] = []
    for stage in model.stages:
        for block in stage.blocks:
            block.attn.register_forward_hook(lambda m, args, out: captured.append(0.5 * out.square().mean()))
    model(torch.randn(2, 3, 16, 16))
    assert model.aux_loss is not None
    torch.testing.assert_close(model.aux_loss, torch.stack(captured).sum())
    model.aux_loss.backward()
    assert model.stages[0].blocks[0].attn.lin.weight.grad is not None


def test_stateless_models_have_no_aux_loss() -> None:
    model = build(dict(img_size=16, embed_dim=8, depths=[1], num_heads=1, num_classes=3))
    model(torch.randn(1, 3, 16, 16))
    assert model.aux_loss is None


def test_resolve_keeps_the_new_builder_keys_json_ready() -> None:
    for arch in (PVT, DEIT, BIFORMER):
        r = resolve_arch(arch)
        assert resolve_arch(r) == r
