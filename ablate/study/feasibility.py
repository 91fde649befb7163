"""Feasibility: a study's fixed and grid keys, and every grid cell, checked against the
model builders before anything trains.

The builders (:func:`ablate.models.resolve_architecture`,
:func:`ablate.models.check_architecture`) are imported lazily: loading a study must stay fast and torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


from ablate.errors import ConfigError, Infeasible
from ablate.study.space import (
    same_value,
    thaw,
)
from ablate.study.schema import LABEL, Study, TRAIN_KEYS
from ablate.study.doc import _Doc, _check_train_value

__all__ = ["arch_api"]


def arch_api(task: str = "classify") -> tuple[Callable[[Mapping[str, Any]], dict],
                                               Callable[..., None]]:
    """``(resolve, check)`` of builder keys for the task (:mod:`ablate.models.factory`,
    imported here: it imports torch)."""
    from ablate.models import check_architecture, resolve_architecture
    from ablate.models.memory import check_memory

    def resolve(keys: Mapping[str, Any]) -> dict:
        return resolve_architecture(keys, task).to_dict()  # type: ignore[arg-type]

    def check(keys: Mapping[str, Any], *, train: bool = True) -> None:
        arch = resolve_architecture(keys, task)  # type: ignore[arg-type]
        check_architecture(arch)
        check_memory(arch, train=train)  # even one image must fit this machine (models/memory.py)

    return resolve, check


def _strip_key(message: str, key: str) -> str:
    """Drop a leading ``key:`` the builder may have put in front of its message (we add the path)."""
    for prefix in (f"{key}: ", f"{key!r}: ", f"arch.{key}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def _check_against_models(study: Study, doc: _Doc, space_doc: _Doc) -> None:
    """Every fixed/grid/param key must be one the builder knows; every grid cell must build."""
    from ablate.models.memory import DoesNotFit  # imports torch, as the builders do

    resolve_arch, check_arch = arch_api(study.task)
    # (key, value, where, path) in the order the candidate is assembled; `attention` first,
    # because which family options exist depends on it.
    entries: list[tuple[str, Any, _Doc, tuple]] = []
    if study.base is not None:
        entries.append(("preset", study.base, doc, ("base",)))
    for key, value in study.space.fixed.items():
        if key not in study.fixed and key not in study.grid:
            entries.append((key, value, space_doc, ("fixed", key)))
    entries += [(k, v, doc, ("fixed", k)) for k, v in study.fixed.items()]
    if study.proxy is not None:
        entries += [(k, v, doc, ("proxy", k)) for k, v in study.proxy.arch.items()]
    if study.grid_rows is None:  # a list-form grid's rows may set unrelated keys: each row is checked below
        entries += [(k, vs[0], doc, ("grid", k)) for k, vs in study.grid.items()]
    entries.sort(key=lambda e: (e[0] != "preset", e[0] != "attention"))

    arch: dict[str, Any] = {"img_size": study.data.image_size}
    for key, value, where, path in entries:
        if key in TRAIN_KEYS:
            continue
        arch[key] = thaw(value)
        try:
            resolve_arch(dict(arch))
        except Infeasible:
            pass  # a combination problem, not an unknown key; grid cells are checked below
        except ConfigError as err:
            message = str(err) if key == "preset" else _strip_key(str(err), key)
            raise where.error(path, message.replace("preset", "base", 1) if key == "preset" else message) from None

    # Searched params: probe each declared value (both bounds of a range) with its `when` met.
    free = study.free_space
    for p in free.params:
        if p.name in TRAIN_KEYS:
            for value in p.choices or (p.low, p.high):
                _check_train_value(space_doc, ("params", p.name), p.name, value)
            continue
        if not all(any(same_value(free.fixed[k], v) for v in vs) for k, vs in p.when.items() if k in free.fixed):
            continue  # never active under this study's fixed values (e.g. another family's option)
        base = {**arch, **{k: thaw(v[0]) for k, v in p.when.items() if k not in free.fixed}}
        # A searched `attention` (e.g. per-stage patterns LLLL / LLSS): a family option is
        # valid when at least one of the families it can meet accepts it.
        families = [{}]
        searched = next((q for q in free.params if q.name == "attention"), None)
        if searched is not None and p.name != "attention" and "attention" not in p.when:
            families = [{"attention": thaw(c)} for c in searched.choices or ()] or [{}]
        for value in p.choices or (p.low, p.high):
            first: ConfigError | None = None
            for family in families:
                try:
                    resolve_arch({**base, **family, p.name: thaw(value)})
                except Infeasible:
                    first = None
                    break  # the sampler marks such candidates infeasible at run time
                except ConfigError as err:
                    first = first or err
                    continue
                first = None
                break
            if first is not None:
                raise space_doc.error(("params", p.name), _strip_key(str(first), p.name)) from None

    if not study.grid:
        return
    keys = [k for k in study.grid if k != LABEL]
    for row, cell in enumerate(study.cells()):
        # What trains, and the paper-scale model of the cost column (the unscaled base).
        candidates = [(study.candidate(cell), study.data.image_size)]
        paper = study.paper_candidate(cell)
        if paper is not None:
            candidates.append((paper, study.paper_resolution))
        for i, (candidate, res) in enumerate(candidates):
            try:
                check_arch(candidate, train=i == 0)  # the paper-scale twin is only measured
            except (Infeasible, ConfigError) as err:
                reason = str(err)
                # Point at the key the reason names: a grid key, a proxy override (what
                # trains at proxy scale), else a fixed one (heads not dividing a fixed width
                # is the fixed value's fault, whatever the cell).
                proxied = study.proxy.arch if study.scaled and i == 0 and study.proxy is not None else {}
                at = (lambda k: ("grid", row, k)) if study.grid_rows is not None else (lambda k: ("grid", k))
                path = _size_key(study, doc, i) if isinstance(err, DoesNotFit) else None
                path = path or next((at(k) for k in keys if k in reason and k in cell), None) or next(
                    (("proxy", k) for k in proxied if k in reason), None) or next(
                    (("fixed", k) for k in study.fixed if k in reason), None) or (
                    ("grid", row) if study.grid_rows is not None else
                    ("grid", keys[0]) if len(keys) == 1 else ("grid",))
                extra = []
                if study.grid_rows is not None and LABEL in cell:
                    extra.append(f"row {cell[LABEL]!r}")
                elif len(keys) > 1:
                    extra.append("cell " + ", ".join(f"{k}={v!r}" for k, v in cell.items()))
                if i == 1:
                    extra.append(f"the paper-scale model at paper_resolution {res}")
                elif study.scaled:
                    extra.append("the proxy-scale model")
                suffix = f" ({'; '.join(extra)})" if extra else ""
                raise doc.error(path, reason + suffix) from None


def _size_key(study: Study, doc: _Doc, i: int) -> tuple | None:
    """Where the image size of candidate ``i`` (0: what trains, 1: its paper-scale twin) was set,
    for a model too large for the machine: the usual culprit, and the key a user lowers."""
    if i == 1:
        return ("paper_resolution",)
    if study.scaled and study.proxy is not None and study.proxy.image_size is not None:
        return ("proxy", "image_size")
    if ("data", "image_size") in doc.lines:
        return ("data", "image_size")
    return ("paper_resolution",) if ("paper_resolution",) in doc.lines else None
