"""The searcher: proposes runs (configuration, repeat) and records what the workers report.

Why not Ray's ``OptunaSearch``: it tells Optuna COMPLETE with the last low-fidelity value
for trials that ASHA stopped, gives multi-objective studies nothing per epoch, cannot run a
grid and re-suggests identical configurations. :class:`StudySearcher` plans the runs a
study still needs from its storage, claims each one there before training it
(:mod:`ablate.run.claims`: any number of drivers can share one study), creates its trial
through Optuna's storage API, and records PRUNED / FAIL / COMPLETE with the fields of
DESIGN.md.

A sampled study's sampler runs on an in-memory mirror of the stored trials: a proposal
that is already trained, claimed or known infeasible is answered there, so the storage
gets no rows for duplicates; infeasible candidates are stored once, as FAIL with their reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from ablate.errors import AblateError, ConfigError, DataError
from ablate.metrics import COSTS, CURVE_KEYS, INIT_KEYS
from ablate.models import check_architecture
from ablate.models.memory import check_memory
from ablate.run.candidate import Candidate, data_classes
from ablate.run.checkpoint import WEIGHTS_ATTR
from ablate.run.claims import DEAD, DONE, FAILED, INTERRUPTED_DETAIL, SLOT, Claims, iter_free_slots
from ablate.run.keys import config_key, trial_config_key, trial_repeat
from ablate.run.optuna_study import INTERRUPTED, counts_toward_budget, make_sampler, stored_spec
from ablate.run.trial import finite
from ablate.study import Study
from ablate.study.space import Param, SearchSpace, decode_params, encode_value, suggest

__all__ = ["StudySearcher", "MAX_SKIPS", "FINISHED", "grid_distribution"]

#: Proposals a sampler may make in a row without a new feasible configuration.
MAX_SKIPS = 200
#: What :meth:`StudySearcher.suggest` returns when the study is complete (Ray's ``Searcher.FINISHED``).
FINISHED = "FINISHED"
#: Seconds between two looks at the storage for runs to take over.
_REFILL_S = 1.0
WORKER_DIED = "the trial's worker died (killed, out of memory or a lost node)"


def grid_distribution(param: Param, value: Any) -> tuple[Any, BaseDistribution]:
    """How one grid value is stored: numbers as one-point ranges (a later run may extend the
    grid), other values as a categorical over the grid's values (Optuna cannot extend those)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return encode_value(param, value), CategoricalDistribution([encode_value(param, c) for c in param.choices])
    if isinstance(value, int):
        return value, IntDistribution(value, value)
    return value, FloatDistribution(value, value)


@dataclasses.dataclass
class _Live:
    """A run this driver launched: where it is stored and what it claimed."""

    trial_id: int
    number: int
    candidate: Candidate
    repeat: int
    attempt: int
    curve: list[dict] = dataclasses.field(default_factory=list)


