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

The package: :mod:`~ablate.bench.config` checks the command line into a
:class:`BenchConfig`, :mod:`~ablate.bench.layer` builds one mixer as the timed module
(feasible options, the stateful second layer), :mod:`~ablate.bench.measure` times one row
and runs the whole table, :mod:`~ablate.bench.table` prints it. The public names are the
ones below; import them from ``ablate.bench``.
"""

from ablate.bench.config import BASELINE, BenchConfig, bench_families, make_config
from ablate.bench.measure import bench_attention, growth_exponent, peak_cpu_memory
from ablate.bench.table import print_table

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
