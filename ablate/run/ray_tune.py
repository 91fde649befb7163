"""Ray Tune's side of a run: a loopback-only local Ray, the trainable that runs one trial in
a worker, the forwarder that Ray holds in place of the searcher, and the Tuner.

This is the only module that imports Ray.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ablate.metrics import TRAINING_METRICS
from ablate.study import Study, study_from_dict
from ablate.run.candidate import Candidate
from ablate.run.searcher import StudySearcher
from ablate.run.trial import TrialFn

__all__ = ["ray_session", "ray_searcher", "interruptible", "fit", "concurrency"]


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
            # address="local": always a new local Ray, never a cluster that `ray start` (or a
            # stale /tmp/ray/ray_current_cluster) happens to advertise on this machine.
            ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, _node_ip_address="127.0.0.1", **kwargs)
        started = True
    try:
        yield
    finally:
        if started:
            ray.shutdown()


@contextmanager
def interruptible(searcher: "StudySearcher") -> Iterator[None]:
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
        candidate = Candidate.from_json(config["candidate"])  # its architectures re-validated, once
        resolved = _resolve_device(device, study)
        trial_fn(study, config["params"], report, device=resolved, repeat=int(config.get("repeat", 0)),
                 candidate=candidate)
    except Exception as err:  # recorded as FAIL with its message; the study goes on
        message = f"{type(err).__name__}: {err}".strip()
        keep = {k: v for k, v in last.items() if k not in TRAINING_METRICS}  # a failed trial has no score
        tune.report({**keep, "error": message, "wall_s": time.perf_counter() - start})


def _resolve_device(device: str, study: Study) -> str:
    import torch

    if device == "auto":
        return "cuda" if study.resources.gpu > 0 and torch.cuda.is_available() else "cpu"
    return device


def ray_searcher(inner: StudySearcher):
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
            # None: nothing to start now (runs are in flight here or with other drivers);
            # the searcher returns Searcher.FINISHED ("FINISHED") itself when the study is complete.
            return self._live().suggest(trial_id)

        def on_trial_result(self, trial_id: str, result: dict) -> None:  # noqa: D102
            self._live().on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:  # noqa: D102
            self._live().on_trial_complete(trial_id, result, error)

    return _Forward(inner)


def concurrency(study: Study, resources: Mapping[str, float]) -> int:
    limits = []
    if study.resources.cpu > 0:
        limits.append(int(resources.get("CPU", 1) // study.resources.cpu))
    if study.resources.gpu > 0:
        limits.append(int(resources.get("GPU", 0) // study.resources.gpu))
    n = max(1, min(limits) if limits else 1)
    return min(n, study.max_concurrent) if study.max_concurrent else n


def fit(study: Study, searcher: StudySearcher, trial_fn: TrialFn, device: str, workdir: str, samples: int) -> None:
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
            search_alg=ray_searcher(searcher), scheduler=scheduler,
            num_samples=samples, max_concurrent_trials=study.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name=study.name, storage_path=workdir, verbose=0, log_to_file=False,
                                  failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
    )
    tuner.fit()

