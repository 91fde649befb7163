"""The runner through a real local Ray: grid, ASHA → PRUNED, failures, resume.

Trials here are synthetic (they report made-up epochs at once) so that the runner's
bookkeeping is tested in seconds; tests/run/test_end_to_end.py trains real models.
"""

from __future__ import annotations

import threading

import optuna
import pytest
from optuna.trial import TrialState

from ablate.study import study_from_dict
from ablate.study.schema import _SAMPLERS
from ablate.results import load_results
from ablate.run import INTERRUPTED, open_optuna_study, run_study



def test_local_ray_is_loopback_only_without_dashboard_or_usage_stats(ray_local):
    import os

    import psutil
    import ray

    assert ray.util.get_node_ip_address() == "127.0.0.1"
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    family = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
    names = {psutil.Process(pid).name() for pid in family if psutil.pid_exists(pid)}
    assert not any("dashboard" in n for n in names), names
    listening = [c.laddr.ip for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in family]
    assert listening and all(ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1") for ip in listening), listening


def _spec(tmp_path, **over) -> dict:
    spec = {
        "name": "runner-test",
        "task": "classify",
        "fixed": {"attention": "softmax", "depths": [1, 1], "embed_dim": 16, "num_heads": 2},
        "grid": {"window_size": [2, 4, 8]},
        "objectives": [{"name": "top1", "direction": "maximize"}, {"name": "gflops", "direction": "minimize"}],
        "data": {"name": "digits", "image_size": 32},
        "train": {"epochs": 3, "batch_size": 64},
        "resources": {"cpu": 1, "gpu": 0},
        "storage": f"sqlite:///{tmp_path / 'study.db'}",
    }
    spec.update(over)
    return spec


def synthetic_trial(study, params, report, *, device="cpu", repeat=0, candidate=None):
    """Accuracy grows with the window, cost too; a window of 3 fails like a broken model."""
    w = study.candidate(params)["window_size"]
    if w == 3:
        raise RuntimeError("boom: synthetic failure")
    last = {}
    for epoch in range(1, study.train.epochs + 1):
        last = {"epoch": epoch, "top1": 10.0 * w + epoch, "train_loss": 1.0 / epoch, "gflops": 0.01 * w,
                "params_m": 0.1, "epochs_done": epoch}
        report(last)
    return last


def _run(spec, **kw):
    study = study_from_dict(spec, check=False)
    return study, run_study(study, trial_fn=synthetic_trial, progress=False, **kw)


def _trials(study):
    return optuna.load_study(study_name=study.name, storage=study.storage).get_trials()


def test_grid_runs_every_cell_once_and_resumes_without_repeats(tmp_path, ray_local):
    study, summary = _run(_spec(tmp_path))
    trials = _trials(study)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert sorted(t.user_attrs["candidate"]["window_size"] for t in trials) == [2, 4, 8]
    for t in trials:
        w = t.user_attrs["candidate"]["window_size"]
        assert t.values == [10.0 * w + 3, 0.01 * w]
        assert [p["epoch"] for p in t.user_attrs["curve"]] == [1, 2, 3]
        assert t.user_attrs["epochs_done"] == 3
        assert t.user_attrs["gflops"] == pytest.approx(0.01 * w)
        assert t.user_attrs["wall_s"] >= 0
    assert len(summary.new_trials) == 3
    _, again = _run(_spec(tmp_path))
    assert again.new_trials == [] and len(_trials(study)) == 3
    # a larger grid later: only the new cell trains
    _, more = _run(_spec(tmp_path, grid={"window_size": [2, 4, 8, 16]}))
    assert len(more.new_trials) == 1
    assert sorted(t.user_attrs["candidate"]["window_size"] for t in _trials(study)) == [2, 4, 8, 16]
    res = load_results(study.storage)
    assert res.pareto == sorted(res.pareto) and res.pareto  # every cell trades accuracy for cost


def test_asha_stopped_trials_are_pruned_not_complete(tmp_path, ray_local):
    spec = _spec(tmp_path, grid={"window_size": [8, 4, 2, 1]}, train={"epochs": 4, "batch_size": 64},
                 scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2}, max_concurrent=1)
    study, _ = _run(spec)
    trials = {t.user_attrs["candidate"]["window_size"]: t for t in _trials(study)}
    assert trials[8].state == TrialState.COMPLETE
    pruned = [t for t in trials.values() if t.state == TrialState.PRUNED]
    assert pruned, "ASHA should stop the weaker, later trials"
    for t in pruned:
        assert t.values is None and t.user_attrs["epochs_done"] < 4
        assert len(t.user_attrs["curve"]) == t.user_attrs["epochs_done"]
    res = load_results(study.storage)
    assert not set(res.pareto) & {t.number for t in pruned}


