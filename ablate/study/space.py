"""Search spaces as typed values, and the pure functions that turn them into Optuna terms.

A :class:`SearchSpace` is what a search-space YAML file (or a study's inline ``space:``)
becomes after :func:`ablate.study.load_space` has validated it: fixed values shared by
every candidate plus an ordered tuple of :class:`Param`. Everything here is a pure
function of its arguments (no I/O, no globals), so the conversion to Optuna's
distributions is tested from a table (STYLE §8) and the runner is the only place that
talks to a sampler.

Conventions, all Optuna's:

* Bounds are inclusive: ``{int: [1, 3]}`` can produce 1, 2 and 3.
* ``step`` must tile the range exactly (``high - low`` a multiple of ``step``), so the
  upper bound stays reachable instead of being silently lowered by Optuna.
* Categorical choices must be ``None``/bool/int/float/str for Optuna; a list choice
  (``depths: [1, 1, 2, 1]``) is stored as a tuple here and handed to Optuna as a JSON
  string (``"[1, 1, 2, 1]"``). :func:`suggest` and :func:`decode_params` turn it back.

``optuna`` is imported inside the functions that need it, so ``import ablate.study``
stays fast for ``ablate --help``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ablate.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    from optuna.distributions import BaseDistribution

__all__ = [
    "FrozenDict",
    "Param",
    "SearchSpace",
    "freeze",
    "thaw",
    "to_distributions",
    "active_params",
    "suggest",
    "encode_value",
    "decode_value",
    "encode_params",
    "decode_params",
    "grid_cells",
    "cell_key",
    "in_domain",
    "same_value",
    "dotted",
]

ParamKind = Literal["choice", "int", "float"]
_SCALARS = (type(None), bool, int, float, str)


class FrozenDict(Mapping[str, Any]):
    """An immutable, hashable, picklable mapping (values are frozen by :func:`freeze`).

    ``types.MappingProxyType`` would do for immutability, but it can neither be hashed
    nor pickled, and study objects travel to Ray workers by pickle.
    """

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, Any] | Iterator[tuple[str, Any]] = ()) -> None:
        object.__setattr__(self, "_data", dict(data))
        object.__setattr__(self, "_hash", None)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            object.__setattr__(self, "_hash", hash(frozenset(self._data.items())))
        return self._hash

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FrozenDict is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (self._data,))

    def __repr__(self) -> str:
        return f"FrozenDict({self._data!r})"


def freeze(value: Any) -> Any:
    """Deep-convert lists to tuples and mappings to :class:`FrozenDict` (scalars unchanged)."""
    if isinstance(value, Mapping):
        return FrozenDict((k, freeze(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Inverse of :func:`freeze`: tuples to lists, mappings to dicts; the result is JSON-able."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


def same_value(a: Any, b: Any) -> bool:
    """Equality that, unlike ``==``, keeps ``True`` apart from ``1`` (lists equal tuples).

    YAML users write ``[0, 1]`` and ``[false, true]`` for different things; plain ``==``
    would let ``True`` pass as a member of ``(0, 1)``.
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple, Mapping)) or isinstance(b, (list, tuple, Mapping)):
        return False
    return type(a) is type(b) and a == b or (_is_number(a) and _is_number(b) and a == b)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_choice_value(value: Any) -> bool:
    """A JSON scalar, or a (nested) tuple of them."""
    if isinstance(value, tuple):
        return all(_is_choice_value(v) for v in value)
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, _SCALARS)


