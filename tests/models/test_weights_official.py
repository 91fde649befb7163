"""The per-family key maps against the official checkpoints' key names and shapes.

``data/official_keys.json`` lists each official model's ``state_dict()`` (names and shapes,
facts read from the official repositories' models; see its ``_about``). A checkpoint of those
names and shapes, random values, must load into ablate's preset strictly: every model tensor
set, from the tensor of the mapped name, no key left over.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ablate.errors import ConfigError
from ablate.models import create_model
from ablate.models.weights import map_state_dict

OFFICIAL = json.loads((Path(__file__).parent / "data" / "official_keys.json").read_text())
ALL = sorted(k for k in OFFICIAL if not k.startswith("_"))
LAYOUT = {"swin_tiny": "swin", "flatten_swin_tiny": "swin", "focal_tiny": "focal", "pvt_tiny": "pvt",
          "flatten_pvt_tiny": "pvt", "biformer_tiny": "biformer", "biformer_stl": "biformer_stl",
          "focal_small": "focal", "focal_base": "focal", "flatten_swin_small": "swin", "flatten_swin_base": "swin",
          "flatten_pvt_small": "pvt", "biformer_small": "biformer", "biformer_base": "biformer"}
#: Loaded with values (every tensor checked); the larger variants are mapped by shape only.
PRESETS = [p for p in ALL if p.endswith(("_tiny", "_stl"))]
LARGER = [p for p in ALL if p not in PRESETS]


def _checkpoint(preset: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(shape, generator=g) if not k.endswith(("num_batches_tracked", "_index", "_rolled"))
                else torch.zeros(shape, dtype=torch.long))
            for k, shape in OFFICIAL[preset]["keys"].items()}


def test_the_data_covers_every_family():
    assert set(ALL) == set(LAYOUT) and len(PRESETS) == 7


@pytest.mark.parametrize("preset", LARGER)
def test_larger_variants_map_by_name_and_shape(preset):
    """Every depth and width the releases use: names and shapes only (zero-stride tensors, no memory)."""
    sd = {k: torch.zeros(()).expand(shape) for k, shape in OFFICIAL[preset]["keys"].items()}
    _, report = map_state_dict(sd, create_model(preset))
    assert report.clean and report.layout == LAYOUT[preset] and report.loaded == report.total, report.problem()


@pytest.mark.parametrize("preset", PRESETS)
def test_official_names_and_shapes_map_with_no_leftovers(preset, tmp_path):
    sd = _checkpoint(preset)
    path = tmp_path / "official.pth"
    torch.save({"model": sd, "epoch": 299}, path)  # the releases' wrapper
    model = create_model(preset, weights=path)
    report = model.load_report
    assert report.clean and report.layout == LAYOUT[preset] and report.wrapper == "model"
    assert report.loaded == report.total == len(model.state_dict())
    # every model tensor holds a checkpoint tensor's values (the map is a bijection on values)
    mapped, _ = map_state_dict(sd, model)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, mapped[name].to(tensor.dtype), rtol=0, atol=0, msg=name)
    # and the values really came from the file: the checkpoint's sums are all present
    sources = {round(float(t.double().sum()), 3) for t in sd.values() if t.is_floating_point()}
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and ".q." not in name and ".kv." not in name and ".qkv." not in name:
            assert round(float(tensor.double().sum()), 3) in sources, name


@pytest.mark.parametrize("preset", ["swin_tiny", "pvt_tiny", "biformer_tiny", "biformer_stl"])
def test_a_missing_official_tensor_is_refused_in_strict_mode(preset, tmp_path):
    sd = _checkpoint(preset)
    dropped = next(k for k in sd if k.endswith("norm1.weight"))
    del sd[dropped]
    path = tmp_path / "cut.pth"
    torch.save(sd, path)
    with pytest.raises(ConfigError) as err:
        create_model(preset, weights=path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}:") and "1 missing" in msg and "norm1.weight" in msg


def test_another_familys_checkpoint_is_refused_with_counts(tmp_path):
    path = tmp_path / "swin.pth"
    torch.save(_checkpoint("swin_tiny"), path)
    with pytest.raises(ConfigError) as err:
        create_model("pvt_tiny", weights=path)
    assert "missing" in str(err.value) and "unexpected" in str(err.value) and "\n" not in str(err.value)
