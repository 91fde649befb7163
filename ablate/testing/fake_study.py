"""A generated study database, for benchmarking and testing the readers (reports, dashboards).

Nothing here trains: values are a made-up, seeded function of the settings, so that a
2,000-trial study can be written in seconds and read back as if a long search had made it.
The study is marked ``user_attrs["generated"] = True`` and says so in its description.

Like a real study with ``repeats: N``, every sampled configuration is trained N times (3
by default): the runs share the configuration's ``config_key`` and carry ``repeat`` and
``seed``; their accuracy differs by a seed noise of 0.6 points (standard deviation) around
the configuration's own value, while the costs are the same, so the readers' aggregates
(means, intervals, the noise floor) have something to chew on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import warnings
from typing import Any

__all__ = ["write_fake_study"]

_FAMILIES = ("softmax", "focal", "flatten", "biformer")
_COST = {"softmax": 1.0, "focal": 1.35, "flatten": 0.9, "biformer": 1.1}
_SKILL = {"softmax": 0.0, "focal": 1.5, "flatten": 1.0, "biformer": 1.2}
#: Seed-to-seed standard deviation of a configuration's top-1 (points).
SEED_NOISE = 0.6


def fake_spec(name: str, storage: str, n_trials: int = 2000, repeats: int = 3) -> dict[str, Any]:
    """The resolved spec of a random-search study over four attention families, ``repeats`` seeds each."""
    from ablate.study import study_from_dict, study_to_dict

    raw = {
        "name": name,
        "description": "generated for benchmarks: values are a made-up function of the settings, nothing trained",
        "task": "classify",
        "space": {"fixed": {"num_heads": 2}, "params": {
            "attention": {"choice": list(_FAMILIES)},
            "window_size": {"choice": [2, 4, 8]},
            "embed_dim": {"int": [32, 96], "step": 16},
            "depths": {"choice": [[1, 1, 2, 1], [1, 1, 4, 1], [2, 2, 2, 2]]},
            "lr": {"float": [5.0e-4, 5.0e-3], "log": True},
        }},
        "objectives": [{"name": "top1", "direction": "maximize"}, {"name": "gflops", "direction": "minimize"}],
        "data": {"name": "digits", "image_size": 32},
        "train": {"epochs": 10, "batch_size": 64, "lr": 2.0e-3, "seed": 0},
        "sampler": {"name": "random"},
        "trials": max(-(-n_trials // repeats), 1),  # configurations, each trained `repeats` times
        "repeats": repeats,
        "paper_resolution": 224,
        "storage": storage,
    }
    return study_to_dict(study_from_dict(raw, check=False))


def write_fake_study(url: str, n_trials: int = 2000, *, seed: int = 0, name: str = "generated",
                     repeats: int = 3) -> None:
    """Write a study of ``n_trials`` generated trials (COMPLETE, PRUNED, FAIL, RUNNING) to ``url``.

    Trials come in runs of ``repeats`` per sampled configuration (the last configuration
    may have fewer), in the order the runner trains them. They carry everything a real
    one does (``arch``, costs, a per-epoch ``curve``, ``config_key``, ``repeat``, ``seed``,
    ``error`` for failures), so a reader cannot tell them apart by shape.
    """
    import optuna
    from optuna.trial import TrialState, create_trial

    from ablate.run.optuna_study import make_sampler
    from ablate.study import study_from_dict
    from ablate.study.space import cell_key, suggest
    from ablate.storage import display_url, open_storage

    spec = fake_spec(name, display_url(url), n_trials, repeats)  # a password is never stored
    study = study_from_dict(spec, check=False)
    rng = random.Random(seed)
    # The runner's one study -> sampler mapping (a random sampler here), seeded with `seed`;
    # the stored spec keeps its own sampler seed, so generated databases stay as they were.
    sampler = make_sampler(dataclasses.replace(study, sampler=dataclasses.replace(study.sampler, seed=seed)))
    scratch = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    target = optuna.create_study(study_name=name, storage=open_storage(url, create=True),
                                 directions=["maximize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        target.set_metric_names(["top1", "gflops"])
    target.set_user_attr("spec", spec)
    target.set_user_attr("generated", True)
    made = []
    for number in range(n_trials):
        repeat = number % max(repeats, 1)
        if repeat == 0:
            asked = scratch.ask()
            params = suggest(asked, study.space, study.fixed)
            scratch.tell(asked, state=TrialState.FAIL)
            key = hashlib.sha1(cell_key(params).encode()).hexdigest()[:12]
            config_top1 = _config_top1(params, rng)
        made.append(_fake_trial(study, params, asked.params, asked.distributions, number, n_trials, rng,
                                create_trial, TrialState, key=key, repeat=repeat, config_top1=config_top1))
    target.add_trials(made)


def _gflops(params: dict[str, Any]) -> float:
    family, dim = params["attention"], params["embed_dim"]
    blocks = sum(params["depths"])
    return round(0.0009 * _COST[family] * dim * dim / 32 * blocks * (1 + 0.05 * params["window_size"]), 6)


def _config_top1(params: dict[str, Any], rng: random.Random) -> float:
    """A configuration's own accuracy: a made-up function of its settings plus its luck."""
    return 80 + _SKILL[params["attention"]] + 6 * (1 - math.exp(-_gflops(params) / 0.03)) \
        - 8 * abs(math.log10(params["lr"] / 2e-3)) + rng.gauss(0, 1.0)


def _fake_trial(study, params, raw, distributions, number, n_trials, rng, create_trial, TrialState, *, key, repeat,
                config_top1):
    dim = params["embed_dim"]
    blocks = sum(params["depths"])
    gflops = _gflops(params)
    params_m = round(0.012 * dim * dim / 32 * blocks, 4)
    top1 = round(min(config_top1 + rng.gauss(0, SEED_NOISE), 99.5), 3)
    epochs = study.train.epochs
    roll = rng.random()
    state = TrialState.COMPLETE
    if number >= n_trials - 2:
        state = TrialState.RUNNING
    elif roll < 0.05:
        state = TrialState.FAIL
    elif roll < 0.13:
        state = TrialState.PRUNED
    done = {TrialState.COMPLETE: epochs, TrialState.FAIL: rng.randint(0, epochs - 1),
            TrialState.PRUNED: rng.randint(1, epochs - 1), TrialState.RUNNING: rng.randint(1, epochs - 1)}[state]
    curve = [{"epoch": e, "train_loss": round(2.3 * math.exp(-e / 3) + 0.1, 4),
              "top1": round(top1 - 30 * math.exp(-e / 2.5), 3), "lr": params["lr"], "epoch_s": 3.0}
             for e in range(1, done + 1)]
    attrs = {"candidate": study.candidate(params), "arch": {**study.candidate(params), "num_classes": 10},
             "config_key": key, "repeat": repeat, "seed": study.train.seed + repeat, "curve": curve,
             "epochs_done": done, "params_m": params_m, "gflops": gflops, "gflops_paper": round(gflops * 49, 4),
             "wall_s": 3.0 * done}
    if state == TrialState.FAIL:
        attrs["error"] = "RuntimeError: generated failure (out of memory in stage 3)"
    values = [top1, gflops] if state == TrialState.COMPLETE else None
    return create_trial(state=state, params=raw, distributions=distributions, values=values, user_attrs=attrs)
