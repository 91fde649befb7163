"""`ablate bench`: micro-benchmarks of the building blocks."""

from __future__ import annotations

from enum import Enum
from typing import Optional

import typer

from ablate.cli.common import ProfileFormat, app, echo_json

bench_app = typer.Typer(no_args_is_help=True, help="Micro-benchmarks of the building blocks.")


app.add_typer(bench_app, name="bench")


class BenchDevice(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


@bench_app.command("attention")
def bench_attention(
    families: Optional[str] = typer.Option(None, "--families", help="Comma-separated families (default: every "
                                                                    "registered one plus softmax+bias and "
                                                                    "softmax-window); the global softmax "
                                                                    "SDPA baseline is always measured."),
    resolutions: str = typer.Option("14,28,56", "--resolutions", help="Token grid sides r (an r×r map), "
                                                                      "comma-separated."),
    dim: int = typer.Option(64, "--dim", min=1, max=8192, help="Channels."),
    heads: int = typer.Option(2, "--heads", min=1, max=4096, help="Attention heads (must divide --dim)."),
    device: BenchDevice = typer.Option(BenchDevice.cpu, "--device", help="Where to measure."),
    fmt: ProfileFormat = typer.Option(ProfileFormat.table, "--format", help="Output format."),
    repeats: int = typer.Option(10, "--repeats", min=1, max=10000, help="Timed passes; the median is reported."),
    warmup: int = typer.Option(3, "--warmup", min=0, max=1000, help="Untimed passes before the timed ones."),
    batch: int = typer.Option(1, "--batch", min=1, max=65536, help="Images per pass."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=1024, help="CPU threads (default: torch's, usually "
                                                                  "one per core)."),
) -> None:
    """Time, peak memory and FLOPs of each attention family vs global softmax, per token grid."""
    from ablate.bench import bench_attention as run_bench
    from ablate.bench import make_config, print_table

    cfg = make_config(families, resolutions, dim=dim, heads=heads, device=device.value, batch=batch,
                      repeats=repeats, warmup=warmup, threads=threads)
    result = run_bench(cfg, progress=lambda line: typer.echo(line, err=True))
    if fmt == ProfileFormat.json:
        echo_json(result)
    else:
        print_table(result)

