"""`ablate export` of a classification trial, after a real (tiny) `ablate run`: the trial's
kept weights are the ones it was scored with (the stored top-1 is recomputed from the
exported file), ``ablate.create_model(FILE)`` and the ``--program`` give the same logits,
a resumed run keeps every file, and every refusal is one line that writes nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

import ablate
from tests.cli_helpers import run_cli

ABLATE = str(Path(sys.executable).with_name("ablate"))

STUDY = """\
name: tiny
fixed: {attention: focal, depths: [1, 1], embed_dim: 16, num_heads: 2, focal_level: 2, focal_window: 3,
        expand_size: 1}
grid: {window_size: [2, 4]}
objectives: [{name: top1, direction: maximize}, {name: gflops, direction: minimize}]
data: {name: digits, image_size: 16}
train: {epochs: 1, batch_size: 128, lr: 3.0e-3}
resources: {cpu: 1}
storage: sqlite:///runs/tiny.db
"""


def _ablate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([ABLATE, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A tiny focal grid (2 trials, 1 epoch on digits) run once for the module."""
    root = tmp_path_factory.mktemp("export")
    (root / "studies").mkdir()
    (root / "studies" / "tiny.yaml").write_text(STUDY)
    done = _ablate("run", "studies/tiny.yaml", "-q", cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def _trials(root: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{root / 'runs' / 'tiny.db'}").get_trials()


def _digest(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _val_top1(model: torch.nn.Module) -> float:
    """Top-1 on the digits validation split, prepared as a trial prepares it."""
    from ablate.data import load_classification
    from ablate.train import TrainConfig, recipe_transforms

    train_tf, eval_tf = recipe_transforms(TrainConfig(), 16)
    data = load_classification("digits", image_size=16, val_fraction=0.2, train_transform=train_tf,
                               eval_transform=eval_tf)
    images = torch.stack([data.val[i][0] for i in range(len(data.val))])
    labels = torch.tensor([int(data.val[i][1]) for i in range(len(data.val))])
    with torch.no_grad():
        correct = (model.eval()(images).argmax(1) == labels).sum().item()
    return 100.0 * correct / len(labels)


def test_each_trial_keeps_the_weights_it_was_scored_with(project):
    trials = _trials(project)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for t in trials:
        stored = t.user_attrs["weights_file"]
        assert stored == f"tiny.artifacts/tiny/trial-{t.number}.safetensors"  # relative to the db's folder
        kept = project / "runs" / stored
        model = ablate.create_model(kept)
        # The strongest check that the right weights were kept: they score the stored top-1 again.
        assert _val_top1(model) == pytest.approx(t.values[0], abs=1e-9)
        torch.manual_seed(t.user_attrs["seed"])  # the trial's initialisation, as run_trial makes it
        init = ablate.models.build_model(ablate.models.architecture_from_json(t.user_attrs["arch"])).state_dict()
        trained = model.state_dict()
        assert set(init) == set(trained)
        assert sum(not torch.equal(init[k], trained[k]) for k in init if init[k].is_floating_point()) > 10


def test_export_writes_one_file_create_model_rebuilds(project, capsys, tmp_path):
    db = project / "runs" / "tiny.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    out = tmp_path / "m.safetensors"
    code, stdout, err = run_cli(capsys, "export", str(db), "--trial", "0", "-o", str(out), "--program")
    assert code == 0, err
    assert "wrote" in stdout and "trial 0 of tiny" in stdout and "create_model" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt2", "m.safetensors"]
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # a reader never writes
    exported = ablate.create_model(str(out)).eval()
    kept = ablate.create_model(project / "runs" / "tiny.artifacts" / "tiny" / "trial-0.safetensors").eval()
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(exported(x), kept(x))
        program = torch.export.load(str(tmp_path / "m.pt2")).module()
        torch.testing.assert_close(program(x), exported(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(program(x[:1]), exported(x[:1]), atol=1e-5, rtol=1e-5)  # any batch
    meta = ablate.models.exported.read_exported_meta(out)
    trial = _trials(project)[0]
    assert meta["study"] == "tiny" and meta["trial"] == "0" and meta["epoch"] == "1"
    assert float(meta["top1"]) == trial.values[0]


def test_refusals_are_one_line_and_write_nothing(project, capsys, tmp_path):
    db = project / "runs" / "tiny.db"
    out = tmp_path / "m.safetensors"
    cases = [
        (["--trial", "9", "-o", str(out)], "has no trial 9; its trials are 0..1"),
        (["--trial", "0", "-o", str(tmp_path / "m.yaml")], "ending in .safetensors"),
        (["--trial", "0", "-o", str(tmp_path / "m.pt")], "ending in .safetensors"),
        (["--trial", "0", "-o", str(tmp_path / "nope" / "m.safetensors")], "does not exist"),
        (["--trial", "0", "-o", str(out), "--artifacts", str(tmp_path / "elsewhere")],
         f"weights file is missing: looked at {tmp_path / 'elsewhere' / 'tiny' / 'trial-0.safetensors'}"),
    ]
    for args, needle in cases:
        code, _, err = run_cli(capsys, "export", str(db), *args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (args, err)
        assert list(tmp_path.iterdir()) == [], args


def test_moved_replaced_failed_and_older_trials(project, capsys, tmp_path):
    """A copy of the run folder: its artifacts moved, a file replaced, a trial failed, one from before."""
    runs = tmp_path / "runs"
    shutil.copytree(project / "runs", runs)
    db = runs / "tiny.db"
    out = tmp_path / "m.safetensors"
    moved = tmp_path / "moved"
    (runs / "tiny.artifacts").rename(moved)

    code, _, err = run_cli(capsys, "export", str(db), "--trial", "1", "-o", str(out))
    looked = runs / "tiny.artifacts" / "tiny" / "trial-1.safetensors"
    assert code == 2 and f"looked at {looked}" in err and "--artifacts DIR" in err and not out.exists(), err
    code, _, err = run_cli(capsys, "export", str(db), "--trial", "1", "-o", str(out), "--artifacts", str(moved))
    assert code == 0, err
    out.unlink()

    shutil.copy(moved / "tiny" / "trial-1.safetensors", moved / "tiny" / "trial-0.safetensors")
    code, _, err = run_cli(capsys, "export", str(db), "--trial", "0", "-o", str(out), "--artifacts", str(moved))
    assert code == 2 and "is not trial 0's weights" in err and "trial '1'" in err and not out.exists(), err

    import sqlite3

    with sqlite3.connect(db) as conn:  # Optuna refuses to edit a finished trial: edit its rows
        t0, t1 = (conn.execute("SELECT trial_id FROM trials WHERE number = ?", (n,)).fetchone()[0] for n in (0, 1))
        conn.execute("DELETE FROM trial_user_attributes WHERE trial_id = ? AND key = 'weights_file'", (t1,))
        conn.execute("UPDATE trials SET state = 'FAIL' WHERE trial_id = ?", (t0,))
        conn.execute("INSERT INTO trial_user_attributes (trial_id, key, value_json) VALUES (?, 'error', ?)",
                     (t0, '"TrainingDiverged: loss became nan at epoch 1"'))
    for number, needle in [(0, "trial 0 failed (TrainingDiverged: loss became nan at epoch 1), so it kept no weights"),
                           (1, "trial 1 (COMPLETE) has no weights file: the run that trained it predates")]:
        code, _, err = run_cli(capsys, "export", str(db), "--trial", str(number), "-o", str(out),
                               "--artifacts", str(moved))
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and not out.exists(), err


def test_a_resumed_run_keeps_every_file_and_adds_the_new_trials(project, tmp_path):
    root = tmp_path / "resume"
    shutil.copytree(project, root)
    before = _digest(root / "runs" / "tiny.artifacts")
    done = _ablate("run", "studies/tiny.yaml", "-q", "--repeats", "2", cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    after = _digest(root / "runs" / "tiny.artifacts")
    assert {k: after[k] for k in before} == before  # not re-saved, not lost
    assert sorted(after) == [f"tiny/trial-{n}.safetensors" for n in range(4)]
    trials = _trials(root)
    assert [t.user_attrs["weights_file"] for t in trials] == [f"tiny.artifacts/tiny/trial-{n}.safetensors"
                                                              for n in range(4)]
