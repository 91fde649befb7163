"""Ray Tune's side of a run: a loopback-only local Ray, the trainable that runs one trial in
a worker, the forwarder that Ray holds in place of the searcher, and the Tuner.

This is the only module that imports Ray.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ablate.errors import ConfigError
from ablate.metrics import TRAINING_METRICS
from ablate.study import Study, study_from_dict
from ablate.run.candidate import Candidate
from ablate.run.checkpoint import WEIGHTS_ATTR, Artifacts, WeightsTarget
from ablate.run.ray_cluster import (CONNECT_TIMEOUT_S, PROBE_TIMEOUT_S, Interrupted, SessionRecord, auth_env, bounded,
                                    check_address, clean_stale_sessions, connect_hint, interrupt_on_signals,
                                    is_loopback, parse_address, ray_temp_root, record_dir, token_advice)
from ablate.run.searcher import StudySearcher
from ablate.run.trial import TrialFn

__all__ = ["ray_session", "refuse_routable_local_ray", "ray_searcher", "interruptible", "fit", "concurrency",
           "check_resources", "node_resources", "Interrupted"]


def _env_for_ray() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1000")


@contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
                connect_timeout_s: float = CONNECT_TIMEOUT_S) -> Iterator[None]:
    """Start a local Ray, or join the cluster at ``address``, for the duration of a run.

    A local Ray binds 127.0.0.1 with no dashboard and usage stats off, in its own short
    session directory, with a per-process auth token that is never written to
    ``~/.ray``; the ``finally`` shuts it down on every exit path and removes what it left.
    Before starting, what killed predecessors left on this machine is cleaned up
    (:func:`ablate.run.ray_cluster.clean_stale_sessions`). Joining (``HOST:PORT`` or
    ``auto``) is bounded by ``connect_timeout_s`` and passes a known token on when the
    cluster wants one (:func:`ablate.run.ray_cluster.auth_env`). SIGINT and
    SIGTERM raise :class:`~ablate.run.ray_cluster.Interrupted` (exit code 130 or 143) while
    starting, connecting and inside the session. If Ray is already initialised, it is used
    as is and left running.

    Raises:
        ConfigError: an address that cannot work or answer (one line, what to check).
        Interrupted: SIGINT or SIGTERM.
    """
    import logging

    begin = time.monotonic()
    _env_for_ray()
    imported = "ray" in sys.modules
    address = None if address in (None, "", "local") else address
    if imported:
        import ray

        if ray.is_initialized():
            yield
            return
        if address is None:
            refuse_routable_local_ray(ray.util.get_node_ip_address())
    if address is not None:
        check_address(address, min(PROBE_TIMEOUT_S, connect_timeout_s))
        parsed = parse_address(address)
        if parsed is not None and is_loopback(parsed[0]):
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # see below
    else:
        # "Local Ray only": Ray then advertises 127.0.0.1 instead of the machine's routable
        # address (it rewrites an explicit _node_ip_address of 127.0.0.1 otherwise). Read
        # when Ray is imported, so callers that import Ray first should set it too.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    with interrupt_on_signals():  # it may ask the cluster (`ray status`)
        session_env, process_env = auth_env(address, min(PROBE_TIMEOUT_S, connect_timeout_s))
    os.environ.update(process_env)
    saved = {k: os.environ.get(k) for k in (*session_env, "RAY_TMPDIR", "RAY_AUTH_MODE")}
    os.environ.update(session_env)
    import ray

    if imported:
        _reload_auth_mode(ray)
    logging.getLogger("ray").setLevel(logging.ERROR)  # not "SIGTERM handler not set" from the connect thread
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=True,
                                  logging_level=logging.ERROR)
    record: SessionRecord | None = None
    connected = False
    try:
        try:
            clean_stale_sessions()
        except Exception:  # never in the way of a run; the next one tries again
            pass
        if address is None:
            root = ray_temp_root()
            os.environ["RAY_TMPDIR"] = root  # Ray's session dir and sockets go under it
            record = SessionRecord([root])
            with interrupt_on_signals():
                try:
                    # address="local": always a new local Ray, never a cluster that `ray start` (or a
                    # stale ray_current_cluster file) happens to advertise on this machine.
                    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, _node_ip_address="127.0.0.1",
                             **kwargs)
                except SystemExit as err:  # Ray's own SIGTERM handler while it starts: sys.exit(15)
                    if err.code == signal.SIGTERM:
                        raise Interrupted(signal.SIGTERM) from None
                    raise
            connected = True
            record.track()
        else:
            record = SessionRecord([])
            _join(ray, address, kwargs, connect_timeout_s - (time.monotonic() - begin))
            connected = True
        with interrupt_on_signals():
            yield
    finally:
        if connected or address is None:  # a local Ray that failed to start is shut down too
            ray.shutdown()
        if record is not None:
            record.close()
        _restore(saved)  # a new local Ray sets RAY_AUTH_MODE=token for the process
        if connected:  # (not while an abandoned connect may still be running)
            _reload_auth_mode(ray)


def refuse_routable_local_ray(advertised: str) -> None:
    """Refuse to start a local Ray that would listen beyond loopback.

    Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, when it is imported; only that
    keeps it from rewriting ``_node_ip_address="127.0.0.1"`` into the machine's routable
    address, on which its servers then listen on every interface. :func:`ray_session` sets
    it, so a process that imported Ray earlier without it gets a local Ray that other
    machines can reach. ``advertised`` is what Ray would use (``ray.util.get_node_ip_address()``
    before ``ray.init``): on a machine with only loopback it is loopback, and nothing is refused.

    Raises:
        ConfigError: ``advertised`` is not a loopback address.
    """
    if is_loopback(advertised):
        return
    raise ConfigError(f"ray was imported before ablate started its local Ray, so Ray would listen on {advertised} "
                      f"and every other interface, not only 127.0.0.1; set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 "
                      f"before `import ray` (Ray reads it once, when imported), or start Ray yourself with "
                      f"ray.init(...) (ablate then uses it as is), or pass a cluster address")


def _reload_auth_mode(ray: Any) -> None:
    """Make Ray's cached config follow ``RAY_AUTH_MODE`` again: Ray reads it when imported
    and when it starts a local cluster, and a driver whose mode differs from its cluster's
    loses its trials. Ray's own token setup refreshes it this way; no public API does."""
    ray._raylet.Config.initialize("")


