"""Progress when stdout is not a terminal (a pipe, a log file), and `ablate run` overrides end to
end: a real tiny study through Ray with stdout a pipe prints its start line at once, a line per
trial and periodic ``progress:`` lines; the override is echoed, stored in the spec, and a resume
with another value is refused in one line."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from ablate.errors import ConfigError
from ablate.run.progress import INTERVAL_ENV, Progress, format_duration, progress_interval
from ablate.study import study_from_dict

ABLATE = str(Path(sys.executable).with_name("ablate"))

STUDY = """\
name: plain
space: ../spaces/focal.yaml
fixed: {depths: [1, 1], embed_dim: 16, num_heads: 2, focal_level: 2, focal_window: 3, expand_size: 1}
grid: {window_size: [2, 4]}
objectives: [{name: top1, direction: maximize}, {name: gflops, direction: minimize}]
data: {name: digits, image_size: 16}
train: {epochs: 3, batch_size: 128, lr: 3.0e-3}
resources: {cpu: 1}
storage: sqlite:///runs/plain.db
"""


def _study():
    return study_from_dict({"name": "p", "fixed": {"attention": "softmax", "depths": [1], "embed_dim": 16,
                                                    "num_heads": 2},
                            "grid": {"window_size": [2, 4]},
                            "objectives": [{"name": "top1", "direction": "maximize"}],
                            "data": {"name": "digits", "image_size": 16}}, check=False)


def _trial(number: int, state: TrialState = TrialState.COMPLETE) -> optuna.trial.FrozenTrial:
    t = create_trial(state=state, values=[81.25] if state == TrialState.COMPLETE else None,
                     params={"window_size": 2},
                     distributions={"window_size": optuna.distributions.CategoricalDistribution([2, 4])},
                     user_attrs={"wall_s": 1.5, "epochs_done": 1, "error": "boom"})
    t.number = number
    return t


def test_plain_lines_without_a_terminal():
    out = io.StringIO()  # not a tty
    p = Progress(_study(), enabled=True, stream=out, interval_s=0.05)
    p.in_flight = lambda: 1
    with p.running(2):
        assert "p: 2 run(s) to train" in out.getvalue()  # at once, before any trial ends
        deadline = time.monotonic() + 5
        while "progress: 0/2 done, 1 running" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "ETA unknown until a run finishes" in out.getvalue()
        p.trial_done(_trial(0))
        p.trial_done(_trial(1, TrialState.FAIL))
        time.sleep(0.2)
    text = out.getvalue()
    assert "trial   0 COMPLETE window_size=2  top1=81.25 (1.5s)" in text
    assert "trial   1 FAIL     window_size=2  failed: boom (1.5s)" in text
    assert "progress: 2/2 done" in text and "ETA 0s" in text
    n = text.count("progress:")
    time.sleep(0.2)
    assert out.getvalue().count("progress:") == n  # the ticker stopped with the run


def test_quiet_prints_nothing():
    out = io.StringIO()
    p = Progress(_study(), enabled=False, stream=out, interval_s=0.01)
    with p.running(2):
        p.trial_done(_trial(0))
        time.sleep(0.05)
    assert out.getvalue() == ""


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert progress_interval() == 30.0
    monkeypatch.setenv(INTERVAL_ENV, "2.5")
    assert progress_interval() == 2.5
    for bad in ("abc", "-1", "nan", "1e9", "inf"):
        monkeypatch.setenv(INTERVAL_ENV, bad)
        with pytest.raises(ConfigError, match=INTERVAL_ENV):
            progress_interval()


@pytest.mark.parametrize("seconds,text", [(0, "0s"), (42.4, "42s"), (185, "3m05s"), (7440, "2h04m")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_run_through_a_pipe_with_overrides(tmp_path):
    (tmp_path / "spaces").mkdir()
    (tmp_path / "spaces" / "focal.yaml").write_text("fixed: {attention: focal}\nparams:\n"
                                                    "  window_size: {choice: [2, 4, 8]}\n")
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "plain.yaml").write_text(STUDY)
    env = {**os.environ, INTERVAL_ENV: "1"}
    proc = subprocess.Popen([ABLATE, "run", "studies/plain.yaml", "train.epochs=1", "grid.window_size=[2]"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = proc.stdout.readline()  # arrives before any trial has trained
    assert first.startswith("overrides: train.epochs=1 grid.window_size=[2]"), first
    second = proc.stdout.readline()
    assert second.startswith("plain: 1 run(s) to train"), second
    rest, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "progress: 0/1 done" in rest
    assert "trial   0 COMPLETE window_size=2" in rest and "1 new trial(s)" in rest
    ostudy = optuna.load_study(study_name="plain", storage=f"sqlite:///{tmp_path}/runs/plain.db")
    spec = ostudy.user_attrs["spec"]
    assert spec["train"]["epochs"] == 1 and spec["grid"] == {"window_size": [2]}
    assert ostudy.trials[0].user_attrs["epochs_done"] == 1
    # resuming with another value is refused like a changed file, naming the key; nothing trains
    again = subprocess.run([ABLATE, "run", "studies/plain.yaml", "train.epochs=2", "grid.window_size=[2]"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "train.epochs differ from the study stored" in again.stderr, again.stderr
    assert "(with overrides train.epochs=2 grid.window_size=[2])" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert len(optuna.load_study(study_name="plain", storage=f"sqlite:///{tmp_path}/runs/plain.db").trials) == 1


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_bar_and_the_trial_lines_verbatim():
    out = _Tty()
    p = Progress(_study(), enabled=True, stream=out, interval_s=0.01)
    with p.running(1):
        p.trial_done(_trial(0))
    text = out.getvalue()
    assert "trial   0 COMPLETE window_size=2  top1=81.25 (1.5s)" in text and "progress:" not in text
