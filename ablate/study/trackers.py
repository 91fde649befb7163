"""The ``trackers:`` section of a study file: where the driver also logs every trial.

Off unless set. ``mlflow`` takes a directory (MLflow's local file store) or a tracking URI
(``file:``, ``sqlite:///``, ``http(s)://``); ``tensorboard`` takes a directory that gets one
event folder per trial. Relative paths are relative to the working directory, as
``storage:`` is, and are made absolute here because Ray changes the working directory of
each trial. The section is declared here (not in :mod:`ablate.study.declaration`, which
imports :class:`TrackersSection`) and read by
:func:`ablate.study.sections._study_trackers`; this module imports nothing of ablate, so the
schema can hold a :class:`TrackersSpec`.

Where to log is not part of what a trial measures: :class:`TrackersSpec` is left out of the
stored spec, so adding a tracker to a running study never makes it differ.
"""

from __future__ import annotations

import dataclasses
import os
import re

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TrackersSection", "TrackersSpec", "TRACKER_KEYS", "mlflow_uri", "tracker_dir"]

_MLFLOW_SCHEMES = ("file:", "sqlite:///", "http://", "https://")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_ALLOWED_MLFLOW = "a directory (MLflow's local file store, e.g. runs/mlflow) or a URI: file:DIR, sqlite:///FILE.db, " \
                  "http(s)://HOST"


class TrackersSection(BaseModel):
    """Also log every trial to MLflow and/or TensorBoard (the ``trackers`` extra); off by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mlflow: str | None = Field(None, min_length=1, description=(
        "MLflow: a directory (MLflow's local file store, relative to the working directory, e.g. runs/mlflow) or a "
        "tracking URI (file:DIR, sqlite:///FILE.db, http(s)://HOST). One experiment per study, one run per trial: "
        "params, seed, repeat, config_key, costs, per-epoch metrics and final values. Needs `pip install "
        "'ablate[trackers]'`."))
    tensorboard: str | None = Field(None, min_length=1, description=(
        "TensorBoard: a directory (relative to the working directory, e.g. runs/tb) that gets <study>/trial-NNNN "
        "with the per-epoch scalars, the final values and the costs of each trial."))


#: The keys ``trackers:`` accepts, in the order errors list them.
TRACKER_KEYS: tuple[str, ...] = tuple(TrackersSection.model_fields)


@dataclasses.dataclass(frozen=True)
class TrackersSpec:
    """Where the driver logs trials besides the study's storage; None: not that tracker.

    ``mlflow`` is a tracking URI (a directory was turned into ``file:`` + its absolute path),
    ``tensorboard`` an absolute directory.
    """

    mlflow: str | None = None
    tensorboard: str | None = None

    def __bool__(self) -> bool:
        return bool(self.mlflow or self.tensorboard)


def _clean(value: str, what: str) -> str:
    """``value`` if it is a usable path or URI, else ValueError saying why (the caller adds where)."""
    if not value.strip():
        raise ValueError(f"must not be empty, allowed: {what}")
    if not value.isprintable() or "\x00" in value:
        raise ValueError(f"holds a control character or line break, allowed: {what}")
    return value


def tracker_dir(value: str) -> str:
    """A TensorBoard directory made absolute against the working directory.

    Raises:
        ValueError: empty, or a control character in it.
    """
    value = _clean(value, "a directory, e.g. runs/tb")
    if _SCHEME_RE.match(value) and not re.match(r"^[A-Za-z]:[\\/]", value):  # a URI, not C:\...
        raise ValueError(f"must be a local directory, got a URI {value.split(':', 1)[0]}:..., "
                         f"allowed: a directory, e.g. runs/tb")
    return os.path.abspath(os.path.expanduser(value))


def mlflow_uri(value: str) -> str:
    """The MLflow tracking URI of ``value``: a directory becomes ``file:`` + its absolute path;
    a relative ``file:`` or ``sqlite:///`` path is made absolute; ``http(s)://`` stays as given.

    Raises:
        ValueError: empty, a control character, or a scheme MLflow cannot log to offline here.
    """
    value = _clean(value, _ALLOWED_MLFLOW)
    if not _SCHEME_RE.match(value) or re.match(r"^[A-Za-z]:[\\/]", value):
        return "file:" + os.path.abspath(os.path.expanduser(value))
    if not value.startswith(_MLFLOW_SCHEMES):
        raise ValueError(f"unsupported scheme {value.split(':', 1)[0]!r}, allowed: {_ALLOWED_MLFLOW}")
    if value.startswith("file:"):
        rest = value[len("file:"):]
        if rest.startswith("//"):  # file:///abs or file://localhost/abs
            rest = rest[2:]
            host, _, path = rest.partition("/")
            if host not in ("", "localhost"):
                raise ValueError(f"file: URI names a host ({host!r}), allowed: a local path, e.g. file:runs/mlflow")
            rest = "/" + path
        if not rest.strip("/ "):  # file:, file://, file:/// would log into / (or nowhere)
            raise ValueError(f"file: URI without a path, allowed: {_ALLOWED_MLFLOW}")
        return "file:" + os.path.abspath(os.path.expanduser(rest))
    if value.startswith("sqlite:///"):
        rest = value[len("sqlite:///"):]
        if not rest or rest.startswith(":memory:"):
            raise ValueError("sqlite:/// needs a database file (an in-memory database would be lost), "
                             "allowed: e.g. sqlite:///runs/mlflow.db")
        return value if rest.startswith("/") else "sqlite:///" + os.path.abspath(rest)
    return value
