"""Runs a study: Ray Tune executes trials, an ask/tell searcher of ablate's own records them.

Why not Ray's ``OptunaSearch``: it tells Optuna COMPLETE with the last low-fidelity value
for trials that ASHA stopped, gives multi-objective studies nothing per epoch, cannot run a
grid and re-suggests identical configurations. :class:`StudySearcher` asks the Optuna study
itself (grid cells through ``enqueue_trial``), skips configurations already in the storage,
records PRUNED / FAIL / COMPLETE with the fields of DESIGN.md, and is the only writer to the
database (workers report to it through Ray).

This is the only module that imports Ray Tune and builds Optuna samplers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import shutil
import signal
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from ablate.config import Study, study_from_dict, study_to_dict
from ablate.errors import ConfigError
from ablate.space import Param, SearchSpace, cell_key, encode_params, encode_value, suggest
from ablate.storage import open_storage
from ablate.trial import TrialFn, candidate_arch, finite, run_trial

__all__ = ["RunSummary", "run_study", "open_optuna_study", "close_interrupted", "ray_session"]

INTERRUPTED = "interrupted: the run that owned this trial stopped before it finished"
#: Keys of a study spec that must not change once a database holds trials of it.
_FROZEN_SPEC_KEYS = ("scale", "task", "data", "train", "objectives", "paper_resolution")
_MAX_SKIPS = 200


@dataclass
class RunSummary:
    """What one ``ablate run`` did (also printed at its end)."""

    study: str
    storage: str
    new_trials: list[int] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    concurrency: int = 1
    message: str = ""


# --------------------------------------------------------------------------- storage side


def open_optuna_study(study: Study, storage_url: str | None = None) -> optuna.Study:
    """Create or load the Optuna study for ``study`` and check that its spec still matches."""
    url = storage_url or study.storage
    storage = open_storage(url, create=True)
    directions = [o.direction for o in study.objectives]
    ostudy = optuna.create_study(study_name=study.name, storage=storage, directions=directions,
                                 load_if_exists=True, sampler=_make_sampler(study))
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
        from ablate.config import TrainSpec

        train = spec["train"]
        if "recipe" not in train:
            return {**_train_identity(train), "seed": train.get("seed")}
        fields = {f.name for f in dataclasses.fields(TrainSpec)}
        return dataclasses.asdict(TrainSpec(**{k: v for k, v in train.items() if k in fields})
                                  .resolved(spec.get("scale", "proxy")))
    return spec.get(key)


def _direction(name: str) -> optuna.study.StudyDirection:
    return optuna.study.StudyDirection.MAXIMIZE if name == "maximize" else optuna.study.StudyDirection.MINIMIZE


def _make_sampler(study: Study) -> optuna.samplers.BaseSampler:
    seed = study.sampler.seed
    name = study.sampler.name
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    if name == "nsga2":
        population = study.sampler.population_size
        return optuna.samplers.NSGAIISampler(seed=seed, **({"population_size": population} if population else {}))
    return optuna.samplers.RandomSampler(seed=seed)  # grid cells are enqueued; random for the rest


def close_interrupted(ostudy: optuna.Study) -> list[int]:
    """Close trials a killed run left RUNNING or WAITING as FAIL (Optuna's heartbeat does not
    cover ask/tell), so the budget can re-run them. Returns their numbers."""
    closed = []
    storage = ostudy._storage
    for t in ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        storage.set_trial_user_attr(t._trial_id, "error", INTERRUPTED)
        storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        closed.append(t.number)
    return closed


def _counts_toward_budget(t: optuna.trial.FrozenTrial) -> bool:
    """A trial that was trained to an end: not skipped (duplicate, infeasible), not interrupted."""
    if "candidate" not in t.user_attrs or t.user_attrs.get("skipped"):
        return False
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.FAIL and not t.user_attrs.get("interrupted"))


def _finished_runs(ostudy: optuna.Study) -> dict[str, set[int]]:
    """Per configuration key, the repeats that need no more training: COMPLETE, PRUNED, or
    failed for a reason other than an interruption (a deterministic failure would only
    fail again). Every (configuration, repeat) trains exactly once."""
    done: dict[str, set[int]] = {}
    for t in ostudy.get_trials(deepcopy=False):
        if _counts_toward_budget(t):
            done.setdefault(trial_config_key(t), set()).add(trial_repeat(t))
    return done


def trial_repeat(t: optuna.trial.FrozenTrial) -> int:
    """Which repeat (seed offset) a stored trial is; trials from before repeats are repeat 0."""
    return int(t.user_attrs.get("repeat", 0))


def trial_config_key(t: optuna.trial.FrozenTrial) -> str:
    """The configuration key a stored trial carries (computed for trials from before keys)."""
    key = t.user_attrs.get("config_key")
    return key if key is not None else _key(t.user_attrs["candidate"], t.user_attrs.get("train"))


def _key(candidate: Mapping[str, Any], train: Mapping[str, Any] | None) -> str:
    """Equal keys mean the same model trained the same way (architecture and training keys:
    two grid cells that differ only in ``lr`` are different configurations), whatever the
    seed: the repeats of a configuration share its key.

    The architecture is taken in its resolved form, so two spellings of one model (a
    YOLO cell with ``attention: none`` and any placement) are one configuration. A short
    hash of that canonical text, so that tables and JSON can show it.
    """
    text = cell_key({"arch": _canonical(candidate), "train": _train_identity(train)})
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _train_identity(train: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A trial's training settings without its seed, in today's full form.

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
    return full


def _canonical(candidate: Mapping[str, Any]) -> Mapping[str, Any]:
    """The builder's resolved form of a candidate; the candidate itself if it does not resolve."""
    from ablate.config import arch_api
    from ablate.errors import AblateError

    resolve, _ = arch_api("detect" if "base" in candidate else "classify")
    try:
        return resolve(dict(candidate))
    except AblateError:
        return candidate


