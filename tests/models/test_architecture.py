"""The typed architecture: resolved once per configuration in the driver, re-validated once
in the worker, stored with its task, and trusted by the builders."""

from __future__ import annotations

import json

import pytest

import ablate.models.vit_arch as vit_arch
from ablate.errors import ConfigError
from ablate.models import (
    Architecture,
    architecture_from_json,
    build_model,
    check_architecture,
    resolve_architecture,
)
from ablate.run.candidate import Candidate
from ablate.study import study_from_dict


def _spec(tmp_path, **over) -> dict:
    spec = {
        "name": "arch-once",
        "task": "classify",
        "base": "swin_tiny",
        "proxy": {"embed_dim": 16, "depths": [1, 1], "num_heads": 2, "shift_size": 1, "grid": {"window_size": [2, 4]}},
        "grid": {"window_size": [7, 14]},
        "repeats": 3,
        "paper_resolution": 224,
        "objectives": [{"name": "top1", "direction": "maximize"}, {"name": "gflops_paper", "direction": "minimize"}],
        "data": {"name": "digits", "image_size": 16},
        "train": {"epochs": 1, "batch_size": 64},
        "resources": {"cpu": 1, "gpu": 0},
        "storage": f"sqlite:///{tmp_path / 'study.db'}",
    }
    spec.update(over)
    return spec


@pytest.fixture
def resolves(monkeypatch):
    """Counts every resolution of ViT builder keys (an Architecture passed through is not one)."""
    calls: list[dict] = []
    real = vit_arch.resolve_arch

    def counting(arch):
        if not isinstance(arch, Architecture):
            calls.append(dict(arch))
        return real(arch)

    monkeypatch.setattr(vit_arch, "resolve_arch", counting)
    return calls


def test_the_driver_resolves_each_configuration_once_whatever_its_repeats(tmp_path, resolves):
    import optuna

    from ablate.run.optuna_study import open_optuna_study
    from ablate.run.searcher import StudySearcher

    study = study_from_dict(_spec(tmp_path), check=False)
    ostudy = open_optuna_study(study, study.storage)
    searcher = StudySearcher(study, ostudy, budget=2)
    configs = [searcher.suggest(f"t{i}") for i in range(searcher.planned)]
    assert len(configs) == 6 and searcher.suggest("extra") is None
    # Two configurations, each: the trained model and its paper-scale twin (the unscaled base).
    assert len(resolves) == 4, resolves
    stored = ostudy.get_trials(deepcopy=False)
    assert {t.user_attrs["arch"]["task"] for t in stored} == {"classify"}
    assert {t.user_attrs["arch"]["window_size"] for t in stored} == {2, 4}
    assert all(t.user_attrs["arch"]["num_classes"] == 10 for t in stored)  # the data set's classes
    assert isinstance(ostudy, optuna.Study)


def test_the_worker_validates_the_candidate_once_and_builds_without_resolving(tmp_path, resolves):
    from ablate.run.trial import run_trial

    study = study_from_dict(_spec(tmp_path), check=False)
    sent = json.loads(json.dumps(Candidate.of(study, {"window_size": 7}).to_json()))  # what Ray carries
    resolves.clear()
    candidate = Candidate.from_json(sent)
    assert len(resolves) == 2  # the boundary check: the trained model and its paper twin
    reports: list[dict] = []
    run_trial(study, candidate.params, reports.append, candidate=candidate)
    assert len(resolves) == 2, resolves[2:]  # building, measuring and training resolved nothing again
    assert reports and reports[-1]["epochs_done"] == 1
    # The paper column is the unscaled Swin-T at 224 px (28.3M params), the trained model the proxy.
    assert abs(reports[-1]["params_m_paper"] - 28.29) < 0.05 and reports[-1]["params_m"] < 0.1


