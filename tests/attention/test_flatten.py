"""Focused linear attention (``flatten``) against the official math, counts and FLOPs.

``official_pvt`` and ``official_swin`` transcribe the official forward passes
(LeapLabTHU/FLatten-Transformer: ``FocusedLinearAttention`` in ``models/flatten_pvt.py``
and, for windows, the attention half of ``SwinTransformerBlock`` with the
``FocusedLinearAttention`` of ``models/flatten_swin.py``) step by step with functional
calls. They share only the weights with the mixer, so float64 agreement shows the
layout, the focusing function, the normaliser, the spatial reduction, the 1-D
interpolation of V and the shared DWC are the official ones. The official code runs only
on maps equal to its build-time map (and divisible by the window), so the transcriptions
do too; other sizes are covered by fast == reference below and by tests/attention/test_attention.py.

The parameter counts are derived by hand from the official constructors (see each test).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ablate.attention import check_mixer, create_mixer
from ablate.attention.flatten import focus, focus_fast
from ablate.errors import Infeasible
from ablate.measure import count_flops

DIM, HEADS = 16, 2
TOL32 = {"atol": 1e-5, "rtol": 1e-4}
TOL64 = {"atol": 1e-10, "rtol": 1e-10}


def build(dim: int = DIM, heads: int = HEADS, *, input_resolution: tuple[int, int] | None = (8, 8), seed: int = 0,
          dtype: torch.dtype = torch.float64, **opts) -> torch.nn.Module:
    torch.manual_seed(seed)
    mixer = create_mixer("flatten", dim, heads, input_resolution=input_resolution, **opts)
    with torch.no_grad():  # zero-initialised scale and positional encoding must matter too
        for p in mixer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return mixer.to(dtype).eval()


def tokens(n: int, *, batch: int = 2, dim: int = DIM, seed: int = 1,
           dtype: torch.dtype = torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, dim, generator=gen, dtype=dtype)  # B, N, C


# --------------------------------------------------------------------------- official transcriptions


def _focused(t: torch.Tensor, scale: torch.Tensor, p: float) -> torch.Tensor:
    t = F.relu(t) + 1e-6
    t = t / F.softplus(scale)
    t_norm = t.norm(dim=-1, keepdim=True)
    t = t ** p
    return (t / t.norm(dim=-1, keepdim=True)) * t_norm


def _linear_attention(m, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, v_map: torch.Tensor,
                      hw: tuple[int, int]) -> torch.Tensor:
    """Official core: heads, z, kv, ``q @ kv * z``, then the DWC over ``v_map`` (B', nH, H*W, hd)."""
    b, nq, c = q.shape
    nk = k.shape[1]
    nh = m.num_heads
    q = q.reshape(b, nq, nh, -1).permute(0, 2, 1, 3)
    k = k.reshape(b, nk, nh, -1).permute(0, 2, 1, 3)
    v = v.reshape(b, nk, nh, -1).permute(0, 2, 1, 3)
    z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
    kv = (k.transpose(-2, -1) * (nk ** -0.5)) @ (v * (nk ** -0.5))
    out = (q @ kv * z).transpose(1, 2).reshape(b, nq, c)
    fmap = v_map.reshape(b * nh, hw[0], hw[1], -1).permute(0, 3, 1, 2)
    conv = F.conv2d(fmap, m.dwc.weight, m.dwc.bias, padding=m.dwc.weight.shape[-1] // 2, groups=m.head_dim)
    return out + conv.reshape(b, c, nq).permute(0, 2, 1)


def official_pvt(m, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """flatten_pvt.py FocusedLinearAttention.forward(x, H, W)."""
    b, n, c = x.shape
    h, w = hw
    sr, p = m.opts.sr_ratio, m.opts.focusing_factor
    q = F.linear(x, m.q.weight, m.q.bias)
    if sr > 1:
        x_ = F.conv2d(x.permute(0, 2, 1).reshape(b, c, h, w), m.sr.weight, m.sr.bias, stride=sr)
        x_ = F.layer_norm(x_.reshape(b, c, -1).permute(0, 2, 1), (c,), m.norm.weight, m.norm.bias, m.norm.eps)
    else:
        x_ = x
    kv = F.linear(x_, m.kv.weight, m.kv.bias).reshape(b, -1, 2, c).permute(2, 0, 1, 3)
    k, v = kv[0], kv[1]
    nk = k.shape[1]
    k = k + m.positional_encoding
    q, k = _focused(q, m.scale, p), _focused(k, m.scale, p)
    v_heads = v.reshape(b, nk, m.num_heads, -1).permute(0, 2, 1, 3)
    if sr > 1:
        v_heads = F.interpolate(v_heads.transpose(-2, -1).reshape(b * m.num_heads, -1, nk), size=n, mode="linear")
        v_heads = v_heads.reshape(b, m.num_heads, -1, n).transpose(-2, -1)
    out = _linear_attention(m, q, k, v, v_heads, hw)
    return F.linear(out, m.proj.weight, m.proj.bias)


def official_swin(m, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """flatten_swin.py SwinTransformerBlock, from norm1's output to before the residual."""
    b, L, c = x.shape
    h, w = hw
    ws, shift, p = m.window, m.shift, m.opts.focusing_factor
    x = x.view(b, h, w, c)
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    xw = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)  # nW*B, N, C
    qkv_w = torch.cat([m.q.weight, m.kv.weight])  # the official single qkv Linear
    qkv_b = torch.cat([m.q.bias, m.kv.bias]) if m.q.bias is not None else None
    bw, n, _ = xw.shape
    q, k, v = F.linear(xw, qkv_w, qkv_b).reshape(bw, n, 3, c).permute(2, 0, 1, 3).unbind(0)
    k = k + m.positional_encoding
    q, k = _focused(q, m.scale, p), _focused(k, m.scale, p)
    side = int(n ** 0.5)
    v_heads = v.reshape(bw, n, m.num_heads, -1).permute(0, 2, 1, 3)
    out = F.linear(_linear_attention(m, q, k, v, v_heads, (side, side)), m.proj.weight, m.proj.bias)
    out = out.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    return out.reshape(b, h * w, c)


@pytest.mark.parametrize(("dim", "heads", "hw", "opts"), [
    (16, 2, (8, 8), {}),
    (16, 1, (6, 10), {"focusing_factor": 4, "kernel_size": 3}),
    (16, 2, (8, 8), {"sr_ratio": 2}),
    (24, 3, (8, 12), {"sr_ratio": 4, "kernel_size": 7, "qkv_bias": False}),
])
def test_global_matches_official_pvt(dim: int, heads: int, hw: tuple[int, int], opts: dict) -> None:
    mixer = build(dim, heads, input_resolution=hw, **opts)
    x = tokens(hw[0] * hw[1], dim=dim)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x, hw), official_pvt(mixer, x, hw), **TOL64)


@pytest.mark.parametrize(("hw", "opts"), [
    ((8, 8), {"window_size": 4}),
    ((8, 8), {"window_size": 4, "shift_size": 2}),
    ((6, 9), {"window_size": 3, "shift_size": 1, "focusing_factor": 2, "kernel_size": 3}),
    ((8, 8), {"window_size": 8}),
    ((7, 7), {"window_size": 56, "shift_size": 28}),  # FLatten-Swin-T stage 1 style: clamped to one window
])
def test_windowed_matches_official_swin(hw: tuple[int, int], opts: dict) -> None:
    mixer = build(input_resolution=hw, **opts)
    x = tokens(hw[0] * hw[1])
    with torch.no_grad():
        torch.testing.assert_close(mixer(x, hw), official_swin(mixer, x, hw), **TOL64)


# --------------------------------------------------------------------------- fast vs reference


@pytest.mark.parametrize("opts", [
    {},
    {"sr_ratio": 2, "focusing_factor": 1.5},
    {"sr_ratio": 3, "kernel_size": 1},
    {"window_size": 4},
    {"window_size": 4, "shift_size": 1, "kernel_size": 3},
    {"window_size": 5, "pos_encoding": False},
])
@pytest.mark.parametrize("hw", [(8, 8), (7, 9), (5, 11), (12, 6)])
def test_fast_matches_reference(opts: dict, hw: tuple[int, int]) -> None:
    """The reference builds ``A_ij = phi q_i . phi k_j / (sum_j phi q_i . phi k_j + n*1e-6)``.

    That carries the official epsilon exactly (``1/(q.mean(k) + eps) * q (k^T v)/n`` is the
    same function), so both paths agree to rounding whatever the size of the epsilon.
    """
    mixer = build(**opts)
    with torch.no_grad():
        x64 = tokens(hw[0] * hw[1])
        torch.testing.assert_close(mixer(x64, hw), mixer.forward_reference(x64, hw), **TOL64)
        mixer32, x32 = mixer.float(), x64.float()
        torch.testing.assert_close(mixer32(x32, hw), mixer32.forward_reference(x32, hw), **TOL32)


FAST_OPTS = [
    {},
    {"sr_ratio": 2, "focusing_factor": 1.5},
    {"sr_ratio": 3, "kernel_size": 1},
    {"window_size": 4},
    {"window_size": 4, "shift_size": 1, "kernel_size": 3},
    {"window_size": 5, "pos_encoding": False},
    {"focusing": False},
    {"dwc": False, "qkv_bias": False},
    {"window_size": 4, "focusing": False, "dwc": False},
]


def _grads(mixer: torch.nn.Module, x: torch.Tensor, hw: tuple[int, int], fn: str) -> list[torch.Tensor]:
    """Input and parameter gradients of a fixed random projection of ``mixer.<fn>(x, hw)``."""
    mixer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out = getattr(mixer, fn)(x, hw)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64).to(out.dtype)
    (out * weight).sum().backward()
    return [x.grad] + [p.grad for p in mixer.parameters()]


