"""Contract tests for every registered token mixer, plus the registry and Infeasible cases.

The contract tests are parametrized over ``list_attention()``, so a new family is covered
as soon as it registers. ``TINY`` gives each family a few small option sets that switch
on its features (windows, shift, pooling...); a family missing from it runs with its
defaults.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from ablate.attention import (
    Mixer2d,
    TokenMixer,
    check_mixer,
    create_mixer,
    get_attention,
    list_attention,
    register_attention,
)
from ablate.errors import ConfigError, Infeasible

DIM, HEADS = 16, 2
HW = (8, 8)

# Small option sets per family; every parameter of the mixer is used at HW.
TINY: dict[str, list[dict]] = {
    "softmax": [
        {},
        {"window_size": 4},
        {"window_size": 4, "shift_size": 2},
        {"window_size": 4, "rel_pos_bias": False, "qkv_bias": False},
    ],
    "focal": [
        {"window_size": 4, "focal_window": 3, "expand_size": 2},
        {"window_size": 4, "focal_level": 3, "focal_window": 3, "expand_size": 1, "pool_method": "conv",
         "shift_size": 2},
        {"window_size": 4, "focal_level": 3, "focal_window": 3, "expand_size": 1, "pool_method": "mean"},
        {"window_size": 4, "focal_level": 2, "focal_window": 3, "expand_size": 1, "pool_method": "max"},
        {"window_size": 4, "focal_level": 1, "expand_size": 2},
    ],
    "flatten": [  # the first set is windowed: global attention takes prefix tokens, so any N >= H*W runs
        {"window_size": 4, "shift_size": 2},
        {},
        {"sr_ratio": 2, "focusing_factor": 2, "kernel_size": 3},
        {"window_size": 4, "kernel_size": 1, "qkv_bias": False, "pos_encoding": False},
        {"focusing": False, "dwc": False, "pos_encoding": False},
        {"window_size": 4, "focusing": False},
    ],
    "biformer": [
        {"n_win": 2, "topk": 1, "side_dwconv": 3},
        {"n_win": 4, "topk": 3, "side_dwconv": 0, "qk_dim": 8},
        {"n_win": 2, "topk": 2, "kv_downsample_mode": "ada_avgpool", "kv_per_win": 2},
        {"n_win": 2, "topk": 3, "kv_downsample_mode": "avgpool", "kv_downsample_ratio": 2, "param_attention": "qkv"},
        {"n_win": 2, "topk": 2, "kv_downsample_mode": "ada_maxpool", "kv_per_win": 2, "param_routing": True,
         "diff_routing": True, "soft_routing": True},
        {"topk": -1},
        {"topk": -2, "side_dwconv": 3},
        {},
    ],
    "lavit": [  # built alone (context=None) a lavit mixer is a VA layer; tests/attention/test_lavit.py covers LA layers
        {},
        {"qkv_bias": False, "qk_scale": 0.5, "dp_loss_weight": 0.0},
        {"va_layers": 2, "attention_residual": False, "layer_scale_init": 0.1},
    ],
}

CASES = [(name, opts) for name in list_attention() for opts in TINY.get(name, [{}])]
IDS = [f"{name}-{i}" for name in list_attention() for i, _ in enumerate(TINY.get(name, [{}]))]

# fast path (SDPA) vs reference path (explicit softmax)
TOL32 = {"atol": 1e-5, "rtol": 1e-4}
TOL64 = {"atol": 1e-10, "rtol": 1e-10}


def build(name: str, opts: dict, *, seed: int = 0, input_resolution: tuple[int, int] | None = HW,
          dim: int = DIM, heads: int = HEADS) -> TokenMixer:
    torch.manual_seed(seed)
    mixer = create_mixer(name, dim, heads, input_resolution=input_resolution, **opts)
    # Randomise zero-initialised tables too, so that every bias actually matters.
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return mixer.eval()


def tokens(hw: tuple[int, int], *, batch: int = 2, seed: int = 1, dim: int = DIM,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, hw[0] * hw[1], dim, generator=gen, dtype=dtype)  # B, N, C


def call(mixer: nn.Module, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``mixer(x, hw)``; a stateful mixer gets a fresh state, as a lone layer (as ``Mixer2d`` does)."""
    if getattr(mixer, "stateful", False):
        return mixer(x, hw, {"aux_losses": []})
    return mixer(x, hw)


