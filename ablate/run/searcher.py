"""The searcher: proposes runs (configuration, repeat) from the Optuna study and records
what the workers report, as the single writer to the storage.

Why not Ray's ``OptunaSearch``: it tells Optuna COMPLETE with the last low-fidelity value
for trials that ASHA stopped, gives multi-objective studies nothing per epoch, cannot run a
grid and re-suggests identical configurations. :class:`StudySearcher` asks the Optuna study
itself (grid cells through ``enqueue_trial``), skips configurations already in the storage,
and records PRUNED / FAIL / COMPLETE with the fields of DESIGN.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

from ablate.errors import AblateError, ConfigError
from ablate.metrics import COSTS, CURVE_KEYS
from ablate.models import check_architecture
from ablate.run.candidate import Candidate, data_classes
from ablate.run.keys import config_key, trial_config_key
from ablate.run.optuna_study import INTERRUPTED, counts_toward_budget, finished_runs
from ablate.run.trial import finite
from ablate.study import Study, study_to_dict
from ablate.study.space import Param, SearchSpace, encode_params, encode_value, suggest

__all__ = ["StudySearcher", "MAX_SKIPS"]

MAX_SKIPS = 200


def _record_grid_value(otrial: optuna.Trial, param: Param, value: Any) -> None:
    """Store one grid value as a trial param.

    Numbers become one-point Int/Float distributions, which stay compatible when a later
    run extends the grid; other values are a categorical over the grid's values, which
    Optuna cannot extend (it refuses a changed value set for a stored param).
    """
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            otrial.suggest_categorical(param.name, [encode_value(param, c) for c in param.choices])
        elif isinstance(value, int):
            otrial.suggest_int(param.name, value, value)
        else:
            otrial.suggest_float(param.name, value, value)
    except ValueError as err:
        raise ConfigError(f"grid.{param.name}: the values of a non-numeric grid key cannot change once the "
                          f"study has trials ({err}); use a new study `name` or `--storage`") from None


class StudySearcher:
    """Proposes runs from the Optuna study and records what Ray reports back.

    A run is one (configuration, repeat) pair: the configuration trained with seed
    ``train.seed + repeat``. ``budget`` counts configurations, not runs: each one is
    trained ``study.repeats`` times. Runs missing from configurations already in the
    storage (an interrupted run, a raised ``repeats``) come first; then new grid cells
    (every cell at repeat 0 before any at repeat 1) or new sampled configurations (each
    followed by its other repeats). The sampler sees every repeat as a trial with the
    same params.

    Ray calls ``suggest`` / ``on_trial_result`` / ``on_trial_complete`` in the driver, so
    this object is the single writer to the storage.
    """

    def __init__(self, study: Study, ostudy: optuna.Study, budget: int, *,
                 on_finish: Callable[[optuna.trial.FrozenTrial], None] | None = None) -> None:
        self.study = study
        self.ostudy = ostudy
        self.launched = 0
        self.exhausted = ""
        self.live: dict[str, optuna.Trial] = {}
        self.curves: dict[str, list[dict]] = {}
        self.params: dict[str, dict] = {}
        self.stopping = False  # set on Ctrl-C / SIGTERM: trials ending now were interrupted
        self.finished: list[int] = []
        self.on_finish = on_finish
        self._spec = study_to_dict(study)
        self._done = finished_runs(ostudy, study.task)  # configuration key -> repeats that need no more training
        self._classes: int | None = None  # the data set's class count, read once
        #: Configuration key -> its resolved candidate: each configuration is resolved once,
        #: whatever number of repeats it trains.
        self._candidates: dict[str, Candidate] = {}
        self._grid_space = SearchSpace(params=study.grid_params)  # grid cells encode like sampled values
        self._free = study.free_space
        started = set(self._done)
        #: Runs to launch before any new configuration: (key, params or raw stored params, repeat).
        self.queue: list[tuple[str, dict, int, bool]] = []
        if study.is_grid:
            cells = [(self._key(c), c) for c in study.cells()]
            fresh = [kc for kc in cells if kc[0] not in started][:max(0, budget)]
            chosen = [kc for kc in cells if kc[0] in started] + fresh
            self.new_configs = 0
            self.queue = [(k, c, r, False) for r in range(study.repeats) for k, c in chosen
                          if r not in self._done.get(k, set())]
        else:
            self.new_configs = max(0, budget)
            stored: dict[str, dict] = {}
            for t in ostudy.get_trials(deepcopy=False):
                if counts_toward_budget(t):
                    stored.setdefault(trial_config_key(t, study.task), dict(t.params))
            self.queue = [(k, raw, r, True) for r in range(study.repeats) for k, raw in stored.items()
                          if r not in self._done.get(k, set())]
        self._claimed = {(k, r) for k, rs in self._done.items() for r in rs}

    def _resolve(self, params: Mapping[str, Any]) -> Candidate:
        """The candidate of ``params``, resolved once per configuration."""
        if self._classes is None:
            self._classes = data_classes(self.study)
        candidate = Candidate.of(self.study, params, classes=self._classes)
        return self._candidates.setdefault(candidate.key, candidate)

    def _key(self, params: Mapping[str, Any]) -> str:
        """The configuration key of ``params``; for keys the builder rejects, that of the raw keys."""
        try:
            return self._resolve(params).key
        except AblateError:
            return config_key(self.study, params)

    @property
    def planned(self) -> int:
        """Runs this searcher may still launch (Ray's ``num_samples``)."""
        return len(self.queue) + self.new_configs * self.study.repeats

    # -- proposing
    def suggest(self, trial_id: str) -> dict | None:
        """A config for Ray, or None when there is nothing left to run (Ray then stops asking)."""
        proposal = self._next_queued() or self._next_sample()
        if proposal is None:
            return None
        otrial, candidate, repeat = proposal
        params = dict(candidate.params)
        self.live[trial_id] = otrial
        self.curves[trial_id] = []
        self.params[trial_id] = params
        self.launched += 1
        return {"spec": self._spec, "params": params, "number": otrial.number, "repeat": repeat,
                "candidate": candidate.to_json()}

    def _start(self, candidate: Candidate, otrial: optuna.Trial, repeat: int) -> optuna.Trial:
        train = dataclasses.asdict(self.study.train_for(candidate.params, repeat=repeat))
        self._claimed.add((candidate.key, repeat))
        otrial.set_user_attr("candidate", self.study.candidate(candidate.params))
        otrial.set_user_attr("train", train)
        otrial.set_user_attr("arch", candidate.arch.to_json())  # nested dicts do not survive Ray's results
        otrial.set_user_attr("seed", train["seed"])
        otrial.set_user_attr("repeat", repeat)
        otrial.set_user_attr("config_key", candidate.key)
        return otrial

    def _next_queued(self) -> tuple[optuna.Trial, Candidate, int] | None:
        while self.queue:
            key, values, repeat, raw = self.queue.pop(0)
            if (key, repeat) in self._claimed:
                continue
            self.ostudy.enqueue_trial(values if raw else encode_params(self._grid_space, values), skip_if_exists=False)
            otrial = self.ostudy.ask()
            if raw:  # a stored sampled configuration: suggest() returns the enqueued values
                params = suggest(otrial, self._free, self.study.fixed)
            else:
                params = values
                for p in self._grid_space.params:  # records the enqueued values as the trial's params
                    if p.name in values:  # a list-form grid's rows may set different keys
                        _record_grid_value(otrial, p, values[p.name])
            candidate = self._candidates.get(key)
            if candidate is None or candidate.params != params:
                try:
                    candidate = self._resolve(params)
                except AblateError as err:  # a cell the builder rejects fails here, with the reason
                    otrial.set_user_attr("skipped", "infeasible")
                    otrial.set_user_attr("error", f"infeasible: {err}")
                    self.ostudy.tell(otrial, state=TrialState.FAIL)
                    continue
            if candidate.key != key:  # the space changed since it was stored
                otrial.set_user_attr("skipped", "stale")
                otrial.set_user_attr("error", "its stored params no longer give the same configuration; not trained")
                self.ostudy.tell(otrial, state=TrialState.FAIL)
                continue
            return self._start(candidate, otrial, repeat), candidate, repeat
        return None

    def _next_sample(self) -> tuple[optuna.Trial, Candidate, int] | None:
        if self.new_configs <= 0 or self.study.is_grid:
            return None
        for _ in range(MAX_SKIPS):
            otrial = self.ostudy.ask()
            params = suggest(otrial, self._free, self.study.fixed)
            try:
                candidate: Candidate | None = self._resolve(params)
                key = candidate.key
            except AblateError as err:  # keys the builder rejects: infeasible, like a failed check
                candidate, key, reason = None, config_key(self.study, params), err
            if key in self._done or (key, 0) in self._claimed:
                # The sampler re-proposed a configuration that is already in the storage:
                # record it without training so the sampler learns, and ask again.
                otrial.set_user_attr("skipped", "duplicate")
                otrial.set_user_attr("error", "duplicate of a configuration already in the storage; not trained")
                self.ostudy.tell(otrial, state=TrialState.FAIL)
                continue
            if candidate is not None:
                try:
                    check_architecture(candidate.arch)
                except AblateError as err:
                    candidate, reason = None, err
            if candidate is None:
                otrial.set_user_attr("skipped", "infeasible")
                otrial.set_user_attr("error", f"infeasible: {reason}")
                self.ostudy.tell(otrial, state=TrialState.FAIL)
                self._done.setdefault(key, set())
                continue
            self.new_configs -= 1
            # Its other repeats run next, with the same params.
            self.queue[0:0] = [(key, dict(otrial.params), r, True) for r in range(1, self.study.repeats)]
            return self._start(candidate, otrial, 0), candidate, 0
        self.exhausted = f"no new feasible configuration in {MAX_SKIPS} proposals: the search space looks exhausted"
        self.new_configs = 0
        return None

    # -- recording
    def on_trial_result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """Store the per-epoch curve as it grows, so dashboards see running trials."""
        otrial = self.live.get(trial_id)
        if otrial is None or "epoch" not in result or "error" in result:
            return
        curve = self.curves[trial_id]
        if curve and curve[-1]["epoch"] == result["epoch"]:
            return  # Ray repeats the last result when a trial ends
        curve.append({k: result[k] for k in CURVE_KEYS if k in result})
        otrial.set_user_attr("curve", curve)
        otrial.set_user_attr("epochs_done", int(result["epoch"]))

    def on_trial_complete(self, trial_id: str, result: Mapping[str, Any] | None = None, error: bool = False,
                          interrupted: bool = False) -> None:
        """Tell Optuna how the trial ended: COMPLETE, PRUNED (stopped early) or FAIL."""
        if trial_id not in self.live:
            return
        result = dict(result or {})
        self.on_trial_result(trial_id, result)  # the result that made a scheduler stop the trial
        otrial = self.live.pop(trial_id)
        otrial.set_user_attr("curve", self.curves.get(trial_id, []))
        for key in (*COSTS, "wall_s"):
            if key in result:
                otrial.set_user_attr(key, result[key])
        epochs_done = int(result.get("epochs_done", len(self.curves.get(trial_id, []))))
        otrial.set_user_attr("epochs_done", epochs_done)
        if interrupted or self.stopping:
            otrial.set_user_attr("error", INTERRUPTED)
            otrial.set_user_attr("interrupted", True)
            state, values = TrialState.FAIL, None
        elif error or "error" in result:
            otrial.set_user_attr("error", str(result.get("error") or "the trial's worker died (see Ray's logs)"))
            state, values = TrialState.FAIL, None
        elif epochs_done < self.study.train_for(self.params.pop(trial_id, {})).epochs:
            state, values = TrialState.PRUNED, None  # stopped by the scheduler: never a low-fidelity COMPLETE
        else:
            values = [result.get(o.name) for o in self.study.objectives]
            missing = [o.name for o, v in zip(self.study.objectives, values) if not finite(v)]
            if missing:
                otrial.set_user_attr("error", f"objective(s) {', '.join(missing)} missing or not finite: "
                                              f"{ {o.name: v for o, v in zip(self.study.objectives, values)} }")
                state, values = TrialState.FAIL, None
            else:
                state = TrialState.COMPLETE
        frozen = self.ostudy.tell(otrial, values=values, state=state if values is None else None)
        self.finished.append(frozen.number)
        if self.on_finish is not None:
            self.on_finish(frozen)

    def interrupt_all(self) -> None:
        """Record every live trial as interrupted (Ctrl-C, SIGTERM, driver error)."""
        for trial_id in list(self.live):
            self.on_trial_complete(trial_id, interrupted=True)

