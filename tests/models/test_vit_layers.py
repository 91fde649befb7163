"""The rewritten layers equal the formulas they replace: ``DropPath`` (``1/keep`` folded into the
mask, the residual add into one ``addcmul``) equals ``x + branch * mask / keep`` with the same
random draws, and ``PatchMerging`` (reshape and permute) equals the official slices and ``cat``."""

from __future__ import annotations

import pytest
import torch

from ablate.models.vit_layers import DropPath, PatchMerging


def _old_drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """The formula before the rewrite (kept here as the reference)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("shape", [(16, 7, 5), (32, 3, 4, 6), (1, 9)])
def test_drop_path_and_its_fused_residual_equal_the_old_formula(p: float, shape: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    x0, b0, grad = torch.randn(shape), torch.randn(shape), torch.randn(shape)
    module = DropPath(p).train()
    outs = []
    for fn in (lambda x, b: x + _old_drop_path(b, p, True), module.residual, lambda x, b: x + module(b)):
        x, b = x0.clone().requires_grad_(), b0.clone().requires_grad_()
        torch.manual_seed(7)  # the same Bernoulli draws for every variant
        out = fn(x, b)
        out.backward(grad)
        outs.append((out, x.grad, b.grad))
    ref = outs[0]
    if 0.0 < p:  # the draw is not trivial: some samples kept, the test could fail
        kept = (ref[2].flatten(1) != 0).any(1)
        assert 0 < int(kept.sum()) < shape[0] or shape[0] == 1
    for got in outs[1:]:
        for a, r in zip(got, ref):
            torch.testing.assert_close(a, r, rtol=1e-6, atol=1e-7)
            assert torch.equal(a == 0, r == 0)  # the same samples dropped


def test_drop_path_is_the_identity_when_off() -> None:
    x, b = torch.randn(4, 3, 2), torch.randn(4, 3, 2)
    for module in (DropPath(0.0).train(), DropPath(0.3).eval()):
        assert module(b) is b
        assert torch.equal(module.residual(x, b), x + b)


@pytest.mark.parametrize("hw", [(8, 8), (7, 7), (6, 5), (1, 1), (2, 9)])
def test_patch_merging_equals_the_official_slices_and_cat_exactly(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    module = PatchMerging(6, 10)
    x0 = torch.randn(3, hw[0] * hw[1], 6)
    grad = None
    results = []
    for fn in (module.forward_reference, module.forward):
        x = x0.clone().requires_grad_()
        out, hw2 = fn(x, hw)
        grad = torch.randn_like(out) if grad is None else grad
        out.backward(grad)
        results.append((out, hw2, x.grad))
        module.zero_grad()
    (ref, ref_hw, ref_grad), (out, out_hw, out_grad) = results
    assert out_hw == ref_hw == ((hw[0] + 1) // 2, (hw[1] + 1) // 2)
    assert torch.equal(out, ref) and torch.equal(out_grad, ref_grad)  # pure data movement: bit for bit
