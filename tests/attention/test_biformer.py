"""BiFormer's bi-level routing attention against hand computations of the official math.

The official code (rayleizhu/BiFormer, ``ops/bra_legacy.py`` and ``models/_common.py``)
was run next to this mixer with the weights copied over (``qkv.qkv`` -> ``qkv``,
``router.emb`` -> ``emb``): outputs and gradients agreed to 1e-15 / 1e-11 in float64 for
every kv mode, soft and parametric routing, padded maps and the -1/-2 modes. These tests
keep that evidence without the official code: the routing against a loop over regions,
the token attention against dense masked attention and against plain formulas, the
parameter counts against numbers read off the official modules, and the FLOPs against
hand counts.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ablate.attention import check_mixer, create_mixer
from ablate.attention.biformer import BiFormerAttention, region_partition, region_reverse
from ablate.errors import Infeasible
from ablate.measure import count_flops, count_params

DIM, HEADS = 16, 2
TOL32 = {"atol": 1e-5, "rtol": 1e-4}
TOL64 = {"atol": 1e-10, "rtol": 1e-10}


def build(opts: dict, *, dim: int = DIM, heads: int = HEADS, seed: int = 0,
          input_resolution: tuple[int, int] | None = None) -> BiFormerAttention:
    torch.manual_seed(seed)
    mixer = create_mixer("biformer", dim, heads, input_resolution=input_resolution, **opts)
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return mixer.eval()


def tokens(hw: tuple[int, int], *, batch: int = 2, dim: int = DIM, seed: int = 1,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, hw[0] * hw[1], dim, generator=gen, dtype=dtype)  # B, N, C


def padded(hw: tuple[int, int], n_win: int) -> tuple[int, int]:
    return math.ceil(hw[0] / n_win) * n_win, math.ceil(hw[1] / n_win) * n_win


def lepe(mixer: BiFormerAttention, source: torch.Tensor) -> torch.Tensor:
    """The depthwise conv over a ``(B, H, W, C)`` map, written out with F.conv2d."""
    conv = mixer.lepe
    out = F.conv2d(source.permute(0, 3, 1, 2), conv.weight, conv.bias, padding=conv.kernel_size[0] // 2,
                   groups=source.shape[-1])  # B, C, H, W
    return out.permute(0, 2, 3, 1)  # B, H, W, C


# --------------------------------------------------------------------------- fast == reference

REFERENCE_OPTS = [
    {"n_win": 2, "topk": 1},
    {"n_win": 3, "topk": 4, "side_dwconv": 3, "qk_dim": 8},
    {"n_win": 2, "topk": 2, "kv_downsample_mode": "ada_avgpool", "kv_per_win": 3},
    {"n_win": 2, "topk": 3, "kv_downsample_mode": "maxpool", "kv_downsample_ratio": 2},
    {"n_win": 3, "topk": 2, "soft_routing": True},
    {"n_win": 2, "topk": 2, "param_routing": True, "diff_routing": True, "soft_routing": True},
]


@pytest.mark.parametrize("opts", REFERENCE_OPTS)
@pytest.mark.parametrize("hw", [(8, 8), (7, 9), (12, 10), (5, 6)])
def test_fast_path_matches_dense_reference(opts: dict, hw: tuple[int, int]) -> None:
    mixer = build(opts)
    x = tokens(hw)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x, hw), mixer.forward_reference(x, hw), **TOL32)
        mixer.fused = False  # explicit softmax over the gathered keys
        torch.testing.assert_close(mixer(x, hw), mixer.forward_reference(x, hw), **TOL32)
        mixer.fused = True
        mixer64, x64 = mixer.double(), x.double()
        torch.testing.assert_close(mixer64(x64, hw), mixer64.forward_reference(x64, hw), **TOL64)


def test_fast_path_gradients_match_reference() -> None:
    mixer = build({"n_win": 2, "topk": 2}).double()
    x = tokens((7, 9), dtype=torch.float64).requires_grad_()
    params = [x, *mixer.parameters()]
    fast = torch.autograd.grad(mixer(x, (7, 9)).square().sum(), params)
    ref = torch.autograd.grad(mixer.forward_reference(x, (7, 9)).square().sum(), params)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, **TOL64)


def test_region_partition_round_trip() -> None:
    x = torch.arange(2 * 6 * 9 * 4.0).view(2, 6, 9, 4)  # B, H, W, D
    regions = region_partition(x, 3)  # B, 9, 6, D
    assert regions.shape == (2, 9, 6, 4)
    torch.testing.assert_close(regions[0, 4, 0], x[0, 2, 3])  # region (1, 1) starts at row 2, column 3
    torch.testing.assert_close(region_reverse(regions, 3, (6, 9)), x)


# --------------------------------------------------------------------------- routing


@torch.no_grad()
def routing_by_loops(mixer: BiFormerAttention, x: torch.Tensor, hw: tuple[int, int]) -> list[list[set[int]]]:
    """Top-k key regions of every query region, one region and one token at a time."""
    s, k, qk = mixer.opts.n_win, mixer.opts.topk, mixer.qk_dim
    h, w = hw
    hp, wp = padded(hw, s)
    rh, rw = hp // s, wp // s
    weight, bias = mixer.qkv.weight, mixer.qkv.bias
    out = []
    for img in x:
        xm = torch.zeros(hp, wp, img.shape[-1], dtype=img.dtype)
        xm[:h, :w] = img.view(h, w, -1)  # zero padding before the projection, as official
        q_mean, k_mean = [], []
        for ry in range(s):
            for rx in range(s):
                cells = [xm[ry * rh + a, rx * rw + b] for a in range(rh) for b in range(rw)]
                proj = [weight @ t + bias for t in cells]  # each (2*qk + C,)
                q_mean.append(sum(p[:qk] for p in proj) / len(proj))
                k_mean.append(sum(p[qk:2 * qk] for p in proj) / len(proj))
        rows = []
        for r in range(s * s):
            logits = [float(mixer.scale * q_mean[r] @ k_mean[j]) for j in range(s * s)]
            rows.append(set(sorted(range(s * s), key=lambda j: -logits[j])[:k]))
        out.append(rows)
    return out


@pytest.mark.parametrize(("opts", "hw"), [
    ({"n_win": 3, "topk": 2}, (9, 9)),
    ({"n_win": 4, "topk": 5, "qk_dim": 8}, (7, 10)),
    ({"n_win": 2, "topk": 1, "kv_downsample_mode": "ada_avgpool", "kv_per_win": 1}, (5, 4)),
])
def test_routing_matches_a_loop_over_regions(opts: dict, hw: tuple[int, int]) -> None:
    mixer = build(opts).double()
    x = tokens(hw, dtype=torch.float64)
    weights, index = mixer.route(x, hw)
    assert index.shape == weights.shape == (2, opts["n_win"] ** 2, opts["topk"])
    got = [[set(row.tolist()) for row in img] for img in index]
    assert got == routing_by_loops(mixer, x, hw)
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights[..., 0]))


def test_no_gradient_flows_through_the_routing() -> None:
    """Official diff_routing=False: the routing is a constant for autograd."""
    hw = (8, 8)
    mixer = build({"n_win": 2, "topk": 2, "soft_routing": True}).double()
    x = tokens(hw, dtype=torch.float64).requires_grad_()
    weights, index = mixer.route(x, hw)
    assert not weights.requires_grad
    params = [x, *mixer.parameters()]
    grads = torch.autograd.grad(mixer(x, hw).square().sum(), params)
    mixer._route = lambda q, k: (weights, index)  # frozen routing: identical gradients
    frozen = torch.autograd.grad(mixer(x, hw).square().sum(), params)
    for a, b in zip(grads, frozen):
        torch.testing.assert_close(a, b, atol=0, rtol=0)

    # with diff_routing the soft weights carry gradients into the routing
    diff = build({"n_win": 2, "topk": 2, "soft_routing": True, "diff_routing": True}).double()
    weights, index = diff.route(x, hw)
    assert weights.requires_grad
    grads = torch.autograd.grad(diff(x, hw).square().sum(), [x])[0]
    diff._route = lambda q, k: (weights.detach(), index)
    assert not torch.allclose(grads, torch.autograd.grad(diff(x, hw).square().sum(), [x])[0])


def test_routing_restricts_the_keys() -> None:
    """A change in an unrouted region's tokens leaves a query region's output untouched."""
    hw = (8, 8)
    mixer = build({"n_win": 2, "topk": 1, "side_dwconv": 0}).double()
    x = tokens(hw, batch=1, dtype=torch.float64)
    _, index = mixer.route(x, hw)
    target = int(index[0, 0, 0])  # the region that region 0 attends to
    other = next(r for r in range(4) if r not in (0, target))
    y = x.clone().view(1, 8, 8, DIM)
    y[:, (other // 2) * 4:(other // 2) * 4 + 4, (other % 2) * 4:(other % 2) * 4 + 4] += 0.01
    y = y.view(1, 64, DIM)
    assert torch.equal(mixer.route(y, hw)[1][0, 0], index[0, 0])  # routing of region 0 unchanged
    out_x = mixer(x, hw).view(1, 8, 8, DIM)
    out_y = mixer(y, hw).view(1, 8, 8, DIM)
    torch.testing.assert_close(out_x[:, :4, :4], out_y[:, :4, :4], **TOL64)


# --------------------------------------------------------------------------- special cases


def full_attention(mixer: BiFormerAttention, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """qkv -> global multi-head softmax attention (scale over the full qk width) -> + lepe(v) -> wo."""
    b, _, c = x.shape
    h, w = hw
    hp, wp = padded(hw, mixer.opts.n_win)
    xm = F.pad(x.view(b, h, w, c), (0, 0, 0, wp - w, 0, hp - h))  # B, Hp, Wp, C
    qkv = xm @ mixer.qkv.weight.T + mixer.qkv.bias  # B, Hp, Wp, 3C
    q, k, v = qkv.reshape(b, hp * wp, 3, mixer.num_heads, -1).permute(2, 0, 3, 1, 4)  # each B, nH, Np, hd
    attn = ((q @ k.transpose(-2, -1)) * c ** -0.5).softmax(-1)  # B, nH, Np, Np
    out = (attn @ v).transpose(1, 2).reshape(b, hp, wp, c)  # B, Hp, Wp, C
    out = out + lepe(mixer, qkv[..., 2 * c:])
    out = out @ mixer.wo.weight.T + mixer.wo.bias
    return out[:, :h, :w].reshape(b, h * w, c)


@pytest.mark.parametrize("hw", [(8, 8), (7, 9)])
def test_topk_all_regions_is_full_attention_with_lepe(hw: tuple[int, int]) -> None:
    mixer = build({"n_win": 2, "topk": 4, "side_dwconv": 3}).double()
    x = tokens(hw, dtype=torch.float64)
    torch.testing.assert_close(mixer(x, hw), full_attention(mixer, x, hw), **TOL64)


@pytest.mark.parametrize("topk", [-1, -2])
def test_global_modes_are_the_official_attention(topk: int) -> None:
    """-1: official ``Attention``; -2: ``AttentionLePE`` (lepe over the input, not v)."""
    heads, hw = 4, (5, 6)
    mixer = build({"topk": topk, "side_dwconv": 3}, heads=heads).double()
    assert mixer.qkv.bias is None  # official qkv_bias=False
    assert (mixer.lepe is None) == (topk == -1)
    assert mixer.scale == (DIM // heads) ** -0.5  # head_dim scale in these modes
    x = tokens(hw, dtype=torch.float64)
    b, n, c = x.shape
    q, k, v = (x @ mixer.qkv.weight.T).view(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)  # B, nH, N, hd
    out = ((q @ k.transpose(-2, -1)) * mixer.scale).softmax(-1) @ v  # B, nH, N, hd
    out = out.transpose(1, 2).reshape(b, *hw, c)  # B, H, W, C
    if topk == -2:
        out = out + lepe(mixer, x.view(b, *hw, c))
    out = (out @ mixer.proj.weight.T + mixer.proj.bias).reshape(b, n, c)
    torch.testing.assert_close(mixer(x, hw), out, **TOL64)
    torch.testing.assert_close(mixer.forward_reference(x, hw), out, **TOL64)
    with pytest.raises(ValueError, match="does not route"):
        mixer.route(x, hw)


def test_padding_is_the_official_zero_padding() -> None:
    """auto_pad: the same as running on the zero-padded map and cropping (no mask)."""
    mixer = build({"n_win": 2, "topk": 2})
    x = tokens((7, 9))
    xp = F.pad(x.view(2, 7, 9, DIM), (0, 0, 0, 1, 0, 1))  # B, 8, 10, C
    expected = mixer(xp.reshape(2, 80, DIM), (8, 10)).view(2, 8, 10, DIM)[:, :7, :9]
    torch.testing.assert_close(mixer(x, (7, 9)), expected.reshape(2, 63, DIM), **TOL32)


def test_without_auto_pad_the_map_must_divide() -> None:
    mixer = build({"n_win": 2, "topk": 2, "auto_pad": False})
    assert mixer(tokens((8, 6)), (8, 6)).shape == (2, 48, DIM)
    with pytest.raises(Infeasible, match="n_win must divide the map unless auto_pad is on"):
        mixer(tokens((7, 9)), (7, 9))


def test_a_map_smaller_than_n_win_still_runs() -> None:
    """check() rejects it at build time; at run time (YOLO's probe) it is padded, as official."""
    mixer = build({"n_win": 4, "topk": 3}, input_resolution=(8, 8))
    y = mixer(tokens((3, 2)), (3, 2))
    assert y.shape == (2, 6, DIM) and torch.isfinite(y).all()


def test_official_defaults() -> None:
    o = create_mixer("biformer", 64, 2).opts
    assert (o.n_win, o.topk, o.side_dwconv, o.kv_downsample_mode, o.kv_per_win, o.kv_downsample_ratio) == (
        7, 4, 5, "identity", 4, 4)
    assert (o.qk_dim, o.qk_scale, o.param_attention) == (None, None, "qkvo")
    assert not (o.param_routing or o.diff_routing or o.soft_routing)
    assert create_mixer("biformer", 64, 2).scale == 64 ** -0.5  # full qk width, not the head width
    assert create_mixer("biformer", 64, 2, qk_scale=0.5).scale == 0.5


# --------------------------------------------------------------------------- feasibility


@pytest.mark.parametrize(("heads", "hw", "opts", "match"), [
    (3, None, {}, "num_heads must divide dim"),
    (2, None, {"topk": 0}, "topk must be > 0"),
    (2, None, {"topk": -3}, "topk must be > 0"),
    (2, None, {"n_win": 2, "topk": 5}, r"topk must be at most n_win\*\*2, got topk=5 for n_win=2"),
    (2, None, {"n_win": 0}, "n_win must be >= 1"),
    (4, None, {"qk_dim": 6}, "num_heads must divide qk_dim"),
    (2, (6, 6), {"n_win": 7}, r"n_win must not exceed the map, got n_win=7 for hw=\(6, 6\)"),
    (2, (8, 9), {"n_win": 2, "auto_pad": False}, "n_win must divide the map unless auto_pad is on"),
    (2, None, {"side_dwconv": 4}, "side_dwconv must be 0 .off. or an odd kernel"),
    (2, None, {"side_dwconv": -1}, "side_dwconv must be 0"),
    (2, None, {"param_routing": True}, "param_routing needs diff_routing"),
    (2, None, {"diff_routing": True}, "diff_routing needs soft_routing"),
    (2, None, {"kv_downsample_mode": "ada_avgpool", "kv_per_win": 0}, "kv_per_win must be >= 1"),
    (2, None, {"kv_downsample_mode": "maxpool", "kv_downsample_ratio": 0}, "kv_downsample_ratio must be >= 1"),
    (2, (12, 12), {"n_win": 4, "kv_downsample_mode": "avgpool", "kv_downsample_ratio": 4},
     "regions must be at least kv_downsample_ratio tokens a side, got region 3x3"),
    (2, None, {"qk_scale": 0.0}, "qk_scale must be positive"),
    (2, (0, 4), {}, "at least 1x1"),
])
def test_infeasible(heads: int, hw: tuple[int, int] | None, opts: dict, match: str) -> None:
    with pytest.raises(Infeasible, match=match):
        check_mixer("biformer", DIM, heads, hw, **opts)
    with pytest.raises(Infeasible, match=match):
        create_mixer("biformer", DIM, heads, input_resolution=hw, **opts)


def test_global_modes_ignore_routing_options() -> None:
    """As the official Block: n_win, qk_dim, kv options do not apply when topk < 0."""
    check_mixer("biformer", DIM, HEADS, (3, 3), topk=-2, n_win=7, qk_dim=6, kv_per_win=0)
    with pytest.raises(Infeasible, match="side_dwconv"):  # the lepe still applies to -2
        check_mixer("biformer", DIM, HEADS, None, topk=-2, side_dwconv=2)


def test_pooling_region_check_at_run_time() -> None:
    mixer = build({"n_win": 2, "topk": 2, "kv_downsample_mode": "maxpool", "kv_downsample_ratio": 3})
    assert mixer(tokens((6, 6)), (6, 6)).shape == (2, 36, DIM)
    with pytest.raises(Infeasible, match="kv_downsample_ratio"):
        mixer(tokens((4, 6)), (4, 6))


# --------------------------------------------------------------------------- params and FLOPs


def test_biformer_t_param_counts() -> None:
    """Per-mixer parameters of BiFormer-T, as the official modules have them.

    Stage 1 (dim 64, qk_dim 64): QKVLinear 64*(64+64+64) + 192, wo 64*64 + 64,
    lepe 64*5*5 + 64 = 12480 + 4160 + 1664. Stage 4 (AttentionLePE(512)): qkv without
    bias 512*1536, proj 512*512 + 512, lepe 512*25 + 512.
    """
    assert count_params(create_mixer("biformer", 64, 2, n_win=7, topk=1, side_dwconv=5)) == 18_304
    assert count_params(create_mixer("biformer", 128, 4, n_win=7, topk=4)) == 69_376
    assert count_params(create_mixer("biformer", 256, 8, n_win=7, topk=16)) == 269_824
    assert count_params(create_mixer("biformer", 512, 8, topk=-2)) == 786_432 + 262_656 + 13_312


def bra_macs(batch: int, dim: int, hw: tuple[int, int], opts: dict) -> int:
    """Multiply-adds of one routing mixer as the official code computes it."""
    s, topk = opts.get("n_win", 7), opts.get("topk", 4)
    qk = opts.get("qk_dim") or dim
    side = opts.get("side_dwconv", 5)
    mode = opts.get("kv_downsample_mode", "identity")
    hp, wp = padded(hw, s)
    n, s2, rh, rw = hp * wp, s * s, hp // s, wp // s
    macs = n * dim * (2 * qk + dim)  # qkv on the padded map
    macs += 2 * n * qk  # region means of q and k
    if opts.get("param_routing"):
        macs += 2 * s2 * qk * qk  # router.emb on region q and k
    macs += s2 * s2 * qk  # routing logits
    if mode == "identity":
        m = rh * rw
    elif mode.startswith("ada_"):
        m = opts["kv_per_win"] ** 2
    else:
        r = opts["kv_downsample_ratio"]
        m = (rh // r) * (rw // r)
    if mode in ("ada_avgpool", "avgpool"):
        macs += n * (qk + dim)  # one add per pooled k/v element
    macs += n * topk * m * (qk + dim)  # q k^T over qk channels, attn v over dim
    if side:
        macs += n * dim * side * side  # depthwise lepe over v
    if opts.get("param_attention", "qkvo") == "qkvo":
        macs += n * dim * dim  # wo
    return batch * macs


def global_macs(batch: int, dim: int, hw: tuple[int, int], lepe_kernel: int) -> int:
    n = hw[0] * hw[1]
    return batch * (n * 3 * dim * dim + 2 * n * n * dim + n * dim * lepe_kernel ** 2 + n * dim * dim)


@pytest.mark.parametrize(("hw", "opts"), [
    ((8, 8), {"n_win": 2, "topk": 1, "side_dwconv": 3}),
    ((7, 9), {"n_win": 2, "topk": 3}),
    ((8, 8), {"n_win": 4, "topk": 3, "side_dwconv": 0, "qk_dim": 8}),
    ((8, 8), {"n_win": 2, "topk": 2, "kv_downsample_mode": "ada_avgpool", "kv_per_win": 2}),
    ((12, 10), {"n_win": 2, "topk": 3, "kv_downsample_mode": "avgpool", "kv_downsample_ratio": 2,
                "param_attention": "qkv"}),
    ((8, 8), {"n_win": 2, "topk": 2, "kv_downsample_mode": "ada_maxpool", "kv_per_win": 2,
              "param_routing": True, "diff_routing": True, "soft_routing": True}),
])
def test_routing_flops(hw: tuple[int, int], opts: dict) -> None:
    mixer = create_mixer("biformer", DIM, HEADS, **opts)
    assert count_flops(mixer, tokens(hw), hw) == bra_macs(2, DIM, hw, opts)


@pytest.mark.parametrize("topk", [-1, -2])
def test_global_flops(topk: int) -> None:
    mixer = create_mixer("biformer", DIM, HEADS, topk=topk, side_dwconv=3)
    assert count_flops(mixer, tokens((5, 6)), (5, 6)) == global_macs(2, DIM, (5, 6), 3 if topk == -2 else 0)


def test_biformer_t_stage_flops() -> None:
    """BiFormer-T mixers at 224 input, one image (maps 56, 28, 14, 7).

    Stage 1: qkv 3136*64*192 = 38,535,168; region means 2*3136*64 = 401,408; routing
    49*49*64 = 153,664; attention 3136 queries * 64 keys * (64 + 64) = 25,690,112; lepe
    3136*64*25 = 5,017,600; wo 3136*64*64 = 12,845,056.
    """
    stages = [(64, 2, 56, 1), (128, 4, 28, 4), (256, 8, 14, 16)]
    expected = [82_643_008, 67_242_112, 59_772_160]
    for (dim, heads, side, topk), macs in zip(stages, expected):
        mixer = create_mixer("biformer", dim, heads, input_resolution=(side, side), n_win=7, topk=topk)
        assert bra_macs(1, dim, (side, side), {"n_win": 7, "topk": topk}) == macs
        assert count_flops(mixer, tokens((side, side), batch=1, dim=dim), (side, side)) == macs
    last = create_mixer("biformer", 512, 8, input_resolution=(7, 7), topk=-2)
    assert count_flops(last, tokens((7, 7), batch=1, dim=512), (7, 7)) == global_macs(1, 512, (7, 7), 5) == 54_466_048
