"""Parameters, FLOPs and latency: the one counter every number in ablate comes from.

Convention (DESIGN.md "FLOPs"): one multiply-add is one FLOP, as in fvcore and in the
four papers (Focal, FLatten, BiFormer, LaViT). The counter runs the model once under
:class:`torch.utils.flop_counter.FlopCounterMode`, which reports two FLOPs per
multiply-add, and halves its total.

What is counted (one FLOP per multiply-add, biases and scaling not counted):

* ``mm``/``addmm``/``bmm``/``baddbmm`` and everything that lowers to them: ``nn.Linear``
  on any number of leading dims, ``@``/``matmul`` with broadcasting, ``einsum`` with
  any number of operands;
* matrix-vector and dot products (``mv``, ``addmv``, ``dot``, ``vdot``), which
  FlopCounterMode itself ignores;
* convolutions, grouped and depthwise ones at their true cost
  ``out_elements * in_channels / groups * kernel_area``;
* scaled-dot-product attention, two matmuls of ``L*S*E`` each. PyTorch's own formula
  covers the CUDA kernels only; on CPU the fused kernel would be counted as zero, so
  the counter forces the math backend (which decomposes into ``bmm``) and also
  registers the CPU flash kernel in case a model picks a backend itself;
* average pooling and mean reductions (``avg_pool*``, ``adaptive_avg_pool*``,
  ``mean``): one FLOP per input element. The papers count pooling where it is part of
  the attention (Focal's window pooling, BiFormer's region pooling), fvcore counts
  ``adaptive_avg_pool2d`` the same way.

What is not counted: normalisation, softmax, activations, element-wise arithmetic
(residuals, bias tables, masks), max pooling, data movement (roll, unfold, gather).

Against the official figures (checked by running the official Focal code, unchanged,
next to ours): this counter gives the official Focal-T/S/B models exactly the count it
gives our presets, 4.953 / 9.480 / 16.436 G, with identical parameter counts. The
official hand-written ``flops()`` prints 4.924 / 9.432 / 16.371 G (0.4-0.6 % lower):
it counts ``(ws + 2e)^2 - ws^2 = 120`` ring keys per window where the code attends to
``4 ws^2 - 4 (ws - e)^2 = 132``, and adds one FLOP per element for each LayerNorm,
which we do not count. The README's rounded 4.9 / 9.4 / 16.4 G are within 1.1 %.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

if TYPE_CHECKING:
    from ablate.models import Architecture

__all__ = ["count_flops", "count_params", "measure_latency", "profile", "flop_breakdown", "ultralytics_gflops", "profile_yolo"]

aten = torch.ops.aten


# --------------------------------------------------------------------------- formulas
# FlopCounterMode's convention: 2 FLOPs per multiply-add. Each formula receives the
# shapes of the op's arguments (tensors replaced by their shapes) and ``out_shape``.


def _mv_flop(a_shape: torch.Size, b_shape: torch.Size, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    m, k = a_shape  # (M, K) @ (K,) -> (M,)
    return 2 * m * k


def _addmv_flop(bias_shape: Any, a_shape: torch.Size, b_shape: torch.Size, *args: Any, out_shape: Any = None,
                **kwargs: Any) -> int:
    return _mv_flop(a_shape, b_shape)


def _dot_flop(a_shape: torch.Size, b_shape: torch.Size, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return 2 * a_shape[0]


def _cpu_flash_sdpa_flop(query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size, *args: Any,
                         out_shape: Any = None, **kwargs: Any) -> int:
    """``softmax(q k^T) v``: ``(..., L, E) @ (..., E, S)`` then ``(..., L, S) @ (..., S, Ev)``."""
    *batch, n_q, e = query_shape
    n_k = key_shape[-2]
    e_v = value_shape[-1]
    return 2 * math.prod(batch) * n_q * n_k * (e + e_v)


def _input_elements_flop(x_shape: torch.Size, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """Pooling and means: one add per input element (2 in FlopCounterMode's units)."""
    return 2 * math.prod(x_shape)


def _custom_mapping() -> dict[Any, Callable[..., int]]:
    mapping: dict[Any, Callable[..., int]] = {
        aten.mv: _mv_flop,
        aten.addmv: _addmv_flop,
        aten.dot: _dot_flop,
        aten.vdot: _dot_flop,
        aten.mean: _input_elements_flop,
        aten.avg_pool1d: _input_elements_flop,
        aten.avg_pool2d: _input_elements_flop,
        aten.avg_pool3d: _input_elements_flop,
        aten._adaptive_avg_pool2d: _input_elements_flop,
        aten._adaptive_avg_pool3d: _input_elements_flop,
    }
    cpu_flash = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_flash is not None:
        mapping[cpu_flash] = _cpu_flash_sdpa_flop
    return mapping


# --------------------------------------------------------------------------- counting


def _run_counted(model: nn.Module, inputs: tuple[Any, ...], kwargs: dict[str, Any]) -> FlopCounterMode:
    """One eval-mode, no-grad forward under the counter; the training flag is restored."""
    was_training = model.training
    counter = FlopCounterMode(display=False, custom_mapping=_custom_mapping())
    try:
        model.eval()
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
            model(*inputs, **kwargs)
    finally:
        model.train(was_training)
    return counter


def count_flops(model: nn.Module, *inputs: Any, **kwargs: Any) -> int:
    """Multiply-adds of one forward pass (one multiply-add = one FLOP).

    The model runs once in eval mode without gradients (dropout and drop-path off, as
    at inference, which is what the papers report); its training flag is restored.

    Args:
        model: any module; its ``forward`` receives ``*inputs, **kwargs``.
        *inputs: positional inputs, typically one ``(B, C, H, W)`` image batch. FLOPs
            scale with the batch: pass batch 1 for the per-image figure papers quote.
        **kwargs: keyword inputs for ``forward``.

    Returns:
        The number of multiply-adds, as an int.
    """
    counter = _run_counted(model, inputs, kwargs)
    return counter.get_total_flops() // 2


def flop_breakdown(model: nn.Module, *inputs: Any, **kwargs: Any) -> dict[str, dict[str, int]]:
    """Multiply-adds per module and operator, for finding where a count comes from.

    Returns:
        ``{module_path: {operator: multiply_adds}}`` with ``"Global"`` for the total,
        module paths as FlopCounterMode names them (``"ModelClass.stages.0"``).
    """
    counter = _run_counted(model, inputs, kwargs)
    return {mod: {str(op): n // 2 for op, n in ops.items()} for mod, ops in counter.get_flop_counts().items()}


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def profile(model: nn.Module, resolution: int, in_chans: int = 3) -> dict[str, float]:
    """Params (millions) and GFLOPs (multiply-adds / 1e9) for one image.

    Args:
        model: an image model taking ``(B, in_chans, R, R)``.
        resolution: image side ``R``.
        in_chans: input channels.

    Returns:
        ``{"params_m": float, "gflops": float}``, the figures DESIGN.md's objectives
        ``params_m`` and ``gflops`` name.
    """
    x = torch.zeros(1, in_chans, resolution, resolution, device=_model_device(model))  # 1, C, R, R
    macs = count_flops(model, x)
    return {"params_m": count_params(model) / 1e6, "gflops": macs / 1e9}


def measure_latency(model: nn.Module, resolution: int, device: str | torch.device = "cpu", warmup: int = 2,
                    iters: int = 5, in_chans: int = 3, batch_size: int = 1) -> float:
    """Median wall-clock milliseconds of one eval-mode forward pass.

    The model is moved to ``device`` for the measurement and moved back afterwards;
    its training flag is restored. On CUDA the device is synchronised around each
    iteration, so the time covers the kernels, not only their launch.

    Args:
        model: an image model taking ``(B, in_chans, R, R)``.
        resolution: image side ``R``.
        device: where to run (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
        warmup: untimed passes first (allocator, cuDNN autotuning, lazy init).
        iters: timed passes; the median is returned because it ignores one-off stalls.
        in_chans: input channels.
        batch_size: images per pass.

    Returns:
        Median milliseconds per forward pass.
    """
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got {iters=} and {warmup=}")
    dev = torch.device(device)
    home = _model_device(model)
    was_training = model.training
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times: list[float] = []
    try:
        model.to(dev).eval()
        x = torch.randn(batch_size, in_chans, resolution, resolution, device=dev)  # B, C, R, R
        with torch.no_grad():
            for _ in range(warmup):
                model(x)
            sync()
            for _ in range(iters):
                start = time.perf_counter()
                model(x)
                sync()
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        model.to(home).train(was_training)
    return statistics.median(times)


# --------------------------------------------------------------------------- YOLO: ultralytics' figure


def _norm_ops(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """``(multiply-adds, thop's normalisation count)`` of one forward pass at ``x``."""
    total = [0]

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        ops = 2 * inputs[0].numel()  # thop: (x - mean) / std
        if getattr(module, "affine", False) or getattr(module, "elementwise_affine", False):
            ops *= 2  # thop: * weight + bias
        total[0] += ops

    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, norms)]
    try:
        macs = count_flops(model, x)
    finally:
        for h in handles:
            h.remove()
    return macs, total[0]

def _input(model: nn.Module, size: int) -> torch.Tensor:
    p = next(model.parameters())
    return torch.zeros(1, 3, size, size, device=p.device, dtype=p.dtype)  # 1, 3, S, S

def ultralytics_gflops(model: nn.Module, imgsz: int = 640) -> float:
    """GFLOPs as ultralytics prints them (``YOLO("yolov8n.yaml").info()``: 8.9 for yolov8n).

    Ultralytics counts with thop on the model as built (BatchNorm not fused) and doubles
    thop's count. thop counts a multiply-add as one and each BatchNorm / LayerNorm /
    GroupNorm element as 2 (normalise), 4 with an affine — operations ablate's counter,
    following fvcore and the papers, does not count, and which vanish when ultralytics
    fuses BN into the convolutions for inference (``model.fuse()`` prints 8.7 for
    yolov8n, exactly 2 x ablate's multiply-adds). So the printed figure is::

        2 * (multiply-adds + thop's normalisation count) / 1e9

    computed here with :func:`ablate.measure.count_flops` (the project's one counter)
    and a hook per norm layer. For the stock models this equals
    ``ultralytics.utils.torch_utils.get_flops`` exactly; with attention it is higher,
    because thop counts a three-operand einsum (linear attention's ``q (k^T v)``
    normaliser) as zero and ours counts every attention FLOP.

    Args:
        model: a ``DetectionModel`` (or any module taking ``(1, 3, S, S)`` images).
        imgsz: square image side (ultralytics reports 640).
    """
    macs, norms = _norm_ops(model, _input(model, imgsz))
    return 2 * (macs + norms) / 1e9

def profile_yolo(arch: Mapping[str, Any] | Architecture, resolution: int | None = None) -> dict[str, float]:
    """Params, multiply-adds at ``resolution`` and ultralytics' GFLOPs at 640 of a YOLO arch.

    The model is built for ``img_size = resolution`` (the blocks' ``input_resolution``
    follows, as :func:`ablate.models.build` does for the ViT).

    Args:
        arch: a detect :class:`~ablate.models.Architecture` or a YOLO arch dict.
        resolution: image side (default: the arch's ``img_size``; presets: 640).

    Returns:
        ``{"params_m", "gflops" (multiply-adds / 1e9 at resolution), "gflops_ultralytics"
        (:func:`ultralytics_gflops` at 640)}``.
    """
    from ablate.models import build_model, resolve_architecture

    resolved = resolve_architecture(arch, "detect")
    size = int(resolution or resolved.img_size)
    model = build_model(resolved if size == resolved.img_size else
                        resolve_architecture({**resolved.to_dict(), "img_size": size}, "detect"))
    macs_640, norms = _norm_ops(model, _input(model, 640))
    macs = macs_640 if size == 640 else count_flops(model, _input(model, size))
    return {"params_m": count_params(model) / 1e6, "gflops": macs / 1e9,
            "gflops_ultralytics": 2 * (macs_640 + norms) / 1e9}
