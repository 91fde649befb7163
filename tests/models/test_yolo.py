"""ablate.models.yolo: every family inside ultralytics YOLO, the arch dict, YAML export, FLOPs.

Models are built at img_size 128 (ultralytics itself probes each one at 256 while
building); only the FLOPs checks run at 640, where ultralytics reports its figures.
"""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import yaml

from ablate.attention import list_attention
from ablate.errors import ConfigError, Infeasible
from ablate.measure import count_flops, count_params, ultralytics_gflops
from ablate.models import yolo

from cli_helpers import run_cli

# Options that let a family run on the 4x4 P5 map of a 128-px image (BiFormer's default
# n_win=7 needs maps of at least 7x7: see test_bad_input).
SMALL = {"biformer": {"n_win": 2}}
IMG = 128
_BUILT: dict[tuple, torch.nn.Module] = {}


def _arch(family: str, placement: str, base: str = "yolov8n", **extra) -> dict:
    return {"base": base, "attention": family, "placement": placement, "img_size": IMG, **SMALL.get(family, {}),
            **extra}


def _built(family: str, placement: str, base: str = "yolov8n") -> torch.nn.Module:
    key = (family, placement, base)
    if key not in _BUILT:
        torch.manual_seed(0)
        _BUILT[key] = yolo.build_yolo(_arch(family, placement, base))
    return _BUILT[key]


def _tensors(out) -> list[torch.Tensor]:
    if torch.is_tensor(out):
        return [out]
    items = out.values() if isinstance(out, dict) else out
    return [t for item in items for t in _tensors(item)]


def _stock_params(base: str) -> int:
    key = ("none", "none", base)
    if key not in _BUILT:
        _BUILT[key] = yolo.build_yolo({"base": base, "img_size": IMG})
    return count_params(_BUILT[key])


# --------------------------------------------------------------------------- registration


def test_every_family_is_registered_with_ultralytics():
    from ultralytics.nn import tasks
    from ultralytics.nn.modules.block import C2PSA, C2f, C3k2

    for family in list_attention():
        for prefix, like in (("AttnBlock", C2PSA), ("C2f", C2f), ("C3k2", C3k2)):
            cls = getattr(tasks, f"{prefix}_{family}")
            assert cls is getattr(yolo, f"{prefix}_{family}")
            assert cls.__module__ == "ablate.models.yolo" and cls.family == family
            # equal to the stock module only inside parse_model
            assert cls != like and like != cls and {like: 1}.get(cls) is None


@pytest.mark.parametrize("placement", ["sppf", "neck"])
@pytest.mark.parametrize("family", list_attention())
def test_every_family_builds_trains_and_runs_any_size(family, placement):
    model = _built(family, placement)
    r = model.arch
    blocks = [m for m in model.model if type(m).__name__.endswith(f"_{family}")]
    assert len(blocks) == r["places"] == (1 if placement == "sppf" else 3)
    assert count_params(model) > _stock_params("yolov8n")
    detect = model.model[-1]
    expected = ["C2f"] * 3 if placement == "sppf" else [f"C2f_{family}"] * 3
    assert [model.model[i].type.split(".")[-1] for i in detect.f] == expected
    assert [detect.cv2[i][0].conv.in_channels for i in range(3)] == [64, 128, 256]  # yolov8n's P3/P4/P5

    model.train()
    model.zero_grad()
    x = torch.randn(2, 3, IMG, IMG)
    outs = _tensors(model(x))
    assert all(torch.isfinite(t).all() for t in outs)
    sum(t.float().mean() for t in outs).backward()
    attn = [(n, p) for n, p in model.named_parameters() if ".attn." in n or ".norm." in n]
    assert attn and all(p.grad is not None and torch.isfinite(p.grad).all() for _, p in attn), \
        [n for n, p in attn if p.grad is None]

    model.eval()
    with torch.no_grad():
        boxes = model(torch.randn(1, 3, 96, 160))[0]  # a rect validation batch: non-square maps
    assert boxes.shape[:2] == (1, 4 + r["nc"]) and torch.isfinite(boxes).all()


@pytest.mark.parametrize("family,placement", [("flatten", "neck"), ("softmax", "backbone")])
def test_yolo11_c3k2_variants(family, placement):
    model = _built(family, placement, "yolo11n")
    names = [type(m).__name__ for m in model.model]
    assert names.count(f"C3k2_{family}") == model.arch["places"] == (3 if placement == "neck" else 4)
    assert "C3k2" in names and model.model[-1].legacy is False  # YOLO11's (non-legacy) Detect head
    assert count_params(model) > _stock_params("yolo11n")
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, IMG, IMG))[0]).all()


