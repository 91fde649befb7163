"""The hierarchical ViT, its arch dict, and the papers' presets.

Preset figures: params on the meta device (no memory, no init), FLOPs from a real CPU
build at 224 (Focal-B, the largest, takes a few seconds to build and count).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest
import torch

from ablate.attention import get_attention, list_attention
from ablate.errors import ConfigError, Infeasible
from ablate.measure import count_flops, count_params
from ablate.models import (
    ARCH_DEFAULTS,
    PRESET_INFO,
    HierarchicalViT,
    build,
    check_arch,
    create_preset,
    focal_tiny,
    list_presets,
    preset_arch,
    resolve_arch,
    stage_resolutions,
)

TINY: dict[str, Any] = dict(img_size=32, embed_dim=16, depths=[1, 1, 1, 1], num_heads=1, num_classes=10)


def _meta(name: str, **overrides: Any) -> HierarchicalViT:
    with torch.device("meta"):
        return create_preset(name, **overrides)


# --------------------------------------------------------------------------- presets


def test_every_preset_has_info_and_an_arch() -> None:
    assert set(list_presets()) == set(PRESET_INFO)
    for name in list_presets():
        info = PRESET_INFO[name]
        assert {"params_m", "gflops", "resolution", "source", "verified"} <= set(info)
        assert resolve_arch(preset_arch(name))["img_size"] == info["resolution"]


def _close(name: str, key: str, measured: float, rel_tol: float) -> bool:
    """Within ``rel_tol`` of the printed figure; for a paper that truncates to one
    decimal (FLatten prints DeiT-T's 1.26G as 1.2G), within the printed digit instead."""
    info = PRESET_INFO[name]
    printed = info[key]
    if info.get("truncated"):
        return printed <= measured < printed + 0.1
    return math.isclose(measured, printed, rel_tol=rel_tol)


@pytest.mark.parametrize("name", sorted(PRESET_INFO))
def test_preset_params_within_1_percent(name: str) -> None:
    params_m = count_params(_meta(name)) / 1e6
    assert _close(name, "params_m", params_m, 0.01), (params_m, PRESET_INFO[name]["params_m"])


@pytest.mark.parametrize("name", sorted(PRESET_INFO))
def test_preset_flops_within_3_percent(name: str) -> None:
    """Counted on the meta device (no memory, about a second each)."""
    info = PRESET_INFO[name]
    with torch.device("meta"):
        macs = count_flops(create_preset(name), torch.zeros(1, 3, info["resolution"], info["resolution"]))
    assert _close(name, "gflops", macs / 1e9, 0.03), (macs / 1e9, info["gflops"])


@pytest.mark.parametrize("name", ["focal_tiny", "biformer_tiny", "flatten_pvt_tiny"])
def test_meta_device_flops_equal_real_ones(name: str) -> None:
    with torch.device("meta"):
        meta = count_flops(create_preset(name), torch.zeros(1, 3, 224, 224))
    torch.manual_seed(0)
    start = time.perf_counter()
    real = count_flops(create_preset(name), torch.zeros(1, 3, 224, 224))
    assert meta == real
    assert time.perf_counter() - start < 60


def test_unverified_presets_say_so() -> None:
    unverified = {n for n, info in PRESET_INFO.items() if not info["verified"]}
    assert unverified == {"lavit_swin_tiny"}
    assert "could not be established" in PRESET_INFO["lavit_swin_tiny"]["source"]


def test_focal_tiny_use_conv_embed_matches_the_official_useconv_params() -> None:
    # Official table: Focal-T with convolutional embedding, 30.8M params.
    params_m = count_params(_meta("focal_tiny", use_conv_embed=True)) / 1e6
    assert math.isclose(params_m, 30.8, rel_tol=0.01), params_m


def test_preset_overrides_win_and_unknown_preset_suggests() -> None:
    assert resolve_arch({"preset": "focal_tiny", "dims": [32, 64, 96, 128]})["embed_dim"] == 32
    model = focal_tiny(img_size=32, num_classes=7, depths=[1, 1, 1, 1])
    assert model.arch["preset"] == "focal_tiny" and model.arch["num_classes"] == 7
    assert model.arch["focal_window"] == [7, 5, 3, 1]
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    with pytest.raises(ConfigError, match=r"unknown preset 'focal_tiyn'.*did you mean 'focal_tiny'"):
        preset_arch("focal_tiyn")
    with pytest.raises(ConfigError, match="did you mean 'swin_tiny'"):
        resolve_arch({"preset": "swin_tin"})


# --------------------------------------------------------------------------- timm contract


def test_tiny_contract_forward_features_head_feature_info() -> None:
    torch.manual_seed(0)
    model = build(TINY)
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (2, 1, 1, 128)  # B, H, W, C of the last stage
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features) == (2, 128)
    assert model.forward_head(feats).shape == (2, 10)
    torch.testing.assert_close(model.eval()(x), model.forward_head(model.forward_features(x)))
    assert model.feature_info == [dict(num_chs=16 * 2 ** i, reduction=4 * 2 ** i, module=f"stages.{i}")
                                  for i in range(4)]
    modules = dict(model.named_modules())
    maps = model.forward_stages(x)
    for info, fmap in zip(model.feature_info, maps):
        assert info["module"] in modules
        assert fmap.shape == (2, info["num_chs"], 32 // info["reduction"], 32 // info["reduction"])


def test_headless_model_and_stage_count() -> None:
    arch = {k: v for k, v in TINY.items() if k != "embed_dim"}
    model = build(dict(arch, num_classes=0, depths=[1, 2], dims=[8, 12], num_heads=[2, 3]))
    out = model(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 12) and len(model.stages) == 2
    assert [len(s.blocks) for s in model.stages] == [1, 2]


@pytest.mark.parametrize("arch", [
    dict(TINY, img_size=36),
    dict(TINY, img_size=36, downsample="merge"),
    dict(TINY, img_size=36, use_conv_embed=True),
    dict(TINY, img_size=30, use_conv_embed=True, depths=[1, 1, 1]),
    dict(TINY, img_size=64, patch_size=2, depths=[1, 1]),
])
def test_stage_resolutions_match_the_forward_pass(arch: dict[str, Any]) -> None:
    model = build(arch)
    maps = model.forward_stages(torch.randn(1, 3, arch["img_size"], arch["img_size"]))
    assert [tuple(m.shape[2:]) for m in maps] == stage_resolutions(arch)
    for stage, hw in zip(model.stages, stage_resolutions(arch)):
        assert all(block.attn.input_resolution == hw for block in stage.blocks)


def test_drop_path_increases_linearly_and_shift_goes_to_odd_blocks() -> None:
    model = build(dict(TINY, depths=[2, 3], num_heads=[1, 2], attention="softmax", window_size=4, shift_size=2,
                       drop_path_rate=0.4, img_size=64))
    blocks = [b for s in model.stages for b in s.blocks]
    rates = [getattr(b.drop_path, "p", 0.0) for b in blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert [b.attn.shift for b in blocks] == [0, 2, 0, 2, 0]


def test_swin_merge_downsample_has_no_bias_and_norms_4c() -> None:
    model = build(dict(TINY, downsample="merge"))
    merge = model.stages[1].downsample
    assert merge.reduction.bias is None and merge.norm.normalized_shape == (64,)


def test_no_weight_decay_names_the_relative_position_tables() -> None:
    model = build(dict(TINY, attention="focal"))
    names = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert names and names <= set(params)
    assert "stages.0.blocks.0.attn.relative_position_bias_table" in names
    assert not any("qkv" in n or "mlp" in n for n in names)


# --------------------------------------------------------------------------- arch dict


def test_resolve_is_json_serialisable_and_idempotent() -> None:
    archs = [
        TINY,
        dict(TINY, attention="focal", focal_window=[3, 3, 1, 1], window_size=4),
        dict(TINY, attention=["softmax", "focal", "focal", "softmax"], window_size=[None, 4, 4, None], focal_window=3),
        {"preset": "focal_tiny", "img_size": 64},
        {"preset": "swin_tiny"},
        {},
    ]
    for arch in archs:
        resolved = resolve_arch(arch)
        assert json.loads(json.dumps(resolved)) == resolved
        assert resolve_arch(resolved) == resolved
        assert resolve_arch(json.loads(json.dumps(resolved))) == resolved
        assert set(ARCH_DEFAULTS) <= set(resolved)


def test_resolve_fills_defaults_and_normalises() -> None:
    r = resolve_arch(dict(TINY, attention="focal", mlp_ratio=2))
    assert r["dims"] == [16, 32, 64, 128] and r["num_heads"] == [1, 2, 4, 8]
    assert r["mlp_ratio"] == 2.0 and isinstance(r["mlp_ratio"], float)
    defaults = get_attention("focal").Options()
    assert r["focal_level"] == defaults.focal_level and r["pool_method"] == defaults.pool_method
    mixed = resolve_arch(dict(TINY, attention=["softmax", "focal", "focal", "focal"]))
    assert mixed["focal_level"][0] is None and mixed["rel_pos_bias"][1:] == [None, None, None]
    same = resolve_arch(dict(TINY, attention=["focal"] * 4, focal_window=[3, 3, 3, 3]))
    assert same["attention"] == "focal" and same["focal_window"] == 3


@pytest.mark.parametrize(("arch", "error", "pattern"), [
    (dict(TINY, window_size=16), Infeasible,
     r"window_size=16 is larger than every stage's feature map \(8, 4, 2, 1\)"),
    (dict(TINY, attention="focal", window_size=16), Infeasible, r"larger than every stage's feature map"),
    (dict(TINY, num_heads=3), Infeasible, r"num_heads must divide.*dims\[0\]=16.*num_heads\[0\]=3"),
    (dict(TINY, num_heads=[1, 2, 4, 6]), Infeasible, r"dims\[3\]=128 and num_heads\[3\]=6"),
    (dict(TINY, img_size=8), Infeasible, r"img_size=8 is too small for 4 stages.*\(2, 1, 0, 0\)"),
    (dict(TINY, windw_size=4), ConfigError, r"unknown arch key 'windw_size'.*did you mean 'window_size'"),
    (dict(TINY, focal_level=2), ConfigError, r"unknown arch key 'focal_level'.*option of attention 'focal'"),
    (dict(TINY, attention="focal", focal_window=[7, 5, 3]), ConfigError,
     r"focal_window has 3 entries but depths has 4 stages"),
    (dict(TINY, depths=[1, 1, 1], num_heads=[1, 2, 4, 8]), ConfigError, r"num_heads has 4 entries.*3 stages"),
    (dict(TINY, attention="focla"), ConfigError, r"unknown attention 'focla'.*did you mean 'focal'"),
    (dict(TINY, attention=["softmax", "focal", "focal", "softmax"], focal_window=[None, 3, 3, 5]), ConfigError,
     r"focal_window\[3\]=5, but stage 3 uses attention 'softmax'"),
    (dict(TINY, attention="focal", pool_method="avg"), ConfigError, r"stage 0 \(focal\): pool_method must be"),
    (dict(TINY, mlp_ratio="4"), ConfigError, r"mlp_ratio must be a number"),
    (dict(TINY, depths=[]), ConfigError, r"depths must be a non-empty list"),
    (dict(TINY, downsample="merg"), ConfigError, r"did you mean 'merge'"),
    (dict(TINY, dims=[16, 32, 64, 128], embed_dim=8), ConfigError, r"embed_dim=8 disagrees with dims\[0\]=16"),
    (dict(TINY, attention="focal", focal_window=4), Infeasible, r"stage 0 \(focal, 8 map\): focal_window must be odd"),
    (dict(TINY, attention="softmax", window_size=4, shift_size=4), Infeasible, r"shift_size must be < window_size"),
])
def test_check_arch_errors(arch: dict[str, Any], error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        check_arch(arch)
    with pytest.raises(error):
        build(arch)


def test_window_check_is_per_value_over_the_stages_it_applies_to() -> None:
    check_arch(dict(TINY, attention="softmax", window_size=8))  # clamped at 4, 2, 1 as official
    check_arch(dict(TINY, attention="focal", window_size=[8, 4, 4, 4], focal_window=[3, 3, 1, 1]))
    with pytest.raises(Infeasible, match=r"window_size=16 is larger than the feature map of stages \[2, 3\] \(2, 1\)"):
        check_arch(dict(TINY, attention="focal", window_size=[8, 4, 16, 16]))


def test_check_arch_is_cheap() -> None:
    start = time.perf_counter()
    for _ in range(20):
        check_arch({"preset": "focal_base"})
    assert time.perf_counter() - start < 2.0


# --------------------------------------------------------------------------- every family


# Options that fit a family's paper defaults to TINY's small maps (BiFormer's 7x7 regions
# need maps of at least 7 in every stage).
FAMILY_OPTS: dict[str, dict[str, Any]] = {"biformer": {"n_win": 2, "topk": [1, 2, 4, -2]}}


def _family_arch(family: str) -> dict[str, Any]:
    arch = dict(TINY, attention=family, num_heads=2, **FAMILY_OPTS.get(family, {}))
    try:
        check_arch(arch)
    except Infeasible:  # a family whose paper defaults need a larger map
        arch["img_size"] = 64
        check_arch(arch)
    return arch


@pytest.mark.parametrize("family", list_attention())
def test_every_family_builds_runs_and_trains(family: str) -> None:
    torch.manual_seed(0)
    arch = _family_arch(family)
    model = build(arch)
    x = torch.randn(2, 3, arch["img_size"], arch["img_size"])
    out = model(x)  # B, classes
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{family}: {name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{family}: {name} has a non-finite gradient"


@pytest.mark.parametrize("family", list_attention())
def test_every_family_is_deterministic_and_round_trips_state(family: str) -> None:
    arch = _family_arch(family)
    torch.manual_seed(1)
    a = build(arch).eval()
    torch.manual_seed(1)
    b = build(arch).eval()
    x = torch.randn(1, 3, arch["img_size"], arch["img_size"])
    torch.testing.assert_close(a(x), b(x))
    torch.manual_seed(2)
    c = build(arch).eval()
    c.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x), c(x))
