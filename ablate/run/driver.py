"""Run (or resume) a study: open its storage, plan the missing runs, and let Ray Tune execute
them while the searcher records each one."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field

from ablate.study import Study
from ablate.run.checkpoint import Artifacts
from ablate.run.claims import MAX_BEAT_S, Claims, Heartbeat
from ablate.run.optuna_study import open_optuna_study, state_counts
from ablate.run.progress import Progress
from ablate.run.ray_tune import concurrency, fit, interruptible, ray_session
from ablate.run.searcher import StudySearcher
from ablate.run.trackers import Trackers
from ablate.run.trial import TrialFn, run_trial
from ablate.storage import open_storage

__all__ = ["RunSummary", "run_study"]


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


def run_study(study: Study, *, storage: str | None = None, trials: int | None = None, address: str | None = None,
              device: str = "auto", trial_fn: TrialFn = run_trial, progress: bool = True,
              num_cpus: int | None = None, max_retries: int = 1, heartbeat_grace_s: float = 60.0,
              trackers: Trackers | None = None, artifacts: str | os.PathLike[str] | None = None) -> RunSummary:
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
        max_retries: How often a run whose process died (SIGKILL, OOM kill, lost node, a
            driver gone silent) is trained again; a run that fails by its own error is not.
        heartbeat_grace_s: How long another driver's silent runs are kept before they are
            treated as dead, closed and re-queued (every driver beats at least every
            :data:`~ablate.run.claims.MAX_BEAT_S` seconds, so keep it well above that).
        trackers: Where the driver also logs every trial (MLflow, TensorBoard), opened and
            checked; None: :meth:`Trackers.open` of the study's ``trackers:``, before anything
            is stored (a tracker that cannot log is a ConfigError, not a failure mid-study).
        artifacts: The folder where classification trials keep their trained weights
            (default: next to a SQLite database, ``runs/x.db`` -> ``runs/x.artifacts/``; see
            :mod:`ablate.run.checkpoint`); it must be writable, and shared by every node when
            several drivers or a Ray cluster run the study.

    Any number of drivers may run one study on one storage at once: each run is claimed in
    the storage (:mod:`ablate.run.claims`) before it trains, and a driver with nothing left
    to claim waits until the runs in flight elsewhere are finished (or taken over).
    """
    url = storage or study.storage
    kept = Artifacts.for_study(study, url, artifacts)
    if kept is not None:
        kept.check()  # before anything is stored or trained
    trackers = trackers if trackers is not None else Trackers.open(study)
    try:
        return _run(study, url, trackers, trials=trials, address=address, device=device, trial_fn=trial_fn,
                    progress=progress, num_cpus=num_cpus, max_retries=max_retries,
                    heartbeat_grace_s=heartbeat_grace_s, artifacts=kept)
    finally:
        trackers.close()  # runs of interrupted trials end KILLED, event files are flushed


def _run(study: Study, url: str, trackers: Trackers, *, trials: int | None, address: str | None, device: str,
         trial_fn: TrialFn, progress: bool, num_cpus: int | None, max_retries: int,
         heartbeat_grace_s: float, artifacts: Artifacts | None = None) -> RunSummary:
    storage_ = open_storage(url, create=True)
    ostudy = open_optuna_study(study, url, storage=storage_)
    claims = Claims(url, study.name)
    budget_total = trials if trials is not None else study.trials
    summary = RunSummary(study=study.name, storage=url)
    reporter = Progress(study, enabled=progress)

    def finished(frozen) -> None:
        if artifacts is not None and frozen.state.name == "FAIL":
            artifacts.forget(frozen.number)  # e.g. interrupted after saving: a failed trial keeps no weights
        reporter.trial_done(frozen)
        trackers.finish(frozen)

    searcher = StudySearcher(study, ostudy, budget_total, on_finish=finished, storage=storage_,
                             claims=claims, max_retries=max_retries, grace_s=heartbeat_grace_s,
                             on_epoch=trackers.epoch if trackers else None)
    reporter.in_flight = lambda: len(searcher.live)  # the periodic line's "running"
    closed = searcher.take_over()
    if closed:
        summary.message = f"closed {len(closed)} interrupted trial(s) as FAIL: {closed}"
    searcher.replan()
    remaining = searcher.planned
    start = time.perf_counter()
    if remaining == 0 and not claims.in_flight() and not searcher.unfinished():
        summary.message = (summary.message + "; " if summary.message else "") + "nothing to do: the budget is met"
        summary.states = state_counts(ostudy)
        claims.close()
        return summary
    workdir = tempfile.mkdtemp(prefix="ablate-ray-")
    try:
        with ray_session(address, num_cpus=num_cpus), reporter.running(remaining), \
                Heartbeat(claims, min(MAX_BEAT_S, heartbeat_grace_s / 4)):
            import ray

            summary.concurrency = concurrency(study, ray.cluster_resources())
            try:
                with interruptible(searcher):
                    fit(study, searcher, trial_fn, device, workdir, -1, artifacts)  # until the searcher says FINISHED
                if searcher.stopping:  # Tune caught the interrupt and returned
                    raise KeyboardInterrupt
            except BaseException:
                searcher.stopping = True
                searcher.interrupt_all()
                raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        claims.close()
    summary.wall_s = time.perf_counter() - start
    summary.new_trials = searcher.finished
    summary.states = state_counts(ostudy)
    if searcher.exhausted:
        summary.message = (summary.message + "; " if summary.message else "") + searcher.exhausted
    return summary

