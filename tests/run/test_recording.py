"""What a trial records besides its final values: Optuna intermediate values per epoch (so
optuna-dashboard draws learning curves of multi-objective studies) and, when configured, one
MLflow run and one TensorBoard event folder per trial, read back with MLflow's client and the
event files' own protocol buffers.

Trials are synthetic (made-up epochs at once, as in test_runner.py) so the recording is tested
in seconds through a real local Ray.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ablate.errors import ConfigError
from ablate.run import open_optuna_study, run_study
from ablate.run.searcher import StudySearcher
from ablate.run.trackers import Trackers, mlflow_run_name, tensorboard_dir
from ablate.study import study_from_dict
from tests.run.tiny_study import tiny_grid_spec
from ablate.study.trackers import TrackersSpec

EPOCHS = 3


def _spec(tmp_path: Path, **over) -> dict:
    return tiny_grid_spec(tmp_path, "recording", epochs=EPOCHS, **over)


def synthetic_trial(study, params, report, *, device="cpu", repeat=0, candidate=None):
    """Accuracy grows with the window and the epoch; a window of 3 fails after its first epoch."""
    w = study.candidate(params)["window_size"]
    last = {}
    for epoch in range(1, study.train.epochs + 1):
        last = {"epoch": epoch, "top1": 10.0 * w + epoch, "train_loss": 1.0 / epoch, "gflops": 0.01 * w,
                "params_m": 0.1, "epochs_done": epoch}
        report(last)
        if w == 3:
            raise RuntimeError("boom: synthetic failure after epoch 1")
    return last


def _events(folder: Path) -> dict[str, dict[int, float]]:
    """Scalars per tag and step from the TFRecord event files in ``folder``."""
    from tensorboardX.proto import event_pb2

    out: dict[str, dict[int, float]] = {}
    files = sorted(folder.glob("events.out.tfevents.*"))
    assert files, f"no event file in {folder}"
    for path in files:
        data, i = path.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4  # length, its CRC, the record, its CRC
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, {})[event.step] = value.simple_value
    return out


def test_intermediate_values_mlflow_and_tensorboard_record_every_trial(tmp_path, ray_local):
    pytest.importorskip("mlflow", reason="the trackers extra is not installed")
    from mlflow.tracking import MlflowClient

    spec = _spec(tmp_path, trackers={"mlflow": str(tmp_path / "mlruns"), "tensorboard": str(tmp_path / "tb")})
    study = study_from_dict(spec, check=False)
    assert study.trackers == TrackersSpec(mlflow=f"file:{tmp_path / 'mlruns'}", tensorboard=str(tmp_path / "tb"))
    summary = run_study(study, trial_fn=synthetic_trial, progress=False)
    assert len(summary.new_trials) == 3
    trials = optuna.load_study(study_name="recording", storage=study.storage).get_trials()
    by_w = {t.user_attrs["candidate"]["window_size"]: t for t in trials}
    assert [by_w[w].state for w in (2, 3, 4)] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    for w in (2, 4):  # the first objective per epoch, step = epoch; the curve attribute stays
        assert by_w[w].intermediate_values == {e: 10.0 * w + e for e in range(1, EPOCHS + 1)}
        assert [p["epoch"] for p in by_w[w].user_attrs["curve"]] == [1, 2, 3]
    assert by_w[3].intermediate_values == {1: 31.0}  # what it reported before it failed

    client = MlflowClient(study.trackers.mlflow)
    experiment = client.get_experiment_by_name("recording")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {mlflow_run_name("recording", t.number) for t in trials}
    for w, t in by_w.items():
        run = runs[mlflow_run_name("recording", t.number)]
        assert run.data.params["window_size"] == str(t.params["window_size"])
        assert run.data.params["seed"] == "0" and run.data.params["repeat"] == "0"
        assert run.data.params["config_key"] == t.user_attrs["config_key"]
        assert run.data.tags["state"] == t.state.name
        history = client.get_metric_history(run.info.run_id, "top1")
        assert {(m.step, m.value) for m in history} == {(e, 10.0 * w + e) for e in t.intermediate_values}
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == \
            sorted(t.intermediate_values)
        assert run.data.metrics["gflops"] == pytest.approx(0.01 * w)
        assert run.data.metrics["params_m"] == pytest.approx(0.1)
        if t.state == TrialState.COMPLETE:
            assert run.info.status == "FINISHED" and "error" not in run.data.tags
            assert run.data.metrics["final/top1"] == pytest.approx(t.values[0])
            assert run.data.metrics["final/gflops"] == pytest.approx(t.values[1])
        else:
            assert run.info.status == "FAILED" and "boom" in run.data.tags["error"]
            assert "final/top1" not in run.data.metrics
    stored = (tmp_path / "mlruns").rglob("*")
    assert not any("study.db" in p.read_text(errors="ignore") for p in stored if p.is_file())  # no storage URL

    for w, t in by_w.items():
        scalars = _events(Path(tensorboard_dir(str(tmp_path / "tb"), "recording", t.number)))
        assert scalars["top1"] == {e: 10.0 * w + e for e in t.intermediate_values}
        assert scalars["gflops"][t.user_attrs["epochs_done"]] == pytest.approx(0.01 * w)
        if t.state == TrialState.COMPLETE:
            assert scalars["final/top1"] == {EPOCHS: pytest.approx(t.values[0])}


@pytest.mark.slow  # test_runner.py covers ASHA; this adds ~10 s for the per-epoch values of PRUNED trials
def test_pruned_trials_keep_the_epochs_they_trained(tmp_path, ray_local):
    spec = _spec(tmp_path, grid={"window_size": [8, 4, 2, 1]}, train={"epochs": 4, "batch_size": 64},
                 scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2}, max_concurrent=1)
    study = study_from_dict(spec, check=False)
    run_study(study, trial_fn=synthetic_trial, progress=False)
    trials = optuna.load_study(study_name="recording", storage=study.storage).get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned
    for t in trials:
        assert sorted(t.intermediate_values) == list(range(1, t.user_attrs["epochs_done"] + 1))


def _searcher(tmp_path: Path) -> StudySearcher:
    study = study_from_dict(_spec(tmp_path, grid={"window_size": [2]}), check=False)
    return StudySearcher(study, open_optuna_study(study), budget=1)


def test_a_report_after_the_trial_was_closed_elsewhere_is_dropped(tmp_path):
    searcher = _searcher(tmp_path)
    config = searcher.suggest("t1")
    assert isinstance(config, dict)
    run = searcher.live["t1"]
    searcher.on_trial_result("t1", {"epoch": 1, "top1": 5.0})
    searcher.on_trial_result("t1", {"epoch": 1, "top1": 5.0})  # Ray repeats the last result
    # another driver took it over meanwhile (this one looked silent): FAIL, finished
    searcher.storage.set_trial_state_values(run.trial_id, TrialState.FAIL)
    searcher.on_trial_result("t1", {"epoch": 2, "top1": 6.0})  # must neither raise nor write
    searcher.on_trial_complete("t1", {"epoch": 3, "top1": 7.0, "epochs_done": 3})
    frozen = searcher.storage.get_trial(run.trial_id)
    assert frozen.state == TrialState.FAIL and frozen.intermediate_values == {1: 5.0}
    searcher.on_trial_result("t1", {"epoch": 4, "top1": 8.0})  # after it ended here too: ignored
    assert searcher.storage.get_trial(run.trial_id).intermediate_values == {1: 5.0}


def test_a_restarted_epoch_overwrites_its_step(tmp_path):
    searcher = _searcher(tmp_path)
    searcher.suggest("t1")
    run = searcher.live["t1"]
    # a worker restarted from epoch 1 reports epochs 1 and 2 again: the newer values stand
    for epoch, top1 in ((1, 5.0), (2, 6.0), (1, 5.5), (2, 6.5), (3, 7.0), (3, 7.0)):
        searcher.on_trial_result("t1", {"epoch": epoch, "top1": top1})
    searcher.on_trial_result("t1", {"epoch": 4, "top1": float("nan")})  # diverged: a gap, not a NaN point
    searcher.on_trial_result("t1", {"epoch": 5, "top1": "n/a"})  # not a number: no intermediate value
    searcher.on_trial_result("t1", {"epoch": 6})  # no first objective in the report
    frozen = searcher.storage.get_trial(run.trial_id)
    assert frozen.intermediate_values == {1: 5.5, 2: 6.5, 3: 7.0}
    assert frozen.user_attrs["epochs_done"] == 6 and len(frozen.user_attrs["curve"]) == 8


def test_a_tracker_that_cannot_write_stops_the_run_before_anything_is_stored(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    study = study_from_dict(_spec(tmp_path, trackers={"tensorboard": str(blocker / "tb")}), check=False)
    with pytest.raises(ConfigError, match=r"^<spec>: trackers\.tensorboard: cannot log to .*not-a-dir") as err:
        run_study(study, trial_fn=synthetic_trial, progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "study.db").exists()


def test_a_missing_extra_is_one_line_naming_it(tmp_path, monkeypatch):
    for name in ("mlflow", "mlflow.tracking", "tensorboardX"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    study = study_from_dict(_spec(tmp_path, trackers={"mlflow": str(tmp_path / "m")}), check=False)
    with pytest.raises(ConfigError, match=r"trackers\.mlflow: mlflow logging needs the trackers extra .*"
                                          r"pip install 'ablate\[trackers\]'"):
        Trackers.open(study)
    with pytest.raises(ConfigError, match=r"^--tensorboard: tensorboard logging needs the trackers extra"):
        Trackers.open(study, TrackersSpec(tensorboard=str(tmp_path / "tb")), flags=("tensorboard",))


class _Broken:
    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def epoch(self, number, point):
        self.calls += 1
        raise OSError("No space left on device")

    def finish(self, frozen):
        self.calls += 1

    def close(self):
        pass


def test_a_tracker_failing_mid_study_warns_once_and_stops():
    broken, lines = _Broken(), []
    trackers = Trackers([broken], warn=lines.append)
    trackers.epoch(0, {"epoch": 1, "top1": 1.0})
    trackers.epoch(0, {"epoch": 2, "top1": 2.0})
    trackers.finish(optuna.trial.create_trial(state=TrialState.FAIL))
    assert broken.calls == 1 and not trackers
    assert lines == ["warning: the broken tracker stopped (trial 0 epoch 1: No space left on device); the study goes "
                     "on, its storage keeps every trial"]


def test_no_trackers_means_nothing_is_written(tmp_path):
    study = study_from_dict(_spec(tmp_path), check=False)
    trackers = Trackers.open(study)
    assert not trackers
    trackers.epoch(0, {"epoch": 1})
    trackers.close()
    assert list(tmp_path.iterdir()) == []


def test_a_cost_first_objective_leaves_the_curve_to_the_first_training_one(tmp_path):
    study = study_from_dict(_spec(tmp_path, grid={"window_size": [2]}, objectives=[
        {"name": "gflops", "direction": "minimize"}, {"name": "top1", "direction": "maximize"}]), check=False)
    searcher = StudySearcher(study, open_optuna_study(study), budget=1)
    searcher.suggest("t1")
    run = searcher.live["t1"]
    for epoch in (1, 2):
        searcher.on_trial_result("t1", {"epoch": epoch, "top1": 10.0 * epoch, "gflops": 0.5})
    assert searcher.storage.get_trial(run.trial_id).intermediate_values == {1: 10.0, 2: 20.0}


def test_a_deleted_mlflow_experiment_is_refused_and_a_live_one_is_shared(tmp_path):
    pytest.importorskip("mlflow", reason="the trackers extra is not installed")
    study = study_from_dict(_spec(tmp_path, trackers={"mlflow": str(tmp_path / "m")}), check=False)
    first, second = Trackers.open(study), Trackers.open(study)  # a second driver of the same study
    assert first.loggers[0].experiment_id == second.loggers[0].experiment_id
    first.loggers[0].client.delete_experiment(first.loggers[0].experiment_id)
    with pytest.raises(ConfigError, match=r"trackers\.mlflow: the MLflow experiment 'recording' is deleted"):
        Trackers.open(study)
