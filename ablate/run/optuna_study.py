"""The Optuna side of a run: open (or create) a study's storage and check it still holds the
same study, build its sampler, close what a killed driver left running, and count what
is already done. Only Optuna's public API is used.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

from ablate.study import Study, study_to_dict
from ablate.errors import ConfigError
from ablate.run.keys import train_identity, trial_config_key, trial_repeat
from ablate.storage import open_storage

__all__ = ["INTERRUPTED", "open_optuna_study", "make_sampler", "close_interrupted", "counts_toward_budget",
           "finished_runs", "state_counts"]

INTERRUPTED = "interrupted: the run that owned this trial stopped before it finished"


#: Keys of a study spec that must not change once a database holds trials of it.
_FROZEN_SPEC_KEYS = ("scale", "task", "data", "train", "objectives", "paper_resolution")


def open_optuna_study(study: Study, storage_url: str | None = None, *,
                      storage: optuna.storages.BaseStorage | None = None) -> optuna.Study:
    """Create or load the Optuna study for ``study`` and check that its spec still matches.

    ``storage`` is the opened ``storage_url`` when the caller holds it already.
    """
    url = storage_url or study.storage
    storage = storage if storage is not None else open_storage(url, create=True)
    directions = [o.direction for o in study.objectives]
    ostudy = optuna.create_study(study_name=study.name, storage=storage, directions=directions,
                                 load_if_exists=True, sampler=make_sampler(study))
    spec = study_to_dict(study)
    old = ostudy.user_attrs.get("spec")
    if old is None or not ostudy.trials:
        ostudy.set_user_attr("spec", spec)
        with warnings.catch_warnings():  # experimental since Optuna 3.2, but what optuna-dashboard reads
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            ostudy.set_metric_names([o.name for o in study.objectives])
    else:
        changed = [k for k in _FROZEN_SPEC_KEYS if _frozen(old, k) != _frozen(spec, k)]
        if "scale" in changed:
            raise ConfigError(f"{study.source or study.name}: {url} holds this study's {old.get('scale', 'proxy')}-"
                              f"scale run, allowed: --storage with another database for the {study.scale}-scale run")
        if changed:
            raise ConfigError(f"{study.source or study.name}: {', '.join(changed)} differ from the study already "
                              f"stored in {url} (its trials would not be comparable); use a new `name` or "
                              f"`--storage`")
        ostudy.set_user_attr("spec", spec)
    if list(ostudy.directions) != [_direction(d) for d in directions]:
        raise ConfigError(f"{study.source or study.name}: objectives' directions differ from the stored study")
    return ostudy


def _frozen(spec: Mapping[str, Any], key: str) -> Any:
    """A spec's value for a key that must not change, in a form that compares across versions:
    ``train`` fully resolved (a spec from before recipes trained with the ``proxy`` recipe)."""
    if key == "scale":
        return spec.get("scale", "proxy")
    if key == "train" and spec.get("train") is not None:
        from ablate.study import TrainSpec

        train = spec["train"]
        if "recipe" not in train:
            return {**train_identity(train), "seed": train.get("seed")}
        fields = {f.name for f in dataclasses.fields(TrainSpec)}
        return dataclasses.asdict(TrainSpec(**{k: v for k, v in train.items() if k in fields})
                                  .resolved(spec.get("scale", "proxy")))
    return spec.get(key)


def _direction(name: str) -> optuna.study.StudyDirection:
    return optuna.study.StudyDirection.MAXIMIZE if name == "maximize" else optuna.study.StudyDirection.MINIMIZE


def make_sampler(study: Study) -> optuna.samplers.BaseSampler:
    seed = study.sampler.seed
    name = study.sampler.name
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    if name == "nsga2":
        population = study.sampler.population_size
        return optuna.samplers.NSGAIISampler(seed=seed, **({"population_size": population} if population else {}))
    return optuna.samplers.RandomSampler(seed=seed)  # grid cells are enqueued; random for the rest


def close_interrupted(ostudy: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Close trials a killed run left RUNNING or WAITING as FAIL (Optuna's heartbeat does not
    cover ask/tell), so that they run again. Returns their numbers.

    ``storage`` is the one ``ostudy`` was opened on: its public API writes the states.
    """
    closed = []
    study_id = storage.get_study_id_from_name(ostudy.study_name)
    for t in ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, "error", INTERRUPTED)
        storage.set_trial_user_attr(trial_id, "interrupted", True)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        closed.append(t.number)
    return closed


def counts_toward_budget(t: optuna.trial.FrozenTrial) -> bool:
    """A trial that was trained to an end: not skipped (duplicate, infeasible), not interrupted."""
    if "candidate" not in t.user_attrs or t.user_attrs.get("skipped"):
        return False
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.FAIL and not t.user_attrs.get("interrupted"))


def finished_runs(ostudy: optuna.Study, task: str) -> dict[str, set[int]]:
    """Per configuration key, the repeats that need no more training: COMPLETE, PRUNED, or
    failed for a reason other than an interruption (a deterministic failure would only
    fail again). Every (configuration, repeat) trains exactly once. ``task`` is the
    study's (keys of trials stored before keys are computed with its builder)."""
    done: dict[str, set[int]] = {}
    for t in ostudy.get_trials(deepcopy=False):
        if counts_toward_budget(t):
            done.setdefault(trial_config_key(t, task), set()).add(trial_repeat(t))
    return done


def state_counts(ostudy: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in ostudy.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts

