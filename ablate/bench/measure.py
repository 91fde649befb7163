"""Measure one benchmark row (time, peak memory, FLOPs at one grid) and run the whole table.

Each row is measured on a freshly built :class:`~ablate.bench.layer.BenchLayer`; a row
that cannot be built or runs out of memory keeps the reason in its ``note``. The run then
divides every row by the baseline at the same grid and fits each row's growth exponent.
See :mod:`ablate.bench` for what each figure means and how it is taken.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ablate.attention import parse_options
from ablate.bench.config import BASELINE, BenchConfig
from ablate.bench.layer import BenchLayer, build_layer, clamp_note, feasible_options, row_label
from ablate.errors import AblateError
from ablate.measure import count_flops, measure_latency

__all__ = ["bench_attention", "growth_exponent", "peak_cpu_memory"]

_MIB = 2 ** 20
#: ``c10::DeviceType::CPU`` as the profiler's trace writes it (``"Device Type"``).
_CPU_DEVICE_TYPE = 0


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


def _sync(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def _step(layer: BenchLayer, x: torch.Tensor) -> None:
    """One training step's forward and backward (no optimizer)."""
    out = layer(x)  # B, N, C
    loss = out.float().sum()
    for aux in layer.aux_losses:
        loss = loss + aux
    loss.backward()


def _clear_grads(layer: BenchLayer, x: torch.Tensor) -> None:
    layer.zero_grad(set_to_none=True)
    x.grad = None


def _fwdbwd_ms(layer: BenchLayer, x: torch.Tensor, cfg: BenchConfig) -> float:
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

    PyTorch's profiler (``profile_memory=True``) records every allocation (+size) and
    free (-size) of the CPU allocator with its address; its public Chrome-trace export
    carries them as ``[memory]`` events, and the peak is the maximum running sum in time
    order. Only frees of blocks allocated during the call count: the allocator's reporter
    also reports frees of blocks it saw in an earlier profiling session (with the size it
    recorded then, stale if the address was reused since), which must not lower the
    figure. Kineto's own log lines (``profiler_start`` / ``profiler_stop`` on file
    descriptor 2) are muted while it runs.
    """
    from torch.profiler import ProfilerActivity, profile

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        with tempfile.TemporaryDirectory(prefix="ablate-memory-") as folder:
            trace = os.path.join(folder, "trace.json")
            prof.export_chrome_trace(trace)
            with open(trace, encoding="utf-8") as f:
                trace_events = json.load(f)["traceEvents"]
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    events = []
    for event in trace_events:
        args = event.get("args") or {}
        if event.get("name") == "[memory]" and args.get("Device Type") == _CPU_DEVICE_TYPE:
            events.append((float(event["ts"]), int(args.get("Ev Idx", 0)), int(args["Addr"]), int(args["Bytes"])))
    live: dict[int, int] = {}  # address -> bytes, for blocks allocated during the call
    peak = total = 0
    for _, _, ptr, size in sorted(events):
        if size > 0:
            live[ptr] = size
            total += size
            peak = max(peak, total)
        elif ptr in live:
            total -= live.pop(ptr)
    return peak


def _peak_mib(layer: BenchLayer, x: torch.Tensor, cfg: BenchConfig) -> float:
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


def _measure_row(name: str, cfg: BenchConfig, r: int) -> dict[str, Any]:
    label, family, options = row_label(name)
    row: dict[str, Any] = {"family": label, "options": {}, "grid": r, "tokens": r * r, "fwd_ms": None,
                           "fwdbwd_ms": None, "peak_mib": None, "gflops": None, "fwd_ratio": None,
                           "fwdbwd_ratio": None, "mem_ratio": None, "note": ""}
    notes = []
    layer = None
    try:
        options, note = feasible_options(family, cfg.dim, cfg.heads, (r, r), options)
        notes.append(note)
        row["options"] = dataclasses.asdict(parse_options(family, options))
        layer = build_layer(family, options, cfg, r)
        notes.append(clamp_note(layer.mixer))
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


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}g}"
