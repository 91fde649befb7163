"""The study's ``weights:`` key: checked when the study loads (file, line, key; nothing written),
resolved from the study's folder, stored with its content's SHA-256, compared on resume."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from ablate.errors import ConfigError
from ablate.run.keys import config_key
from ablate.run.optuna_study import spec_differences, stored_spec
from ablate.study import load_study, study_from_dict, study_to_dict
from ablate.study.declaration import StudyFile
from tests.cli_helpers import run_cli

STUDY = """\
name: w
fixed: {attention: softmax, depths: [1, 1], embed_dim: 16, num_heads: 2}
grid: {window_size: [2, 4]}
data: {name: digits, image_size: 16}
train: {epochs: 1, batch_size: 32}
storage: sqlite:///runs/w.db
"""


def _write(folder: Path, weights: str | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(STUDY + (f"weights: {weights}\n" if weights is not None else ""))
    return path


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "ckpts" / "start.pth"
    path.parent.mkdir()
    torch.save({"model": {"patch_embed.proj.weight": torch.randn(16, 3, 4, 4)}}, path)
    return path


def _refused(path: Path, capsys: pytest.CaptureFixture[str], *, key: str = "weights") -> str:
    with pytest.raises(ConfigError) as err:
        load_study(path, check=False)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{path}:7: {key}: "), line
    code, out, errtext = run_cli(capsys, "validate", str(path))  # exit 2, one line, nothing written
    assert code == 2 and errtext.strip() == f"error: {line}" and "Traceback" not in errtext
    assert not (path.parent / "runs").exists()
    return line


def test_a_relative_path_is_read_from_the_study_folder_and_pinned_by_content(tmp_path, ckpt, monkeypatch):
    study_file = _write(tmp_path / "studies", "../ckpts/start.pth")
    monkeypatch.chdir(ckpt.parent)  # the working directory plays no part
    study = load_study(study_file, check=False)
    assert study.weights is not None and study.weights.path == str(ckpt.resolve())
    assert study.weights.sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    spec = study_to_dict(study)
    assert spec["weights"] == {"path": str(ckpt.resolve()), "sha256": study.weights.sha256}
    assert study_from_dict(spec, check=False) == study  # the stored form reads back (Ray's worker does)
    monkeypatch.chdir(tmp_path)
    StudyFile.model_validate({"name": "w", "weights": spec["weights"]})  # the declaration accepts the stored form


def test_a_study_without_weights_keeps_its_old_spec_and_keys(tmp_path):
    study = load_study(_write(tmp_path, None), check=False)
    spec = study_to_dict(study)
    assert study.weights is None and "weights" not in spec
    old = {**stored_spec(study)}
    assert spec_differences(old, stored_spec(study)) == []
    assert config_key(study, {"window_size": 2}) == config_key(study_from_dict(spec, check=False), {"window_size": 2})


def test_resume_with_other_weights_or_none_is_refused_and_the_same_file_anywhere_is_not(tmp_path, ckpt):
    plain = stored_spec(load_study(_write(tmp_path / "a", None), check=False))
    started = stored_spec(load_study(_write(tmp_path / "b", str(ckpt)), check=False))
    moved = tmp_path / "elsewhere.pth"
    moved.write_bytes(ckpt.read_bytes())
    same_content = stored_spec(load_study(_write(tmp_path / "c", str(moved)), check=False))
    other = tmp_path / "other.pth"
    torch.save({"model": {"patch_embed.proj.weight": torch.zeros(16, 3, 4, 4)}}, other)
    changed = stored_spec(load_study(_write(tmp_path / "d", str(other)), check=False))
    assert spec_differences(plain, started) == ["weights"]  # an old database (no key) started from scratch
    assert spec_differences(started, plain) == ["weights"]
    assert spec_differences(started, changed) == ["weights"]
    assert spec_differences(started, same_content) == []  # compared by content, not by where it lies
    study = load_study(_write(tmp_path / "b", str(ckpt)), check=False)
    assert config_key(study, {"window_size": 2}) == config_key(
        load_study(_write(tmp_path / "a", None), check=False), {"window_size": 2})  # one file per study


def test_a_pinned_sha256_is_checked(tmp_path, ckpt, capsys):
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert load_study(_write(tmp_path, f"{{path: {ckpt}, sha256: {sha.upper()}}}"), check=False).weights.sha256 == sha
    line = _refused(_write(tmp_path, f"{{path: {ckpt}, sha256: {'ab' * 32}}}"), capsys, key="weights.sha256")
    assert f"has SHA-256 {sha}, not the pinned {'ab' * 32}" in line
    line = _refused(_write(tmp_path, f"{{path: {ckpt}, sha256: abc}}"), capsys, key="weights.sha256")
    assert "64 hexadecimal digits" in line
    line = _refused(_write(tmp_path, f"{{path: {ckpt}, sha256: {'0' * 64}}}"), capsys, key="weights.sha256")
    assert "(YAML read a number: quote it)" in line


@pytest.mark.parametrize("value, key, says", [
    ("missing.pth", "weights", "file not found: 'missing.pth' (looked at "),
    ("yolov8n.pt", "weights", "(nothing is downloaded)"),
    ("sub", "weights", "'sub' is a folder"),
    ("notes.txt", "weights", "not a checkpoint (neither a torch file"),
    ("empty.pth", "weights", "not a checkpoint"),
    ("noweights.pth", "weights", "no state dict found"),
    ("3", "weights", "must be a file path or a mapping {path, sha256}, got 3"),
    ("[a.pth]", "weights", "got a list"),
    ("''", "weights", "must be a file path"),
    ("{sha256: null}", "weights.path", "required key is missing"),
    ("{path: a.pth, url: x}", "weights.url", "unknown key 'url', allowed: path, sha256"),
])
def test_what_is_not_a_checkpoint_file_is_refused_at_load(tmp_path, capsys, value, key, says):
    (tmp_path / "sub").mkdir()
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save({"epoch": 3, "note": "no tensors"}, tmp_path / "noweights.pth")
    line = _refused(_write(tmp_path, value), capsys, key=key)
    assert says in line and "allowed:" in line, line


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs")
def test_a_fifo_is_refused_without_blocking(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.pth")
    assert "is not a regular file" in _refused(_write(tmp_path, "pipe.pth"), capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_an_unreadable_file_is_refused(tmp_path, ckpt, capsys):
    ckpt.chmod(0)
    try:
        assert "cannot be read (Permission denied)" in _refused(_write(tmp_path, str(ckpt)), capsys)
    finally:
        ckpt.chmod(0o600)


def test_an_override_sets_weights_like_the_file(tmp_path, ckpt):
    study = load_study(_write(tmp_path, None), check=False, overrides=[f"weights={ckpt}"])
    assert study.weights is not None and study.weights.path == str(ckpt.resolve())
