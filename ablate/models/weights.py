"""Load released checkpoints into ablate's models: read safely, find the layout, map, report.

Users start from released weights (a Swin-T, DeiT-T, PVT-T, Focal-T, FLatten or BiFormer
release, a timm state dict, a safetensors file) to check a paper's number or fine-tune.
:func:`load_weights` does it in four steps, each one a plain function:

1. **Read** (:func:`read_checkpoint`): safetensors files by their header, anything else with
   ``torch.load(weights_only=True, map_location="cpu")``: no pickled code ever runs, nothing
   is downloaded. An unreadable, corrupt or code-carrying file is one ``ConfigError`` line
   naming the file.
2. **Unwrap** (:func:`find_state_dict`): the official releases wrap the tensors
   (``{"model": sd, "optimizer": ...}``, ``{"state_dict": sd}``, ``{"model_ema": sd}``, ...);
   the first of :data:`WRAPPERS` that holds tensors is used, and a DDP ``module.`` prefix
   is removed.
3. **Map** (:func:`map_state_dict`): every family's renaming table
   (:mod:`ablate.models.weights_layouts`, documented there) is tried and the one that lands
   the most tensors on the model's names with the right shapes wins (ties: the table's
   order, ablate's own first). A packed ``qkv`` is split into ``q`` and ``kv`` where the
   model has those (FLatten-Swin), and separate ones are packed where the model packs them
   (PVT's last stage).
4. **Load**: a classifier (``head.*``) whose class count differs from the model's is left
   freshly initialised and reported (timm's convention for fine-tuning); in strict mode
   (default) any other missing key, unexpected key or shape mismatch is a one-line
   ``ConfigError`` with counts and the first few names; ``strict=False`` loads what matches.

The :class:`LoadReport` says what happened; ``ablate weights check PRESET FILE`` prints it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ablate.errors import ConfigError, exception_line, shown_path
from ablate.models.weights_layouts import LAYOUTS, Layout

__all__ = ["WRAPPERS", "LoadReport", "find_state_dict", "load_weights", "map_state_dict", "read_checkpoint"]

#: The wrapper keys of released checkpoints, in the order they are looked for.
WRAPPERS = ("model", "state_dict", "model_ema", "state_dict_ema", "module", "ema", "net", "params")

#: How many names a one-line error or a report group shows before "... and N more".
SHOWN = 5

# BatchNorm's step counter: older checkpoints lack it and PyTorch itself tolerates that.
_OPTIONAL = re.compile(r"(^|\.)num_batches_tracked$")
_HEAD = re.compile(r"^head\.(weight|bias)$")


@dataclass(frozen=True)
class LoadReport:
    """What loading a checkpoint into a model did.

    Attributes:
        path: the checkpoint file.
        layout: the renaming table used (:mod:`ablate.models.weights_layouts`).
        wrapper: the wrapper key the tensors were under (``""``: a bare state dict).
        loaded: how many of the model's tensors were set from the checkpoint.
        total: how many tensors the model's state dict holds.
        missing: model names the checkpoint did not provide (head re-init excluded).
        unexpected: checkpoint names (as read) that land on no model tensor.
        mismatched: ``(name, checkpoint shape, model shape)`` for tensors of another shape.
        head_reinit: ``(checkpoint classes, model classes)`` when the head was left fresh.
        dropped: derived buffers (relative-position indices, masks) ablate recomputes.
        split_qkv: how many q/kv linears were split from (or packed into) one qkv.
    """

    path: str
    layout: str
    wrapper: str
    loaded: int
    total: int
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()
    head_reinit: tuple[int, int] | None = None
    dropped: int = 0
    split_qkv: int = 0

    @property
    def clean(self) -> bool:
        """True when every tensor found its place and nothing was left over."""
        return not (self.missing or self.unexpected or self.mismatched)

    def problem(self) -> str:
        """One line: the counts and the first few names of each kind of leftover."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({_first(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({_first(self.unexpected)})")
        if self.mismatched:
            shown = ", ".join(f"{k} {list(a)} vs {list(b)}" for k, a, b in self.mismatched[:SHOWN])
            more = f", ... and {len(self.mismatched) - SHOWN} more" if len(self.mismatched) > SHOWN else ""
            parts.append(f"{len(self.mismatched)} of another shape ({shown}{more})")
        return "; ".join(parts)