@pytest.mark.parametrize("family", list_attention())
def test_ultralytics_inference_path(family):
    """What ultralytics' validator and predictor do: fuse BN, channels_last on x86 CPUs, inference mode."""
    model = copy.deepcopy(_built(family, "neck")).eval().fuse(verbose=False)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, IMG, IMG).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.isfinite(model(x)[0]).all()


def test_models_deepcopy_and_pickle():
    model = _built("flatten", "neck").eval()
    x = torch.randn(1, 3, IMG, IMG)
    with torch.no_grad():
        ref = model(x)[0]
        for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
            assert type(other.model[21]) is yolo.C2f_flatten
            torch.testing.assert_close(other(x)[0], ref)


# --------------------------------------------------------------------------- model dict


@pytest.mark.parametrize("base", ["yolov8n", "yolo11n", "yolov5n"])
def test_sppf_insertion_fixes_every_from_index(base):
    stock = yolo.yolo_model_dict({"base": base})
    d = yolo.yolo_model_dict({"base": base, "attention": "focal", "placement": "sppf"})
    old, new = stock["backbone"] + stock["head"], d["backbone"] + d["head"]
    assert len(new) == len(old) + 1 and len(d["backbone"]) == len(stock["backbone"]) + 1
    s = next(i for i, row in enumerate(old) if row[2] == "SPPF")
    assert new[s + 1][:3] == [-1, 1, "AttnBlock_focal"]

    def absolute(rows):
        return [[(i + x if x < 0 else x) for x in ([f] if isinstance(f, int) else f)] for i, (f, *_) in enumerate(rows)]

    old_from, new_from = absolute(old), absolute(new)
    assert new_from[s + 1] == [s]
    for i, froms in enumerate(old_from):
        moved = froms if i <= s else [x + 1 if x >= s else x for x in froms]  # readers of SPPF read the block
        assert new_from[i if i <= s else i + 1] == moved
    from ablate.models.yolo.arch import _strides

    strides = _strides(new)
    assert [strides[i] for i in new[-1][0]] == [8, 16, 32]  # Detect still takes P3/P4/P5
    assert [new[i][2] for i in new[-1][0]] == [old[i][2] for i in old[-1][0]]


def test_neck_and_backbone_sites_deepest_first():
    assert [(s.index, s.stride) for s in yolo.yolo_sites("yolov8n", "neck")] == [(21, 32), (18, 16), (15, 8)]
    assert [s.stride for s in yolo.yolo_sites("yolo11n", "backbone")] == [32, 16, 8, 4]
    d = yolo.yolo_model_dict({"base": "yolov8n", "attention": "lavit", "placement": "neck", "places": 2})
    rows = d["backbone"] + d["head"]
    assert [rows[i][2] for i in (15, 18, 21)] == ["C2f", "C2f_lavit", "C2f_lavit"]
    assert rows[21][3][1]["input_resolution"] == [20, 20] and rows[18][3][1]["head_dim"] == 32


# --------------------------------------------------------------------------- arch dict


def test_resolve_is_canonical_and_json():
    r = yolo.resolve_yolo_arch({"attention": "flatten", "placement": "neck", "focusing_factor": 2})
    assert r["places"] == 3 and r["focusing_factor"] == 2.0 and r["kernel_size"] == 5 and r["nc"] == 80
    assert yolo.resolve_yolo_arch(r) == r == json.loads(json.dumps(r))
    stock = [yolo.resolve_yolo_arch(a) for a in ({"base": "yolov8n"}, {"attention": "none", "placement": "neck"},
                                                 {"preset": "yolov8n"})]
    assert stock[0] == stock[1] and stock[2] == {**stock[0], "preset": "yolov8n"}
    assert stock[0]["placement"] == "none" and stock[0]["places"] == 0
    fla = yolo.resolve_yolo_arch({"preset": "yolov8n_fla", "img_size": 128})
    assert fla["attention"] == "flatten" and fla["img_size"] == 128 and fla["pos_encoding"] is False