def test_failing_trial_is_recorded_and_the_study_goes_on(tmp_path, ray_local):
    study, _ = _run(_spec(tmp_path, grid={"window_size": [2, 3, 4]}))
    by_w = {t.user_attrs["candidate"]["window_size"]: t for t in _trials(study)}
    assert by_w[3].state == TrialState.FAIL
    assert "boom: synthetic failure" in by_w[3].user_attrs["error"]
    assert by_w[2].state == by_w[4].state == TrialState.COMPLETE
    # a deterministic failure is not retried on resume
    _, again = _run(_spec(tmp_path, grid={"window_size": [2, 3, 4]}))
    assert again.new_trials == []


def test_trials_left_running_by_a_killed_run_are_closed_and_rerun(tmp_path, ray_local):
    spec = _spec(tmp_path)
    study = study_from_dict(spec, check=False)
    ostudy = open_optuna_study(study)
    ghost = ostudy.ask()  # what a killed driver leaves behind
    ghost.suggest_int("window_size", 2, 2)
    ghost.set_user_attr("candidate", study.candidate({"window_size": 2}))
    _, summary = _run(spec)
    trials = _trials(study)
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["error"] == INTERRUPTED
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["candidate"]["window_size"] for t in done) == [2, 4, 8]
    assert "closed 1 interrupted" in summary.message


def test_changed_training_budget_is_refused(tmp_path, ray_local):
    _run(_spec(tmp_path, grid={"window_size": [2]}))
    from ablate.errors import ConfigError

    with pytest.raises(ConfigError, match="train"):
        _run(_spec(tmp_path, grid={"window_size": [2]}, train={"epochs": 5, "batch_size": 64}))


@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2"])
def test_sampled_study_never_trains_a_configuration_twice(tmp_path, ray_local, sampler):
    spec = _spec(tmp_path, grid={}, space={"fixed": {"attention": "softmax"},
                                           "params": {"window_size": {"choice": [2, 4]}}},
                 sampler={"name": sampler, "seed": 1}, trials=4)
    spec.pop("grid")
    study, summary = _run(spec)
    trained = [t for t in _trials(study) if not t.user_attrs.get("skipped")]
    assert sorted(t.user_attrs["candidate"]["window_size"] for t in trained) == [2, 4]
    assert all(t.state == TrialState.COMPLETE for t in trained)
    assert "exhausted" in summary.message
    res = load_results(study.storage)
    assert len(res.trials) == 2  # skipped proposals are not shown as trials


@pytest.mark.parametrize("sampler", _SAMPLERS)
def test_every_sampler_runs_a_four_trial_study_through_ray_tune(tmp_path, ray_local, sampler):
    """Each sampler ablate accepts, through the real ``tune.Tuner`` (which pickles the search
    algorithm: optuna 5.1's NSGA-II sampler holds a thread lock)."""
    if sampler == "grid":
        spec = _spec(tmp_path, grid={"window_size": [1, 2, 4, 8]})
    else:
        spec = _spec(tmp_path, space={"fixed": {"attention": "softmax"},
                                      "params": {"window_size": {"choice": [1, 2, 4, 8]},
                                                 "lr": {"float": [1.0e-3, 1.0e-2], "log": True}}},
                     sampler={"name": sampler, "seed": 3}, trials=4)
        spec.pop("grid")
    study, summary = _run(spec)
    trials = [t for t in _trials(study) if not t.user_attrs.get("skipped")]
    assert len(trials) == 4 and len(summary.new_trials) == 4
    assert all(t.state == TrialState.COMPLETE for t in trials), [(t.state, t.user_attrs.get("error")) for t in trials]


