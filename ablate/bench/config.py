"""What one attention benchmark run measures: the rows, the grids, the sizes, checked once.

The command line's strings become a frozen :class:`BenchConfig` here (unknown family →
one line with the valid names and a "did you mean"), so the measuring code only ever sees
checked values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from ablate.attention import list_attention
from ablate.errors import ConfigError, unknown_name

__all__ = ["BASELINE", "VARIANTS", "BenchConfig", "bench_families", "make_config"]

BASELINE = "softmax"
"""The row every ratio is relative to: global multi-head softmax attention (SDPA)."""

# Rows that are a registered family with fixed options: name -> (family, options).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    # The baseline: ViT/DeiT-style global attention through SDPA, no relative position
    # bias, so SDPA can take a fused kernel that never stores the N×N matrix.
    "softmax": ("softmax", {"rel_pos_bias": False}),
    # The family's own default adds a learned (heads, N, N) bias (Swin's table over the map).
    "softmax+bias": ("softmax", {}),
    "softmax-window": ("softmax", {"window_size": 7}),  # Swin W-MSA, window 7 (no shift)
}


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What one benchmark run measures; built and checked by :func:`make_config`.

    Attributes:
        families: row names, the baseline first (registered families and the softmax variants).
        resolutions: token grid sides ``r``, ascending.
        dim: channels ``C``.
        heads: attention heads.
        device: ``"cpu"`` or ``"cuda"``.
        batch: images per pass.
        repeats: timed passes (the median is reported).
        warmup: untimed passes before them.
        threads: CPU threads for the run (``torch.set_num_threads``); None keeps torch's default.
    """

    families: tuple[str, ...]
    resolutions: tuple[int, ...]
    dim: int = 64
    heads: int = 2
    device: str = "cpu"
    batch: int = 1
    repeats: int = 10
    warmup: int = 3
    threads: int | None = None


def bench_families() -> list[str]:
    """Every row name the benchmark knows: the baseline, the variants, each registered family."""
    return list(dict.fromkeys([BASELINE, *VARIANTS, *list_attention()]))


def make_config(families: str | Sequence[str] | None = None, resolutions: str | Sequence[int] = "14,28,56", *,
                dim: int = 64, heads: int = 2, device: str = "cpu", batch: int = 1, repeats: int = 10,
                warmup: int = 3, threads: int | None = None) -> BenchConfig:
    """Check the command line's values and build a :class:`BenchConfig`.

    Args:
        families: comma-separated names (or a sequence); None means every known row.
            The baseline is always measured (added first when missing).
        resolutions: comma-separated grid sides (or a sequence of ints).
        dim: channels.
        heads: attention heads; must divide ``dim``.
        device: ``"cpu"`` or ``"cuda"`` (which must be available).
        batch: images per pass.
        repeats: timed passes.
        warmup: untimed passes.
        threads: CPU threads (None: torch's default).

    Raises:
        ConfigError: one line naming the bad value and what is allowed.
    """
    known = bench_families()
    if families is None:
        names = known
    else:
        items = families.split(",") if isinstance(families, str) else list(families)
        names = []
        for item in (str(i).strip() for i in items):
            if not item:
                continue
            if item not in known:
                raise ConfigError("--families: " + unknown_name("attention family", item, known))
            if item not in names:
                names.append(item)
        if not names:
            raise ConfigError(f"--families: give at least one of {', '.join(known)}")
        names = [BASELINE, *(n for n in names if n != BASELINE)]

    sides = _parse_resolutions(resolutions)
    # Upper bounds: far above any paper's stage (dim 96 to 1024), low enough that a typo does not
    # ask the allocator for terabytes.
    for name, value, low, high in (("--dim", dim, 1, 8192), ("--heads", heads, 1, 4096), ("--batch", batch, 1, 65536),
                                   ("--repeats", repeats, 1, 10000), ("--warmup", warmup, 0, 1000),
                                   *((("--threads", threads, 1, 1024),) if threads is not None else ())):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    if dim % heads:
        raise ConfigError(f"--heads must divide --dim, got --dim {dim} and --heads {heads}")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available to this torch "
                          f"({torch.__version__}); use --device cpu")
    return BenchConfig(families=tuple(names), resolutions=sides, dim=dim, heads=heads, device=device,
                       batch=batch, repeats=repeats, warmup=warmup, threads=threads)


def _parse_resolutions(value: str | Sequence[int]) -> tuple[int, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    sides = []
    for item in items:
        if isinstance(item, str) and item.strip().isdigit():
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= 1024:
            raise ConfigError(f"--resolutions must be integers from 1 to 1024 separated by commas (e.g. 14,28,56), "
                              f"got {item!r} in {value!r}")
        sides.append(item)
    return tuple(sorted(set(sides)))
