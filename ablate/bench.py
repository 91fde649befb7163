"""Attention cost: time, memory and FLOPs of every token mixer against global softmax.

``ablate bench attention`` builds each attention family as a lone mixer at a few token
grids ``r×r`` (``input_resolution=(r, r)``, the family's official default options) and
measures, per grid:

* ``fwd_ms``: median of ``repeats`` eval-mode forward passes without gradients after
  ``warmup`` untimed ones (:func:`ablate.measure.measure_latency`);
* ``fwdbwd_ms``: the same for a train-mode forward plus backward of ``out.sum()`` (plus
  the family's auxiliary losses), gradients flowing to the parameters and the input;
* ``peak_mib``: peak tensor memory of one train-mode forward+backward *above* what was
  allocated before it (parameters, buffers, the input, a stateful family's stored
  state). CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``,
  minus ``memory_allocated`` at the start. CPU: PyTorch's profiler with
  ``profile_memory=True`` records every allocation and free of the CPU allocator with its
  size; the peak is the maximum of their running sum, in time order
  (:func:`peak_cpu_memory`). Memory that kernels take outside PyTorch's allocator
  (oneDNN/MKL scratch) is not seen by either method;
* ``gflops``: multiply-adds of one forward of the whole batch, 1e9
  (:func:`ablate.measure.count_flops`, the project's one counter).

Ratios divide a family's figure by the global-softmax SDPA baseline measured in the same
run at the same grid, so the baseline's ratios are 1. The baseline row ``softmax`` is
global attention without a relative position bias, as in ViT/DeiT: on CPU, SDPA then
takes its fused flash kernel, which never stores the N×N matrix. Two more softmax rows
are measured by default: ``softmax+bias`` (the family's default, with a learned
``(heads, N, N)`` bias, which sends SDPA down its explicit math path, forward and
backward, as the profiler shows) and ``softmax-window`` (Swin's W-MSA, window 7).
The growth exponent of a family is the least-squares slope of ``log(value)`` against
``log(N)``, ``N = r*r`` (:func:`growth_exponent`): about 2 for global softmax, about 1
for linear and windowed attention, less at small grids where fixed costs dominate.

A family whose defaults cannot be built at a grid (``check`` raises Infeasible) gets the
nearest feasible setting, one integer option moved as little as possible, and the row's
``note`` says so; a family that clamps by itself (Swin/Focal shrink a window larger than
the map) is noted too. When no setting fits, or the run runs out of memory, the row keeps
the reason in ``note`` and ``None`` for what was not measured.

Stateful families (LaViT) are timed on their second layer: mixer A (block 0 of a stage
of depth 2) runs once, untimed and without gradients, on ``{"aux_losses": []}``; mixer
B (block 1) is timed on a fresh copy of the state A left. With a ``va_layers`` option
(LaViT) it is set to 1, so B is a Less-Attention layer and the row is named
``"<family> (LA layer)"``.

Timings depend on the threads (``threads`` in the output; ``--threads`` sets them) and on
other processes: the output records the machine's load average at the start and the end,
and the table warns when it was well above what this run adds.

The random ``(B, C, r, r)`` input that the measuring functions create is read as
``(B, r*r, C)`` tokens through a view (no copy; the data are random, so the layout does
not matter).
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ablate.attention import BlockContext, TokenMixer, create_mixer, get_attention, list_attention, parse_options
from ablate.errors import AblateError, ConfigError, Infeasible
from ablate.measure import count_flops, measure_latency

__all__ = [
    "BASELINE",
    "BenchConfig",
    "bench_attention",
    "bench_families",
    "growth_exponent",
    "make_config",
    "peak_cpu_memory",
    "print_table",
]

BASELINE = "softmax"
"""The row every ratio is relative to: global multi-head softmax attention (SDPA)."""

# Rows that are a registered family with fixed options: name -> (family, options).
_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    # The baseline: ViT/DeiT-style global attention through SDPA, no relative position
    # bias, so SDPA can take a fused kernel that never stores the N×N matrix.
    "softmax": ("softmax", {"rel_pos_bias": False}),
    # The family's own default adds a learned (heads, N, N) bias (Swin's table over the map).
    "softmax+bias": ("softmax", {}),
    "softmax-window": ("softmax", {"window_size": 7}),  # Swin W-MSA, window 7 (no shift)
}

# Options the second-layer measurement of a stateful family sets when the family has them.
_STATEFUL_OPTIONS: dict[str, Any] = {"va_layers": 1}

# Options a family clamps itself to the map: (mixer attribute, option field).
_CLAMPED = (("window", "window_size"), ("shift", "shift_size"), ("expand", "expand_size"))

_MIB = 2 ** 20


# --------------------------------------------------------------------------- configuration


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
    return list(dict.fromkeys([BASELINE, *_VARIANTS, *list_attention()]))


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
                hint = difflib.get_close_matches(item, known, n=1)
                raise ConfigError(f"--families: unknown attention family {item!r}, allowed: {', '.join(known)}"
                                  + (f"; did you mean {hint[0]!r}?" if hint else ""))
            if item not in names:
                names.append(item)
        if not names:
            raise ConfigError(f"--families: give at least one of {', '.join(known)}")
        names = [BASELINE, *(n for n in names if n != BASELINE)]

    sides = _parse_resolutions(resolutions)
    for name, value, low in (("--dim", dim, 1), ("--heads", heads, 1), ("--batch", batch, 1),
                             ("--repeats", repeats, 1), ("--warmup", warmup, 0),
                             *((("--threads", threads, 1),) if threads is not None else ())):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
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
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise ConfigError(f"--resolutions must be positive integers separated by commas (e.g. 14,28,56), "
                              f"got {item!r} in {value!r}")
        sides.append(item)
    return tuple(sorted(set(sides)))


# --------------------------------------------------------------------------- pure helpers


def growth_exponent(tokens: Sequence[float], values: Sequence[float | None]) -> float | None:
    """Least-squares slope of ``log(value)`` against ``log(tokens)``.

    Pairs whose value is None or not positive are skipped (a grid that failed).

    Returns:
        The exponent ``k`` of ``value ~ tokens^k``, or None with fewer than two distinct
        token counts left.
    """
    pts = [(math.log(n), math.log(v)) for n, v in zip(tokens, values) if v is not None and v > 0 and n > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    mx = statistics.fmean(x for x, _ in pts)
    my = statistics.fmean(y for _, y in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base <= 0:
        return None
    return value / base


def _feasible_options(family: str, dim: int, heads: int, hw: tuple[int, int],
                      options: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The family's options, or the nearest feasible ones at ``hw`` and a note saying so.

    "Nearest": one integer option moved by the smallest distance (smaller first, the
    options' declaration order breaks ties).

    Raises:
        Infeasible: no single integer option can be moved to make the family fit.
    """
    cls = get_attention(family)
    opts = parse_options(family, options, cls.Options)
    try:
        cls.check(dim, heads, hw, opts)
        return options, ""
    except Infeasible as err:
        reason = str(err)
    for distance in range(1, 1 + max([getattr(opts, f.name) for f in dataclasses.fields(opts)
                                      if type(getattr(opts, f.name)) is int] or [0])):
        for field in dataclasses.fields(opts):
            value = getattr(opts, field.name)
            if type(value) is not int:
                continue
            for candidate in (value - distance, value + distance):
                if candidate < 0 or candidate > 2 * value:
                    continue
                try:
                    cls.check(dim, heads, hw, dataclasses.replace(opts, **{field.name: candidate}))
                except (Infeasible, ConfigError):
                    continue
                return ({**options, field.name: candidate},
                        f"{field.name}={value}->{candidate} (default infeasible at {hw[0]}x{hw[1]}: {reason})")
    raise Infeasible(reason)


