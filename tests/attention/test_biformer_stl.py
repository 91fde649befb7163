"""BiFormer-STL (rayleizhu/BiFormer ``models/biformer_stl.py``): the Swin-Tiny-layout
BiFormer of the paper's ablations, and the two builder options it needs (the
``patch_bn`` stem and the ``bn_conv`` downsampling)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from ablate.errors import ConfigError
from ablate.measure import count_params
from ablate.models import PRESET_INFO, build, check_arch, create_preset, preset_arch, resolve_arch, stage_resolutions

# The preset shrunk to small maps: 2x2 regions, top-k that fit 4 regions.
SMALL: dict[str, Any] = dict(preset="biformer_stl", img_size=32, dims=[8, 16, 24, 32], num_heads=[1, 2, 3, 8],
                             num_classes=5, n_win=2, topk=[1, 2, 4, -2])


def _official_param_count() -> int:
    """BiFormer-STL's parameters counted by hand from the official modules."""
    dims, depths = [96, 192, 384, 768], [2, 2, 6, 2]
    total = 3 * 96 * 4 * 4 + 96 + 2 * 96  # stem: Conv2d(3, 96, 4, 4) + BatchNorm2d
    for i, (c, n) in enumerate(zip(dims, depths)):
        norms, mlp = 2 * 2 * c, 8 * c * c + 5 * c
        if i < 3:  # BiLevelRoutingAttention: qkv (bias), wo, lepe 5x5 depthwise
            attn = (3 * c * c + 3 * c) + (c * c + c) + (25 * c + c)
        else:  # AttentionLePE: qkv without bias, proj, lepe
            attn = 3 * c * c + (c * c + c) + (25 * c + c)
        total += n * (norms + attn + mlp)
        if i:  # BatchNorm2d(C_in) then Conv2d(C_in, C, 2, 2)
            total += 2 * dims[i - 1] + 4 * dims[i - 1] * c + c
    return total + 2 * 768 + 768 * 1000 + 1000  # final BatchNorm2d, head


def test_biformer_stl_is_verified_against_the_readme_row() -> None:
    info = PRESET_INFO["biformer_stl"]
    assert info["verified"] and (info["params_m"], info["gflops"]) == (28.4, 4.6)
    assert "BiFormer-STL" in info["source"] and "ablation" in info["source"]


def test_biformer_stl_param_count_is_the_official_modules() -> None:
    with torch.device("meta"):
        model = create_preset("biformer_stl")
    assert count_params(model) == _official_param_count() == 28_372_552


def test_biformer_stl_modules() -> None:
    with torch.device("meta"):
        model = create_preset("biformer_stl")
    r = model.arch
    assert r["dims"] == [96, 192, 384, 768] and r["depths"] == [2, 2, 6, 2]
    assert r["topk"] == [1, 4, 16, -2] and r["n_win"] == 7 and r["side_dwconv"] == 5
    stem = model.patch_embed
    assert stem.proj.kernel_size == (4, 4) and stem.proj.stride == (4, 4) and stem.proj.padding == (0, 0)
    assert isinstance(stem.norm, nn.BatchNorm2d) and stem.norm.num_features == 96
    for i, stage in enumerate(model.stages):
        down = stage.downsample
        if i == 0:
            assert down is None
            continue
        assert isinstance(down.norm, nn.BatchNorm2d) and down.norm.num_features == r["dims"][i - 1]
        assert down.conv.kernel_size == (2, 2) and down.conv.stride == (2, 2) and down.conv.padding == (0, 0)
    heads = []
    for stage, dim in zip(model.stages, r["dims"]):
        for block in stage.blocks:
            assert block.pos_embed is None  # no 3x3 depthwise conv before attention (biformer.py only)
            assert math.isclose(block.norm1.eps, 1e-6) and math.isclose(block.norm2.eps, 1e-6)
            assert block.mlp.fc1.out_features == 4 * dim
            assert block.attn.lepe.kernel_size == (5, 5)
        heads.append(stage.blocks[0].attn.num_heads)
    assert heads == [3, 6, 12, 8]  # the last stage's AttentionLePE(dim) keeps its default 8 heads
    last = model.stages[3].blocks[0].attn
    assert not last.routing and last.qkv.bias is None
    assert model.stages[0].blocks[0].attn.routing and model.stages[0].blocks[0].attn.qkv.bias is not None
    assert isinstance(model.norm, nn.BatchNorm2d)
    assert model.stages[3].blocks[-1].drop_path.p == pytest.approx(0.1)
    assert stage_resolutions(r) == [(56, 56), (28, 28), (14, 14), (7, 7)]