@pytest.mark.parametrize("arch,error,needles", [
    ({"base": "yolov8q"}, ConfigError, ["unknown base 'yolov8q'", "did you mean 'yolov8"]),
    ({"attention": "flaten"}, ConfigError, ["did you mean 'flatten'"]),
    ({"attention": "flatten", "placement": "nek"}, ConfigError, ["did you mean 'neck'"]),
    ({"attention": "flatten", "n_win": 2}, ConfigError, ["'n_win' is an option of attention 'biformer'"]),
    ({"img_size": 100}, ConfigError, ["multiple of 32"]),
    ({"base": "yolov5n", "attention": "flatten", "placement": "neck"}, Infeasible,
     ["placement 'neck' does not exist in base yolov5n"]),
    ({"attention": "flatten", "placement": "sppf", "places": 2}, Infeasible,
     ["places=2", "1 site(s)", "SPPF at P5/32"]),
    ({"attention": "biformer", "placement": "neck", "img_size": 128}, Infeasible,
     ["biformer", "layer 21 of yolov8n", "4x4 map at 128 px", "n_win"]),
    ({"attention": "focal", "placement": "sppf", "head_dim": 24}, Infeasible, ["num_heads must divide dim"]),
])
def test_bad_input(arch, error, needles):
    with pytest.raises(error) as info:
        yolo.check_yolo_arch(arch)
    message = str(info.value)
    assert "\n" not in message and all(n in message for n in needles), message
    with pytest.raises(error):
        yolo.build_yolo(arch)


# --------------------------------------------------------------------------- YAML export


def test_export_round_trip_through_plain_ultralytics(tmp_path):
    from ultralytics import YOLO

    arch = _arch("flatten", "neck")
    path = yolo.export_yolo_yaml(arch, tmp_path / "yolov8n-flatten.yaml")
    assert yaml.safe_load(path.read_text()) == yolo.yolo_model_dict(arch)
    expected = count_params(_built("flatten", "neck"))
    assert count_params(YOLO(str(path)).model) == expected
    plain = yolo.export_yolo_yaml(arch, tmp_path / "candidate.yaml")  # no scale in the name: the first one
    assert count_params(YOLO(str(plain)).model) == expected
    with pytest.raises(ConfigError, match="scale 's'"):
        yolo.export_yolo_yaml(arch, tmp_path / "yolov8s-flatten.yaml")
    lavit = {"attention": "lavit", "placement": "sppf", "layer_scale_init": 1e-5}  # floats YAML 1.1 must read back
    assert yaml.safe_load(yolo.yolo_yaml_text(lavit)) == yolo.yolo_model_dict(lavit)


_FRESH = textwrap.dedent("""
    import json, socket, sys
    calls = []
    def refuse(*args, **kwargs):
        calls.append(repr(args)[:80])
        raise OSError("network blocked")
    socket.socket.connect = socket.socket.connect_ex = refuse
    socket.getaddrinfo = socket.create_connection = refuse
    {imports}
    from ultralytics import YOLO
    model = YOLO(sys.argv[1]).model
    print(json.dumps({{"params": sum(p.numel() for p in model.parameters()), "calls": calls}}))
""")