def _clamp_note(mixer: TokenMixer) -> str:
    notes = []
    for attr, field in _CLAMPED:
        asked = getattr(mixer.opts, field, None)
        used = getattr(mixer, attr, None)
        if isinstance(asked, int) and isinstance(used, int) and asked != used:
            notes.append(f"{field}={asked}->{used}")
    return f"{', '.join(notes)} (clamped to the map by the family)" if notes else ""


def _copy_state(obj: Any) -> Any:
    """A copy of a state's containers (dicts, lists, tuples); tensors are shared, not cloned."""
    if isinstance(obj, dict):
        return {k: _copy_state(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy_state(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_copy_state(v) for v in obj)
    return obj


# --------------------------------------------------------------------------- the timed module


class _Layer(nn.Module):
    """One mixer as an image model, so :mod:`ablate.measure` can time and count it.

    ``(B, C, r, r)`` input is viewed as ``(B, r*r, C)`` tokens. For a stateful family,
    ``first`` is the block before the measured one: :meth:`prepare` runs it once per mode
    and input shape, and every forward gets a fresh copy of the state it left.
    """

    def __init__(self, mixer: TokenMixer, hw: tuple[int, int], first: TokenMixer | None = None) -> None:
        super().__init__()
        self.mixer = mixer
        self.first = first
        self.hw = hw
        self.aux_losses: list[torch.Tensor] = []
        self._states: dict[tuple[Any, ...], dict[str, Any]] = {}

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        return x.view(b, self.hw[0] * self.hw[1], c)  # B, N, C (a view; random data)

    def _key(self, x: torch.Tensor) -> tuple[Any, ...]:
        return self.training, tuple(x.shape), x.device

    def prepare(self, x: torch.Tensor) -> None:
        """Run the first block (untimed, no gradients) for inputs shaped like ``x`` in this mode."""
        if self.first is None or self._key(x) in self._states:
            return
        state: dict[str, Any] = {"aux_losses": []}
        with torch.no_grad():
            self.first(self._tokens(x), self.hw, state)
        state["aux_losses"] = []  # the first block's losses are not the measured block's cost
        self._states[self._key(x)] = state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self._tokens(x)
        if self.first is None:
            return self.mixer(tokens, self.hw)
        try:
            state = _copy_state(self._states[self._key(x)])
        except KeyError:
            raise RuntimeError(f"prepare() was not called for {self._key(x)}") from None
        out = self.mixer(tokens, self.hw, state)
        self.aux_losses = state["aux_losses"]
        return out


def _build(family: str, options: dict[str, Any], cfg: BenchConfig, r: int) -> _Layer:
    torch.manual_seed(0)
    if not get_attention(family).stateful:
        layer = _Layer(create_mixer(family, cfg.dim, cfg.heads, input_resolution=(r, r), **options), (r, r))
    else:
        first, second = (create_mixer(family, cfg.dim, cfg.heads, input_resolution=(r, r),
                                      context=BlockContext(stage=0, index=i, depth=2), **options)
                         for i in range(2))
        layer = _Layer(second, (r, r), first)
    return layer.to(cfg.device)


# --------------------------------------------------------------------------- measurements


def _sync(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def _step(layer: _Layer, x: torch.Tensor) -> None:
    """One training step's forward and backward (no optimizer)."""
    out = layer(x)  # B, N, C
    loss = out.float().sum()
    for aux in layer.aux_losses:
        loss = loss + aux
    loss.backward()


def _clear_grads(layer: _Layer, x: torch.Tensor) -> None:
    layer.zero_grad(set_to_none=True)
    x.grad = None


def _fwdbwd_ms(layer: _Layer, x: torch.Tensor, cfg: BenchConfig) -> float:
    sync = _sync(cfg.device)
    times = []
    for i in range(cfg.warmup + cfg.repeats):
        _clear_grads(layer, x)
        sync()
        start = time.perf_counter()
        _step(layer, x)
        sync()
        if i >= cfg.warmup:
            times.append((time.perf_counter() - start) * 1e3)
    _clear_grads(layer, x)
    return statistics.median(times)


def peak_cpu_memory(fn: Callable[[], Any]) -> int:
    """Peak bytes the CPU allocator holds during ``fn()`` above what it held before.

    PyTorch's profiler (``profile_memory=True``) reports every allocation (+size) and
    free (-size) of the CPU allocator, with its address; the peak is the maximum running
    sum, in time order. Only frees of blocks allocated during the call count: the
    allocator's reporter also reports frees of blocks it saw in an earlier profiling
    session (with the size it recorded then, stale if the address was reused since),
    which must not lower the figure. Kineto's own log lines (``profiler_start`` /
    ``profiler_stop`` on file descriptor 2) are muted while it runs.
    """
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        roots = prof.profiler.kineto_results.experimental_event_tree()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    events, stack = [], list(roots)
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.ptr, node.extra_fields.alloc_size))
    live: dict[int, int] = {}  # address -> bytes, for blocks allocated during the call
    peak = total = 0
    for _, ptr, size in sorted(events, key=lambda e: e[0]):
        if size > 0:
            live[ptr] = size
            total += size
            peak = max(peak, total)
        elif ptr in live:
            total -= live.pop(ptr)
    return peak


def _peak_mib(layer: _Layer, x: torch.Tensor, cfg: BenchConfig) -> float:
    _clear_grads(layer, x)
    if cfg.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _step(layer, x)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        layer.aux_losses = []
        peak = peak_cpu_memory(lambda: (_step(layer, x), _clear_grads(layer, x)))
    _clear_grads(layer, x)
    return peak / _MIB


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _label(name: str) -> tuple[str, str, dict[str, Any]]:
    """(row label, family, options) for a row name."""
    family, options = _VARIANTS.get(name, (name, {}))
    if get_attention(family).stateful:
        fields = {f.name for f in dataclasses.fields(get_attention(family).Options)}
        extra = {k: v for k, v in _STATEFUL_OPTIONS.items() if k in fields}
        return (f"{name} (LA layer)" if "va_layers" in extra else f"{name} (second layer)"), family, \
            {**options, **extra}
    return name, family, options


def _measure_row(name: str, cfg: BenchConfig, r: int) -> dict[str, Any]:
    label, family, options = _label(name)
    row: dict[str, Any] = {"family": label, "options": {}, "grid": r, "tokens": r * r, "fwd_ms": None,
                           "fwdbwd_ms": None, "peak_mib": None, "gflops": None, "fwd_ratio": None,
                           "fwdbwd_ratio": None, "mem_ratio": None, "note": ""}
    notes = []
    layer = None
    try:
        options, note = _feasible_options(family, cfg.dim, cfg.heads, (r, r), options)
        notes.append(note)
        row["options"] = dataclasses.asdict(parse_options(family, options))
        layer = _build(family, options, cfg, r)
        notes.append(_clamp_note(layer.mixer))
        x = torch.randn(cfg.batch, cfg.dim, r, r, device=cfg.device)  # B, C, r, r (viewed as B, N, C)
        layer.eval()
        layer.prepare(x)
        row["gflops"] = count_flops(layer, x) / 1e9
        row["fwd_ms"] = measure_latency(layer, r, cfg.device, warmup=cfg.warmup, iters=cfg.repeats,
                                        in_chans=cfg.dim, batch_size=cfg.batch)
        layer.train()
        x.requires_grad_(True)
        layer.prepare(x)
        row["fwdbwd_ms"] = _fwdbwd_ms(layer, x, cfg)
        row["peak_mib"] = _peak_mib(layer, x, cfg)
    except AblateError as err:
        notes.append(f"infeasible: {err}")
    except RuntimeError as err:
        if not _is_oom(err):
            raise
        notes.append(f"out of memory: {str(err).splitlines()[0][:160]}")
    finally:
        del layer
        if cfg.device == "cuda":
            torch.cuda.empty_cache()
    row["note"] = "; ".join(n for n in notes if n)
    return row


# --------------------------------------------------------------------------- the run


def bench_attention(cfg: BenchConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every row of ``cfg`` at every grid.

    Args:
        cfg: what to measure (:func:`make_config`).
        progress: called with one line per finished measurement (e.g. print to stderr).

    Returns:
        ``{"device", "device_name", "dim", "heads", "batch", "repeats", "warmup", "torch",
        "threads", "date", "load_average", "memory_method", "results": [row, ...],
        "exponents": {row label: {"time", "fwdbwd", "memory", "flops"}}}`` with one row per
        family and grid (family-major, grids ascending); see the module docstring for the
        fields. ``load_average`` is the machine's 1-minute load at the start and the end
        (None where unknown); this run adds about ``threads``, so a load well above that
        means other processes competed for the cores and the timings are noise.
    """
    say = progress or (lambda _: None)
    load_start = _load_average()
    rows: list[dict[str, Any]] = []
    total = len(cfg.families) * len(cfg.resolutions)
    default_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(cfg.threads or default_threads)
        threads = torch.get_num_threads()
        for name in cfg.families:
            for r in cfg.resolutions:
                start = time.perf_counter()
                row = _measure_row(name, cfg, r)
                rows.append(row)
                say(f"[{len(rows)}/{total}] {row['family']} {r}x{r}: " + (
                    f"fwd {_num(row['fwd_ms'], 3)} ms, fwd+bwd {_num(row['fwdbwd_ms'], 3)} ms, "
                    f"peak {_num(row['peak_mib'], 3)} MiB" if row["fwdbwd_ms"] is not None else row["note"])
                    + f" ({time.perf_counter() - start:.1f}s)")
    finally:
        torch.set_num_threads(default_threads)

    base = {row["grid"]: row for row in rows if row["family"] == BASELINE}
    for row in rows:
        ref = base.get(row["grid"], {})
        row["fwd_ratio"] = _ratio(row["fwd_ms"], ref.get("fwd_ms"))
        row["fwdbwd_ratio"] = _ratio(row["fwdbwd_ms"], ref.get("fwdbwd_ms"))
        row["mem_ratio"] = _ratio(row["peak_mib"], ref.get("peak_mib"))

    exponents: dict[str, dict[str, float | None]] = {}
    for label in dict.fromkeys(row["family"] for row in rows):
        mine = [row for row in rows if row["family"] == label]
        tokens = [row["tokens"] for row in mine]
        exponents[label] = {key: growth_exponent(tokens, [row[field] for row in mine])
                            for key, field in (("time", "fwd_ms"), ("fwdbwd", "fwdbwd_ms"),
                                               ("memory", "peak_mib"), ("flops", "gflops"))}
    return {
        "device": cfg.device,
        "device_name": torch.cuda.get_device_name() if cfg.device == "cuda" else (platform.processor()
                                                                                  or platform.machine()),
        "dim": cfg.dim,
        "heads": cfg.heads,
        "batch": cfg.batch,
        "repeats": cfg.repeats,
        "warmup": cfg.warmup,
        "torch": torch.__version__,
        "threads": threads,
        "date": datetime.date.today().isoformat(),
        "load_average": [load_start, _load_average()],
        "memory_method": ("torch.cuda.max_memory_allocated - memory_allocated before the step"
                          if cfg.device == "cuda" else
                          "torch.profiler profile_memory: peak running sum of CPU allocator events"),
        "results": rows,
        "exponents": exponents,
    }


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


# --------------------------------------------------------------------------- output


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _fixed(value: float | None, places: int, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{places}f}{suffix}"


def print_table(result: dict[str, Any], console: Any = None) -> None:
    """Print a result of :func:`bench_attention` as a rich table and one exponent line per row label."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(140, Console().width))
    title = (f"attention cost on {result['device']} ({result['device_name']}), dim {result['dim']}, "
             f"heads {result['heads']}, batch {result['batch']}, torch {result['torch']}, "
             f"{result['threads']} thread(s); ratios vs {BASELINE} (global) at the same grid")
    table = Table(title=title)
    for col in ("family", "grid", "N", "fwd ms", "fwd+bwd ms", "peak MiB", "GFLOPs",
                "fwd ×", "fwd+bwd ×", "mem ×", "note"):
        table.add_column(col, overflow="fold", justify="left" if col in ("family", "note") else "right")
    for row in result["results"]:
        table.add_row(row["family"], f"{row['grid']}x{row['grid']}", str(row["tokens"]),
                      _fixed(row["fwd_ms"], 3), _fixed(row["fwdbwd_ms"], 3), _fixed(row["peak_mib"], 2),
                      _fixed(row["gflops"], 4), _fixed(row["fwd_ratio"], 2), _fixed(row["fwdbwd_ratio"], 2),
                      _fixed(row["mem_ratio"], 2), row["note"])
    console.print(table)
    console.print("growth exponent k (cost ~ N^k, least squares over the grids):")
    for label, exp in result["exponents"].items():
        console.print(f"  {label}: time {_fixed(exp['time'], 2)}, fwd+bwd {_fixed(exp['fwdbwd'], 2)}, "
                      f"memory {_fixed(exp['memory'], 2)}, FLOPs {_fixed(exp['flops'], 2)}", highlight=False)
    console.print(f"peak memory: {result['memory_method']}", highlight=False)
    load = result.get("load_average") or [None, None]
    if any(v is not None and v > result["threads"] + 1 for v in load):  # this run adds about `threads`
        console.print(f"warning: the machine was busy (1-minute load average {load[0]} at the start, {load[1]} at "
                      f"the end, for {result['threads']} timed thread(s)): timings are unreliable", highlight=False)
