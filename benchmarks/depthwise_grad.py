"""The depthwise conv's weight gradient: batch-folded conv or ``conv2d_weight``, by shape.

``ablate.attention._fast.DepthwiseConv`` (FLatten's rank-restoration conv) picks one of two
ways for its weight gradient with :func:`ablate.attention._fast.fold_weight_grad`. This
times a whole fwd+bwd of the conv both ways over maps from Swin's 7x7 windows to a 56x56
map, and autograd's own conv for reference, and prints which way the rule picks.

    .venv/bin/python benchmarks/depthwise_grad.py [--threads 2] [--reps 40]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import ablate.attention._fast as fast

SHAPES = [(7, 16), (7, 32), (7, 64), (7, 128), (7, 512), (14, 8), (14, 32), (14, 128),
          (28, 2), (28, 8), (28, 16), (28, 32), (56, 1), (56, 2), (56, 4), (56, 8)]


def _median_us(fn: Callable[[], None], reps: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--channels", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    c, k = args.channels, 5
    print(f"{'map':>5} {'maps':>5} {'folded us':>10} {'conv2d_weight us':>17} {'autograd us':>12} "
          f"{'folded/other':>13}  rule picks")
    for side, b in SHAPES:
        v = torch.randn(b, side, side, c).permute(0, 3, 1, 2).requires_grad_(True)  # channels-last, as FLatten
        w = torch.randn(c, 1, k, k, requires_grad=True)
        bias = torch.randn(c, requires_grad=True)
        g = torch.randn(b, side, side, c).permute(0, 3, 1, 2)
        rule = fast.fold_weight_grad(b, c, side, side)
        saved = fast.FOLD_MAX_CHANNELS
        try:
            fast.FOLD_MAX_CHANNELS = 1 << 30
            folded = _median_us(lambda: fast.depthwise_conv(v, w, bias).backward(g), args.reps)
            fast.FOLD_MAX_CHANNELS = 0
            other = _median_us(lambda: fast.depthwise_conv(v, w, bias).backward(g), args.reps)
        finally:
            fast.FOLD_MAX_CHANNELS = saved
        plain = _median_us(lambda: F.conv2d(v, w, bias, padding=k // 2, groups=c).backward(g), args.reps)
        print(f"{side:>3}^2 {b:>5} {folded:>10.0f} {other:>17.0f} {plain:>12.0f} {folded / other:>13.2f}  "
              f"{'folded' if rule else 'conv2d_weight'}", flush=True)


if __name__ == "__main__":
    main()
