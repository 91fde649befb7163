"""A detect study's ``weights:`` (an ultralytics .pt built here, offline): the model ultralytics'
trainer trains starts from it, and every epoch reports the counts."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from ablate.data import generate_synth_det
from ablate.models.yolo import build_yolo, yolo_model_dict
from ablate.models.yolo.upstream import tasks
from ablate.run.trial import run_trial
from ablate.study import study_from_dict
from ablate.train.detect import DetectConfig, train_detector


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def test_a_detect_trial_trains_from_the_pt_and_reports_how_much_it_took(tmp_path: Path) -> None:
    data = generate_synth_det(tmp_path / "shapes", seed=1, n_train=16, n_val=8, image_size=64)
    stock = tasks.DetectionModel(yolo_model_dict({"base": "yolov8n", "nc": 80}), ch=3, nc=80, verbose=False)
    pt = tmp_path / "yolov8n.pt"
    torch.save({"epoch": -1, "model": copy.deepcopy(stock).half(), "ema": None, "train_args": {}}, pt)
    study = study_from_dict({
        "name": "detw", "task": "detect",
        "fixed": {"base": "yolov8n", "attention": "flatten", "placement": "sppf", "pos_encoding": False},
        "grid": {"focusing_factor": [3]},
        "data": {"name": "yolo", "path": str(data), "image_size": 64},
        "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3},
        "storage": f"sqlite:///{tmp_path / 'det.db'}",
        "weights": str(pt),
    }, check=False)
    reports: list[dict] = []
    last = run_trial(study, study.cells()[0], reports.append)
    assert reports == [last] and math.isfinite(last["map50_95"])
    # what the trainer's model took, by ultralytics' rule on the shifted names (tests/models/test_yolo_transfer.py)
    candidate = build_yolo({"base": "yolov8n", "attention": "flatten", "placement": "sppf", "pos_encoding": False,
                            "nc": 3, "img_size": 64})
    base = stock.state_dict()
    want = sum(1 for k, v in candidate.state_dict().items() if not k.startswith("model.10.")
               and (src := base.get(k if int(k.split(".")[1]) < 10 else
                                    f"model.{int(k.split('.')[1]) - 1}.{k.split('.', 2)[2]}")) is not None
               and src.shape == v.shape)
    assert (last["weights_transferred"], last["weights_total"]) == (want, len(candidate.state_dict()))


def test_the_trainer_hands_its_model_the_weights(tmp_path: Path) -> None:
    data = generate_synth_det(tmp_path / "shapes", seed=2, n_train=8, n_val=4, image_size=64)
    stock = tasks.DetectionModel(yolo_model_dict({"base": "yolov8n", "nc": 3}), ch=3, nc=3, verbose=False)
    pt = tmp_path / "same.pt"
    torch.save({"model": copy.deepcopy(stock).half()}, pt)
    built: list = []

    def build(arch):
        built.append(build_yolo(arch))
        return built[-1]

    rows = train_detector({"base": "yolov8n", "img_size": 64}, data,
                          DetectConfig(epochs=1, batch_size=4, image_size=64, weights=str(pt), lr=1e-9,
                                       warmup_epochs=0), build=build, workdir=tmp_path / "w")
    n = len(stock.state_dict())
    assert rows[0]["weights_transferred"] == rows[0]["weights_total"] == n  # the stock model with 3 classes: all
    assert built  # and the trainer trained that model (its first conv started from the checkpoint)
    first = "model.0.conv.weight"
    start = stock.state_dict()[first].half().float()
    assert torch.allclose(built[0].state_dict()[first].float(), start, atol=1e-2)


def test_a_pt_that_sets_nothing_stops_the_trainer_in_one_line(tmp_path: Path) -> None:
    from ablate.errors import ConfigError

    data = generate_synth_det(tmp_path / "shapes", seed=3, n_train=4, n_val=4, image_size=64)
    pt = tmp_path / "zero.pt"
    torch.save({"model": {"encoder.weight": torch.randn(3, 3)}}, pt)
    with pytest.raises(ConfigError) as err:
        train_detector({"base": "yolov8n", "img_size": 64}, data,
                       DetectConfig(epochs=1, batch_size=4, image_size=64, weights=str(pt)), workdir=tmp_path / "w")
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{pt}: no tensor of the checkpoint matches")
    assert "0 of its 355 transferred" in str(err.value)
