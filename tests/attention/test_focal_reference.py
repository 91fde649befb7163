"""Focal attention against a loop-by-loop computation of the official math.

``focal_by_loops`` follows the official ``FocalTransformerBlock`` + ``WindowAttention``
(microsoft/Focal-Transformer, classification/focal_transformer.py) token by token with
plain Python loops over the padded map: for every query it lists its window keys, its
rolled ring keys and the pooled keys of every level, builds each key's bias from the
tables by explicit coordinates, and takes a softmax. It shares only the weights with the
mixer (no helper from ``ablate``), so agreement in float64 shows the vectorised gather,
the bias layout and the masks are the official ones.

The parameter counts at the bottom were read off the official module
(``FocalTransformerBlock(...).attn`` + ``.pool_layers``) for the Focal-T stages.
"""

from __future__ import annotations

import math

import pytest
import torch

from ablate.attention import create_mixer

MASK = -100.0  # the official value for masked logits


def pool_by_loops(mixer, xs: torch.Tensor, level: int) -> torch.Tensor:
    """Pooled tokens of one level: ``(Hp, Wp, C)`` map -> ``(Ph, Pw, C)``, one cell at a time."""
    ws, method = mixer.window, mixer.opts.pool_method
    hp, wp, c = xs.shape
    sw = math.floor(ws / 2 ** level)
    ph, pw = math.ceil(hp / ws) * 2 ** level, math.ceil(wp / ws) * 2 ** level
    top, left = (hp - ph * sw) // 2, (wp - pw * sw) // 2  # official: trim the excess centrally
    out = torch.zeros(ph, pw, c, dtype=xs.dtype)
    for i in range(ph):
        for j in range(pw):
            cell = [xs[top + i * sw + a, left + j * sw + b] for a in range(sw) for b in range(sw)]  # sw*sw of (C,)
            if method == "mean":
                out[i, j] = sum(cell) / len(cell)
            elif method == "max":
                out[i, j] = torch.stack(cell).max(dim=0).values
            elif method == "fc":  # Linear(sw*sw, 1) shared by the channels
                fc = mixer.pool_layers[level]
                out[i, j] = sum(fc.weight[0, p] * cell[p] for p in range(sw * sw)) + fc.bias[0]
            elif method == "conv":  # depthwise conv, kernel = stride = sw
                conv = mixer.pool_layers[level]
                out[i, j] = sum(conv.weight[:, 0, p // sw, p % sw] * cell[p] for p in range(sw * sw)) + conv.bias
    return out


def focal_by_loops(mixer, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """One image ``(N, C)`` through focal attention, one query at a time."""
    o = mixer.opts
    ws, e, s = mixer.window, mixer.expand, mixer.shift
    c, nh = mixer.dim, mixer.num_heads
    hd = c // nh
    scale = o.qk_scale or hd ** -0.5
    h, w = hw
    hp, wp = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws

    padded = torch.zeros(hp, wp, c, dtype=x.dtype)
    padded[:h, :w] = x.view(h, w, c)
    xs = torch.zeros_like(padded)  # the cyclically shifted map: xs[i, j] = padded[i + s, j + s]
    for i in range(hp):
        for j in range(wp):
            xs[i, j] = padded[(i + s) % hp, (j + s) % wp]

    qkv = mixer.qkv(xs)  # Hp, Wp, 3C
    q, k, v = qkv[..., :c], qkv[..., c:2 * c], qkv[..., 2 * c:]

    levels = []  # per level: (pooled k, pooled v, region side K, table)
    n_levels = o.focal_level - 1 if o.pool_method != "none" else 0
    for level in range(n_levels):
        pooled_qkv = mixer.qkv(pool_by_loops(mixer, xs, level))  # Ph, Pw, 3C
        levels.append((pooled_qkv[..., c:2 * c], pooled_qkv[..., 2 * c:], o.focal_window + 2 ** level - 1,
                       mixer.relative_position_bias_table_to_windows[level]))

    def swin_region(i: int, size: int) -> int:  # Swin's shift-mask label along one axis
        return 0 if i < size - ws else (1 if i < size - s else 2)

    out = torch.zeros(hp, wp, c, dtype=x.dtype)
    for wi in range(hp // ws):
        for wj in range(wp // ws):
            for qa in range(ws):
                for qb in range(ws):
                    qy, qx = wi * ws + qa, wj * ws + qb
                    keys, values, biases = [], [], []  # per key: (C,), (C,), (nH,)

                    # 1. the window's own tokens, Swin relative bias (+ shift mask)
                    for ka in range(ws):
                        for kb in range(ws):
                            ky, kx = wi * ws + ka, wj * ws + kb
                            row = (qa - ka + ws - 1) * (2 * ws - 1) + (qb - kb + ws - 1)
                            bias = mixer.relative_position_bias_table[row].clone()
                            if s and (swin_region(qy, hp), swin_region(qx, wp)) != \
                                    (swin_region(ky, hp), swin_region(kx, wp)):
                                bias = bias + MASK
                            keys.append(k[ky, kx])
                            values.append(v[ky, kx])
                            biases.append(bias)

                    # 2. the ring: maps rolled by (-e,-e), (-e,e), (e,-e), (e,e), tokens from outside the window
                    if e > 0:
                        slot = 0
                        for sy, sx in ((-e, -e), (-e, e), (e, -e), (e, e)):
                            for a in range(ws):
                                for b in range(ws):
                                    if 0 <= a - sy < ws and 0 <= b - sx < ws:
                                        continue  # inside the window: already a key
                                    ky, kx = (wi * ws + a - sy) % hp, (wj * ws + b - sx) % wp
                                    keys.append(k[ky, kx])
                                    values.append(v[ky, kx])
                                    biases.append(mixer.relative_position_bias_table_to_neighbors[0, :, qa * ws + qb, slot])
                                    slot += 1

                    # 3. pooled keys: a K x K region of pooled tokens around the window, per level
                    for level, (kp, vp, size, table) in enumerate(levels):
                        ph, pw = kp.shape[:2]
                        for a in range(size):
                            for b in range(size):
                                py = wi * 2 ** level - o.focal_window // 2 + a
                                px = wj * 2 ** level - o.focal_window // 2 + b
                                bias = table[:, (qa - a + size - 1) * (ws + size - 1) + (qb - b + size - 1)]
                                if 0 <= py < ph and 0 <= px < pw:
                                    keys.append(kp[py, px])
                                    values.append(vp[py, px])
                                    biases.append(bias)
                                else:  # off the pooled map: zero key and value, masked logit
                                    keys.append(torch.zeros(c, dtype=x.dtype))
                                    values.append(torch.zeros(c, dtype=x.dtype))
                                    biases.append(bias + MASK)

                    for head in range(nh):
                        part = slice(head * hd, (head + 1) * hd)
                        logits = torch.stack([
                            (q[qy, qx, part] * scale) @ key[part] + bias[head] for key, bias in zip(keys, biases)
                        ])
                        weights = logits.softmax(dim=0)
                        out[qy, qx, part] = sum(wt * val[part] for wt, val in zip(weights, values))

    out = mixer.proj(out)  # Hp, Wp, C
    unshifted = torch.zeros_like(out)
    for i in range(hp):
        for j in range(wp):
            unshifted[(i + s) % hp, (j + s) % wp] = out[i, j]
    return unshifted[:h, :w].reshape(h * w, c)


CASES = [
    # (input_resolution, run-time hw, options)
    ((8, 8), (8, 8), dict(window_size=4, focal_level=2, focal_window=3, expand_size=2, pool_method="fc")),
    ((7, 9), (7, 9), dict(window_size=4, focal_level=3, focal_window=3, expand_size=1, pool_method="conv")),
    ((6, 9), (6, 9), dict(window_size=3, focal_level=3, focal_window=3, expand_size=1, pool_method="mean")),
    ((8, 8), (8, 8), dict(window_size=4, focal_level=2, focal_window=1, expand_size=2, pool_method="max",
                          shift_size=2)),
    ((8, 8), (8, 8), dict(window_size=4, focal_level=4, focal_window=3, expand_size=1, pool_method="fc")),
    ((8, 8), (8, 8), dict(window_size=4, focal_level=1, expand_size=4)),
    ((5, 6), (5, 6), dict(window_size=7, focal_level=2, focal_window=1, expand_size=3)),  # clamped to 5
    (None, (5, 7), dict(window_size=4, focal_level=2, focal_window=5, expand_size=2, shift_size=1)),
    ((8, 8), (6, 10), dict(window_size=4, focal_level=2, focal_window=3, expand_size=3, qk_scale=0.3)),
]


@pytest.mark.parametrize(("input_resolution", "hw", "opts"), CASES)
def test_focal_matches_loops(input_resolution: tuple[int, int] | None, hw: tuple[int, int], opts: dict) -> None:
    torch.manual_seed(0)
    mixer = create_mixer("focal", 8, 2, input_resolution=input_resolution, **opts).double().eval()
    with torch.no_grad():
        for p in mixer.parameters():  # make zero-initialised tables and 1/n pooling weights matter
            p.add_(0.3 * torch.randn_like(p))
        x = torch.randn(2, hw[0] * hw[1], 8, dtype=torch.float64)  # B, N, C
        fast, explicit = mixer(x, hw), mixer.forward_reference(x, hw)
        for i in range(x.shape[0]):
            loops = focal_by_loops(mixer, x[i], hw)
            torch.testing.assert_close(fast[i], loops, atol=1e-10, rtol=1e-10)
            torch.testing.assert_close(explicit[i], loops, atol=1e-10, rtol=1e-10)


def test_ring_slots_follow_the_official_layout() -> None:
    """4*sp^2 - 4*(sp-e)^2 ring keys (the official count), duplicates included."""
    for ws, e in [(7, 3), (4, 1), (4, 2), (4, 4), (3, 1)]:
        mixer = create_mixer("focal", 8, 2, window_size=ws, expand_size=e, focal_window=3)
        assert mixer.ring_offsets.shape[0] == 4 * ws * ws - 4 * (ws - e) ** 2
        assert mixer.relative_position_bias_table_to_neighbors.shape == (1, 2, ws * ws, 4 * ws * ws - 4 * (ws - e) ** 2)
    # ws=7, e=3: 120 distinct ring tokens, 132 slots
    offsets = create_mixer("focal", 8, 2).ring_offsets
    assert len({tuple(t) for t in offsets.tolist()}) == (7 + 6) ** 2 - 49


# Official per-block attention parameters (WindowAttention + pool_layers) for Focal-T
# (embed 96, heads 3/6/12/24, window 7, focal_level 2, focal_windows 7/5/3/1, expand 3,
# pool "fc", 224x224 input), read off the official module.
FOCAL_T_STAGES = [
    (96, 3, (56, 56), 7, 57_716),
    (192, 6, (28, 28), 5, 188_822),
    (384, 12, (14, 14), 3, 672_026),
    (768, 24, (7, 7), 1, 2_367_650),  # map == window: no ring (expand clamped to 0)
]


@pytest.mark.parametrize(("dim", "heads", "res", "focal_window", "expected"), FOCAL_T_STAGES)
def test_focal_t_param_counts(dim: int, heads: int, res: tuple[int, int], focal_window: int, expected: int) -> None:
    mixer = create_mixer("focal", dim, heads, input_resolution=res, focal_window=focal_window)
    assert sum(p.numel() for p in mixer.parameters()) == expected
    # the formula behind the count
    ws, e = 7, (3 if min(res) > 7 else 0)
    ring = 4 * ws * ws - 4 * (ws - e) ** 2 if e else 0
    size = focal_window
    formula = (3 * dim * dim + 3 * dim) + (dim * dim + dim) + (2 * ws - 1) ** 2 * heads \
        + heads * ws * ws * ring + heads * (ws + size - 1) ** 2 + (ws * ws + 1)
    assert formula == expected


def test_the_integer_on_map_rule_equals_the_pooled_mask() -> None:
    """The forward decides "no key padded" from integers (no data-dependent branch); it must agree with the mask."""
    import itertools

    from ablate.attention import create_mixer

    seen = set()
    for fw, ws, side in itertools.product([1, 3, 5], [2, 4, 7], [4, 8, 14, 28]):
        mixer = create_mixer("focal", 16, 2, input_resolution=(side, side), window_size=ws, focal_window=fw,
                             expand_size=0)
        n = -(-side // mixer.window)  # windows per side after padding
        for level in range(len(mixer.pool_windows)):
            _, valid = mixer._pooled_index(n, n, level, torch.device("cpu"))
            assert bool(valid.all()) == mixer._pooled_on_map(n, n, level), (fw, ws, side, level)
            seen.add(bool(valid.all()))
    assert seen == {True, False}
