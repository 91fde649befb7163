"""The FLOPs counter against counts worked out by hand (one multiply-add = one FLOP)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ablate.measure import count_flops, count_params, flop_breakdown, measure_latency, profile


class Fn(nn.Module):
    """Wrap a function so the counter (which takes modules) can run it."""

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.fn(*args)


def test_linear_any_leading_dims() -> None:
    lin = nn.Linear(8, 16)
    assert count_flops(lin, torch.randn(8)) == 8 * 16  # 1-D input goes through mv
    assert count_flops(lin, torch.randn(5, 8)) == 5 * 8 * 16
    assert count_flops(lin, torch.randn(2, 3, 5, 8)) == 2 * 3 * 5 * 8 * 16  # bias adds are not counted


@pytest.mark.parametrize(("groups", "kernel", "stride", "padding"), [(1, 3, 1, 1), (2, 3, 2, 1), (1, 4, 4, 0)])
def test_conv2d(groups: int, kernel: int, stride: int, padding: int) -> None:
    conv = nn.Conv2d(4, 6, kernel, stride=stride, padding=padding, groups=groups)
    out = conv(torch.randn(1, 4, 12, 12))  # 1, 6, Ho, Wo
    expected = out.numel() * (4 // groups) * kernel * kernel
    assert count_flops(conv, torch.randn(1, 4, 12, 12)) == expected


def test_depthwise_conv_counts_one_input_channel_per_output() -> None:
    dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    assert count_flops(dw, torch.randn(2, 8, 10, 10)) == 2 * 8 * 10 * 10 * 9  # not * 8 input channels


def test_matmul_bmm_and_broadcast() -> None:
    a, b = torch.randn(3, 4), torch.randn(4, 5)
    assert count_flops(Fn(torch.mm), a, b) == 3 * 4 * 5
    x, y = torch.randn(6, 3, 4), torch.randn(6, 4, 5)
    assert count_flops(Fn(torch.bmm), x, y) == 6 * 3 * 4 * 5
    q, k = torch.randn(2, 3, 7, 8), torch.randn(8, 9)  # (..., 7, 8) @ (8, 9) broadcasts
    assert count_flops(Fn(torch.matmul), q, k) == 2 * 3 * 7 * 8 * 9
    assert count_flops(Fn(torch.dot), torch.randn(11), torch.randn(11)) == 11


def test_einsum_two_and_three_operands() -> None:
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 4)
    qk = 2 * 3 * 5 * 7 * 8
    assert count_flops(Fn(lambda a, b: torch.einsum("bhnd,bhmd->bhnm", a, b)), q, k) == qk
    # Three operands (thop counts this as zero): contracted pairwise, (q k) then (. v).
    three = count_flops(Fn(lambda a, b, c: torch.einsum("bhnd,bhmd,bhme->bhne", a, b, c)), q, k, v)
    assert three == qk + 2 * 3 * 5 * 7 * 4


@pytest.mark.parametrize("length", [7, 300])  # 300 tokens: the CPU picks its fused flash kernel
def test_sdpa_on_cpu(length: int) -> None:
    q = torch.randn(1, 2, length, 16)
    k = torch.randn(1, 2, length, 16)
    v = torch.randn(1, 2, length, 8)
    expected = 2 * length * length * (16 + 8)  # q k^T then weights @ v
    assert count_flops(Fn(F.scaled_dot_product_attention), q, k, v) == expected


def test_sdpa_counted_even_when_the_model_forces_the_fused_kernel() -> None:
    def fused(q: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, q, q)

    q = torch.randn(1, 2, 256, 16)
    assert count_flops(Fn(fused), q) == 2 * 2 * 256 * 256 * 16


def test_pooling_counts_one_per_input_element_and_norms_do_not_count() -> None:
    x = torch.randn(1, 4, 6, 6)
    assert count_flops(nn.AdaptiveAvgPool2d(1), x) == 4 * 36
    assert count_flops(nn.AdaptiveAvgPool2d(3), x) == 4 * 36
    assert count_flops(nn.AvgPool2d(2), x) == 4 * 36
    assert count_flops(Fn(lambda t: t.mean((2, 3))), x) == 4 * 36
    assert count_flops(nn.MaxPool2d(2), x) == 0
    assert count_flops(nn.LayerNorm(6), x) == 0
    assert count_flops(Fn(lambda t: t.softmax(-1).relu() + t), x) == 0


class Tiny(nn.Module):
    """conv stem -> tokens -> single-head attention by einsum -> mean pool -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, stride=2)  # 8x8 -> 4x4
        self.norm = nn.LayerNorm(8)
        self.qkv = nn.Linear(8, 24)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.head = nn.Linear(8, 5)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # B, 8, 4, 4
        t = self.norm(x.flatten(2).transpose(1, 2))  # B, 16, 8
        q, k, v = self.qkv(t).chunk(3, dim=-1)  # B, 16, 8 each
        a = torch.einsum("bnc,bmc->bnm", q, k).softmax(-1)  # B, 16, 16
        t = self.drop(a @ v)  # B, 16, 8
        x = self.dw(t.transpose(1, 2).reshape(-1, 8, 4, 4))  # B, 8, 4, 4
        return self.head(x.mean((2, 3)))  # B, 5


def test_tiny_model_total_by_hand_and_training_flag_restored() -> None:
    model = Tiny().train()
    stem = 16 * 8 * 3 * 2 * 2  # out positions * out ch * in ch * kernel area
    qkv = 16 * 8 * 24
    attn = 16 * 16 * 8 + 16 * 16 * 8  # q k^T, a v
    dw = 16 * 8 * 9
    pool = 8 * 16
    head = 8 * 5
    assert count_flops(model, torch.randn(1, 3, 8, 8)) == stem + qkv + attn + dw + pool + head
    assert model.training
    assert count_flops(model, torch.randn(3, 3, 8, 8)) == 3 * (stem + qkv + attn + dw + pool + head)
    by_module = flop_breakdown(model, torch.randn(1, 3, 8, 8))
    assert sum(by_module["Global"].values()) == stem + qkv + attn + dw + pool + head


def test_count_params_counts_shared_tensors_once() -> None:
    a = nn.Linear(4, 4)
    model = nn.Sequential(a, nn.ReLU(), a)
    assert count_params(model) == 20
    assert count_params(Tiny()) == (3 * 8 * 4 + 8) + 16 + (8 * 24 + 24) + (8 * 9 + 8) + (8 * 5 + 5)


def test_profile_and_latency() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), nn.Flatten(), nn.Linear(4 * 4 * 4, 2)).train()
    p = profile(model, 16)
    assert p == {"params_m": count_params(model) / 1e6, "gflops": (16 * 4 * 3 * 16 + 64 * 2) / 1e9}
    assert set(p) == {"params_m", "gflops"}
    ms = measure_latency(model, 16, warmup=1, iters=3)
    assert ms > 0 and model.training
    assert next(model.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="iters"):
        measure_latency(model, 16, iters=0)
