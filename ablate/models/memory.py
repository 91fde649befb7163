"""How much memory a candidate needs at least, known before anything is built.

``image_size: 1000000`` once validated and then asked the allocator for 12 TB; a width or
depth typo does the same with weights. Building on the meta device would catch it but
costs a model construction per grid cell, so this module counts instead, from the
resolved keys alone, and counts *from below*: each term is a tensor every family's
forward must hold (the input image, each block's input and its MLP hidden layer, kept for
the backward pass; the value and output projections and the MLP among the weights). What
it refuses can never fit; what it passes may still run out of memory, and then the trial
fails with PyTorch's own message.

The limit is the largest memory of the machine (RAM, or a GPU's when there is a bigger
one), found without initialising CUDA when torch has not done so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

from ablate.errors import ConfigError, Infeasible
from ablate.models.arch import Architecture

__all__ = ["DoesNotFit", "MemoryEstimate", "estimate_memory", "machine_memory", "device_memory", "memory_guard", "check_memory", "format_bytes"]

_FLOAT = 4  # bytes of a float32 value
#: Bytes per parameter while training with AdamW: weight, gradient, two moments.
_TRAIN_STATE = 4 * _FLOAT


class DoesNotFit(Infeasible):
    """A candidate needs more memory than the machine has (its message names both)."""


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Lower bounds, in bytes, of what one model needs.

    Attributes:
        params: parameters (a lower bound of the model's count).
        per_image: activations one training image keeps for the backward pass.
        peak_forward: the largest tensors alive at once in a forward pass of one image
            without gradients (what measuring FLOPs and latency needs), weights excluded.
    """

    params: int
    per_image: int
    peak_forward: int

    def train_bytes(self, batch: int) -> int:
        """One training step on ``batch`` images: weights, gradients and AdamW state, activations."""
        return self.params * _TRAIN_STATE + batch * self.per_image

    def measure_bytes(self) -> int:
        """Building the model and one forward pass of one image without gradients."""
        return self.params * _FLOAT + self.peak_forward


def estimate_memory(arch: Architecture) -> MemoryEstimate:
    """Lower bounds of ``arch``'s parameters and activation memory, from its keys alone."""
    if arch.task == "detect":
        return _detect_estimate(arch.spec)
    return _vit_estimate(arch.spec)


def _vit_estimate(r: Mapping[str, Any]) -> MemoryEstimate:
    from ablate.models.vit_arch import stage_resolutions

    dims, depths = list(r["dims"]), list(r["depths"])
    ratios = list(r["mlp_ratio"]) if isinstance(r["mlp_ratio"], (list, tuple)) else [r["mlp_ratio"]] * len(depths)
    size = r["img_size"]
    image = r["in_chans"] * size * size * _FLOAT
    maps = stage_resolutions(Architecture("classify", r))
    params = r["in_chans"] * r["patch_size"] ** 2 * dims[0] + dims[-1] * r["num_classes"]
    per_image, peak = image, image
    for i, ((h, w), c, d, ratio) in enumerate(zip(maps, dims, depths, ratios)):
        hidden = max(1, int(c * ratio))
        # Every family projects values and outputs (2 C^2); every block has the MLP (2 C hidden).
        params += d * (2 * c * c + 2 * c * hidden)
        if i:
            params += dims[i - 1] * c  # the downsampling layer maps C_{i-1} to C_i channels
        tokens = max(h, 0) * max(w, 0) + (1 if r.get("class_token") and i == len(depths) - 1 else 0)  # joins last
        # Kept for the backward pass in each block: its input (for the norm), the mixer's
        # output and the MLP's hidden layer (for the activation's gradient).
        per_image += d * tokens * (2 * c + hidden) * _FLOAT
        peak = max(peak, tokens * (c + hidden) * _FLOAT)
    return MemoryEstimate(params=params, per_image=per_image, peak_forward=peak)


def _detect_estimate(r: Mapping[str, Any]) -> MemoryEstimate:
    # A YOLO model's weights are bounded by its YAML scale (a few million); what grows
    # without bound is the image: the input and the stem's 16-channel map at half size.
    size = r["img_size"]
    image = 3 * size * size * _FLOAT
    stem = 16 * math.ceil(size / 2) ** 2 * _FLOAT
    return MemoryEstimate(params=0, per_image=image + stem, peak_forward=image + stem)