def dotted(path: Sequence[str | int]) -> str:
    """A key path as users read it: ``("objectives", 1, "name")`` -> ``objectives[1].name``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _FieldError(ConfigError):
    """An invariant failed at ``key`` (a path inside the space), so the loader can point at its line."""

    def __init__(self, key: tuple[str | int, ...], reason: str) -> None:
        super().__init__(f"{dotted(key)}: {reason}")
        self.key = key
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched hyperparameter.

    Attributes:
        name: The arch, family-option or training key it sets (``window_size``, ``lr``).
        kind: ``choice`` (categorical), ``int`` or ``float``.
        choices: The values of a ``choice`` param, in declaration order (lists as tuples).
        low: Inclusive lower bound of an ``int``/``float`` param.
        high: Inclusive upper bound.
        step: Grid spacing of a numeric param (``int`` defaults to 1); must tile the range.
        log: Sample uniformly in log space (needs ``low > 0``, excludes ``step``).
        when: Activation condition: the param is sampled only if, for every key, the
            candidate's value for that key (an earlier param or a fixed key) is one of
            the listed values. Empty means always.
    """

    name: str
    kind: ParamKind
    choices: tuple[Any, ...] = ()
    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    log: bool = False
    when: Mapping[str, tuple[Any, ...]] = dataclasses.field(default_factory=FrozenDict)

    def __post_init__(self) -> None:
        # Freeze what callers may have passed as lists/dicts, so the value stays hashable.
        object.__setattr__(self, "choices", freeze(tuple(self.choices)))
        object.__setattr__(self, "when", FrozenDict((k, freeze(tuple(v))) for k, v in self.when.items()))
        if self.kind == "choice":
            self._check_choice()
        elif self.kind in ("int", "float"):
            self._check_numeric()
        else:
            raise _FieldError(("params", self.name, "kind",), f"must be one of 'choice', 'int', 'float', got {self.kind!r}")
        for key, values in self.when.items():
            if not values:
                raise _FieldError(("params", self.name, "when", key), "must list at least one value")

    def _check_choice(self) -> None:
        if not self.choices:
            raise _FieldError(("params", self.name, "choice",), "must list at least one value")
        for i, value in enumerate(self.choices):
            if not _is_choice_value(value):
                raise _FieldError(("params", self.name, "choice", i),
                                  f"must be null, a boolean, a number, a string or a list of them, got {thaw(value)!r}")
        for i, value in enumerate(self.choices):
            if any(same_value(value, earlier) for earlier in self.choices[:i]):
                raise _FieldError(("params", self.name, "choice", i), f"duplicate value {thaw(value)!r}")
        for key in ("low", "high", "step"):
            if getattr(self, key) is not None:
                raise _FieldError(("params", self.name, key,), "only for int and float params")
        if self.log:
            raise _FieldError(("params", self.name, "log",), "only for int and float params")

    def _check_numeric(self) -> None:
        if self.choices:
            raise _FieldError(("params", self.name, "choice",), f"not allowed in an {self.kind} param")
        is_int = self.kind == "int"
        what = "an integer" if is_int else "a number"
        for key in ("low", "high"):
            value = getattr(self, key)
            ok = isinstance(value, int) if is_int else _is_number(value)
            if not ok or isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
                raise _FieldError(("params", self.name, self.kind,), f"{key} must be {what}, got {value!r}")
            if abs(value) > MAX_RANGE:
                raise _FieldError(("params", self.name, self.kind,),
                                  f"{key} must be {what} in [-{MAX_RANGE:g}, {MAX_RANGE:g}], got {value!r}")
        if not is_int:
            object.__setattr__(self, "low", float(self.low))
            object.__setattr__(self, "high", float(self.high))
        low, high = self.low, self.high
        if low > high:
            raise _FieldError(("params", self.name, self.kind,), f"low must be <= high, got low={low!r}, high={high!r}")
        if is_int and self.step is None:
            object.__setattr__(self, "step", 1)
        step = self.step
        if step is not None:
            ok = (isinstance(step, int) if is_int else _is_number(step)) and not isinstance(step, bool)
            if not ok or step <= 0 or step > MAX_RANGE:
                raise _FieldError(("params", self.name, "step",), f"must be {'an integer' if is_int else 'a number'} "
                                                                  f"in (0, {MAX_RANGE:g}], got {step!r}")
            if not is_int:
                object.__setattr__(self, "step", float(step))
            if not _tiles(low, high, step):
                raise _FieldError(("params", self.name, "step",), f"must divide high - low so that high is reachable, "
                                                     f"got low={low!r}, high={high!r}, step={step!r}")
        if not isinstance(self.log, bool):
            raise _FieldError(("params", self.name, "log",), f"must be true or false, got {self.log!r}")
        if self.log:
            if low <= 0:
                raise _FieldError(("params", self.name, "log",), f"log scale needs low > 0, got low={low!r}")
            if step is not None and not (is_int and step == 1):
                raise _FieldError(("params", self.name, "log",), f"log and step cannot be combined, got step={step!r}")

    @property
    def encoded(self) -> bool:
        """Whether this param's choices travel through Optuna as JSON strings (a choice is a list)."""
        return self.kind == "choice" and any(isinstance(c, tuple) for c in self.choices)


#: The widest range a numeric param may span: any key's own bound is far inside it, and
#: beyond it ``(high - low) / step`` leaves the floats.
MAX_RANGE = 1e12


