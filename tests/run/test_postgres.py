"""PostgreSQL as a study's storage: one driver over a real server (tests/conftest.py::postgres_url,
whose URL carries a password), then ``ablate show`` reading it back without printing the password.
Many drivers on one PostgreSQL study: tests/run/test_many_drivers.py."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile

import optuna
import pytest
from optuna.trial import TrialState

import drivers
from cli_helpers import run_cli


@pytest.fixture
def short_ray_tmp(monkeypatch):
    """Ray's session folders in a short folder of this test's own (AF_UNIX paths), so that no
    `ray start` cluster elsewhere on the machine is joined."""
    path = tempfile.mkdtemp(prefix="abl-", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_one_driver_runs_a_grid_on_postgres_and_show_hides_the_password(postgres_server, postgres_url,
                                                                       short_ray_tmp, capsys):
    from ray import cloudpickle  # Ray's vendored copy: Ray workers cannot import tests/

    from ablate.run import run_study
    from ablate.study import study_from_dict

    cloudpickle.register_pickle_by_value(sys.modules[drivers.__name__])
    assert postgres_server.password in postgres_url
    spec = {
        "name": "postgres-smoke",
        "task": "classify",
        "fixed": {"attention": "softmax", "depths": [1, 1], "embed_dim": 16, "num_heads": 2},
        "grid": {"window_size": [2, 4, 8]},
        "objectives": [{"name": "top1", "direction": "maximize"}, {"name": "gflops", "direction": "minimize"}],
        "data": {"name": "digits", "image_size": 32},
        "train": {"epochs": 2, "batch_size": 64},
        "resources": {"cpu": 1, "gpu": 0},
        "storage": postgres_url,
    }
    study = study_from_dict(spec, check=False)
    summary = run_study(study, storage=postgres_url, trial_fn=drivers.synthetic_trial, progress=False, num_cpus=1)
    trials = optuna.load_study(study_name=study.name, storage=postgres_url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3, [(t.state, t.user_attrs.get("error")) for t in trials]
    assert sorted(t.params["window_size"] for t in trials) == [2, 4, 8]
    assert len({t.user_attrs["config_key"] for t in trials}) == 3
    assert all(t.user_attrs["epochs_done"] == 2 and len(t.user_attrs["curve"]) == 2 for t in trials)
    assert len(summary.new_trials) == 3
    capsys.readouterr()

    code, out, err = run_cli(capsys, "show", postgres_url, "--format", "json")
    assert code == 0, err
    assert postgres_server.password not in out + err
    shown = json.loads(out)
    assert shown["study"] == "postgres-smoke"
    assert shown["storage"].startswith("postgresql") and "***" in shown["storage"]
    assert sorted(t["state"] for t in shown["trials"]) == ["COMPLETE"] * 3
    assert len(shown["configs"]) == 3 and shown["pareto"]

    code, out, err = run_cli(capsys, "show", postgres_url)  # the table names the storage too
    assert code == 0, err
    assert postgres_server.password not in out + err
