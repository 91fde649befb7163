"""The ``softmax`` mixer against timm's Swin window attention and ViT attention, and its kernel choice.

Part 1 (issue 18, item 1): ablate's ``softmax`` mixer against what can be installed:

* Swin: timm's ``WindowAttention`` wrapped the way Swin's block uses it (cyclic shift with
  ``torch.roll``, timm's ``window_partition``/``window_reverse``, the shift mask built once
  for the map), against ``create_mixer("softmax", window_size=7, shift_size=0|3)``;
* ViT: timm's ``vision_transformer.Attention`` against ``create_mixer("softmax",
  rel_pos_bias=False)`` on DeiT's 197 tokens (a class token and 14x14).

Each pair gets the same weights (checked: the largest output difference is printed). One
training step is forward + ``sum().backward()``; steps are paired and interleaved (order
alternating per round), and the ratio is the median over rounds of ``ablate / timm`` seconds
(below 1: ablate is faster). Peak memory is the CPU allocator's peak during one step
(``ablate.bench.measure.peak_cpu_memory``), ablate over timm.

Part 2 (issue 18, item 2): the two kernels ``ablate.attention._fast.use_packed`` chooses
between, the packed-qkv kernel and ``scaled_dot_product_attention``, timed the same way over
sequence lengths, with and without a learned bias. The rule in ``use_packed`` comes from this
table; rerun it on another machine to check the rule holds there.

    .venv/bin/python benchmarks/softmax_vs_timm.py                  # 2 threads, 20 rounds
    .venv/bin/python benchmarks/softmax_vs_timm.py --rounds 40 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

Step = Callable[[], None]

#: (dim, heads, map side) of the issue: two small shapes and Swin-T's stage 1.
SHAPES: tuple[tuple[int, int, int], ...] = ((64, 2, 28), (64, 2, 56), (96, 3, 56))


class TimmSwinAttention(nn.Module):
    """timm's ``WindowAttention`` inside Swin's shift / partition / merge, as the block calls it."""

    def __init__(self, dim: int, heads: int, side: int, window: int, shift: int) -> None:
        super().__init__()
        from timm.models.swin_transformer import WindowAttention

        from ablate.attention.softmax import shifted_window_mask

        self.attn = WindowAttention(dim, heads, window_size=window)
        self.window, self.shift = window, shift
        mask = shifted_window_mask((side, side), window, shift) if shift else None
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        from timm.models.swin_transformer import window_partition, window_reverse

        b, n, c = x.shape
        ws, s = self.window, self.shift
        x = x.view(b, hw[0], hw[1], c)
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        windows = window_partition(x, (ws, ws)).view(-1, ws * ws, c)  # B*nW, L, C
        out = self.attn(windows, mask=self.mask).view(-1, ws, ws, c)
        x = window_reverse(out, (ws, ws), hw[0], hw[1])  # B, H, W, C
        if s:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        return x.reshape(b, n, c)


class TimmViTAttention(nn.Module):
    """timm's ViT ``Attention`` behind the mixer interface (the map size is not needed)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        from timm.models.vision_transformer import Attention

        self.attn = Attention(dim, heads, qkv_bias=True)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        return self.attn(x)