def _first(names: tuple[str, ...]) -> str:
    more = f", ... and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(shown_path(n) for n in names[:SHOWN]) + more


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """The object stored in ``path``, read without running pickled code.

    safetensors files (recognised by their header, whatever their name) are read with
    ``safetensors.torch.load_file``; anything else with ``torch.load(weights_only=True,
    map_location="cpu")``, which refuses arbitrary classes and code.

    Raises:
        ConfigError: a missing, unreadable, corrupt or unsafe file (``FILE: why``).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"weights must be a path to a local checkpoint file, got {type(path).__name__}")
    p, name = Path(path), shown_path(path)
    if not p.is_file():
        raise ConfigError(f"{name}: no such checkpoint file" if not p.exists() else f"{name}: not a file")
    try:
        with p.open("rb") as f:
            head = f.read(9)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read the checkpoint ({exception_line(exc)})") from None
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < p.stat().st_size:
        try:
            from safetensors.torch import load_file

            return load_file(str(p), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise ConfigError(f"{name}: not a readable safetensors file ({exception_line(exc)})") from None
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # torch's zip, or a legacy pickle
        raise ConfigError(f"{name}: not a checkpoint (neither a torch file, a zip or a pickle, nor safetensors: "
                          f"it starts with {head[:8]!r})")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError (unsafe), RuntimeError (corrupt zip), EOFError, ...
        why = exception_line(exc)
        if "Weights only load failed" in why:
            full = " ".join(str(exc).split())
            reason = full.split("WeightsUnpickler error:", 1)[-1].split("Check the doc", 1)[0].strip(" .")
            why = (f"the weights-only reader refused it: {reason[:120]}; a corrupt file, or pickled objects "
                   "other than tensors, which ablate never unpickles")
        raise ConfigError(f"{name}: not a checkpoint torch can read safely ({why})") from None


def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) for k in obj) and any(isinstance(v, torch.Tensor) for v in obj.values()))


def find_state_dict(obj: Any, path: str | os.PathLike[str] = "<checkpoint>") -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a checkpoint and the wrapper key they were under (``""``: none).

    Non-tensor entries of a state dict (a stored epoch, a config) are left out; a
    ``module.`` prefix on every key (DistributedDataParallel) is removed.

    Raises:
        ConfigError: no state dict at the top level or under any of :data:`WRAPPERS`.
    """
    wrapper = ""
    for _ in range(2):  # a wrapper inside a wrapper ({"state_dict": {"model": sd}}) at most
        found = next((w for w in WRAPPERS if isinstance(obj, Mapping) and isinstance(obj.get(w), Mapping)
                      and (_is_state_dict(obj[w]) or any(isinstance(obj[w].get(v), Mapping) for v in WRAPPERS))),
                     "")
        if not found:
            break
        wrapper, obj = (f"{wrapper}.{found}" if wrapper else found), obj[found]
    if not _is_state_dict(obj):
        keys = ", ".join(shown_path(str(k)) for k in list(obj)[:8]) if isinstance(obj, Mapping) else type(obj).__name__
        raise ConfigError(f"{shown_path(path)}: no state dict found (top level: {keys or 'empty'}; looked under "
                          f"{', '.join(WRAPPERS)})")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if all(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return sd, wrapper


def _apply(layout: Layout, sd: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
           ) -> tuple[dict[str, tuple[str, torch.Tensor]], list[str], int, int]:
    """``{ablate name: (checkpoint name, tensor)}``, names that collide, dropped count, qkv splits."""
    mapped: dict[str, tuple[str, torch.Tensor]] = {}
    clashes: list[str] = []
    dropped = splits = 0
    for key, tensor in sd.items():
        new = layout.rename(key)
        if new is None:
            dropped += 1
            continue
        pieces = [(new, tensor)]
        m = re.match(r"^(.*)\.qkv\.(weight|bias)$", new)
        q_name, kv_name = (f"{m[1]}.q.{m[2]}", f"{m[1]}.kv.{m[2]}") if m else ("", "")
        if (m and new not in target and q_name in target and kv_name in target
                and tensor.shape[0] == target[q_name].shape[0] + target[kv_name].shape[0]):
            rows = target[q_name].shape[0]
            pieces = [(q_name, tensor[:rows]), (kv_name, tensor[rows:])]
            splits += 1
        for name, t in pieces:
            if name in mapped:
                clashes.append(key)
            else:
                mapped[name] = (key, t)
    # The other direction: separate q and kv linears (PVT) where the model packs them into
    # one qkv (ablate's fast path when there is no spatial reduction): rows q then kv.
    for name in list(mapped):
        m = re.match(r"^(.*)\.q\.(weight|bias)$", name)
        if not m or name in target:
            continue
        packed, kv = f"{m[1]}.qkv.{m[2]}", f"{m[1]}.kv.{m[2]}"
        if packed in target and kv in mapped and packed not in mapped:
            (q_key, q), (_, k) = mapped.pop(name), mapped.pop(kv)
            mapped[packed] = (q_key, torch.cat([q, k], 0))
            splits += 1
    return mapped, clashes, dropped, splits


def _head_reinit(mapped: Mapping[str, tuple[str, torch.Tensor]], target: Mapping[str, torch.Tensor]
                 ) -> tuple[int, int] | None:
    """``(checkpoint classes, model classes)`` when the checkpoint's classifier differs from the
    model's in its class count only (same input width, a bias of the same count if any)."""
    if "head.weight" not in mapped or "head.weight" not in target:
        return None
    weight, want = mapped["head.weight"][1], target["head.weight"]
    bias = mapped.get("head.bias", (None, None))[1]
    if (weight.dim() != want.dim() or weight.shape[1:] != want.shape[1:] or weight.shape[0] == want.shape[0]
            or (bias is not None and tuple(bias.shape) != (weight.shape[0],))):
        return None
    return int(weight.shape[0]), int(want.shape[0])


def map_state_dict(sd: Mapping[str, torch.Tensor], model: nn.Module, path: str | os.PathLike[str] = "<checkpoint>",
                   ) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Rename ``sd`` onto ``model``'s names with the best-fitting layout; nothing is loaded yet.

    Args:
        sd: a bare state dict (see :func:`find_state_dict`).
        model: the model the tensors are for.
        path: named in the report.

    Returns:
        The tensors to load (model names, the checkpoint's values, only matching shapes)
        and the :class:`LoadReport` (``wrapper`` left empty).
    """
    target = model.state_dict()
    best: tuple[int, int, Layout, Any] | None = None
    for order, layout in enumerate(LAYOUTS):
        result = _apply(layout, sd, target)
        fits = sum(1 for k, (_, t) in result[0].items() if k in target and tuple(t.shape) == tuple(target[k].shape))
        if best is None or fits > best[0]:
            best = (fits, -order, layout, result)
    assert best is not None  # LAYOUTS is never empty
    _, _, layout, (mapped, clashes, dropped, splits) = best
    out: dict[str, torch.Tensor] = {}
    unexpected = list(clashes)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    head_reinit = _head_reinit(mapped, target)
    for name, (orig, tensor) in mapped.items():
        if name not in target and any(re.search(p, name) for p in layout.unused):
            dropped += 1
        elif name not in target:
            unexpected.append(orig)
        elif head_reinit and _HEAD.match(name):
            continue  # the head is fresh as a whole: never a loaded bias on a new weight
        elif tuple(tensor.shape) != tuple(target[name].shape):
            mismatched.append((name, tuple(tensor.shape), tuple(target[name].shape)))
        else:
            out[name] = tensor
    missing = [k for k in target if k not in out and not _OPTIONAL.search(k)
               and not (head_reinit and _HEAD.match(k)) and k not in {m[0] for m in mismatched}]
    report = LoadReport(path=str(path), layout=layout.name, wrapper="", loaded=len(out), total=len(target),
                        missing=tuple(missing), unexpected=tuple(unexpected), mismatched=tuple(mismatched),
                        head_reinit=head_reinit, dropped=dropped, split_qkv=splits)
    return out, report


def load_weights(model: nn.Module, path: str | os.PathLike[str], *, strict: bool = True) -> LoadReport:
    """Load the checkpoint at ``path`` into ``model`` (in place) and say what was done.

    Args:
        model: a built ablate model.
        path: a local checkpoint file (see the module docstring for the layouts read).
        strict: refuse a checkpoint that leaves keys over (missing, unexpected or of another
            shape; a classifier of another class count is re-initialised, not refused).

    Raises:
        ConfigError: an unreadable file, no state dict in it, or (strict) leftovers:
            ``FILE: checkpoint (layout swin) does not fit: 2 missing (...); 1 unexpected (...)``.
    """
    sd, wrapper = find_state_dict(read_checkpoint(path), path)
    tensors, report = map_state_dict(sd, model, path)
    report = dataclasses.replace(report, wrapper=wrapper)
    if strict and not report.clean:
        raise ConfigError(f"{shown_path(path)}: checkpoint (layout {report.layout}) does not fit the model: "
                          f"{report.problem()} (strict=False loads what fits; `ablate weights check` lists it all)")
    odd = next((n for n, t in tensors.items() if t.is_meta or t.layout != torch.strided or t.is_quantized), None)
    if odd is not None:  # checked before anything is copied: a refused file leaves the model as it was
        raise ConfigError(f"{shown_path(path)}: tensor {shown_path(odd)} holds no plain data "
                          "(a meta, sparse or quantized tensor)")
    state = model.state_dict()
    with torch.no_grad():
        for name, tensor in tensors.items():
            try:
                state[name].copy_(tensor.to(device=state[name].device, dtype=state[name].dtype))
            except (RuntimeError, TypeError, NotImplementedError) as exc:  # a meta, sparse or quantized tensor
                raise ConfigError(f"{shown_path(path)}: tensor {name} cannot be loaded "
                                  f"({exception_line(exc)})") from None
    return report
