"""LaViT (less-attention) specifics: VA / LA roles, the attention residual, the DP loss.

The generic contract (tests/attention/test_attention.py) sees a lavit mixer built alone, i.e. a VA
layer; here blocks are built with a :class:`BlockContext` and chained through one state,
as the model builder does.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from ablate.attention import BlockContext, check_mixer, create_mixer
from ablate.attention.lavit import ATTN_KEY, HW_KEY, AttentionResidual, LessAttention, diagonality_loss
from ablate.errors import Infeasible
from ablate.measure import count_flops

TOL32 = {"atol": 1e-5, "rtol": 1e-4}
TOL64 = {"atol": 1e-10, "rtol": 1e-10}


def block(dim: int, heads: int, hw: tuple[int, int] | None, *, stage: int = 0, index: int = 0, depth: int = 2,
          prev_heads: int | None = None, prev_hw: tuple[int, int] | None = None, seed: int = 0,
          perturb: bool = True, **opts: object) -> LessAttention:
    """One lavit mixer at a position in its model; parameters randomised around their init."""
    torch.manual_seed(seed)
    ctx = BlockContext(stage=stage, index=index, depth=depth, prev_num_heads=prev_heads, prev_resolution=prev_hw)
    mixer = create_mixer("lavit", dim, heads, input_resolution=hw, context=ctx, **opts)
    if perturb:
        with torch.no_grad():
            for name, p in mixer.named_parameters():
                scale = 0.3 / p.shape[0] ** 0.5 if name in ("psi", "theta") else 0.1
                p.add_(scale * torch.randn_like(p))
    return mixer.eval()  # type: ignore[return-value]


def tokens(hw: tuple[int, int], dim: int, *, batch: int = 2, seed: int = 1,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, hw[0] * hw[1], dim, generator=gen, dtype=dtype)  # B, N, C


def fresh() -> dict:
    return {"aux_losses": []}


def two_stages(hw0: tuple[int, int], hw1: tuple[int, int], **opts: object) -> list[LessAttention]:
    """Stage 0: dim 16, 2 heads, VA LA LA; stage 1: dim 32, 4 heads, VA(+residual) LA (va_layers=1)."""
    s0 = [block(16, 2, hw0, stage=0, index=j, depth=3, seed=j, **opts) for j in range(3)]
    s1 = [block(32, 4, hw1, stage=1, index=j, depth=2, prev_heads=2, prev_hw=hw0, seed=10 + j, **opts)
          for j in range(2)]
    return s0 + s1


def run_chain(mixers: list[LessAttention], xs: list[torch.Tensor], hws: list[tuple[int, int]], *,
              reference: bool) -> tuple[list[torch.Tensor], dict]:
    state = fresh()
    outs = []
    for mixer, x, hw in zip(mixers, xs, hws):
        outs.append(mixer.forward_reference(x, hw, state) if reference else mixer(x, hw, state))
    return outs, state


# --------------------------------------------------------------------------- roles


def test_roles_follow_the_block_position() -> None:
    va, la = block(16, 2, (4, 4), index=0, depth=3), block(16, 2, (4, 4), index=1, depth=3)
    assert (va.role, la.role) == ("va", "la")
    assert hasattr(va, "qkv") and not hasattr(va, "psi") and va.residual is None
    assert hasattr(la, "v") and hasattr(la, "psi") and hasattr(la, "theta") and not hasattr(la, "qkv")
    assert va.store and la.store  # the next block is an LA layer / LA scores are always kept
    # va_layers=2: block 1 is a VA layer too; block 0 then needs no stored scores (SDPA path)
    va0, va1 = (block(16, 2, (4, 4), index=j, depth=3, va_layers=2) for j in range(2))
    assert (va0.role, va1.role, va0.store, va1.store) == ("va", "va", False, True)
    # the last block of a stage keeps its scores for the next stage's residual
    assert block(16, 2, (4, 4), index=0, depth=1, va_layers=3).store
    # a mixer built alone is a VA layer that stores nothing
    alone = create_mixer("lavit", 16, 2)
    assert alone.role == "va" and not alone.store
    first = block(32, 4, (2, 2), stage=1, index=0, prev_heads=2, prev_hw=(4, 4))
    assert isinstance(first.residual, AttentionResidual)
    assert block(32, 4, (2, 2), stage=1, index=0, prev_heads=2, attention_residual=False).residual is None
    assert block(32, 4, (2, 2), stage=1, index=1, prev_heads=2).residual is None


def test_la_layer_parameters_have_no_query_or_key() -> None:
    """v and proj (C*C + C each) plus the two N x N maps."""
    dim, n = 16, 16
    la = block(dim, 2, (4, 4), index=1, perturb=False)
    assert {name for name, _ in la.named_parameters()} == {"v.weight", "v.bias", "psi", "theta",
                                                            "proj.weight", "proj.bias"}
    assert sum(p.numel() for p in la.parameters()) == 2 * (dim * dim + dim) + 2 * n * n
    first = block(32, 4, (2, 2), stage=1, index=0, prev_heads=2, perturb=False)
    res = first.residual
    assert res is not None
    assert sum(p.numel() for p in res.parameters()) == 2 * 16 + 2 + 4 * 2 + 4 + 4
    torch.testing.assert_close(res.gamma, torch.full((4,), 1e-5))


# --------------------------------------------------------------------------- fast == reference


@pytest.mark.parametrize(("hw0", "hw1"), [((4, 4), (2, 2)), ((5, 3), (2, 1)), ((3, 5), (2, 3))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_path_matches_reference_through_two_stages(hw0: tuple[int, int], hw1: tuple[int, int],
                                                        dtype: torch.dtype) -> None:
    """VA, LA, LA, then VA with the residual (floor and ceil downsampling) and LA."""
    mixers = [m.to(dtype) for m in two_stages(hw0, hw1)]
    hws = [hw0] * 3 + [hw1] * 2
    xs = [tokens(hw, m.dim, seed=i, dtype=dtype) for i, (m, hw) in enumerate(zip(mixers, hws))]
    tol = TOL32 if dtype == torch.float32 else TOL64
    with torch.no_grad():
        fast, fast_state = run_chain(mixers, xs, hws, reference=False)
        ref, ref_state = run_chain(mixers, xs, hws, reference=True)
    for a, b in zip(fast, ref):
        assert a.shape == b.shape and torch.isfinite(a).all()
        torch.testing.assert_close(a, b, **tol)
    torch.testing.assert_close(fast_state[ATTN_KEY], ref_state[ATTN_KEY], **tol)
    assert fast_state[HW_KEY] == ref_state[HW_KEY] == hw1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sdpa_path_with_residual_bias_matches_reference(dtype: torch.dtype) -> None:
    """va_layers=2: the first block of stage 1 adds the residual but stores nothing (SDPA with a bias)."""
    prev = block(16, 2, (4, 4), index=1, depth=2, va_layers=2).to(dtype)
    first = block(32, 4, (2, 2), stage=1, index=0, prev_heads=2, va_layers=2, layer_scale_init=0.5).to(dtype)
    assert prev.store and not first.store
    x0, x1 = tokens((4, 4), 16, dtype=dtype), tokens((2, 2), 32, dtype=dtype)
    tol = TOL32 if dtype == torch.float32 else TOL64
    with torch.no_grad():
        outs = []
        for reference in (False, True):
            state = fresh()
            (prev.forward_reference if reference else prev)(x0, (4, 4), state)
            outs.append((first.forward_reference if reference else first)(x1, (2, 2), state))
        torch.testing.assert_close(outs[0], outs[1], **tol)
        lone = first(x1, (2, 2), fresh())  # no previous attention: the residual is skipped
        assert not torch.allclose(lone, outs[0])


# --------------------------------------------------------------------------- LA transform


def test_la_transform_is_the_paper_formula() -> None:
    """``A^l = Ψ(Θ(A^{l-1})^T)^T`` with Ψ, Θ linear layers acting on rows, i.e. W_Ψ A W_Θ^T."""
    la = block(8, 2, (2, 3), index=1).double()
    prev = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    theta, psi = nn.Linear(6, 6, bias=False).double(), nn.Linear(6, 6, bias=False).double()
    with torch.no_grad():
        theta.weight.copy_(la.theta)
        psi.weight.copy_(la.psi)
        literal = psi(theta(prev).transpose(-2, -1)).transpose(-2, -1)
        torch.testing.assert_close(la._transform(prev, reference=False), literal, **TOL64)
        torch.testing.assert_close(la._transform(prev, reference=True), literal, **TOL64)
        torch.testing.assert_close(literal, la.psi @ prev @ la.theta.T, **TOL64)


def test_untrained_la_layer_reuses_the_previous_attention() -> None:
    """Ψ and Θ start at the identity: the LA layer's scores are the VA layer's."""
    va, la = block(16, 2, (4, 4), index=0, perturb=False), block(16, 2, (4, 4), index=1, perturb=False)
    state = fresh()
    with torch.no_grad():
        va(tokens((4, 4), 16), (4, 4), state)
        before = state[ATTN_KEY].clone()
        la(tokens((4, 4), 16, seed=5), (4, 4), state)
    torch.testing.assert_close(state[ATTN_KEY], before, atol=0, rtol=0)


# --------------------------------------------------------------------------- residual downsampling


def brute_force_residual(res: AttentionResidual, attn: torch.Tensor, src: tuple[int, int],
                         dst: tuple[int, int]) -> torch.Tensor:
    """Loop over every output (query cell, key cell) and every tap of the 2x2 x 2x2 blocks."""
    (hs, ws), (h, w) = src, dst
    b, hp = attn.shape[:2]
    n = h * w
    dw = torch.zeros(b, hp, n, n, dtype=attn.dtype)
    for bi, c, y, x, u, v in itertools.product(range(b), range(hp), range(h), range(w), range(h), range(w)):
        total = float(res.dw_bias[c])
        for i, j, k, l in itertools.product(range(2), repeat=4):
            qy, qx, ky, kx = 2 * y + i, 2 * x + j, 2 * u + k, 2 * v + l
            if qy < hs and qx < ws and ky < hs and kx < ws:  # zero padding outside the previous map
                total += float(attn[bi, c, qy * ws + qx, ky * ws + kx]) * float(res.dw_weight[c, i, j, k, l])
        dw[bi, c, y * w + x, u * w + v] = total
    weight, bias, gamma = res.pw.weight[:, :, 0, 0], res.pw.bias, res.gamma
    out = torch.zeros(b, weight.shape[0], n, n, dtype=attn.dtype)
    for o in range(weight.shape[0]):
        mixed = bias[o] + sum(weight[o, c] * dw[:, c] for c in range(hp))
        out[:, o] = gamma[o] * mixed
    return out


@pytest.mark.parametrize(("src", "dst"), [((4, 4), (2, 2)), ((4, 6), (2, 3)), ((5, 5), (2, 2)), ((3, 5), (2, 3)),
                                          ((1, 2), (1, 1))])
def test_residual_matches_a_brute_force_loop(src: tuple[int, int], dst: tuple[int, int]) -> None:
    torch.manual_seed(0)
    res = AttentionResidual(2, 3, 0.7).double()
    with torch.no_grad():
        for p in res.parameters():
            p.add_(0.1 * torch.randn_like(p))
        ns = src[0] * src[1]
        attn = torch.randn(2, 2, ns, ns, dtype=torch.float64)
        expected = brute_force_residual(res, attn, src, dst)
        torch.testing.assert_close(res(attn, src, dst), expected, **TOL64)
        torch.testing.assert_close(res.forward_reference(attn, src, dst), expected, **TOL64)


def test_residual_rejects_maps_that_do_not_halve() -> None:
    res = AttentionResidual(2, 2, 1.0)
    with pytest.raises(ValueError, match="does not halve"):
        res(torch.randn(1, 2, 64, 64), (8, 8), (2, 2))


# --------------------------------------------------------------------------- diagonality loss


def test_diagonality_loss_hand_computed() -> None:
    p = torch.tensor([[0.5, 0.3, 0.2],
                      [0.1, 0.6, 0.3],
                      [0.4, 0.4, 0.2]], dtype=torch.float64)
    # symmetry: 2*(|0.3-0.1| + |0.2-0.4| + |0.3-0.4|) = 1.0; dominance: row 2, 2*(0.4-0.2) = 0.4; both / N=3
    torch.testing.assert_close(diagonality_loss(p), torch.tensor(1.4 / 3, dtype=torch.float64))
    sym_dominant = torch.tensor([[0.6, 0.2, 0.2], [0.2, 0.7, 0.1], [0.2, 0.1, 0.7]])
    assert diagonality_loss(sym_dominant) == 0 and diagonality_loss(torch.eye(4)) == 0
    batched = torch.stack([p, torch.eye(3, dtype=torch.float64)]).unsqueeze(0)  # 1, 2, 3, 3
    torch.testing.assert_close(diagonality_loss(batched), torch.tensor(1.4 / 6, dtype=torch.float64))


def test_la_layers_add_the_weighted_loss_in_training_only() -> None:
    va = block(16, 2, (4, 4), index=0, depth=3, dp_loss_weight=0.5).train()
    la = block(16, 2, (4, 4), index=1, depth=3, dp_loss_weight=0.5).train()
    state = fresh()
    va(tokens((4, 4), 16), (4, 4), state)
    assert state["aux_losses"] == []  # VA layers add nothing
    la(tokens((4, 4), 16), (4, 4), state)
    (loss,) = state["aux_losses"]
    expected = 0.5 * diagonality_loss(state[ATTN_KEY].softmax(-1))
    torch.testing.assert_close(loss, expected)
    assert loss.requires_grad and loss > 0
    state = fresh()
    va.eval()(tokens((4, 4), 16), (4, 4), state)
    la.eval()(tokens((4, 4), 16), (4, 4), state)
    assert state["aux_losses"] == []
    off = block(16, 2, (4, 4), index=1, dp_loss_weight=0.0).train()
    state = fresh()
    va(tokens((4, 4), 16), (4, 4), state)
    off(tokens((4, 4), 16), (4, 4), state)
    assert state["aux_losses"] == []


# --------------------------------------------------------------------------- FLOPs


def test_la_layer_flops_have_no_qk_term() -> None:
    """LA: v + proj (2 N C^2), Ψ A Θ^T (2 nH N^3), attn v (N^2 C); VA adds q, k and q k^T."""
    b, c, nh, hw = 2, 16, 2, (4, 4)
    n = hw[0] * hw[1]
    va, la = block(c, nh, hw, index=0), block(c, nh, hw, index=1)
    x = tokens(hw, c, batch=b)
    state = fresh()
    va_flops = count_flops(va, x, hw, state)
    la_flops = count_flops(la, x, hw, state)
    assert va_flops == b * (4 * n * c * c + 2 * n * n * c)
    assert la_flops == b * (2 * n * c * c + 2 * nh * n ** 3 + n * n * c)


# --------------------------------------------------------------------------- training


class ToyTwoStage(nn.Module):
    """Stage 0 (4x4, 16 channels): VA, LA, LA; 2x2 merge; stage 1 (2x2, 32 channels): VA+residual, LA."""

    def __init__(self) -> None:
        super().__init__()
        self.stage0 = nn.ModuleList(two_stages((4, 4), (2, 2))[:3])
        self.merge = nn.Linear(4 * 16, 32)
        self.stage1 = nn.ModuleList(two_stages((4, 4), (2, 2))[3:])
        self.head = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor, state: dict) -> torch.Tensor:
        for mixer in self.stage0:
            x = x + mixer(x, (4, 4), state)  # B, 16, 16
        b = x.shape[0]
        x = x.view(b, 2, 2, 2, 2, 16).permute(0, 1, 3, 2, 4, 5).reshape(b, 4, 64)  # 2x2 blocks
        x = self.merge(x)  # B, 4, 32
        for mixer in self.stage1:
            x = x + mixer(x, (2, 2), state)
        return self.head(x.mean(1))  # B, 3


def test_a_two_stage_toy_trains() -> None:
    torch.manual_seed(0)
    model = ToyTwoStage().train()
    x, target = torch.randn(4, 16, 16), torch.randn(4, 3)

    def loss_fn() -> torch.Tensor:
        state = fresh()
        loss = (model(x, state) - target).square().mean()
        assert len(state["aux_losses"]) == 3  # one per LA layer
        return loss + torch.stack(state["aux_losses"]).sum()

    loss = loss_fn()
    loss.backward()
    names = {name for name, _ in model.named_parameters()}
    for expected in ("stage0.1.psi", "stage0.2.theta", "stage1.0.residual.dw_weight", "stage1.0.residual.dw_bias",
                     "stage1.0.residual.pw.weight", "stage1.0.residual.gamma", "stage1.1.psi", "stage0.0.qkv.weight"):
        assert expected in names
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = loss.item()
    for _ in range(15):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_the_model_builder_wires_lavit() -> None:
    from ablate.models import build

    torch.manual_seed(0)
    model = build(dict(img_size=32, embed_dim=16, depths=[2, 2], num_heads=2, num_classes=10, attention="lavit"))
    mixers = [m for m in model.modules() if isinstance(m, LessAttention)]
    assert [m.role for m in mixers] == ["va", "la", "va", "la"]
    assert mixers[2].residual is not None
    out = model(torch.randn(2, 3, 32, 32))
    assert model.aux_loss is not None and model.aux_loss > 0
    (out.square().mean() + model.aux_loss).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
    model.eval()
    model(torch.randn(1, 3, 32, 32))
    assert model.aux_loss is None


def test_attention_dropout_only_in_training() -> None:
    va, la = block(16, 2, (4, 4), index=0, attn_drop=0.5), block(16, 2, (4, 4), index=1, attn_drop=0.5)
    x = tokens((4, 4), 16)

    def run() -> torch.Tensor:
        state = fresh()
        va(x, (4, 4), state)
        return la(x, (4, 4), state)

    torch.testing.assert_close(run(), run(), atol=0, rtol=0)
    va.train(), la.train()
    assert not torch.equal(run(), run())


# --------------------------------------------------------------------------- bench recipe and errors


def test_bench_recipe_times_an_la_layer() -> None:
    r, dim, heads = 6, 32, 4
    a = create_mixer("lavit", dim, heads, input_resolution=(r, r), context=BlockContext(stage=0, index=0, depth=2),
                     va_layers=1).eval()
    b = create_mixer("lavit", dim, heads, input_resolution=(r, r), context=BlockContext(stage=0, index=1, depth=2),
                     va_layers=1).eval()
    x, state = tokens((r, r), dim), fresh()
    with torch.no_grad():
        a(x, (r, r), state)
        assert state[ATTN_KEY].shape == (2, heads, r * r, r * r) and state[HW_KEY] == (r, r)
        for _ in range(3):
            y = b(x, (r, r), state)
    assert y.shape == x.shape and torch.isfinite(y).all()


INFEASIBLE = [
    ({}, 3, "num_heads must divide dim"),
    ({"va_layers": 0}, 2, "va_layers must be >= 1"),
    ({"dp_loss_weight": -1.0}, 2, "dp_loss_weight must be"),
    ({"attn_drop": 1.0}, 2, r"attn_drop must be in \[0, 1\)"),
    ({"qk_scale": 0.0}, 2, "qk_scale must be positive"),
]


@pytest.mark.parametrize(("opts", "heads", "match"), INFEASIBLE)
def test_infeasible(opts: dict, heads: int, match: str) -> None:
    with pytest.raises(Infeasible, match=match):
        check_mixer("lavit", 16, heads, None, **opts)
    with pytest.raises(Infeasible, match=match):
        create_mixer("lavit", 16, heads, **opts)
    with pytest.raises(Infeasible, match="at least 1x1"):
        check_mixer("lavit", 16, 2, (0, 3))


def test_la_layers_need_a_fixed_map() -> None:
    check_mixer("lavit", 16, 2, None)  # an unknown map is fine for check()
    with pytest.raises(Infeasible, match="LA layers need a fixed token count per stage"):
        block(16, 2, None, index=1)
    with pytest.raises(Infeasible, match="prev_num_heads"):
        block(32, 4, (2, 2), stage=1, index=0)
    va, la = block(16, 2, (4, 4), index=0), block(16, 2, (4, 4), index=1)
    state = fresh()
    va(tokens((4, 5), 16), (4, 5), state)  # a VA layer runs at any size
    with pytest.raises(ValueError, match="LA layers need a fixed token count per stage"):
        la(tokens((4, 5), 16), (4, 5), state)
    with pytest.raises(ValueError, match="LA layers need a fixed token count per stage"):
        la(tokens((4, 4), 16), (4, 4), state)  # the stored attention is 20 x 20
    with pytest.raises(ValueError, match="run the stage's VA block first"):
        la(tokens((4, 4), 16), (4, 4), fresh())