def mixer_pairs(shapes: Sequence[tuple[int, int, int]]) -> list[tuple[str, nn.Module, nn.Module, torch.Tensor,
                                                                       tuple[int, int]]]:
    """(label, ablate mixer, timm module, input, hw) with the timm weights copied into ablate's."""
    from ablate.attention import create_mixer

    pairs = []
    for dim, heads, side in shapes:
        hw = (side, side)
        for shift in (0, 3):
            torch.manual_seed(0)
            theirs = TimmSwinAttention(dim, heads, side, 7, shift)
            ours = create_mixer("softmax", dim, heads, input_resolution=hw, window_size=7, shift_size=shift)
            state = {k: v for k, v in theirs.attn.state_dict().items() if k != "relative_position_index"}
            ours.load_state_dict(state)
            x = torch.randn(2, side * side, dim, requires_grad=True)
            pairs.append((f"swin w7 s{shift} d{dim} h{heads} {side}x{side}", ours, theirs, x, hw))
    for dim, heads in sorted({(d, h) for d, h, _ in shapes}):
        torch.manual_seed(0)
        theirs = TimmViTAttention(dim, heads)
        ours = create_mixer("softmax", dim, heads, input_resolution=(14, 14), rel_pos_bias=False)
        ours.load_state_dict(theirs.attn.state_dict(), strict=False)
        x = torch.randn(2, 197, dim, requires_grad=True)
        pairs.append((f"vit d{dim} h{heads} 1+14x14", ours, theirs, x, (14, 14)))
    return pairs


def train_step(module: nn.Module, x: torch.Tensor, hw: tuple[int, int]) -> Step:
    """One forward + backward of ``module`` on ``x``, leaving no gradients behind."""
    def step() -> None:
        module(x, hw).sum().backward()
        x.grad = None
        module.zero_grad(set_to_none=True)
    return step


def forward_step(module: nn.Module, x: torch.Tensor, hw: tuple[int, int]) -> Step:
    """One forward pass without autograd."""
    def step() -> None:
        with torch.no_grad():
            module(x, hw)
    return step