def _join(ray: Any, address: str, kwargs: dict[str, Any], timeout_s: float) -> None:
    """``ray.init(address=address)`` in a thread the caller abandons after ``timeout_s`` or on a signal."""
    connect_timeout = max(1.0, timeout_s)

    def timed_out() -> ConfigError:
        return ConfigError(f"no answer from the Ray cluster at {address} within {connect_timeout:.0f} s; "
                           f"{connect_hint(address, ray.__version__)}")

    # Ray's C++ client logs one warning per failed attempt on fd 2: kept off the terminal
    # (the error is one line) and read to stop early on a refused token or a non-Ray port.
    with captured_stderr() as log:
        try:
            with interrupt_on_signals():
                bounded(lambda: ray.init(address=address, **kwargs), connect_timeout, timed_out,
                        watch=lambda: connect_failure(address, log()))
        except ConfigError:
            raise
        except (ConnectionError, RuntimeError, ValueError, OSError) as err:
            known = connect_failure(address, log())
            if known is not None:
                raise known from err
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"cannot join the Ray cluster at {address}: {first}; "
                              f"{connect_hint(address, ray.__version__)}") from err


@contextmanager
def captured_stderr() -> Iterator[Callable[[], str]]:
    """File descriptor 2 goes to a temporary file while inside (Ray's C++ client logs a
    warning per retry there); yields a function that returns what was written so far."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)

        def text() -> str:
            size = os.fstat(tmp.fileno()).st_size
            return os.pread(tmp.fileno(), min(size, 1 << 16), max(0, size - (1 << 16))).decode(errors="replace")

        try:
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


#: What Ray's C++ client logs on each failed attempt to reach the GCS.
_GCS_RETRY = "Failed to get cluster ID from GCS server:"


def connect_failure(address: str, log: str) -> ConfigError | None:
    """A one-line error when Ray's client log shows that joining cannot succeed: the token
    was refused or missing, or the port answers but is no Ray GCS (three failed attempts)."""
    if "InvalidAuthToken" in log or "Unauthenticated" in log:
        return ConfigError(f"the Ray cluster at {address} {token_advice()}")
    tries = [line.split(_GCS_RETRY, 1)[1].strip() for line in log.splitlines() if _GCS_RETRY in line]
    if len(tries) >= 3:
        return ConfigError(f"cannot join the Ray cluster at {address}: its port answers but not as a Ray GCS "
                           f"({tries[-1]}); check that the address is the head's GCS address (`ray start --head` "
                           f"prints it, port 6379 by default)")
    return None


def _restore(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextmanager
def interruptible(searcher: "StudySearcher") -> Iterator[None]:
    """Ctrl-C and SIGTERM mark the searcher as stopping, then raise
    :class:`~ablate.run.ray_cluster.Interrupted` (a KeyboardInterrupt).

    Ray Tune may swallow the interrupt and stop its trials itself; the flag makes the
    searcher record those trials as interrupted (not PRUNED), and leaving the block raises
    the interrupt again, with its signal, once Tune returns.
    """
    def stop(signum: int) -> None:
        searcher.stopping = True

    with interrupt_on_signals(stop) as received:
        yield
    if received:  # Tune caught it and returned
        raise Interrupted(received[-1])


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

    # Where the trial keeps its scored weights (ablate.run.checkpoint); run_trial finds it on `report`.
    target = WeightsTarget.from_json(config["weights"]) if config.get("weights") else None
    report.weights_target = target  # type: ignore[attr-defined]
    try:
        study = study_from_dict(config["spec"], check=False)  # schema re-checked; the driver did the model checks
        candidate = Candidate.from_json(config["candidate"])  # its architectures re-validated, once
        resolved = _resolve_device(device, study)
        trial_fn(study, config["params"], report, device=resolved, repeat=int(config.get("repeat", 0)),
                 candidate=candidate)
    except Exception as err:  # recorded as FAIL with its message; the study goes on
        message = f"{type(err).__name__}: {err}".strip()
        if target is not None:
            target.discard()  # a failed trial keeps no weights
        keep = {k: v for k, v in last.items() if k not in TRAINING_METRICS and k != WEIGHTS_ATTR}  # no score
        tune.report({**keep, "error": message, "wall_s": time.perf_counter() - start})


def _resolve_device(device: str, study: Study) -> str:
    import torch

    if device == "auto":
        return "cuda" if study.resources.gpu > 0 and torch.cuda.is_available() else "cpu"
    return device


def ray_searcher(inner: StudySearcher, artifacts: Artifacts | None = None):
    """A ``ray.tune.search.Searcher`` that forwards to ``inner``, built here so that importing
    this module does not import Ray.

    With ``artifacts`` each config also carries where its trial keeps its weights
    (:class:`~ablate.run.checkpoint.WeightsTarget`, named by the trial's number).

    Ray pickles the search algorithm it is handed (``tuner.pkl``, its experiment-state
    files), and ``inner`` holds live state that must never be pickled: the Optuna study,
    its sampler (NSGA-II holds a thread lock since Optuna 5.1), the storage's engine and
    connections. So the forwarder's pickled form is only the study's name: a copy
    unpickled elsewhere forwards nothing and says why. Ablate resumes from its storage,
    never from Ray's restore files, so nothing is lost.
    """
    from ray.tune.search import Searcher

    class _Forward(Searcher):
        def __init__(self, live: StudySearcher, artifacts: Artifacts | None) -> None:  # no closure over `inner`
            super().__init__()  # (cloudpickle would follow it)
            self.study_name = live.study.name
            self.inner: StudySearcher | None = live
            self.artifacts = artifacts

        def __getstate__(self) -> dict:
            return {"study_name": self.study_name}

        def __setstate__(self, state: dict) -> None:
            Searcher.__init__(self)
            self.study_name = state["study_name"]
            self.inner, self.artifacts = None, None

        def _live(self) -> StudySearcher:
            if self.inner is None:
                raise RuntimeError(f"a pickled copy of study {self.study_name!r}'s searcher cannot propose or record "
                                   "trials: the searcher lives in the driver that runs the study")
            return self.inner

        def suggest(self, trial_id: str):  # noqa: D102
            # None: nothing to start now (runs are in flight here or with other drivers);
            # the searcher returns Searcher.FINISHED ("FINISHED") itself when the study is complete.
            config = self._live().suggest(trial_id)
            if isinstance(config, dict) and self.artifacts is not None:
                config["weights"] = self.artifacts.target(config["number"]).to_json()
            return config

        def on_trial_result(self, trial_id: str, result: dict) -> None:  # noqa: D102
            self._live().on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:  # noqa: D102
            self._live().on_trial_complete(trial_id, result, error)

    return _Forward(inner, artifacts)


def _times(have: float, need: float) -> int:
    """How many ``need`` fit in ``have``, in Ray's resource units of 1/10000 (so 1 CPU holds
    ten trials of 0.1 CPU, where ``1 // 0.1`` says 9)."""
    return int(round(have * 10_000)) // max(1, int(round(need * 10_000)))


def _demand(study: Study) -> dict[str, float]:
    return {key: amount for key, amount in (("CPU", study.resources.cpu), ("GPU", study.resources.gpu)) if amount > 0}


def concurrency(study: Study, resources: Mapping[str, float] | None = None,
                nodes: list[Mapping[str, float]] | None = None) -> int:
    """Trials that run at once: per node, the fewest of ``resource // per-trial`` over the
    resources a trial reserves (fractions included: 2 GPUs at ``gpu: 0.5`` run 4), summed
    over ``nodes`` when given (a trial runs on one node), else over the cluster's totals
    ``resources``; capped by ``max_concurrent``; at least 1."""
    demand = _demand(study)
    pools = nodes if nodes is not None else [resources or {}]
    n = sum(min((_times(pool.get(key, 0.0), need) for key, need in demand.items()), default=1) for pool in pools)
    n = max(1, n)
    return min(n, study.max_concurrent) if study.max_concurrent else n


def check_resources(study: Study, nodes: list[Mapping[str, float]]) -> None:
    """Refuse a study whose trial fits on no node of the cluster (Ray Tune would wait forever).

    Raises:
        ConfigError: naming what a trial reserves and the largest node.
    """
    demand = _demand(study)
    if any(all(pool.get(key, 0.0) + 1e-9 >= need for key, need in demand.items()) for pool in nodes):
        return
    want = ", ".join(f"{key.lower()}: {need:g}" for key, need in demand.items())
    have = "; ".join(", ".join(f"{key} {pool.get(key, 0.0):g}" for key in demand) for pool in nodes) or "no nodes"
    raise ConfigError(f"resources: each trial reserves {want}, which no Ray node has (nodes: {have}); lower "
                      f"`resources:` in the study, or run where the node declares them (a local Ray finds the "
                      f"machine's GPUs; `ray start --num-gpus N` declares them on a cluster node)")


def node_resources() -> list[dict[str, float]]:
    """Each alive Ray node's total resources (Ray's public ``ray.nodes()``)."""
    import ray

    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive", n.get("alive"))]


def fit(study: Study, searcher: StudySearcher, trial_fn: TrialFn, device: str, workdir: str, samples: int,
        artifacts: Artifacts | None = None) -> None:
    """Run ``samples`` trials (``-1``: until the searcher says FINISHED) with Ray Tune, each
    reserving the study's ``resources`` (Ray gives a GPU trial its own ``CUDA_VISIBLE_DEVICES``);
    with ``artifacts``, each classification trial keeps its weights there."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    nodes = node_resources()
    check_resources(study, nodes)
    # Tune keeps one trial pending at a time for a custom searcher unless max_concurrent_trials
    # is set: trials would start one by one and a node would rarely fill. So ask for as many
    # as the nodes hold (GPUs ÷ gpu-per-trial, fractions included), and Tune keeps them coming.
    at_once = concurrency(study, nodes=nodes)
    record_dir(workdir)  # a killed driver's Tune directory is removed by the next run
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
            search_alg=ray_searcher(searcher, artifacts), scheduler=scheduler,
            num_samples=samples, max_concurrent_trials=at_once, reuse_actors=True),
        run_config=tune.RunConfig(name=study.name, storage_path=workdir, verbose=0, log_to_file=False,
                                  failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
    )
    tuner.fit()