def _tiles(low: float, high: float, step: float) -> bool:
    if isinstance(low, int) and isinstance(high, int) and isinstance(step, int):
        return (high - low) % step == 0
    n = (high - low) / step
    return abs(n - round(n)) <= 1e-9 * max(1.0, abs(n))


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Values shared by every candidate plus the params a sampler explores, in order.

    Attributes:
        params: Searched params in declaration order (a ``when`` may only look back).
        fixed: Values applied to every candidate (lists frozen to tuples).
        name: Optional display name.
        source: Where it was read from (provenance only; ignored by ``==``).
    """

    params: tuple[Param, ...] = ()
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=FrozenDict)
    name: str | None = None
    source: str | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(self.params))
        object.__setattr__(self, "fixed", freeze(dict(self.fixed)))
        seen: set[str] = set()
        for p in self.params:
            if p.name in seen:
                raise _FieldError(("params", p.name), "declared twice")
            if p.name in self.fixed:
                raise _FieldError(("params", p.name), "also set in fixed, allowed: a key in either fixed or params")
            for key in p.when:
                if key not in seen and key not in self.fixed:
                    later = " (it is declared later; move it up)" if any(q.name == key for q in self.params) else ""
                    raise _FieldError(("params", p.name, "when", key), f"unknown key {key!r}{later}, "
                                      f"allowed: an earlier param or a fixed key: "
                                      f"{', '.join(sorted(seen | set(self.fixed))) or '(none)'}")
            seen.add(p.name)

    def param(self, name: str) -> Param | None:
        """The param called ``name``, or None."""
        return next((p for p in self.params if p.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        """Param names in declaration order."""
        return tuple(p.name for p in self.params)


# --------------------------------------------------------------------------- conversion


def in_domain(param: Param, value: Any) -> bool:
    """Whether ``value`` is one of the values ``param`` can take (inclusive bounds, on the step)."""
    if param.kind == "choice":
        return any(same_value(value, c) for c in param.choices)
    if not _is_number(value) or (param.kind == "int" and not isinstance(value, int)):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if not param.low <= value <= param.high:
        return False
    return param.step is None or _tiles(param.low, value, param.step)


def encode_value(param: Param, value: Any) -> Any:
    """The value as Optuna stores it (list choices as JSON strings; others unchanged)."""
    return json.dumps(thaw(value)) if param.encoded else value


def decode_value(param: Param, raw: Any) -> Any:
    """Inverse of :func:`encode_value`; list values come back as lists."""
    return json.loads(raw) if param.encoded else raw


def encode_params(space: SearchSpace, values: Mapping[str, Any]) -> dict[str, Any]:
    """Encode every value that names a param of ``space`` (e.g. for ``study.enqueue_trial``)."""
    out = {}
    for key, value in values.items():
        p = space.param(key)
        out[key] = encode_value(p, value) if p is not None else thaw(value)
    return out


def decode_params(space: SearchSpace, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Decode ``trial.params`` read from a storage back into plain values."""
    out = {}
    for key, value in raw.items():
        p = space.param(key)
        out[key] = decode_value(p, value) if p is not None else value
    return out


def to_distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """Every param of ``space`` as an Optuna distribution, keyed by name, in order.

    Conditional params are included too: Optuna accepts a param that only some trials
    suggest. Bounds are inclusive; list choices are JSON-encoded (see module docstring).
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, BaseDistribution] = {}
    for p in space.params:
        if p.kind == "choice":
            out[p.name] = CategoricalDistribution([encode_value(p, c) for c in p.choices])
        elif p.kind == "int":
            out[p.name] = IntDistribution(p.low, p.high, log=p.log, step=p.step)
        else:
            out[p.name] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
    return out


def active_params(space: SearchSpace, values: Mapping[str, Any]) -> list[Param]:
    """The params that apply given the values chosen so far, in declaration order.

    ``values`` holds fixed keys and param values; ``space.fixed`` fills keys it lacks.
    A param whose ``when`` fails is inactive, and its value (if any) does not count for
    params after it, so conditions chain.
    """
    context = {**space.fixed, **values}
    active = []
    for p in space.params:
        if _applies(p, context):
            active.append(p)
        else:
            context.pop(p.name, None)
    return active


def _applies(param: Param, context: Mapping[str, Any]) -> bool:
    return all(key in context and any(same_value(context[key], v) for v in allowed)
               for key, allowed in param.when.items())


def suggest(trial: optuna.Trial, space: SearchSpace, fixed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Ask ``trial`` for every active param of ``space``, in declaration order.

    Args:
        trial: An Optuna trial (from ``study.ask()`` or an objective function).
        space: The space to sample; its ``fixed`` values decide ``when`` conditions.
        fixed: Extra fixed values (a study's own ``fixed``) that override ``space.fixed``
            when deciding conditions.

    Returns:
        The sampled values only (not the fixed ones), list choices decoded to lists.
    """
    context = {**space.fixed, **(fixed or {})}
    out: dict[str, Any] = {}
    for p in space.params:
        if not _applies(p, context):
            continue
        if p.kind == "choice":
            raw = trial.suggest_categorical(p.name, [encode_value(p, c) for c in p.choices])
            value = decode_value(p, raw)
        elif p.kind == "int":
            value = trial.suggest_int(p.name, p.low, p.high, step=p.step, log=p.log)
        else:
            value = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
        out[p.name] = value
        context[p.name] = value
    return out


def grid_cells(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of a grid, the last key varying fastest.

    Deterministic: follows the mapping's key order and each value list's order. An
    empty grid has exactly one (empty) cell.
    """
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def cell_key(params: Mapping[str, Any]) -> str:
    """A canonical JSON text for a configuration (sorted keys, tuples as lists).

    Two candidates have the same key exactly when they would train the same model, so
    the runner uses it to skip a configuration that is already in the storage.
    """
    return json.dumps(thaw(params), sort_keys=True, separators=(",", ":"), allow_nan=False)
