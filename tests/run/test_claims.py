"""Claims in the storage (many drivers, one study), liveness, retries, exhausted spaces and
the stored spec as the truth. Two-process drivers over SQLite and PostgreSQL are in
tests/run/test_many_drivers.py; these are the mechanics, in one process where possible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ablate.errors import ConfigError
from ablate.run import open_optuna_study, run_study
from ablate.run.claims import DEAD, INTERRUPTED_DETAIL, Claims
from ablate.run.searcher import WORKER_DIED
from ablate.study import study_from_dict


def _spec(tmp_path, **over) -> dict:
    spec = {
        "name": "claims-test",
        "task": "classify",
        "fixed": {"attention": "softmax", "depths": [1, 1], "embed_dim": 16, "num_heads": 2},
        "grid": {"window_size": [2, 4, 8]},
        "objectives": [{"name": "top1", "direction": "maximize"}, {"name": "gflops", "direction": "minimize"}],
        "data": {"name": "digits", "image_size": 32},
        "train": {"epochs": 2, "batch_size": 64},
        "resources": {"cpu": 1, "gpu": 0},
        "storage": f"sqlite:///{tmp_path / 'study.db'}",
    }
    spec.update(over)
    return spec


def _trials(study):
    return optuna.load_study(study_name=study.name, storage=study.storage).get_trials()


# --------------------------------------------------------------------------- the claims table


def test_one_driver_wins_a_claim_and_a_dead_one_is_retried_up_to_max_retries(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    a, b = Claims(url, "s", owner="a"), Claims(url, "s", owner="b")
    assert a.claim("k", 0, max_retries=1) == 0
    assert b.claim("k", 0, max_retries=1) is None  # held by a
    a.update("k", 0, 0, trial_number=7)
    assert b.live_trials(grace_s=60) == {7} and b.reap(grace_s=60) == []  # fresh: never touched
    time.sleep(0.05)
    reaped = b.reap(grace_s=0.01)
    assert [(c.key, c.owner) for c in reaped] == [("k", "a")] and b.reap(grace_s=0.01) == []  # reaped once
    assert b.claim("k", 0, max_retries=1) == 1  # the retry
    b.update("k", 0, 1, state=DEAD)
    assert a.claim("k", 0, max_retries=1) is None  # two deaths: retries used up
    # An interrupted run (Ctrl-C) is resumed, not counted as a failed attempt.
    assert a.claim("i", 0, max_retries=0) == 0
    a.update("i", 0, 0, state=DEAD, detail=INTERRUPTED_DETAIL)
    assert b.claim("i", 0, max_retries=0) == 1


def test_claims_from_many_processes_are_exclusive(tmp_path):
    """Four processes race for the same 30 runs: each is claimed by exactly one."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    Claims(url, "s").close()  # the table exists before the race
    code = ("import json, sys; from ablate.run.claims import Claims; c = Claims(sys.argv[1], 's'); "
            "print(json.dumps([k for k in range(30) if c.claim(str(k), 0, max_retries=1) is not None]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    won = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    flat = sorted(k for w in won for k in w)
    assert flat == list(range(30)), won


# --------------------------------------------------------------------------- the stored spec


def test_the_stored_spec_is_the_truth(tmp_path):
    study = study_from_dict(_spec(tmp_path), check=False)
    open_optuna_study(study)
    changed = study_from_dict(_spec(tmp_path, fixed={**_spec(tmp_path)["fixed"], "embed_dim": 32},
                                    train={"epochs": 5, "batch_size": 64}), check=False)
    with pytest.raises(ConfigError, match=r"fixed, train.epochs differ from the study stored in"):
        open_optuna_study(changed)
    stored = optuna.load_study(study_name=study.name, storage=study.storage).user_attrs["spec"]
    assert stored["fixed"]["embed_dim"] == 16  # never overwritten
    # Budget keys may differ; a grid may grow (and the stored grid grows with it), not shrink.
    open_optuna_study(study_from_dict(_spec(tmp_path, trials=2, repeats=3, max_concurrent=1), check=False))
    open_optuna_study(study_from_dict(_spec(tmp_path, grid={"window_size": [2, 4, 8, 16]}), check=False))
    stored = optuna.load_study(study_name=study.name, storage=study.storage).user_attrs["spec"]
    assert stored["grid"] == {"window_size": [2, 4, 8, 16]} and stored["repeats"] == 1
    with pytest.raises(ConfigError, match=r"grid differ"):
        open_optuna_study(study_from_dict(_spec(tmp_path, grid={"window_size": [2]}), check=False))


def test_an_unseeded_sampler(tmp_path):
    spec = _spec(tmp_path, grid={}, sampler={"name": "random", "seed": None}, trials=2,
                 space={"params": {"window_size": {"choice": [2, 4, 8]}}})
    spec.pop("grid")
    from ablate.run.optuna_study import make_sampler

    study = study_from_dict(spec, check=False)
    assert study.sampler.seed is None
    firsts = set()
    for _ in range(8):
        s = optuna.create_study(sampler=make_sampler(study))
        firsts.add(s.ask().suggest_int("x", 0, 10**9))
    assert len(firsts) > 1


# --------------------------------------------------------------------------- runs through Ray


def synthetic_trial(study, params, report, *, device="cpu", repeat=0, candidate=None):
    w = study.candidate(params)["window_size"]
    marker = Path(study.storage.removeprefix("sqlite:///")).with_name(f"died-{w}")
    if w == 4 and not marker.exists():  # the first attempt's process is killed, as by the OOM killer
        import signal

        marker.write_text("x")
        os.kill(os.getpid(), signal.SIGKILL)
    if w == 8:
        raise RuntimeError("boom: its own error")  # never retried
    for epoch in range(1, study.train.epochs + 1):
        report({"epoch": epoch, "top1": 10.0 * w + epoch, "gflops": 0.01 * w, "params_m": 0.1, "epochs_done": epoch})


def test_a_dead_worker_is_retried_and_an_own_error_is_not(tmp_path, ray_local):
    study = study_from_dict(_spec(tmp_path), check=False)
    summary = run_study(study, trial_fn=synthetic_trial, progress=False, max_retries=1)
    by_w: dict[int, list] = {}
    for t in _trials(study):
        by_w.setdefault(t.user_attrs["candidate"]["window_size"], []).append(t)
    assert [t.state for t in by_w[2]] == [TrialState.COMPLETE]
    died, retried = sorted(by_w[4], key=lambda t: t.number)
    assert died.state == TrialState.FAIL and died.user_attrs["error"].startswith(WORKER_DIED)
    assert "attempt 1 of 2; re-queued" in died.user_attrs["error"]
    assert retried.state == TrialState.COMPLETE and retried.user_attrs["attempt"] == 1
    assert [t.state for t in by_w[8]] == [TrialState.FAIL] and "boom" in by_w[8][0].user_attrs["error"]
    assert summary.states == {"COMPLETE": 2, "FAIL": 2}
    again = run_study(study, trial_fn=synthetic_trial, progress=False)
    assert "nothing to do" in again.message


def test_an_exhausted_space_stops_without_junk_rows(tmp_path, ray_local):
    spec = _spec(tmp_path, sampler={"name": "tpe", "seed": 0}, trials=10,
                 space={"params": {"window_size": {"choice": [1, 2, 3]}}})
    spec.pop("grid")
    study = study_from_dict(spec, check=False)

    def trial(study, params, report, **kw):
        report({"epoch": 1, "top1": 1.0, "gflops": 0.1, "params_m": 0.1, "epochs_done": 1})
        report({"epoch": 2, "top1": 2.0, "gflops": 0.1, "params_m": 0.1, "epochs_done": 2})

    summary = run_study(study, trial_fn=trial, progress=False)
    trials = _trials(study)
    assert "space exhausted: 3 distinct configurations" in summary.message
    assert len(trials) == 3 and {t.state for t in trials} == {TrialState.COMPLETE}
    assert [t.number for t in trials] == [0, 1, 2]  # no gaps


def test_a_storage_password_is_never_stored_nor_sent_to_workers(tmp_path):
    from ablate.run.searcher import StudySearcher
    from ablate.storage import open_storage

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = study_from_dict(_spec(tmp_path, storage="postgresql://ablate:s3cret-pw@db-host/studies"), check=False)
    storage = open_storage(url, create=True)
    ostudy = open_optuna_study(study, url, storage=storage)
    stored = optuna.load_study(study_name=study.name, storage=url).user_attrs["spec"]
    assert "s3cret" not in json.dumps(stored) and stored["storage"] == "postgresql://ablate:***@db-host/studies"
    searcher = StudySearcher(study, ostudy, 1, storage=storage, claims=Claims(url, study.name))
    config = searcher.suggest("t0")
    assert "s3cret" not in json.dumps(config, default=str)
    open_optuna_study(study, url, storage=storage)  # the masked stored spec still matches the study
