"""The Optuna side of a run: open (or create) a study's storage and check it still holds the
same study (the stored spec is the truth), build its sampler, and say which stored trials
count as done. Only Optuna's public API is used; claims are :mod:`ablate.run.claims`'.
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
from ablate.run.keys import train_identity
from ablate.storage import display_url, open_storage

__all__ = ["BUDGET_KEYS", "INTERRUPTED", "open_optuna_study", "spec_differences", "stored_spec", "make_sampler",
           "counts_toward_budget", "state_counts"]

INTERRUPTED = "interrupted: the run that owned this trial stopped before it finished"


#: Keys of a study spec that a driver may set differently from the stored one: how much to
#: run and where, never what a trial is (DESIGN.md: the stored spec is the truth).
BUDGET_KEYS = ("trials", "repeats", "max_concurrent", "resources", "storage", "description")


def open_optuna_study(study: Study, storage_url: str | None = None, *,
                      storage: optuna.storages.BaseStorage | None = None) -> optuna.Study:
    """Create or load the Optuna study for ``study``; the spec stored first is the truth.

    A driver whose study differs from the stored spec in anything but :data:`BUDGET_KEYS`
    (and a grid that only grows) is refused, naming the keys; nothing is overwritten, so
    drivers started together or later all train the same study. ``storage`` is the
    opened ``storage_url`` when the caller holds it already.

    Raises:
        ConfigError: the stored study differs (exit 2 at the command line).
    """
    url = storage_url or study.storage
    storage = storage if storage is not None else open_storage(url, create=True)
    directions = [o.direction for o in study.objectives]
    ostudy = optuna.create_study(study_name=study.name, storage=storage, directions=directions,
                                 load_if_exists=True, sampler=make_sampler(study))
    spec = stored_spec(study)
    if ostudy.user_attrs.get("spec") is None:
        ostudy.set_user_attr("spec", spec)
        with warnings.catch_warnings():  # experimental since Optuna 3.2, but what optuna-dashboard reads
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            ostudy.set_metric_names([o.name for o in study.objectives])
    old = optuna.load_study(study_name=study.name, storage=storage).user_attrs["spec"]  # who wrote first
    where = f"{study.source or study.name}"
    if old.get("scale", "proxy") != spec.get("scale", "proxy"):
        raise ConfigError(f"{where}: {display_url(url)} holds this study's {old.get('scale', 'proxy')}-scale run, "
                          f"allowed: --storage with another database for the {study.scale}-scale run")
    changed = spec_differences(old, spec)
    if changed:
        raise ConfigError(f"{where}: {', '.join(changed)} differ from the study stored in {display_url(url)} "
                          f"(its trials would not be comparable; only {', '.join(BUDGET_KEYS)} and added grid "
                          f"values may change), allowed: the stored values, a new `name` or `--storage`")
    if old.get("grid") != spec.get("grid") and _grid_grows(old.get("grid"), spec.get("grid")):
        ostudy.set_user_attr("spec", {**old, "grid": spec["grid"]})  # a grid only ever grows
    if list(ostudy.directions) != [_direction(d) for d in directions]:
        raise ConfigError(f"{where}: objectives' directions differ from the stored study")
    return ostudy


def stored_spec(study: Study) -> dict[str, Any]:
    """The study as the database and Ray's trial configs hold it: resolved, with any password
    in the storage URL masked (a secret is never stored; the driver connects with its own URL)."""
    return {**study_to_dict(study), "storage": display_url(study.storage)}


def spec_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The keys (dotted for ``train`` and ``proxy``) in which ``new`` differs from the stored ``old``.

    Keys a spec from an older ablate does not have are not compared (but ``weights``, compared by
    content, is absent exactly when a study starts from scratch); budget keys never are;
    a grid that keeps every stored value (and adds some) does not differ.
    """
    out = []
    # weights: compared by content (sha256) both ways: a spec without it (older ablate) started from scratch.
    if (old.get("weights") or {}).get("sha256") != (new.get("weights") or {}).get("sha256"):
        out.append("weights")
    for key in new:
        if key in BUDGET_KEYS or key not in old or key in ("scale", "weights"):
            continue
        if key == "grid":
            if old["grid"] != new["grid"] and not _grid_grows(old["grid"], new["grid"]):
                out.append("grid")
        elif key == "proxy" and isinstance(old["proxy"], Mapping) and isinstance(new["proxy"], Mapping):
            keys = sorted(set(old["proxy"]) | set(new["proxy"]))
            out += [f"proxy.{k}" for k in keys if k != "repeats" and old["proxy"].get(k) != new["proxy"].get(k)]
        elif key == "train":
            a, b = _frozen(old, "train"), _frozen(new, "train")
            out += [f"train.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif _frozen(old, key) != _frozen(new, key):
            out.append(key)
    return out


def _grid_grows(old: Any, new: Any) -> bool:
    """Whether ``new`` keeps every cell of ``old`` (same keys, every stored value or row still there)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return set(old) == set(new) and all(all(v in new[k] for v in vs) for k, vs in old.items())
    if isinstance(old, list) and isinstance(new, list):
        return all(row in new for row in old)
    return False


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
        full = dataclasses.asdict(TrainSpec(**{k: v for k, v in train.items() if k in fields})
                                  .resolved(spec.get("scale", "proxy")))
        full.pop("compile")  # how a driver runs its trials (torch.compile), not what they compute
        return full
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


def counts_toward_budget(t: optuna.trial.FrozenTrial) -> bool:
    """A trial that was trained to an end: not skipped (duplicate, infeasible), not interrupted."""
    if "candidate" not in t.user_attrs or t.user_attrs.get("skipped"):
        return False
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.FAIL and not t.user_attrs.get("interrupted"))


def state_counts(ostudy: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in ostudy.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts

