"""Search-space files: YAML ↔ :class:`~ablate.study.space.SearchSpace`, with the same
file:line errors as study files."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


from ablate.study.space import (
    Param,
    SearchSpace,
    _FieldError,
    freeze,
    in_domain,
    same_value,
    thaw,
)
from ablate.study.doc import _Doc, _bool, _check_not_reserved, _json, _mapping, _read_yaml, _show, _str
# The keys of a space file and of one param come from its declaration (the JSON Schema's too).
from ablate.study.declaration import _PARAM_KEYS, _SPACE_KEYS
from ablate.errors import did_you_mean

__all__ = ["load_space", "space_from_dict", "space_to_dict"]


def load_space(path: str | os.PathLike[str]) -> SearchSpace:
    """Read and validate a search-space YAML file.

    Raises:
        ConfigError: one line ``file:line: key.path: what is wrong, allowed: ...``.
    """
    display = os.fspath(path)
    data, lines = _read_yaml(Path(path), display)
    doc = _Doc(display, lines, Path(path).resolve().parent)
    return _parse_space(doc, data, source=display)


def space_from_dict(d: Mapping[str, Any], source: str = "<spec>") -> SearchSpace:
    """Validate a search space given as a dict (same rules as a file, no line numbers)."""
    return _parse_space(_Doc(source, {}, Path.cwd()), d, source=None)


def space_to_dict(space: SearchSpace) -> dict[str, Any]:
    """The JSON-able form of ``space`` that :func:`space_from_dict` reads back to an equal space."""
    params: dict[str, Any] = {}
    for p in space.params:
        if p.kind == "choice":
            spec: dict[str, Any] = {"choice": thaw(p.choices)}
        else:
            spec = {p.kind: [p.low, p.high]}
            if p.step is not None and not (p.kind == "int" and p.step == 1):
                spec["step"] = p.step
            if p.log:
                spec["log"] = True
        if p.when:
            spec["when"] = thaw(p.when)
        params[p.name] = spec
    return {"name": space.name, "fixed": thaw(space.fixed), "params": params}


def _parse_space(doc: _Doc, data: Any, source: str | None) -> SearchSpace:
    if data is None:
        raise doc.error((), f"is empty, allowed: a mapping with keys {', '.join(_SPACE_KEYS)}")
    m = _mapping(doc, (), data, _SPACE_KEYS)
    name = m.get("name")
    if name is not None:
        _str(doc, ("name",), name)
    fixed = _mapping(doc, ("fixed",), m.get("fixed") or {})
    _json(doc, ("fixed",), fixed)
    for key in fixed:
        _check_not_reserved(doc, ("fixed", key), key)
    raw_params = _mapping(doc, ("params",), m.get("params") or {}, what="a mapping of param name to spec")
    params: list[Param] = []
    for pname, spec in raw_params.items():
        _check_not_reserved(doc, ("params", pname), pname)
        if pname in fixed:
            raise doc.error(("params", pname), "also set in fixed, allowed: a key in either fixed or params")
        params.append(_parse_param(doc, ("params", pname), pname, spec, params, fixed, list(raw_params)))
    try:
        return SearchSpace(params=tuple(params), fixed=fixed, name=name, source=source)
    except _FieldError as err:  # pragma: no cover - the checks above come first
        raise doc.error(err.key, err.reason) from None


def _parse_param(doc: _Doc, path: tuple, name: str, spec: Any, earlier: list[Param],
                 fixed: Mapping[str, Any], all_names: Sequence[str]) -> Param:
    m = _mapping(doc, path, spec, _PARAM_KEYS)
    kinds = [k for k in ("choice", "int", "float") if k in m]
    if len(kinds) != 1:
        got = ", ".join(kinds) if kinds else "none"
        raise doc.error(path, f"must have exactly one of choice, int, float, got {got}")
    kind = kinds[0]
    raw = m[kind]
    kwargs: dict[str, Any] = {}
    if kind == "choice":
        if not isinstance(raw, list) or not raw:
            raise doc.error(path + (kind,), f"must be a non-empty list of values, got {_show(raw)}")
        _json(doc, path + (kind,), raw)
        kwargs["choices"] = freeze(raw)
    else:
        if not isinstance(raw, list) or len(raw) != 2:
            raise doc.error(path + (kind,), f"must be [low, high] (inclusive), got {_show(raw)}")
        kwargs["low"], kwargs["high"] = raw
    if "step" in m:
        kwargs["step"] = m["step"]
    if "log" in m:
        kwargs["log"] = _bool(doc, path + ("log",), m["log"])
    when: dict[str, tuple] = {}
    if m.get("when") is not None:
        raw_when = _mapping(doc, path + ("when",), m["when"], what="a mapping of key to allowed values")
        known = {p.name: p for p in earlier}
        for key, values in raw_when.items():
            kpath = path + ("when", key)
            if key not in known and key not in fixed:
                later = (" (a param cannot depend on itself)" if key == name
                         else " (declared later; move it up)" if key in all_names else "")
                allowed = sorted(set(known) | set(fixed))
                raise doc.error(kpath, f"unknown key {key!r}{later}, allowed: an earlier param or a fixed key: "
                                       f"{', '.join(allowed) or '(none)'}" + did_you_mean(key, allowed))
            values = values if isinstance(values, list) else [values]
            _json(doc, kpath, values)
            if not values:
                raise doc.error(kpath, "must list at least one value")
            if key in known:
                for i, v in enumerate(values):
                    if not in_domain(known[key], v):
                        raise doc.error(kpath + (i,), f"{v!r} is not a value of param {key!r}, allowed: "
                                                      f"{_describe_domain(known[key])}")
            elif not any(same_value(fixed[key], v) for v in values):
                raise doc.error(kpath, f"fixed {key}={thaw(fixed[key])!r} is not one of {values!r}, so {name!r} "
                                       f"would never be sampled, allowed: values that include {thaw(fixed[key])!r}")
            when[key] = freeze(values)
    kwargs["when"] = when
    try:
        return Param(name=name, kind=kind, **kwargs)
    except _FieldError as err:
        raise doc.error(path + err.key[2:], err.reason) from None


def _describe_domain(p: Param) -> str:
    if p.kind == "choice":
        return ", ".join(repr(thaw(c)) for c in p.choices)
    step = f" step {p.step}" if p.step not in (None, 1) else ""
    return f"{'integers' if p.kind == 'int' else 'numbers'} in [{p.low}, {p.high}]{step}{' (log)' if p.log else ''}"

