"""YOLO candidates from an ultralytics .pt, built here offline (a stock yolov8n from its YAML,
saved the way ultralytics saves checkpoints: the pickled model in half precision)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch

from ablate.errors import ConfigError
from ablate.models import build_model, resolve_architecture
from ablate.models.transfer import transfer_weights
from ablate.models.yolo import yolo_model_dict
from ablate.models.yolo.transfer import read_yolo_state_dict
from ablate.models.yolo.upstream import intersect_dicts, tasks


@pytest.fixture(scope="module")
def stock_pt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """yolov8n with 80 classes, saved like ultralytics' trainer does (``model``: a pickled half copy)."""
    torch.manual_seed(123)
    model = tasks.DetectionModel(yolo_model_dict({"base": "yolov8n", "nc": 80}), ch=3, nc=80, verbose=False)
    path = tmp_path_factory.mktemp("pt") / "yolov8n.pt"
    torch.save({"epoch": -1, "model": copy.deepcopy(model).half(), "ema": None, "train_args": {}}, path)
    assert type(model.model[9]).__name__ == "SPPF"  # the row the sppf placement inserts after
    return path, {k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()}


def _candidate(**keys):
    arch = resolve_architecture({"base": "yolov8n", "nc": 3, "img_size": 64, **keys}, "detect")
    torch.manual_seed(0)
    model = build_model(arch)
    torch.manual_seed(0)
    return arch, model, build_model(arch).state_dict()


def _check(model, fresh, expected, done):
    target = model.state_dict()
    assert done.transferred == len(expected) and done.total == len(target), (done, len(expected))
    for name, value in target.items():
        torch.testing.assert_close(value, expected[name] if name in expected else fresh[name], rtol=0, atol=0,
                                   msg=name)


def test_sppf_attention_shifts_the_neck_and_head_and_they_still_transfer(stock_pt):
    path, base = stock_pt
    arch, model, fresh = _candidate(attention="flatten", placement="sppf", pos_encoding=False)
    done = transfer_weights(model, arch, path)
    # by hand: row 10 is the inserted AttnBlock; rows after it were the stock model's row - 1
    expected = {}
    for name, want in model.state_dict().items():
        row, rest = re.match(r"^model\.(\d+)\.(.*)$", name).groups()
        row = int(row)
        if row == 10:
            continue
        src = base.get(f"model.{row - 1 if row > 10 else row}.{rest}")
        if src is not None and src.shape == want.shape:
            expected[name] = src
    _check(model, fresh, expected, done)
    assert done.how == "base layers mapped past the inserted attention"
    assert not any(n.startswith("model.10.") for n in expected)  # the attention stays fresh
    assert any(n.startswith("model.22.cv2.") for n in expected)  # Detect (row 21 in the stock model) transferred
    # ultralytics' names as stored would reach the backbone only: fewer tensors
    as_stored = intersect_dicts(base, model.state_dict())
    assert len(as_stored) < done.transferred and all(int(k.split(".")[1]) < 10 for k in as_stored)


def test_neck_attention_keeps_rows_and_moves_bottlenecks_into_the_pair(stock_pt):
    path, base = stock_pt
    arch, model, fresh = _candidate(attention="flatten", placement="neck", pos_encoding=False)
    done = transfer_weights(model, arch, path)
    sites = {15, 18, 21}  # yolov8n's C2f rows feeding Detect
    expected = {}
    for name, want in model.state_dict().items():
        row = int(name.split(".")[1])
        src_name = re.sub(r"^(model\.\d+\.m\.\d+)\.0\.", r"\1.", name) if row in sites else name
        if row in sites and re.match(r"^model\.\d+\.m\.\d+\.1\.", name):
            continue  # the attention half of the pair
        src = base.get(src_name)
        if src is not None and src.shape == want.shape:
            expected[name] = src
    _check(model, fresh, expected, done)
    assert any(re.match(r"^model\.15\.m\.0\.0\.cv1\.", n) for n in expected)


def test_the_stock_model_takes_everything_but_the_class_branch_of_another_width(stock_pt):
    path, base = stock_pt
    arch, model, fresh = _candidate()
    done = transfer_weights(model, arch, path)
    expected = {k: base[k] for k, v in model.state_dict().items() if k in base and base[k].shape == v.shape}
    _check(model, fresh, expected, done)
    assert done.how == "names as stored"
    left = {k for k in model.state_dict() if k not in expected}
    assert left and all(".cv3." in k for k in left)  # nc=3 narrows the class branch (ultralytics' c3 rule)


def test_a_plain_state_dict_pt_is_read_without_unpickling_code(tmp_path, stock_pt):
    _, base = stock_pt
    path = tmp_path / "sd.pt"
    torch.save({"model": base}, path)
    sd = read_yolo_state_dict(path)
    assert sd.keys() == base.keys()
    arch, model, fresh = _candidate()
    assert transfer_weights(model, arch, path).transferred == sum(
        1 for k, v in model.state_dict().items() if k in base and base[k].shape == v.shape)


def test_what_is_not_an_ultralytics_checkpoint_is_one_line(tmp_path):
    for name, content in (("text.pt", b"hello"), ("empty.pt", b"")):
        (tmp_path / name).write_bytes(content)
    torch.save({"epoch": 1}, tmp_path / "dict.pt")
    for name in ("text.pt", "empty.pt", "dict.pt", "absent.pt"):
        with pytest.raises(ConfigError) as err:
            read_yolo_state_dict(tmp_path / name)
        line = str(err.value)
        assert "\n" not in line and line.startswith(str(tmp_path / name)), line
    assert not (Path.cwd() / "absent.pt").exists()


def test_a_detect_study_refuses_a_bare_name_ultralytics_would_download(tmp_path):
    from ablate.study import load_study

    study = tmp_path / "det.yaml"
    body = ("name: det\ntask: detect\nfixed: {base: yolov8n, attention: flatten, placement: sppf}\n"
            "grid: {focusing_factor: [3]}\nstorage: sqlite:///runs/det.db\n")
    for weights, says in (("yolov8n.pt", "file not found: 'yolov8n.pt'"), ("x.pth", "not an ultralytics checkpoint (.pt)")):
        (tmp_path / "x.pth").write_bytes(b"PK\x03\x04")
        study.write_text(body + f"weights: {weights}\n")
        with pytest.raises(ConfigError) as err:
            load_study(study, check=False)
        assert str(err.value).startswith(f"{study}:6: weights: ") and says in str(err.value), str(err.value)
    assert not (tmp_path / "yolov8n.pt").exists()


def test_a_meta_tensor_is_refused_before_anything_is_copied(tmp_path, stock_pt):
    _, base = stock_pt
    path = tmp_path / "meta.pt"
    torch.save({"model": {**base, "model.0.conv.weight": torch.empty(base["model.0.conv.weight"].shape,
                                                                     device="meta")}}, path)
    arch, model, fresh = _candidate()
    with pytest.raises(ConfigError, match="holds no plain data"):
        transfer_weights(model, arch, path)
    assert all(torch.equal(v, fresh[k]) for k, v in model.state_dict().items())