@pytest.mark.parametrize("opts", FAST_OPTS)
@pytest.mark.parametrize("hw", [(8, 8), (7, 9), (12, 6)])
def test_fast_gradients_match_reference(opts: dict, hw: tuple[int, int]) -> None:
    """The fast path (fused focus backward, tiled DWC, merged add) trains like the reference."""
    mixer = build(**opts).train()
    x64 = tokens(hw[0] * hw[1])
    fast, ref = _grads(mixer, x64, hw, "forward"), _grads(mixer, x64, hw, "forward_reference")
    assert all(g is not None for g in fast)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, **TOL64)
    mixer32 = mixer.float()
    fast, ref = _grads(mixer32, x64.float(), hw, "forward"), _grads(mixer32, x64.float(), hw, "forward_reference")
    for a, b in zip(fast, ref):  # float32 sums of ~100 terms: 1e-5 relative to the gradient's size
        torch.testing.assert_close(a, b, atol=1e-5 * b.abs().max().item(), rtol=1e-4)


def test_prefix_tokens_fast_gradients_match_reference() -> None:
    mixer = build(sr_ratio=2).train()
    x = tokens(1 + 64)
    for a, b in zip(_grads(mixer, x, (8, 8), "forward"), _grads(mixer, x, (8, 8), "forward_reference")):
        torch.testing.assert_close(a, b, **TOL64)


