"""Where a classification trial's trained weights go, and how its stored path finds them again.

Every COMPLETE or PRUNED classification trial keeps the model it was scored with, as one
model file (:mod:`ablate.models.exported`: the state dict plus the typed architecture), so
``ablate export`` and ``ablate.create_model(FILE)`` give back any candidate. The contract:

* **Artifacts folder**: for ``sqlite:///DIR/NAME.db``, ``DIR/NAME.artifacts/`` (it moves
  with the database); for any other storage, ``runs/<study>.artifacts/`` under the driver's
  working folder; ``ablate run --artifacts DIR`` chooses another. Workers write into it, so
  several drivers or a Ray cluster need a folder every node sees at the same path.
* **File**: ``<artifacts>/<study>/trial-<N>.safetensors``, N the Optuna trial number (the
  driver creates the trial before the worker starts, and hands the number over with the
  config). Written whole or not at all (:func:`ablate.atomic.write_atomic`).
* **Stored**: the trial's ``weights_file`` user attribute: relative to the database's
  folder when the file lies under it (so a moved run folder still works), else absolute.
  Recorded for COMPLETE and PRUNED trials only; a failed trial keeps no file (the worker
  removes it when the trial raises, the driver when it records any FAIL).
* **Which weights**: the trained model whose ``top1`` the trial recorded (not the EMA:
  :func:`ablate.train.train_classifier` scores the model itself and reports the EMA as
  ``top1_ema``, a curve only). The file is written before the epoch is reported, so it is
  always the model of the last report the driver saw: after every epoch when a scheduler
  may stop the trial after any report (a PRUNED trial keeps its last epoch), else after
  the last epoch only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ablate.errors import ConfigError, EnvironmentProblem, StorageError, environment_problem

__all__ = ["WEIGHTS_ATTR", "Artifacts", "WeightsTarget", "default_artifacts", "saving_weights", "stored_path",
           "trial_file", "weights_candidates"]

#: The trial user attribute that names its weights file.
WEIGHTS_ATTR = "weights_file"


def _db_file(url: str) -> Path | None:
    """The SQLite file behind ``url`` (absolute), or None for other storages."""
    from ablate.storage import expand_url, sqlite_path

    try:
        path = sqlite_path(expand_url(url))
    except StorageError:  # an unset ${VAR}: not a file URL this process can name
        return None
    return Path(os.path.abspath(path)) if path is not None else None


def default_artifacts(url: str, study: str) -> Path:
    """The artifacts folder of ``study`` stored at ``url`` (absolute; see the module docstring)."""
    db = _db_file(url)
    if db is not None:
        return db.with_name(db.stem + ".artifacts") if db.suffix else db.with_name(db.name + ".artifacts")
    return Path(os.path.abspath(Path("runs") / f"{study}.artifacts"))


def trial_file(root: Path, study: str, number: int) -> Path:
    """The weights file of trial ``number`` of ``study`` under the artifacts folder ``root``."""
    return root / study / f"trial-{int(number)}.safetensors"


def stored_path(path: Path, url: str) -> str:
    """How ``path`` is stored in ``weights_file``: relative to the database's folder when
    it lies under it (POSIX separators), else absolute."""
    db = _db_file(url)
    if db is not None:
        with contextlib.suppress(ValueError):
            return Path(path).relative_to(db.parent).as_posix()
    return str(path)


def weights_candidates(stored: str, url: str, *, artifacts: str | os.PathLike[str] | None = None) -> list[Path]:
    """Where a stored ``weights_file`` may be, in the order to look.

    With ``artifacts`` (the folder moved, or seen from another machine): its
    ``<study>/trial-<N>.safetensors`` only. Otherwise the stored path itself: an absolute
    one as it is, a relative one from the database's folder (the working folder for
    storages that are no file).
    """
    rel = Path(stored)
    if artifacts is not None:
        return [Path(artifacts).joinpath(*rel.parts[-2:])]
    if rel.is_absolute():
        return [rel]
    db = _db_file(url)
    return [(db.parent if db is not None else Path.cwd()) / rel]


@dataclass(frozen=True)
class WeightsTarget:
    """What one trial's worker needs to keep its weights; travels in the trial's Ray config.

    Attributes:
        path: the absolute file to write (Ray changes a worker's working folder).
        stored: the form the driver records (:func:`stored_path`).
        study: the study's name, written into the file.
        trial: the Optuna trial number, written into the file.
        every_epoch: save after every epoch (a scheduler may stop the trial), not only the last.
    """

    path: str
    stored: str
    study: str
    trial: int
    every_epoch: bool

    def to_json(self) -> dict[str, Any]:
        """The plain form Ray carries."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WeightsTarget:
        """Checked back from Ray's config.

        Raises:
            ConfigError: missing keys or values of the wrong type.
        """
        try:
            target = cls(path=data["path"], stored=data["stored"], study=data["study"], trial=data["trial"],
                         every_epoch=data["every_epoch"])
        except (KeyError, TypeError) as err:
            raise ConfigError(f"a trial's weights target is malformed ({err})") from None
        if not (isinstance(target.path, str) and os.path.isabs(target.path) and isinstance(target.stored, str)
                and isinstance(target.study, str) and isinstance(target.trial, int)
                and isinstance(target.every_epoch, bool)):
            raise ConfigError(f"a trial's weights target is malformed: {data!r}")
        return target

    def save(self, model: Any, arch: Any, metrics: Mapping[str, Any]) -> None:
        """Write ``model``'s weights, its ``arch`` and the epoch's ``top1`` (atomically).

        Raises:
            EnvironmentProblem: the folder cannot be made or written (the trial fails with
                this line: a COMPLETE trial always has its weights).
        """
        from ablate.models.exported import state_tensors, write_exported

        path = Path(self.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            problem = environment_problem(err, path.parent, any_errno=True)
            assert problem is not None
            raise problem from err
        meta = {"study": self.study, "trial": self.trial, "epoch": int(metrics.get("epoch", 0))}
        if "top1" in metrics:
            meta["top1"] = repr(float(metrics["top1"]))
        write_exported(path, state_tensors(model), arch, meta)

    def discard(self) -> None:
        """Remove the file, if any (a trial that failed keeps none); never raises."""
        with contextlib.suppress(OSError):
            Path(self.path).unlink(missing_ok=True)


@dataclass(frozen=True)
class Artifacts:
    """One run's artifacts folder: where its trials' weights go (the driver's view).

    Attributes:
        root: the folder (absolute).
        url: the study's storage URL (decides the stored form).
        study: the study's name.
        every_epoch: whether trials save after every epoch (a scheduler may stop them).
    """

    root: Path
    url: str
    study: str
    every_epoch: bool = False

    @classmethod
    def for_study(cls, study: Any, url: str, folder: str | os.PathLike[str] | None = None) -> Artifacts | None:
        """The artifacts of a classification ``study`` at ``url`` (None for detection: its
        trials export as model YAML); ``folder`` overrides the default folder."""
        if study.task != "classify":
            return None
        root = Path(os.path.abspath(folder)) if folder is not None else default_artifacts(url, study.name)
        every = study.scheduler is not None and study.scheduler_metric is not None
        return cls(root=root, url=url, study=study.name, every_epoch=every)

    def path(self, number: int) -> Path:
        """Trial ``number``'s file."""
        return trial_file(self.root, self.study, number)

    def target(self, number: int) -> WeightsTarget:
        """What the worker of trial ``number`` gets."""
        path = self.path(number)
        return WeightsTarget(path=str(path), stored=stored_path(path, self.url), study=self.study,
                             trial=int(number), every_epoch=self.every_epoch)

    def check(self) -> None:
        """Refuse a folder that cannot be written, before anything is stored or trained.
        Nothing is created: the workers make the folder when they first save.

        Raises:
            EnvironmentProblem: the folder (or the nearest existing folder above it) is not
                a writable folder (one line naming it).
        """
        where = self.root
        while not where.exists() and where.parent != where:
            where = where.parent
        if not where.is_dir():
            raise EnvironmentProblem(f"{where}: not a folder, so the artifacts folder {self.root} cannot be made; "
                                     "choose another with `ablate run --artifacts DIR`")
        if not os.access(where, os.W_OK | os.X_OK):
            raise EnvironmentProblem(f"{where}: no permission to write the trials' weights there; choose another "
                                     "folder with `ablate run --artifacts DIR`")

    def forget(self, number: int) -> None:
        """Remove trial ``number``'s file if this machine sees one (a FAIL keeps none); never raises."""
        with contextlib.suppress(OSError):
            self.path(number).unlink(missing_ok=True)


def saving_weights(on_epoch: Callable[[dict], None], model: Any, arch: Any, report: Any,
                   epochs: int) -> Callable[[dict], None]:
    """``on_epoch`` that first saves ``model`` where ``report.weights_target`` says.

    The runner's worker hangs a :class:`WeightsTarget` on the report function it hands to
    :func:`ablate.run.trial.run_trial`; a report without one (a direct call, a test) gets
    ``on_epoch`` back unchanged. The file is written before the epoch is reported (see the
    module docstring), and the report then carries ``weights_file``.
    """
    target = getattr(report, "weights_target", None)
    if not isinstance(target, WeightsTarget):
        return on_epoch

    def saving(metrics: dict) -> None:
        if target.every_epoch or int(metrics.get("epoch", 0)) >= epochs:
            target.save(model, arch, metrics)
            metrics = {**metrics, WEIGHTS_ATTR: target.stored}
        on_epoch(metrics)

    return saving
