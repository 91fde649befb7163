"""``benchmarks/softmax_vs_timm.py`` on small shapes (two rounds), so the script cannot rot: every pair
computes the same function as its timm twin, and every row has its figures. Speed is not asserted."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("softmax_vs_timm", ROOT / "benchmarks" / "softmax_vs_timm.py")
bench = importlib.util.module_from_spec(SPEC)
sys.modules.setdefault(SPEC.name, bench)
SPEC.loader.exec_module(bench)


def test_every_pair_is_the_same_function_in_value_and_gradient() -> None:
    for label, ours, theirs, x, hw in bench.mixer_pairs([(16, 2, 14)]):
        torch.testing.assert_close(ours(x, hw), theirs(x, hw), rtol=1e-5, atol=1e-5, msg=label)
        (g_ours,) = torch.autograd.grad(ours(x, hw).square().sum(), x)
        (g_theirs,) = torch.autograd.grad(theirs(x, hw).square().sum(), x)
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-4, atol=1e-5, msg=label)


def test_the_script_prints_every_row(capsys) -> None:  # noqa: ANN001
    threads = torch.get_num_threads()
    try:
        bench.main(["--rounds", "2", "--threads", "1", "--shapes", "16:2:14", "--lengths", "25,65", "--json"])
    finally:
        torch.set_num_threads(threads)
    result = json.loads(capsys.readouterr().out)
    assert [r["pair"] for r in result["mixers"]] == ["swin w7 s0 d16 h2 14x14", "swin w7 s3 d16 h2 14x14",
                                                     "vit d16 h2 1+14x14"]
    for row in result["mixers"]:
        assert row["max_abs_diff"] < 1e-5
        assert all(math.isfinite(row[k]) and row[k] > 0 for k in ("fwd_bwd_ratio", "fwd_ratio", "mem_ratio"))
    assert [(r["tokens"], r["learned_bias"], r["chosen"]) for r in result["kernels"]] == [
        (25, False, "packed"), (25, True, "packed"), (65, False, "sdpa"), (65, True, "packed")]
