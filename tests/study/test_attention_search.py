"""The shipped attention search: ``search_spaces/attention.yaml`` and ``studies/attention_search.yaml``.

The space offers every registered attention family, each with knobs of its own that apply
only to it; almost every candidate it proposes is feasible; and the study file itself, cut
down to a few trials of two epochs (the same space, NSGA-II sampler, ASHA scheduler and
objectives), runs through the real runner, Ray and SQLite.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from ablate.attention import get_attention, list_attention
from ablate.study import Study, arch_api, load_study, study_from_dict, study_to_dict, validate_study
from ablate.errors import AblateError
from ablate.models import ARCH_DEFAULTS
from ablate.results import load_results
from ablate.run import ray_session, run_study
from ablate.study.space import Param, active_params, same_value, suggest

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parents[2]
STUDY = ROOT / "studies" / "attention_search.yaml"
SPACE = ROOT / "search_spaces" / "attention.yaml"
#: The shortened run: trials (what `ablate run --trials` sets) and epochs per trial.
TRIALS = 10
EPOCHS = 2
#: Candidates drawn to measure the infeasible share of the space, and the share allowed.
SAMPLES = 300
MAX_INFEASIBLE = 0.10


def _options(family: str) -> set[str]:
    """Option names of a registered family."""
    return {f.name for f in dataclasses.fields(get_attention(family).Options)}


def _family_params(study: Study) -> list[Param]:
    """The space's knobs that apply to some families only (``when: {attention: [...]}``)."""
    return [p for p in study.space.params if "attention" in p.when]


@pytest.fixture(scope="module")
def study() -> Study:
    return load_study(STUDY)  # with the model checks, as `ablate validate` does


@pytest.fixture(scope="module")
def ray_local():
    with ray_session(num_cpus=2):
        yield


def test_shipped_study_validates_and_is_the_advertised_search(study: Study) -> None:
    validate_study(study)
    assert study.space.source is not None and Path(study.space.source).resolve() == SPACE
    assert not study.is_grid and study.base is None and study.trials >= 1
    assert (study.sampler.name, study.sampler.seed) == ("nsga2", 0)
    assert study.scheduler is not None and study.scheduler.name == "asha"
    assert [(o.name, o.direction) for o in study.objectives] == [("top1", "maximize"), ("gflops", "minimize")]
    assert study.data.name == "digits" and study.data.image_size == 32
    assert study.resources.cpu == 1 and study.resources.gpu == 0
    assert study.storage.startswith("sqlite:///") and study.storage.endswith("runs/attention-search.db")
    assert study.description


def test_space_covers_every_registered_family_with_knobs_of_its_own(study: Study) -> None:
    attention = study.space.param("attention")
    assert attention is not None and attention.kind == "choice" and not attention.when
    assert sorted(attention.choices) == list_attention()
    assert study.space.names[0] == "attention"  # every condition can look back at it
    for family in list_attention():
        own = [p for p in _family_params(study) if family in p.when["attention"]]
        assert own, f"{family}: no knob of its own"
    for p in _family_params(study):
        for family in p.when["attention"]:
            assert family in list_attention(), f"{p.name}: unknown family {family!r} in when"
            assert p.name in _options(family), f"{p.name} is not an option of {family!r}"
    # The shared knobs are the builder's, not any family's option.
    for p in study.space.params:
        if p.name != "attention" and "attention" not in p.when:
            assert p.name in ARCH_DEFAULTS, f"{p.name} is shared by every family but is not a builder key"


def test_few_candidates_are_infeasible(study: Study) -> None:
    """The check the runner applies to each proposal (``arch_api(task)[1]``), on a seeded sample."""
    _, check = arch_api(study.task)
    sampler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    families: collections.Counter[str] = collections.Counter()
    reasons: list[str] = []
    for _ in range(SAMPLES):
        params = suggest(sampler.ask(), study.free_space, study.fixed)
        families[params["attention"]] += 1
        try:
            check(study.candidate(params))
        except AblateError as err:
            reasons.append(f"{params['attention']}: {err}")
    assert len(reasons) / SAMPLES < MAX_INFEASIBLE, reasons[:5]
    assert set(families) == set(list_attention())


