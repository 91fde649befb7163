"""What ``train.compile: true`` gains and costs on the CPU, per attention family.

For each family's tiny preset, shrunk to a realistic proxy size (embed_dim 64, 64 px images,
batch 32, depths [1, 1, 2, 1] or two blocks), the script times one training step (forward,
cross-entropy plus the model's aux loss, backward, AdamW step) eagerly and through
``ablate.train.classify.compile_model`` (``torch.compile``, inductor), as
``train_classifier`` runs it. It prints the medians after warm-up, their ratio, and the
compile time (the first compiled steps minus the steady step time) separately, with the
machine: CPU count, torch threads, torch version, load average before and after. Torch runs
one thread by default, as a Ray trial with ``resources.cpu: 1`` does (and so that other
load on a shared machine does not stall OpenMP's spinning threads).

Inductor's cache is a fresh temporary folder by default, so the compile time is what the
first trial of a new architecture pays (``--warm-cache`` keeps torch's own cache).

    .venv/bin/python benchmarks/compile_cpu.py                       # every family, about 10 min on 2 CPUs
    .venv/bin/python benchmarks/compile_cpu.py --presets deit_tiny swin_tiny --steps 5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

#: Each family's tiny preset at the proxy size (64 px, embed_dim 64, small depths).
PROXY: dict[str, dict[str, Any]] = {
    "deit_tiny": dict(img_size=64, patch_size=8, dims=[64], depths=[4], num_heads=2),
    "swin_tiny": dict(img_size=64, embed_dim=64, depths=[1, 1, 2, 1], num_heads=2, window_size=4, shift_size=2),
    "pvt_tiny": dict(img_size=64, dims=[64, 128, 256, 512], depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8]),
    "focal_tiny": dict(img_size=64, embed_dim=64, depths=[1, 1, 2, 1], num_heads=2, window_size=4,
                       focal_window=[3, 3, 3, 1]),
    "flatten_swin_tiny": dict(img_size=64, embed_dim=64, depths=[1, 1, 2, 1], num_heads=2, window_size=[8, 8, 4, 2],
                              shift_size=[0, 0, 2, 1]),
    "flatten_pvt_tiny": dict(img_size=64, dims=[64, 128, 256, 512], depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8]),
    "biformer_tiny": dict(img_size=64, dims=[64, 128, 256, 512], depths=[1, 1, 2, 1], num_heads=[2, 4, 8, 16],
                          n_win=2, topk=[1, 2, 4, -2]),
    "lavit_swin_tiny": dict(img_size=64, embed_dim=64, depths=[1, 1, 2, 1], num_heads=2, va_layers=[1, 1, 1, 1]),
}


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=list(PROXY), choices=list(PROXY), metavar="PRESET",
                   help=f"presets to time (default all: {', '.join(PROXY)})")
    p.add_argument("--batch", type=int, default=32, help="images per step (default 32)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per mode after warm-up (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per mode first (default 2; compiled: "
                   "the first of them compiles)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: a trial with "
                   "resources.cpu 1, which Ray runs with OMP_NUM_THREADS=1; 0: torch's choice)")
    p.add_argument("--warm-cache", action="store_true", help="keep inductor's cache (compile time then "
                   "measures a cache hit)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p.parse_args(argv)


def _time_steps(model: Any, forward: Any, images: Any, labels: Any, warmup: int, steps: int
                ) -> tuple[list[float], list[float]]:
    """Seconds of each warm-up step and of each timed step of one training mode."""
    import torch
    from torch import nn

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> float:
        start = time.perf_counter()
        loss = nn.functional.cross_entropy(forward(images), labels)
        aux = getattr(model, "aux_loss", None)  # LaViT's diagonality loss, as train_classifier adds it
        if aux is not None:
            loss = loss + aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    return [step() for _ in range(warmup)], [step() for _ in range(steps)]


def measure(name: str, batch: int, warmup: int, steps: int) -> dict[str, Any]:
    """Eager and compiled step times of preset ``name`` at its :data:`PROXY` size."""
    import torch

    from ablate.models import create_preset, preset_arch
    from ablate.train.classify import compile_model

    kw = PROXY[name]
    row: dict[str, Any] = {"preset": name, "attention": preset_arch(name).get("attention", "softmax")}
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, kw["img_size"], kw["img_size"], generator=gen)  # B, 3, H, W
    labels = torch.randint(0, 10, (batch,), generator=gen)  # B
    for mode in ("eager", "compiled"):
        torch.compiler.reset()  # each preset compiles from scratch (compile_model resets too)
        torch.manual_seed(0)
        model = create_preset(name, num_classes=10, drop_path_rate=0.0, **kw).train()
        row["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
        forward = compile_model(model, "cpu") if mode == "compiled" else model
        warm, timed = _time_steps(model, forward, images, labels, warmup, steps)
        row[f"{mode}_ms"] = 1e3 * statistics.median(timed)
        row[f"{mode}_first_s"] = warm[0] if warm else timed[0]
    row["speedup"] = row["eager_ms"] / row["compiled_ms"]
    # What compiling costs once: the first compiled step minus a steady one.
    row["compile_s"] = row["compiled_first_s"] - row["compiled_ms"] / 1e3
    return row


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if not args.warm_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="ablate-compile-bench-")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    rows = []
    for name in args.presets:
        try:
            rows.append(measure(name, args.batch, args.warmup, args.steps))
        except Exception as err:  # noqa: BLE001 - a family that fails to compile is a row, not the end
            rows.append({"preset": name, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"})
        print(f"  {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    load_after = os.getloadavg()[0]
    machine = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
               "load_before": load_before, "load_after": load_after, "batch": args.batch, "steps": args.steps,
               "warmup": args.warmup, "cold_cache": not args.warm_cache}
    if args.json:
        print(json.dumps({"machine": machine, "rows": rows}))
        return 0
    print(f"machine: {machine['cpus']} CPUs, {machine['torch_threads']} torch threads, torch {machine['torch']}, "
          f"load average {load_before:.2f} before, {load_after:.2f} after (1 min)")
    print(f"batch {args.batch}, median of {args.steps} train steps after {args.warmup} warm-up steps; inductor cache "
          f"{'warm' if args.warm_cache else 'cold (fresh folder)'}")
    head = f"{'preset':<18} {'attention':<22} {'params M':>8} {'eager ms':>9} {'compiled ms':>11} {'speedup':>7} " \
           f"{'compile s':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['preset']:<18} failed: {r['error']}")
            continue
        att = r["attention"] if isinstance(r["attention"], str) else "+".join(dict.fromkeys(r["attention"]))
        print(f"{r['preset']:<18} {att:<22} {r['params_m']:>8.2f} {r['eager_ms']:>9.1f} {r['compiled_ms']:>11.1f} "
              f"{r['speedup']:>6.2f}x {r['compile_s']:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
