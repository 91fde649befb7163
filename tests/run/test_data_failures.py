"""Data that breaks while a study runs: the trial fails with its reason, the study goes on,
and no trial is ever left RUNNING.

Real (tiny) trials through a local Ray with one CPU, so trials run one after another: a
corrupt image read through a DataLoader worker process, the data folder deleted while the
run goes on, the driver failing, and the driver interrupted with SIGINT. A folder broken
before the run is refused by ``ablate run`` before anything is written.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from PIL import Image
from typer.testing import CliRunner

from ablate.run import ray_session, run_study
from ablate.run.trial import run_trial
from ablate.study import check_study

STUDY = """\
name: data-failures
fixed: {attention: softmax, depths: [1, 1], embed_dim: 16, num_heads: 2}
grid: {window_size: GRID}
objectives: [{name: top1, direction: maximize}, {name: gflops, direction: minimize}]
data: {name: imagefolder, path: images, image_size: 16, num_workers: NUM_WORKERS}
train: {epochs: EPOCHS, batch_size: 4}
resources: {cpu: 1}
storage: sqlite:///STORAGE
"""


@pytest.fixture(scope="module")
def ray_local():
    with ray_session(num_cpus=1):  # one trial at a time: the second runs after the first failed
        from ray import cloudpickle  # Ray pickles with its own vendored copy

        cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests/
        yield


def _project(tmp_path: Path, *, epochs: int = 1, num_workers: int = 0, per_class: int = 4,
             grid: tuple[int, ...] = (2,)) -> Path:
    for k, name in enumerate(("cat", "dog")):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (16, 16), (120 * k, 40 * i, 200)).save(tmp_path / "images" / name / f"{i}.png")
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.replace("EPOCHS", str(epochs)).replace("NUM_WORKERS", str(num_workers))
                    .replace("GRID", str(list(grid)))
                    .replace("STORAGE", str(tmp_path / "runs" / "study.db")))  # relative: the working directory
    return path


def _trials(study) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study.name, storage=study.storage).trials


def _no_running_leftover(study) -> list[optuna.trial.FrozenTrial]:
    trials = _trials(study)
    assert trials, "no trial was stored"
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    return trials


def test_a_corrupt_image_fails_each_trial_with_its_path_and_the_study_goes_on(tmp_path, ray_local):
    path = _project(tmp_path, num_workers=1, grid=(2, 4))  # read in a DataLoader worker process: torch re-raises there
    bad = tmp_path / "images" / "dog" / "broken.jpg"
    bad.write_text("text, not a JPEG\n")
    study = check_study(path)  # structure only: validate does not open images
    summary = run_study(study, progress=False)
    assert summary.states == {"FAIL": 2} and len(summary.new_trials) == 2  # the second ran after the first failed
    for t in _no_running_leftover(study):
        error = t.user_attrs["error"]
        assert error.startswith(f"DataError: {bad}: cannot read the image") and "\n" not in error, error
        assert not t.user_attrs.get("interrupted") and t.values is None


def deleting_trial(study, params, report, **kwargs):
    """The data folder disappears while the run goes on (after validate, after the driver's look)."""
    shutil.rmtree(study.data.path, ignore_errors=True)
    return run_trial(study, params, report, **kwargs)


def test_a_data_folder_deleted_during_the_run_fails_the_trials_with_the_folder(tmp_path, ray_local):
    study = check_study(_project(tmp_path))
    summary = run_study(study, progress=False, trial_fn=deleting_trial)
    assert summary.states == {"FAIL": 1}
    (t,) = _no_running_leftover(study)
    error = t.user_attrs["error"]  # the worker re-checks the spec's data section, then the loader checks the folder
    assert repr(study.data.path) in error and ("not found" in error or "does not exist" in error), error
    assert "\n" not in error and not t.user_attrs.get("interrupted")


def test_a_folder_broken_before_the_run_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    from ablate.cli import app

    path = _project(tmp_path)
    for image in (tmp_path / "images" / "dog").iterdir():
        image.unlink()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and "'dog'" in result.output and "hold no image" in result.output, result.output
    assert not (tmp_path / "runs").exists()


def test_data_gone_before_the_driver_reads_it_stops_the_run_and_marks_nothing_infeasible(tmp_path, ray_local):
    """Between validate and the driver's first look: a data problem, not a configuration's, so the
    run stops in one line and a later run (with the data back) trains every cell."""
    from ablate.errors import DataError

    study = check_study(_project(tmp_path, grid=(2, 4)))
    shutil.move(tmp_path / "images", tmp_path / "moved")
    with pytest.raises(DataError):
        run_study(study, progress=False)
    assert not [t for t in _trials_or_none(study) if t.state != TrialState.FAIL or "infeasible" in str(t.user_attrs)]
    shutil.move(tmp_path / "moved", tmp_path / "images")
    summary = run_study(study, progress=False)
    assert summary.states == {"COMPLETE": 2}


def _trials_or_none(study) -> list[optuna.trial.FrozenTrial]:
    try:
        return _trials(study)
    except KeyError:  # the study was never created
        return []


def test_a_driver_error_leaves_no_running_trial(tmp_path, ray_local, monkeypatch):
    from ablate.run.searcher import StudySearcher

    study = check_study(_project(tmp_path, epochs=3))
    real = StudySearcher.on_trial_result

    def failing(self, trial_id, result):
        real(self, trial_id, result)
        if "epoch" in result:
            raise RuntimeError("a bug in the driver")

    monkeypatch.setattr(StudySearcher, "on_trial_result", failing)
    with pytest.raises(Exception, match="a bug in the driver"):
        run_study(study, progress=False)
    trials = _no_running_leftover(study)
    assert all(t.state == TrialState.FAIL and t.user_attrs.get("interrupted") for t in trials)


def test_sigint_leaves_no_running_trial(tmp_path, ray_local):
    study = check_study(_project(tmp_path, epochs=500))  # never finishes on its own

    def interrupt_when_training() -> None:
        deadline = time.time() + 90
        while time.time() < deadline:
            time.sleep(0.5)
            try:
                if any(t.state == TrialState.RUNNING and "epochs_done" in t.user_attrs for t in _trials(study)):
                    break
            except Exception:  # the study is not created yet
                continue
        os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=interrupt_when_training, daemon=True)
    watcher.start()
    with pytest.raises(KeyboardInterrupt):
        run_study(study, progress=False)
    watcher.join(timeout=5)
    trials = _no_running_leftover(study)
    assert any(t.user_attrs.get("interrupted") for t in trials)
    assert all(t.state == TrialState.FAIL for t in trials)
