"""The Python API: load a study, run it, read its results — the calls the command line makes.

``import ablate`` exposes these three functions lazily (this module imports the run and
results layers only when one is first used), so a script or a notebook does what ``ablate
validate``, ``ablate run`` and ``ablate show`` do without a subprocess::

    import ablate

    study = ablate.load_study("studies/window_size.yaml", overrides=["proxy.epochs=1"])
    summary = ablate.run_study(study, storage="sqlite:///runs/demo.db")
    res = ablate.read_results("sqlite:///runs/demo.db")
    res.trials    # a pandas DataFrame, one row per trial
    res.configs   # a pandas DataFrame, one row per configuration: n, mean, std, 95 % interval

Each function calls the same code as its command: :func:`load_study` is
:func:`ablate.study.check_study` (the one verdict of ``validate`` and ``run``);
:func:`run_study` is :func:`ablate.run.run_study` (the driver ``ablate run`` calls), after the
same check, taking a path too; :func:`read_results` opens the storage read-only through
:func:`ablate.results.load_results` (what ``show`` and ``report`` read). Bad input raises
the one-line :class:`ablate.AblateError` subclasses the command line prints as ``error:``.
(The names are ``run_study`` and ``read_results``, not ``run`` and ``results``: ``ablate.run``
and ``ablate.results`` are packages, and importing one rebinds its name on ``ablate``.)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from ablate.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from ablate.results import StudyResults
    from ablate.run import RunSummary
    from ablate.study import Study

__all__ = ["Results", "create_model", "load_study", "read_results", "run_study"]

#: Overrides as the command line takes them (``["train.epochs=1"]``) or as a mapping
#: (``{"train.epochs": 1}``; values are written as JSON, which YAML reads back unchanged).
Overrides = Union[Sequence[str], Mapping[str, Any]]

SCALES = ("proxy", "paper")


def _override_strings(overrides: Overrides | None) -> list[str]:
    """``key=value`` strings for :func:`ablate.study.check_study`, from either form."""
    if not overrides:
        return []
    if isinstance(overrides, Mapping):
        out = []
        for key, value in overrides.items():
            if not isinstance(key, str) or not key:
                raise ConfigError(f"overrides: keys are dotted study keys such as 'train.epochs', got {key!r}")
            try:
                text = json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise ConfigError(f"overrides: {key}: a value must be a number, string, bool, null or a "
                                  f"list/mapping of those, got {type(value).__name__}") from None
            out.append(f"{key}={text}")
        return out
    if isinstance(overrides, (str, bytes)):
        raise ConfigError(f"overrides: a list of 'key=value' strings or a mapping, got the string {overrides!r} "
                          f"(write [{overrides!r}])")
    out = []
    for item in overrides:
        if not isinstance(item, str):
            raise ConfigError(f"overrides: each override is a 'key=value' string, got {item!r}")
        out.append(item)
    return out


def load_study(path: str | os.PathLike[str], *, overrides: Overrides | None = None, scale: str = "proxy",
               storage: str | None = None) -> Study:
    """The typed, frozen study ``ablate run PATH [key=value ...] --scale SCALE`` would run.

    It is :func:`ablate.study.check_study`, the check ``ablate validate`` and ``ablate run``
    make before anything starts: the file, its search space, every key against the model
    builder, every grid cell and its paper-scale model, the data path, the storage URL.
    Nothing is opened or written.

    Args:
        path: The study YAML file.
        overrides: ``["train.epochs=1", "data.path=/data/imagenet"]`` or
            ``{"train.epochs": 1}``: set in the file's mapping before it is validated, as
            ``ablate run STUDY key=value`` does.
        scale: ``proxy`` (laptop scale: the file's ``proxy:`` section) or ``paper``.
        storage: A storage URL to check instead of the study's own (``--storage``).

    Raises:
        ConfigError: one line naming the file, line and key path, and what is allowed.
    """
    from ablate.study.load import check_study

    if scale not in SCALES:
        raise ConfigError(f"scale: unknown scale {scale!r}, allowed: {', '.join(SCALES)}")
    extra = _override_strings(overrides)
    if extra:
        return check_study(path, scale=scale, storage=storage, overrides=extra)
    return check_study(path, scale=scale, storage=storage)


def run_study(study: Study | str | os.PathLike[str], *, overrides: Overrides | None = None, scale: str = "proxy",
              trials: int | None = None, repeats: int | None = None, storage: str | None = None,
              address: str | None = None, device: str = "auto", progress: bool = True, max_retries: int = 1,
              heartbeat_grace_s: float = 60.0, artifacts: str | os.PathLike[str] | None = None) -> RunSummary:
    """Run (or resume) a study, as ``ablate run`` does, and say what the run did.

    Args:
        study: A study from :func:`load_study`, or the path of its YAML file (then loaded
            with ``overrides`` and ``scale``).
        overrides, scale: As for :func:`load_study`; only with a path.
        trials: The total number of configurations the study should have (``--trials``).
        repeats: Seeds per configuration (``--repeats``).
        storage: A storage URL instead of the study's (``--storage``).
        address: An existing Ray cluster (``--address``); None starts a local one.
        device: ``auto``, ``cpu`` or ``cuda`` (``--device``).
        progress: The progress display and one line per finished trial (``-q`` turns it off).
        max_retries, heartbeat_grace_s: ``--max-retries`` and ``--heartbeat-grace``.
        artifacts: Where classification trials keep their trained weights (``--artifacts``;
            default beside a SQLite database, ``runs/x.db`` -> ``runs/x.artifacts/``).

    Returns:
        The driver's :class:`ablate.run.RunSummary`: new trial numbers, state counts, wall time.

    Raises:
        AblateError: bad input, one line (nothing is written); KeyboardInterrupt when
            interrupted (finished trials are kept; run again to resume).
    """
    from ablate.run import ray_session
    from ablate.run.driver import run_study as drive
    from ablate.study import Study

    # The bounds `ablate run`'s options have, checked before anything is read or started.
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 0):
        raise ConfigError(f"trials: a whole number >= 0, got {trials!r}")
    if repeats is not None and (isinstance(repeats, bool) or not isinstance(repeats, int)
                                or not 1 <= repeats <= 1000):
        raise ConfigError(f"repeats: a whole number from 1 to 1000, got {repeats!r}")
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device: unknown device {device!r}, allowed: auto, cpu, cuda")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or not 0 <= max_retries <= 100:
        raise ConfigError(f"max_retries: a whole number from 0 to 100, got {max_retries!r}")
    if isinstance(heartbeat_grace_s, bool) or not isinstance(heartbeat_grace_s, (int, float)) \
            or not 5.0 <= heartbeat_grace_s <= 86400.0:
        raise ConfigError(f"heartbeat_grace_s: seconds from 5 to 86400, got {heartbeat_grace_s!r}")
    if isinstance(study, Study):
        if overrides or scale != "proxy":
            raise ConfigError("run: overrides and scale apply when a study file is loaded; give the path, or "
                              "pass them to ablate.load_study")
    else:
        study = load_study(study, overrides=overrides, scale=scale, storage=storage)
    if repeats is not None:
        study = dataclasses.replace(study, repeats=repeats)
    # As `ablate run`: a cluster is joined before the storage is opened, so one that cannot
    # be reached fails with one line and nothing written.
    with ray_session(address) if address else nullcontext():
        return drive(study, storage=storage, trials=trials, address=address, device=device,
                     progress=progress, max_retries=max_retries, heartbeat_grace_s=heartbeat_grace_s,
                     artifacts=artifacts)


@dataclass
class Results:
    """One study's results as tables: what ``ablate show`` and ``ablate report`` print.

    Attributes:
        trials: One row per trial: ``number``, ``state``, ``params``/``values``/``attrs``
            (dicts), ``value.<objective>`` and ``param.<name>`` columns, ``config`` (its
            configuration's key).
        configs: One row per configuration with a COMPLETE run: ``config`` (key), ``n``,
            ``trials`` (numbers), ``param.<name>``, and per objective ``mean.<o>``,
            ``std.<o>``, ``ci95_lo.<o>``, ``ci95_hi.<o>`` (the 95 % Student-t interval of
            the mean; NaN with one run), ``pareto`` (on the front of the means),
            ``baseline``.
        study: The full :class:`ablate.results.StudyResults` (spec, Pareto front,
            differences to the baseline, noise floor).
    """

    trials: pd.DataFrame
    configs: pd.DataFrame
    study: StudyResults

    @property
    def name(self) -> str:
        """The study's name."""
        return self.study.name

    @property
    def objectives(self) -> list[str]:
        """Objective names, in the order their values are stored."""
        return [o["name"] for o in self.study.objectives]

    @property
    def pareto(self) -> list[int]:
        """Trial numbers on the Pareto front of the COMPLETE trials."""
        return list(self.study.pareto)

    def to_json(self) -> dict[str, Any]:
        """The ``ablate show --format json`` object."""
        return self.study.to_json()

    def report(self, fmt: str = "md") -> str | bytes:
        """The ``ablate report --format FMT`` text (``png``: bytes)."""
        from ablate.results.report import render_report

        return render_report(self.study, fmt)


def configs_frame(results: StudyResults) -> pd.DataFrame:
    """Per-configuration aggregates of ``results`` as a flat DataFrame (see :class:`Results`)."""
    import math

    import pandas as pd

    names = [o["name"] for o in results.objectives]
    front, baseline = set(results.pareto_configs), results.baseline
    rows = []
    for c in results.configs:
        row: dict[str, Any] = {"config": c["key"], "n": c["n"], "trials": list(c["trials"])}
        row.update({f"param.{k}": v for k, v in (c.get("params") or {}).items()})
        for o in names:
            ci = (c.get("ci95") or {}).get(o)
            std = (c.get("std") or {}).get(o)
            row[f"mean.{o}"] = (c.get("mean") or {}).get(o, math.nan)
            row[f"std.{o}"] = math.nan if std is None else std
            row[f"ci95_lo.{o}"], row[f"ci95_hi.{o}"] = (ci[0], ci[1]) if ci else (math.nan, math.nan)
        row["pareto"] = c["key"] in front
        row["baseline"] = c["key"] == baseline
        rows.append(row)
    columns = ["config", "n", "trials"] + sorted({k for r in rows for k in r if k.startswith("param.")}) + \
        [f"{s}.{o}" for o in names for s in ("mean", "std", "ci95_lo", "ci95_hi")] + ["pareto", "baseline"]
    return pd.DataFrame(rows, columns=columns)


def read_results(target: str | os.PathLike[str], *, storage: str | None = None,
                 study: str | None = None) -> Results:
    """A study's results, read as ``ablate show TARGET`` reads them (read-only: nothing is written).

    Args:
        target: A study YAML file (its ``storage:``), a database file, or a storage URL.
        storage: A storage URL instead of the study file's (``--storage``).
        study: The study's name, when the storage holds several (``--study``).

    Raises:
        StorageError: no such database, or no such study in it (one line).
        ConfigError: a study file or storage URL that is not valid.
    """
    from ablate.cli.common import resolve_target
    from ablate.results import load_results

    url, name = resolve_target(os.fspath(target), storage)
    loaded = load_results(url, study or name)
    return Results(trials=loaded.trials, configs=configs_frame(loaded), study=loaded)


def create_model(name: str, weights: str | os.PathLike[str] | None = None, *, strict: bool = True,
                 **overrides: Any) -> nn.Module:
    """A named preset, built and optionally loaded from a local checkpoint (timm's convention):
    :func:`ablate.models.create_model`, served here so ``ablate.create_model`` is lazy
    (``import ablate`` imports no torch). See it for ``weights``, ``strict`` and the report.
    """
    from ablate.models import create_model as build

    return build(name, weights, strict=strict, **overrides)
