"""ablate.models.exported: one file holds a trained candidate's tensors and its typed
architecture; ``ablate.create_model(FILE)`` rebuilds it, strictly, overrides included."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

import ablate
from ablate.errors import ConfigError
from ablate.models import build_model, create_model, resolve_architecture
from ablate.models.exported import (ARCH_KEY, exported_file, load_exported, read_exported_meta, state_tensors,
                                    write_exported)

TINY = {"attention": "focal", "depths": [1, 1], "embed_dim": 16, "num_heads": 2, "img_size": 16, "num_classes": 10,
        "window_size": 2, "focal_level": 2, "focal_window": 3, "expand_size": 1}


def _trained(seed: int = 0) -> tuple[torch.nn.Module, object]:
    """A tiny model whose weights differ from any fresh build (perturbed after init)."""
    arch = resolve_architecture(TINY)
    torch.manual_seed(seed)
    model = build_model(arch)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval(), arch


def test_round_trip_gives_the_same_logits_and_a_clean_report(tmp_path):
    model, arch = _trained()
    path = write_exported(tmp_path / "m.safetensors", state_tensors(model), arch, {"study": "s", "trial": 3})
    meta = read_exported_meta(path)
    assert meta["study"] == "s" and meta["trial"] == "3" and json.loads(meta[ARCH_KEY]) == arch.to_json()
    x = torch.randn(3, 3, 16, 16)
    for name in (str(path), path, "m.safetensors"):  # a str, a Path, a relative name
        if name == "m.safetensors":
            import os

            cwd = os.getcwd()
            os.chdir(tmp_path)
        try:
            loaded = ablate.create_model(name).eval()
        finally:
            if name == "m.safetensors":
                os.chdir(cwd)
        assert loaded.load_report.clean and loaded.load_report.loaded == loaded.load_report.total
        assert torch.equal(loaded(x), model(x))
    fresh = build_model(arch).eval()
    assert not torch.equal(fresh(x), model(x))  # the file's weights, not an init


def test_overrides_apply_and_a_new_class_count_reinitialises_the_head(tmp_path):
    model, arch = _trained()
    path = write_exported(tmp_path / "m.safetensors", state_tensors(model), arch)
    five = create_model(path, num_classes=5).eval()
    assert five.load_report.head_reinit == (10, 5) and five(torch.randn(1, 3, 16, 16)).shape == (1, 5)
    sd, ref = five.state_dict(), model.state_dict()
    assert all(torch.equal(sd[k], ref[k]) for k in sd if not k.startswith("head."))
    with pytest.raises(ConfigError, match="m.safetensors: checkpoint .* does not fit"):
        create_model(path, mlp_ratio=2.0)  # strict: the file's tensors do not fit narrower MLPs
    assert create_model(path, mlp_ratio=2.0, strict=False).load_report.mismatched
    with pytest.raises(ConfigError, match="embed_dim=32 disagrees with dims"):
        create_model(path, embed_dim=32)  # the file's keys are resolved: a derived key is not re-derived


def test_refusals_are_one_line_naming_the_file(tmp_path):
    from safetensors.torch import save_file

    model, arch = _trained()
    plain = tmp_path / "plain.safetensors"
    save_file(state_tensors(model), str(plain))  # a safetensors file without ablate's metadata
    cases = [(plain, "not a model file written by ablate"),
             (tmp_path / "missing.safetensors", "missing.safetensors: no such file"),
             (tmp_path, "not a file")]
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    cases.append((text, "not a model file written by ablate"))
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")  # a header size larger than the file
    cases.append((huge, "not a model file written by ablate"))
    for path, needle in cases:
        with pytest.raises(ConfigError) as err:
            create_model(Path(path))
        assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)
    good = write_exported(tmp_path / "m.safetensors", state_tensors(model), arch)
    with pytest.raises(ConfigError, match="holds its weights"):
        create_model(good, weights=good)
    bad_arch = tmp_path / "bad.safetensors"
    write_exported(bad_arch, state_tensors(model), arch, {})
    raw = bad_arch.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header["__metadata__"][ARCH_KEY] = json.dumps({"task": "classify", "attention": "nope"})
    blob = json.dumps(header).encode()
    bad_arch.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n:])
    with pytest.raises(ConfigError, match="cannot be built by this ablate"):
        load_exported(bad_arch)


def test_preset_names_stay_presets():
    assert exported_file("focal_tiny") is None and exported_file("x.safetensors") == Path("x.safetensors")
    with pytest.raises(ConfigError, match="did you mean"):
        create_model("focal_tinyy")
