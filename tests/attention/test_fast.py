"""The fast softmax kernels (``ablate.attention._fast``) against plain autograd math."""

from __future__ import annotations

import pytest
import torch

from ablate.attention import _fast, create_mixer
from ablate.attention._fast import (
    depthwise_conv,
    PACKED_MAX_TOKENS,
    packed_attention,
    permute_tokens,
    softmax_attention,
    use_packed,
    window_reverse,
    windows_heads_to_map,
)
from ablate.attention.softmax import window_order, window_partition
from ablate.bench.measure import peak_cpu_memory

TOL64 = {"rtol": 1e-10, "atol": 1e-10}


def explicit(qkv: torch.Tensor, bias: torch.Tensor | None, mask: torch.Tensor | None, heads: int,
             scale: float) -> torch.Tensor:
    """The textbook formula on q, k, v split by plain indexing."""
    g, n, c3 = qkv.shape
    c = c3 // 3
    q, k, v = qkv.view(g, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    logits = (q * scale) @ k.transpose(-2, -1)  # G, nH, L, L
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        r = mask.shape[0]
        logits = (logits.view(g // r, r, heads, n, n) + mask).view(g, heads, n, n)
    return (logits.softmax(-1) @ v).transpose(1, 2).reshape(g, n, c)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("windows", [1, 4])
@pytest.mark.parametrize("groups", [1, 3, 100])  # 100 groups span two backward slices (slices made small)
def test_packed_attention_values_and_gradients(with_bias: bool, windows: int, groups: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    if groups == 100:
        monkeypatch.setattr(_fast, "_CHUNK_MIN_ELEMENTS", 1 << 12)
    gen = torch.Generator().manual_seed(groups * 10 + windows)
    heads, n, hd = 3, 9, 4
    g = groups * windows
    qkv = torch.randn(g, n, 3 * heads * hd, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(heads, n, n, generator=gen, dtype=torch.float64, requires_grad=True) if with_bias else None
    mask = None
    if windows > 1:
        mask = torch.where(torch.rand(windows, 1, n, n, generator=gen) < 0.3, -100.0, 0.0).double()
    grad = torch.randn(g, n, heads * hd, generator=gen, dtype=torch.float64)
    inputs = [qkv] + ([bias] if bias is not None else [])

    want = explicit(qkv, bias, mask, heads, 0.37)
    want_grads = torch.autograd.grad(want, inputs, grad)
    got = packed_attention(qkv, bias, mask, heads, 0.37)
    got_grads = torch.autograd.grad(got, inputs, grad)

    torch.testing.assert_close(got, want, **TOL64)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, **TOL64)
    if groups == 100:
        assert heads * n * n * g > 2 * _fast._CHUNK_MIN_ELEMENTS  # the sliced backward really loops


def test_packed_attention_leaves_its_input_alone() -> None:
    qkv = torch.randn(2, 4, 12, requires_grad=True)
    before = qkv.detach().clone()
    packed_attention(qkv * 1.0, None, None, 2, 0.5).sum().backward()  # a non-leaf, as the mixer hands it
    packed_attention(qkv, None, None, 2, 0.5).sum().backward()
    assert torch.equal(qkv.detach(), before)


def test_packed_attention_backward_runs_once() -> None:
    """The gradient replaces the saved q, k, v: a second pass fails loudly."""
    qkv = torch.randn(2, 4, 12, requires_grad=True)
    out = packed_attention(qkv * 1.0, None, None, 2, 0.5).sum()
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="inplace"):
        out.backward()


@pytest.mark.parametrize(("hw", "window", "shift"), [((8, 8), 4, 0), ((8, 8), 4, 2), ((6, 9), 3, 1)])
def test_window_order_is_roll_then_partition(hw: tuple[int, int], window: int, shift: int) -> None:
    x = torch.randn(2, hw[0], hw[1], 5)
    rolled = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2)) if shift else x
    want = window_partition(rolled, window).reshape(2, -1, 5)
    index, inverse = window_order(hw, window, shift)
    tokens = x.reshape(2, -1, 5)
    assert torch.equal(permute_tokens(tokens, index, inverse), want)
    assert torch.equal(permute_tokens(want, inverse, index), tokens)


def test_token_permutation_gradient_is_the_inverse_gather() -> None:
    index, inverse = window_order((6, 6), 3, 1)
    x = torch.randn(2, 36, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 36, 4, dtype=torch.float64)
    (got,) = torch.autograd.grad((permute_tokens(x, index, inverse) * w).sum(), x)
    (want,) = torch.autograd.grad((x.index_select(1, index) * w).sum(), x)
    assert torch.equal(got, want)


@pytest.mark.parametrize("opts", [{"window_size": 4}, {"window_size": 4, "shift_size": 2},
                                  {"window_size": 4, "shift_size": 2, "rel_pos_bias": False},
                                  {"window_size": 3, "shift_size": 1, "qk_scale": 0.2}])
@pytest.mark.parametrize("hw", [(8, 8), (10, 7), (12, 12), (4, 4)])  # built, padded, other, one window
def test_window_fast_path_gradients_match_reference(opts: dict, hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    mixer = create_mixer("softmax", 12, 3, input_resolution=(8, 8), **opts).double()
    x = torch.randn(2, hw[0] * hw[1], 12, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, hw[0] * hw[1], 12, dtype=torch.float64)
    params = [x] + list(mixer.parameters())
    got = torch.autograd.grad(mixer(x, hw), params, grad)
    want = torch.autograd.grad(mixer.forward_reference(x, hw), params, grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOL64)


def test_window_attention_dropout_takes_the_reference_path() -> None:
    """Attention dropout in training is the autograd path's; the kernel has none.

    Both sides draw the same dropout mask; SDPA and the explicit softmax then round
    differently (up to about 1e-7 for some weights), so equality is to rounding: a missed
    or different mask moves outputs by O(0.1).
    """
    torch.manual_seed(0)
    mixer = create_mixer("softmax", 8, 2, input_resolution=(8, 8), window_size=4, attn_drop=0.5).train()
    torch.manual_seed(1)
    a = mixer(torch.ones(1, 64, 8), (8, 8))
    torch.manual_seed(1)
    b = mixer.forward_reference(torch.ones(1, 64, 8), (8, 8))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert not torch.allclose(a, mixer.eval()(torch.ones(1, 64, 8), (8, 8)), atol=1e-3)  # dropout was applied


def test_window_fast_path_peak_memory_below_the_autograd_path() -> None:
    """One training step's peak: the kernel writes gradients over q, k, v and chunks its L x L work."""
    torch.manual_seed(0)
    mixer = create_mixer("softmax", 32, 2, input_resolution=(56, 56), window_size=7, shift_size=3)
    x = torch.randn(2, 56 * 56, 32, requires_grad=True)

    def step(fn):  # noqa: ANN001, ANN202
        def run() -> None:
            y = fn(x, (56, 56))
            y.sum().backward()
            x.grad = None
            mixer.zero_grad(set_to_none=True)
        return run

    fast = peak_cpu_memory(step(mixer))
    reference = peak_cpu_memory(step(mixer.forward_reference))
    assert fast < 0.9 * reference, (fast, reference)


# --------------------------------------------------------------------------- the choice of kernel


@pytest.mark.parametrize("tokens", [PACKED_MAX_TOKENS, PACKED_MAX_TOKENS + 1])  # packed, then SDPA
def test_heads_first_output_is_the_same_numbers_before_joining(tokens: int) -> None:
    gen = torch.Generator().manual_seed(7)
    heads, hd, g = 2, 4, 3
    qkv = torch.randn(g, tokens, 3 * heads * hd, generator=gen, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(g, tokens, heads * hd, generator=gen, dtype=torch.float64)
    got = softmax_attention(qkv, None, None, heads, 0.3, heads_first=True)
    assert got.shape == (g, heads, tokens, hd)
    joined = got.transpose(1, 2).reshape(g, tokens, heads * hd)
    want = explicit(qkv, None, None, heads, 0.3)
    torch.testing.assert_close(joined, want, **TOL64)
    torch.testing.assert_close(torch.autograd.grad(joined, qkv, grad)[0],
                               torch.autograd.grad(want, qkv, grad)[0], **TOL64)


@pytest.mark.parametrize("hw", [(4, 4), (8, 12)])
def test_one_copy_joins_heads_and_undoes_the_partition(hw: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(hw[1])
    b, heads, hd, ws = 2, 3, 5, 4
    nw = hw[0] * hw[1] // (ws * ws)
    out = torch.randn(b * nw, heads, ws * ws, hd, generator=gen, dtype=torch.float64, requires_grad=True)
    got = windows_heads_to_map(out, ws, hw)  # B, H*W, C
    joined = out.transpose(1, 2).reshape(b, nw, ws * ws, heads * hd)  # B, nW, L, C
    want = window_reverse(joined, ws, hw).reshape(b, hw[0] * hw[1], heads * hd)
    assert torch.equal(got, want)
    grad = torch.randn(got.shape, generator=gen, dtype=torch.float64)
    assert torch.equal(torch.autograd.grad(got, out, grad)[0], torch.autograd.grad(want, out, grad)[0])


def test_the_kernel_choice_follows_the_measured_table() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_packed(cpu, 49, learned_bias=True)  # Swin windows
    assert use_packed(cpu, 25, learned_bias=False)  # small windows without a bias
    assert use_packed(cpu, PACKED_MAX_TOKENS, learned_bias=False)
    assert not use_packed(cpu, PACKED_MAX_TOKENS + 1, learned_bias=False)  # ViT: SDPA's flash kernel
    assert use_packed(cpu, 3136, learned_bias=True)  # a bias SDPA cannot differentiate on the CPU
    assert not use_packed(cpu, 49, learned_bias=True, needs_grad=False)  # evaluation: SDPA's fused forward
    assert not use_packed(cuda, 49, learned_bias=True)
    assert not use_packed(cuda, 3136, learned_bias=False)


@pytest.mark.parametrize("tokens", [PACKED_MAX_TOKENS, PACKED_MAX_TOKENS + 1])
@pytest.mark.parametrize("with_mask", [False, True])
def test_both_kernels_agree_on_each_side_of_the_choice(tokens: int, with_mask: bool) -> None:
    gen = torch.Generator().manual_seed(tokens)
    heads, g = 2, 6
    qkv = torch.randn(g, tokens, 3 * heads * 8, generator=gen, dtype=torch.float64, requires_grad=True)
    mask = torch.where(torch.rand(3, 1, tokens, tokens, generator=gen) < 0.3, -100.0, 0.0).double() \
        if with_mask else None
    grad = torch.randn(g, tokens, heads * 8, generator=gen, dtype=torch.float64)
    chosen = softmax_attention(qkv, None, mask, heads, 0.3)
    (chosen_grad,) = torch.autograd.grad(chosen, qkv, grad)
    want = explicit(qkv, None, mask, heads, 0.3)
    (want_grad,) = torch.autograd.grad(want, qkv, grad)
    torch.testing.assert_close(chosen, want, **TOL64)
    torch.testing.assert_close(chosen_grad, want_grad, **TOL64)


@pytest.mark.parametrize("opts", [{"rel_pos_bias": False}, {}])
def test_global_fast_path_gradients_match_reference(opts: dict) -> None:
    """ViT (no table: SDPA beyond 64 tokens) and a global table (learned bias: packed on the CPU)."""
    torch.manual_seed(0)
    mixer = create_mixer("softmax", 12, 3, input_resolution=(9, 9), **opts).double()
    assert (mixer.table_hw is not None) == (not opts)
    x = torch.randn(2, 82, 12, dtype=torch.float64, requires_grad=True)  # a class token + 9x9
    grad = torch.randn(2, 82, 12, dtype=torch.float64)
    params = [x] + list(mixer.parameters())
    got = torch.autograd.grad(mixer(x, (9, 9)), params, grad)
    want = torch.autograd.grad(mixer.forward_reference(x, (9, 9)), params, grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOL64)


def test_evaluation_takes_sdpa_with_the_same_values() -> None:
    torch.manual_seed(0)
    mixer = create_mixer("softmax", 12, 3, input_resolution=(8, 8), window_size=4, shift_size=2).double().eval()
    x = torch.randn(2, 64, 12, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x, (8, 8)), mixer.forward_reference(x, (8, 8)), **TOL64)


@pytest.mark.parametrize("fold", [True, False])  # both ways of the weight gradient
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("shape,kernel", [((2, 6, 7, 5), 5), ((3, 4, 9, 9), 3), ((1, 2, 4, 6), 7), ((2, 3, 1, 1), 5)])
def test_depthwise_conv_values_and_gradients(shape: tuple[int, int, int, int], kernel: int, with_bias: bool,
                                             channels_last: bool, fold: bool, monkeypatch) -> None:
    """The hand-written backward equals autograd's depthwise conv, input, weight and bias."""
    import ablate.attention._fast as fast

    monkeypatch.setattr(fast, "FOLD_MAX_CHANNELS", 1 << 30 if fold else 0)
    assert fast.fold_weight_grad(*shape) is fold
    torch.manual_seed(0)
    b, c, h, w = shape
    x = torch.randn(b, h, w, c, dtype=torch.float64).permute(0, 3, 1, 2) if channels_last else \
        torch.randn(shape, dtype=torch.float64)
    weight = torch.randn(c, 1, kernel, kernel, dtype=torch.float64)
    bias = torch.randn(c, dtype=torch.float64) if with_bias else None
    grad_out = torch.randn(shape, dtype=torch.float64)
    leaves = [t.clone().requires_grad_(True) for t in (x, weight) + ((bias,) if with_bias else ())]
    fast = depthwise_conv(leaves[0], leaves[1], leaves[2] if with_bias else None)
    fast_grads = torch.autograd.grad(fast, leaves, grad_out)
    ref_leaves = [t.clone().requires_grad_(True) for t in (x, weight) + ((bias,) if with_bias else ())]
    ref = torch.nn.functional.conv2d(ref_leaves[0], ref_leaves[1], ref_leaves[2] if with_bias else None,
                                     padding=kernel // 2, groups=c)
    ref_grads = torch.autograd.grad(ref, ref_leaves, grad_out)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(fast_grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_the_weight_gradient_folds_the_batch_only_where_that_was_faster() -> None:
    from ablate.attention._fast import fold_weight_grad

    assert fold_weight_grad(32, 64, 7, 7)  # Swin-T-like windows of a 28x28 map, batch 2
    assert fold_weight_grad(2, 64, 56, 56)  # a whole 56x56 map (PVT), batch 2
    assert not fold_weight_grad(128, 64, 7, 7)  # many windows: 8,192 folded channels
    assert not fold_weight_grad(16, 64, 28, 28)  # 802,816 elements


def test_depthwise_conv_skips_the_gradients_nobody_asked_for() -> None:
    """Only the weight needs a gradient (a frozen map): no input gradient is computed."""
    x = torch.randn(1, 3, 5, 5)
    weight = torch.randn(3, 1, 3, 3, requires_grad=True)
    out = depthwise_conv(x, weight, None)
    (grad_w,) = torch.autograd.grad(out.sum(), [weight])
    want = torch.nn.grad.conv2d_weight(x, weight.shape, torch.ones_like(out), padding=1, groups=3)
    torch.testing.assert_close(grad_w, want)
