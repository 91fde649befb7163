"""The ``weights:`` key of a study file: the checkpoint every candidate starts from.

Every candidate of the study is built as usual and then takes, from this one checkpoint,
each tensor whose name (after the family's key map) and shape match its own; the rest (the
swapped attention, a head of another class count, position tables of another size) stays
freshly initialised (:func:`ablate.models.transfer.transfer_weights`). A detection study
takes an ultralytics ``.pt``, a classification study any checkpoint
:func:`ablate.models.weights.read_checkpoint` reads.

The key is a path, relative to the study file like ``data.path`` (or absolute), or a
mapping ``{path, sha256}`` that pins the file's content. What is checked when the study
loads (``ablate validate`` and ``ablate run`` give the same verdict, nothing is written):
the file exists and is a regular file, it can be read, its content is a checkpoint of the
task's kind, and a pinned ``sha256`` matches. Nothing is ever downloaded: a name such as
``yolov8n.pt`` that is not a local file is refused (ultralytics itself would fetch it).

The stored spec (``study.user_attrs["spec"]``) holds ``{path, sha256}`` with the path made
absolute (Ray changes each trial's working directory): a Ray worker re-validating the spec
checks that the file still has that content, and a later driver whose file has other content
is refused like an edited study. A study without ``weights:`` stores no such key, so specs
and configuration keys written before the key existed are unchanged.

Declared here and imported by :mod:`ablate.study.declaration` and :mod:`ablate.study.schema`;
this module imports nothing of ablate at module level (the checkers arrive with the ``doc``
argument, the readers are imported when a file is checked), so neither import makes a cycle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["WEIGHTS_KEYS", "WeightsSection", "WeightsSpec", "file_sha256", "study_weights"]

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_ALLOWED = {
    "classify": "a local checkpoint file (.pth, .pt, .bin, .safetensors) relative to this file, or absolute",
    "detect": "a local ultralytics checkpoint (.pt, e.g. yolov8n.pt downloaded beforehand) relative to this file, "
              "or absolute",
}


class WeightsSection(BaseModel):
    """The checkpoint every candidate starts from, with its content pinned."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1, description=(
        "The checkpoint file, relative to this file or absolute (never downloaded)."))
    sha256: str | None = Field(None, pattern=_SHA256.pattern, description=(
        "The file's SHA-256 (64 hex digits); a file with other content is refused. Null or left out: not pinned."))


#: The keys the mapping form accepts, in the order errors list them.
WEIGHTS_KEYS: tuple[str, ...] = tuple(WeightsSection.model_fields)


@dataclasses.dataclass(frozen=True)
class WeightsSpec:
    """A checked ``weights:``: the absolute path of the checkpoint and its content's SHA-256.

    ``to_dict()`` is the stored form and reads back (as the mapping form) to an equal spec.
    """

    path: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        """``{path, sha256}``, what the stored spec and Ray's trial configs hold."""
        return {"path": self.path, "sha256": self.sha256}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB pieces (a checkpoint may be gigabytes).

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for piece in iter(lambda: fh.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def study_weights(doc: Any, raw: Any, task: str) -> WeightsSpec | None:
    """The ``weights:`` key checked, or None when left out or null.

    Args:
        doc: the study's :class:`ablate.study.doc._Doc` (file, lines, the folder paths are
            relative to); its ``error(key_path, what)`` makes the one-line errors.
        raw: the key's value as read.
        task: ``classify`` or ``detect``: which kind of checkpoint the content must be.

    Raises:
        ConfigError: ``file:line: weights: what, allowed: ...`` (``weights.path`` /
            ``weights.sha256`` for the mapping form).
    """
    if raw is None:
        return None
    key: tuple[str, ...] = ("weights",)
    pinned: str | None = None
    allowed = f"allowed: {_ALLOWED.get(task, _ALLOWED['classify'])}"
    if isinstance(raw, Mapping):
        unknown = [k for k in raw if k not in WEIGHTS_KEYS]
        if unknown:
            raise doc.error(key + (str(unknown[0]),), f"unknown key {str(unknown[0])!r}, allowed: "
                                                      + ", ".join(WEIGHTS_KEYS))
        if raw.get("path") is None:
            raise doc.error(key + ("path",), f"required key is missing, {allowed}")
        pinned = raw.get("sha256")
        if pinned is not None and (not isinstance(pinned, str) or not _SHA256.match(pinned)):
            number = " (YAML read a number: quote it)" if isinstance(pinned, (int, float)) else ""
            raise doc.error(key + ("sha256",), f"must be 64 hexadecimal digits, got {pinned!r}{number}, allowed: "
                                               f"the file's SHA-256 (sha256sum FILE), or null")
        key, raw = key + ("path",), raw["path"]
    if not isinstance(raw, str):
        shown = "a list" if isinstance(raw, (list, tuple)) else repr(raw)
        raise doc.error(key, f"must be a file path or a mapping {{path, sha256}}, got {shown}, {allowed}")
    if not raw.strip() or not raw.isprintable():
        raise doc.error(key, f"must be a file path without control characters, got {raw!r}, {allowed}")
    resolved = (doc.base_dir / os.path.expanduser(raw)).resolve()
    if not resolved.exists():
        nothing = " (nothing is downloaded)" if os.sep not in raw and "/" not in raw else ""
        raise doc.error(key, f"file not found: {raw!r} (looked at {str(resolved)!r}){nothing}, {allowed}")
    if resolved.is_dir():
        raise doc.error(key, f"{raw!r} is a folder, {allowed}")
    if not resolved.is_file():  # a FIFO or a device would block or never end
        raise doc.error(key, f"{raw!r} is not a regular file, {allowed}")
    try:
        sha = file_sha256(resolved)
    except OSError as err:
        raise doc.error(key, f"{raw!r} cannot be read ({err.strerror or type(err).__name__}), {allowed}") from None
    if pinned is not None and pinned.lower() != sha:
        raise doc.error(("weights", "sha256"), f"{raw!r} has SHA-256 {sha}, not the pinned {pinned.lower()} (another "
                                               f"file, or it changed), allowed: the pinned file, or its new sha256 "
                                               f"under a new study name")
    _check_content(doc, key, resolved, task, allowed)
    return WeightsSpec(path=str(resolved), sha256=sha)


def _check_content(doc: Any, key: tuple[str, ...], path: Path, task: str, allowed: str) -> None:
    """The file is a checkpoint of the task's kind (read the way a trial reads it)."""
    from ablate.errors import AblateError

    if task == "detect" and path.suffix.lower() != ".pt":
        raise doc.error(key, f"{path.name!r} is not an ultralytics checkpoint (.pt), {allowed}")
    try:
        if task == "detect":
            from ablate.models.yolo.transfer import read_yolo_state_dict

            read_yolo_state_dict(path)
        else:
            from ablate.models.weights import find_state_dict, read_checkpoint

            find_state_dict(read_checkpoint(path), path)
    except AblateError as err:
        raise doc.error(key, f"{err}, {allowed}") from None
