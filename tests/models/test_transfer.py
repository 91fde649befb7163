"""transfer_weights for classification: name+shape matches set, everything else fresh, counts exact."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from ablate.errors import ConfigError
from ablate.models import build_model, create_model, resolve_architecture
from ablate.models.transfer import transfer_weights

OFFICIAL = json.loads((Path(__file__).parent / "data" / "official_keys.json").read_text())


def _official_swin_tiny(seed: int = 0) -> dict[str, torch.Tensor]:
    """microsoft/Swin-Transformer's Swin-T names and shapes, random values."""
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.zeros(shape, dtype=torch.long) if k.endswith("_index") else torch.randn(shape, generator=g))
            for k, shape in OFFICIAL["swin_tiny"]["keys"].items()}


def _swin_to_ablate(key: str) -> str | None:
    """The official Swin layout by hand (ablate/models/weights_layouts.py is what is tested)."""
    if key.endswith(("relative_position_index", "attn_mask")):
        return None
    m = re.match(r"^layers\.(\d+)\.downsample\.(.*)$", key)
    if m:
        return f"stages.{int(m[1]) + 1}.downsample.{m[2]}"
    return re.sub(r"^layers\.(\d+)\.blocks\.", r"stages.\1.blocks.", key)


def test_official_swin_keys_start_a_flatten_swin_candidate_where_they_fit(tmp_path):
    ckpt = _official_swin_tiny()
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save({"model": ckpt}, path)
    torch.manual_seed(0)
    model = create_model("flatten_swin_tiny", num_classes=10)
    torch.manual_seed(0)
    fresh = create_model("flatten_swin_tiny", num_classes=10).state_dict()
    arch = resolve_architecture({"preset": "flatten_swin_tiny", "num_classes": 10}, "classify")
    done = transfer_weights(model, arch, path)

    # expected by hand: a renamed tensor of the model's name and shape, or a qkv split into q and kv
    renamed = {n: t for k, t in ckpt.items() if (n := _swin_to_ablate(k)) is not None}
    target = model.state_dict()
    expected: dict[str, torch.Tensor] = {}
    for name, want in target.items():
        if name in renamed and renamed[name].shape == want.shape:
            expected[name] = renamed[name]
        m = re.match(r"^(.*)\.(q|kv)\.(weight|bias)$", name)
        packed = renamed.get(f"{m[1]}.qkv.{m[3]}") if m else None
        if packed is not None:
            rows = target[f"{m[1]}.q.{m[3]}"].shape[0]
            expected[name] = packed[:rows] if m[2] == "q" else packed[rows:]
    assert done.transferred == len(expected) and done.total == len(target) == len(fresh), (done, len(expected))
    assert done.how == "layout swin" and 0 < done.transferred < done.total
    for name, value in target.items():
        torch.testing.assert_close(value, expected[name] if name in expected else fresh[name], rtol=0, atol=0,
                                   msg=name)
    # the shared parts landed, FLatten's own tensors and the 10-class head stayed fresh
    assert {"patch_embed.proj.weight", "stages.0.blocks.0.mlp.fc1.weight", "stages.0.blocks.0.attn.q.weight",
            "stages.0.blocks.0.attn.kv.weight", "stages.1.downsample.reduction.weight",
            "stages.3.blocks.0.attn.relative_position_bias_table"} <= set(expected)
    assert any(".attn.dwc." in n for n in target) and not any(".attn.dwc." in n for n in expected)
    assert "head.weight" not in expected and "head.bias" not in expected


def test_a_checkpoint_that_sets_nothing_is_refused_in_one_line(tmp_path):
    arch = resolve_architecture({"attention": "softmax", "depths": [1, 1], "embed_dim": 16, "num_heads": 2,
                                 "img_size": 32, "num_classes": 10}, "classify")
    model = build_model(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"encoder.layer.0.weight": torch.randn(5, 5)}}, path)
    with pytest.raises(ConfigError) as err:
        transfer_weights(model, arch, path)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{path}: no tensor of the checkpoint matches the model")
    assert f"0 of its {len(before)} transferred" in line and "wrong checkpoint" in line
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