def test_nsga2_population_size_lets_a_small_budget_evolve(tmp_path, ray_local):
    from ablate.run.optuna_study import make_sampler as _make_sampler

    spec = _spec(tmp_path, space={"fixed": {"attention": "softmax"},
                                  "params": {"window_size": {"choice": [1, 2, 4, 8]},
                                             "lr": {"float": [1.0e-3, 1.0e-2], "log": True}}},
                 sampler={"name": "nsga2", "seed": 0, "population_size": 2}, trials=6, max_concurrent=1)
    spec.pop("grid")
    study, _ = _run(spec)
    sampler = _make_sampler(study)
    assert sampler.population_size == 2
    ostudy = optuna.load_study(study_name=study.name, storage=study.storage, sampler=sampler)
    generations = [sampler.get_trial_generation(ostudy, t) for t in ostudy.get_trials()]
    assert max(generations) >= 2, generations  # the default population of 50 would still be in generation 0


class _LockedSampler(optuna.samplers.RandomSampler):
    """A sampler holding what must never be pickled (as optuna 5.1's NSGA-II does)."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.lock = threading.Lock()


def test_what_ray_holds_pickles_to_a_handle_without_live_state(tmp_path):
    from ray import cloudpickle

    from ablate.run.ray_tune import ray_searcher as _ray_searcher
    from ablate.run.searcher import StudySearcher

    study = study_from_dict(_spec(tmp_path), check=False)
    ostudy = open_optuna_study(study)
    ostudy.sampler = _LockedSampler()
    with pytest.raises(TypeError, match="lock"):
        cloudpickle.dumps(ostudy.sampler)  # the hazard is real
    forward = _ray_searcher(StudySearcher(study, ostudy, budget=3))
    blob = cloudpickle.dumps(forward)
    assert b"sqlite" not in blob and b"Lock" not in blob and b"optuna" not in blob
    copy = cloudpickle.loads(blob)
    assert copy.study_name == "runner-test"
    with pytest.raises(RuntimeError, match="lives in the driver"):
        copy.suggest("t1")
    assert forward.suggest("t1")["params"] == {"window_size": 2}  # the original still works


def test_infeasible_samples_are_recorded_without_training(tmp_path, ray_local):
    spec = _spec(tmp_path, space={"fixed": {"attention": "softmax"},
                                  "params": {"num_heads": {"choice": [2, 3]}}},
                 sampler={"name": "random", "seed": 0}, trials=2)
    spec.pop("grid")
    spec["fixed"] = {k: v for k, v in spec["fixed"].items() if k != "num_heads"}
    spec["fixed"]["window_size"] = 2
    study, summary = _run(spec)
    trials = _trials(study)
    infeasible = [t for t in trials if t.user_attrs.get("skipped") == "infeasible"]
    assert infeasible and all("divide" in t.user_attrs["error"] for t in infeasible)
    assert all(t.params["num_heads"] == 3 for t in infeasible)
    assert [t.params["num_heads"] for t in trials if t.state == TrialState.COMPLETE] == [2]


def test_grid_cells_differing_only_in_a_training_key_all_train(tmp_path, ray_local):
    study, summary = _run(_spec(tmp_path, grid={"window_size": [2], "lr": [1.0e-3, 2.0e-3]}))
    trials = _trials(study)
    assert len(summary.new_trials) == 2
    assert sorted(t.user_attrs["train"]["lr"] for t in trials) == [1.0e-3, 2.0e-3]
    _, again = _run(_spec(tmp_path, grid={"window_size": [2], "lr": [1.0e-3, 2.0e-3]}))
    assert again.new_trials == []


def test_repeats_train_each_configuration_with_consecutive_seeds_once(tmp_path, ray_local):
    study, summary = _run(_spec(tmp_path, repeats=2, train={"epochs": 2, "batch_size": 64, "seed": 5}))
    trials = _trials(study)
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    runs = sorted((t.user_attrs["candidate"]["window_size"], t.user_attrs["repeat"], t.user_attrs["seed"])
                  for t in trials)
    assert runs == [(w, r, 5 + r) for w in (2, 4, 8) for r in (0, 1)]
    assert [t.user_attrs["repeat"] for t in trials] == [0, 0, 0, 1, 1, 1]  # every cell at repeat 0 first
    keys = {}
    for t in trials:
        keys.setdefault(t.user_attrs["candidate"]["window_size"], set()).add(t.user_attrs["config_key"])
        assert t.user_attrs["train"]["seed"] == t.user_attrs["seed"]
    assert all(len(k) == 1 for k in keys.values()) and len(set.union(*keys.values())) == 3
    # resume: nothing; more repeats later: only the new seeds
    _, again = _run(_spec(tmp_path, repeats=2, train={"epochs": 2, "batch_size": 64, "seed": 5}))
    assert again.new_trials == []
    _, more = _run(_spec(tmp_path, repeats=3, train={"epochs": 2, "batch_size": 64, "seed": 5}))
    new = [t for t in _trials(study) if t.number in more.new_trials]
    assert sorted((t.user_attrs["candidate"]["window_size"], t.user_attrs["seed"]) for t in new) == \
        [(2, 7), (4, 7), (8, 7)]


def test_sampled_study_counts_configurations_and_extends_their_repeats(tmp_path, ray_local):
    spec = _spec(tmp_path, space={"fixed": {"attention": "softmax"},
                                  "params": {"window_size": {"choice": [1, 2, 4, 8]},
                                             "lr": {"float": [1.0e-3, 1.0e-2], "log": True}}},
                 sampler={"name": "tpe", "seed": 0}, trials=2, repeats=2)
    spec.pop("grid")
    study, summary = _run(spec)
    trained = [t for t in _trials(study) if not t.user_attrs.get("skipped")]
    assert len(trained) == 4
    by_key: dict[str, list] = {}
    for t in trained:
        by_key.setdefault(t.user_attrs["config_key"], []).append(t)
    assert len(by_key) == 2
    for runs in by_key.values():
        assert sorted(t.user_attrs["repeat"] for t in runs) == [0, 1]
        assert runs[0].params == runs[1].params  # the sampler sees each repeat with the same params
    _, more = _run({**spec, "repeats": 3})
    new = [t for t in _trials(study) if t.number in more.new_trials]
    assert len(new) == 2 and {t.user_attrs["config_key"] for t in new} == set(by_key)
    assert all(t.user_attrs["repeat"] == 2 for t in new)


def test_a_database_from_before_repeats_and_recipes_resumes_without_retraining(tmp_path, ray_local):
    """Trials stored without config_key/repeat, with the training keys of the time, and a
    spec whose train section has no recipe keys: the cell is not trained again."""
    from optuna.distributions import IntDistribution
    from optuna.trial import create_trial

    spec = _spec(tmp_path, grid={"window_size": [2, 4]})
    study = study_from_dict(spec, check=False)
    ostudy = open_optuna_study(study)
    old_train = {"epochs": 3, "batch_size": 64, "lr": 1.0e-3, "weight_decay": 0.05, "warmup_epochs": 0,
                 "seed": 0, "amp": False, "label_smoothing": 0.0}
    old_spec = dict(ostudy.user_attrs["spec"], train=old_train)
    old_spec.pop("repeats"), old_spec.pop("baseline")
    ostudy.set_user_attr("spec", old_spec)
    ostudy.add_trial(create_trial(state=TrialState.COMPLETE, values=[23.0, 0.02], params={"window_size": 2},
                                  distributions={"window_size": IntDistribution(2, 2)},
                                  user_attrs={"candidate": study.candidate({"window_size": 2}), "train": old_train,
                                              "seed": 0}))
    _, summary = _run(spec)
    trials = _trials(study)
    assert len(summary.new_trials) == 1
    assert sorted(t.user_attrs["candidate"]["window_size"] for t in trials) == [2, 4]


def test_a_changed_recipe_is_refused_on_resume(tmp_path, ray_local):
    from ablate.errors import ConfigError

    _run(_spec(tmp_path, grid={"window_size": [2]}))
    with pytest.raises(ConfigError, match="train"):
        _run(_spec(tmp_path, grid={"window_size": [2]}, train={"epochs": 3, "batch_size": 64, "mixup": 0.2}))