def run_reference(mixer: TokenMixer, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """The explicit path: ``forward_reference`` if the family has one, else ``fused=False``."""
    if hasattr(mixer, "forward_reference"):
        if mixer.stateful:
            return mixer.forward_reference(x, hw, {"aux_losses": []})
        return mixer.forward_reference(x, hw)
    fused = mixer.fused
    mixer.fused = False
    try:
        return call(mixer, x, hw)
    finally:
        mixer.fused = fused


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize(("name", "opts"), CASES, ids=IDS)
def test_shape_and_finite(name: str, opts: dict) -> None:
    mixer = build(name, opts)
    y = call(mixer, tokens(HW), HW)
    assert y.shape == (2, HW[0] * HW[1], DIM)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(("name", "opts"), CASES, ids=IDS)
def test_every_parameter_gets_a_gradient(name: str, opts: dict) -> None:
    mixer = build(name, opts).train()
    call(mixer, tokens(HW), HW).square().mean().backward()
    for pname, p in mixer.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert p.grad.abs().sum() > 0, f"{pname} got an all-zero gradient"


@pytest.mark.parametrize(("name", "opts"), CASES, ids=IDS)
@pytest.mark.parametrize("hw", [HW, (7, 9)])
def test_fast_path_matches_reference(name: str, opts: dict, hw: tuple[int, int]) -> None:
    mixer = build(name, opts)
    x = tokens(hw)
    with torch.no_grad():
        torch.testing.assert_close(call(mixer, x, hw), run_reference(mixer, x, hw), **TOL32)
        mixer64 = mixer.double()
        x64 = x.double()
        torch.testing.assert_close(call(mixer64, x64, hw), run_reference(mixer64, x64, hw), **TOL64)


@pytest.mark.parametrize(("name", "opts"), CASES, ids=IDS)
def test_state_dict_round_trip(name: str, opts: dict) -> None:
    src, dst = build(name, opts, seed=0), build(name, opts, seed=1)
    x = tokens(HW)
    assert not torch.equal(call(src, x, HW), call(dst, x, HW))
    dst.load_state_dict(src.state_dict(), strict=True)
    assert torch.equal(call(src, x, HW), call(dst, x, HW))


@pytest.mark.parametrize(("name", "opts"), CASES, ids=IDS)
def test_deterministic_under_a_seed(name: str, opts: dict) -> None:
    a, b = build(name, opts, seed=3), build(name, opts, seed=3)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and torch.equal(pa, pb)
    assert torch.equal(call(a, tokens(HW), HW), call(b, tokens(HW), HW))


@pytest.mark.parametrize(("name", "opts"), CASES, ids=IDS)
@pytest.mark.parametrize("input_resolution", [None, (7, 9), HW])
@pytest.mark.parametrize("hw", [(7, 9), (5, 3), (12, 12)])
def test_any_map_size(name: str, opts: dict, input_resolution: tuple[int, int] | None,
                      hw: tuple[int, int]) -> None:
    """Maps not divisible by the window, smaller or larger than the build-time map."""
    mixer = build(name, opts, input_resolution=input_resolution)
    y = call(mixer, tokens(hw, batch=1), hw)
    assert y.shape == (1, hw[0] * hw[1], DIM)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(("name", "opts"), CASES, ids=IDS)
def test_mixer2d_matches_token_path(name: str, opts: dict) -> None:
    mixer = build(name, opts)
    x = tokens((6, 10))  # B, N, C
    fmap = x.transpose(1, 2).reshape(2, DIM, 6, 10)  # B, C, H, W
    y = Mixer2d(mixer)(fmap)
    assert y.shape == fmap.shape
    torch.testing.assert_close(y.flatten(2).transpose(1, 2), call(mixer, x, (6, 10)))


@pytest.mark.parametrize(("name", "opts"), CASES, ids=IDS)
def test_tokens_stay_in_place(name: str, opts: dict) -> None:
    """Batch elements are independent and the output is not a permutation artefact."""
    mixer = build(name, opts)
    x = tokens((7, 9), batch=3)
    y = call(mixer, x, (7, 9))
    torch.testing.assert_close(call(mixer, x[1:2], (7, 9)), y[1:2], **TOL32)


def test_wrong_token_count_is_rejected() -> None:
    for name in list_attention():
        mixer = build(name, TINY.get(name, [{}])[0])
        with pytest.raises(ValueError):
            call(mixer, tokens(HW), (8, 9))  # fewer tokens than the map: no family can read that


# --------------------------------------------------------------------------- registry


def test_registry_lists_both_families() -> None:
    assert {"softmax", "focal"} <= set(list_attention())
    assert list_attention() == sorted(list_attention())


def test_duplicate_name_raises() -> None:
    class Dummy(TokenMixer):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_attention("softmax")(Dummy)


def test_non_mixer_cannot_register(monkeypatch: pytest.MonkeyPatch) -> None:
    from ablate.attention import _registry

    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    with pytest.raises(TypeError):
        register_attention("plain")(nn.Linear)


def test_unknown_family_suggests_a_name() -> None:
    with pytest.raises(ConfigError, match="did you mean 'focal'") as err:
        get_attention("focla")
    assert "softmax" in str(err.value)
    with pytest.raises(ConfigError):
        create_mixer("nope", DIM, HEADS)


def test_unknown_option_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match="did you mean 'window_size'") as err:
        create_mixer("focal", DIM, HEADS, windw_size=3)
    assert "expand_size" in str(err.value) and "focal_level" in str(err.value)
    with pytest.raises(ConfigError, match="window_size"):
        create_mixer("softmax", DIM, HEADS, window=4)