def _reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The official forward written out over the model's own submodules (NCHW between
    stages, NHWC blocks): conv -> BN stem; BN -> conv downsampling; final BN; mean pool."""
    fmap = model.patch_embed.norm(model.patch_embed.proj(x))  # B, C, H, W
    for stage in model.stages:
        if stage.downsample is not None:
            fmap = stage.downsample.conv(stage.downsample.norm(fmap))  # B, C', H/2, W/2
        b, c, h, w = fmap.shape
        t = fmap.permute(0, 2, 3, 1)  # B, H, W, C
        for block in stage.blocks:
            t = t + block.attn(block.norm1(t).reshape(b, h * w, c), (h, w)).view(b, h, w, c)
            t = t + block.mlp(block.norm2(t))
        fmap = t.permute(0, 3, 1, 2)  # B, C, H, W
    return model.head(model.norm(fmap).mean((2, 3)))


def test_forward_is_the_official_order() -> None:
    torch.manual_seed(0)
    model = build(SMALL)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    model(x)  # move the BatchNorm running statistics off their init
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference(model, x))


@pytest.mark.parametrize("size", [32, 36, 44])
def test_stage_resolutions_match_the_forward_pass(size: int) -> None:
    arch = dict(SMALL, img_size=size)
    model = build(arch).eval()
    maps = model.forward_stages(torch.randn(1, 3, size, size))
    assert [tuple(m.shape[2:]) for m in maps] == stage_resolutions(arch)
    assert model(torch.randn(2, 3, size, size)).shape == (2, 5)


def test_new_stem_and_downsample_work_with_other_attention() -> None:
    arch = dict(img_size=32, embed_dim=8, depths=[1, 1, 1], num_heads=1, num_classes=3,
                stem="patch_bn", downsample="bn_conv")
    check_arch(arch)
    assert resolve_arch(resolve_arch(arch)) == resolve_arch(arch)
    out = build(arch)(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 3)
    overlap = dict(arch, use_conv_embed=True, img_size=30)  # 7x7 stride-4 stem, then BatchNorm
    model = build(overlap)
    assert model.patch_embed.proj.kernel_size == (7, 7) and isinstance(model.patch_embed.norm, nn.BatchNorm2d)
    maps = model.forward_stages(torch.randn(1, 3, 30, 30))
    assert [tuple(m.shape[2:]) for m in maps] == stage_resolutions(overlap)


@pytest.mark.parametrize(("arch", "pattern"), [
    (dict(SMALL, patch_norm=False), "stem 'patch_bn' is the patch stem with BatchNorm"),
    (dict(SMALL, downsample="bn_con"), "did you mean 'bn_conv'"),
    (dict(SMALL, stem="patch_b"), "did you mean 'patch_bn'"),
])
def test_option_errors(arch: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        check_arch(arch)


def test_the_other_presets_keep_their_stems_and_downsampling() -> None:
    assert {n: (preset_arch(n).get("stem", "patch"), preset_arch(n).get("downsample", "conv"))
            for n in ("biformer_small", "swin_tiny", "focal_tiny")} == {
        "biformer_small": ("convs", "conv_bn"), "swin_tiny": ("patch", "merge"), "focal_tiny": ("patch", "conv")}
    with torch.device("meta"):
        stem = create_preset("focal_tiny").patch_embed
    assert isinstance(stem.norm, nn.LayerNorm) and not stem.batch_norm
