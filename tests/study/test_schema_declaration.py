"""The declaration of the study and search-space files (:mod:`ablate.study.declaration`)
against the hand-written loader, which stays the authority.

* The JSON Schema never refuses a file the loader accepts: every shipped file and a set of
  valid variants pass both.
* A file the schema refuses, the loader refuses too, at the same key path: a table of bad
  files, and one wrong value for every declared key (so every key the model declares is one
  the loader reads and checks).
* The loader accepts exactly the declared keys, and its defaults are the declared ones.
* ``schemas/*.schema.json`` is what the models generate, and ``ablate schema`` prints it.

Each check runs with ``jsonschema`` (what an editor does with the schema) and with the
pydantic models themselves (strict, as JSON).
"""

from __future__ import annotations

import copy
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from ablate.errors import ConfigError
from ablate.study import load_space, load_study
from ablate.study.declaration import (
    SCHEMA_KINDS,
    DataSection,
    ObjectiveEntry,
    ParamSpec,
    ProxySection,
    ResourcesSection,
    SamplerSection,
    SchedulerSection,
    SpaceFile,
    StudyFile,
    TrainSection,
    _keys,
    json_schema,
    json_schema_text,
)
from ablate.study.doc import _read_yaml
from ablate.study.space import dotted
from tests.cli_helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
STUDIES = sorted((ROOT / "studies").glob("*.yaml"))
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))
REGENERATE = "python -m ablate schema {kind} -o schemas/{kind}.schema.json"


# --------------------------------------------------------------------------- the two validators