def _shortened(study: Study, tmp_path: Path) -> Study:
    """The shipped study with fewer epochs and a temporary storage, through the spec round trip
    (``study_to_dict`` → ``study_from_dict``: the same validation as the file)."""
    spec = study_to_dict(study)
    spec["train"] = {**spec["train"], "epochs": EPOCHS}
    spec["storage"] = f"sqlite:///{tmp_path / 'attention-search.db'}"
    return study_from_dict(spec, source=str(STUDY))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_shortened_study_runs_through_the_real_runner(study: Study, tmp_path: Path, ray_local) -> None:
    short = _shortened(study, tmp_path)
    assert short.scheduler == study.scheduler and short.sampler == study.sampler and short.space == study.space
    summary = run_study(short, trials=TRIALS, progress=False)  # `ablate run --trials N`
    trials = optuna.load_study(study_name=short.name, storage=short.storage).get_trials()
    trained = [t for t in trials if not t.user_attrs.get("skipped")]
    skipped = [t for t in trials if t.user_attrs.get("skipped")]
    assert len(trained) == TRIALS and len(summary.new_trials) == TRIALS, summary
    errors = [(t.number, t.state.name, t.user_attrs.get("error")) for t in trained
              if t.state not in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert not errors, errors

    complete = [t for t in trained if t.state == TrialState.COMPLETE]
    assert complete, "no trial was trained to the end"
    for t in complete:
        top1, gflops = t.values
        assert 0.0 <= top1 <= 100.0 and _finite(gflops) and gflops > 0
        assert gflops == pytest.approx(t.user_attrs["gflops"]) and t.user_attrs["epochs_done"] == EPOCHS
        assert [c["epoch"] for c in t.user_attrs["curve"]] == list(range(1, EPOCHS + 1))
    for t in trained:
        if t.state == TrialState.PRUNED:  # stopped by ASHA: no values, fewer epochs
            assert t.values is None and t.user_attrs["epochs_done"] < EPOCHS

    # Each trained trial sampled exactly the knobs active for its family, and its stored
    # architecture carries its own family's options and no other family's.
    families = set()
    for t in trained:
        params = short.decode_params(t.params)
        family = params["attention"]
        families.add(family)
        arch = t.user_attrs["arch"]
        assert arch["attention"] == family and arch["img_size"] == 32
        active = {p.name for p in active_params(short.free_space, params)}
        assert set(params) == active, (t.number, params)
        for p in _family_params(short):
            if family in p.when["attention"]:
                if p.name in params:
                    assert same_value(arch[p.name], params[p.name]), (t.number, p.name)
            else:
                assert p.name not in params, (t.number, family, p.name)
        foreign = set().union(*(_options(f) for f in list_attention() if f != family)) - _options(family)
        assert not foreign & set(arch), (t.number, family, sorted(foreign & set(arch)))
    assert len(families) >= 3, families

    # Proposals that were not trained are recorded as skipped FAILs with their reason; an
    # infeasible one really fails the runner's check.
    _, check = arch_api(short.task)
    for t in skipped:
        assert t.state == TrialState.FAIL and t.user_attrs["skipped"] in ("infeasible", "duplicate")
        assert "curve" not in t.user_attrs and "arch" not in t.user_attrs
        if t.user_attrs["skipped"] == "infeasible":
            assert t.user_attrs["error"].startswith("infeasible:")
            with pytest.raises(AblateError):
                check(short.candidate(short.decode_params(t.params)))

    res = load_results(short.storage)
    assert res.pareto and set(res.pareto) <= {t.number for t in complete}
