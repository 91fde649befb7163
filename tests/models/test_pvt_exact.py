"""PVT-T and FLatten-PVT-T/S compute what the official models compute.

The exact parameter counts below were taken from the official code, built at its
defaults and counted with ``sum(p.numel() for p in model.parameters())``:

* ``pvt_tiny``: https://github.com/whai362/PVT ``classification/pvt.py``, ``pvt_tiny()``
  -> 13,229,288 (the paper's Table 2 prints 13.2M).
* ``flatten_pvt_tiny`` / ``flatten_pvt_small``: https://github.com/LeapLabTHU/FLatten-Transformer
  ``models/flatten_pvt.py`` with ``cfgs/flatten_pvt_{t,s}.yaml`` over ``config.py``
  (``ATTN_TYPE: LLLL``, ``PVT_LA_SR_RATIOS: 1111``, focusing factor 3, kernel 5)
  -> 12,150,504 and 21,670,248 (the paper prints 12.2M and 21.7M). Both hold a
  ``LayerNorm(512)`` (1,024 parameters) that their ``forward_features`` never applies
  (``x = self.norm(x)`` is commented out; the head reads ``x.mean(dim=1)``); ablate's
  presets do not build that dead module, so they count 1,024 fewer.

With the official weights mapped key by key (outside this repository, not shipped), the
logits agreed within 5e-6 at 224x224 (PVT-T also at 160x192). What is tested here needs no
official code: the counts, and what the forward computes, against the math written out.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate.errors import ConfigError
from ablate.measure import count_params
from ablate.models import build, create_preset, resolve_arch

OFFICIAL_PARAMS = {"pvt_tiny": 13_229_288, "flatten_pvt_tiny": 12_150_504, "flatten_pvt_small": 21_670_248}
DEAD_FINAL_NORM = 2 * 512  # FLatten-PVT's unused LayerNorm(512): weight and bias

# A small PVT-like model for the forward checks (the presets' keys at a size that runs fast).
SMALL: dict[str, Any] = dict(img_size=64, dims=[8, 16, 24, 32], depths=[1, 1, 1, 2], num_heads=[1, 2, 3, 4],
                             mlp_ratio=[8, 8, 4, 4], num_classes=5, pos_embed="absolute", norm_eps=1e-6,
                             downsample="conv", attention="softmax", sr_ratio=[4, 2, 1, 1], rel_pos_bias=False)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_preset_parameter_counts_are_the_official_ones_to_the_unit(name: str) -> None:
    with torch.device("meta"):
        model = create_preset(name)
    dead = DEAD_FINAL_NORM if name.startswith("flatten_pvt") else 0
    assert count_params(model) == OFFICIAL_PARAMS[name] - dead


def test_pvt_tiny_has_the_official_class_token_and_last_table() -> None:
    with torch.device("meta"):
        model = create_preset("pvt_tiny")
    assert model.cls_token is not None and tuple(model.cls_token.shape) == (1, 1, 512)
    rows = [stage.pos_embed.shape[1] for stage in model.stages]
    assert rows == [56 * 56, 28 * 28, 14 * 14, 1 + 7 * 7]  # pos_embed4 holds the class token's row
    assert isinstance(model.norm, nn.LayerNorm) and model.norm.eps == 1e-6


def test_flatten_pvt_presets_have_no_final_norm_and_no_class_token() -> None:
    for name in ("flatten_pvt_tiny", "flatten_pvt_small"):
        arch = resolve_arch({"preset": name})
        assert arch["final_norm"] == "none" and arch["class_token"] is False
        with torch.device("meta"):
            model = create_preset(name)
        assert isinstance(model.norm, nn.Identity) and model.cls_token is None


def _capture(module: nn.Module, pre: bool = False) -> tuple[dict[str, torch.Tensor], Any]:
    seen: dict[str, torch.Tensor] = {}
    if pre:
        handle = module.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0].detach()))
    else:
        handle = module.register_forward_hook(lambda m, args, out: seen.__setitem__("x", out[0].detach()))
    return seen, handle


def test_class_token_joins_the_last_stage_after_downsampling_before_its_table() -> None:
    torch.manual_seed(0)
    model = build(dict(SMALL, class_token=True)).eval()
    with torch.no_grad():
        model.cls_token.normal_()
    last = model.stages[-1]
    before, h1 = _capture(model.stages[-2])
    entering, h2 = _capture(last.blocks[0], pre=True)
    leaving, h3 = _capture(last)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
        prev = before["x"]  # stage 3's tokens: a pure 4x4 map, no class token yet
        assert prev.shape == (2, 16, 24)
        down, hw = last.downsample(prev, (4, 4))  # B, 4, 32
        assert hw == (2, 2)
        expect_in = torch.cat([model.cls_token.expand(2, -1, -1), down], dim=1) + last.pos_embed
        torch.testing.assert_close(entering["x"], expect_in)
        # The head reads the class token of the normalised tokens (PVT's norm(x)[:, 0]).
        tokens = leaving["x"]  # B, 1+4, C
        assert tokens.shape == (2, 5, 32)
        cls = F.layer_norm(tokens[:, 0], (32,), model.norm.weight, model.norm.bias, eps=1e-6)
        torch.testing.assert_close(logits, F.linear(cls, model.head.weight, model.head.bias))
    for h in (h1, h2, h3):
        h.remove()
    maps = model.forward_stages(x)  # the class token is dropped from the last map only
    assert [tuple(m.shape[1:]) for m in maps] == [(8, 16, 16), (16, 8, 8), (24, 4, 4), (32, 2, 2)]


def test_final_norm_none_pools_the_raw_tokens() -> None:
    torch.manual_seed(0)
    model = build(dict(SMALL, final_norm="none")).eval()
    assert isinstance(model.norm, nn.Identity)
    leaving, handle = _capture(model.stages[-1])
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    handle.remove()
    pooled = leaving["x"].mean(dim=1)  # FLatten-PVT's x.mean(dim=1), no LayerNorm
    torch.testing.assert_close(logits, F.linear(pooled, model.head.weight, model.head.bias))


def test_final_norm_defaults_to_layer_and_refuses_unknown_values() -> None:
    assert resolve_arch(SMALL)["final_norm"] == "layer"
    with pytest.raises(ConfigError, match=r"final_norm must be one of 'layer', 'batch', 'none', got 'None'"):
        resolve_arch(dict(SMALL, final_norm="None"))
    with pytest.raises(ConfigError, match="final_norm must be one of"):
        resolve_arch(dict(SMALL, final_norm=None))


def test_single_stage_class_token_keeps_deits_order() -> None:
    """One stage: the class token joins before the table, as before (DeiT's state dict is unchanged)."""
    torch.manual_seed(0)
    deit = dict(img_size=32, patch_size=8, dims=[24], depths=[1], num_heads=[3], num_classes=5, class_token=True,
                pos_embed="absolute", patch_norm=False, attention="softmax", rel_pos_bias=False)
    model = build(deit).eval()
    entering, handle = _capture(model.stages[0].blocks[0], pre=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        model(x)
        patches, _ = model.patch_embed(x)
    handle.remove()
    expect = torch.cat([model.cls_token, patches], dim=1) + model.stages[0].pos_embed
    torch.testing.assert_close(entering["x"], expect)
    assert tuple(model.cls_token.shape) == (1, 1, 24) and model.stages[0].pos_embed.shape[1] == 17
