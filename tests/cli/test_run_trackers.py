"""`ablate run --mlflow DIR --tensorboard DIR`: the flags reach the driver as opened trackers, and a
tracker that cannot log is one `error:` line, exit 2, before anything is stored."""

from __future__ import annotations

import pytest

from tests.cli_helpers import run_cli

STUDY = """\
name: cli-trackers
fixed: {attention: softmax, depths: [1, 1], embed_dim: 16, num_heads: 2}
grid: {window_size: [2, 4]}
objectives: [top1]
data: {name: digits, image_size: 32}
train: {epochs: 1, batch_size: 64}
storage: sqlite:///runs/t.db
"""


@pytest.fixture()
def project(tmp_path, monkeypatch):
    (tmp_path / "study.yaml").write_text(STUDY + "trackers: {tensorboard: runs/tb-from-file}\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_flags_reach_the_driver_and_replace_the_files_setting(project, capsys, monkeypatch):
    pytest.importorskip("mlflow", reason="the trackers extra is not installed")
    import ablate.run
    from ablate.run import RunSummary

    seen = {}

    def fake_run_study(study, **kw):
        seen["study"], seen["trackers"] = study, kw["trackers"]
        return RunSummary(study=study.name, storage=study.storage)

    monkeypatch.setattr(ablate.run, "run_study", fake_run_study)
    code, out, err = run_cli(capsys, "run", "study.yaml", "--mlflow", "runs/mlflow", "--tensorboard", "runs/tb", "-q")
    assert code == 0, err
    assert seen["study"].trackers.mlflow == f"file:{project}/runs/mlflow"
    assert seen["study"].trackers.tensorboard == f"{project}/runs/tb"
    assert sorted(lg.name for lg in seen["trackers"].loggers) == ["mlflow", "tensorboard"]
    assert (project / "runs" / "tb" / "cli-trackers").is_dir() and not (project / "runs" / "tb-from-file").exists()
    seen["trackers"].close()


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--tensorboard", "blocker/tb", r"^error: --tensorboard: cannot log to .*blocker/tb: "),
    ("--mlflow", "s3://bucket/x", r"^error: --mlflow: unsupported scheme 's3', allowed: a directory"),
    ("--mlflow", "blocker/m", r"^error: --mlflow: cannot log to file:.*blocker/m: "),
])
def test_a_tracker_that_cannot_log_is_one_line_and_nothing_is_stored(project, capsys, flag, value, message):
    import re

    (project / "blocker").write_text("a file where a folder should be")
    code, out, err = run_cli(capsys, "run", "study.yaml", flag, value)
    assert code == 2, (out, err)
    assert re.match(message, err) and err.count("\n") == 1, err
    assert not (project / "runs" / "t.db").exists()