def test_stored_form_round_trips_and_names_its_task():
    arch = resolve_architecture({"preset": "focal_tiny", "img_size": 32, "num_classes": 10})
    stored = json.loads(json.dumps(arch.to_json()))
    assert stored["task"] == "classify" and stored["preset"] == "focal_tiny"
    again = architecture_from_json(stored)
    assert again == arch and hash(again) == hash(arch)
    assert architecture_from_json({k: v for k, v in stored.items() if k != "task"}, "classify") == arch


def test_task_is_a_field_not_a_guess():
    keys = {"base": "yolov8n", "img_size": 64}
    with pytest.raises(ConfigError, match="unknown arch key 'base'"):
        resolve_architecture(keys)  # classify by default: YOLO keys are not guessed into a detector
    det = resolve_architecture(keys, "detect")
    assert det.task == "detect" and det.num_classes == 80 and det.in_chans == 3
    with pytest.raises(ConfigError, match="for task 'detect', not 'classify'"):
        architecture_from_json(det.to_json(), "classify")
    with pytest.raises(ConfigError, match="names no task"):
        architecture_from_json({"img_size": 32})
    with pytest.raises(ConfigError, match="task must be one of classify, detect"):
        resolve_architecture({}, "segment")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="a detect architecture was given where a classify one is needed"):
        resolve_architecture(det, "classify")


def test_an_architecture_is_read_only_and_its_class_count_is_checked():
    arch = resolve_architecture({"embed_dim": 16, "depths": [1], "num_heads": 2, "img_size": 8})
    with pytest.raises(TypeError):
        arch.spec["embed_dim"] = 32  # type: ignore[index]
    with pytest.raises(TypeError):
        arch.spec["depths"][0] = 2  # type: ignore[index]
    copy = arch.to_dict()
    copy["embed_dim"] = 32
    assert arch.spec["embed_dim"] == 16
    assert arch.with_classes(7).num_classes == 7 and arch.num_classes == 1000
    for bad in (-1, 2.5, True, "3"):
        with pytest.raises(ConfigError, match="num_classes must be an integer >= 0"):
            arch.with_classes(bad)  # type: ignore[arg-type]


def test_builders_check_an_architecture_before_building():
    from ablate.errors import Infeasible

    arch = resolve_architecture({"embed_dim": 16, "depths": [1, 1], "num_heads": 2, "img_size": 8,
                                 "attention": "softmax", "window_size": 8})
    with pytest.raises(Infeasible, match="window_size=8 is larger than every stage's feature map"):
        check_architecture(arch)
    with pytest.raises(Infeasible, match="window_size=8"):
        build_model(arch)
    fine = resolve_architecture({**arch.to_dict(), "window_size": 2})
    model = build_model(fine)
    assert model.arch == fine.to_dict()


def test_one_preset_registry_for_both_tasks():
    from ablate.models import create_model, list_presets, preset_arch, preset_task
    from ablate.models.presets import PRESET_INFO, YOLO_PRESET_INFO

    every = list_presets(None)
    assert sorted(list_presets("classify") + list_presets("detect")) == every
    assert set(list_presets("classify")) == set(PRESET_INFO) and set(list_presets("detect")) == set(YOLO_PRESET_INFO)
    assert preset_task("focal_tiny") == "classify" and preset_task("yolov8n_fla") == "detect"
    with pytest.raises(ConfigError, match=r"unknown preset 'focal_tiy'.*did you mean 'focal_tiny'"):
        preset_task("focal_tiy")
    with pytest.raises(ConfigError, match=r"\('yolov8n' is a detect preset\)"):
        preset_arch("yolov8n")  # a ViT builder asked for a detector
    with pytest.raises(ConfigError, match=r"\('yolov8n' is a detect preset\)"):
        resolve_architecture({"preset": "yolov8n"})
    vit = create_model("focal_tiny", img_size=32, num_classes=10, depths=[1, 1, 1, 1])
    assert vit.arch["preset"] == "focal_tiny" and vit.arch["num_classes"] == 10
    det = create_model("yolov8n", img_size=64, nc=3)
    assert det.arch["base"] == "yolov8n" and det.arch["nc"] == 3
