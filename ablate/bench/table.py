"""Print a benchmark result (:func:`~ablate.bench.bench_attention`) for a terminal.

Kept apart from the measuring code because it needs ``rich`` and nothing of torch: a
saved JSON result can be printed again without building a mixer.
"""

from __future__ import annotations

from typing import Any

from ablate.bench.config import BASELINE

__all__ = ["print_table"]


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
