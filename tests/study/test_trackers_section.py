"""The ``trackers:`` section: paths made absolute against the working directory, URIs checked,
errors on one line with file, line and key, and no part in the stored spec."""

from __future__ import annotations

import os

import pytest

from ablate.errors import ConfigError
from ablate.run.optuna_study import stored_spec
from ablate.study import load_study, study_from_dict
from ablate.study.trackers import TrackersSpec, mlflow_uri, tracker_dir

STUDY = """\
name: tracked
fixed: {attention: softmax, depths: [1, 1], embed_dim: 16, num_heads: 2}
grid: {window_size: [2, 4]}
objectives: [top1]
data: {name: digits, image_size: 32}
"""


def _spec(**over) -> dict:
    spec = {"name": "tracked", "fixed": {"attention": "softmax", "depths": [1, 1], "embed_dim": 16, "num_heads": 2},
            "grid": {"window_size": [2, 4]}, "objectives": ["top1"], "data": {"name": "digits", "image_size": 32}}
    spec.update(over)
    return spec


def test_relative_paths_are_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "studies").mkdir()
    path = tmp_path / "studies" / "t.yaml"
    path.write_text(STUDY + "trackers: {mlflow: runs/mlflow, tensorboard: runs/tb}\n")
    monkeypatch.chdir(tmp_path)
    study = load_study("studies/t.yaml", check=False)
    assert study.trackers == TrackersSpec(mlflow=f"file:{tmp_path}/runs/mlflow", tensorboard=f"{tmp_path}/runs/tb")


@pytest.mark.parametrize(("raw", "uri"), [
    ("runs/m", "file:{cwd}/runs/m"),
    ("/abs/m", "file:/abs/m"),
    ("file:runs/m", "file:{cwd}/runs/m"),
    ("file:///abs/m", "file:/abs/m"),
    ("file://localhost/abs/m", "file:/abs/m"),
    ("sqlite:///runs/m.db", "sqlite:///{cwd}/runs/m.db"),
    ("sqlite:////abs/m.db", "sqlite:////abs/m.db"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
])
def test_mlflow_uris(raw, uri):
    assert mlflow_uri(raw) == uri.format(cwd=os.getcwd())


@pytest.mark.parametrize(("raw", "message"), [
    ("s3://bucket/x", "unsupported scheme 's3'"),
    ("databricks", None),  # a bare word is a directory named so
    ("file://otherhost/x", "names a host"),
    ("file:", "without a path"),
    ("file://", "without a path"),
    ("file:///", "without a path"),
    ("sqlite:///:memory:", "needs a database file"),
    ("sqlite:///", "needs a database file"),
    ("  ", "must not be empty"),
    ("runs/\nx", "control character"),
])
def test_mlflow_refusals(raw, message):
    if message is None:
        assert mlflow_uri(raw).startswith("file:/")
        return
    with pytest.raises(ValueError, match=message):
        mlflow_uri(raw)


def test_tensorboard_takes_a_directory_only():
    assert tracker_dir("runs/tb") == os.path.join(os.getcwd(), "runs", "tb")
    with pytest.raises(ValueError, match="must be a local directory"):
        tracker_dir("gs://bucket/tb")


@pytest.mark.parametrize(("section", "message"), [
    ("trackers: {mlflow: 3}", r"t\.yaml:6: trackers\.mlflow: must be a string, got int, allowed: a directory"),
    ("trackers: {wandb: x}", r"t\.yaml:6: trackers\.wandb: unknown key 'wandb', allowed: mlflow, tensorboard"),
    ("trackers: [runs/tb]", r"t\.yaml:6: trackers: must be a mapping"),
    ("trackers:\n  tensorboard: 'gs://b/tb'", r"t\.yaml:7: trackers\.tensorboard: must be a local directory"),
    ("trackers: {mlflow: 'ftp://x'}", r"t\.yaml:6: trackers\.mlflow: unsupported scheme 'ftp'"),
])
def test_errors_name_file_line_and_key(tmp_path, section, message):
    path = tmp_path / "t.yaml"
    path.write_text(STUDY + section + "\n")
    with pytest.raises(ConfigError, match=message) as err:
        load_study(path, check=False)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("section", ["trackers:", "trackers: {}", "trackers: {mlflow: null, tensorboard: null}"])
def test_empty_sections_are_off(tmp_path, section):
    path = tmp_path / "t.yaml"
    path.write_text(STUDY + section + "\n")
    assert load_study(path, check=False).trackers is None


def test_trackers_are_not_part_of_the_stored_spec(tmp_path):
    plain = study_from_dict(_spec(storage=f"sqlite:///{tmp_path}/x.db"), check=False)
    tracked = study_from_dict(_spec(storage=f"sqlite:///{tmp_path}/x.db", trackers={"tensorboard": "tb"}),
                              check=False)
    assert tracked.trackers is not None and tracked == plain  # adding a tracker never makes a study differ
    assert stored_spec(tracked) == stored_spec(plain) and "trackers" not in stored_spec(tracked)
