"""Whole-model training throughput of ablate's presets against timm's same models (issue 18, item 3).

One training step is what a trainer pays per batch: ``zero_grad``, forward, cross-entropy,
backward, ``AdamW.step``, in float32 on the CPU. ``swin_tiny`` and ``deit_tiny`` have a timm
twin (``swin_tiny_patch4_window7_224``, ``deit_tiny_patch16_224``, built with
``pretrained=False`` and the preset's drop-path rate, so nothing is downloaded and both
train the same network); the script first checks that each pair has the same parameter
count. Other presets (``flatten_swin_tiny``, ``focal_tiny``, ``biformer_tiny``) have no
twin and are timed beside timm's Swin-T as context.

Timing is paired and interleaved: after the warm-up, every round times one ablate step
and one timm step back to back, the order alternating from round to round, so drift in
the machine's load (2 shared cores) hits both sides alike. The ratio of a round is
``timm seconds / ablate seconds`` (= ablate images/s over timm images/s); the report gives
the median of the per-round ratios and each side's images/s from its median step time.

    .venv/bin/python benchmarks/models_vs_timm.py                          # batch 8, 10 rounds
    .venv/bin/python benchmarks/models_vs_timm.py --models swin_tiny,deit_tiny --steps 20 --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

#: ablate preset -> timm model name of the same network (``pretrained=False``).
TIMM_TWINS: dict[str, str] = {
    "swin_tiny": "swin_tiny_patch4_window7_224",
    "deit_tiny": "deit_tiny_patch16_224",
}
#: The reference model for presets without a twin (their ratio is context, not a target).
CONTEXT_REFERENCE = "swin_tiny"
DEFAULT_MODELS = ("swin_tiny", "deit_tiny", "flatten_swin_tiny", "focal_tiny", "biformer_tiny")


@dataclasses.dataclass
class Entry:
    """One row to time: an ablate model and the model it is compared with.

    ``twin`` is True when ``reference`` is timm's build of the same network (the ratio is
    the target); False when it is only context (a different network, timm's Swin-T).
    """

    name: str
    model: nn.Module
    reference: nn.Module | None
    reference_name: str | None
    twin: bool


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine() -> dict[str, Any]:
    """What the numbers depend on: CPU, cores, threads, library versions, load now."""
    import timm

    return dict(cpu=cpu_model(), cores=cpu_count(), threads=torch.get_num_threads(), torch=torch.__version__,
                timm=timm.__version__, python=platform.python_version(), load=list(os.getloadavg()))


def param_count(model: nn.Module) -> int:
    """Number of parameters (every tensor in ``parameters()``, trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def build_entries(names: Sequence[str], ablate_overrides: Mapping[str, Mapping[str, Any]] | None = None,
                  timm_overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[Entry]:
    """Build each named preset and its comparison model, seeded so that runs repeat.

    Args:
        names: ablate preset names.
        ablate_overrides: per preset name, arch keys for ``ablate.models.create_model``
            (``img_size``; tiny stand-ins in tests).
        timm_overrides: per timm model name, keyword arguments for ``timm.create_model``
            (``img_size``, ``depths`` ...); the preset's ``drop_path_rate`` is passed as well,
            so both sides run the same stochastic depth.

    Returns:
        One :class:`Entry` per name; a twinless preset is compared with timm's Swin-T.
    """
    import timm

    from ablate.models import create_model

    ablate_overrides = dict(ablate_overrides or {})
    timm_overrides = dict(timm_overrides or {})

    def timm_model(preset: str, drop_path_rate: float) -> nn.Module:
        torch.manual_seed(0)
        name = TIMM_TWINS[preset]
        kwargs = dict(timm_overrides.get(name, {}))
        kwargs.setdefault("drop_path_rate", drop_path_rate)
        return timm.create_model(name, pretrained=False, **kwargs)

    entries: list[Entry] = []
    context: nn.Module | None = None
    for name in names:
        torch.manual_seed(0)
        model = create_model(name, **ablate_overrides.get(name, {}))
        if name in TIMM_TWINS:
            entries.append(Entry(name, model, timm_model(name, model.arch["drop_path_rate"]), TIMM_TWINS[name], True))
            continue
        if context is None:
            from ablate.models.presets import preset_arch

            context = timm_model(CONTEXT_REFERENCE, preset_arch(CONTEXT_REFERENCE)["drop_path_rate"])
        entries.append(Entry(name, model, context, TIMM_TWINS[CONTEXT_REFERENCE], False))
    return entries


def make_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """One training step of ``model`` on a fixed batch: forward, cross-entropy, backward, AdamW step."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        aux = getattr(model, "aux_loss", None)
        if aux is not None:
            loss = loss + aux
        loss.backward()
        optimizer.step()

    return step


#: What a step's seconds are read from: the wall clock (what a user waits for), or the CPU time
#: of the whole process (every thread; steadier on a shared machine, where a preempted step
#: loses wall time but not CPU time; best with ``--threads 1``, where no thread spins waiting).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def _timed(step: Callable[[], None], clock: Callable[[], float] = time.perf_counter) -> float:
    start = clock()
    step()
    return clock() - start


def _peak_mib(step: Callable[[], None]) -> float:
    from ablate.bench import peak_cpu_memory

    return peak_cpu_memory(step) / 2 ** 20


def measure(entries: Sequence[Entry], *, batch: int, image_size: int, steps: int, warmup: int = 2,
            num_classes: int = 1000, memory: bool = False, mixers: bool = False, clock: str = "wall",
            progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Time each entry against its reference, paired and interleaved.

    Args:
        entries: from :func:`build_entries` (or any models with a matching head).
        batch: images per step.
        image_size: side of the square input.
        steps: timed rounds; each round is one step of each side, order alternating.
        warmup: untimed steps of each side first (allocator, lazy init, caches).
        num_classes: the labels' range (the heads' output size).
        memory: also measure one step's peak CPU allocation per model (the profiler's
            allocation events; one extra, untimed step each).
        mixers: also time every block's token mixer alone (forward+backward at its input
            shape, :func:`mixer_seconds`) on both sides of a twin, to tell a gap in the
            mixers from one in the rest of the model.
        clock: ``"wall"`` or ``"cpu"`` (:data:`CLOCKS`).
        progress: called with a line per finished entry (stderr in the script).

    Returns:
        One dict per entry: images/s of each side (from the median step time), the median
        and quartiles of the per-round ratios ``t_reference / t_ablate``, parameter counts,
        ``peak_mib`` / ``reference_peak_mib`` when ``memory``, ``mixer_s`` /
        ``reference_mixer_s`` (seconds per step in the mixers) when ``mixers``.
    """
    if steps < 1 or batch < 1 or image_size < 1:
        raise ValueError(f"steps, batch and image_size must be positive, got {steps=}, {batch=}, {image_size=}")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    tick = CLOCKS[clock]
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, image_size, image_size, generator=gen)
    labels = torch.randint(0, num_classes, (batch,), generator=gen)
    rows: list[dict[str, Any]] = []
    reference_steps: dict[int, Callable[[], None]] = {}
    for entry in entries:
        ours = make_step(entry.model, images, labels)
        theirs = None
        if entry.reference is not None:
            theirs = reference_steps.setdefault(id(entry.reference), make_step(entry.reference, images, labels))
        for _ in range(warmup):
            ours()
            if theirs is not None:
                theirs()
        t_ours: list[float] = []
        t_theirs: list[float] = []
        for i in range(steps):
            if theirs is None:
                t_ours.append(_timed(ours, tick))
            elif i % 2 == 0:
                t_ours.append(_timed(ours, tick))
                t_theirs.append(_timed(theirs, tick))
            else:
                t_theirs.append(_timed(theirs, tick))
                t_ours.append(_timed(ours, tick))
        row: dict[str, Any] = dict(
            model=entry.name, reference=entry.reference_name, twin=entry.twin, params=param_count(entry.model),
            reference_params=param_count(entry.reference) if entry.reference is not None else None,
            images_per_s=batch / statistics.median(t_ours), step_s=t_ours)
        row["params_equal"] = row["params"] == row["reference_params"] if entry.twin else None
        if theirs is not None:
            ratios = sorted(b / a for a, b in zip(t_ours, t_theirs))
            row.update(reference_images_per_s=batch / statistics.median(t_theirs), reference_step_s=t_theirs,
                       ratio=statistics.median(ratios), ratio_q1=ratios[(len(ratios) - 1) // 4],
                       ratio_q3=ratios[(3 * (len(ratios) - 1) + 3) // 4])
        if mixers:
            row["mixer_s"] = mixer_seconds(entry.model, images, clock=tick)
            row["reference_mixer_s"] = mixer_seconds(entry.reference, images, clock=tick) if entry.twin else None
        if memory:
            row["peak_mib"] = _peak_mib(ours)
            row["reference_peak_mib"] = _peak_mib(theirs) if theirs is not None else None
        rows.append(row)
        if progress is not None:
            progress(_line(row))
    return rows


def _mixer_calls(model: nn.Module, images: torch.Tensor) -> list[tuple[Callable[[torch.Tensor], torch.Tensor],
                                                                         torch.Size]]:
    """Each block's token mixer as a callable of its input, with the input's shape in this model.

    The mixer is what a block runs between ``norm1`` and the residual: ablate's
    ``block.attn(x, hw)``; timm's Swin ``block._attn(x)`` (shift, window partition,
    ``WindowAttention``, merge) and ViT ``block.attn(x)``. Shapes come from one forward.
    """
    from ablate.attention import TokenMixer

    calls: list[tuple[Callable[[torch.Tensor], torch.Tensor], torch.Size]] = []

    def ablate_hook(mixer: nn.Module, args: tuple[Any, ...]) -> None:  # (x, hw[, state])
        calls.append((lambda x, rest=args[1:]: mixer(x, *rest), args[0].shape))

    def timm_hook(block: nn.Module, out: torch.Tensor) -> None:
        calls.append((block._attn if hasattr(block, "_attn") else block.attn, out.shape))  # Swin, ViT

    hooks = []
    for module in model.modules():
        if isinstance(module, TokenMixer):
            hooks.append(module.register_forward_pre_hook(ablate_hook))
        elif hasattr(module, "norm1") and hasattr(module, "attn") and not isinstance(module.attn, TokenMixer):
            hooks.append(module.norm1.register_forward_hook(
                lambda norm, args, out, block=module: timm_hook(block, out)))
    try:
        with torch.no_grad():
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def mixer_seconds(model: nn.Module, images: torch.Tensor, rounds: int = 3,
                  clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of forward+backward in all token mixers of one step (each timed alone, median of
    ``rounds``, after one untimed call), to split a step into mixers and the rest."""
    total = 0.0
    model.train()
    for call, shape in _mixer_calls(model, images):
        x = torch.randn(shape, requires_grad=True)

        def run() -> None:
            out = call(x)
            out.backward(torch.ones_like(out))

        run()
        total += statistics.median(_timed(run, clock) for _ in range(rounds))
    return total


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _line(row: Mapping[str, Any]) -> str:
    kind = "twin" if row["twin"] else "context"
    return (f"{row['model']}: {row['images_per_s']:.2f} img/s vs {row['reference']} ({kind}) "
            f"{_fmt(row.get('reference_images_per_s'), '.2f')} img/s, ratio {_fmt(row.get('ratio'), '.3f')}")


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The Markdown table the README shows (one line per model)."""
    lines = ["| model | ablate img/s | timm img/s | ratio (median, IQR) | params | params equal? "
             "| peak MiB ablate / timm |", "|---|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        ref = r["reference"] if r["twin"] else f"{r['reference']} (context)"
        equal = "yes" if r["params_equal"] else "no" if r["params_equal"] is False else "n/a (no twin)"
        params = f"{r['params']:,}" + ("" if r["params_equal"] else f" / {r['reference_params']:,}")
        iqr = (f"{r['ratio']:.3f} ({r['ratio_q1']:.3f}–{r['ratio_q3']:.3f})" if r.get("ratio") is not None else "-")
        mem = (f"{r['peak_mib']:.0f} / {_fmt(r['reference_peak_mib'], '.0f')}" if "peak_mib" in r else "-")
        lines.append(f"| `{r['model']}` | {r['images_per_s']:.2f} | {_fmt(r.get('reference_images_per_s'), '.2f')} "
                     f"`{ref}` | {iqr} | {params} | {equal} | {mem} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags, check the pairs, time them, print the machine and the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated ablate presets")
    parser.add_argument("--batch", type=int, default=8, help="images per step (default 8)")
    parser.add_argument("--steps", type=int, default=10, help="timed rounds per model (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per side first (default 2)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: the CPU count)")
    parser.add_argument("--no-memory", action="store_true", help="skip the one profiled step per model")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall",
                        help="seconds from the wall clock (default) or the process's CPU time")
    parser.add_argument("--mixers", action="store_true",
                        help="also time the token mixers alone: the step split into mixers and the rest")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    for flag, low, high in (("batch", 1, 1024), ("steps", 1, 10000), ("warmup", 0, 1000), ("threads", 0, 1024)):
        if not low <= getattr(args, flag) <= high:
            parser.error(f"--{flag} must be in [{low}, {high}], got {getattr(args, flag)}")
    if not (32 <= args.image_size <= 1024 and args.image_size % 32 == 0):
        parser.error(f"--image-size must be a multiple of 32 in [32, 1024] (patch 4 and three 2x merges, "
                     f"or patch 16), got {args.image_size}")
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if not names:
        parser.error("--models names no preset")

    from ablate.errors import AblateError

    torch.set_num_threads(args.threads or cpu_count())
    before = machine()
    say = (lambda s: None) if args.json else (lambda s: print(s, file=sys.stderr, flush=True))
    try:
        size = {"img_size": args.image_size} if args.image_size != 224 else {}
        entries = build_entries(names, {n: size for n in names}, {t: size for t in TIMM_TWINS.values()})
    except AblateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for e in entries:
        if e.twin and e.reference is not None:
            ours, theirs = param_count(e.model), param_count(e.reference)
            say(f"{e.name} vs {e.reference_name}: {ours:,} vs {theirs:,} parameters "
                f"({'equal' if ours == theirs else 'NOT EQUAL'})")
    rows = measure(entries, batch=args.batch, image_size=args.image_size, steps=args.steps, warmup=args.warmup,
                   memory=not args.no_memory, mixers=args.mixers, clock=args.clock, progress=say)
    load_after = list(os.getloadavg())
    if args.json:
        print(json.dumps(dict(machine=before, load_after=load_after, clock=args.clock, batch=args.batch,
                              steps=args.steps, warmup=args.warmup, image_size=args.image_size, rows=rows), indent=1))
        return 0
    m = before
    print(f"machine: {m['cpu']}, {m['cores']} CPUs, {m['threads']} torch threads, torch {m['torch']}, "
          f"timm {m['timm']}, python {m['python']}")
    print(f"load average (1/5/15 min): {' '.join(f'{x:.2f}' for x in m['load'])} before, "
          f"{' '.join(f'{x:.2f}' for x in load_after)} after")
    print(f"training step: AdamW, cross-entropy, float32, batch {args.batch}, {args.image_size}px, {args.clock} clock, "
          f"{args.warmup} warm-up + {args.steps} paired rounds (order alternating); "
          f"ratio = ablate img/s / timm img/s (median of per-round ratios, IQR)"
          + ("; img/s per CPU-second of the process" if args.clock == "cpu" else ""))
    print(table(rows))
    for r in rows:
        if r.get("mixer_s") is not None:
            step, ref = statistics.median(r["step_s"]), statistics.median(r["reference_step_s"])
            theirs = r["reference_mixer_s"]
            print(f"{r['model']}: step {step:.3f} s = mixers {r['mixer_s']:.3f} s ({r['mixer_s'] / step:.0%}) + rest "
                  f"{step - r['mixer_s']:.3f} s" + ("" if theirs is None else
                  f"; timm {ref:.3f} s = mixers {theirs:.3f} s ({theirs / ref:.0%}) + rest {ref - theirs:.3f} s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
