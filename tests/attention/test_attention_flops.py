"""The project's FLOP counter against hand-computed multiply-adds for softmax and focal.

``count_flops`` (ablate.measure) must see every multiply-add the mixers do: the qkv and
output projections on the padded map, both attention matmuls for every key, the qkv of
pooled tokens and the pooling itself (fc / conv / mean; max pooling has no multiply-adds).
Counts are multiply-adds (one FLOP each), for the whole batch.
"""

from __future__ import annotations

import math

import pytest
import torch

from ablate.attention import create_mixer
from ablate.measure import count_flops


def _padded(hw: tuple[int, int], ws: int) -> tuple[int, int]:
    return math.ceil(hw[0] / ws) * ws, math.ceil(hw[1] / ws) * ws


def softmax_macs(batch: int, dim: int, hw: tuple[int, int], window: int | None) -> int:
    """qkv + q k^T + attn v + proj; windows on the zero-padded map."""
    if window is None:
        n = hw[0] * hw[1]
        return batch * (n * 3 * dim * dim + 2 * n * n * dim + n * dim * dim)
    hp, wp = _padded(hw, window)
    n, n_windows, L = hp * wp, (hp // window) * (wp // window), window * window
    return batch * (n * 3 * dim * dim + n_windows * 2 * L * L * dim + n * dim * dim)


def focal_macs(batch: int, dim: int, hw: tuple[int, int], window: int, focal_level: int, focal_window: int,
               expand: int, pool_method: str) -> int:
    """Focal attention as the official code computes it (ring keys with duplicates)."""
    hp, wp = _padded(hw, window)
    nwh, nww = hp // window, wp // window
    n, L = hp * wp, window * window
    keys = L + (4 * L - 4 * (window - expand) ** 2 if expand else 0)
    macs = n * 3 * dim * dim + n * dim * dim  # qkv and proj on the padded map
    levels = focal_level - 1 if pool_method != "none" else 0
    for k in range(levels):
        sw = window // 2 ** k
        pooled = nwh * nww * 4 ** k  # pooled tokens of level k
        if pool_method in ("fc", "conv", "mean"):  # one multiply-add per pooled input element
            macs += pooled * dim * sw * sw
        macs += pooled * 3 * dim * dim  # full qkv on pooled tokens, as official
        keys += (focal_window + 2 ** k - 1) ** 2
    macs += nwh * nww * 2 * L * keys * dim  # q k^T and attn v
    return batch * macs


def _count(mixer: torch.nn.Module, batch: int, dim: int, hw: tuple[int, int]) -> int:
    x = torch.randn(batch, hw[0] * hw[1], dim)  # B, N, C
    return count_flops(mixer, x, hw)


@pytest.mark.parametrize(("hw", "window", "shift", "input_resolution"), [
    ((8, 8), None, 0, None),
    ((7, 9), None, 0, (7, 9)),
    ((8, 8), 4, 0, (8, 8)),
    ((8, 8), 4, 2, (8, 8)),
    ((7, 9), 4, 2, None),  # padded to 8 x 12
    ((5, 6), 7, 3, (5, 6)),  # clamped to one 5 x 5 window, padded to 5 x 10
])
def test_softmax_flops(hw: tuple[int, int], window: int | None, shift: int,
                       input_resolution: tuple[int, int] | None) -> None:
    mixer = create_mixer("softmax", 16, 2, input_resolution=input_resolution, window_size=window, shift_size=shift)
    assert _count(mixer, 2, 16, hw) == softmax_macs(2, 16, hw, mixer.window)


@pytest.mark.parametrize(("hw", "opts"), [
    ((8, 8), dict(window_size=4, focal_level=2, focal_window=3, expand_size=2, pool_method="fc")),
    ((8, 8), dict(window_size=4, focal_level=3, focal_window=3, expand_size=1, pool_method="conv")),
    ((7, 9), dict(window_size=4, focal_level=3, focal_window=3, expand_size=1, pool_method="mean")),
    ((6, 9), dict(window_size=3, focal_level=3, focal_window=3, expand_size=1, pool_method="max")),
    ((8, 8), dict(window_size=4, focal_level=2, focal_window=3, expand_size=0, pool_method="fc", shift_size=2)),
    ((8, 8), dict(window_size=4, focal_level=1, expand_size=2)),
    ((8, 8), dict(window_size=4, focal_level=3, focal_window=5, expand_size=2, pool_method="none")),
])
def test_focal_flops(hw: tuple[int, int], opts: dict) -> None:
    mixer = create_mixer("focal", 16, 2, input_resolution=hw, **opts)
    expected = focal_macs(2, 16, hw, mixer.window, mixer.opts.focal_level, mixer.opts.focal_window, mixer.expand,
                          mixer.opts.pool_method)
    assert _count(mixer, 2, 16, hw) == expected


def test_focal_t_stage1_flops_vs_official_formula() -> None:
    """Focal-T stage 1 (dim 96, 56x56, one image): counted vs the official ``flops()``.

    The official formula charges the ring as ``(sp + 2e)^2 - sp^2 = 120`` keys; the
    official code (and this mixer) attends to ``4 sp^2 - 4 (sp - e)^2 = 132`` key slots,
    some tokens twice. That is the whole difference: 64 windows * 49 queries * 96 * 12
    extra keys * 2 matmuls = 7,225,344 multiply-adds per block (+2.9 %).
    """
    mixer = create_mixer("focal", 96, 3, input_resolution=(56, 56))
    counted = _count(mixer, 1, 96, (56, 56))
    assert counted == focal_macs(1, 96, (56, 56), 7, 2, 7, 3, "fc") == 256_161_792

    # the official WindowAttention.flops + the block's pooling terms (norm terms excluded)
    n_windows, L, dim, fw, e = 64, 49, 96, 7, 3
    official = n_windows * (L * 3 * dim * dim + 2 * (L * dim * L + L * dim * fw * fw + L * dim * ((7 + 2 * e) ** 2 - L))
                            + L * dim * dim)
    official += n_windows * dim * 7 * 7 + n_windows * 3 * dim * dim
    assert official == 248_936_448
    assert counted - official == n_windows * L * dim * (132 - 120) * 2