def config_key(study: Study, params: Mapping[str, Any]) -> str:
    """The key of one proposal (see :func:`_key`), before it is stored."""
    return _key(study.candidate(params), dataclasses.asdict(study.train_for(params)))


# --------------------------------------------------------------------------- the searcher


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
        self._done = _finished_runs(ostudy)  # configuration key -> repeats that need no more training
        self._grid_space = SearchSpace(params=study.grid_params)  # grid cells encode like sampled values
        self._free = study.free_space
        started = set(self._done)
        #: Runs to launch before any new configuration: (key, params or raw stored params, repeat).
        self.queue: list[tuple[str, dict, int, bool]] = []
        if study.is_grid:
            cells = [(config_key(study, c), c) for c in study.cells()]
            fresh = [kc for kc in cells if kc[0] not in started][:max(0, budget)]
            chosen = [kc for kc in cells if kc[0] in started] + fresh
            self.new_configs = 0
            self.queue = [(k, c, r, False) for r in range(study.repeats) for k, c in chosen
                          if r not in self._done.get(k, set())]
        else:
            self.new_configs = max(0, budget)
            stored: dict[str, dict] = {}
            for t in ostudy.get_trials(deepcopy=False):
                if _counts_toward_budget(t):
                    stored.setdefault(trial_config_key(t), dict(t.params))
            self.queue = [(k, raw, r, True) for r in range(study.repeats) for k, raw in stored.items()
                          if r not in self._done.get(k, set())]
        self._claimed = {(k, r) for k, rs in self._done.items() for r in rs}

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
        otrial, params, repeat = proposal
        self.live[trial_id] = otrial
        self.curves[trial_id] = []
        self.params[trial_id] = params
        self.launched += 1
        return {"spec": self._spec, "params": params, "number": otrial.number, "repeat": repeat}

    def _start(self, params: Mapping[str, Any], otrial: optuna.Trial, repeat: int) -> optuna.Trial:
        candidate = self.study.candidate(params)
        train = dataclasses.asdict(self.study.train_for(params, repeat=repeat))
        key = _key(candidate, train)
        self._claimed.add((key, repeat))
        otrial.set_user_attr("candidate", candidate)
        otrial.set_user_attr("train", train)
        otrial.set_user_attr("arch", candidate_arch(self.study, params))  # nested dicts do not survive Ray's results
        otrial.set_user_attr("seed", train["seed"])
        otrial.set_user_attr("repeat", repeat)
        otrial.set_user_attr("config_key", key)
        return otrial

    def _next_queued(self) -> tuple[optuna.Trial, dict, int] | None:
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
            if config_key(self.study, params) != key:  # the space changed since it was stored
                otrial.set_user_attr("skipped", "stale")
                otrial.set_user_attr("error", "its stored params no longer give the same configuration; not trained")
                self.ostudy.tell(otrial, state=TrialState.FAIL)
                continue
            return self._start(params, otrial, repeat), params, repeat
        return None

    def _next_sample(self) -> tuple[optuna.Trial, dict, int] | None:
        from ablate.config import arch_api
        from ablate.errors import AblateError

        if self.new_configs <= 0 or self.study.is_grid:
            return None
        _, check_arch = arch_api(self.study.task)

        for _ in range(_MAX_SKIPS):
            otrial = self.ostudy.ask()
            params = suggest(otrial, self._free, self.study.fixed)
            candidate = self.study.candidate(params)
            key = config_key(self.study, params)
            if key in self._done or (key, 0) in self._claimed:
                # The sampler re-proposed a configuration that is already in the storage:
                # record it without training so the sampler learns, and ask again.
                otrial.set_user_attr("skipped", "duplicate")
                otrial.set_user_attr("error", "duplicate of a configuration already in the storage; not trained")
                self.ostudy.tell(otrial, state=TrialState.FAIL)
                continue
            try:
                check_arch(candidate)
            except AblateError as err:
                otrial.set_user_attr("skipped", "infeasible")
                otrial.set_user_attr("error", f"infeasible: {err}")
                self.ostudy.tell(otrial, state=TrialState.FAIL)
                self._done.setdefault(key, set())
                continue
            self.new_configs -= 1
            # Its other repeats run next, with the same params.
            self.queue[0:0] = [(key, dict(otrial.params), r, True) for r in range(1, self.study.repeats)]
            return self._start(params, otrial, 0), params, 0
        self.exhausted = f"no new feasible configuration in {_MAX_SKIPS} proposals: the search space looks exhausted"
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
        curve.append({k: result[k] for k in ("epoch", "train_loss", "top1", "map50_95", "map50", "lr", "epoch_s")
                      if k in result})
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
        for key in ("params_m", "gflops", "params_m_paper", "gflops_paper", "gflops_ultralytics", "latency_ms",
                    "wall_s"):
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


