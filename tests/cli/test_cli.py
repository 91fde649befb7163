"""The command line: bad input is one line and exit 2 with nothing written; the read-only
commands print the DESIGN.md contracts."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import run_cli

GOOD = """\
name: cli-test
space: {fixed: {attention: focal}}
fixed: {depths: [1, 1], embed_dim: 16, num_heads: 2, focal_level: 1, expand_size: 1}
grid: {window_size: [2, 4]}
objectives: [{name: top1, direction: maximize}, {name: gflops, direction: minimize}]
data: {name: digits, image_size: 16}
train: {epochs: 1, batch_size: 128}
storage: sqlite:///STORE
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text.replace("STORE", str(tmp_path / "out.db")))
    return path




BAD = [
    ("unknown key", ("train: {epochs: 1", "trian: {epochs: 1"), ["trian", "did you mean 'train'"]),
    ("wrong type", ("epochs: 1,", "epochs: three,"), ["train.epochs", "three"]),
    ("unknown attention", ("attention: focal", "attention: focl"), ["attention", "did you mean 'focal'"]),
    ("out of range", ("batch_size: 128", "batch_size: 0"), ["train.batch_size", "0"]),
    ("bad direction", ("direction: maximize", "direction: up"), ["direction", "'maximize'"]),
    ("window larger than every map", ("window_size: [2, 4]", "window_size: [2, 64]"),
     ["grid.window_size", "larger than every stage"]),
    ("heads not dividing dim", ("num_heads: 2", "num_heads: 3"), ["fixed.num_heads", "divide"]),
    ("missing data path", ("data: {name: digits,", "data: {name: imagefolder, path: no/such/dir,"),
     ["data.path", "no/such/dir"]),
]


