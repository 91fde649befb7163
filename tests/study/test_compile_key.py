"""``train.compile``: the key, its one-line errors, the refusal without a compiler, and that it
changes neither a configuration's key nor what a stored study is compared on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ablate.errors import ConfigError
from ablate.study import check_study, load_study, study_from_dict, study_to_dict
from ablate.study.declaration import json_schema
from tests.cli_helpers import run_cli

STUDY = """\
name: c
task: classify
fixed: {{embed_dim: 16, depths: [1, 1, 1, 1], num_heads: 1}}
grid: {{window_size: [1, 2]}}
objectives: [{{name: top1}}]
data: {{name: digits, image_size: 32}}
train:
  epochs: 1
  compile: {compile}
storage: sqlite:///{tmp}/c.db
"""


def _write(tmp: Path, compile_: str = "true", extra: str = "") -> Path:
    path = tmp / "study.yaml"
    path.write_text(STUDY.format(compile=compile_, tmp=tmp) + extra)
    return path


def test_compile_defaults_to_false_and_loads_when_true(tmp_path: Path) -> None:
    assert load_study(_write(tmp_path, "false"), check=False).train.compile is False
    study = check_study(_write(tmp_path, "true"))
    assert study.train.compile is True and study.train_for(study.cells()[0]).compile is True
    assert study_from_dict(study_to_dict(study), check=False) == study
    schema = json_schema("study")["$defs"]["TrainSection"]["properties"]["compile"]
    assert schema["type"] == "boolean" and schema["default"] is False and "C++ compiler" in schema["description"]


def test_compile_keeps_configuration_keys_and_the_stored_spec_comparable(tmp_path: Path) -> None:
    from ablate.run.keys import config_key
    from ablate.run.optuna_study import spec_differences, stored_spec

    on = load_study(_write(tmp_path, "true"), check=False)
    off = dataclasses.replace(on, train=dataclasses.replace(on.train, compile=False))
    assert [config_key(on, c) for c in on.cells()] == [config_key(off, c) for c in off.cells()]
    assert spec_differences(stored_spec(off), stored_spec(on)) == []
    old = stored_spec(off)
    old["train"] = {k: v for k, v in old["train"].items() if k != "compile"}  # a spec from before the key
    assert spec_differences(old, stored_spec(on)) == []
    lr = dataclasses.replace(on, train=dataclasses.replace(on.train, lr=0.5))
    assert spec_differences(stored_spec(off), stored_spec(lr)) == ["train.lr"]  # other keys still count


@pytest.mark.parametrize(("value", "extra", "expected"), [
    ("sure", "", "study.yaml:9: train.compile: must be true or false, got 'sure'"),
    ("1", "", "study.yaml:9: train.compile: must be true or false, got 1"),
    ("null", "", "study.yaml:9: train.compile: must be true or false, got None"),
    ("false", "proxy: {compile: true}\n", "study.yaml:11: proxy.compile:"),
    ("false", "fixed: {compile: true}\n", "study.yaml:11: fixed.compile:"),
])
def test_bad_compile_values_are_one_line(tmp_path: Path, value: str, extra: str, expected: str) -> None:
    text = STUDY.format(compile=value, tmp=tmp_path)
    if extra.startswith("fixed"):
        text = text.replace("fixed: {embed_dim: 16,", "fixed: {compile: true, embed_dim: 16,")
        expected = "study.yaml:3: fixed.compile:"
    else:
        text += extra
    (tmp_path / "study.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_study(tmp_path / "study.yaml")  # fixed: keys meet the builder (as amp: not an arch key)
    message = str(err.value).replace(str(tmp_path) + "/", "")
    assert message.startswith(expected) and "\n" not in message, message


def test_no_compiler_refuses_compile_at_validate_and_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "true")
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr("shutil.which", lambda name, *a, **k: None)
    with pytest.raises(ConfigError) as err:
        check_study(path)
    message = str(err.value)
    assert message.startswith(f"{path}:9: train.compile: true needs a compiler: no C++ compiler found on the PATH: "
                              "g++ (or $CXX)")
    assert message.endswith("allowed: false, or install g++ (or set $CXX to a C++ compiler)") and "\n" not in message
    assert check_study(_write(tmp_path, "false")).train.compile is False  # compile off needs no compiler
    for command in (["validate", str(path)], ["run", str(path), "--dry-run"]):
        _write(tmp_path, "true")
        code, out, err_text = run_cli(capsys, *command)
        assert code == 2 and err_text.strip().splitlines() == [f"error: {message}"], (command, out, err_text)
    assert not (tmp_path / "c.db").exists()  # nothing written
