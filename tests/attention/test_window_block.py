"""The Swin window attention as one autograd node (``ablate.attention._window_block``).

Values and every gradient against ``forward_reference`` (plain autograd, explicit softmax),
over the cases the mixer meets: shift or none, padded maps, maps other than the build-time
one, one or several heads, with and without the relative-position table and the qkv
bias; and the cases where the composed path must run instead.
"""

from __future__ import annotations

import pytest
import torch

from ablate.attention import create_mixer

TOL64 = {"rtol": 1e-10, "atol": 1e-10}


def _nodes(t: torch.Tensor) -> set[str]:
    """Names of every autograd node behind ``t``."""
    seen, stack, names = set(), [t.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(fn for fn, _ in node.next_functions)
    return names


def _grads(mixer: torch.nn.Module, fn, x: torch.Tensor, hw: tuple[int, int],  # noqa: ANN001
           grad: torch.Tensor) -> list[torch.Tensor | None]:
    out = fn(x, hw)
    out.backward(grad)
    got = [out.detach(), None if x.grad is None else x.grad.clone()]
    got += [None if p.grad is None else p.grad.clone() for p in mixer.parameters()]
    x.grad = None
    mixer.zero_grad(set_to_none=True)
    return got


@pytest.mark.parametrize(("side", "built", "shift", "heads", "rel_pos_bias", "qkv_bias", "batch"), [
    (14, 14, 0, 2, True, True, 2),
    (14, 14, 3, 2, True, True, 2),
    (14, 14, 3, 1, True, True, 1),
    (21, 21, 3, 3, True, False, 2),
    (14, 14, 3, 2, False, True, 2),
    (14, 28, 3, 2, True, True, 2),  # a map other than the build-time one: a fresh order and mask
    (16, 16, 3, 2, True, True, 2),  # padded to 21 x 21, cropped after
    (16, 16, 0, 2, True, True, 1),
])
def test_one_node_matches_the_reference(side: int, built: int, shift: int, heads: int, rel_pos_bias: bool,
                                        qkv_bias: bool, batch: int) -> None:
    torch.manual_seed(side + shift + heads)
    dim = 8 * heads
    mixer = create_mixer("softmax", dim, heads, input_resolution=(built, built), window_size=7, shift_size=shift,
                         rel_pos_bias=rel_pos_bias, qkv_bias=qkv_bias).double()
    x = torch.randn(batch, side * side, dim, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(batch, side * side, dim, dtype=torch.float64)
    assert "WindowBlockBackward" in _nodes(mixer(x, (side, side)))
    got = _grads(mixer, mixer, x, (side, side), grad)
    want = _grads(mixer, mixer.forward_reference, x, (side, side), grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **TOL64)


def test_parameters_only_and_a_frozen_table() -> None:
    """An input that needs no gradient, and a table that is frozen: the other gradients still match."""
    torch.manual_seed(3)
    mixer = create_mixer("softmax", 16, 2, input_resolution=(14, 14), window_size=7, shift_size=3).double()
    mixer.relative_position_bias_table.requires_grad_(False)
    x = torch.randn(2, 196, 16, dtype=torch.float64)
    grad = torch.randn(2, 196, 16, dtype=torch.float64)
    out = mixer(x, (14, 14))
    assert "WindowBlockBackward" in _nodes(out)
    got = _grads(mixer, mixer, x, (14, 14), grad)
    want = _grads(mixer, mixer.forward_reference, x, (14, 14), grad)
    table_at = 2 + [name for name, _ in mixer.named_parameters()].index("relative_position_bias_table")
    assert got[1] is None and got[table_at] is None  # no input gradient, none for the frozen table
    for a, b in zip(got, want, strict=True):
        if b is not None:
            torch.testing.assert_close(a, b, **TOL64)


def test_a_second_backward_says_why() -> None:
    mixer = create_mixer("softmax", 16, 2, input_resolution=(14, 14), window_size=7)
    out = mixer(torch.randn(1, 196, 16, requires_grad=True), (14, 14)).sum()
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backpropagated once"):
        out.backward()


def _composed(mixer: torch.nn.Module, x: torch.Tensor) -> bool:
    return "WindowBlockBackward" not in _nodes(mixer(x, (14, 14)))


def test_the_composed_path_runs_where_one_node_does_not_fit() -> None:
    x = torch.randn(1, 196, 16, requires_grad=True)
    mixer = create_mixer("softmax", 16, 2, input_resolution=(14, 14), window_size=7)
    dropped = create_mixer("softmax", 16, 2, input_resolution=(14, 14), window_size=7, proj_drop=0.1).train()
    assert _composed(dropped, x)  # output dropout in training
    assert not _composed(dropped.eval(), x)  # ... which evaluation does not apply
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _composed(mixer, x)
    with torch.no_grad():  # evaluation: no graph, SDPA's fused kernel (the choice of use_packed)
        torch.testing.assert_close(mixer(x, (14, 14)), mixer.forward_reference(x, (14, 14)))
