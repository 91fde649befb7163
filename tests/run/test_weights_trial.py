"""A study's ``weights:`` in a trial: the model that trains starts from the checkpoint where names
and shapes match, the counts ride on every report and land in the trial's user attributes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ablate.train
from ablate.errors import ConfigError
from ablate.models import build_model, resolve_architecture
from ablate.run.candidate import Candidate
from ablate.run.optuna_study import open_optuna_study
from ablate.run.trial import run_trial
from ablate.study import load_study
from tests.cli_helpers import run_cli

ABLATE = str(Path(sys.executable).with_name("ablate"))
ARCH = {"depths": [1, 1], "embed_dim": 16, "num_heads": 2, "window_size": 4}
STUDY = """\
name: wt
fixed: {attention: flatten, depths: [1, 1], embed_dim: 16, num_heads: 2, window_size: 4}
grid: {focusing_factor: [3]}
data: {name: digits, image_size: 16}
train: {epochs: 1, batch_size: 128, seed: 5}
resources: {cpu: 1}
storage: sqlite:///runs/wt.db
weights: ckpt/softmax7.pth
"""


def _project(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A study of FLatten candidates and a checkpoint of the same family's softmax model, 7 classes."""
    arch = resolve_architecture({"attention": "softmax", **ARCH, "img_size": 16, "num_classes": 7}, "classify")
    torch.manual_seed(99)
    sd = build_model(arch).state_dict()
    (tmp_path / "ckpt").mkdir()
    torch.save({"model": sd, "epoch": 300}, tmp_path / "ckpt" / "softmax7.pth")
    path = tmp_path / "wt.yaml"
    path.write_text(STUDY)
    return path, sd


def test_the_trained_model_starts_from_the_checkpoint_and_the_counts_are_exact(tmp_path, monkeypatch):
    path, ckpt = _project(tmp_path)
    study = load_study(path, check=False)
    seen: list[dict[str, torch.Tensor]] = []

    def fake_train(model, data, cfg, on_epoch):  # what training receives, before any step
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        on_epoch({"epoch": 1, "top1": 10.0, "train_loss": 1.0, "lr": 1e-3})

    monkeypatch.setattr(ablate.train, "train_classifier", fake_train)
    reports: list[dict] = []
    last = run_trial(study, {"focusing_factor": 3}, reports.append)
    (start,) = seen
    candidate = Candidate.of(study, {"focusing_factor": 3})
    torch.manual_seed(study.train.seed)
    fresh = build_model(candidate.arch).state_dict()
    # by hand: same name and shape, or softmax's packed qkv split into FLatten's q and kv (rows q, then kv)
    expected: dict[str, torch.Tensor] = {}
    for name, want in fresh.items():
        if name in ckpt and ckpt[name].shape == want.shape:
            expected[name] = ckpt[name]
        m = re.match(r"^(.*)\.(q|kv)\.(weight|bias)$", name)
        if m and f"{m[1]}.qkv.{m[3]}" in ckpt:
            packed, rows = ckpt[f"{m[1]}.qkv.{m[3]}"], fresh[f"{m[1]}.q.{m[3]}"].shape[0]
            expected[name] = packed[:rows] if m[2] == "q" else packed[rows:]
    for name, value in start.items():
        torch.testing.assert_close(value, expected[name] if name in expected else fresh[name], rtol=0, atol=0,
                                   msg=name)
    left = set(fresh) - set(expected)
    assert left == {n for n in fresh if re.search(r"\.attn\.(scale|positional_encoding|dwc\.)", n)} | {
        "head.weight", "head.bias"}  # FLatten's own tensors and a 10-class head (the checkpoint has 7)
    assert reports == [last] and last["weights_transferred"] == len(expected) == 38
    assert last["weights_total"] == len(fresh) == 48


def test_a_checkpoint_that_matches_nothing_fails_the_trial_in_one_line(tmp_path, monkeypatch):
    path, _ = _project(tmp_path)
    torch.save({"model": {"backbone.conv1.weight": torch.randn(8, 3, 3, 3)}}, tmp_path / "ckpt" / "softmax7.pth")
    study = load_study(path, check=False)
    monkeypatch.setattr(ablate.train, "train_classifier", lambda *a: pytest.fail("trained from scratch"))
    reports: list[dict] = []
    with pytest.raises(ConfigError) as err:
        run_trial(study, {"focusing_factor": 3}, reports.append)
    assert "\n" not in str(err.value) and "no tensor of the checkpoint matches the model" in str(err.value)
    assert str(err.value).startswith(str(tmp_path / "ckpt" / "softmax7.pth")) and reports == []


def _ablate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([ABLATE, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_ablate_run_stores_the_counts_in_the_trials_attributes(tmp_path):
    path, _ = _project(tmp_path)
    run = _ablate("run", str(path), "-q", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    shown = _ablate("show", str(path), "--format", "json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    (trial,) = json.loads(shown.stdout)["trials"]
    assert trial["state"] == "COMPLETE", trial["attrs"].get("error")
    assert (trial["attrs"]["weights_transferred"], trial["attrs"]["weights_total"]) == (38, 48)


def test_a_resume_with_other_checkpoint_content_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    path, _ = _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    open_optuna_study(load_study(path, check=False))  # what the first run stored
    db = tmp_path / "runs" / "wt.db"
    torch.save({"model": {"patch_embed.proj.weight": torch.zeros(16, 3, 4, 4)}}, tmp_path / "ckpt" / "softmax7.pth")
    before = db.read_bytes()
    code, out, err = run_cli(capsys, "run", str(path), "-q")
    assert code == 2 and "Traceback" not in err, err
    assert re.fullmatch(r"error: \S*wt\.yaml: weights differ from the study stored in .*\n", err), err
    assert db.read_bytes() == before
