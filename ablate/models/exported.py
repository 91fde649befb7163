"""One trained candidate in one file: its state dict and its typed architecture.

A study's winner leaves the database as a safetensors file (``ablate export``; the runner
writes the same format for every finished classification trial, see
:mod:`ablate.run.checkpoint`). The tensors are the model's ``state_dict()``; the header's
metadata (string to string, as safetensors wants) says what to build:

====================  ==================================================================
``ablate_arch``       the architecture's stored form (:meth:`Architecture.to_json`, JSON)
``ablate_version``    the ablate that wrote it
``study``, ``trial``  where it came from (``ablate export`` and the runner set them)
``epoch``             the epoch whose weights these are
``top1``              that epoch's validation top-1 (percent), as the trial recorded it
====================  ==================================================================

Why safetensors: nothing in it is code, so loading it never unpickles; readers in other
languages can read it; the header is read without the tensors (:func:`read_exported_meta`).
``ablate.create_model(FILE)`` rebuilds the architecture and loads the tensors strictly
(:func:`load_exported`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ablate.errors import ConfigError, shown_path
from ablate.models.arch import Architecture

__all__ = ["ARCH_KEY", "SUFFIX", "exported_bytes", "exported_file", "load_exported", "read_exported_meta",
           "state_tensors", "write_exported"]

#: The metadata key that marks a file as ablate's and holds the architecture.
ARCH_KEY = "ablate_arch"
#: The suffix of the files this module writes.
SUFFIX = ".safetensors"
#: A safetensors header larger than this is refused unread (a real one is kilobytes).
_MAX_HEADER = 64 << 20


def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` as plain, contiguous CPU copies (what safetensors can store:
    no shared storage, no channels-last strides, no GPU tensors)."""
    return {name: t.detach().to("cpu", copy=True).contiguous() for name, t in model.state_dict().items()}


def exported_bytes(tensors: Mapping[str, torch.Tensor], arch: Architecture, meta: Mapping[str, Any] | None = None
                   ) -> bytes:
    """The safetensors bytes of ``tensors`` with ``arch`` and ``meta`` (values turned into strings)."""
    from safetensors.torch import save

    from ablate import __version__

    header = {str(k): str(v) for k, v in (meta or {}).items()}
    header.update({ARCH_KEY: json.dumps(arch.to_json(), sort_keys=True), "ablate_version": __version__,
                   "format": "pt"})
    return save(dict(tensors), metadata=header)


def write_exported(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], arch: Architecture,
                   meta: Mapping[str, Any] | None = None) -> Path:
    """Write :func:`exported_bytes` to ``path`` whole or not at all (:func:`ablate.atomic.write_atomic`).

    Raises:
        EnvironmentProblem: the folder is missing, full or read-only (one line naming ``path``).
    """
    from ablate.atomic import write_atomic

    return write_atomic(path, exported_bytes(tensors, arch, meta))


def read_exported_meta(path: str | os.PathLike[str]) -> dict[str, str] | None:
    """The metadata of an ablate safetensors file, read from its header alone; None when
    ``path`` is a readable file that is not one (not safetensors, or no ``ablate_arch``).

    Raises:
        ConfigError: ``path`` is missing, not a file, or unreadable (one line naming it).
    """
    p, name = Path(path), shown_path(path)
    if not p.is_file():
        raise ConfigError(f"{name}: no such file" if not p.exists() else f"{name}: not a file")
    try:
        with p.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if size <= 1 or size > _MAX_HEADER or size + 8 > p.stat().st_size:
                return None
            raw = f.read(size)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read it ({exc.strerror or exc})") from None
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError is a ValueError), or nested too deep
        return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get(ARCH_KEY), str):
        return None
    return {str(k): str(v) for k, v in meta.items()}


def exported_file(name: str | os.PathLike[str]) -> Path | None:
    """``name`` as a path to an exported file, or None when it is a preset name.

    A path object, a name ending in ``.safetensors``, or a name that is no preset but an
    existing file is a file (a missing ``x.safetensors`` is then refused by the reader,
    naming it); any other string is a preset name.
    """
    if isinstance(name, os.PathLike):
        return Path(name)
    if not isinstance(name, str):
        return None
    if name.endswith(SUFFIX):
        return Path(name)
    from ablate.models.presets import PRESET_INFO, YOLO_PRESET_INFO

    if name not in PRESET_INFO and name not in YOLO_PRESET_INFO and os.path.isfile(name):
        return Path(name)
    return None


def exported_arch(path: str | os.PathLike[str]) -> tuple[Architecture, dict[str, str]]:
    """The architecture an exported file holds (validated again) and its metadata.

    Raises:
        ConfigError: not such a file, or an architecture this ablate cannot build.
    """
    from ablate.models.factory import architecture_from_json

    meta = read_exported_meta(path)
    if meta is None:
        raise ConfigError(f"{shown_path(path)}: not a model file written by ablate (a safetensors file with "
                          f"'{ARCH_KEY}' metadata, as `ablate export` writes); a released checkpoint goes in "
                          "create_model(PRESET, weights=FILE)")
    try:
        arch = architecture_from_json(json.loads(meta[ARCH_KEY]))
    except (ValueError, RecursionError) as err:  # ConfigError and JSON errors are ValueErrors
        raise ConfigError(f"{shown_path(path)}: its architecture cannot be built by this ablate "
                          f"({' '.join(str(err).split())[:300]})") from None
    return arch, meta


def load_exported(path: str | os.PathLike[str], *, strict: bool = True, **overrides: Any) -> nn.Module:
    """Rebuild the model an exported file describes and load its tensors.

    Keyword arguments override arch keys as in :func:`ablate.models.create_model`
    (``num_classes=5`` leaves the head freshly initialised, reported in ``load_report``). The
    file's keys are the resolved ones, so a key others were derived from is not derived
    again: ``embed_dim=`` alone disagrees with the stored ``dims`` and is refused.
    The model comes back in training mode, as every builder returns it; ``model.eval()``
    gives the logits the trial was scored with.

    Raises:
        ConfigError: no such file, not ablate's, a key that does not exist, or (strict)
            tensors that do not fit the rebuilt model.
    """
    from ablate.models.factory import build_model, resolve_architecture
    from ablate.models.weights import load_weights

    arch, _ = exported_arch(path)
    if arch.task != "classify":
        raise ConfigError(f"{shown_path(path)}: holds a {arch.task} architecture; create_model loads exported "
                          "classification models (a detection trial exports as an ultralytics model YAML)")
    if overrides:
        arch = resolve_architecture({**arch.to_dict(), **overrides}, arch.task)
    model = build_model(arch)
    model.load_report = load_weights(model, path, strict=strict)  # type: ignore[assignment]
    return model
