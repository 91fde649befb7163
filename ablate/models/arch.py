"""The typed architecture: one candidate's model, resolved once, with its task as a field.

A study's candidate starts as the builder keys a YAML file and a sampler put together (a
plain mapping). :func:`ablate.models.resolve_architecture` validates it once, fills every
default and returns an :class:`Architecture`; from then on only that object travels: the
driver stores it in the trial, hands its JSON to the Ray worker (which re-validates it
once, at that boundary), and the builders, the FLOP counter and the trainer take it
without resolving it again. Which builder applies is the ``task`` field, never a guess
from the keys.

This module is the value object only (no builders), so the ViT and YOLO builders can
accept it without an import cycle; :mod:`ablate.models.factory` resolves, checks and
builds.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
from collections.abc import Mapping
from typing import Any, Literal, get_args

from ablate.errors import ConfigError

__all__ = ["Architecture", "Task", "TASKS"]

#: What a model is for: a classification backbone (the hierarchical ViT) or a YOLO detector.
Task = Literal["classify", "detect"]
TASKS: tuple[str, ...] = get_args(Task)


def _frozen(value: Any) -> Any:
    """A read-only view of a JSON value: mappings become mapping proxies, lists tuples."""
    if isinstance(value, Mapping):
        return types.MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _thawed(value: Any) -> Any:
    """The JSON form of a frozen value (mapping proxies to dicts, tuples to lists)."""
    if isinstance(value, Mapping):
        return {k: _thawed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thawed(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A resolved model: its task and the canonical builder keys of that task's builder.

    Do not construct it from unchecked keys: :func:`ablate.models.resolve_architecture`
    (or :meth:`from_json` through it) is the one way in, so holding an ``Architecture``
    means the keys were validated and every default is filled. The builders trust it
    and skip their own resolution.

    Attributes:
        task: ``classify`` (:mod:`ablate.models.vit`) or ``detect`` (:mod:`ablate.models.yolo`).
        spec: the resolved keys, read-only (the builder's canonical form: a fixed point of
            its resolver, JSON-serialisable once thawed by :meth:`to_dict`).
    """

    task: Task
    spec: Mapping[str, Any]

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        object.__setattr__(self, "spec", _frozen(copy.deepcopy(dict(self.spec))))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Architecture) and (self.task, self.to_dict()) == (other.task, other.to_dict())

    def __hash__(self) -> int:
        return hash((self.task, json.dumps(self.to_dict(), sort_keys=True)))

    def to_dict(self) -> dict[str, Any]:
        """The resolved keys as a fresh, mutable dict (what ``model.arch`` and older code see)."""
        return _thawed(self.spec)

    def to_json(self) -> dict[str, Any]:
        """The stored form (``user_attrs["arch"]``): the resolved keys plus ``task``."""
        return {"task": self.task, **self.to_dict()}

    @property
    def img_size(self) -> int:
        """The input side the model is built (and its costs counted) at."""
        return int(self.spec["img_size"])

    @property
    def preset(self) -> str | None:
        """The named preset it started from, if any."""
        return self.spec.get("preset")

    @property
    def num_classes(self) -> int:
        """Classes of the head (``num_classes`` of a ViT, ``nc`` of a YOLO model)."""
        return int(self.spec["nc" if self.task == "detect" else "num_classes"])

    @property
    def in_chans(self) -> int:
        """Input channels (YOLO models always take RGB)."""
        return 3 if self.task == "detect" else int(self.spec["in_chans"])

    def same_model(self, other: Architecture) -> bool:
        """Whether ``other`` is this model at (perhaps) another input size: the weights are the same."""
        strip = ("img_size",)
        mine = {k: v for k, v in self.to_dict().items() if k not in strip}
        theirs = {k: v for k, v in other.to_dict().items() if k not in strip}
        return self.task == other.task and mine == theirs

    def with_classes(self, n: int) -> Architecture:
        """The same model with a head for ``n`` classes (the data decides it, not the study).

        The class count is a plain builder integer that no other key depends on, so this
        checks only that value rather than resolving the whole architecture again.
        """
        key, low = ("nc", 1) if self.task == "detect" else ("num_classes", 0)
        if isinstance(n, bool) or not isinstance(n, int) or n < low:
            raise ConfigError(f"{key} must be an integer >= {low}, got {n!r}")
        return Architecture(self.task, {**self.to_dict(), key: n})
