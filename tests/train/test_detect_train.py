"""Detection trials: ultralytics' trainer with an ablate candidate, offline, on a tiny synthetic set."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ablate.study import study_from_dict
from ablate.data import generate_synth_det
from ablate.models.yolo import build_yolo
from ablate.train.detect import DetectConfig, train_detector
from ablate.run.trial import run_trial


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synth_det(tmp_path_factory.mktemp("det") / "shapes", seed=1, n_train=16, n_val=8, image_size=64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def test_one_epoch_reports_finite_map_and_keeps_the_candidate(tiny_set: Path, tmp_path: Path) -> None:
    arch = {"base": "yolov8n", "attention": "flatten", "placement": "sppf", "img_size": 64}
    built: list = []

    def build(a):
        built.append(a)
        return build_yolo(a)

    seen: list[dict] = []
    history = train_detector(arch, tiny_set, DetectConfig(epochs=1, batch_size=8, image_size=64), seen.append,
                             build=build, workdir=tmp_path)
    assert history == seen and len(history) == 1  # the final best.pt validation is not a second epoch
    row = history[0]
    assert row["epoch"] == 1 and math.isfinite(row["map50_95"]) and 0.0 <= row["map50_95"] <= 1.0
    assert math.isfinite(row["train_loss"]) and row["train_loss"] > 0
    assert built and all(a.num_classes == 3 for a in built)  # nc comes from the data set
    weights = tmp_path / "train" / "weights" / "last.pt"
    assert weights.is_file()


def test_a_detect_study_trial_stores_map_and_costs(tiny_set: Path, tmp_path: Path) -> None:
    study = study_from_dict({
        "name": "det", "task": "detect",
        "fixed": {"base": "yolov8n", "attention": "focal", "placement": "neck", "places": 1},
        "grid": {"window_size": [4]},
        "objectives": [{"name": "map50_95", "direction": "maximize"}, {"name": "gflops", "direction": "minimize"}],
        "data": {"name": "yolo", "path": str(tiny_set), "image_size": 64},
        "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3},
        "paper_resolution": 640,
        "storage": f"sqlite:///{tmp_path / 'det.db'}",
    })
    reports: list[dict] = []
    last = run_trial(study, study.cells()[0], reports.append)
    assert reports and last == reports[-1] and last["epochs_done"] == 1
    assert math.isfinite(last["map50_95"]) and last["gflops"] > 0 and last["params_m"] > 0
    assert last["gflops_paper"] > last["gflops"]  # 640 px against 64 px
    assert last["gflops_ultralytics"] == pytest.approx(2 * last["gflops_paper"], rel=0.03)


def test_a_missing_or_empty_data_yaml_is_refused_before_training(tmp_path: Path) -> None:
    from ablate.errors import AblateError

    base = {"name": "det", "task": "detect", "fixed": {"base": "yolov8n"}, "grid": {"attention": ["none"]},
            "storage": f"sqlite:///{tmp_path / 'det.db'}"}
    with pytest.raises(AblateError, match="file not found"):
        study_from_dict({**base, "data": {"name": "yolo", "path": str(tmp_path / "nope.yaml")}})
    empty = tmp_path / "empty"
    (empty / "images" / "train").mkdir(parents=True)
    (empty / "images" / "val").mkdir(parents=True)
    (empty / "data.yaml").write_text(f"path: {empty}\ntrain: images/train\nval: images/val\nnames: {{0: a}}\n")
    with pytest.raises(AblateError, match="no images"):
        study_from_dict({**base, "data": {"name": "yolo", "path": str(empty / "data.yaml")}})
    assert not (tmp_path / "det.db").exists()


def test_two_spellings_of_the_stock_model_are_one_configuration(tmp_path: Path) -> None:
    from ablate.run.keys import config_key

    study = study_from_dict({
        "name": "det", "task": "detect", "fixed": {"base": "yolov8n"},
        "grid": {"attention": ["none", "flatten"], "placement": ["sppf", "neck"]},
        "data": {"name": "synth-det", "image_size": 96},
        "storage": f"sqlite:///{tmp_path / 'det.db'}",
    }, check=False)
    keys = [config_key(study, cell) for cell in study.cells()]
    assert len(keys) == 4 and len(set(keys)) == 3  # none/sppf == none/neck
