"""Per-configuration aggregates: a study with repeats, read back and reported in every format.

The study is written with ``optuna.trial.create_trial`` in the layout the runner stores
(grid values as one-point distributions, ``config_key``/``repeat``/``seed`` attributes),
with values chosen so that every expected number is worked out by hand below or by
``scipy.stats.ttest_ind``, not by the code under test.

    config  window  top-1 runs            mean   s²     GFLOPs
    A       2       80, 82, 84            82     4      0.02   the baseline (first grid cell)
    B       4       85, 86, 90            87     7      0.05   on the front with A
    C       8       81, 83, 85            83     4      0.09   B is better on the means, not beyond the noise
    D       1       70, 70.5, 71          70.5   0.25   0.03   A is better beyond the noise

plus a PRUNED run of C that would top everything and a FAIL run of D (neither counts).
"""

from __future__ import annotations

import io
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial
from scipy import stats as sps

from ablate.results import stats
from ablate.study import study_from_dict
from ablate.results.report import ablation_table, config_rows, configs_csv, noise_text, render_report
from ablate.results import (StudyResults, aggregate, config_keys, front_and_indistinguishable, load_results,
                            significantly_dominated)
from ablate.run import open_optuna_study
from cli_helpers import run_cli

optuna.logging.set_verbosity(optuna.logging.WARNING)

RUNS = {"A": (2, [80.0, 82.0, 84.0], 0.02), "B": (4, [85.0, 86.0, 90.0], 0.05),
        "C": (8, [81.0, 83.0, 85.0], 0.09), "D": (1, [70.0, 70.5, 71.0], 0.03)}
KEYS = {name: f"{i + 10:x}" * 6 for i, name in enumerate(RUNS)}  # 12 hex digits, as the runner's
T2 = sps.t.ppf(0.975, 2)  # 4.3027: two degrees of freedom


def _spec(url: str, repeats: int = 3) -> dict:
    return {
        "name": "agg", "task": "classify", "description": "window size, three seeds",
        "fixed": {"attention": "softmax", "depths": [1, 1], "embed_dim": 16, "num_heads": 2},
        "grid": {"window_size": [2, 4, 8, 1]}, "repeats": repeats,
        "objectives": [{"name": "top1", "direction": "maximize"}, {"name": "gflops", "direction": "minimize"}],
        "data": {"name": "digits", "image_size": 32}, "train": {"epochs": 3, "batch_size": 64, "seed": 5},
        "storage": url,
    }


