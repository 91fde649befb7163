"""Loading checkpoints: timm as an independent oracle, the wrappers, the reports, the errors.

timm builds ``swin_tiny_patch4_window7_224`` and ``deit_tiny_patch16_224`` with
``pretrained=False`` (nothing is downloaded; these tests pass without a network). Their
random-init state dicts, saved with torch.save and as safetensors, must load into ablate's
presets and give the same logits (eval mode, one input) within 1e-5.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

import ablate
from ablate.errors import ConfigError
from ablate.models import create_model
from tests.cli_helpers import run_cli

timm = pytest.importorskip("timm")
ORACLES = [("swin_tiny", "swin_tiny_patch4_window7_224", "timm_swin"), ("deit_tiny", "deit_tiny_patch16_224", "vit")]


def _timm_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False)
    with torch.no_grad():  # timm zero-inits some tensors (pos_embed's neighbours, biases): make all count
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


@pytest.fixture(scope="module")
def oracles(tmp_path_factory):
    """``{preset: (timm model, state-dict path, safetensors path)}``, built once."""
    from safetensors.torch import save_file

    out = {}
    folder = tmp_path_factory.mktemp("timm")
    for preset, name, _ in ORACLES:
        model = _timm_model(name)
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        torch.save(sd, folder / f"{preset}.pth")
        save_file(sd, str(folder / f"{preset}.bin"))  # safetensors, recognised by its header, not its name
        out[preset] = (model, folder / f"{preset}.pth", folder / f"{preset}.bin")
    return out


@pytest.mark.parametrize("preset,name,layout", ORACLES)
@pytest.mark.parametrize("kind", ["torch", "safetensors"])
def test_timm_logits_equal_after_loading(oracles, preset, name, layout, kind):
    timm_model, pth, st = oracles[preset]
    model = ablate.create_model(preset, weights=pth if kind == "torch" else st).eval()
    assert model.load_report.layout == layout and model.load_report.clean
    assert model.load_report.loaded == model.load_report.total
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = timm_model(x), model(x)
    assert want.abs().max() > 0.1  # logits that would show a wrong map
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_fresh_model_gives_other_logits_so_the_oracle_can_fail(oracles):
    timm_model, _, _ = oracles["swin_tiny"]
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert not torch.allclose(create_model("swin_tiny").eval()(x), timm_model(x), atol=1e-3)


@pytest.mark.parametrize("wrapper", ["model", "state_dict", "model_ema"])
def test_release_wrappers_and_ddp_prefix(oracles, tmp_path, wrapper):
    sd = torch.load(oracles["deit_tiny"][1], weights_only=True)
    path = tmp_path / "wrapped.pth"
    torch.save({wrapper: {f"module.{k}": v for k, v in sd.items()}, "epoch": 3, "args": {"lr": 1e-3}}, path)
    report = create_model("deit_tiny", weights=path).load_report
    assert report.clean and report.wrapper == wrapper and report.loaded == report.total


def test_ablates_own_state_dict_loads_by_identity(tmp_path):
    model = create_model("swin_tiny", img_size=64, window_size=4, num_classes=7)
    torch.save(model.state_dict(), tmp_path / "own.pt")
    again = create_model("swin_tiny", weights=tmp_path / "own.pt", img_size=64, window_size=4, num_classes=7)
    assert again.load_report.layout == "ablate" and again.load_report.clean
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def test_strict_report_names_file_counts_and_keys(oracles, tmp_path):
    sd = torch.load(oracles["deit_tiny"][1], weights_only=True)
    del sd["blocks.3.mlp.fc1.bias"]
    sd["blocks.3.extra.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(ConfigError) as err:
        create_model("deit_tiny", weights=path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ")
    assert "1 missing (stages.0.blocks.3.mlp.fc1.bias)" in msg and "1 unexpected (blocks.3.extra.weight)" in msg
    report = create_model("deit_tiny", weights=path, strict=False).load_report
    assert report.missing == ("stages.0.blocks.3.mlp.fc1.bias",) and report.unexpected == ("blocks.3.extra.weight",)
    assert report.loaded == report.total - 1 and not report.clean


def test_shape_mismatch_is_reported_not_loaded(oracles, tmp_path):
    sd = torch.load(oracles["deit_tiny"][1], weights_only=True)
    sd["blocks.0.attn.proj.weight"] = torch.zeros(192, 100)
    path = tmp_path / "shape.pth"
    torch.save(sd, path)
    with pytest.raises(ConfigError, match=r"1 of another shape \(stages.0.blocks.0.attn.proj.weight \[192, 100\] vs \[192, 192\]\)"):
        create_model("deit_tiny", weights=path)
    model = create_model("deit_tiny", weights=path, strict=False)
    assert model.state_dict()["stages.0.blocks.0.attn.proj.weight"].abs().sum() > 0  # left as built


def test_head_reinitialised_for_another_class_count(oracles):
    timm_model, pth, _ = oracles["swin_tiny"]
    model = create_model("swin_tiny", weights=pth, num_classes=10)
    report = model.load_report
    assert report.clean and report.head_reinit == (1000, 10) and report.loaded == report.total - 2
    assert model.head.weight.shape == (10, 768)
    torch.testing.assert_close(model.norm.weight, timm_model.norm.weight)  # the body did load


@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n" * 10, b"PK\x03\x04" + b"\0" * 64,
                                     b"\x10\0\0\0\0\0\0\0{\"a\": 1}" + b"\0" * 32])
def test_unreadable_files_are_one_line(tmp_path, content):
    path = tmp_path / "weird.pth"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        create_model("deit_tiny", weights=path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/ablate-weights-pwned"),))


def test_pickled_code_is_never_run(tmp_path):
    target = Path("/tmp/ablate-weights-pwned")
    target.unlink(missing_ok=True)
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"model": _Evil()}))
    with pytest.raises(ConfigError, match="weights-only reader refused it.*pickled objects other than tensors") as err:
        create_model("deit_tiny", weights=path)
    assert not target.exists() and "\n" not in str(err.value)


def test_no_state_dict_inside_and_missing_file(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "args": {"lr": 0.1}}, path)
    with pytest.raises(ConfigError, match="no state dict found"):
        create_model("deit_tiny", weights=path)
    with pytest.raises(ConfigError, match="no such checkpoint file"):
        create_model("deit_tiny", weights=tmp_path / "absent.pth")
    with pytest.raises(ConfigError, match="not a file"):
        create_model("deit_tiny", weights=tmp_path)


def test_cli_check_clean_and_leftovers(oracles, capsys, tmp_path):
    code, out, err = run_cli(capsys, "weights", "check", "swin_tiny", str(oracles["swin_tiny"][1]))
    assert code == 0, err
    assert "layout: timm_swin" in out and "mapped: 173 of the model's 173 tensors" in out and "verdict: clean" in out
    code, out, err = run_cli(capsys, "weights", "check", "pvt_tiny", str(oracles["swin_tiny"][1]))
    assert code == 2 and "missing (in the model, not in the file)" in out and "unexpected" in out
    assert len(out.splitlines()) < 60  # grouped, not one line per key
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    code, out, err = run_cli(capsys, "weights", "check", "swin_tiny", str(bad))
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, out, err = run_cli(capsys, "weights", "check", "yolov8n", str(bad))
    assert code == 2 and "detection preset" in err


def test_nested_wrappers_and_tensors_beside_them(tmp_path):
    sd = create_model("deit_tiny").state_dict()
    path = tmp_path / "nested.pth"
    torch.save({"state_dict": {"model": sd}, "scaler": torch.ones(1)}, path)
    assert create_model("deit_tiny", weights=path).load_report.wrapper == "state_dict.model"


def test_tensors_without_data_and_non_paths_are_refused(tmp_path):
    sd = create_model("deit_tiny").state_dict()
    path = tmp_path / "meta.pth"
    torch.save({k: torch.empty(v.shape, device="meta") for k, v in sd.items()}, path)
    with pytest.raises(ConfigError, match="holds no plain data"):
        create_model("deit_tiny", weights=path)
    with pytest.raises(ConfigError, match="must be a path"):
        create_model("deit_tiny", weights=5)  # type: ignore[arg-type]


def test_a_text_file_is_named_for_what_it_is(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello\n")
    with pytest.raises(ConfigError, match=r"notes.pth: not a checkpoint \(neither a torch file"):
        create_model("deit_tiny", weights=path)


def test_hostile_names_stay_on_one_line(tmp_path, capsys):
    folder = tmp_path / "a\nb"
    folder.mkdir()
    path = folder / "x.pth"
    sd = create_model("deit_tiny").state_dict()
    sd["evil\nkey"] = torch.zeros(1)
    torch.save(sd, path)
    with pytest.raises(ConfigError) as err:
        create_model("deit_tiny", weights=path)
    assert "\n" not in str(err.value) and "evil\\nkey" in str(err.value)
    with pytest.raises(ConfigError) as err:
        create_model("deit_tiny", weights=folder / "absent\r.pth")
    assert "\n" not in str(err.value) and "\r" not in str(err.value)
    code, out, _ = run_cli(capsys, "weights", "check", "deit_tiny", str(path))
    assert code == 2 and "'evil\\nkey'" in out


def test_detection_presets_and_the_lazy_root_name(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(create_model("deit_tiny").state_dict(), path)
    with pytest.raises(ConfigError, match="YOLO preset"):
        create_model("yolov8n", weights=path)
    assert "create_model" in dir(ablate) and callable(ablate.create_model)
    with pytest.raises(ConfigError, match="unknown preset"):
        ablate.create_model("swin_tiniest", weights=path)