@pytest.mark.parametrize("case,edit,needles", BAD, ids=[b[0] for b in BAD])
def test_bad_study_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, case, edit, needles):
    text = GOOD.replace(*edit)
    assert text != GOOD
    path = _write(tmp_path, text)
    for command in ("run", "validate"):
        code, out, err = run_cli(capsys, command, str(path))
        assert code == 2, (command, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        assert str(path) in lines[0] and all(n in lines[0] for n in needles), lines[0]
    assert not (tmp_path / "out.db").exists() and not (tmp_path / "runs").exists()


def test_validate_ok_and_the_repository_studies(tmp_path, capsys):
    studies = sorted(str(p) for p in Path(__file__).parents[2].joinpath("studies").glob("*.yaml"))
    code, out, err = run_cli(capsys, "validate", str(_write(tmp_path, GOOD)), *studies)
    assert code == 0, err
    assert out.count("ok: ") == 1 + len(studies)
    assert not (tmp_path / "out.db").exists()


def test_show_on_missing_or_foreign_database_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "show", str(tmp_path / "nope.db"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "nope.db").exists()
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("create table t (x int)")
    code, _, err = run_cli(capsys, "show", str(foreign))
    assert code == 2 and "not an Optuna database" in err
    code, _, err = run_cli(capsys, "show", str(_write(tmp_path, GOOD)))
    assert code == 2 and "no such study database: " in err and not (tmp_path / "out.db").exists()


def test_profile_preset_json_contract(capsys):
    code, out, err = run_cli(capsys, "profile", "swin_tiny", "--resolution", "64", "--format", "json")
    assert code == 0, err
    obj = json.loads(out)
    assert set(obj) == {"name", "resolution", "params_m", "gflops"}
    assert obj["name"] == "swin_tiny" and obj["resolution"] == 64
    assert obj["params_m"] == pytest.approx(28.29, rel=0.01)
    code, out, _ = run_cli(capsys, "profile", "--list")
    assert code == 0 and "focal_tiny" in out and "swin_tiny" in out
    code, _, err = run_cli(capsys, "profile", "focal_tiyn")
    assert code == 2 and "did you mean 'focal_tiny'" in err


def test_profile_study_lists_each_grid_cell(tmp_path, capsys):
    code, out, err = run_cli(capsys, "profile", str(_write(tmp_path, GOOD)), "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["resolution"] for r in rows] == [16, 16] and "window_size=2" in rows[0]["name"]


def test_console_script_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys, ablate.cli; heavy = [m for m in ('torch', 'ray', 'optuna') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_dry_run_prints_costs_and_writes_nothing(tmp_path, capsys):
    code, out, err = run_cli(capsys, "run", str(_write(tmp_path, GOOD)), "--dry-run")
    assert code == 0, err
    assert "2 candidate(s), not trained" in out and "window_size=2" in out and "window_size=4" in out
    assert not (tmp_path / "out.db").exists()


def test_version_through_the_script_and_python_dash_m():
    import subprocess
    import sys

    from ablate import __version__

    out = subprocess.run([sys.executable, "-m", "ablate", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"ablate {__version__}", out


def test_run_never_prints_a_storage_password(tmp_path, capsys, monkeypatch):
    import ablate.run.driver
    from ablate.run import RunSummary

    url = "postgresql://ablate:s3cret-pw@127.0.0.1:5432/studies"
    monkeypatch.setattr(ablate.run, "run_study", lambda study, **kw: RunSummary(
        study=study.name, storage=kw["storage"], new_trials=[0], states={"COMPLETE": 1}))
    code, out, err = run_cli(capsys, "run", str(_write(tmp_path, GOOD)), "--storage", url, "-q")
    assert code == 0, err
    assert "s3cret-pw" not in out + err and "127.0.0.1:5432/studies" in out


def test_show_json_keeps_its_keys_and_adds_the_configurations(tmp_path, capsys):
    from ablate.testing.fake_study import write_fake_study

    db = tmp_path / "gen.db"
    write_fake_study(f"sqlite:///{db}", n_trials=12, seed=3)  # 4 configurations x 3 seeds
    code, out, err = run_cli(capsys, "show", str(db), "--format", "json")
    assert code == 0, err
    obj = json.loads(out)
    assert set(obj) == {"study", "storage", "objectives", "trials", "pareto",  # the keys before repeats
                        "configs", "pareto_configs", "baseline", "vs_baseline", "noise"}
    assert len(obj["trials"]) == 12 and len(obj["configs"]) == 4 and obj["baseline"] is None  # sampled: no baseline
    assert sorted(n for c in obj["configs"] for n in c["trials"]) == sorted(
        t["number"] for t in obj["trials"] if t["state"] == "COMPLETE")
    assert set(obj["pareto_configs"]) <= {c["key"] for c in obj["configs"]} and obj["vs_baseline"] == {}
    code, out, _ = run_cli(capsys, "show", str(db), "--format", "csv")
    assert code == 0 and out.startswith("config,n,trials,pareto,indistinguishable,baseline,")
    assert len(out.strip().splitlines()) == 1 + 4
    code, out, err = run_cli(capsys, "show", str(db), "--format", "csv", "--view", "both")
    assert code == 2 and "--view both" in err and len(err.strip().splitlines()) == 1 and not out


def test_report_names_the_front_of_the_means(tmp_path, capsys):
    from ablate.testing.fake_study import write_fake_study

    db = tmp_path / "gen.db"
    write_fake_study(f"sqlite:///{db}", n_trials=12, seed=3)
    code, _, err = run_cli(capsys, "report", str(db), "-o", str(tmp_path / "r.md"))
    assert code == 0 and "4 configuration(s), front of the means: trials (" in err, err
    text = (tmp_path / "r.md").read_text()
    assert " ± " in text and "Noise floor: top1 varies by" in text and "seeds 0-2" in text


def test_readers_never_change_a_database_not_even_its_journal_mode(tmp_path, capsys):
    import optuna

    url = f"sqlite:///{tmp_path / 'plain.db'}"
    ostudy = optuna.create_study(study_name="plain", storage=url, directions=["maximize"])
    ostudy.add_trial(optuna.trial.create_trial(value=1.0, params={"x": 1},
                                               distributions={"x": optuna.distributions.IntDistribution(0, 2)}))
    del ostudy
    before = (tmp_path / "plain.db").read_bytes()
    for args in (["show", url], ["show", url, "--format", "json"], ["report", url]):
        code, out, err = run_cli(capsys, *args)
        assert code == 0, err
    assert (tmp_path / "plain.db").read_bytes() == before
    with sqlite3.connect(tmp_path / "plain.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


@pytest.mark.parametrize("args, expected", [
    (["show", "x.db", "--format", "nope"], "error: ablate show: Invalid value for '--format'"),
    (["nosuch"], "error: ablate: No such command 'nosuch'."),
    (["run", "study.yaml", "--trials", "-3"], "error: ablate run: Invalid value for '--trials'"),
])
def test_usage_errors_are_one_line_and_exit_2(tmp_path, args, expected):
    """A flag the command does not take is bad input like any other: one line, not click's boxed page."""
    proc = subprocess.run([sys.executable, "-m", "ablate", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected) and "--help'" in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []
