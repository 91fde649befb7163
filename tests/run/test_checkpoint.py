"""ablate.run.checkpoint: where a trial's weights go, which ones, and what is recorded.

The conventions are tested as tables; the plumbing (driver -> Ray config -> worker ->
file -> recorded ``weights_file``) through a real local Ray with synthetic trials whose
"weights" are the epoch they were saved at, so the file a trial keeps is checked against
the epochs it reported: COMPLETE keeps its last epoch, PRUNED the epoch it was stopped at,
a trial that raises or whose worker dies keeps nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from safetensors.torch import load_file

from ablate.errors import EnvironmentProblem
from ablate.models.exported import read_exported_meta
from ablate.run import run_study
from ablate.run.checkpoint import (Artifacts, WeightsTarget, default_artifacts, saving_weights, stored_path,
                                   weights_candidates)
from ablate.study import study_from_dict
from tests.run.tiny_study import tiny_grid_spec

EPOCHS = 3


# ----------------------------------------------------------------------------- conventions

@pytest.mark.parametrize("url, study, folder", [
    ("sqlite:///runs/x.db", "s", "runs/x.artifacts"),
    ("sqlite:////data/exp/x.db?timeout=30", "s", "/data/exp/x.artifacts"),
    ("sqlite+pysqlite:///a/b.sqlite3", "s", "a/b.artifacts"),
    ("sqlite:///runs/noext", "s", "runs/noext.artifacts"),
    ("sqlite:///:memory:", "s", "runs/s.artifacts"),
    ("postgresql://u:pw@host/db", "focal-ws", "runs/focal-ws.artifacts"),
])
def test_default_artifacts_folder(url, study, folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_artifacts(url, study) == Path(os.path.abspath(folder))


def test_stored_form_is_relative_to_the_database_folder_and_found_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = "sqlite:///runs/x.db"
    inside = tmp_path / "runs" / "x.artifacts" / "s" / "trial-3.safetensors"
    outside = tmp_path / "shared" / "s" / "trial-3.safetensors"
    assert stored_path(inside, url) == "x.artifacts/s/trial-3.safetensors"
    assert stored_path(outside, url) == str(outside)  # not under the db's folder: absolute
    assert stored_path(outside, "postgresql://h/db") == str(outside)
    assert weights_candidates("x.artifacts/s/trial-3.safetensors", url) == [inside]
    # the run folder moved: a relative form follows the database
    assert weights_candidates("x.artifacts/s/trial-3.safetensors", "sqlite:////moved/x.db") == \
        [Path("/moved/x.artifacts/s/trial-3.safetensors")]
    assert weights_candidates(str(outside), url) == [outside]
    assert weights_candidates(str(outside), url, artifacts="/else") == [Path("/else/s/trial-3.safetensors")]


def test_a_folder_that_cannot_be_written_is_refused_before_the_run(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    study = study_from_dict(_spec(tmp_path), check=False)
    with pytest.raises(EnvironmentProblem, match="not a folder, so the artifacts folder .* cannot be made"):
        Artifacts.for_study(study, study.storage, blocker / "art").check()
    Artifacts.for_study(study, study.storage, tmp_path / "new" / "deeper").check()  # made later, by the workers
    assert not (tmp_path / "new").exists()
    with pytest.raises(EnvironmentProblem):
        run_study(study, trial_fn=weights_trial, progress=False, artifacts=blocker / "art")
    assert not (tmp_path / "study.db").exists()  # refused before the storage was created


# ----------------------------------------------------------------------------- saving_weights

class _Report(list):
    """A report function as the worker hands it over: it may carry a weights target."""

    def __call__(self, metrics: dict) -> None:
        self.append(metrics)


def _target(tmp_path: Path, every_epoch: bool) -> WeightsTarget:
    return WeightsTarget(path=str(tmp_path / "s" / "trial-0.safetensors"), stored="s/trial-0.safetensors", study="s",
                         trial=0, every_epoch=every_epoch)


def _arch():
    from ablate.models import resolve_architecture

    return resolve_architecture({"attention": "softmax", "depths": [1, 1], "embed_dim": 16, "num_heads": 2,
                                 "img_size": 16})


def test_without_a_target_nothing_is_saved():
    report = _Report()
    assert saving_weights(report, torch.nn.Linear(2, 2), _arch(), report, 3) is report


@pytest.mark.parametrize("every_epoch, saved_at", [(False, [3]), (True, [1, 2, 3])])
def test_saved_before_the_report_that_names_it(tmp_path, every_epoch, saved_at):
    report = _Report()
    report.weights_target = _target(tmp_path, every_epoch)
    model = torch.nn.Linear(2, 2)
    path = tmp_path / "s" / "trial-0.safetensors"
    hook = saving_weights(report, model, _arch(), report, 3)
    seen = []
    for epoch in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(epoch)
        hook({"epoch": epoch, "top1": 10.0 * epoch})
        seen.append(int(load_file(path)["weight"][0, 0]) if path.exists() else None)
    assert [r.get("weights_file") for r in report] == [("s/trial-0.safetensors" if e in saved_at else None)
                                                       for e in (1, 2, 3)]
    assert seen == [(e if every_epoch else None) for e in (1, 2)] + [3]
    meta = read_exported_meta(path)
    assert meta["epoch"] == "3" and float(meta["top1"]) == 30.0 and meta["study"] == "s" and meta["trial"] == "0"


def test_a_trial_stopped_at_a_report_keeps_that_epoch(tmp_path):
    """Ray stops a trial by raising SystemExit inside the report call (its session's stop event)."""
    def report(metrics: dict) -> None:
        if metrics["epoch"] == 2:
            raise SystemExit(0)

    report.weights_target = _target(tmp_path, every_epoch=True)  # type: ignore[attr-defined]
    model = torch.nn.Linear(2, 2)
    hook = saving_weights(report, model, _arch(), report, 3)
    with pytest.raises(SystemExit):
        for epoch in (1, 2, 3):
            with torch.no_grad():
                model.weight.fill_(epoch)
            hook({"epoch": epoch, "top1": 1.0})
    path = tmp_path / "s" / "trial-0.safetensors"
    assert int(load_file(path)["weight"][0, 0]) == 2 and read_exported_meta(path)["epoch"] == "2"


# ----------------------------------------------------------------------------- through Ray

def _spec(tmp_path: Path, **over) -> dict:
    return tiny_grid_spec(tmp_path, "kept", epochs=EPOCHS, **over)


def weights_trial(study, params, report, *, device="cpu", repeat=0, candidate=None):
    """A linear "model" whose weight is the epoch; window 3 raises after its last save, window 1's
    worker dies after it; accuracy falls with the window (so ASHA stops the later, smaller ones)."""
    w = study.candidate(params)["window_size"]
    model = torch.nn.Linear(2, 2)
    hook = saving_weights(report, model, candidate.arch, report, study.train.epochs)
    for epoch in range(1, study.train.epochs + 1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        hook({"epoch": epoch, "top1": 10.0 * w + epoch, "train_loss": 1.0, "gflops": 0.01 * w, "params_m": 0.1,
              "epochs_done": epoch})
    if w == 3:
        raise RuntimeError("boom: synthetic failure after the last epoch")
    if w == 1:
        os._exit(1)


def _kept(study) -> dict[int, optuna.trial.FrozenTrial]:
    return {t.number: t for t in optuna.load_study(study_name=study.name, storage=study.storage).get_trials()}


def test_complete_trials_keep_their_last_epoch_failed_ones_nothing(tmp_path, ray_local):
    study = study_from_dict(_spec(tmp_path, grid={"window_size": [2, 3, 4, 1]}), check=False)
    run_study(study, trial_fn=weights_trial, progress=False, max_retries=0)
    trials = _kept(study)
    folder = tmp_path / "study.artifacts" / "kept"
    states = {study.candidate(t.params)["window_size"]: t for t in trials.values()}
    assert {w: t.state for w, t in states.items()} == {2: TrialState.COMPLETE, 3: TrialState.FAIL,
                                                      4: TrialState.COMPLETE, 1: TrialState.FAIL}
    assert "boom" in states[3].user_attrs["error"] and "died" in states[1].user_attrs["error"]
    for t in trials.values():
        path = folder / f"trial-{t.number}.safetensors"
        if t.state == TrialState.COMPLETE:
            assert t.user_attrs["weights_file"] == f"study.artifacts/kept/trial-{t.number}.safetensors"
            assert int(load_file(path)["weight"][0, 0]) == EPOCHS
            meta = read_exported_meta(path)
            assert meta["trial"] == str(t.number) and meta["study"] == "kept" and float(meta["top1"]) == t.values[0]
        else:  # the worker removed the raising trial's file; the driver the dead worker's
            assert "weights_file" not in t.user_attrs and not path.exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"trial-{t.number}.safetensors"
                                                              for t in trials.values() if t.state.name == "COMPLETE")


def test_pruned_trials_keep_the_epoch_they_stopped_at_in_a_chosen_folder(tmp_path, ray_local):
    spec = _spec(tmp_path, grid={"window_size": [8, 4, 2]}, train={"epochs": 4, "batch_size": 64},
                 scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2}, max_concurrent=1,
                 storage=f"sqlite:///{tmp_path / 'db' / 'study.db'}")
    study = study_from_dict(spec, check=False)
    (tmp_path / "db").mkdir()
    chosen = tmp_path / "elsewhere"
    run_study(study, trial_fn=weights_trial, progress=False, artifacts=chosen)
    trials = _kept(study).values()
    assert any(t.state == TrialState.PRUNED for t in trials)
    assert not (tmp_path / "db" / "study.artifacts").exists()
    for t in trials:
        path = chosen / "kept" / f"trial-{t.number}.safetensors"
        assert t.user_attrs["weights_file"] == str(path)  # outside the db's folder: absolute
        assert int(load_file(path)["weight"][0, 0]) == t.user_attrs["epochs_done"]
        assert read_exported_meta(path)["epoch"] == str(t.user_attrs["epochs_done"])
