"""Trackers: also log every trial to MLflow and TensorBoard, from the driver (off by default).

The study's storage stays the record; a tracker is a copy for the tools people already use.
Both log on the driver only (Ray never holds a client, a file handle or a lock): the searcher
hands each per-epoch report to :meth:`Trackers.epoch` and each finished trial to
:meth:`Trackers.finish`.

* MLflow (``mlflow-skinny``, the ``trackers`` extra): one experiment per study, one run per
  trial named ``<study>-<number>``; params are the trial's params plus ``seed``, ``repeat`` and
  ``config_key``; per-epoch metrics with ``step`` = epoch; the final values as
  ``final/<objective>``; the costs (``params_m``, ``gflops``, ``gflops_paper``, ...) and
  ``wall_s`` as metrics; tags ``state`` and ``error``; the run ends FINISHED (COMPLETE),
  KILLED (PRUNED) or FAILED. A directory is MLflow's local file store: MLflow 3 keeps it in
  maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE=true``, which ablate sets
  for its own process when one is configured (view it with
  ``MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri DIR``); ``sqlite:///FILE.db``
  needs no such switch. MLflow's telemetry is turned off unless the user set it.
* TensorBoard (``tensorboardX``, which Ray Tune already installs; lighter than
  ``torch.utils.tensorboard``, which needs the whole ``tensorboard`` package): one event
  folder per trial, ``DIR/<study>/trial-NNNN``, with the per-epoch scalars (step = epoch), the
  final values and the costs, flushed after every epoch so running trials show.

Everything is checked in :meth:`Trackers.open`, before any trial starts: a missing extra, an
unwritable folder or an unreachable server is one :class:`~ablate.errors.ConfigError` line. A
tracker that fails later (a full disk, a server gone) prints one warning and stops; the study
goes on. The storage URL (which may hold a password) is never logged.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from ablate.errors import ConfigError
from ablate.metrics import COSTS
from ablate.study import Study
from ablate.study.trackers import TrackersSpec

__all__ = ["Trackers", "tensorboard_dir", "mlflow_run_name"]

_EXTRA = "pip install 'ablate[trackers]' (mlflow-skinny, tensorboardX)"
_MLFLOW_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED"}
#: MLflow's limit on a tag value; a longer error is cut.
_MAX_TAG = 5000


def mlflow_run_name(study: str, number: int) -> str:
    """The MLflow run of trial ``number`` of ``study``."""
    return f"{study}-{number}"


def tensorboard_dir(root: str, study: str, number: int) -> str:
    """The TensorBoard event folder of trial ``number`` of ``study`` under ``root``."""
    return os.path.join(root, study, f"trial-{number:04d}")


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (bools and strings are not metrics)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:500]


def _final_metrics(study: Study, frozen: FrozenTrial) -> dict[str, float]:
    """The trial's final values (``final/<objective>``), costs and wall time, as numbers."""
    out: dict[str, float] = {}
    if frozen.values is not None:
        for objective, value in zip(study.objectives, frozen.values):
            out[f"final/{objective.name}"] = float(value)
    for key in (*COSTS, "wall_s", "epochs_done"):
        value = _number(frozen.user_attrs.get(key))
        if value is not None:
            out[key] = value
    return out


def _params(frozen: FrozenTrial) -> dict[str, str]:
    """What identifies the run: the trial's params plus seed, repeat and configuration key."""
    out = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in frozen.params.items()}
    for key in ("seed", "repeat", "config_key"):
        if key in frozen.user_attrs:
            out[key] = str(frozen.user_attrs[key])
    return out


class _MLflow:
    """One MLflow experiment per study; one run per trial, created at its first report."""

    name = "mlflow"

    def __init__(self, study: Study, uri: str) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # nothing leaves the machine unasked
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            os.makedirs(uri[len("file:"):], exist_ok=True)
        elif uri.startswith("sqlite:///"):
            os.makedirs(os.path.dirname(uri[len("sqlite:///"):]) or ".", exist_ok=True)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # a dead server: seconds, not minutes
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "creating tables" lines in the run's output
        from mlflow.tracking import MlflowClient

        self.study = study
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(study.name)
        if experiment is None:
            try:
                self.client.create_experiment(study.name)
            except Exception:
                if self.client.get_experiment_by_name(study.name) is None:
                    raise  # not another driver of this study creating it a moment earlier: a real failure
            experiment = self.client.get_experiment_by_name(study.name)
        if experiment.lifecycle_stage == "deleted":
            raise ConfigError(f"the MLflow experiment {study.name!r} is deleted; restore it (mlflow experiments "
                              f"restore) or log to another place")
        self.experiment_id = experiment.experiment_id
        self.runs: dict[int, str] = {}

    def _run(self, number: int) -> str:
        run_id = self.runs.get(number)
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=mlflow_run_name(self.study.name, number),
                                         tags={"ablate.study": self.study.name, "ablate.trial": str(number)})
            run_id = self.runs[number] = run.info.run_id
        return run_id

    def epoch(self, number: int, point: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        step, now = int(point["epoch"]), int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in ((k, _number(v)) for k, v in point.items() if k != "epoch")
                   if v is not None]
        if metrics:
            self.client.log_batch(self._run(number), metrics=metrics)

    def finish(self, frozen: FrozenTrial) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run_id = self._run(frozen.number)
        self.runs.pop(frozen.number, None)
        now, step = int(time.time() * 1000), int(frozen.user_attrs.get("epochs_done") or 0)
        tags = [RunTag("state", frozen.state.name)]
        if frozen.user_attrs.get("error"):
            tags.append(RunTag("error", str(frozen.user_attrs["error"])[:_MAX_TAG]))
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in _final_metrics(self.study, frozen)
                                               .items()],
                              params=[Param(k, v[:6000]) for k, v in _params(frozen).items()], tags=tags)
        self.client.set_terminated(run_id, status=_MLFLOW_STATUS.get(frozen.state, "FAILED"))

    def close(self) -> None:
        """Runs still open (the driver is stopping) end KILLED."""
        for run_id in self.runs.values():
            self.client.set_terminated(run_id, status="KILLED")
        self.runs.clear()


