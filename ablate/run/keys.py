"""Configuration keys and repeats: which stored trials are the same model trained the same
way (a configuration), and which seed of it each one is."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

import optuna

from ablate.study import Study
from ablate.study.space import cell_key

__all__ = ["config_key", "key_from_resolved", "key_of", "trial_config_key", "trial_repeat", "train_identity"]


def trial_repeat(t: optuna.trial.FrozenTrial) -> int:
    """Which repeat (seed offset) a stored trial is; trials from before repeats are repeat 0."""
    return int(t.user_attrs.get("repeat", 0))


def trial_config_key(t: optuna.trial.FrozenTrial, task: str) -> str:
    """The configuration key a stored trial carries (computed for trials from before keys,
    with its study's ``task``)."""
    key = t.user_attrs.get("config_key")
    return key if key is not None else key_of(t.user_attrs["candidate"], t.user_attrs.get("train"), task)


def key_of(candidate: Mapping[str, Any], train: Mapping[str, Any] | None, task: str) -> str:
    """Equal keys mean the same model trained the same way (architecture and training keys:
    two grid cells that differ only in ``lr`` are different configurations), whatever the
    seed: the repeats of a configuration share its key.

    The architecture is taken in its resolved form, so two spellings of one model (a
    YOLO cell with ``attention: none`` and any placement) are one configuration. A short
    hash of that canonical text, so that tables and JSON can show it.
    """
    return key_from_resolved(_canonical(candidate, task), train)


def key_from_resolved(arch: Mapping[str, Any], train: Mapping[str, Any] | None) -> str:
    """:func:`key_of` of a candidate already in its resolved form (an
    :class:`~ablate.models.Architecture`'s keys before the data set's classes are set)."""
    text = cell_key({"arch": arch, "train": train_identity(train)})
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def train_identity(train: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A trial's training settings without its seed and ``compile``, in today's full form.

    Trials stored before recipes carry only the keys of the time; they trained with what
    is now the ``proxy`` recipe, so its values fill the rest.
    """
    if train is None:
        return None
    from ablate.train.recipes import resolve_recipe

    full = dict(train)
    if "recipe" not in full:
        full = {**full, **resolve_recipe("proxy", full), "recipe": "proxy"}
    full.pop("seed", None)
    full.pop("compile", None)  # how a trial runs (torch.compile), not what it computes
    return full


def _canonical(candidate: Mapping[str, Any], task: str) -> Mapping[str, Any]:
    """The builder's resolved form of a candidate; the candidate itself if it does not resolve."""
    from ablate.errors import AblateError
    from ablate.models import resolve_architecture

    try:
        return resolve_architecture(dict(candidate), task).to_dict()  # type: ignore[arg-type]
    except AblateError:
        return candidate


def config_key(study: Study, params: Mapping[str, Any]) -> str:
    """The key of one proposal (see :func:`_key`), before it is stored."""
    return key_of(study.candidate(params), dataclasses.asdict(study.train_for(params)), study.task)