class StudySearcher:
    """Proposes runs for Ray and records what Ray reports back.

    A run is one (configuration, repeat) pair: the configuration trained with seed
    ``train.seed + repeat``. ``budget`` is the number of configurations the study should
    have in all (not runs, not attempts): a grid study's stored cells plus its next new
    ones, a sampled study's stored configurations plus one claimed slot per new one.
    Missing repeats of stored configurations come first.

    Ray calls ``suggest`` / ``on_trial_result`` / ``on_trial_complete`` in the driver. Every
    run is claimed in the storage first, so several drivers on one study share the work;
    while other drivers' runs are still in flight, ``suggest`` waits (returns None) rather
    than finish, and takes over what a silent driver leaves (``grace_s``), up to
    ``max_retries`` more attempts of a run whose process died.
    """

    def __init__(self, study: Study, ostudy: optuna.Study, budget: int, *,
                 on_finish: Callable[[optuna.trial.FrozenTrial], None] | None = None,
                 storage: optuna.storages.BaseStorage | None = None, claims: Claims | None = None,
                 max_retries: int = 1, grace_s: float = 60.0,
                 on_epoch: Callable[[int, dict], None] | None = None) -> None:
        from ablate.storage import open_storage

        self.study = study
        self.ostudy = ostudy
        self.storage = storage if storage is not None else open_storage(study.storage, create=True)
        self.claims = claims if claims is not None else Claims(study.storage, study.name)
        self.study_id = self.storage.get_study_id_from_name(study.name)
        self.max_retries, self.grace_s = max_retries, grace_s
        self.launched, self.exhausted = 0, ""
        self.live: dict[str, _Live] = {}
        self.stopping = False  # set on Ctrl-C / SIGTERM: trials ending now were interrupted
        self.finished: list[int] = []
        self.on_finish, self.on_epoch = on_finish, on_epoch  # e.g. the progress line, the trackers
        self._spec = stored_spec(study)  # what Ray carries to the worker: no password
        self._grid_space = SearchSpace(params=study.grid_params)
        self._free = study.free_space
        self._classes: int | None = None
        self._candidates: dict[str, Candidate] = {}
        self._scratch: optuna.Study | None = None
        self._mirrored: set[int] = set()
        self._next_refill, self._slots_open = 0.0, not study.is_grid
        stored = self._stored(self._trials())
        started = set(stored) | {c.key for c in self.claims.rows() if c.key != SLOT}
        if study.is_grid:
            cells = [(self._key(c), c) for c in study.cells()]
            old = [kc for kc in cells if kc[0] in started]
            fresh = [kc for kc in cells if kc[0] not in started][:max(0, budget - len(old))]
            self._cells = old + fresh
            self.slots = 0
        else:
            self._cells = []
            # Configurations stored before slots existed take their share of the budget.
            self.slots = max(0, budget - len(set(stored) - self._slot_keys()))
        self.queue: list[tuple[str, dict, int]] = self._missing()
        latest = self.claims.latest()
        self.planned_new = sum(1 for _ in iter_free_slots(latest, self.slots))

    # -- what the storage says
    def _trials(self) -> list[optuna.trial.FrozenTrial]:
        """The stored trials, read once per look at the storage."""
        return self.ostudy.get_trials(deepcopy=False)

    def _stored(self, trials: list[optuna.trial.FrozenTrial]) -> dict[str, optuna.trial.FrozenTrial]:
        """A stored trial of each configuration that trained to an end (or is being trained)."""
        out: dict[str, optuna.trial.FrozenTrial] = {}
        for t in trials:
            if "candidate" in t.user_attrs and not t.user_attrs.get("skipped"):
                out.setdefault(trial_config_key(t, self.study.task), t)
        return out

    def _slot_keys(self) -> set[str]:
        return {c.detail for c in self.claims.rows(SLOT) if c.state == DONE and c.detail}

    def _done(self, trials: list[optuna.trial.FrozenTrial]) -> dict[str, set[int]]:
        """Per configuration, the repeats that need no more training (stored or claimed)."""
        done: dict[str, set[int]] = {}
        for t in trials:
            if counts_toward_budget(t):
                done.setdefault(trial_config_key(t, self.study.task), set()).add(trial_repeat(t))
        attempts: dict[tuple[str, int], list] = {}
        for c in self.claims.rows():
            if c.key == SLOT:
                continue
            attempts.setdefault((c.key, c.repeat), []).append(c)
            if c.detail == "infeasible":  # no repeat of it can train
                done.setdefault(c.key, set()).update(range(self.study.repeats))
        for (key, repeat), claims in attempts.items():
            # Held or finished by a driver, or every allowed attempt died: nothing left to claim.
            died = sum(c.detail != INTERRUPTED_DETAIL for c in claims)
            if any(c.state != DEAD for c in claims) or died > self.max_retries:
                done.setdefault(key, set()).add(repeat)
        return done

    def _missing(self) -> list[tuple[str, dict, int]]:
        """Runs still to train: (key, params, repeat), every configuration's repeat 0 first."""
        trials = self._trials()
        done = self._done(trials)
        if self.study.is_grid:
            configs = [(k, c) for k, c in self._cells]
        else:
            stored = self._stored(trials)
            configs = [(k, decode_params(self._free, t.params)) for k, t in stored.items()]
        return [(k, p, r) for r in range(self.study.repeats) for k, p in configs if r not in done.get(k, set())]

    def _key(self, params: Mapping[str, Any]) -> str:
        """The configuration key of ``params``; for keys the builder rejects, that of the raw keys."""
        try:
            return self._resolve(params).key
        except DataError:  # the data, not this configuration: stop, never mark it infeasible
            raise
        except AblateError:
            return config_key(self.study, params)

    def _resolve(self, params: Mapping[str, Any]) -> Candidate:
        """The candidate of ``params``, resolved once per configuration."""
        if self._classes is None:
            self._classes = data_classes(self.study)
        candidate = Candidate.of(self.study, params, classes=self._classes)
        return self._candidates.setdefault(candidate.key, candidate)

    def replan(self) -> None:
        """Plan again from the storage (after :meth:`take_over` closed runs, for one)."""
        self.queue = self._missing()

    @property
    def planned(self) -> int:
        """Runs this driver expects to launch (the progress bar's total; other drivers may take some)."""
        return len(self.queue) + self.planned_new * self.study.repeats

    # -- proposing
    def suggest(self, trial_id: str) -> dict | str | None:
        """A config for Ray; None while other drivers' runs are in flight; :data:`FINISHED` at the end.

        The storage is read again at most once a second (and after each finished trial):
        Ray asks often while it has free capacity.
        """
        if self.stopping:
            return FINISHED
        started = self._next_queued()
        if started is None and self._slots_open:
            started = self._next_sample()  # sampling needs no refill while slots are free
        if started is None:
            if time.monotonic() < self._next_refill:
                return None
            self._next_refill = time.monotonic() + _REFILL_S
            self.take_over()
            self.queue = self._missing()
            started = self._next_queued() or self._next_sample()
            if started is None:
                if self.live or self.claims.in_flight() or self._free_slot() is not None or self.unfinished():
                    return None  # wait: runs are in flight here or elsewhere, or a slot is being filled
                return FINISHED
        self.live[trial_id] = started
        self.launched += 1
        return {"spec": self._spec, "params": dict(started.candidate.params), "number": started.number,
                "repeat": started.repeat, "candidate": started.candidate.to_json()}

    def unfinished(self) -> bool:
        """Whether the storage still has a RUNNING or WAITING trial (closed by its driver, or taken over)."""
        return bool(self.ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)))

    def _free_slot(self) -> int | None:
        if self.study.is_grid or self.exhausted:
            return None
        return next(iter_free_slots(self.claims.latest(), self.slots), None)

    def _next_queued(self) -> _Live | None:
        while self.queue:
            key, params, repeat = self.queue.pop(0)
            try:
                candidate = self._candidates.get(key) or self._resolve(params)
            except DataError:  # the data, not this configuration: stop, never mark it infeasible
                raise
            except AblateError as err:  # a cell the builder rejects fails once, with the reason
                self._record_infeasible(key, params, err)
                continue
            if candidate.key != key:  # the space changed since it was stored
                continue
            attempt = self.claims.claim(key, repeat, max_retries=self.max_retries)
            if attempt is None:
                continue  # another driver holds or finished it
            return self._start(candidate, repeat, attempt)
        return None

    def _next_sample(self) -> _Live | None:
        slot = self._free_slot()
        self._slots_open = slot is not None
        while slot is not None:
            slot_attempt = self.claims.claim(SLOT, slot, max_retries=1_000_000)
            if slot_attempt is not None:
                started = self._fill_slot(slot, slot_attempt)
                if started is not None or self.exhausted:
                    return started
            slot = self._free_slot()
        return None

    def _fill_slot(self, slot: int, slot_attempt: int) -> _Live | None:
        """Sample until a configuration nobody has is claimed; the slot then names it."""
        scratch = self._mirror()
        trials = self._trials()
        known = set(self._done(trials)) | set(self._stored(trials))
        for _ in range(MAX_SKIPS):
            strial = scratch.ask()
            params = suggest(strial, self._free, self.study.fixed)
            candidate: Candidate | None = None
            reason: Exception | None = None
            try:
                candidate = self._resolve(params)
                key = candidate.key
                check_architecture(candidate.arch)
                check_memory(candidate.arch)
                if candidate.paper is not None:
                    check_memory(candidate.paper, train=False)
            except DataError:  # the data, not this configuration: stop, never mark it infeasible
                raise
            except AblateError as err:
                key = candidate.key if candidate is not None else config_key(self.study, params)
                candidate, reason = None, err
            if key in known:
                scratch.tell(strial, state=TrialState.FAIL)  # a duplicate: answered in memory only
                continue
            known.add(key)
            frozen = scratch.trials[strial.number]
            if candidate is None:
                self._record_infeasible(key, params, reason, frozen)
                scratch.tell(strial, state=TrialState.FAIL)
                continue
            attempt = self.claims.claim(key, 0, max_retries=self.max_retries)
            scratch.tell(strial, state=TrialState.FAIL)  # the stored trial stands for it from now on
            if attempt is None:
                continue
            self.claims.update(SLOT, slot, slot_attempt, state=DONE, detail=key)
            self.planned_new = max(0, self.planned_new - 1)
            self.queue[0:0] = [(key, dict(params), r) for r in range(1, self.study.repeats)]
            return self._start(candidate, 0, attempt, template=frozen)
        distinct = len(self._stored(self._trials()))
        self.exhausted = (f"space exhausted: {distinct} distinct configurations (no new feasible one in "
                          f"{MAX_SKIPS} proposals)")
        self.claims.update(SLOT, slot, slot_attempt, state=DONE, detail="exhausted")
        return None

    def _mirror(self) -> optuna.Study:
        """An in-memory study holding the stored finished trials: where the sampler proposes."""
        if self._scratch is None:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self._scratch = optuna.create_study(directions=[o.direction for o in self.study.objectives],
                                                sampler=make_sampler(self.study))
        new = [t for t in self.ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                         TrialState.FAIL))
               if t.number not in self._mirrored]
        self._mirrored.update(t.number for t in new)
        if new:
            self._scratch.add_trials(new)
        return self._scratch

    def _record_infeasible(self, key: str, params: Mapping[str, Any], err: Exception | None,
                           frozen: optuna.trial.FrozenTrial | None = None) -> None:
        """Store an infeasible candidate once, as FAIL with its reason (never trained)."""
        attempt = self.claims.claim(key, 0, max_retries=self.max_retries)
        if attempt is None:
            return
        params_, dists = self._stored_params(params, frozen)
        template = optuna.trial.create_trial(
            state=TrialState.FAIL, params=params_, distributions=dists,
            user_attrs={"skipped": "infeasible", "error": f"infeasible: {err}", "config_key": key})
        trial_id = self.storage.create_new_trial(self.study_id, template_trial=template)
        self.claims.update(key, 0, attempt, state=FAILED, trial_number=self.storage.get_trial_number_from_id(trial_id),
                           detail="infeasible")

    def _stored_params(self, params: Mapping[str, Any], frozen: optuna.trial.FrozenTrial | None
                       ) -> tuple[dict[str, Any], dict[str, BaseDistribution]]:
        """Params and distributions as Optuna stores them (a sampled trial's own, or the grid's)."""
        if frozen is not None:
            return dict(frozen.params), dict(frozen.distributions)
        if not self.study.is_grid:
            stored = next((t for t in self._stored(self._trials()).values()
                           if decode_params(self._free, t.params) == dict(params)), None)
            if stored is not None:
                return dict(stored.params), dict(stored.distributions)
        out, dists = {}, {}
        for p in self._grid_space.params:
            if p.name in params:  # a list-form grid's rows may set different keys
                out[p.name], dists[p.name] = grid_distribution(p, params[p.name])
        return out, dists

    def _start(self, candidate: Candidate, repeat: int, attempt: int,
               template: optuna.trial.FrozenTrial | None = None) -> _Live:
        """Create the claimed run's trial (RUNNING) with the attributes DESIGN.md lists."""
        train = dataclasses.asdict(self.study.train_for(candidate.params, repeat=repeat))
        params, dists = self._stored_params(candidate.params, template)
        attrs = {"candidate": self.study.candidate(candidate.params), "train": train, "arch": candidate.arch.to_json(),
                 "seed": train["seed"], "repeat": repeat, "config_key": candidate.key}
        if attempt:
            attrs["attempt"] = attempt
        frozen = optuna.trial.create_trial(state=TrialState.RUNNING, params=params, distributions=dists,
                                           user_attrs=attrs,
                                           system_attrs=dict(template.system_attrs) if template is not None else None)
        try:
            trial_id = self.storage.create_new_trial(self.study_id, template_trial=frozen)
        except ValueError as err:
            raise ConfigError(f"grid: the values of a non-numeric grid key cannot change once the study has "
                              f"trials ({err}); use a new study `name` or `--storage`") from None
        number = self.storage.get_trial_number_from_id(trial_id)
        self.claims.update(candidate.key, repeat, attempt, trial_number=number)
        return _Live(trial_id, number, candidate, repeat, attempt)

    def take_over(self) -> list[int]:
        """Close what silent drivers left: their claims become dead (re-queued while retries
        remain) and their RUNNING trials FAIL; a live driver's trials are never touched.
        Returns the numbers of the trials closed."""
        closed = []
        for claim in self.claims.reap(self.grace_s):
            if claim.trial_number is not None and self._close_abandoned(
                    claim.trial_number, f"abandoned: its driver ({claim.owner}) went silent; re-queued while "
                                        f"retries remain"):
                closed.append(claim.trial_number)
        # A RUNNING trial no live claim names was left by a driver from before claims, or
        # killed between creating the trial and naming it in its claim (a few milliseconds):
        # closed at once unless some driver is in that window right now, else after the grace.
        live = self.claims.live_trials(self.grace_s)
        attaching = self.claims.attaching(self.grace_s)
        cutoff = time.time() - self.grace_s
        for t in self.ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            started = t.datetime_start.timestamp() if t.datetime_start is not None else 0.0
            if t.number in live or (attaching and started >= cutoff):
                continue
            if self._close_abandoned(t.number, INTERRUPTED):
                closed.append(t.number)
        return sorted(closed)

    def _close_abandoned(self, number: int, why: str) -> bool:
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        try:
            self.storage.set_trial_user_attr(trial_id, "error", why)
            self.storage.set_trial_user_attr(trial_id, "interrupted", True)
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except RuntimeError:  # optuna's UpdateFinishedTrialError: its driver finished it after all
            return False
        return True

    # -- recording
    def on_trial_result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """Store the per-epoch curve as it grows, so dashboards see running trials, and the first
        training objective per epoch as Optuna's intermediate value (step = epoch; through the storage:
        ``Trial.report`` refuses multi-objective studies), so optuna-dashboard draws the curves."""
        run = self.live.get(trial_id)
        if run is None or "epoch" not in result or "error" in result:
            return
        if run.curve and run.curve[-1]["epoch"] == result["epoch"]:
            return  # Ray repeats the last result when a trial ends
        point = {k: result[k] for k in CURVE_KEYS if k in result}
        run.curve.append(point)
        watched = self.study.scheduler_metric  # the first objective that trains (costs have no curve)
        epoch, value = int(result["epoch"]), result.get(watched.name) if watched is not None else None
        try:
            self.storage.set_trial_user_attr(run.trial_id, "curve", run.curve)
            self.storage.set_trial_user_attr(run.trial_id, "epochs_done", epoch)
            if finite(value):  # a diverged epoch leaves a gap; a retried step overwrites
                self.storage.set_trial_intermediate_value(run.trial_id, epoch, float(value))
        except UpdateFinishedTrialError:  # closed by another driver meanwhile: its record stands
            return
        if self.on_epoch is not None:
            self.on_epoch(run.number, point)

    def on_trial_complete(self, trial_id: str, result: Mapping[str, Any] | None = None, error: bool = False,
                          interrupted: bool = False) -> None:
        """Tell Optuna how the trial ended (COMPLETE, PRUNED or FAIL) and the claims what became of the run."""
        if trial_id not in self.live:
            return
        result = dict(result or {})
        self.on_trial_result(trial_id, result)  # the result that made a scheduler stop the trial
        run = self.live.pop(trial_id)
        attr = lambda k, v: self._set_attr(run.trial_id, k, v)  # noqa: E731
        attr("curve", run.curve)
        for key in (*COSTS, *INIT_KEYS, "wall_s"):
            if key in result:
                attr(key, result[key])
        epochs_done = int(result.get("epochs_done", len(run.curve)))
        attr("epochs_done", epochs_done)
        claim_state, detail = DONE, None
        if interrupted or self.stopping:
            attr("error", INTERRUPTED)
            attr("interrupted", True)
            state, values, claim_state, detail = TrialState.FAIL, None, DEAD, INTERRUPTED_DETAIL
        elif error and "error" not in result:  # the worker process died: retried while attempts remain
            left = self.max_retries - run.attempt
            attr("error", f"{WORKER_DIED}; attempt {run.attempt + 1} of {self.max_retries + 1}"
                          + ("; re-queued" if left > 0 else "; no retries left"))
            attr("interrupted", True)
            state, values, claim_state = TrialState.FAIL, None, DEAD
        elif error or "error" in result:
            attr("error", str(result.get("error") or WORKER_DIED))
            state, values, claim_state = TrialState.FAIL, None, FAILED
        elif epochs_done < self.study.train_for(run.candidate.params).epochs:
            state, values = TrialState.PRUNED, None  # stopped by the scheduler: never a low-fidelity COMPLETE
        else:
            values = [result.get(o.name) for o in self.study.objectives]
            missing = [o.name for o, v in zip(self.study.objectives, values) if not finite(v)]
            if missing:
                attr("error", f"objective(s) {', '.join(missing)} missing or not finite: "
                              f"{ {o.name: v for o, v in zip(self.study.objectives, values)} }")
                state, values, claim_state = TrialState.FAIL, None, FAILED
            else:
                state = TrialState.COMPLETE
        if state != TrialState.FAIL and result.get(WEIGHTS_ATTR):  # the scored model's file (ablate.run.checkpoint)
            attr(WEIGHTS_ATTR, str(result[WEIGHTS_ATTR]))
        try:
            frozen = self.ostudy.tell(run.number, values=values, state=state if values is None else None)
        except (RuntimeError, ValueError):  # another driver closed it (this one was silent too long)
            frozen = self.storage.get_trial(run.trial_id)
        self.claims.update(run.candidate.key, run.repeat, run.attempt, state=claim_state, detail=detail)
        self.finished.append(frozen.number)
        self._next_refill = 0.0  # look at the storage again at once (a retry, the next sample)
        if self.on_finish is not None:
            self.on_finish(frozen)

    def _set_attr(self, trial_id: int, key: str, value: Any) -> None:
        """A user attribute; none once the trial is finished (another driver closed it: its record stands)."""
        with contextlib.suppress(UpdateFinishedTrialError):
            self.storage.set_trial_user_attr(trial_id, key, value)

    def interrupt_all(self) -> None:
        """Record every live trial as interrupted (Ctrl-C, SIGTERM, driver error)."""
        for trial_id in list(self.live):
            self.on_trial_complete(trial_id, interrupted=True)
