"""`ablate run` as a user runs it: a real (tiny) focal study through Ray into SQLite.

Also: the study file's relative paths are resolved before Ray changes the trials' working
directories, running again adds nothing, and Ctrl-C leaves no RUNNING trial and no Ray
process behind.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil

ABLATE = str(Path(sys.executable).with_name("ablate"))

STUDY = """\
name: e2e
space: ../spaces/focal.yaml
fixed: {depths: [1, 1], embed_dim: 16, num_heads: 2, focal_level: 2, focal_window: 3, expand_size: 1}
grid: {window_size: [2, 4]}
objectives: [{name: top1, direction: maximize}, {name: gflops, direction: minimize}]
data: {name: digits, image_size: 16}
train: {epochs: EPOCHS, batch_size: 128, lr: 3.0e-3}
resources: {cpu: 1}
paper_resolution: 64
storage: sqlite:///runs/e2e.db
"""


def _project(tmp_path: Path, epochs: int) -> Path:
    (tmp_path / "spaces").mkdir()
    (tmp_path / "spaces" / "focal.yaml").write_text("fixed: {attention: focal}\nparams:\n"
                                                    "  window_size: {choice: [2, 4, 8]}\n")
    (tmp_path / "studies").mkdir()
    path = tmp_path / "studies" / "e2e.yaml"
    path.write_text(STUDY.replace("EPOCHS", str(epochs)))
    return path


def _ablate(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([ABLATE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def test_run_show_and_rerun(tmp_path):
    study = _project(tmp_path, epochs=2)
    # Run from the study's folder's parent with a relative path: `space:` is relative to the
    # file, `storage:` to the working directory; both must survive Ray's per-trial chdir.
    first = _ablate("run", "studies/e2e.yaml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "trial   0 COMPLETE" in first.stdout and "2 new trial(s)" in first.stdout
    # the run ends with the result per configuration, as `ablate show` prints it
    assert "1 seed: no error bars" in first.stdout and "configuration(s) with a COMPLETE run" in first.stdout
    db = tmp_path / "runs" / "e2e.db"
    assert db.exists()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    shown = _ablate("show", str(study), "--format", "json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    obj = json.loads(shown.stdout)
    assert obj["study"] == "e2e" and [o["name"] for o in obj["objectives"]] == ["top1", "gflops"]
    assert [t["state"] for t in obj["trials"]] == ["COMPLETE", "COMPLETE"]
    for t in obj["trials"]:
        assert 0 <= t["values"]["top1"] <= 100 and t["values"]["gflops"] > 0
        attrs = t["attrs"]
        assert attrs["epochs_done"] == 2 and [p["epoch"] for p in attrs["curve"]] == [1, 2]
        assert attrs["arch"]["window_size"] == t["params"]["window_size"] and attrs["arch"]["img_size"] == 16
        assert attrs["gflops_paper"] > attrs["gflops"] and attrs["params_m"] > 0 and attrs["seed"] == 0
        assert attrs["wall_s"] > 0
    assert obj["pareto"] and set(obj["pareto"]) <= {t["number"] for t in obj["trials"]}
    spec = optuna.load_study(study_name="e2e", storage=f"sqlite:///{db}").user_attrs["spec"]
    assert spec["name"] == "e2e" and spec["grid"] == {"window_size": [2, 4]}

    again = _ablate("run", str(study), "--storage", f"sqlite:///{db}", cwd=tmp_path / "studies")
    assert again.returncode == 0 and "0 new trial(s)" in again.stdout, again.stdout
    table = _ablate("show", str(db), cwd=tmp_path)
    assert table.returncode == 0 and "★" in table.stdout and "COMPLETE" in table.stdout


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_ctrl_c_records_interrupted_trials_and_stops_ray(tmp_path):
    study = _project(tmp_path, epochs=200)  # never finishes on its own
    db = tmp_path / "runs" / "e2e.db"
    proc = subprocess.Popen([ABLATE, "run", str(study), "--quiet"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        running = False
        while time.time() < deadline and not running:
            time.sleep(1.0)
            if not db.exists():
                continue
            try:
                with sqlite3.connect(db) as conn:
                    running = bool(conn.execute(
                        "select count(*) from trials t join trial_user_attributes a on a.trial_id = t.trial_id "
                        "where t.state = 'RUNNING' and a.key = 'epochs_done'").fetchone()[0])
            except sqlite3.OperationalError:
                continue  # Optuna is still creating its tables
        assert running, "no trial reported an epoch in time"
        children = _descendants(proc.pid)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    trials = optuna.load_study(study_name="e2e", storage=f"sqlite:///{db}").trials
    assert trials and all(t.state.name != "RUNNING" for t in trials)
    assert any(t.user_attrs.get("interrupted") for t in trials)
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"Ray processes left behind: {[p.name() for p in alive]}"