@pytest.mark.parametrize("power", [1.0, 1.5, 3.0, 8.0])
def test_focus_fast_matches_focus(power: float) -> None:
    """Same values and gradients as autograd through :func:`focus`, any batch shape."""
    gen = torch.Generator().manual_seed(3)
    for shape in [(50, 16), (2, 7, 16), (3, 2, 5, 16)]:
        x = torch.randn(*shape, generator=gen, dtype=torch.float64)
        x[..., :3] = -x[..., :3].abs()  # some channels cut by the ReLU in every row
        scale = torch.randn(1, 1, 16, generator=gen, dtype=torch.float64)
        g = torch.randn(*shape, generator=gen, dtype=torch.float64)
        grads = []
        for fn in (focus, focus_fast):
            xi, si = x.clone().requires_grad_(True), scale.clone().requires_grad_(True)
            out = fn(xi, si, power)
            (out * g).sum().backward()
            grads.append((out.detach(), xi.grad, si.grad))
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, **TOL64)
    x = torch.randn(4, 3, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    scale = torch.randn(1, 1, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: focus_fast(a, b, power), (x, scale))


def test_focus_fast_float32_and_large_power() -> None:
    """float32: equal to focus at 1e-5; p = 32 (Table 5) stays finite, subnormal-sized channels included."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(64, 32, generator=gen) * 3
    scale = torch.randn(1, 1, 32, generator=gen)
    for power in (3.0, 32.0):
        xa, sa = x.clone().requires_grad_(True), scale.clone().requires_grad_(True)
        xb, sb = x.clone().requires_grad_(True), scale.clone().requires_grad_(True)
        a, b = focus(xa, sa, power), focus_fast(xb, sb, power)
        torch.testing.assert_close(b, a, **TOL32)
        a.sum().backward()
        b.sum().backward()
        assert torch.isfinite(xb.grad).all() and torch.isfinite(sb.grad).all()
        torch.testing.assert_close(xb.grad, xa.grad, **TOL32)
        torch.testing.assert_close(sb.grad, sa.grad, **TOL32)


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_fast_dwc_equals_reference_dwc(heads: int) -> None:
    mixer = build(16, heads, input_resolution=(6, 5), kernel_size=3)
    kv = tokens(30, batch=3, dim=32)
    v = kv[..., 16:]  # a non-contiguous slice, like the kv chunk
    with torch.no_grad():
        torch.testing.assert_close(mixer._dwc_fast(v, (6, 5)), mixer._dwc(v, (6, 5)), **TOL64)


def test_reference_is_an_explicit_row_normalised_matrix() -> None:
    """One head, no DWC (zeroed), no projection (identity): the output is A v row by row."""
    mixer = build(8, 1, input_resolution=(3, 4), kernel_size=1)
    with torch.no_grad():
        mixer.dwc.weight.zero_()
        mixer.dwc.bias.zero_()
        mixer.proj.weight.copy_(torch.eye(8))
        mixer.proj.bias.zero_()
        x = tokens(12, batch=1, dim=8)
        q = focus(mixer.q(x[0]), mixer.scale[0], 3.0)  # N, C
        k, v = mixer.kv(x)[0].chunk(2, dim=-1)
        k = focus(k + mixer.positional_encoding[0], mixer.scale[0], 3.0)
        rows = []
        for i in range(12):  # A_ij = q_i.k_j / (sum_j q_i.k_j + n * 1e-6), out_i = sum_j A_ij v_j
            weights = [q[i] @ k[j] for j in range(12)]
            rows.append(sum(a * v[j] for j, a in enumerate(weights)) / (sum(weights) + 12e-6))
        expected = torch.stack(rows)
        torch.testing.assert_close(mixer(x, (3, 4))[0], expected, **TOL64)


# --------------------------------------------------------------------------- pieces


def test_focusing_keeps_the_norm_and_sharpens() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 16, generator=gen, dtype=torch.float64)
    scale = torch.randn(1, 1, 16, generator=gen, dtype=torch.float64)
    base = (F.relu(x) + 1e-6) / F.softplus(scale)
    for p in (1.0, 2.0, 3.0, 4.5):
        out = focus(x, scale, p)
        torch.testing.assert_close(out.norm(dim=-1), base.norm(dim=-1), **TOL64)
        assert (out > 0).all()
    torch.testing.assert_close(focus(x, scale, 1.0), base, **TOL64)  # p = 1: plain ReLU kernel
    # a larger power puts more of the norm on each vector's largest channel
    share = [(focus(x, scale, p).amax(dim=-1) / base.norm(dim=-1)).mean().item() for p in (1.0, 2.0, 3.0)]
    assert share[0] < share[1] < share[2]


def test_one_dwc_kernel_shared_by_all_heads() -> None:
    """Official: Conv2d(head_dim, head_dim, k, groups=head_dim), the same kernel for every head."""
    for heads in (1, 2, 4):
        mixer = create_mixer("flatten", 32, heads, input_resolution=(8, 8), kernel_size=5)
        hd = 32 // heads
        assert mixer.dwc.weight.shape == (hd, 1, 5, 5)
        assert mixer.dwc.bias.shape == (hd,)
    # heads that carry the same values get the same DWC output: give head 1 head 0's values
    mixer = build(16, 2, input_resolution=(4, 4), pos_encoding=False)
    v = tokens(16, batch=1)[..., :8].repeat(1, 1, 2)  # 1, 16, C with both heads equal
    with torch.no_grad():
        out = mixer._dwc(v, (4, 4))  # 1, 16, C
    torch.testing.assert_close(out[..., :8], out[..., 8:], atol=0, rtol=0)


def test_spatial_reduction_shapes() -> None:
    mixer = create_mixer("flatten", DIM, HEADS, input_resolution=(8, 12), sr_ratio=4)
    assert mixer.sr.weight.shape == (DIM, DIM, 4, 4) and mixer.norm.weight.shape == (DIM,)
    assert mixer.pos_hw == (2, 3) and mixer.positional_encoding.shape == (1, 6, DIM)
    assert not hasattr(create_mixer("flatten", DIM, HEADS, input_resolution=(8, 8)), "sr")


def test_positional_encoding_resize() -> None:
    mixer = build(input_resolution=(4, 6))
    assert mixer._positions((4, 6)) is mixer.positional_encoding
    table = mixer.positional_encoding.view(1, 4, 6, DIM).permute(0, 3, 1, 2)  # 1, C, 4, 6
    same = F.interpolate(table, size=(8, 12), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(mixer._positions((8, 12)), same, atol=0, rtol=0)
    # global without input_resolution: no table; windows: one window's table whatever the map
    assert not hasattr(create_mixer("flatten", DIM, HEADS), "positional_encoding")
    assert create_mixer("flatten", DIM, HEADS, window_size=4).positional_encoding.shape == (1, 16, DIM)


def test_window_clamps_like_swin() -> None:
    small = create_mixer("flatten", DIM, HEADS, input_resolution=(5, 6), window_size=7, shift_size=3)
    assert (small.window, small.shift) == (5, 0) and small.positional_encoding.shape == (1, 25, DIM)
    large = create_mixer("flatten", DIM, HEADS, input_resolution=(56, 56), window_size=7, shift_size=3)
    assert (large.window, large.shift) == (7, 3)


@pytest.mark.parametrize("side", [4, 8])
def test_window_covering_the_map_equals_global(side: int) -> None:
    """Swin's clamp: a window not smaller than the map is one window, i.e. global attention."""
    hw = (side, side)
    windowed = build(input_resolution=hw, window_size=side + 3, shift_size=2)
    glob = build(input_resolution=hw, seed=5)
    glob.load_state_dict(windowed.state_dict(), strict=True)
    x = tokens(side * side)
    with torch.no_grad():
        torch.testing.assert_close(windowed(x, hw), glob(x, hw), **TOL64)


# --------------------------------------------------------------------------- prefix tokens


@pytest.mark.parametrize("opts", [{}, {"sr_ratio": 2}])
def test_prefix_tokens_in_global_mode(opts: dict) -> None:
    hw, prefix = (6, 8), 2
    mixer = build(input_resolution=hw, **opts)
    x = tokens(prefix + 48)
    with torch.no_grad():
        y = mixer(x, hw)
        assert y.shape == x.shape
        torch.testing.assert_close(y, mixer.forward_reference(x, hw), **TOL64)
        # prefix tokens are keys: changing one changes the map tokens' outputs
        x2 = x.clone()
        x2[:, 0] += torch.linspace(-1.0, 1.0, DIM, dtype=x.dtype)  # not a constant: LayerNorm (sr) removes those
        assert not torch.allclose(mixer(x2, hw)[:, prefix:], y[:, prefix:])
        # the DWC acts on the map tokens only
        mixer.dwc.weight.add_(1.0)
        y3 = mixer(x, hw)
        torch.testing.assert_close(y3[:, :prefix], y[:, :prefix], atol=0, rtol=0)
        assert not torch.allclose(y3[:, prefix:], y[:, prefix:])


def test_prefix_tokens_match_a_hand_computation() -> None:
    """Class token first: a query, key and value of the attention; no DWC, no positional encoding."""
    hw, prefix = (3, 4), 1
    mixer = build(8, 2, input_resolution=hw, kernel_size=3)
    x = tokens(prefix + 12, batch=1, dim=8)
    with torch.no_grad():
        q = focus(mixer.q(x[0]), mixer.scale[0], 3.0)  # 13, C
        k, v = mixer.kv(x[0]).chunk(2, dim=-1)  # 13, C each
        k = torch.cat([k[:1], k[1:] + mixer.positional_encoding[0]])
        k = focus(k, mixer.scale[0], 3.0)
        heads = []
        for hh in range(2):
            sl = slice(4 * hh, 4 * hh + 4)
            a = q[:, sl] @ k[:, sl].T  # 13, 13
            heads.append(a / (a.sum(-1, keepdim=True) + 13e-6) @ v[:, sl])
        out = torch.cat(heads, dim=-1)  # 13, C
        vmap = v[1:].view(3, 4, 2, 4).permute(2, 3, 0, 1)  # heads, hd, 3, 4
        dwc = F.conv2d(vmap, mixer.dwc.weight, mixer.dwc.bias, padding=1, groups=4)  # heads, hd, 3, 4
        out[1:] += dwc.reshape(8, 12).T
        expected = mixer.proj(out)
        torch.testing.assert_close(mixer(x, hw)[0], expected, **TOL64)


def test_windows_reject_prefix_tokens() -> None:
    mixer = build(window_size=4)
    with pytest.raises(Infeasible, match="no prefix tokens"):
        mixer(tokens(65), (8, 8))
    with pytest.raises(ValueError, match="expected 8\\*8=64 tokens"):
        mixer(tokens(63), (8, 8))
    with pytest.raises(ValueError, match="at least"):
        build()(tokens(63), (8, 8))


# --------------------------------------------------------------------------- feasibility

INFEASIBLE = [
    (16, 3, None, {}, "num_heads must divide dim"),
    (16, 2, None, {"focusing_factor": 0.5}, "focusing_factor must be >= 1"),
    (16, 2, None, {"kernel_size": 4}, "kernel_size must be odd"),
    (16, 2, None, {"kernel_size": 0}, "kernel_size must be odd"),
    (16, 2, None, {"sr_ratio": 0}, "sr_ratio must be >= 1"),
    (16, 2, (8, 8), {"sr_ratio": 9}, r"sr_ratio must not exceed the map, got sr_ratio=9 for hw=\(8, 8\)"),
    (16, 2, None, {"window_size": 4, "sr_ratio": 2}, "sr_ratio needs global attention"),
    (16, 2, None, {"window_size": 0}, "window_size must be >= 1"),
    (16, 2, None, {"window_size": 4, "shift_size": 4}, "shift_size must be < window_size"),
    (16, 2, (16, 16), {"window_size": 4, "shift_size": 5}, r"shift_size=5 and window_size=4 for hw=\(16, 16\)"),
    (16, 2, None, {"shift_size": 2}, "shift_size needs a window"),
    (16, 2, None, {"window_size": 4, "shift_size": -1}, "shift_size must be >= 0"),
    (16, 2, None, {"proj_drop": 1.0}, r"proj_drop must be in \[0, 1\)"),
    (16, 2, (0, 4), {}, "at least 1x1"),
]


@pytest.mark.parametrize(("dim", "heads", "hw", "opts", "match"), INFEASIBLE)
def test_infeasible(dim: int, heads: int, hw: tuple[int, int] | None, opts: dict, match: str) -> None:
    with pytest.raises(Infeasible, match=match):
        check_mixer("flatten", dim, heads, hw, **opts)
    with pytest.raises(Infeasible, match=match):
        create_mixer("flatten", dim, heads, input_resolution=hw, **opts)


def test_non_finite_options_are_refused_as_values() -> None:
    """Infinity is no setting at all (a ConfigError, like any value out of bounds), not a combination."""
    from ablate.errors import ConfigError

    with pytest.raises(ConfigError, match="focusing_factor must be a finite number"):
        check_mixer("flatten", 16, 2, None, focusing_factor=float("inf"))


def test_feasible_edge_cases() -> None:
    check_mixer("flatten", DIM, HEADS, (4, 6), window_size=7, shift_size=3)  # clamped: no shift
    check_mixer("flatten", DIM, HEADS, (4, 6), sr_ratio=4, focusing_factor=1)
    mixer = build(input_resolution=(8, 8), sr_ratio=4)
    with pytest.raises(Infeasible, match="sr_ratio must not exceed the map"):
        mixer(tokens(6), (2, 3))  # a run-time map smaller than the reduction


# --------------------------------------------------------------------------- official counts


def test_official_parameter_counts() -> None:
    """Mixer parameters of one block, from the official constructors.

    FLatten-Swin-T stage 1 (cfgs/flatten_swin_t.yaml: dim 96, 3 heads, WINDOW_SIZE 56 at
    56x56, 'L'): qkv 96*288+288 = 27,936; proj 96*96+96 = 9,312; dwc (head_dim 32)
    32*5*5+32 = 832; scale 96; positional_encoding 56*56*96 = 301,056; total 339,232.
    FLatten-PVT-T stage 1 (dim 64, 1 head, 56x56, LA sr 1): q 4,160 + kv 8,320 + proj
    4,160 + dwc 64*25+64 = 1,664 + scale 64 + positional_encoding 3,136*64 = 200,704;
    total 219,072. FLatten-DeiT-T (dim 192, 3 heads, 14x14 + class token): 111,168 +
    37,056 + 1,664 + 192 + 196*192 = 187,712.
    """
    swin = create_mixer("flatten", 96, 3, input_resolution=(56, 56), window_size=56)
    assert sum(p.numel() for p in swin.parameters()) == 27_936 + 9_312 + 832 + 96 + 301_056 == 339_232
    pvt = create_mixer("flatten", 64, 1, input_resolution=(56, 56))
    assert sum(p.numel() for p in pvt.parameters()) == 4_160 + 8_320 + 4_160 + 1_664 + 64 + 200_704 == 219_072
    deit = create_mixer("flatten", 192, 3, input_resolution=(14, 14))
    assert sum(p.numel() for p in deit.parameters()) == 187_712
    # with one official checkpoint layout: Swin's qkv rows split into q and kv
    assert swin.q.weight.shape == (96, 96) and swin.kv.weight.shape == (192, 96)


# --------------------------------------------------------------------------- FLOPs


def flatten_macs(batch: int, dim: int, heads: int, hw: tuple[int, int], *, prefix: int = 0, window: int | None = None,
                 sr: int = 1, kernel: int = 5) -> int:
    """Multiply-adds of one forward: linears, sr conv, mean(k), q.mean(k), k^T v, q kv, DWC.

    Windows work on the zero-padded map, each window with its own keys (n = L).
    """
    hd = dim // heads
    h, w = hw
    if window is not None:
        t = math.ceil(h / window) * window * math.ceil(w / window) * window  # padded tokens
        return batch * (t * dim * dim + t * 2 * dim * dim  # q and kv
                        + t * dim + t * dim  # mean(k) over each window, q . mean(k)
                        + t * dim * hd + t * dim * hd  # k^T v, q (k^T v)
                        + t * dim * kernel * kernel  # DWC: C output maps, one input channel each
                        + t * dim * dim)  # proj
    nq = prefix + h * w
    grid = (h // sr) * (w // sr)
    nk = prefix + grid
    macs = nq * dim * dim + nk * 2 * dim * dim  # q and kv
    if sr > 1:
        macs += grid * dim * dim * sr * sr  # the reduction conv
    macs += nk * dim + nq * dim  # mean(k), q . mean(k)
    macs += nk * dim * hd + nq * dim * hd  # k^T v, q (k^T v)
    macs += h * w * dim * kernel * kernel  # DWC over the map tokens
    macs += nq * dim * dim  # proj
    return batch * macs


@pytest.mark.parametrize(("hw", "prefix", "opts"), [
    ((8, 8), 0, {}),
    ((7, 9), 0, {"sr_ratio": 2, "kernel_size": 3}),
    ((8, 8), 1, {}),
    ((6, 8), 2, {"sr_ratio": 2}),
    ((8, 8), 0, {"window_size": 4}),
    ((7, 9), 0, {"window_size": 4, "shift_size": 2, "kernel_size": 7}),  # padded to 8 x 12
])
def test_flops_match_the_analytic_count(hw: tuple[int, int], prefix: int, opts: dict) -> None:
    mixer = create_mixer("flatten", DIM, HEADS, input_resolution=hw, **opts)
    x = torch.randn(2, prefix + hw[0] * hw[1], DIM)  # B, N, C
    expected = flatten_macs(2, DIM, HEADS, hw, prefix=prefix, window=mixer.window, sr=mixer.sr_ratio,
                            kernel=mixer.opts.kernel_size)
    assert count_flops(mixer, x, hw) == expected


def test_flops_pvt_t_stage1() -> None:
    """FLatten-PVT-T stage 1 mixer (dim 64, 1 head, 56x56, sr 1), one image, written out."""
    n, c = 56 * 56, 64
    expected = 4 * n * c * c + 2 * n * c + 2 * n * c * c + n * c * 25  # linears, normaliser, kv and q kv, DWC
    assert expected == flatten_macs(1, c, 1, (56, 56)) == 82_489_344
    mixer = create_mixer("flatten", c, 1, input_resolution=(56, 56))
    assert count_flops(mixer, torch.randn(1, n, c), (56, 56)) == expected


def test_vanilla_linear_attention_row() -> None:
    """focusing=False, dwc=False, pos_encoding=False is FLatten's Table 4 baseline: ReLU kernel
    linear attention, written here as an explicit row-normalised attention matrix."""
    dim, heads, hw = 16, 2, (6, 6)
    mixer = build(dim, heads, input_resolution=hw, focusing=False, dwc=False, pos_encoding=False)
    assert mixer.dwc is None and mixer.scale is None and mixer.pos_hw is None
    x = tokens(hw[0] * hw[1], dim=dim)
    b, n, c = x.shape
    q = F.linear(x, mixer.q.weight, mixer.q.bias).reshape(b, n, heads, -1).transpose(1, 2)
    k, v = F.linear(x, mixer.kv.weight, mixer.kv.bias).chunk(2, dim=-1)
    k = k.reshape(b, n, heads, -1).transpose(1, 2)
    v = v.reshape(b, n, heads, -1).transpose(1, 2)
    sim = (F.relu(q) + 1e-6) @ (F.relu(k) + 1e-6).transpose(-2, -1)  # B, nH, N, N
    attn = sim / (sim.sum(-1, keepdim=True) + n * 1e-6)
    expected = F.linear((attn @ v).transpose(1, 2).reshape(b, n, c), mixer.proj.weight, mixer.proj.bias)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x, hw), expected, **TOL64)
    plain = build(dim, heads, input_resolution=hw)
    extra = sum(p.numel() for p in plain.parameters()) - sum(p.numel() for p in mixer.parameters())
    head_dim = dim // heads
    assert extra == dim + head_dim * (5 * 5 + 1) + hw[0] * hw[1] * dim  # scale, the DWC, the key positions