# --------------------------------------------------------------------------- Ray side


def _env_for_ray() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1000")


@contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None,
                num_gpus: int | None = None) -> Iterator[None]:
    """Start (or join) Ray for the duration of a run, and shut it down if we started it.

    A local Ray binds 127.0.0.1 with no dashboard and usage stats off; the ``finally``
    shuts it down on every exit path (Ctrl-C included), so no Ray process lingers.
    """
    import logging

    _env_for_ray()
    if not address:
        # "Local Ray only": Ray then advertises 127.0.0.1 instead of the machine's routable
        # address (it rewrites an explicit _node_ip_address of 127.0.0.1 otherwise). Read
        # when Ray is imported, so callers that import Ray first should set it too.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=True,
                                      logging_level=logging.ERROR)
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, _node_ip_address="127.0.0.1", **kwargs)
        started = True
    try:
        yield
    finally:
        if started:
            ray.shutdown()


@contextmanager
def _interruptible(searcher: "StudySearcher") -> Iterator[None]:
    """Ctrl-C and SIGTERM mark the searcher as stopping, then raise KeyboardInterrupt.

    Ray Tune may swallow the KeyboardInterrupt and stop its trials itself; the flag makes
    the searcher record those trials as interrupted (not PRUNED) and lets the caller
    re-raise once Tune returns.
    """
    def handler(signum, frame):  # noqa: ANN001
        searcher.stopping = True
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (e.g. a test runner's worker thread)
            break
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _trainable(config: dict, trial_fn: TrialFn, device: str, threads: int) -> None:
    """Runs inside a Ray worker: re-validates the spec, trains, reports each epoch.

    Exceptions are caught and reported as a final ``error`` result, so the driver records
    the message (Ray itself would pass the searcher only ``error=True``).
    """
    import torch
    from ray import tune

    torch.set_num_threads(max(1, threads))
    start = time.perf_counter()
    last: dict = {}

    def report(metrics: dict) -> None:
        nonlocal last
        last = dict(metrics)
        tune.report({**metrics, "wall_s": time.perf_counter() - start})

    try:
        study = study_from_dict(config["spec"], check=False)  # schema re-checked; the driver did the model checks
        resolved = _resolve_device(device, study)
        trial_fn(study, config["params"], report, device=resolved, repeat=int(config.get("repeat", 0)))
    except Exception as err:  # recorded as FAIL with its message; the study goes on
        message = f"{type(err).__name__}: {err}".strip()
        keep = {k: v for k, v in last.items() if k not in ("top1", "map50_95")}
        tune.report({**keep, "error": message, "wall_s": time.perf_counter() - start})


def _resolve_device(device: str, study: Study) -> str:
    import torch

    if device == "auto":
        return "cuda" if study.resources.gpu > 0 and torch.cuda.is_available() else "cpu"
    return device


def _ray_searcher(inner: StudySearcher):
    """A ``ray.tune.search.Searcher`` that forwards to ``inner``, built here so that importing
    this module does not import Ray.

    Ray pickles the search algorithm it is handed (``tuner.pkl``, its experiment-state
    files), and ``inner`` holds live state that must never be pickled: the Optuna study,
    its sampler (NSGA-II holds a thread lock since Optuna 5.1), the storage's engine and
    connections. So the forwarder's pickled form is only the study's name: a copy
    unpickled elsewhere forwards nothing and says why. Ablate resumes from its storage,
    never from Ray's restore files, so nothing is lost.
    """
    from ray.tune.search import Searcher

    class _Forward(Searcher):
        def __init__(self, live: StudySearcher) -> None:  # no closure over `inner`: cloudpickle would follow it
            super().__init__()
            self.study_name = live.study.name
            self.inner: StudySearcher | None = live

        def __getstate__(self) -> dict:
            return {"study_name": self.study_name}

        def __setstate__(self, state: dict) -> None:
            Searcher.__init__(self)
            self.study_name = state["study_name"]
            self.inner = None

        def _live(self) -> StudySearcher:
            if self.inner is None:
                raise RuntimeError(f"a pickled copy of study {self.study_name!r}'s searcher cannot propose or record "
                                   "trials: the searcher lives in the driver that runs the study")
            return self.inner

        def suggest(self, trial_id: str):  # noqa: D102
            config = self._live().suggest(trial_id)
            return Searcher.FINISHED if config is None else config

        def on_trial_result(self, trial_id: str, result: dict) -> None:  # noqa: D102
            self._live().on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:  # noqa: D102
            self._live().on_trial_complete(trial_id, result, error)

    return _Forward(inner)


def run_study(study: Study, *, storage: str | None = None, trials: int | None = None, address: str | None = None,
              device: str = "auto", trial_fn: TrialFn = run_trial, progress: bool = True,
              num_cpus: int | None = None) -> RunSummary:
    """Run (or resume) ``study`` until its budget is met and every configuration has its repeats.

    Args:
        study: A validated study (paths already absolute); ``study.repeats`` seeds per configuration.
        storage: Override of ``study.storage``.
        trials: Override of the study's budget: the total number of configurations (grid
            cells or sampled configurations) the study should have, each trained
            ``study.repeats`` times.
        address: An existing Ray cluster; None starts a local one.
        device: ``auto`` (CUDA when the trial reserves a GPU and one exists), ``cpu`` or ``cuda``.
        trial_fn: What each trial runs (tests substitute cheap synthetic trials).
        progress: Show a progress bar and one line per finished trial.
        num_cpus: CPUs of a local Ray (default: all of the machine's).
    """
    url = storage or study.storage
    ostudy = open_optuna_study(study, url)
    closed = close_interrupted(ostudy)
    budget_total = trials if trials is not None else study.trials
    started = len(_finished_runs(ostudy))
    summary = RunSummary(study=study.name, storage=url)
    if closed:
        summary.message = f"closed {len(closed)} interrupted trial(s) as FAIL: {closed}"

    reporter = _Progress(study, enabled=progress)
    searcher = StudySearcher(study, ostudy, max(0, budget_total - started), on_finish=reporter.trial_done)
    remaining = searcher.planned
    start = time.perf_counter()
    if remaining == 0:
        summary.message = (summary.message + "; " if summary.message else "") + "nothing to do: the budget is met"
        summary.states = _state_counts(ostudy)
        return summary
    workdir = tempfile.mkdtemp(prefix="ablate-ray-")
    try:
        with ray_session(address, num_cpus=num_cpus), reporter.running(remaining):
            import ray

            summary.concurrency = _concurrency(study, ray.cluster_resources())
            try:
                with _interruptible(searcher):
                    _fit(study, searcher, trial_fn, device, workdir, remaining)
                if searcher.stopping:  # Tune caught the interrupt and returned
                    raise KeyboardInterrupt
            except BaseException:
                searcher.stopping = True
                searcher.interrupt_all()
                raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary.wall_s = time.perf_counter() - start
    summary.new_trials = searcher.finished
    summary.states = _state_counts(ostudy)
    if searcher.exhausted:
        summary.message = (summary.message + "; " if summary.message else "") + searcher.exhausted
    return summary


def _concurrency(study: Study, resources: Mapping[str, float]) -> int:
    limits = []
    if study.resources.cpu > 0:
        limits.append(int(resources.get("CPU", 1) // study.resources.cpu))
    if study.resources.gpu > 0:
        limits.append(int(resources.get("GPU", 0) // study.resources.gpu))
    n = max(1, min(limits) if limits else 1)
    return min(n, study.max_concurrent) if study.max_concurrent else n


def _fit(study: Study, searcher: StudySearcher, trial_fn: TrialFn, device: str, workdir: str, samples: int) -> None:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    metric = study.scheduler_metric
    scheduler = FIFOScheduler()
    if study.scheduler is not None and metric is not None:
        scheduler = ASHAScheduler(time_attr="epoch", metric=metric.name, mode=metric.direction[:3],
                                  max_t=study.train.epochs, grace_period=study.scheduler.grace_period,
                                  reduction_factor=study.scheduler.reduction_factor)
    threads = max(1, int(math.floor(study.resources.cpu)))
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, trial_fn=trial_fn, device=device, threads=threads),
        {"cpu": study.resources.cpu, "gpu": study.resources.gpu})
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=_ray_searcher(searcher), scheduler=scheduler,
            num_samples=samples, max_concurrent_trials=study.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name=study.name, storage_path=workdir, verbose=0, log_to_file=False,
                                  failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
    )
    tuner.fit()


def _state_counts(ostudy: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in ostudy.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


# --------------------------------------------------------------------------- progress output


class _Progress:
    """A rich progress bar (done / total, elapsed, ETA) and one line per finished trial."""

    def __init__(self, study: Study, enabled: bool) -> None:
        self.study = study
        self.enabled = enabled
        self._progress = None
        self._task = None

    @contextmanager
    def running(self, total: int) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        with Progress(TextColumn(f"[bold]{self.study.name}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("trials"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()) as prog:
            self._progress = prog
            self._task = prog.add_task("trials", total=total)
            try:
                yield
            finally:
                self._progress = None

    def trial_done(self, frozen: optuna.trial.FrozenTrial) -> None:
        if self._progress is None:
            return
        params = self.study.decode_params(frozen.params)
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        if self.study.repeats > 1 and "seed" in frozen.user_attrs:
            shown += f" (seed {frozen.user_attrs['seed']}, repeat {frozen.user_attrs.get('repeat', 0) + 1}" \
                     f"/{self.study.repeats})"
        if frozen.state == TrialState.COMPLETE:
            outcome = "  ".join(f"{o.name}={v:.4g}" for o, v in zip(self.study.objectives, frozen.values))
        elif frozen.state == TrialState.PRUNED:
            outcome = f"stopped early after {frozen.user_attrs.get('epochs_done', '?')} epoch(s)"
        else:
            outcome = f"failed: {frozen.user_attrs.get('error', '?')}"
        wall = frozen.user_attrs.get("wall_s")
        took = f" ({wall:.1f}s)" if isinstance(wall, (int, float)) else ""
        self._progress.console.print(f"trial {frozen.number:>3} {frozen.state.name:<8} {shown}  {outcome}{took}")
        self._progress.advance(self._task)
