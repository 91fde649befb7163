"""Start a candidate from a checkpoint: every tensor that matches by name and shape, the rest fresh.

A study's ``weights:`` (:mod:`ablate.study.weights`) initialises every candidate from one
checkpoint, although each candidate differs from the checkpoint's model (another attention,
another class count, another image size). So nothing is required to fit: the candidate is
built and initialised as usual, and then each of its tensors that the checkpoint holds under
the same name with the same shape is overwritten; the others (the swapped attention's own
tensors, a head of another class count, position tables of another size) keep their fresh
initialisation. Tensors of the new attention that happen to share a name and shape with the
checkpoint's (a ``qkv`` or ``proj`` linear of the same width) are transferred too: name and
shape are the rule, not the family.

* Classification: :func:`ablate.models.weights.load_weights` with ``strict=False``, so the
  checkpoint is read safely (``weights_only``) and renamed by the same family key tables as
  ``create_model(name, weights=FILE)`` (an official Swin release lands on a FLatten-Swin
  candidate), keeping the table that lands the most tensors.
* Detection: :func:`ablate.models.yolo.transfer.transfer_yolo_weights`, ultralytics' rule
  (``intersect_dicts``) on the ``.pt``'s model, with the layer indices ablate's inserted
  attention blocks shift mapped back.

A checkpoint that sets no tensor of the candidate is refused: it is almost certainly the
wrong file, and a silent run from scratch would be reported as a run from the checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from torch import nn

from ablate.errors import ConfigError, shown_path
from ablate.models.arch import Architecture
from ablate.models.weights import load_weights

__all__ = ["Transfer", "transfer_weights"]


@dataclass(frozen=True)
class Transfer:
    """What initialising a model from a checkpoint did.

    Attributes:
        path: the checkpoint file.
        transferred: how many of the model's tensors (state-dict entries, buffers included)
            were set from the checkpoint.
        total: how many tensors the model's state dict holds.
        how: which names were matched: the renaming table (classification) or how YOLO layer
            indices were read (``as stored`` or ``shifted past the inserted attention``).
    """

    path: str
    transferred: int
    total: int
    how: str

    def counts(self) -> dict[str, int]:
        """The two numbers a trial reports and stores (``weights_transferred``, ``weights_total``)."""
        return {"weights_transferred": self.transferred, "weights_total": self.total}


def transfer_weights(model: nn.Module, arch: Architecture, path: str | os.PathLike[str]) -> Transfer:
    """Overwrite every tensor of ``model`` that ``path`` holds by name and shape; keep the rest.

    Args:
        model: a freshly built (and initialised) candidate of ``arch``.
        arch: its architecture (its task decides how the checkpoint is read).
        path: a local checkpoint (classification: anything
            :func:`ablate.models.weights.read_checkpoint` reads; detection: an ultralytics ``.pt``).

    Raises:
        ConfigError: an unreadable file, or no tensor of the model set from it (one line
            naming the file and the counts).
    """
    if arch.task == "detect":
        from ablate.models.yolo.transfer import transfer_yolo_weights

        transferred, total, how = transfer_yolo_weights(model, arch, path)
    else:
        report = load_weights(model, path, strict=False)
        transferred, total, how = report.loaded, report.total, f"layout {report.layout}"
    if transferred == 0:
        raise ConfigError(f"{shown_path(path)}: no tensor of the checkpoint matches the model by name and shape "
                          f"(0 of its {total} transferred, {how}); almost certainly the wrong checkpoint for this "
                          f"model, allowed: a checkpoint of the same family or base model")
    return Transfer(path=os.fspath(path), transferred=transferred, total=total, how=how)
