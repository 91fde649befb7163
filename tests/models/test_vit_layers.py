"""Stochastic depth in one pass (``DropPath`` folds ``1/keep`` into the mask, ``residual`` the add):
the same function as the former ``x + x_branch * mask / keep``, with the same random draws."""

from __future__ import annotations

import pytest
import torch

from ablate.models.vit_layers import DropPath


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