def _add(ostudy, study, w, state, values=None, *, key=None, repeat=0, **attrs):
    cand = study.candidate({"window_size": w})
    user_attrs = {"candidate": cand, "arch": dict(cand, num_classes=10), "epochs_done": 3, **attrs}
    if key is not None:
        user_attrs.update(config_key=key, repeat=repeat, seed=5 + repeat)
    ostudy.add_trial(create_trial(state=state, params={"window_size": w},
                                  distributions={"window_size": IntDistribution(w, w)}, values=values,
                                  user_attrs=user_attrs))


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("agg") / "agg.db"
    study = study_from_dict(_spec(f"sqlite:///{path}"), check=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ostudy = open_optuna_study(study)
    for r in range(3):  # the runner's order is any order: interleave the configurations
        for name, (w, tops, gflops) in RUNS.items():
            _add(ostudy, study, w, TrialState.COMPLETE, [tops[r], gflops], key=KEYS[name], repeat=r,
                 gflops=gflops, params_m=0.1)
    _add(ostudy, study, 8, TrialState.PRUNED, key=KEYS["C"], repeat=3, gflops=0.0001, epochs_done=1,
         curve=[{"epoch": 1, "top1": 99.0}])                                                       # 12
    _add(ostudy, study, 1, TrialState.FAIL, key=KEYS["D"], repeat=3, error="RuntimeError: boom")  # 13
    return path


@pytest.fixture(scope="module")
def results(db):
    return load_results(f"sqlite:///{db}")


def _by_name(results):
    return {name: results.aggregates.config(KEYS[name]) for name in RUNS}


def test_configs_are_mean_std_and_t_interval_of_the_complete_runs(results):
    assert [c["key"] for c in results.configs] == [KEYS[n] for n in "ABCD"]  # by first trial
    configs = _by_name(results)
    for name, (w, tops, gflops) in RUNS.items():
        c = configs[name]
        assert c["params"] == {"window_size": w} and c["n"] == 3  # PRUNED and FAIL runs do not count
        assert c["trials"] == [i * 4 + "ABCD".index(name) for i in range(3)]
        mean, s = sum(tops) / 3, math.sqrt(sum((t - sum(tops) / 3) ** 2 for t in tops) / 2)
        assert c["mean"]["top1"] == pytest.approx(mean) and c["std"]["top1"] == pytest.approx(s)
        half = T2 * s / math.sqrt(3)
        assert c["ci95"]["top1"] == pytest.approx([mean - half, mean + half])
        # a cost does not depend on the seed: std 0, a point interval
        assert (c["mean"]["gflops"], c["std"]["gflops"], c["ci95"]["gflops"]) == (gflops, 0.0, [gflops, gflops])
    assert configs["A"]["ci95"]["top1"] == pytest.approx([82 - 4.9683, 82 + 4.9683], abs=1e-3)  # by hand


def test_front_baseline_and_differences(results):
    assert results.pareto_configs == [KEYS["A"], KEYS["B"]]  # C is below B, D below A, on the means
    assert results.baseline == KEYS["A"]  # the spec's default baseline: the first grid cell
    assert set(results.vs_baseline) == {KEYS["B"], KEYS["C"], KEYS["D"]}
    base = RUNS["A"][1]
    for name in "BCD":
        test = results.vs_baseline[KEYS[name]]
        ref = sps.ttest_ind(RUNS[name][1], base, equal_var=False)
        ci = ref.confidence_interval(0.95)
        assert test["diff"]["top1"] == pytest.approx(np.mean(RUNS[name][1]) - 82.0)
        assert test["p"]["top1"] == pytest.approx(ref.pvalue)
        assert test["ci95"]["top1"] == pytest.approx([ci.low, ci.high])
        gap = RUNS[name][2] - 0.02  # different constants: certainly different
        assert test["diff"]["gflops"] == pytest.approx(gap) and test["p"]["gflops"] == 0.0
        assert test["ci95"]["gflops"] == [test["diff"]["gflops"]] * 2
    # by hand for D: d = -11.5, se² = 4/3 + 0.25/3, Welch df = 2.249, t = -9.66
    d = results.vs_baseline[KEYS["D"]]
    se = math.sqrt(4 / 3 + 0.25 / 3)
    df = (4 / 3 + 0.25 / 3) ** 2 / ((4 / 3) ** 2 / 2 + (0.25 / 3) ** 2 / 2)
    assert df == pytest.approx(2.2490, abs=1e-4)
    assert d["p"]["top1"] == pytest.approx(2 * sps.t.sf(11.5 / se, df)) and d["p"]["top1"] < 0.05
    assert stats.verdict(results.vs_baseline[KEYS["B"]]["p"]["top1"]) == "within noise"  # p = 0.064


def test_indistinguishable_from_the_front(results):
    # C: B beats it on both means, but their top-1 intervals overlap ([78.0, 88.0] and
    # [80.4, 93.6]): C may be on the true front. D: A's interval [77.0, 87.0] lies wholly
    # above D's [69.3, 71.7] and A is cheaper: D is dominated beyond the noise.
    assert results.indistinguishable == [KEYS["C"]]
    c, b = _by_name(results)["C"]["ci95"]["top1"], _by_name(results)["B"]["ci95"]["top1"]
    assert c[1] > b[0]


def test_noise_floor(results):
    assert results.aggregates.deterministic == ["gflops"]
    sigma = math.sqrt((2 * 4 + 2 * 7 + 2 * 4 + 2 * 0.25) / 8)  # pooled over A-D, two degrees of freedom each
    assert results.noise == {"top1": {"pooled_std": pytest.approx(sigma), "n": 3,
                                      "mde": pytest.approx(3.0709 * sigma, rel=1e-4)}}
    text = noise_text(results)
    assert f"top1 varies by {sigma:.2f}" in text and f"below {3.0709 * sigma:.2f}" in text
    assert "gflops: the same for every seed" in text


def test_show_json_contract(db, capsys):
    code, out, err = run_cli(capsys, "show", str(db), "--format", "json")
    assert code == 0, err
    obj = json.loads(out)
    assert set(obj) == {"study", "storage", "objectives", "trials", "pareto", "configs", "pareto_configs",
                        "baseline", "vs_baseline", "noise"}
    assert len(obj["trials"]) == 14 and obj["pareto"] == sorted(obj["pareto"])
    assert all(set(c) == {"key", "params", "n", "trials", "mean", "std", "ci95"} for c in obj["configs"])
    assert obj["pareto_configs"] == [KEYS["A"], KEYS["B"]] and obj["baseline"] == KEYS["A"]
    assert all(set(v) == {"diff", "ci95", "p"} for v in obj["vs_baseline"].values())
    assert set(obj["noise"]) == {"top1"} and set(obj["noise"]["top1"]) == {"pooled_std", "mde", "n"}


def test_show_table_and_csv(db, capsys):
    code, out, err = run_cli(capsys, "show", str(db))
    assert code == 0, err
    config_part, _, trial_part = out.partition("Noise floor:")
    assert "82.00 ± 4.97" in config_part and "within noise" in config_part and "differs (p = 0.0" in config_part
    assert "baseline" in config_part and "★" in config_part and "≈" in config_part
    assert "COMPLETE" in trial_part and "PRUNED" in trial_part  # then the per-trial table
    code, only, _ = run_cli(capsys, "show", str(db), "--view", "configs")
    assert code == 0 and "PRUNED" not in only and "±" in only
    code, out, _ = run_cli(capsys, "show", str(db), "--format", "csv")
    back = pd.read_csv(io.StringIO(out))
    assert back["config"].tolist() == [KEYS[n] for n in "ABCD"] and back["n"].tolist() == [3, 3, 3, 3]
    assert back["mean_top1"].tolist() == pytest.approx([82, 87, 83, 70.5])
    assert back["std_top1"].tolist() == pytest.approx([2, math.sqrt(7), 2, 0.5])
    assert back["ci95_hi_top1"][0] == pytest.approx(82 + T2 * 2 / math.sqrt(3))
    assert back["pareto"].tolist() == [1, 1, 0, 0] and back["indistinguishable"].tolist() == [0, 0, 1, 0]
    assert back["verdict_top1"].tolist()[:3] == ["baseline", "within noise", "within noise"]
    assert back["verdict_top1"][3].startswith("differs (p = ")
    code, out, _ = run_cli(capsys, "show", str(db), "--format", "csv", "--view", "trials")
    assert code == 0 and out.startswith("number,state,pareto,") and len(out.strip().splitlines()) == 15


def test_report_formats_carry_mean_ci_and_verdicts(results):
    table = ablation_table(results)
    frame = table.frame.set_index("window_size")
    assert frame.loc[8, "n"] == 3 and "state" not in frame  # every configuration has COMPLETE runs
    assert bool(frame.loc[8, "indistinguishable"]) and not frame.loc[8, "pareto"]
    md = render_report(results, "md")
    rows = {line.split("|")[2].strip(): line for line in md.splitlines() if line.startswith("| ") and "---" not in line}
    assert "82.00 ± 4.97" in rows["2"] and "baseline" in rows["2"] and "| * |" in rows["2"]
    assert "+5.00 ± " in rows["4"] and "within noise" in rows["4"]
    assert "≈" in rows["8"] and re.search(r"-11\.50 ± [0-9.]+ \| differs \(p = 0\.0\d+\)", rows["1"])
    assert "| 0.02 |" in rows["2"]  # GFLOPs once, no ±
    assert "seeds 5-7" in md and "Noise floor: top1 varies by" in md
    assert "Pareto front (top1 / gflops) of the configuration means: trials (0, 4, 8), (1, 5, 9)" in md
    assert "Indistinguishable from the front: trials (2, 6, 10)" in md
    latex = render_report(results, "latex")
    assert r"82.00 $\pm$ 4.97" in latex and "within noise" in latex and r"$\approx$" in latex
    assert "Noise floor" in latex
    html = render_report(results, "html")
    assert "82.00 ± 4.97" in html and "<tr class=near>" in html and "Noise floor" in html
    csv = pd.read_csv(io.StringIO(render_report(results, "csv")))
    assert csv["top1.std"].tolist() == pytest.approx([2, math.sqrt(7), 2, 0.5])
    assert csv["delta.top1.p"][0] != csv["delta.top1.p"][0]  # NaN: the baseline has no test
    assert csv["noise.top1.pooled_std"].nunique() == 1 and csv["noise.n"].tolist() == [3] * 4
    assert render_report(results, "png").startswith(b"\x89PNG")


def test_pareto_figure_draws_means_with_error_bars(results):
    from ablate.results.figures import pareto_figure

    fig = pareto_figure(results)
    front = next(t for t in fig["data"] if t["meta"]["kind"] == "front")
    near = next(t for t in fig["data"] if t["meta"].get("class") == "near")
    assert front["customdata"] == [0, 1] and front["y"] == pytest.approx([82.0, 87.0])
    assert front["error_y"]["array"] == pytest.approx([T2 * 2 / math.sqrt(3), T2 * math.sqrt(7 / 3)])
    assert front["error_x"]["array"] == [0.0, 0.0]  # GFLOPs do not vary
    assert near["customdata"] == [2] and near["marker"]["symbol"] == "diamond-open"
    other = next(t for t in fig["data"] if t["meta"].get("class") == "other")
    assert other["customdata"] == [3]


# --------------------------------------------------------------------------- one seed


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory):
    """The same grid with one run per configuration, stored before repeats (no config_key)."""
    path = tmp_path_factory.mktemp("one") / "one.db"
    study = study_from_dict(_spec(f"sqlite:///{path}", repeats=1), check=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ostudy = open_optuna_study(study)
    for name, (w, tops, gflops) in RUNS.items():
        _add(ostudy, study, w, TrialState.COMPLETE, [tops[0], gflops], gflops=gflops)
    return path


def test_one_seed_gives_nulls_and_says_so_everywhere(one_seed, capsys):
    results = load_results(f"sqlite:///{one_seed}")
    assert [c["n"] for c in results.configs] == [1, 1, 1, 1]
    assert len({c["key"] for c in results.configs}) == 4  # one configuration per params set
    for c in results.configs:
        assert all(v is None for v in c["std"].values()) and all(v is None for v in c["ci95"].values())
    assert all(v["p"] == {"top1": None, "gflops": None} and v["ci95"] == {"top1": None, "gflops": None}
               for v in results.vs_baseline.values())
    assert results.vs_baseline[results.configs[1]["key"]]["diff"]["top1"] == 5.0  # still the plain difference
    assert results.indistinguishable == [] and results.aggregates.deterministic == []
    assert results.noise["top1"] == {"pooled_std": None, "mde": None, "n": 1}
    for fmt in ("md", "latex", "csv", "html"):
        assert stats.ONE_SEED in render_report(results, fmt), fmt
    assert " ± " not in render_report(results, "md")
    title, _, rows = config_rows(results)
    assert stats.ONE_SEED in title and all("±" not in cell for row in rows for cell in row)
    assert stats.ONE_SEED in configs_csv(results)
    code, out, _ = run_cli(capsys, "show", str(one_seed))
    assert code == 0 and stats.ONE_SEED in out
    code, out, _ = run_cli(capsys, "show", str(one_seed), "--format", "json")
    obj = json.loads(out)
    assert all(c["std"]["top1"] is None and c["ci95"]["top1"] is None for c in obj["configs"])

    from ablate.dashboards import Sources, pages

    sources = Sources([f"sqlite:///{one_seed}"])
    (ref,), _ = sources.studies()
    assert stats.ONE_SEED in json.dumps(pages.pareto_summary(results).to_plotly_json(), default=str)
    assert stats.ONE_SEED in json.dumps(pages.table_page(ref, results).to_plotly_json(), default=str)


def test_legacy_trials_join_the_configuration_of_keyed_runs_with_the_same_params():
    trials = pd.DataFrame([
        {"number": 0, "state": "COMPLETE", "params": {"w": 2}, "values": {"a": 1.0}, "attrs": {}},  # before repeats
        {"number": 1, "state": "COMPLETE", "params": {"w": 2}, "values": {"a": 2.0},
         "attrs": {"config_key": "abcabcabcabc", "repeat": 1}},
        {"number": 2, "state": "COMPLETE", "params": {"w": 4}, "values": {"a": 3.0}, "attrs": {}},
        {"number": 3, "state": "COMPLETE", "params": {"w": 4}, "values": {"a": 5.0}, "attrs": {}},
    ])
    keys = config_keys(trials)
    assert keys[0] == keys[1] == "abcabcabcabc" and keys[2] == keys[3] != keys[0] and len(keys[2]) == 12
    results = StudyResults(name="s", storage="sqlite:///s.db", objectives=[{"name": "a", "direction": "maximize"}],
                           spec={"baseline": {"w": 4}}, trials=trials)
    assert [(c["n"], c["mean"]["a"]) for c in results.configs] == [(2, 1.5), (2, 4.0)]
    assert results.baseline == keys[2] and results.vs_baseline[keys[0]]["diff"]["a"] == -2.5
    assert aggregate(trials.iloc[:0], results.objectives).configs == []


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_indistinguishable_matches_the_pairwise_definition(seed):
    rng = np.random.default_rng(seed)
    directions = [["maximize", "minimize"], ["minimize", "minimize", "maximize"]][seed % 2]
    summaries = []
    for _ in range(int(rng.integers(3, 30))):
        n = int(rng.choice([1, 2, 3, 3, 5]))
        row = []
        for j in range(len(directions)):
            if j == 1:  # a cost: constant, often tied
                row.append(stats.summarize([float(rng.integers(1, 5))] * n))
            else:
                row.append(stats.summarize(rng.normal(rng.integers(0, 6), 1.0, size=n).tolist()))
        summaries.append(row)
    front, near = front_and_indistinguishable(summaries, directions)
    ivs = [[s.ci95 for s in row] for row in summaries]
    expected = []
    for i, row in enumerate(summaries):
        if i in front or any(s.ci95 is None for s in row):
            continue
        if not any(significantly_dominated(ivs[i], ivs[g], directions,
                                           [(a.constant, b.constant) for a, b in zip(row, summaries[g])])
                   for g in range(len(summaries)) if g != i):
            expected.append(i)
    assert near == expected


SIGNIFICANCE = [
    # (c's intervals, g's intervals, constants (c, g) per objective, g significantly dominates c?)
    ("overlap in top-1: B does not beat C beyond the noise",
     [(78.0, 88.0), (0.09, 0.09)], [(80.4, 93.6), (0.05, 0.05)], [(False, False), (True, True)], False),
    ("disjoint top-1, cheaper: A beats D beyond the noise",
     [(69.3, 71.7), (0.03, 0.03)], [(77.0, 87.0), (0.02, 0.02)], [(False, False), (True, True)], True),
    ("better top-1 but dearer: no domination at all",
     [(69.3, 71.7), (0.02, 0.02)], [(77.0, 87.0), (0.03, 0.03)], [(False, False), (True, True)], False),
    ("the same cost for sure, disjoint top-1",
     [(69.3, 71.7), (0.02, 0.02)], [(77.0, 87.0), (0.02, 0.02)], [(False, False), (True, True)], True),
    ("the same constants everywhere: equal, not dominated",
     [(1.0, 1.0), (0.02, 0.02)], [(1.0, 1.0), (0.02, 0.02)], [(True, True), (True, True)], False),
    ("one run: no interval, never significant",
     [None, (0.03, 0.03)], [(77.0, 87.0), (0.02, 0.02)], [(False, False), (True, True)], False),
    ("touching intervals are not disjoint",
     [(70.0, 77.0), (0.03, 0.03)], [(77.0, 87.0), (0.02, 0.02)], [(False, False), (True, True)], False),
]


@pytest.mark.parametrize("case,c,g,constant,expected", SIGNIFICANCE, ids=[s[0] for s in SIGNIFICANCE])
def test_significantly_dominated_by_hand(case, c, g, constant, expected):
    directions = ["maximize", "minimize"]
    assert significantly_dominated(c, g, directions, constant) is expected


def test_reference_repeats_from_the_papers_differences():
    from ablate.results import reference_repeats
    from ablate.results.stats import repeats_needed

    reference = {"rows": [{"focusing_factor": 2, "top1": 82.03}, {"focusing_factor": 3, "params_m": 29, "top1": 82.11},
                          {"focusing_factor": 4, "top1": 82.11}]}
    rows = reference_repeats(reference, {"focusing_factor": 3}, {"top1": 0.05})
    assert [(r["row"], r["objective"]) for r in rows] == [({"focusing_factor": 2}, "top1"),
                                                          ({"focusing_factor": 4}, "top1")]
    assert rows[0]["diff"] == pytest.approx(-0.08) and rows[0]["repeats"] == repeats_needed(0.08, 0.05)
    assert rows[0]["repeats"] >= 4
    assert rows[1]["diff"] == 0 and rows[1]["repeats"] is None  # no difference: nothing to resolve
    assert reference_repeats(reference, {"focusing_factor": 5}, {"top1": 0.05}) == []  # no baseline row


def test_dry_run_prints_the_repeats_the_measured_noise_needs(tmp_path, capsys):
    """A database with three seeds of two rows: ``--dry-run`` reads its noise (read-only)."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    from ablate.study import load_study, study_to_dict
    from cli_helpers import run_cli

    path = Path(__file__).parents[2] / "studies" / "flatten_focusing.yaml"
    study = load_study(path, check=False)
    url = f"sqlite:///{tmp_path / 'f.db'}"
    ostudy = optuna.create_study(study_name=study.name, storage=url, directions=["maximize", "minimize"])
    ostudy.set_metric_names(["top1", "gflops_paper"])
    ostudy.set_user_attr("spec", study_to_dict(study))
    dist = {"focusing_factor": CategoricalDistribution([2, 3, 4, 8, 32])}
    for p, values in ((3, [90.0, 91.0, 92.0]), (2, [89.0, 90.5, 91.5])):
        for r, v in enumerate(values):
            ostudy.add_trial(create_trial(state=TrialState.COMPLETE, values=[v, 4.5], params={"focusing_factor": p},
                                          distributions=dist,
                                          user_attrs={"config_key": f"k{p}", "repeat": r, "seed": r}))
    before = (tmp_path / "f.db").stat().st_mtime_ns
    code, out, err = run_cli(capsys, "run", str(path), "--dry-run", "--storage", url)
    assert code == 0, err
    assert "repeats needed to resolve the paper's differences" in out
    assert "focusing_factor=2: top1 -0.08 (paper) vs seed std 1.14 ->" in out and "seeds per row" in out
    assert (tmp_path / "f.db").stat().st_mtime_ns == before  # the dry run wrote nothing