@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize(("n", "nk", "heads", "hd"), [(7, 7, 2, 4), (9, 5, 3, 2), (1, 6, 1, 3)])
def test_linear_attention_backward_is_autograds(n: int, nk: int, heads: int, hd: int, with_residual: bool) -> None:
    """The hand-written backward of the cheap order against autograd on the official formula."""
    from ablate.attention.flatten import EPS, _LinearAttention

    gen = torch.Generator().manual_seed(n * 10 + nk)
    b, c = 3, heads * hd
    q = torch.rand(b, n, c, generator=gen, dtype=torch.float64, requires_grad=True)
    k = torch.rand(b, nk, c, generator=gen, dtype=torch.float64, requires_grad=True)
    qkv = torch.randn(b, nk, 3 * c, generator=gen, dtype=torch.float64, requires_grad=True)
    v = qkv[..., 2 * c:]  # a strided view, as the fused projection hands it
    res = torch.randn(b, n, c, generator=gen, dtype=torch.float64, requires_grad=True) if with_residual else None
    grad = torch.randn(b, n, c, generator=gen, dtype=torch.float64)
    leaves = [q, k, qkv] + ([res] if with_residual else [])

    qh, kh, vh = (t.reshape(b, -1, heads, hd).transpose(1, 2) for t in (q, k, v))
    want = (qh @ (kh.transpose(-2, -1) @ vh)) / (qh @ kh.mean(-2, keepdim=True).transpose(-2, -1) + EPS) / nk
    want = want.transpose(1, 2).reshape(b, n, c) + (res if with_residual else 0)
    got = _LinearAttention.apply(q, k, v, res, heads)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for a, e in zip(torch.autograd.grad(got, leaves, grad), torch.autograd.grad(want, leaves, grad)):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)