def paired_ratio(ours: Step, theirs: Step, rounds: int, warmup: int = 3) -> tuple[float, float, float]:
    """Median over rounds of ours/theirs seconds (order alternating), and each side's median ms."""
    for _ in range(warmup):
        ours()
        theirs()
    t_ours, t_theirs, ratios = [], [], []
    for i in range(rounds):
        order = [(t_ours, ours), (t_theirs, theirs)]
        for times, fn in (order if i % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        ratios.append(t_ours[-1] / t_theirs[-1])
    return statistics.median(ratios), 1e3 * statistics.median(t_ours), 1e3 * statistics.median(t_theirs)


def compare_mixers(shapes: Sequence[tuple[int, int, int]], rounds: int) -> list[dict[str, Any]]:
    """Part 1: one row per pair."""
    from ablate.bench.measure import peak_cpu_memory

    rows = []
    for label, ours, theirs, x, hw in mixer_pairs(shapes):
        with torch.no_grad():
            diff = (ours(x, hw) - theirs(x, hw)).abs().max().item()
        fb, fb_ours, fb_theirs = paired_ratio(train_step(ours, x, hw), train_step(theirs, x, hw), rounds)
        fw, _, _ = paired_ratio(forward_step(ours, x, hw), forward_step(theirs, x, hw), rounds)
        mem = peak_cpu_memory(train_step(ours, x, hw)) / max(1, peak_cpu_memory(train_step(theirs, x, hw)))
        rows.append({"pair": label, "max_abs_diff": diff, "fwd_bwd_ratio": fb, "fwd_ratio": fw, "mem_ratio": mem,
                     "ablate_ms": fb_ours, "timm_ms": fb_theirs})
    return rows


def compare_kernels(rounds: int, lengths: Sequence[int] = (16, 25, 36, 49, 64, 144, 197, 785),
                    groups: int = 2, heads: int = 2, head_dim: int = 32) -> list[dict[str, Any]]:
    """Part 2: packed kernel over SDPA, fwd+bwd, per length, with and without a learned bias."""
    from ablate.attention._fast import packed_attention, sdpa_attention, use_packed
    from ablate.bench.measure import peak_cpu_memory

    scale = head_dim ** -0.5

    def sdpa(qkv: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return sdpa_attention(qkv, bias, None, heads, scale)

    def packed(qkv: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return packed_attention(qkv, bias, None, heads, scale)

    rows = []
    for n in lengths:
        # Short sequences are windows: as many as a 56x56 map holds; long ones are whole maps.
        g = groups * 3136 // n if n <= 64 else groups
        for learned in (False, True):
            base = torch.randn(g, n, 3 * heads * head_dim)
            bias = torch.randn(heads, n, n, requires_grad=True) if learned else None
            grad = torch.randn(g, n, heads * head_dim)  # a dense output gradient, as in training

            def step(fn: Callable[..., torch.Tensor]) -> Step:
                def run() -> None:
                    fn(base.clone().requires_grad_(), bias).backward(grad)
                    if bias is not None:
                        bias.grad = None
                return run

            def forward(fn: Callable[..., torch.Tensor]) -> Step:
                def run() -> None:
                    with torch.no_grad():
                        fn(base, bias)
                return run

            ratio, ms_packed, ms_sdpa = paired_ratio(step(packed), step(sdpa), rounds)
            fwd_ratio, _, _ = paired_ratio(forward(packed), forward(sdpa), rounds)
            mem = peak_cpu_memory(step(packed)) / max(1, peak_cpu_memory(step(sdpa)))
            rows.append({"tokens": n, "windows": base.shape[0], "learned_bias": learned,
                         "packed_over_sdpa": ratio, "packed_over_sdpa_fwd": fwd_ratio, "packed_ms": ms_packed,
                         "sdpa_ms": ms_sdpa, "mem_ratio": mem,
                         "chosen": "packed" if use_packed(torch.device("cpu"), n, learned) else "sdpa"})
    return rows


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import timm

    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), model)
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "timm": timm.__version__, "load_1min": os.getloadavg()[0]}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="paired rounds per row (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--shapes", default=",".join(f"{d}:{h}:{s}" for d, h, s in SHAPES),
                        help="dim:heads:side,... for part 1")
    parser.add_argument("--lengths", default="16,25,36,49,64,144,197,785", help="sequence lengths for part 2")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shapes = [tuple(int(v) for v in s.split(":")) for s in args.shapes.split(",")]
    result = {"machine": machine(),
              "mixers": compare_mixers(shapes, args.rounds),  # type: ignore[arg-type]
              "kernels": compare_kernels(args.rounds, [int(v) for v in args.lengths.split(",")])}
    result["machine"]["load_1min_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(result))
        return
    m = result["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads, torch {m['torch']}, timm {m['timm']}, "
          f"load {m['load_1min']:.2f} before, {m['load_1min_after']:.2f} after")
    print("\nablate softmax / timm (time and peak memory of one step; < 1 is ablate faster or smaller)")
    print(f"{'pair':34s} {'max|diff|':>9s} {'fwd+bwd':>8s} {'fwd':>6s} {'memory':>7s} {'ablate ms':>10s} {'timm ms':>8s}")
    for r in result["mixers"]:
        print(f"{r['pair']:34s} {r['max_abs_diff']:9.1e} {r['fwd_bwd_ratio']:8.3f} {r['fwd_ratio']:6.3f} "
              f"{r['mem_ratio']:7.3f} {r['ablate_ms']:10.2f} {r['timm_ms']:8.2f}")
    print("\npacked kernel / SDPA (fwd+bwd time, forward-only time, peak memory of fwd+bwd; the rule's choice "
          "for training in the last column, SDPA without gradients)")
    print(f"{'tokens':>6s} {'windows':>7s} {'bias':>5s} {'fwd+bwd':>7s} {'fwd':>6s} {'memory':>7s} {'packed ms':>10s} "
          f"{'sdpa ms':>8s}  chosen")
    for r in result["kernels"]:
        print(f"{r['tokens']:6d} {r['windows']:7d} {'yes' if r['learned_bias'] else 'no':>5s} "
              f"{r['packed_over_sdpa']:7.2f} {r['packed_over_sdpa_fwd']:6.2f} {r['mem_ratio']:7.2f} "
              f"{r['packed_ms']:10.2f} {r['sdpa_ms']:8.2f}  {r['chosen']}")


if __name__ == "__main__":
    main()
