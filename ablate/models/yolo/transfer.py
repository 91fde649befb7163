"""A YOLO candidate from an ultralytics ``.pt``, the way ultralytics transfers weights itself.

Ultralytics starts a model from pretrained weights with ``BaseModel.load``: the checkpoint's
model (its EMA when saved) in float32, :func:`ultralytics.utils.torch_utils.intersect_dicts`
(every tensor whose name is in the new model with the same shape), ``load_state_dict(...,
strict=False)``, and "Transferred N/M items". Ablate does the same, with two deliberate
differences:

* **Layer indices.** Ultralytics names a tensor by its layer's row in the model YAML
  (``model.12.cv1.conv.weight``). The ``sppf`` placement inserts an ``AttnBlock_F`` row after
  SPPF, so every later row moves down by one and, by name, the neck and head would no longer
  match the stock checkpoint (ultralytics' own ``load`` transfers only the backbone then).
  Ablate knows where it inserted (:func:`ablate.models.yolo.yolo_sites`), so the stock
  names are mapped onto the candidate's: row ``j`` becomes ``j + (rows inserted before j)``;
  for the ``neck``/``backbone`` placements, a ``C2f``/``C3k2`` row keeps its index and its
  ``m.K.`` bottleneck becomes ``m.K.0.`` (the bottleneck is the first half of
  ``nn.Sequential(bottleneck, attention)``). The names as stored are tried too (a ``.pt``
  saved from an ablate candidate already uses the candidate's numbering) and the reading that
  transfers more tensors is kept (ties: as stored, ultralytics' own convention).
* **The head keeps its shape.** ultralytics 8.4's ``load`` also rebuilds the detection head's
  class branch at the checkpoint's width and remaps class rows by name; that would change the
  candidate's architecture (and its parameter count and FLOPs, measured before training)
  from the one the study declared. Here a tensor of another shape simply stays fresh, as
  everywhere else. The first-conv channel fill ``load`` does for other input channel counts
  never applies (ablate's YOLO models read 3 channels).

Reading: a ``.pt`` that is a plain state dict is read with
:func:`ablate.models.weights.read_checkpoint` (no code runs). Ultralytics' own checkpoints
pickle their module classes, so they are read with ultralytics' public loader
``ultralytics.nn.tasks.load_checkpoint``, which unpickles: a ``.pt`` is trusted code, as
ultralytics itself treats it. Only an existing local file is ever read (the study's
``weights:`` check refuses anything else before ultralytics sees it, since ultralytics
would download a bare ``yolov8n.pt``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ablate.errors import ConfigError, exception_line, shown_path
from ablate.models.arch import Architecture
from ablate.models.weights import find_state_dict, read_checkpoint
from ablate.models.yolo.arch import resolve_yolo_arch, yolo_sites
from ablate.models.yolo.upstream import intersect_dicts, tasks

__all__ = ["base_to_candidate", "read_yolo_state_dict", "transfer_yolo_weights"]

_ROW = re.compile(r"^model\.(\d+)\.(.*)$")


def read_yolo_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The float32 state dict of the model in an ultralytics ``.pt`` (its EMA when it has one).

    A plain state dict (``{"model": {name: tensor}}`` or bare) is read without unpickling
    code; anything else goes through ultralytics' ``load_checkpoint`` (trusted code).

    Raises:
        ConfigError: ``FILE: not an ultralytics checkpoint (why)``, one line.
    """
    p = Path(path)
    if not p.is_file():  # never hand ultralytics a name it would go and download
        name = shown_path(path)
        raise ConfigError(f"{name}: no such checkpoint file" if not p.exists() else f"{name}: not a file")
    try:
        sd, _ = find_state_dict(read_checkpoint(p), p)
    except ConfigError:
        sd = None
    if sd is not None:
        return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    try:
        model, _ = tasks.load_checkpoint(str(p))
        sd = model.float().state_dict()
    except Exception as exc:  # ultralytics raises TypeError, ModuleNotFoundError, RuntimeError, ...
        why = exception_line(exc).replace("ERROR ❌️", "").strip()
        raise ConfigError(f"{shown_path(path)}: not an ultralytics checkpoint ({why})") from None
    if not sd:
        raise ConfigError(f"{shown_path(path)}: not an ultralytics checkpoint (its model holds no tensors)")
    return sd


def _plain(sd: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """Refuse a tensor without plain data (meta, sparse, quantized) before anything is copied."""
    odd = next((n for n, t in sd.items() if t.is_meta or t.layout != torch.strided or t.is_quantized), None)
    if odd is not None:
        raise ConfigError(f"{shown_path(path)}: tensor {shown_path(odd)} holds no plain data "
                          "(a meta, sparse or quantized tensor)")


def base_to_candidate(arch: Mapping[str, Any] | Architecture) -> Callable[[str], str]:
    """Renames a tensor of the stock base model (``arch["base"]``) to the candidate's name for it.

    ``sppf``: row ``j`` moves down by the number of ``AttnBlock_F`` rows inserted before it.
    ``neck``/``backbone``: inside each replaced ``C2f``/``C3k2`` row, ``m.K.`` becomes
    ``m.K.0.``. The stock model (``attention: none``) keeps every name.
    """
    r = arch.to_dict() if isinstance(arch, Architecture) else resolve_yolo_arch(arch)
    if r["attention"] == "none":
        return lambda key: key
    chosen = [s.index for s in yolo_sites(r["base"], r["placement"])[:r["places"]]]

    if r["placement"] == "sppf":
        def rename(key: str) -> str:
            m = _ROW.match(key)
            if not m:
                return key
            row = int(m[1])
            return f"model.{row + sum(1 for i in chosen if i < row)}.{m[2]}"
        return rename

    replaced = set(chosen)

    def rename_inner(key: str) -> str:
        m = _ROW.match(key)
        if not m or int(m[1]) not in replaced:
            return key
        return f"model.{m[1]}." + re.sub(r"^m\.(\d+)\.", r"m.\1.0.", m[2])
    return rename_inner


def transfer_yolo_weights(model: nn.Module, arch: Architecture, path: str | os.PathLike[str]) -> tuple[int, int, str]:
    """Load every tensor of the ``.pt`` whose (mapped) name and shape match ``model``'s; keep the rest.

    Returns:
        ``(transferred, total, how)``: tensors set, tensors in ``model``'s state dict, and
        which reading of the names was kept.

    Raises:
        ConfigError: as :func:`read_yolo_state_dict`.
    """
    csd = read_yolo_state_dict(path)
    _plain(csd, path)
    target = model.state_dict()
    rename = base_to_candidate(arch)
    as_stored = intersect_dicts(csd, target)
    shifted = intersect_dicts({rename(k): v for k, v in csd.items()}, target)
    if len(shifted) > len(as_stored):
        chosen, how = shifted, "base layers mapped past the inserted attention"
    else:
        chosen, how = as_stored, "names as stored"
    model.load_state_dict(chosen, strict=False)
    return len(chosen), len(target), how