@pytest.mark.parametrize(("name", "opts"), [
    ("focal", {"window_size": "7"}),
    ("focal", {"pool_method": "avg"}),
    ("focal", {"qkv_bias": 1}),
    ("softmax", {"window_size": 2.5}),
    ("softmax", {"rel_pos_bias": "yes"}),
])
def test_option_types_are_checked(name: str, opts: dict) -> None:
    with pytest.raises(ConfigError):
        create_mixer(name, DIM, HEADS, **opts)


def test_options_are_typed_and_frozen() -> None:
    mixer = create_mixer("softmax", DIM, HEADS, attn_drop=0, qk_scale=1)
    assert mixer.opts.attn_drop == 0.0 and isinstance(mixer.opts.attn_drop, float)
    assert isinstance(mixer.opts.qk_scale, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        mixer.opts.window_size = 3  # type: ignore[misc]


# --------------------------------------------------------------------------- feasibility

INFEASIBLE = [
    ("softmax", 16, 3, None, {}, "num_heads must divide dim"),
    ("softmax", 16, 2, None, {"window_size": 0}, "window_size must be >= 1"),
    ("softmax", 16, 2, None, {"window_size": 4, "shift_size": 4}, "shift_size must be < window_size"),
    ("softmax", 16, 2, (16, 16), {"window_size": 4, "shift_size": 5}, r"shift_size=5 and window_size=4"),
    ("softmax", 16, 2, None, {"shift_size": 2}, "shift_size needs a window"),
    ("softmax", 16, 2, None, {"window_size": 4, "shift_size": -1}, "shift_size must be >= 0"),
    ("softmax", 16, 2, None, {"attn_drop": 1.0}, r"attn_drop must be in \[0, 1\)"),
    ("softmax", 16, 2, (0, 4), {}, "at least 1x1"),
    ("focal", 16, 3, None, {}, "num_heads must divide dim"),
    ("focal", 16, 2, None, {"window_size": 0}, "window_size must be >= 1"),
    ("focal", 16, 2, None, {"focal_level": 0}, "focal_level must be >= 1"),
    ("focal", 16, 2, None, {"focal_window": 0}, "focal_window must be >= 1"),
    ("focal", 16, 2, None, {"expand_size": -1}, "expand_size must be >= 0"),
    ("focal", 16, 2, None, {"window_size": 4, "shift_size": 4}, "shift_size must be < window_size"),
    ("focal", 16, 2, (16, 16), {"window_size": 4, "expand_size": 5}, r"expand_size=5 and window_size=4"),
    ("focal", 16, 2, None, {"focal_window": 4}, "focal_window must be odd"),
    ("focal", 16, 2, None, {"window_size": 2, "expand_size": 1, "focal_level": 4, "focal_window": 3}, "0 tokens"),
    ("focal", 16, 2, None, {"proj_drop": -0.1}, r"proj_drop must be in \[0, 1\)"),
    ("focal", 16, 2, None, {"qk_scale": 0.0}, "qk_scale must be positive"),
]


@pytest.mark.parametrize(("name", "dim", "heads", "hw", "opts", "match"), INFEASIBLE)
def test_infeasible(name: str, dim: int, heads: int, hw: tuple[int, int] | None, opts: dict, match: str) -> None:
    with pytest.raises(Infeasible, match=match):
        check_mixer(name, dim, heads, hw, **opts)
    with pytest.raises(Infeasible, match=match):
        create_mixer(name, dim, heads, input_resolution=hw, **opts)


@pytest.mark.parametrize(("name", "opts"), [
    # The official clamp: a map not larger than the window keeps one window, no shift, no ring.
    ("softmax", {"window_size": 7, "shift_size": 3}),
    ("focal", {"window_size": 7, "shift_size": 3, "expand_size": 7}),
    # An even focal window is fine when no level is pooled.
    ("focal", {"focal_window": 4, "pool_method": "none"}),
    ("focal", {"focal_window": 4, "focal_level": 1}),
])
def test_feasible_edge_cases(name: str, opts: dict) -> None:
    check_mixer(name, DIM, HEADS, (4, 6), **opts)
    mixer = create_mixer(name, DIM, HEADS, input_resolution=(4, 6), **opts)
    assert mixer(tokens((4, 6)), (4, 6)).shape == (2, 24, DIM)


def test_infeasible_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        check_mixer("focal", 16, 2, None, window_size=-3)


# --------------------------------------------------------------------------- softmax specifics


def test_softmax_clamps_window_like_swin() -> None:
    small = create_mixer("softmax", DIM, HEADS, input_resolution=(5, 6), window_size=7, shift_size=3)
    assert (small.window, small.shift) == (5, 0)
    assert small.relative_position_bias_table.shape == ((2 * 5 - 1) ** 2, HEADS)
    large = create_mixer("softmax", DIM, HEADS, input_resolution=(56, 56), window_size=7, shift_size=3)
    assert (large.window, large.shift) == (7, 3)
    free = create_mixer("softmax", DIM, HEADS, window_size=7, shift_size=3)
    assert (free.window, free.shift) == (7, 3)


def test_softmax_global_bias_table_over_the_map() -> None:
    mixer = create_mixer("softmax", DIM, HEADS, input_resolution=(4, 5))
    assert mixer.relative_position_bias_table.shape == (7 * 9, HEADS)
    assert not hasattr(create_mixer("softmax", DIM, HEADS), "relative_position_bias_table")
    # within the table's range, a smaller map reads the same offsets as the full map
    sub = mixer._bias((2, 3))  # nH, 6, 6
    full = mixer._bias((4, 5))  # nH, 20, 20
    keep = torch.tensor([0, 1, 2, 5, 6, 7])  # the 2x3 corner of the 4x5 map
    torch.testing.assert_close(sub, full[:, keep][:, :, keep])


def test_softmax_swin_t_param_count() -> None:
    """Swin-T stage 1 attention (official WindowAttention): 3*96*96+3*96 + 96*96+96 + 13*13*3."""
    mixer = create_mixer("softmax", 96, 3, input_resolution=(56, 56), window_size=7, shift_size=3)
    assert sum(p.numel() for p in mixer.parameters()) == 37755


def test_softmax_global_equals_plain_mha() -> None:
    """Without biases, global softmax attention is torch's MultiheadAttention."""
    mixer = build("softmax", {"rel_pos_bias": False})
    mha = nn.MultiheadAttention(DIM, HEADS, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(mixer.qkv.weight)
        mha.in_proj_bias.copy_(mixer.qkv.bias)
        mha.out_proj.weight.copy_(mixer.proj.weight)
        mha.out_proj.bias.copy_(mixer.proj.bias)
        x = tokens(HW)
        torch.testing.assert_close(mixer(x, HW), mha(x, x, x, need_weights=False)[0], **TOL32)


def test_softmax_window_attention_is_local() -> None:
    """A change in one window leaves every other window's output untouched (no shift)."""
    mixer = build("softmax", {"window_size": 4})
    x = tokens(HW, batch=1)
    y = x.clone().view(1, 8, 8, DIM)
    y[:, 0, 0] += 1.0  # top-left window only
    out_x = mixer(x, HW).view(1, 8, 8, DIM)
    out_y = mixer(y.view(1, 64, DIM), HW).view(1, 8, 8, DIM)
    assert not torch.allclose(out_x[:, :4, :4], out_y[:, :4, :4])
    torch.testing.assert_close(out_x[:, 4:], out_y[:, 4:], atol=0, rtol=0)
    torch.testing.assert_close(out_x[:, :, 4:], out_y[:, :, 4:], atol=0, rtol=0)


@pytest.mark.parametrize("name", ["softmax", "focal"])
def test_dropout_only_in_training(name: str) -> None:
    opts = dict(TINY[name][1], attn_drop=0.5, proj_drop=0.5)
    mixer = build(name, opts)
    x = tokens(HW)
    torch.testing.assert_close(mixer(x, HW), mixer(x, HW), atol=0, rtol=0)
    mixer.train()
    assert not torch.equal(mixer(x, HW), mixer(x, HW))
    assert not torch.equal(mixer.forward_reference(x, HW), mixer.forward_reference(x, HW))


def test_scale_override() -> None:
    mixer = build("softmax", {"qk_scale": 0.5})
    assert mixer.scale == 0.5
    assert math.isclose(build("softmax", {}).scale, (DIM // HEADS) ** -0.5)