class _TensorBoard:
    """One event folder per trial; scalars per epoch, then the final values and costs."""

    name = "tensorboard"

    def __init__(self, study: Study, root: str) -> None:
        from tensorboardX import SummaryWriter

        self.SummaryWriter = SummaryWriter
        self.study, self.root = study, root
        folder = os.path.join(root, study.name)
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ablate-check-"):
            pass  # the folder takes files: fail now, not after the first epoch
        self.writers: dict[int, Any] = {}

    def _writer(self, number: int) -> Any:
        writer = self.writers.get(number)
        if writer is None:
            writer = self.writers[number] = self.SummaryWriter(
                logdir=tensorboard_dir(self.root, self.study.name, number), flush_secs=30)
        return writer

    def epoch(self, number: int, point: Mapping[str, Any]) -> None:
        writer, step = self._writer(number), int(point["epoch"])
        for key, value in point.items():
            value = _number(value)
            if key != "epoch" and value is not None:
                writer.add_scalar(key, value, global_step=step)
        writer.flush()

    def finish(self, frozen: FrozenTrial) -> None:
        writer = self._writer(frozen.number)
        self.writers.pop(frozen.number, None)
        step = int(frozen.user_attrs.get("epochs_done") or 0)
        try:
            for key, value in _final_metrics(self.study, frozen).items():
                writer.add_scalar(key, value, global_step=step)
            writer.add_text("params", json.dumps(_params(frozen), sort_keys=True), global_step=step)
            state = frozen.state.name + (f": {frozen.user_attrs['error']}" if frozen.user_attrs.get("error") else "")
            writer.add_text("state", state, global_step=step)
        finally:
            writer.close()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


class Trackers:
    """The trackers a study is configured with; every call is safe to make when there are none.

    Build it with :meth:`open`, which checks each tracker before any trial starts.
    """

    def __init__(self, loggers: list[Any], warn: Callable[[str], None] | None = None) -> None:
        self.loggers = loggers
        self.warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))

    @classmethod
    def open(cls, study: Study, spec: TrackersSpec | None = None, *, flags: tuple[str, ...] = (),
             warn: Callable[[str], None] | None = None) -> Trackers:
        """Open the trackers ``spec`` names (default: ``study.trackers``).

        Args:
            study: The study being run (its name names the experiment and the folders).
            spec: Where to log; None: the study file's ``trackers:``.
            flags: The trackers set on the command line (``mlflow``, ``tensorboard``): errors name
                ``--mlflow`` rather than the file's key.
            warn: Where a tracker that fails mid-study says so (default: stderr).

        Raises:
            ConfigError: the extra is not installed, a folder cannot be written, the server
                cannot be reached (one line: where it was configured, what failed, what to do).
        """
        spec = spec if spec is not None else study.trackers
        loggers: list[Any] = []
        if not spec:
            return cls(loggers, warn)
        for name, value, make in (("mlflow", spec.mlflow, _MLflow), ("tensorboard", spec.tensorboard, _TensorBoard)):
            if value is None:
                continue
            where = f"--{name}" if name in flags else f"{study.source or '<spec>'}: trackers.{name}"
            try:
                loggers.append(make(study, value))
            except ImportError as err:
                cls(loggers).close()
                raise ConfigError(f"{where}: {name} logging needs the trackers extra ({_first_line(err)}), "
                                  f"allowed: {_EXTRA}, or drop {where.rsplit(' ', 1)[-1]}") from None
            except ConfigError as err:
                cls(loggers).close()
                raise ConfigError(f"{where}: {err}") from None
            except Exception as err:  # noqa: BLE001 - OSError, MlflowException, ...: any is one line here
                cls(loggers).close()
                from ablate.storage import display_url, scrub_secrets

                raise ConfigError(f"{where}: cannot log to {display_url(value)}: "
                                  f"{scrub_secrets(_first_line(err), value)}, allowed: a writable directory or a "
                                  f"reachable tracking URI") from None
        return cls(loggers, warn)

    def __bool__(self) -> bool:
        return bool(self.loggers)

    def _each(self, what: str, call: Callable[[Any], None]) -> None:
        for logger in list(self.loggers):
            try:
                call(logger)
            except Exception as err:  # noqa: BLE001 - a tracker never stops the study
                self.loggers.remove(logger)
                self.warn(f"warning: the {logger.name} tracker stopped ({what}: {_first_line(err)}); the study goes "
                          f"on, its storage keeps every trial")
                try:
                    logger.close()
                except Exception:  # noqa: BLE001,S110 - already broken; its warning is printed
                    pass

    def epoch(self, number: int, point: Mapping[str, Any]) -> None:
        """Log one per-epoch report (``point`` has ``epoch`` and the curve's metrics)."""
        if "epoch" in point and _number(point["epoch"]) is not None and math.isfinite(point["epoch"]):
            self._each(f"trial {number} epoch {point['epoch']}", lambda lg: lg.epoch(number, point))

    def finish(self, frozen: FrozenTrial) -> None:
        """Log how a trial ended: params, final values, costs, state and error."""
        self._each(f"trial {frozen.number}", lambda lg: lg.finish(frozen))

    def close(self) -> None:
        """End what is still open (runs of interrupted trials end KILLED) and flush every file."""
        self._each("closing", lambda lg: lg.close())
