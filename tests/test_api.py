"""The Python API (`ablate.load_study`, `ablate.run_study`, `ablate.read_results`): the same calls
as the command line, reached lazily from `import ablate`, with the same one-line errors.
(The README's example, a real run through Ray, is run by tests/test_readme.py.)"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import ablate
from ablate.errors import ConfigError, StorageError
from ablate.testing.fake_study import write_fake_study

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "studies" / "window_size.yaml"


def test_import_ablate_stays_light_and_the_api_arrives_on_first_use():
    code = ("import sys, json, ablate\n"
            "before = {m: m in sys.modules for m in ('ablate.api', 'torch', 'pandas', 'optuna', 'ray')}\n"
            "f = ablate.load_study\n"
            "print(json.dumps({'before': before, 'after': 'ablate.api' in sys.modules, 'same': f is ablate.api.load_study,"
            " 'all': sorted(set(ablate.__all__) - set(dir(ablate)))}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.splitlines()[-1])
    assert got == {"before": dict.fromkeys(("ablate.api", "torch", "pandas", "optuna", "ray"), False),
                   "after": True, "same": True, "all": []}


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError, match="no attribute 'load_studyy'"):
        ablate.load_studyy  # noqa: B018
    assert not hasattr(ablate, "nothing_here")


def test_the_subpackages_keep_their_names():
    """`ablate.run` and `ablate.results` stay the packages (the API functions have other names)."""
    import ablate.results
    import ablate.run

    assert ablate.results.load_results and ablate.run.run_study and callable(ablate.run_study)
    assert ablate.run_study is not ablate.run.run_study


def test_load_study_is_the_check_validate_makes():
    from ablate.study import check_study

    assert ablate.load_study(DEMO) == check_study(DEMO)
    paper = ablate.load_study(DEMO, scale="paper")
    assert paper.scale == "paper" and paper.train.epochs == 300


@pytest.mark.parametrize("overrides", [["proxy.epochs=1", "proxy.repeats=2"], {"proxy.epochs": 1, "proxy.repeats": 2},
                                       ("proxy.epochs=1", "proxy.repeats=2")])
def test_overrides_as_strings_or_a_mapping(overrides):
    study = ablate.load_study(DEMO, overrides=overrides)
    assert study.train.epochs == 1 and study.repeats == 2


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"scale": "huge"}, r"scale: unknown scale 'huge', allowed: proxy, paper"),
    ({"overrides": "train.epochs=1"}, r"a list of 'key=value' strings or a mapping"),
    ({"overrides": [3]}, r"each override is a 'key=value' string, got 3"),
    ({"overrides": {"train.epochs": object()}}, r"overrides: train.epochs: a value must be"),
    ({"overrides": {"train.epochs": math.nan}}, r"overrides: train.epochs: a value must be"),
    ({"overrides": {"train.epoch": 1}}, r"train.epoch.*did you mean 'epochs'"),
    ({"overrides": {"train.epochs": "abc"}}, r"train.epochs"),
])
def test_bad_input_is_one_line(kwargs, match):
    with pytest.raises(ConfigError, match=match) as err:
        ablate.load_study(DEMO, **kwargs)
    assert "\n" not in str(err.value)


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(ablate.AblateError) as err:
        ablate.load_study(tmp_path / "nope.yaml")
    assert "\n" not in str(err.value) and "nope.yaml" in str(err.value)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"trials": -1}, "trials: a whole number >= 0"),
    ({"trials": True}, "trials: a whole number >= 0"),
    ({"repeats": 0}, "repeats: a whole number from 1 to 1000"),
    ({"repeats": 2.5}, "repeats: a whole number from 1 to 1000"),
    ({"device": "tpu"}, "device: unknown device 'tpu'"),
    ({"max_retries": -1}, "max_retries: a whole number from 0 to 100"),
    ({"heartbeat_grace_s": 1.0}, "heartbeat_grace_s: seconds from 5 to 86400"),
])
def test_run_refuses_bad_arguments_before_anything_starts(tmp_path, kwargs, match):
    url = f"sqlite:///{tmp_path / 'never.db'}"
    with pytest.raises(ConfigError, match=match):
        ablate.run_study(DEMO, storage=url, **kwargs)
    assert not (tmp_path / "never.db").exists()


def test_run_with_a_study_object_takes_no_overrides(tmp_path):
    study = ablate.load_study(DEMO)
    with pytest.raises(ConfigError, match="overrides and scale apply when a study file is loaded"):
        ablate.run_study(study, overrides=["train.epochs=1"], storage=f"sqlite:///{tmp_path / 'x.db'}")
    assert not (tmp_path / "x.db").exists()


def test_run_hands_every_option_to_the_driver(tmp_path, monkeypatch):
    """``run_study`` is ``ablate run``: each option reaches the driver (no Ray started here)."""
    import ablate.run.driver

    seen = {}
    monkeypatch.setattr(ablate.run.driver, "run_study", lambda study, **kw: seen.update(kw) or "summary")
    got = ablate.run_study(DEMO, storage=f"sqlite:///{tmp_path / 'x.db'}", trials=3, device="cpu", progress=False,
                           max_retries=2, heartbeat_grace_s=30.0, artifacts=tmp_path / "kept")
    assert got == "summary"
    assert seen == {"storage": f"sqlite:///{tmp_path / 'x.db'}", "trials": 3, "address": None, "device": "cpu",
                    "progress": False, "max_retries": 2, "heartbeat_grace_s": 30.0, "artifacts": tmp_path / "kept"}


@pytest.fixture(scope="module")
def fake_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("api") / "fake.db"
    write_fake_study(f"sqlite:///{db}", 30, name="fake")
    # The writer's engine may still hold the WAL; settle it now, so a checkpoint when that
    # engine is collected later is not mistaken for a reader's write.
    import gc
    import sqlite3

    gc.collect()
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return db


def test_read_results_gives_data_frames(fake_db):
    import pandas as pd

    from ablate.results import load_results

    res = ablate.read_results(fake_db)
    raw = load_results(f"sqlite:///{fake_db}")
    assert isinstance(res, ablate.Results) and res.name == "fake" and res.objectives == ["top1", "gflops"]
    assert isinstance(res.trials, pd.DataFrame) and len(res.trials) == 30
    assert {"number", "state", "value.top1", "param.attention", "config"} <= set(res.trials.columns)
    assert isinstance(res.configs, pd.DataFrame) and len(res.configs) == len(raw.configs)
    assert res.pareto == raw.pareto and res.to_json() == raw.to_json()
    for row, agg in zip(res.configs.to_dict("records"), raw.configs):
        assert row["config"] == agg["key"] and row["n"] == agg["n"] and row["trials"] == agg["trials"]
        assert row["param.attention"] == agg["params"]["attention"]
        assert row["mean.top1"] == pytest.approx(agg["mean"]["top1"])
        if agg["ci95"].get("top1"):
            assert (row["ci95_lo.top1"], row["ci95_hi.top1"]) == pytest.approx(tuple(agg["ci95"]["top1"]))
        else:
            assert math.isnan(row["ci95_lo.top1"]) and math.isnan(row["std.top1"])
        assert row["pareto"] == (agg["key"] in raw.pareto_configs)
    from ablate.results.report import render_report

    assert res.report("md") == render_report(raw, "md")  # what `ablate report` prints


def test_read_results_takes_a_url_and_names_a_study(fake_db):
    res = ablate.read_results(f"sqlite:///{fake_db}", study="fake")
    assert len(res.trials) == 30
    with pytest.raises(StorageError, match="no study 'other'"):
        ablate.read_results(fake_db, study="other")


def test_read_results_of_a_missing_database_is_one_line(tmp_path):
    with pytest.raises(StorageError, match="no such study database"):
        ablate.read_results(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


def test_read_results_never_writes(fake_db):
    before = fake_db.read_bytes()
    ablate.read_results(fake_db).report("html")
    assert fake_db.read_bytes() == before


def _packages() -> list[str]:
    root = Path(ROOT) / "ablate"
    return sorted(".".join(p.relative_to(root.parent).parts[:-1]) for p in root.rglob("__init__.py"))


@pytest.mark.parametrize("package", _packages())
def test_every_public_name_of_every_package_resolves(package: str):
    """A name in a package's ``__all__`` is importable from the package (lazy ones included)."""
    import importlib

    module = importlib.import_module(package)
    missing = [name for name in getattr(module, "__all__", ()) if not hasattr(module, name)]
    assert missing == []
