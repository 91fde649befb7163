"""Search space → Optuna distributions, conditions, grid cells and cell keys (pure functions)."""

from __future__ import annotations

import json
import pickle

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from ablate.errors import ConfigError
from ablate.study.space import (
    FrozenDict,
    Param,
    SearchSpace,
    active_params,
    cell_key,
    decode_params,
    encode_params,
    grid_cells,
    in_domain,
    suggest,
    to_distributions,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

# (param, expected distribution) — inclusive bounds, step and log passed through unchanged.
DISTRIBUTIONS = [
    (Param("w", "choice", choices=(2, 4, 8)), CategoricalDistribution([2, 4, 8])),
    (Param("w", "choice", choices=(None, 7)), CategoricalDistribution([None, 7])),
    (Param("pool", "choice", choices=("fc", "mean")), CategoricalDistribution(["fc", "mean"])),
    (Param("bias", "choice", choices=(True, False)), CategoricalDistribution([True, False])),
    (Param("depths", "choice", choices=([1, 1, 2, 1], [2, 2, 2, 2])),
     CategoricalDistribution(["[1, 1, 2, 1]", "[2, 2, 2, 2]"])),
    (Param("mixed", "choice", choices=(None, [7, 7])), CategoricalDistribution(["null", "[7, 7]"])),
    (Param("level", "int", low=1, high=3), IntDistribution(1, 3)),
    (Param("dim", "int", low=16, high=64, step=16), IntDistribution(16, 64, step=16)),
    (Param("heads", "int", low=1, high=16, log=True), IntDistribution(1, 16, log=True)),
    (Param("one", "int", low=5, high=5), IntDistribution(5, 5)),
    (Param("lr", "float", low=1e-4, high=1e-2, log=True), FloatDistribution(1e-4, 1e-2, log=True)),
    (Param("dpr", "float", low=0, high=0.3), FloatDistribution(0.0, 0.3)),
    (Param("dpr", "float", low=0.0, high=0.2, step=0.05), FloatDistribution(0.0, 0.2, step=0.05)),
]


@pytest.mark.parametrize(("param", "expected"), DISTRIBUTIONS, ids=lambda x: getattr(x, "name", ""))
def test_to_distributions(param: Param, expected: object) -> None:
    got = to_distributions(SearchSpace(params=(param,)))
    assert got == {param.name: expected}


def test_to_distributions_keeps_declaration_order_and_conditionals() -> None:
    space = SearchSpace(params=(Param("b", "int", low=0, high=1), Param("a", "choice", choices=(1, 2),
                                                                        when={"b": [1]})))
    assert list(to_distributions(space)) == ["b", "a"]


# (kwargs, offending field path, words in the message)
BAD_PARAMS = [
    (dict(kind="choice", choices=()), "params.p.choice", "at least one"),
    (dict(kind="choice", choices=(1, 1)), "params.p.choice[1]", "duplicate"),
    (dict(kind="choice", choices=({"a": 1},)), "params.p.choice[0]", "must be null"),
    (dict(kind="choice", choices=(1, 2), step=1), "params.p.step", "only for int and float"),
    (dict(kind="int", low=3, high=1), "params.p.int", "low must be <= high"),
    (dict(kind="int", low=1.5, high=3), "params.p.int", "low must be an integer"),
    (dict(kind="int", low=0, high=10, step=0), "params.p.step", "in (0, 1e+12]"),
    (dict(kind="int", low=0, high=10, step=3), "params.p.step", "must divide high - low"),
    (dict(kind="float", low=0.0, high=1e308, step=0.1), "params.p.float", "high must be a number in [-1e+12, 1e+12]"),
    (dict(kind="int", low=-2 ** 64, high=0), "params.p.int", "low must be an integer in [-1e+12, 1e+12]"),
    (dict(kind="int", low=0, high=8, log=True), "params.p.log", "low > 0"),
    (dict(kind="int", low=1, high=9, step=2, log=True), "params.p.log", "cannot be combined"),
    (dict(kind="float", low=0.0, high=1.0, log=True), "params.p.log", "low > 0"),
    (dict(kind="float", low=0.1, high=1.0, step=0.1, log=True), "params.p.log", "cannot be combined"),
    (dict(kind="float", low=0.0, high=1.0, step=0.3), "params.p.step", "must divide"),
    (dict(kind="bayes"), "params.p.kind", "must be one of"),
]


@pytest.mark.parametrize(("kwargs", "where", "words"), BAD_PARAMS)
def test_param_invariants(kwargs: dict, where: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        Param("p", **kwargs)
    assert str(info.value).startswith(where + ": ")
    assert words in str(info.value)


def test_space_invariants() -> None:
    a = Param("a", "int", low=0, high=1)
    with pytest.raises(ConfigError, match=r"params\.a: declared twice"):
        SearchSpace(params=(a, a))
    with pytest.raises(ConfigError, match=r"params\.a: also set in fixed"):
        SearchSpace(params=(a,), fixed={"a": 1})
    with pytest.raises(ConfigError, match=r"params\.b\.when\.c: unknown key 'c' \(it is declared later"):
        SearchSpace(params=(Param("b", "int", low=0, high=1, when={"c": [1]}), Param("c", "int", low=0, high=1)))


IN_DOMAIN = [
    (Param("w", "choice", choices=(2, 4)), 4, True),
    (Param("w", "choice", choices=(2, 4)), 3, False),
    (Param("w", "choice", choices=(0, 1)), True, False),  # True is not 1 here
    (Param("b", "choice", choices=(True, False)), 1, False),
    (Param("w", "choice", choices=(None, 7)), None, True),
    (Param("d", "choice", choices=([1, 2],)), [1, 2], True),
    (Param("d", "choice", choices=([1, 2],)), (1, 2), True),
    (Param("d", "choice", choices=([1, 2],)), [2, 1], False),
    (Param("i", "int", low=1, high=3), 1, True),
    (Param("i", "int", low=1, high=3), 3, True),
    (Param("i", "int", low=1, high=3), 4, False),
    (Param("i", "int", low=1, high=3), 2.0, False),
    (Param("i", "int", low=1, high=3), True, False),
    (Param("i", "int", low=16, high=64, step=16), 48, True),
    (Param("i", "int", low=16, high=64, step=16), 40, False),
    (Param("f", "float", low=0.0, high=0.3), 0.3, True),
    (Param("f", "float", low=0.0, high=0.3), 0, True),
    (Param("f", "float", low=0.0, high=0.3), 0.31, False),
    (Param("f", "float", low=0.0, high=0.2, step=0.05), 0.15, True),
    (Param("f", "float", low=0.0, high=0.2, step=0.05), 0.12, False),
    (Param("f", "float", low=0.0, high=1.0), "0.5", False),
]


@pytest.mark.parametrize(("param", "value", "expected"), IN_DOMAIN)
def test_in_domain(param: Param, value: object, expected: bool) -> None:
    assert in_domain(param, value) is expected


CONDITIONAL = SearchSpace(
    fixed={"attention": "softmax"},
    params=(
        Param("window_size", "choice", choices=(None, 4, 8)),
        Param("shift_size", "choice", choices=(0, 2), when={"window_size": [4, 8]}),
        Param("rel_pos_bias", "choice", choices=(True, False), when={"shift_size": [2]}),
        Param("focal_level", "int", low=1, high=3, when={"attention": ["focal"]}),
    ),
)

ACTIVE = [
    ({}, ["window_size"]),
    ({"window_size": None}, ["window_size"]),
    ({"window_size": 4}, ["window_size", "shift_size"]),
    ({"window_size": 4, "shift_size": 2}, ["window_size", "shift_size", "rel_pos_bias"]),
    # shift_size is inactive under a global window, so its stale value cannot switch on rel_pos_bias
    ({"window_size": None, "shift_size": 2}, ["window_size"]),
    ({"attention": "focal", "window_size": None}, ["window_size", "focal_level"]),
]


@pytest.mark.parametrize(("values", "expected"), ACTIVE)
def test_active_params(values: dict, expected: list[str]) -> None:
    assert [p.name for p in active_params(CONDITIONAL, values)] == expected


def test_suggest_follows_conditions_and_decodes_lists() -> None:
    space = SearchSpace(params=CONDITIONAL.params + (
        Param("depths", "choice", choices=([1, 1, 2, 1], [2, 2, 2, 2])),
        Param("lr", "float", low=1e-4, high=1e-2, log=True),
        Param("dim", "int", low=16, high=64, step=16),
    ), fixed=CONDITIONAL.fixed)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        values = suggest(trial, space)
        assert [p.name for p in active_params(space, values)] == list(values)
        assert values["depths"] in ([1, 1, 2, 1], [2, 2, 2, 2])
        assert "focal_level" not in values
        assert 16 <= values["dim"] <= 64 and values["dim"] % 16 == 0
        assert isinstance(trial.params["depths"], str)
        assert decode_params(space, trial.params) == values
        seen.add(values["window_size"])
        study.tell(trial, 0.0)
    assert seen == {None, 4, 8}
    # the study's own fixed values decide conditions too
    trial = study.ask()
    assert "focal_level" in suggest(trial, space, fixed={"attention": "focal"})


def test_encode_params_round_trips() -> None:
    space = SearchSpace(params=(Param("depths", "choice", choices=([1, 2], [3, 4])),))
    raw = encode_params(space, {"depths": (3, 4), "other": (1,)})
    assert raw == {"depths": "[3, 4]", "other": [1]}
    assert decode_params(space, raw) == {"depths": [3, 4], "other": [1]}


GRIDS = [
    ({}, [{}]),
    ({"w": [2, 4, 8]}, [{"w": 2}, {"w": 4}, {"w": 8}]),
    ({"w": [2, 4], "l": [1, 2, 3]},
     [{"w": 2, "l": 1}, {"w": 2, "l": 2}, {"w": 2, "l": 3}, {"w": 4, "l": 1}, {"w": 4, "l": 2}, {"w": 4, "l": 3}]),
    ({"l": [1, 2], "w": [2]}, [{"l": 1, "w": 2}, {"l": 2, "w": 2}]),
    ({"d": [[1, 2], [3, 4]]}, [{"d": [1, 2]}, {"d": [3, 4]}]),
]


@pytest.mark.parametrize(("grid", "expected"), GRIDS)
def test_grid_cells(grid: dict, expected: list[dict]) -> None:
    cells = grid_cells(grid)
    assert cells == expected
    assert [list(c) for c in cells] == [list(grid)] * len(cells)  # key order kept
    assert grid_cells(grid) == cells  # deterministic


def test_cell_key_is_canonical() -> None:
    assert cell_key({"b": 1, "a": [1, 2]}) == cell_key({"a": (1, 2), "b": 1}) == '{"a":[1,2],"b":1}'
    assert cell_key({"w": None}) == '{"w":null}'
    assert cell_key({"w": 2}) != cell_key({"w": 4})
    assert cell_key(FrozenDict({"x": FrozenDict({"z": 1, "y": (2,)})})) == '{"x":{"y":[2],"z":1}}'
    assert json.loads(cell_key({"a": 0.1})) == {"a": 0.1}


def test_value_objects_are_frozen_hashable_and_picklable() -> None:
    p = Param("d", "choice", choices=[[1, 2]], when={"a": [1]})
    assert p.choices == ((1, 2),) and p.when == {"a": (1,)}
    space = SearchSpace(params=(Param("a", "int", low=0, high=1), p), fixed={"x": [1]}, source="a.yaml")
    assert space.fixed == {"x": (1,)}
    assert hash(space) == hash(SearchSpace(params=space.params, fixed={"x": (1,)}))  # source ignored
    assert pickle.loads(pickle.dumps(space)) == space
    with pytest.raises(AttributeError):
        space.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        space.fixed["x"] = 2  # type: ignore[index]
