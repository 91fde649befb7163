"""``ablate bench attention``: ratios, growth exponents, the JSON contract, the stateful
(LaViT-style) path, infeasible grids, the CPU peak-memory method and bad input."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from ablate.attention import MixerOptions, TokenMixer, register_attention
from ablate.bench import BASELINE, bench_attention, growth_exponent, make_config, peak_cpu_memory
from ablate.errors import ConfigError, Infeasible
from cli_helpers import run_cli

TINY = dict(dim=8, heads=2, repeats=1, warmup=0)
ROW_KEYS = {"family", "options", "grid", "tokens", "fwd_ms", "fwdbwd_ms", "peak_mib", "gflops", "fwd_ratio",
            "fwdbwd_ratio", "mem_ratio", "note"}




# --------------------------------------------------------------------------- pure functions

EXPONENTS = [
    ("quadratic", [196, 784, 3136], [3 * n ** 2 for n in (196, 784, 3136)], 2.0),
    ("linear", [196, 784, 3136], [0.5 * n for n in (196, 784, 3136)], 1.0),
    ("constant", [49, 196], [7.0, 7.0], 0.0),
    ("n log n", [4, 16], [4 * math.log(4), 16 * math.log(16)], 1.5),
    ("failed grid skipped", [196, 784, 3136], [196.0, None, 3136.0], 1.0),
    ("non-positive skipped", [196, 784, 3136], [0.0, 784.0, 3136.0], 1.0),
    ("one point", [196, 784], [1.0, None], None),
    ("no points", [], [], None),
]


@pytest.mark.parametrize("case,tokens,values,expected", EXPONENTS, ids=[e[0] for e in EXPONENTS])
def test_growth_exponent_from_a_table(case, tokens, values, expected):
    got = growth_exponent(tokens, values)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_growth_exponent_is_the_least_squares_slope():
    # log-log points (0, 0), (1, 1), (2, 3): means (1, 4/3), slope = (1 * 4/3 + 1 * 5/3) / 2
    tokens = [1, math.e, math.e ** 2]
    values = [1, math.e, math.e ** 3]
    assert growth_exponent(tokens, values) == pytest.approx(1.5)


def test_config_adds_the_baseline_and_sorts_grids():
    cfg = make_config("focal,focal", "28,14", **TINY)
    assert cfg.families == (BASELINE, "focal") and cfg.resolutions == (14, 28)
    assert make_config(None, [7]).families[:3] == (BASELINE, "softmax+bias", "softmax-window")


# --------------------------------------------------------------------------- peak memory (CPU)


def test_peak_cpu_memory_follows_allocations_and_frees():
    mib = 2 ** 20
    before = torch.empty(4 * mib, dtype=torch.uint8)

    def pattern():
        nonlocal before
        a = torch.empty(mib, dtype=torch.uint8)  # 1 MiB
        b = torch.empty(2 * mib, dtype=torch.uint8)  # 3 MiB: the peak
        del a  # 2 MiB
        c = torch.empty(mib // 2, dtype=torch.uint8)  # 2.5 MiB
        del b, c
        before = None  # allocated before: its free is not reported, the figure stays >= 0

    assert peak_cpu_memory(pattern) == 3 * mib


def test_peak_cpu_memory_ignores_frees_of_blocks_from_an_earlier_session():
    mib = 2 ** 20
    kept = []
    peak_cpu_memory(lambda: kept.append(torch.empty(4 * mib, dtype=torch.uint8)))  # seen by the profiler

    def later():
        kept.clear()  # reported as a free of 4 MiB: not part of this call's balance
        torch.empty(mib, dtype=torch.uint8)

    assert peak_cpu_memory(later) == mib


# --------------------------------------------------------------------------- the run


def test_json_contract_and_baseline_ratios_are_one(capsys):
    threads = torch.get_num_threads()
    code, out, err = run_cli(capsys, "bench", "attention", "--families", "softmax-window", "--resolutions", "4,8",
                          "--dim", "8", "--heads", "2", "--repeats", "2", "--warmup", "1", "--threads", "1",
                          "--format", "json")
    assert code == 0, err
    obj = json.loads(out)
    assert {"device", "dim", "heads", "batch", "torch", "threads", "results", "exponents"} <= set(obj)
    assert obj["device"] == "cpu" and (obj["dim"], obj["heads"], obj["batch"]) == (8, 2, 1)
    assert obj["torch"] == torch.__version__ and obj["threads"] == 1
    assert torch.get_num_threads() == threads  # restored after the run
    rows = obj["results"]
    assert [(r["family"], r["grid"]) for r in rows] == [("softmax", 4), ("softmax", 8),
                                                        ("softmax-window", 4), ("softmax-window", 8)]
    for r in rows:
        assert set(r) == ROW_KEYS
        assert r["tokens"] == r["grid"] ** 2
        assert all(isinstance(r[k], float) and r[k] > 0 for k in ("fwd_ms", "fwdbwd_ms", "peak_mib", "gflops"))
    for r in rows[:2]:
        assert (r["fwd_ratio"], r["fwdbwd_ratio"], r["mem_ratio"]) == (1.0, 1.0, 1.0)
        assert r["options"]["window_size"] is None and r["note"] == ""
    assert rows[2]["options"]["window_size"] == 7 and "window_size=7->4" in rows[2]["note"]
    assert rows[3]["fwd_ratio"] == rows[3]["fwd_ms"] / rows[1]["fwd_ms"]
    assert set(obj["exponents"]) == {"softmax", "softmax-window"}
    assert {"time", "flops"} <= set(obj["exponents"]["softmax"])
    # progress goes to stderr, one line per measurement
    assert err.count("] softmax") == 4 and "[4/4]" in err


def test_table_output(capsys):
    code, out, err = run_cli(capsys, "bench", "attention", "--families", "softmax", "--resolutions", "4,6",
                          "--dim", "8", "--heads", "2", "--repeats", "1", "--warmup", "0")
    assert code == 0, err
    assert "fwd+bwd ms" in out and "peak MiB" in out and "4x4" in out and "6x6" in out
    assert "growth exponent" in out and "softmax: time" in out


# --------------------------------------------------------------------------- toy families

CALLS: list[tuple[str, bool]] = []


@dataclasses.dataclass(frozen=True)
class ToyStateOptions(MixerOptions):
    va_layers: int = 3


class ToyStateful(TokenMixer):
    """First layer stores softmax(x x^T); a later layer reuses it: out = A @ v(x)."""

    Options = ToyStateOptions
    stateful = True

    def __init__(self, dim, num_heads, *, input_resolution=None, context=None, **options):
        super().__init__(dim, num_heads, input_resolution=input_resolution, context=context, **options)
        self.is_first = context is None or context.index < self.opts.va_layers
        self.v = nn.Linear(dim, dim, bias=False)

    def forward(self, x, hw, state):
        CALLS.append(("first" if self.is_first else "second", self.training))
        if self.is_first:
            state["toy_attn"] = (x @ x.transpose(1, 2)).softmax(-1)  # B, N, N
            state.setdefault("seen", []).append("first")
            return self.v(x)
        attn = state["toy_attn"]  # KeyError if the first layer did not run
        state["seen"].append("second")  # grows without bound unless each call gets a copy
        assert state["seen"] == ["first", "second"], state["seen"]
        state["aux_losses"].append(1e-3 * self.v.weight.pow(2).sum())
        return attn @ self.v(x)  # B, N, C


@dataclasses.dataclass(frozen=True)
class ToyWindowOptions(MixerOptions):
    window: int = 7
    flag: bool = True


class ToyWindowed(TokenMixer):
    """Infeasible on maps smaller than 3x3 (whatever the window) and for windows larger than the map."""

    Options = ToyWindowOptions

    def __init__(self, dim, num_heads, **kwargs):
        super().__init__(dim, num_heads, **kwargs)
        self.proj = nn.Linear(dim, dim)

    @classmethod
    def check(cls, dim, num_heads, hw, opts):
        super().check(dim, num_heads, hw, opts)
        if hw is not None and min(hw) < 3:
            raise Infeasible(f"the map must be at least 3x3, got {hw=}")
        if hw is not None and opts.window > min(hw):
            raise Infeasible(f"window larger than the map, got window={opts.window} for {hw=}")

    def forward(self, x, hw):
        return self.proj(x)


@pytest.fixture
def toys(monkeypatch: pytest.MonkeyPatch):
    from ablate.attention import _registry

    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    register_attention("toystate")(ToyStateful)
    register_attention("toywin")(ToyWindowed)
    CALLS.clear()
    yield
    CALLS.clear()


def test_stateful_family_times_its_second_layer_on_the_first_ones_state(toys):
    cfg = make_config("toystate", "4,8", batch=2, **TINY)
    rows = bench_attention(cfg)["results"]
    toy = [r for r in rows if r["family"] != BASELINE]
    assert [r["family"] for r in toy] == ["toystate (LA layer)"] * 2
    for r in toy:
        assert r["options"] == {"va_layers": 1} and r["note"] == ""
        assert all(r[k] is not None for k in ("fwd_ms", "fwdbwd_ms", "peak_mib", "gflops", "fwd_ratio"))
        # FLOPs of the second layer only: v(x) (B*N*C*C) and A @ v (B*N*N*C); not the first's x x^T
        n, c, b = r["tokens"], 8, 2
        assert round(r["gflops"] * 1e9) == b * n * c * c + b * n * n * c
    # the first layer ran once per grid and mode (eval for fwd/FLOPs, train for fwd+bwd), untimed
    assert [c for c in CALLS if c[0] == "first"] == [("first", False), ("first", True)] * 2
    assert sum(1 for c in CALLS if c[0] == "second") > 4


def test_infeasible_default_takes_the_nearest_feasible_setting_or_reports_the_reason(toys):
    result = bench_attention(make_config("toywin", "2,4,8", **TINY))
    toy = {r["grid"]: r for r in result["results"] if r["family"] == "toywin"}
    assert toy[2]["note"].startswith("infeasible: the map must be at least 3x3")
    assert all(toy[2][k] is None for k in ("fwd_ms", "fwdbwd_ms", "peak_mib", "gflops", "fwd_ratio"))
    assert toy[4]["options"]["window"] == 4 and toy[4]["note"].startswith("window=7->4 (default infeasible at 4x4")
    assert toy[8]["options"]["window"] == 7 and toy[8]["note"] == ""
    assert toy[4]["fwd_ms"] is not None and toy[8]["fwd_ratio"] is not None
    assert result["exponents"]["toywin"]["flops"] == pytest.approx(1.0)  # from the two feasible grids


# --------------------------------------------------------------------------- bad input

BAD = [
    ("unknown family", ["--families", "softmx"], ["--families", "'softmx'", "did you mean 'softmax'"]),
    ("resolution not an int", ["--resolutions", "14,x"], ["--resolutions", "'x'"]),
    ("resolution zero", ["--resolutions", "0"], ["--resolutions", "from 1 to 1024"]),
    ("resolution huge", ["--resolutions", "14,100000"], ["--resolutions", "from 1 to 1024", "100000"]),
    ("dim huge", ["--dim", "100000000"], ["--dim", "8192"]),
    ("heads not dividing dim", ["--dim", "10", "--heads", "3"], ["--heads must divide --dim", "10", "3"]),
    ("no repeats", ["--repeats", "0"], ["--repeats", "greater than or equal to 1"]),
    ("no threads", ["--threads", "0"], ["--threads", "greater than or equal to 1"]),
    ("cuda without cuda", ["--device", "cuda"], ["--device cuda", "no CUDA device"]),
]


@pytest.mark.parametrize("case,args,needles", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_and_exit_2(capsys, monkeypatch, case, args, needles):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, out, err = run_cli(capsys, "bench", "attention", *args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and out == "", err
    assert all(n in lines[0] for n in needles), lines[0]


def test_make_config_raises_config_error():
    with pytest.raises(ConfigError, match="did you mean 'focal'"):
        make_config("focl")
