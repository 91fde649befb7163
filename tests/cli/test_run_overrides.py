"""`ablate run STUDY key=value ...` and `ablate validate STUDY key=value`: the overrides reach the
study that runs, are echoed (passwords masked), and a bad one is one line, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_helpers import run_cli

GOOD = """\
name: cli-ov
space: {fixed: {attention: focal}}
fixed: {depths: [1, 1], embed_dim: 16, num_heads: 2, focal_level: 1, expand_size: 1}
grid: {window_size: [2, 4]}
objectives: [{name: top1, direction: maximize}, {name: gflops, direction: minimize}]
data: {name: digits, image_size: 16}
train: {epochs: 3, batch_size: 128}
proxy: {epochs: 2}
storage: sqlite:///STORE
"""


@pytest.fixture
def study(tmp_path: Path) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(GOOD.replace("STORE", str(tmp_path / "out.db")))
    return path


@pytest.fixture
def ran(monkeypatch):
    import ablate.run
    from ablate.run import RunSummary

    seen = {}

    def fake(study, **kw):
        seen["study"] = study
        return RunSummary(study=study.name, storage=kw["storage"] or study.storage, new_trials=[],
                          states={"COMPLETE": 0})

    monkeypatch.setattr(ablate.run, "run_study", fake)
    return seen


def test_overrides_reach_the_run_and_are_echoed(study, ran, capsys):
    url = "postgresql://ablate:s3cret-pw@127.0.0.1:5432/studies"
    code, out, err = run_cli(capsys, "run", str(study), "train.epochs=1", "grid.window_size=[4]",
                             f"storage={url}", "-q")
    assert code == 0, err
    assert out.splitlines()[0] == "overrides: train.epochs=1 grid.window_size=[4] " \
                                  "storage=postgresql://ablate:***@127.0.0.1:5432/studies"
    assert "s3cret-pw" not in out + err
    s = ran["study"]
    assert s.train.epochs == 1 and dict(s.grid) == {"window_size": (4,)} and s.storage == url
    assert "--study cli-ov" in out  # `next:` names the study the overrides ran


@pytest.mark.parametrize("args,expect", [
    (["train.epochs=abc"], "override train.epochs=abc: train.epochs: must be an integer"),
    (["train.epoch=1"], "did you mean 'epochs'"),
    (["epochs"], "no '='"),
    (["grid.window_size=[2, 0]"], "override grid.window_size=[2, 0]"),
])
def test_a_bad_override_is_one_line_and_writes_nothing(study, ran, capsys, args, expect):
    code, out, err = run_cli(capsys, "run", str(study), *args)
    assert code == 2 and expect in err and len(err.strip().splitlines()) == 1, err
    assert "study" not in ran and not (study.parent / "out.db").exists()


def test_a_bad_progress_interval_is_refused_before_anything_is_written(study, ran, capsys, monkeypatch):
    monkeypatch.setenv("ABLATE_PROGRESS_INTERVAL", "soon")
    code, _, err = run_cli(capsys, "run", str(study))
    assert code == 2 and "ABLATE_PROGRESS_INTERVAL='soon'" in err and "study" not in ran


def test_validate_takes_overrides(study, capsys):
    code, out, err = run_cli(capsys, "validate", str(study), "train.epochs=1", "--scale", "paper")
    assert code == 0, err
    assert "with train.epochs=1" in out
    code, out, err = run_cli(capsys, "validate", str(study), "train.epochs=0")
    assert code == 2 and "override train.epochs=0: train.epochs" in err
    code, out, err = run_cli(capsys, "validate", "train.epochs=1")
    assert code == 2 and "no study file" in err