def machine_memory() -> tuple[int, str]:
    """The largest memory one trial could use here, and what it is (``"RAM"``, ``"GPU 0"``).

    ``ABLATE_MEMORY_LIMIT`` (bytes, or with a K/M/G/T suffix) replaces it, for a driver
    that validates on a small machine what runs on a bigger one.
    """
    override = _override()
    if override is not None:
        return override
    import psutil

    best = (int(psutil.virtual_memory().total), "RAM")
    import torch

    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            total = int(torch.cuda.get_device_properties(i).total_memory)
            if total > best[0]:
                best = (total, f"GPU {i}")
    return best


def device_memory(device: str) -> tuple[int, str]:
    """The memory of the device a trial trains on (``cpu``, ``cuda``, ``cuda:1``), and its name."""
    override = _override()
    if override is not None:
        return override
    if device.startswith("cuda"):
        import torch

        index = int(device.partition(":")[2] or torch.cuda.current_device())
        return int(torch.cuda.get_device_properties(index).total_memory), f"GPU {index}"
    import psutil

    return int(psutil.virtual_memory().total), "RAM"


def _override() -> tuple[int, str] | None:
    """``ABLATE_MEMORY_LIMIT``, the one way to set the limit by hand, or None."""
    text = os.environ.get("ABLATE_MEMORY_LIMIT")
    return (_parse_size(text), "ABLATE_MEMORY_LIMIT") if text else None


def _parse_size(text: str) -> int:
    units = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1] if t and t[-1] in units else ""
    try:
        value = float(t[: len(t) - len(unit)])
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"ABLATE_MEMORY_LIMIT must be a size in bytes such as 64G, got {text!r}")
    return int(value * units[unit])


def format_bytes(n: float) -> str:
    """``12.0 TiB``, ``512.0 MiB``: binary units, one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def check_memory(arch: Architecture, *, batch: int = 1, train: bool = True,
                 limit: tuple[int, str] | None = None) -> MemoryEstimate:
    """Raise :class:`Infeasible` when ``arch`` cannot fit in ``limit`` (default: this machine).

    Args:
        arch: the candidate.
        batch: images per training step (1: the least any run needs).
        train: a training step; False: building and one forward pass (measuring).
        limit: bytes and their name; default :func:`machine_memory`.
    """
    est = estimate_memory(arch)
    need = est.train_bytes(batch) if train else est.measure_bytes()
    total, what = limit if limit is not None else machine_memory()
    if need > total:
        size = arch.spec.get("img_size")
        step = f"one training step on {batch} image{'s' if batch != 1 else ''}" if train else "one forward pass"
        raise DoesNotFit(
            f"needs at least {format_bytes(need)} for {step} at {size}x{size} "
            f"({format_bytes(est.params * _FLOAT)} of weights, {format_bytes(est.per_image)} of activations "
            f"per image), more than the {format_bytes(total)} of this machine's {what}; allowed: a smaller "
            f"image_size, width or depth{', or batch_size' if train and batch > 1 else ''}")
    return est


@contextlib.contextmanager
def memory_guard(what: str) -> Iterator[None]:
    """Turn running out of RAM inside the block into :class:`DoesNotFit` naming ``what``.

    The estimate counts from below, so a model it passes can still need more than the
    machine has; without a limit the kernel's OOM killer ends the process with no word.
    Here the process's data limit (``RLIMIT_DATA``: private writable memory, which is what
    PyTorch's CPU allocator takes) is lowered to what it holds plus the RAM available, so an
    allocation beyond that fails and PyTorch raises instead. Used around measuring in the
    command-line process (``profile``, ``run --dry-run``), never in trials.
    """
    try:
        import resource

        import psutil
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    held = psutil.Process().memory_info().data
    limit = held + int(psutil.virtual_memory().available)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    lowered = soft == resource.RLIM_INFINITY or limit < soft
    if lowered:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    try:
        yield
    except (MemoryError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and "can't allocate memory" not in str(err) \
                and "not enough memory" not in str(err):
            raise
        raise DoesNotFit(f"{what}: ran out of this machine's memory ({format_bytes(limit - held)} of RAM "
                         f"was available), allowed: a smaller image size, width or depth") from None
    finally:
        if lowered:
            resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