def _jsonschema_errors(kind: str, data: Any) -> list[str]:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json_schema(kind))
    return [f"{dotted(list(e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)]


def _model_errors(kind: str, data: Any) -> list[str]:
    try:
        SCHEMA_KINDS[kind].model_validate_json(json.dumps(data), strict=True)
    except ValidationError as err:
        return [f"{dotted(e['loc'])}: {e['msg']}" for e in err.errors()]
    return []


VALIDATORS = [pytest.param(_jsonschema_errors, id="jsonschema"), pytest.param(_model_errors, id="pydantic")]
Validator = Callable[[str, Any], list[str]]


def _read(path: Path) -> Any:
    return _read_yaml(path, str(path))[0]  # exactly what the loader reads (1e-4 is a float)


def _load(kind: str, data: Any, folder: Path) -> Any:
    """The loader's verdict on ``data`` written as a file (the model builders are not asked)."""
    path = folder / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_study(path, check=False) if kind == "study" else load_space(path)


# --------------------------------------------------------------------------- files that are fine

GRID = {"name": "t", "grid": {"window_size": [2, 4]}}
SPACE = {"name": "s", "fixed": {"attention": "focal"}, "params": {
    "window_size": {"choice": [2, 4]},
    "depths": {"choice": [[1, 1, 2, 1], [2, 2, 2, 2]]},
    "focal_level": {"int": [1, 3], "step": 2},
    "embed_dim": {"int": [32, 64], "step": 16, "log": False},
    "lr": {"float": [1.0e-4, 1.0e-2], "log": True},
    "drop_path_rate": {"float": [0.0, 0.2], "step": 0.05, "when": {"window_size": 4}},
    "pool_method": {"choice": ["fc", None, True], "when": {"focal_level": [3], "attention": ["focal"]}},
}}
SAMPLED = {"name": "s", "space": SPACE, "trials": 4}

VALID_STUDIES: dict[str, dict[str, Any]] = {
    "minimal grid": GRID,
    "nulls where the loader takes them": {
        **GRID, "description": None, "base": None, "space": None, "fixed": None, "proxy": None, "objectives": None,
        "data": {"name": "digits", "path": None, "num_workers": None},
        "train": {"lr": None, "weight_decay": None, "warmup_epochs": None, "amp": None, "label_smoothing": None,
                  "recipe": None, "lr_batch": None, "randaugment": None, "random_erasing": None, "mixup": None,
                  "cutmix": None, "clip_grad": None, "ema_decay": None},
        "sampler": {"population_size": None}, "scheduler": None, "trials": None, "max_concurrent": None,
        "resources": None, "paper_resolution": None, "reference": None, "baseline": None},
    "every key of train": {**GRID, "train": {
        "epochs": 4, "batch_size": 32, "lr": 1.0e-3, "weight_decay": 0, "warmup_epochs": 4, "seed": 7, "amp": True,
        "label_smoothing": 0.1, "recipe": "deit", "lr_batch": 512, "randaugment": "rand-m9-mstd0.5-inc1",
        "random_erasing": 0.25, "mixup": 0.8, "cutmix": 1, "clip_grad": 5, "ema_decay": 0.99996, "compile": True}},
    "no augmentation": {**GRID, "train": {"randaugment": "", "recipe": "proxy"}},
    "everything at the top": {
        **GRID, "description": "d", "task": "classify", "base": "focal_tiny", "space": str(ROOT / "search_spaces" /
                                                                                            "focal.yaml"),
        "fixed": {"embed_dim": 32, "depths": [1, 1, 2, 1], "lr": 2.0e-3, "recipe": "proxy", "randaugment": ""},
        "proxy": {"embed_dim": 16, "lr": 1.0e-3, "batch_size": 8, "image_size": 16, "epochs": 1, "repeats": 2,
                  "grid": {"window_size": [1, 2]}},
        "objectives": ["top1", {"name": "gflops_paper"}, {"name": "params_m", "direction": "minimize"}],
        "data": {"name": "digits", "image_size": 32, "val_fraction": 0.25, "num_workers": 0},
        "sampler": {"name": "grid", "seed": 3}, "scheduler": {}, "trials": 1, "max_concurrent": 2,
        "resources": {"cpu": 0.5, "gpu": 0.25}, "storage": "postgresql://user:${PASSWORD}@db/ablate", "seed": 5,
        "paper_resolution": 224, "reference": {"source": "paper", "rows": [{"window_size": 2, "top1": 1}]},
        "repeats": 3, "baseline": {"window_size": 4}},
    "list-form grid with labels": {
        "name": "rows", "grid": [{"label": "a", "window_size": 2}, {"label": "b", "window_size": 4, "lr": 1.0e-3}],
        "proxy": {"grid": [{"embed_dim": 16}, {}]}, "baseline": "b"},
    "list-form grid without labels": {"name": "rows", "grid": [{"window_size": 2}, {"depths": [1, 1, 1, 1]}]},
    "grid of training keys": {**GRID, "grid": {"lr": [1.0e-3, 2.0e-3], "recipe": ["proxy", "deit"]}},
    "empty grid list": {**SAMPLED, "grid": []},
    "sampled, inline space": {**SAMPLED, "sampler": {"name": "nsga2", "population_size": 10, "seed": 0},
                              "scheduler": {"name": "asha", "grace_period": 2, "reduction_factor": 3},
                              "train": {"epochs": 4}, "objectives": ["top1", "gflops"]},
    "sampled, space file": {"name": "s", "space": str(ROOT / "search_spaces" / "softmax.yaml"), "trials": 2,
                            "sampler": {"name": "random"}},
    "detection": {"name": "d", "task": "detect", "base": "yolov8n", "grid": {"attention": ["none", "flatten"]},
                  "data": {"name": "synth-det"}, "objectives": ["map50_95", "gflops"]},
}

VALID_SPACES: dict[str, Any] = {
    "full": SPACE,
    "empty sections": {"name": None, "fixed": None, "params": None},
    "step null and log false on a choice": {"params": {"a": {"choice": [1, 2], "step": None, "log": False,
                                                             "when": None}}},
    "a fixed mapping value in when": {"fixed": {"block": {"kind": "x"}},
                                      "params": {"a": {"int": [0, 2], "when": {"block": {"kind": "x"}}}}},
}


@pytest.mark.parametrize("validate", VALIDATORS)
@pytest.mark.parametrize("path", STUDIES + SPACES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_file_passes_its_schema(path: Path, validate: Validator) -> None:
    kind = "study" if path.parent.name == "studies" else "space"
    assert _read(path) is not None
    assert validate(kind, _read(path)) == []
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == f"# yaml-language-server: $schema=../schemas/{kind}.schema.json", path


@pytest.mark.parametrize("validate", VALIDATORS)
@pytest.mark.parametrize("kind, data", [("study", v) for v in VALID_STUDIES.values()]
                         + [("space", v) for v in VALID_SPACES.values()],
                         ids=[f"study: {k}" for k in VALID_STUDIES] + [f"space: {k}" for k in VALID_SPACES])
def test_the_schema_accepts_what_the_loader_accepts(kind: str, data: Any, validate: Validator,
                                                    tmp_path: Path) -> None:
    _load(kind, data, tmp_path)  # the loader takes it ...
    assert validate(kind, data) == []  # ... so the schema must too


# --------------------------------------------------------------------------- files that are not


DROP = object()  # as a value: leave the key out


def _with(base: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    """A copy of ``base`` with ``value`` at the key path (sections made as needed)."""
    out = copy.deepcopy(base)
    target = out
    for key in path[:-1]:
        target = target.setdefault(key, {}) if isinstance(key, str) else target[key]
    if value is DROP:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value
    return out


NSGA2 = _with(SAMPLED, ("sampler", "name"), "nsga2")


# (file kind, base, key path, bad value): the loader's error must name the key path.
BAD: dict[str, tuple[str, dict[str, Any], tuple, Any]] = {
    "unknown key": ("study", GRID, ("trails",), 3),
    "unknown data key": ("study", GRID, ("data", "folder"), "x"),
    "unknown train key": ("study", GRID, ("train", "epoch"), 3),
    "unknown objective key": ("study", GRID, ("objectives",), [{"name": "top1", "goal": "maximize"}]),
    "unknown sampler key": ("study", GRID, ("sampler", "population"), 10),
    "unknown scheduler key": ("study", GRID, ("scheduler", "grace"), 1),
    "unknown resources key": ("study", GRID, ("resources", "gpus"), 1),
    "task not in the enum": ("study", GRID, ("task", ), "segment"),
    "data set not in the enum": ("study", GRID, ("data", "name"), "mnist"),
    "sampler not in the enum": ("study", SAMPLED, ("sampler", "name"), "cmaes"),
    "scheduler not in the enum": ("study", GRID, ("scheduler", "name"), "hyperband"),
    "objective not in the enum": ("study", GRID, ("objectives",), [{"name": "accuracy"}]),
    "objective name as a string": ("study", GRID, ("objectives",), ["accuracy"]),
    "direction not in the enum": ("study", GRID, ("objectives",), [{"name": "top1", "direction": "up"}]),
    "recipe not in the enum": ("study", GRID, ("train", "recipe"), "swin"),
    "name with a space": ("study", GRID, ("name",), "my study"),
    "name not a string": ("study", GRID, ("name",), 3),
    "missing name": ("study", GRID, ("name",), DROP),
    "epochs a word": ("study", GRID, ("train", "epochs"), "three"),
    "epochs 0": ("study", GRID, ("train", "epochs"), 0),
    "epochs null": ("study", GRID, ("train", "epochs"), None),
    "lr 0": ("study", GRID, ("train", "lr"), 0),
    "lr a word": ("study", GRID, ("train", "lr"), "fast"),
    "amp a word": ("study", GRID, ("train", "amp"), "yes"),
    "label smoothing 1": ("study", GRID, ("train", "label_smoothing"), 1),
    "randaugment not timm's": ("study", GRID, ("train", "randaugment"), "autoaugment"),
    "seed negative": ("study", GRID, ("seed",), -1),
    "seed too large": ("study", GRID, ("train", "seed"), 2**32),
    "repeats 0": ("study", GRID, ("repeats",), 0),
    "repeats null": ("study", GRID, ("repeats",), None),
    "val_fraction 1": ("study", GRID, ("data", "val_fraction"), 1.0),
    "image_size 2": ("study", GRID, ("data", "image_size"), 2),
    "cpu 0": ("study", GRID, ("resources", "cpu"), 0),
    "population 1": ("study", NSGA2, ("sampler", "population_size"), 1),
    "reduction factor 1": ("study", GRID, ("scheduler", "reduction_factor"), 1),
    "storage not a URL": ("study", GRID, ("storage",), "runs/x.db"),
    "storage null": ("study", GRID, ("storage",), None),
    "trials 0": ("study", SAMPLED, ("trials",), 0),
    "max_concurrent 0": ("study", GRID, ("max_concurrent",), 0),
    "data a list": ("study", GRID, ("data",), ["digits"]),
    "grid a string": ("study", GRID, ("grid",), "window_size"),
    "grid values empty": ("study", GRID, ("grid", "window_size"), []),
    "grid values a scalar": ("study", GRID, ("grid", "window_size"), 2),
    "grid row label a number": ("study", GRID, ("grid",), [{"label": 1, "window_size": 2}]),
    "grid lr negative": ("study", GRID, ("grid",), [{"lr": -1.0}]),
    "space a number": ("study", GRID, ("space",), 3),
    "reserved key in fixed": ("study", GRID, ("fixed", "img_size"), 64),
    "reserved key in grid": ("study", GRID, ("grid", "num_classes"), [10]),
    "fixed lr negative": ("study", GRID, ("fixed", "lr"), -1),
    "fixed recipe unknown": ("study", GRID, ("fixed", "recipe"), "swin"),
    "proxy seed": ("study", GRID, ("proxy", "seed"), 1),
    "proxy image_size 2": ("study", GRID, ("proxy", "image_size"), 2),
    "proxy lr null": ("study", GRID, ("proxy", "lr"), None),
    "proxy repeats 0": ("study", GRID, ("proxy", "repeats"), 0),
    "space: unknown key": ("space", SPACE, ("param",), {}),
    "space: params a list": ("space", SPACE, ("params",), ["a"]),
    "space: reserved param": ("space", SPACE, ("params", "img_size"), {"choice": [32]}),
    "space: reserved fixed": ("space", SPACE, ("fixed", "in_chans"), 1),
    "space: unknown param key": ("space", SPACE, ("params", "a"), {"choice": [1], "values": [1]}),
    "space: no kind": ("space", SPACE, ("params", "a"), {"step": 1}),
    "space: two kinds": ("space", SPACE, ("params", "a"), {"choice": [1], "int": [1, 2]}),
    "space: empty choice": ("space", SPACE, ("params", "a", "choice"), []),
    "space: choice a mapping": ("space", SPACE, ("params", "a", "choice"), {"x": 1}),
    "space: int range of one": ("space", SPACE, ("params", "a", "int"), [1]),
    "space: int range of words": ("space", SPACE, ("params", "a", "int"), ["a", "b"]),
    "space: float range of three": ("space", SPACE, ("params", "a", "float"), [0.0, 0.5, 1.0]),
    "space: log a word": ("space", SPACE, ("params", "lr", "log"), "yes"),
    "space: log null": ("space", SPACE, ("params", "lr", "log"), None),
    "space: step 0": ("space", SPACE, ("params", "embed_dim", "step"), 0),
    "space: when a list": ("space", SPACE, ("params", "pool_method", "when"), ["focal_level"]),
    "space: when an empty list": ("space", SPACE, ("params", "pool_method", "when"), {"focal_level": []}),
}


@pytest.mark.parametrize("validate", VALIDATORS)
@pytest.mark.parametrize("case", BAD.values(), ids=list(BAD))
def test_a_file_the_schema_refuses_the_loader_refuses_at_that_key(case: tuple, validate: Validator,
                                                                   tmp_path: Path) -> None:
    kind, base, path, value = case
    data = _with(base, path, value)
    assert validate(kind, data), f"the schema accepts {data}"
    with pytest.raises(ConfigError) as err:
        _load(kind, data, tmp_path)
    assert f"{kind}.yaml" in str(err.value) and f": {dotted(path)}" in str(err.value), str(err.value)


# --------------------------------------------------------------------------- one wrong value per key

#: Values tried in turn; the first one the schema refuses for a key is the wrong value.
_WRONG = ("?", -1, 0, [], [[]], {"?": 1}, True, 1.5)

#: Per declared section: a file that makes the section count, and the key path of the section.
_SECTIONS: list[tuple[type[BaseModel], str, dict[str, Any], tuple]] = [
    (StudyFile, "study", {**GRID, "objectives": ["top1"]}, ()),
    (DataSection, "study", GRID, ("data",)),
    (TrainSection, "study", GRID, ("train",)),
    (SamplerSection, "study", SAMPLED, ("sampler",)),
    (SchedulerSection, "study", GRID, ("scheduler",)),
    (ResourcesSection, "study", GRID, ("resources",)),
    (ObjectiveEntry, "study", {**GRID, "objectives": [{"name": "top1"}]}, ("objectives", 0)),
    (ProxySection, "study", GRID, ("proxy",)),
    (SpaceFile, "space", SPACE, ()),
    (SpaceFile, "study", SAMPLED, ("space",)),
]
_PARAM_BASE = {"choice": {"choice": [1, 2]}, "int": {"int": [1, 3]}, "float": {"float": [0.0, 1.0]}}


def _one_wrong_value_per_key() -> list[Any]:
    cases = []
    for model, kind, base, prefix in _SECTIONS:
        for key in _keys(model):
            cases.append(pytest.param(kind, base, prefix + (key,), id=f"{kind}: {dotted(prefix + (key,))}"))
    for key in _keys(ParamSpec):
        base = _with(SPACE, ("params", "x"), _PARAM_BASE.get(key, {"int": [1, 3]}))
        cases.append(pytest.param("space", base, ("params", "x", key), id=f"space: params.x.{key}"))
    return cases


@pytest.mark.parametrize("kind, base, path", _one_wrong_value_per_key())
def test_every_declared_key_is_read_and_checked_by_the_loader(kind: str, base: dict[str, Any], path: tuple,
                                                              tmp_path: Path) -> None:
    """A value the schema refuses for a key, the loader refuses at that key: a key the
    declaration adds but the loader ignores (or checks elsewhere) fails here."""
    wrong = next((v for v in _WRONG if _model_errors(kind, _with(base, path, v))), None)
    assert wrong is not None, f"no value in {_WRONG} is wrong for {dotted(path)}"
    if importlib.util.find_spec("jsonschema") is not None:
        assert _jsonschema_errors(kind, _with(base, path, wrong)), f"only the models refuse {wrong!r}"
    with pytest.raises(ConfigError) as err:
        _load(kind, _with(base, path, wrong), tmp_path)
    assert f": {dotted(path)}" in str(err.value), str(err.value)


@pytest.mark.parametrize("model, kind, base, prefix", [s for s in _SECTIONS if s[0] is not ProxySection],
                         ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_the_loader_accepts_exactly_the_declared_keys(model: type[BaseModel], kind: str, base: dict[str, Any],
                                                      prefix: tuple, tmp_path: Path) -> None:
    """An unknown key lists what is allowed: the declared keys, in their order."""
    with pytest.raises(ConfigError) as err:
        _load(kind, _with(base, prefix + ("not_a_key",), 1), tmp_path)
    assert f"unknown key 'not_a_key', allowed: {', '.join(_keys(model))}" in str(err.value)


def test_the_loader_accepts_exactly_the_declared_param_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _load("space", _with(SPACE, ("params", "x"), {"int": [1, 2], "not_a_key": 1}), tmp_path)
    assert f"unknown key 'not_a_key', allowed: {', '.join(_keys(ParamSpec))}" in str(err.value)


def test_the_loader_fills_in_the_declared_defaults(tmp_path: Path) -> None:
    study = _load("study", {**GRID, "scheduler": {}}, tmp_path)
    space = _load("space", {"params": {"a": {"int": [1, 2]}}}, tmp_path)

    def default(model: type[BaseModel], key: str) -> Any:
        return model.model_fields[key].default

    assert (study.task, study.seed, study.repeats) == tuple(default(StudyFile, k) for k in ("task", "seed", "repeats"))
    assert study.data.val_fraction == default(DataSection, "val_fraction")
    assert (study.train.epochs, study.train.batch_size) == (default(TrainSection, "epochs"),
                                                            default(TrainSection, "batch_size"))
    assert (study.resources.cpu, study.resources.gpu) == (default(ResourcesSection, "cpu"),
                                                          default(ResourcesSection, "gpu"))
    scheduler = study.scheduler
    assert scheduler is not None
    assert (scheduler.name, scheduler.grace_period, scheduler.reduction_factor) == tuple(
        default(SchedulerSection, k) for k in ("name", "grace_period", "reduction_factor"))
    assert space.params[0].log is default(ParamSpec, "log")


# --------------------------------------------------------------------------- the shipped schemas, the command


@pytest.mark.parametrize("kind", SCHEMA_KINDS)
def test_the_committed_schema_is_the_generated_one(kind: str) -> None:
    path = ROOT / "schemas" / f"{kind}.schema.json"
    assert path.is_file() and path.read_text(encoding="utf-8") == json_schema_text(kind), (
        f"{path.relative_to(ROOT)} is stale; regenerate it with `{REGENERATE.format(kind=kind)}`")


@pytest.mark.parametrize("kind", SCHEMA_KINDS)
def test_the_schema_is_draft_2020_12_with_an_id_title_and_hover_text(kind: str) -> None:
    schema = json_schema(kind)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"]
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)

    def properties(node: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
        found = []
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                found.append((f"{where}.{name}", sub))
            for key, sub in node.items():
                found += properties(sub, f"{where}.{key}" if key not in ("properties",) else where)
        elif isinstance(node, list):
            for sub in node:
                found += properties(sub, where)
        return found

    described = properties(schema, kind)
    assert described and all(sub.get("description") for _, sub in described), \
        [where for where, sub in described if not sub.get("description")]


def test_schema_command_prints_writes_and_refuses_a_bad_kind(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    for kind in SCHEMA_KINDS:
        code, out, err = run_cli(capsys, "schema", kind)
        assert (code, err) == (0, "") and json.loads(out) == json_schema(kind)
    target = tmp_path / "study.schema.json"
    code, out, err = run_cli(capsys, "schema", "study", "-o", str(target))
    assert (code, out) == (0, "") and target.read_text(encoding="utf-8") == json_schema_text("study")
    for args in (("schema", "studies"), ("schema",), ("schema", "space", "-o", str(tmp_path / "no" / "x.json"))):
        code, out, err = run_cli(capsys, *args)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert not (tmp_path / "no").exists()


def test_yaml_files_with_the_schema_line_still_load() -> None:
    for path in STUDIES:
        assert load_study(path, check=False).name
    for path in SPACES:
        assert load_space(path).params
