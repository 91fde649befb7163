"""`key=value` overrides: applied to the file's mapping before validation, so they are checked
like the file; errors name the override in one line; at proxy scale they win over `proxy:`."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablate.errors import ConfigError
from ablate.study import load_study, study_to_dict
from ablate.study.overrides import parse_overrides, shown_overrides

STUDY = """\
name: ov
space: {fixed: {attention: focal}}
fixed: {depths: [1, 1], embed_dim: 16, num_heads: 2, focal_level: 1, expand_size: 1}
grid: {window_size: [2, 4]}
objectives: [{name: top1, direction: maximize}, {name: gflops, direction: minimize}]
data: {name: digits, image_size: 16}
train: {epochs: 6, batch_size: 128, warmup_epochs: 2}
repeats: 2
proxy: {epochs: 3, repeats: 4, image_size: 16, lr: 1.0e-3}
storage: sqlite:///runs/ov.db
"""


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(STUDY)
    return path


def _load(path, *ov, scale="proxy"):
    return load_study(path, check=False, scale=scale, overrides=list(ov))


def test_values_are_yaml_and_land_in_the_spec(study_file):
    s = _load(study_file, "train.epochs=1", "train.warmup_epochs=0", "grid.window_size=[2]", "train.lr=2e-3", "description='a b: c'")
    assert s.train.epochs == 1 and s.train.lr == 2e-3 and dict(s.grid) == {"window_size": (2,)}
    spec = study_to_dict(s)
    assert spec["train"]["epochs"] == 1 and spec["grid"] == {"window_size": [2]}
    assert s.description == "a b: c"
    assert _load(study_file).train.epochs == 3  # the file alone: proxy.epochs


def test_overrides_win_over_the_proxy_section(study_file):
    s = _load(study_file, "train.epochs=1", "train.warmup_epochs=0", "repeats=1", "train.lr=5e-4")
    assert (s.train.epochs, s.repeats, s.train.lr) == (1, 1, 5e-4)
    s = _load(study_file, "proxy.epochs=2")
    assert s.train.epochs == 2
    paper = _load(study_file, "train.epochs=4", scale="paper")
    assert paper.train.epochs == 4 and paper.repeats == 2
    assert study_to_dict(paper)["proxy"]["epochs"] == 3  # at paper scale the proxy section is kept as written


def test_relative_data_path_is_from_the_current_folder(study_file, tmp_path, monkeypatch):
    (tmp_path / "here" / "imgs").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "here")
    (o,) = parse_overrides(["data.path=imgs"], "s.yaml")
    assert o.value == str(tmp_path / "here" / "imgs")


@pytest.mark.parametrize("ov,expect", [
    ("train.epochs=abc", "override train.epochs=abc: train.epochs: must be an integer"),
    ("train.epoch=1", "override train.epoch=1: train.epoch: unknown key 'epoch'"),
    ("train.epoch=1", "did you mean 'epochs'"),
    ("trian.epochs=1", "did you mean 'train'"),
    ("name.x=1", "override name.x=1: name is a string"),
    ("scale=paper", "override scale=paper: scale: is chosen when running"),
    ("epochs", "override 'epochs': no '='"),
    ("=3", "key '' is not a dotted key"),
    ("train..epochs=1", "is not a dotted key"),
    ("train.epochs=[1", "the value is not a YAML value"),
    ("train.epochs=!!python/object:os.system x", "override train.epochs="),
    ("train.epochs=&a [*a]", "override"),
    ("fixed.depths.5=1", "fixed.depths has 2 item(s)"),
    ("grid.window_size=[2, 0]", "override grid.window_size=[2, 0]"),
    ("train.epochs=1\x07", "control character"),
])
def test_bad_overrides_are_one_line_naming_the_override(study_file, ov, expect):
    with pytest.raises(ConfigError) as info:
        load_study(study_file, check=ov.startswith("grid"), overrides=[ov])
    text = str(info.value)
    assert expect in text and "\n" not in text and text.startswith(str(study_file))


def test_cross_key_errors_say_which_overrides_were_applied(study_file):
    with pytest.raises(ConfigError, match=r"warmup_epochs.*\(with train\.epochs=1\)$"):
        _load(study_file, "train.epochs=1", scale="paper")


def test_the_same_key_twice_and_secrets(study_file):
    with pytest.raises(ConfigError, match="also set by"):
        _load(study_file, "train.epochs=1", "train.epochs=2")
    url = "postgresql://u:s3cret@db.example/studies"
    with pytest.raises(ConfigError) as info:
        _load(study_file, f"storage={url}", "storage=x")
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in shown_overrides(parse_overrides([f"storage={url}"], "s.yaml"))
    assert _load(study_file, f"storage={url}").storage == url  # the real value is used, only the echo is masked


def test_limits(study_file):
    with pytest.raises(ConfigError, match="characters"):
        _load(study_file, "description=" + "x" * 70_000)
    with pytest.raises(ConfigError, match="at most 100"):
        _load(study_file, *[f"train.epochs={i}" for i in range(101)])
    with pytest.raises(ConfigError, match="values|nested"):
        _load(study_file, "fixed.x=" + "[" * 200 + "]" * 200)


def test_a_root_that_is_its_own_alias_is_refused_not_a_hang(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("&a [*a]\n")  # the reader's error walk looped forever on this (yaml_read._measure)
    with pytest.raises(ConfigError, match="recursive alias"):
        load_study(path, check=False)


def test_a_refused_url_value_does_not_print_its_password(study_file):
    with pytest.raises(ConfigError) as info:
        _load(study_file, "storage=[postgresql://u:s3cret@db.example/studies]")
    assert "s3cret" not in str(info.value) and "storage" in str(info.value)