def _fresh_process(imports: str, path) -> dict:
    out = subprocess.run([sys.executable, "-c", _FRESH.format(imports=imports), str(path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fresh_process_import_is_offline_and_enough_for_yolo(tmp_path):
    arch = _arch("focal", "sppf")
    path = yolo.export_yolo_yaml(arch, tmp_path / "yolov8n-focal.yaml")
    result = _fresh_process("import ablate.models.yolo", path)
    assert result["calls"] == []
    assert result["params"] == count_params(yolo.build_yolo(arch))


def test_import_ablate_changes_no_environment_settings_or_import_hooks():
    code = ("import json, os, sys; env, hooks = dict(os.environ), list(sys.meta_path); import ablate, ablate.cli; "
            "print(json.dumps({'env': dict(os.environ) == env, 'hooks': sys.meta_path == hooks, "
            "'ultralytics': 'ultralytics' in sys.modules, 'torch': 'torch' in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == {"env": True, "hooks": True, "ultralytics": False, "torch": False}


# --------------------------------------------------------------------------- FLOPs


@pytest.fixture(scope="module")
def v8n_640():
    model = yolo.create_yolo_preset("yolov8n")
    return model, ultralytics_gflops(model)


def test_stock_yolov8n_figures_equal_ultralytics(v8n_640):
    from ultralytics.utils.torch_utils import get_flops

    model, ours = v8n_640
    assert count_params(model) == 3_157_200
    assert ours == pytest.approx(get_flops(model, 640), rel=1e-9)
    assert round(ours, 1) == 8.9 == yolo.YOLO_PRESET_INFO["yolov8n"]["gflops_ultralytics"]
    # ultralytics' fused model (what runs at inference) is exactly twice our multiply-adds
    fused = copy.deepcopy(model).fuse(verbose=False)
    assert get_flops(fused, 640) == pytest.approx(2 * count_flops(model, torch.zeros(1, 3, 640, 640)) / 1e9,
                                                  rel=1e-9)


def test_yolov8n_fla_shows_the_seeds_increase(v8n_640):
    from ultralytics.utils.torch_utils import get_flops

    _, stock = v8n_640
    model = yolo.create_yolo_preset("yolov8n_fla")
    ours = ultralytics_gflops(model)
    assert stock < ours and round(ours, 1) == 9.1  # the seed: 8.9 -> 9.1
    assert ours >= get_flops(model, 640)  # thop misses the three-operand einsum
    assert count_params(model) - 3_157_200 == 264_256 + 512  # the seed's FLA(256, 8 heads) + one LayerNorm


# --------------------------------------------------------------------------- CLI


def test_cli_profile_yolo_json_and_list(capsys):
    code, out, err = run_cli(capsys, "profile", "yolov8n", "--resolution", "128", "--format", "json")
    assert code == 0, err
    row = json.loads(out)
    assert set(row) == {"name", "resolution", "params_m", "gflops", "gflops_ultralytics"}
    assert row["resolution"] == 128 and row["params_m"] == pytest.approx(3.1572)
    assert round(row["gflops_ultralytics"], 1) == 8.9 and row["gflops"] < 1.0
    code, out, _ = run_cli(capsys, "profile", "--list", "--format", "json")
    names = {r["name"] for r in json.loads(out)}
    assert {"yolov8n", "yolov8s", "yolo11n", "yolo11s", "yolov8n_fla", "focal_tiny"} <= names
    code, _, err = run_cli(capsys, "profile", "yolov8", "--format", "json")
    assert code == 2 and "did you mean" in err and len(err.strip().splitlines()) == 1


def _fake_study(path, spec: dict, trials: list[dict]) -> str:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{path}"
    study = optuna.create_study(storage=url, study_name=spec["name"], directions=["maximize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["map50_95", "gflops"])
    study.set_user_attr("spec", spec)
    for t in trials:
        state = optuna.trial.TrialState.COMPLETE if "arch" in t else optuna.trial.TrialState.FAIL
        study.add_trial(optuna.trial.create_trial(state=state, values=[0.1, 1.0] if "arch" in t else None,
                                                  user_attrs=t))
    return url


def test_cli_export(tmp_path, capsys):
    arch = yolo.resolve_yolo_arch(_arch("flatten", "sppf"))
    db = tmp_path / "det.db"
    _fake_study(db, {"name": "det", "task": "detect"}, [{"arch": arch}, {"error": "RuntimeError: out of memory"}])
    out = tmp_path / "yolov8n-best.yaml"
    code, stdout, err = run_cli(capsys, "export", str(db), "--trial", "0", "-o", str(out))
    assert code == 0, err
    assert yaml.safe_load(out.read_text()) == yolo.yolo_model_dict(arch) and "wrote" in stdout

    for args, needle in [(("--trial", "7"), "no trial 7; its trials are 0..1"),
                         (("--trial", "1"), "stored no arch (it failed: RuntimeError: out of memory)")]:
        target = tmp_path / "nothing.yaml"
        code, _, err = run_cli(capsys, "export", str(db), *args, "-o", str(target))
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
        assert not target.exists()

    cls_db = tmp_path / "cls.db"
    _fake_study(cls_db, {"name": "cls", "task": "classify"}, [{"arch": {"attention": "focal", "img_size": 32}}])
    code, _, err = run_cli(capsys, "export", str(cls_db), "--trial", "0", "-o", str(tmp_path / "c.yaml"))
    assert code == 2 and "'classify' study" in err and not (tmp_path / "c.yaml").exists()


def test_layers_equal_their_stock_module_only_while_parse_model_runs():
    from ultralytics.nn import tasks
    from ultralytics.nn.modules.block import C2f

    from ablate.models.yolo.blocks import _PARSING

    layer = getattr(yolo, "C2f_flatten")
    assert layer != C2f and C2f != layer and layer in {layer} and hash(layer) == hash(C2f)
    token = _PARSING.set(True)
    try:
        assert layer == C2f and layer in frozenset({C2f})
    finally:
        _PARSING.reset(token)
    assert getattr(tasks.parse_model, "_ablate_marks_parsing", False)  # the marker is set by a wrapper, not a frame
    assert not _PARSING.get()
