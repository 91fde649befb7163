"""Reading a study back and reporting it: hypervolume, Pareto fronts, StudyReader, ablation tables, formats, figures.

Nothing here trains: studies are generated (``ablate.testing.fake_study``) or hand-built with
``optuna.trial.create_trial`` in the storage layout the runner writes. Every computed
quantity is compared with a brute-force reference written out here, not with the code
under test.
"""

from __future__ import annotations

import io
import itertools
import json
import re
import shutil
import sqlite3
import subprocess
import warnings

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import IntDistribution
from scipy import stats as scipy_stats
from optuna.trial import TrialState, create_trial

from ablate.results import figures
from ablate.study import study_from_dict
from ablate.errors import StorageError
from ablate.testing.fake_study import fake_spec, write_fake_study
from ablate.results.report import REPORT_FORMATS, ablation_table, render_report, to_csv, to_latex, to_markdown
from ablate.results import (StudyReader, hypervolume_2d, hypervolume_history, load_results, nondominated,
                            pareto_front)
from ablate.run import open_optuna_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

DIRECTION_PAIRS = list(itertools.product(["maximize", "minimize"], repeat=2))


# --------------------------------------------------------------------------- brute-force references


def _costs(points, directions) -> np.ndarray:
    """Points turned into costs to minimise (maximised objectives negated)."""
    signs = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    return np.asarray(points, dtype=float).reshape(-1, len(directions)) * signs


def brute_front(points, directions) -> list[int]:
    """Indices i such that no point j is <= in every cost and differs from i (O(n^2))."""
    c = _costs(points, directions)
    out = []
    for i in range(len(c)):
        dominated = False
        for j in range(len(c)):
            if np.all(c[j] <= c[i]) and not np.array_equal(c[j], c[i]):
                dominated = True
                break
        if not dominated:
            out.append(i)
    return out


def brute_hypervolume(points, directions, reference) -> float:
    """Exact area of the union of the boxes [p, reference] by coordinate compression.

    Every elementary cell of the grid spanned by the points' coordinates (clipped to the
    reference) is covered when some point is <= its lower-left corner in both costs.
    """
    c = _costs(points, directions)
    r = _costs([reference], directions)[0]
    if len(c) == 0:
        return 0.0
    xs = np.unique(np.append(np.minimum(c[:, 0], r[0]), r[0]))
    ys = np.unique(np.append(np.minimum(c[:, 1], r[1]), r[1]))
    x0, y0 = xs[:-1], ys[:-1]  # lower-left corners of the cells (all < the reference)
    covered = ((c[:, 0, None, None] <= x0[None, :, None]) & (c[:, 1, None, None] <= y0[None, None, :])).any(axis=0)
    widths, heights = np.diff(xs), np.diff(ys)
    return float((covered * widths[:, None] * heights[None, :]).sum())


# --------------------------------------------------------------------------- studies


def _copy_db(src, dst) -> str:
    """Copy a (WAL-mode) SQLite database with the backup API; the URL of the copy."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()
    return f"sqlite:///{dst}"


@pytest.fixture(scope="module")
def fake_db(tmp_path_factory):
    """A generated 40-trial study (COMPLETE, PRUNED, FAIL, RUNNING), written once."""
    path = tmp_path_factory.mktemp("fake") / "fake.db"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_fake_study(f"sqlite:///{path}", n_trials=40, seed=0)
    return path


@pytest.fixture(scope="module")
def fake_results(fake_db):
    return load_results(f"sqlite:///{fake_db}")


@pytest.fixture
def fake_copy(fake_db, tmp_path):
    """A private copy of the generated study, for tests that add to it."""
    return tmp_path / "x.db", _copy_db(fake_db, tmp_path / "x.db")


REFERENCE = {"source": "Paper X, Table 3", "rows": [{"window_size": 2, "top1": 80.1, "gflops": 4.5},
                                                      {"window_size": 16, "top1": 81.0}]}
GRID = [4, 2, 8, 1]  # deliberately not sorted: rows must follow the grid, not the values


@pytest.fixture(scope="module")
def grid_results(tmp_path_factory):
    """A grid ablation over window_size, stored the way the runner stores it, without training.

    Cells: 4 → COMPLETE then a newer FAIL; 2 → FAIL then COMPLETE; 8 → PRUNED only;
    1 → COMPLETE but dominated by 2.
    """
    url = f"sqlite:///{tmp_path_factory.mktemp('grid') / 'grid.db'}"
    spec = fake_spec("grid-test", url, 4)
    spec["space"]["params"]["window_size"]["choice"] = [1, 2, 4, 8]
    spec["grid"] = {"window_size": list(GRID)}
    spec["sampler"] = {"name": "grid", "seed": 0}
    spec["description"] = "window_size ablation: 100% & more #1"
    spec["reference"] = REFERENCE
    study = study_from_dict(spec, check=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ostudy = open_optuna_study(study)

    def add(w, state, values=None, **attrs):
        cand = study.candidate({"window_size": w})
        user_attrs = {"candidate": cand, "arch": dict(cand, num_classes=10), "epochs_done": 10, **attrs}
        # numeric grid values are stored as one-point distributions (runner._record_grid_value)
        ostudy.add_trial(create_trial(state=state, params={"window_size": w},
                                      distributions={"window_size": IntDistribution(w, w)}, values=values,
                                      user_attrs=user_attrs))

    add(2, TrialState.FAIL, error="RuntimeError: boom", epochs_done=1)                                    # 0
    add(2, TrialState.COMPLETE, [80.0, 0.02], params_m=1.5, gflops=0.02, gflops_paper=0.98)              # 1
    add(4, TrialState.COMPLETE, [82.0, 0.05], params_m=1.6, gflops=0.05, gflops_paper=2.45)              # 2
    add(4, TrialState.FAIL, error="RuntimeError: boom again", epochs_done=0)                              # 3
    add(8, TrialState.PRUNED, None, params_m=1.7, gflops=0.09, gflops_paper=4.41, epochs_done=3,
        curve=[{"epoch": e, "top1": 60.0 + e, "train_loss": 1.0 / e} for e in (1, 2, 3)])                 # 4
    add(1, TrialState.COMPLETE, [78.0, 0.03], params_m=1.4, gflops=0.03, gflops_paper=1.47)              # 5
    return load_results(url)


def _complete_points(results, names=("top1", "gflops")):
    done = results.trials[results.trials["state"] == "COMPLETE"].sort_values("number")
    return done["number"].tolist(), [[v[n] for n in names] for v in done["values"]]


# --------------------------------------------------------------------------- hypervolume


def test_brute_hypervolume_reference_on_hand_worked_cases():
    # the reference itself, on areas computed by hand
    assert brute_hypervolume([[1, 2], [2, 1]], ["maximize", "maximize"], [0, 0]) == pytest.approx(3.0)
    assert brute_hypervolume([[1, 1]], ["minimize", "minimize"], [3, 4]) == pytest.approx(6.0)
    assert brute_hypervolume([[5, 5]], ["minimize", "minimize"], [3, 4]) == 0.0


@pytest.mark.parametrize("directions", DIRECTION_PAIRS, ids="-".join)
@pytest.mark.parametrize("seed", range(6))
def test_hypervolume_2d_matches_union_of_rectangles(directions, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 25))
    pts = rng.integers(0, 12, size=(n, 2)).astype(float)  # small integers: ties in x and in y
    pts = np.concatenate([pts, pts[rng.integers(0, n, size=3)]])  # exact duplicates
    pts += rng.normal(0, 0.25, size=pts.shape) * (seed % 2)  # odd seeds: also off-grid values
    reference = [6.0, 6.0]  # about half the points are worse than it in some objective
    got = hypervolume_2d(pts.tolist(), directions, reference)
    assert got == pytest.approx(brute_hypervolume(pts, directions, reference), rel=1e-12, abs=1e-12)
    rng.shuffle(pts)
    assert hypervolume_2d(pts.tolist(), directions, reference) == pytest.approx(got, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("directions", DIRECTION_PAIRS, ids="-".join)
def test_points_worse_than_the_reference_add_nothing(directions):
    rng = np.random.default_rng(7)
    reference = np.array([5.0, 5.0])
    worse_sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])  # away from "better"
    good = reference - worse_sign * rng.uniform(0.5, 4, size=(8, 2))
    bad = reference + worse_sign * rng.uniform(0, 4, size=(8, 2))  # worse in both (or on the edge)
    half = good.copy()
    half[:, 0] = reference[0] + worse_sign[0] * rng.uniform(0, 4, size=8)  # worse in x only
    base = hypervolume_2d(good.tolist(), directions, reference)
    assert base > 0
    assert hypervolume_2d(np.concatenate([good, bad, half]).tolist(), directions, reference) == pytest.approx(base)
    assert hypervolume_2d(np.concatenate([bad, half]).tolist(), directions, reference) == 0.0
    assert hypervolume_2d([], directions, reference) == 0.0


def test_hypervolume_2d_refuses_other_than_two_objectives():
    with pytest.raises(ValueError, match="two objectives"):
        hypervolume_2d([[1, 2, 3]], ["maximize"] * 3, [0, 0, 0])


def test_hypervolume_history_rises_to_the_hypervolume_of_all_complete_trials(fake_results):
    hv = hypervolume_history(fake_results)
    numbers, points = _complete_points(fake_results)
    assert hv["number"].tolist() == numbers
    values = hv["hypervolume"].to_numpy()
    assert np.all(np.diff(values) >= -1e-12)
    directions = ["maximize", "minimize"]
    nadir = [min(p[0] for p in points), max(p[1] for p in points)]
    assert values[-1] == pytest.approx(hypervolume_2d(points, directions, nadir))
    assert values[-1] > 0
    for k in range(len(points)):  # every prefix, against the brute-force area
        assert values[k] == pytest.approx(brute_hypervolume(points[:k + 1], directions, nadir), rel=1e-9, abs=1e-12)
    figure = figures.hypervolume_figure(fake_results)
    assert figure["data"][0]["x"] == numbers
    assert figure["data"][0]["y"] == pytest.approx(values.tolist())


# --------------------------------------------------------------------------- Pareto fronts


@pytest.mark.parametrize("n_obj", [2, 3])
@pytest.mark.parametrize("seed", range(5))
def test_nondominated_matches_brute_force(n_obj, seed):
    rng = np.random.default_rng(100 + seed)
    pts = rng.integers(0, 6, size=(int(rng.integers(1, 40)), n_obj)).astype(float)  # many ties and duplicates
    for directions in itertools.product(["maximize", "minimize"], repeat=n_obj):
        assert nondominated(pts.tolist(), directions) == brute_front(pts, directions), directions


def test_nondominated_keeps_every_copy_of_a_front_point():
    pts = [[1.0, 1.0], [1.0, 1.0], [0.0, 2.0], [0.5, 0.5]]
    assert nondominated(pts, ["maximize", "maximize"]) == [0, 1, 2]


def _frame(rows):
    return pd.DataFrame([{"number": n, "state": s, "values": v} for n, s, v in rows])


def test_pareto_front_ignores_pruned_and_failed_trials():
    objectives = [{"name": "top1", "direction": "maximize"}, {"name": "gflops", "direction": "minimize"}]
    rng = np.random.default_rng(3)
    rows, complete = [], []
    for number in range(60):
        state = ["COMPLETE", "COMPLETE", "PRUNED", "FAIL", "RUNNING"][number % 5]
        values = {"top1": float(rng.integers(70, 80)), "gflops": float(rng.integers(1, 9))}
        if state != "COMPLETE" and number % 2:
            values = {"top1": 99.0, "gflops": 0.0}  # would dominate everything if it counted
        rows.append((number, state, values))
        if state == "COMPLETE":
            complete.append((number, [values["top1"], values["gflops"]]))
    rows.append((60, "COMPLETE", {"top1": 99.5}))  # an objective missing: cannot be placed
    expected = [complete[i][0] for i in brute_front([p for _, p in complete], ["maximize", "minimize"])]
    assert pareto_front(_frame(rows), objectives) == sorted(expected)
    assert pareto_front(_frame([(0, "PRUNED", {"top1": 1.0, "gflops": 1.0})]), objectives) == []


def test_study_pareto_is_the_brute_force_front_of_complete_trials(fake_results):
    numbers, points = _complete_points(fake_results)
    expected = [numbers[i] for i in brute_front(points, ["maximize", "minimize"])]
    assert fake_results.pareto == sorted(expected) and expected
    states = dict(zip(fake_results.trials["number"], fake_results.trials["state"]))
    assert {states[n] for n in fake_results.pareto} == {"COMPLETE"}


# --------------------------------------------------------------------------- StudyReader


def _counts(path):
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM trials").fetchone()[0]


def test_reader_returns_the_same_object_until_the_study_changes(fake_copy):
    path, url = fake_copy
    reader = StudyReader(url)
    first = reader.read()
    version = reader.version
    assert len(first.trials) == 40
    assert reader.read() is first and reader.version == version

    # another process adds a trial: copy a COMPLETE one with a value that tops the front
    other = optuna.load_study(study_name="generated", storage=url)
    template = next(t for t in other.get_trials() if t.state == TrialState.COMPLETE)
    other.add_trial(create_trial(params=template.params, distributions=template.distributions,
                                 values=[99.9, 1e-6], user_attrs=template.user_attrs))
    second = reader.read()
    assert second is not first and reader.version > version
    assert len(second.trials) == 41
    new = second.trials[second.trials["number"] == 40].iloc[0]
    assert new["state"] == "COMPLETE" and new["values"] == {"top1": 99.9, "gflops": 1e-6}
    assert second.pareto == [40]  # it dominates every other trial
    assert reader.read() is second

    # a RUNNING trial reporting an epoch, then finishing, elsewhere (finished rows are cached, running ones not)
    running = [t for t in other.get_trials() if t.state == TrialState.RUNNING]
    assert running
    curve = [*running[0].user_attrs["curve"], {"epoch": 99, "top1": 1.0}]
    other._storage.set_trial_user_attr(running[0]._trial_id, "curve", curve)  # what the runner's driver does
    version = reader.version
    fourth = reader.read()
    assert fourth is not second and reader.version > version
    assert fourth.trials.set_index("number").loc[running[0].number, "attrs"]["curve"] == curve
    running = [t.number for t in running]
    other.tell(running[0], [10.0, 5.0])
    version = reader.version
    third = reader.read()
    assert reader.version > version
    row = third.trials[third.trials["number"] == running[0]].iloc[0]
    assert row["state"] == "COMPLETE" and row["values"] == {"top1": 10.0, "gflops": 5.0}


def test_reading_never_writes(fake_copy):
    path, url = fake_copy
    before = _counts(path)
    with sqlite3.connect(path) as watch:
        version = watch.execute("PRAGMA data_version").fetchone()[0]  # changes when another connection commits
        reader = StudyReader(url)
        reader.read()
        reader.read()
        load_results(url)
        reader.importances("gflops")
        assert watch.execute("PRAGMA data_version").fetchone()[0] == version
        optuna.load_study(study_name="generated", storage=url).set_user_attr("probe", 1)  # the check can fail
        assert watch.execute("PRAGMA data_version").fetchone()[0] != version
    watch.close()
    assert _counts(path) == before


def test_importances_cover_the_params_and_sum_to_one(fake_db):
    reader = StudyReader(f"sqlite:///{fake_db}")
    values, method = reader.importances("top1")
    assert method == "fANOVA"
    assert set(values) == set(fake_spec("x", "sqlite:///x.db")["space"]["params"])
    assert all(v >= 0 for v in values.values())
    assert sum(values.values()) == pytest.approx(1.0, abs=1e-6)
    assert reader.importances("top1") is reader.importances("top1")  # cached while the study is unchanged
    with pytest.raises(StorageError, match="no objective 'map50'"):
        reader.importances("map50")
    bars = figures.importance_figure(values, "top1", method)["data"][0]
    assert bars["x"] == sorted(values.values()) and set(bars["y"]) == set(values)


def test_reader_names_the_study_or_says_what_is_there(fake_db, tmp_path):
    with pytest.raises(StorageError, match="no study 'nope'.*generated"):
        StudyReader(f"sqlite:///{fake_db}", "nope")
    with pytest.raises(StorageError, match="no such study database: "):
        StudyReader(f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()


# --------------------------------------------------------------------------- ablation table

# Each paper number sits right after ours (the paper-scale GFLOPs beside the paper's); the
# difference to the baseline (the first grid cell, 4) after the metrics. GFLOPs are a cost:
# their difference is in their own column, so text tables compare top-1 only.
EXPECTED_COLUMNS = ["trial", "window_size", "state", "n", "params_m", "gflops", "gflops_paper", "paper.gflops", "top1",
                    "paper.top1", "delta.top1", "epochs", "pareto"]
# The CSV has every column: the shown ones (verdicts included), then the seed statistics.
EXPECTED_FRAME = ["trial", "window_size", "state", "n", "params_m", "gflops", "gflops_paper", "paper.gflops", "top1",
                  "paper.top1", "delta.top1", "verdict.top1", "delta.gflops", "verdict.gflops", "epochs", "pareto",
                  "gflops.std", "gflops.ci95_lo", "gflops.ci95_hi", "top1.std", "top1.ci95_lo", "top1.ci95_hi",
                  "delta.top1.ci95_lo", "delta.top1.ci95_hi", "delta.top1.p", "delta.gflops.ci95_lo",
                  "delta.gflops.ci95_hi", "delta.gflops.p", "trials", "indistinguishable", "note",
                  "noise.top1.pooled_std", "noise.top1.mde", "noise.gflops.pooled_std", "noise.gflops.mde", "noise.n"]


def test_ablation_table_of_a_grid_study(grid_results):
    table = ablation_table(grid_results)
    frame = table.frame
    assert table.varied == ["window_size"]
    assert table.shown == EXPECTED_COLUMNS and list(frame.columns) == EXPECTED_FRAME
    assert frame["window_size"].tolist() == [*GRID, 16]  # grid order, then the paper-only row
    by_w = {int(r["window_size"]): r for r in frame.to_dict("records")}
    # one trial per cell: COMPLETE beats FAIL whether the FAIL came first (2) or later (4)
    assert (by_w[2]["trial"], by_w[2]["state"]) == (1, "COMPLETE")
    assert (by_w[4]["trial"], by_w[4]["state"]) == (2, "COMPLETE")
    assert (by_w[8]["trial"], by_w[8]["state"]) == (4, "PRUNED")
    assert (by_w[1]["trial"], by_w[1]["state"]) == (5, "COMPLETE")
    # one COMPLETE run per configuration (none for the PRUNED one): no error bars anywhere
    assert {w: by_w[w]["n"] for w in (2, 4, 8, 1)} == {2: 1, 4: 1, 8: 0, 1: 1}
    for w in (2, 4, 1):
        assert by_w[w]["note"] == "1 seed: no error bars" and pd.isna(by_w[w]["top1.std"]), w
        assert pd.isna(by_w[w]["top1.ci95_lo"]) and pd.isna(by_w[w]["delta.top1.p"]), w
    # the baseline is the first grid cell (the spec's default); the others differ from it by plain differences
    assert grid_results.baseline is not None and by_w[4]["verdict.top1"] == "baseline" and by_w[4]["delta.top1"] == 0
    assert (by_w[2]["delta.top1"], by_w[1]["delta.top1"]) == pytest.approx((-2.0, -4.0))
    assert by_w[2]["verdict.top1"] == by_w[1]["verdict.top1"] == "1 seed: no error bars"
    assert pd.isna(by_w[8]["delta.top1"]) and pd.isna(by_w[8]["verdict.top1"])
    # costs come from the user attributes, metrics from the values (a PRUNED trial has none)
    for w, (params_m, gflops, gflops_paper, top1, epochs) in {
            2: (1.5, 0.02, 0.98, 80.0, 10), 4: (1.6, 0.05, 2.45, 82.0, 10),
            8: (1.7, 0.09, 4.41, None, 3), 1: (1.4, 0.03, 1.47, 78.0, 10)}.items():
        r = by_w[w]
        assert (r["params_m"], r["gflops"], r["gflops_paper"], r["epochs"]) == pytest.approx(
            (params_m, gflops, gflops_paper, epochs)), w
        assert pd.isna(r["top1"]) if top1 is None else r["top1"] == pytest.approx(top1), w
    # the paper's numbers beside the matching row; the unmatched reference row appended
    assert (by_w[2]["paper.top1"], by_w[2]["paper.gflops"]) == (80.1, 4.5)
    for w in (4, 8, 1):
        assert pd.isna(by_w[w]["paper.top1"]) and pd.isna(by_w[w]["paper.gflops"]), w
    extra = by_w[16]
    assert pd.isna(extra["trial"]) and pd.isna(extra["state"]) and not extra["pareto"]
    assert extra["paper.top1"] == 81.0 and pd.isna(extra["paper.gflops"]) and pd.isna(extra["params_m"])
    # the front column is the front of the configuration means; with one run each, that is
    # the brute-force front of the COMPLETE trials
    numbers, points = _complete_points(grid_results)
    assert grid_results.pareto == sorted(numbers[i] for i in brute_front(points, ["maximize", "minimize"])) == [1, 2]
    for r in frame.itertuples(index=False):
        assert bool(r.pareto) == (not pd.isna(r.trial) and int(r.trial) in grid_results.pareto)
    assert table.pareto == grid_results.pareto
    assert "1 seed: no error bars" in table.caption and "1 seed: no error bars" in table.noise
    # headers and caption
    assert table.labels["gflops"] == "GFLOPs @32" and table.labels["gflops_paper"] == "GFLOPs @224"
    assert table.labels["paper.top1"] == "Top-1 (%) (paper)"
    assert "Paper X, Table 3" in table.caption and "digits at 32 px, 10 epochs" in table.caption
    assert table.title == "window_size ablation: 100% & more #1"


def test_ablation_table_of_a_sampled_study_has_one_row_per_configuration(fake_results):
    table = ablation_table(fake_results)
    frame = table.frame
    configurations = {tuple(sorted((k, repr(v)) for k, v in p.items())) for p in fake_results.trials["params"]}
    assert len(frame) == len(configurations)
    assert frame["trial"].tolist() == sorted(frame["trial"])
    assert set(table.varied) == {"attention", "window_size", "embed_dim", "depths", "lr"}
    assert "state" in frame.columns  # some rows did not complete
    # three seeds per configuration: n counts the COMPLETE ones, the front is on the means
    configs = {c["trials"][0]: c for c in fake_results.configs}
    assert {int(t): int(n) for t, n in zip(frame["trial"], frame["n"]) if int(t) in configs} == \
        {t: c["n"] for t, c in configs.items()}
    assert max(frame["n"]) == 3
    front = {t for t, c in configs.items() if c["key"] in fake_results.pareto_configs}
    assert front and {int(t) for t, p in zip(frame["trial"], frame["pareto"]) if p} == front
    near = {t for t, c in configs.items() if c["key"] in fake_results.indistinguishable}
    assert {int(t) for t, p in zip(frame["trial"], frame["indistinguishable"]) if p} == near
    for r in frame.to_dict("records"):
        if r["n"] >= 2:  # mean ± interval of its own runs
            tops = [v["top1"] for n, v in zip(fake_results.trials["number"], fake_results.trials["values"])
                    if n in configs[r["trial"]]["trials"]]
            assert r["top1"] == pytest.approx(np.mean(tops)) and r["top1.std"] == pytest.approx(np.std(tops, ddof=1))
            half = scipy_stats.t.ppf(0.975, len(tops) - 1) * np.std(tops, ddof=1) / len(tops) ** 0.5
            assert (r["top1.ci95_lo"], r["top1.ci95_hi"]) == pytest.approx((np.mean(tops) - half, np.mean(tops) + half))
    text = render_report(fake_results, "md")
    assert " ± " in text and "Noise floor: top1 varies by" in text and "gflops: the same for every seed" in text


# --------------------------------------------------------------------------- formats


def test_markdown_has_the_labels_and_one_line_per_row(grid_results):
    table = ablation_table(grid_results)
    text = render_report(grid_results, "md")
    assert text.startswith(to_markdown(table))
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header, rule, body = lines[0], lines[1], lines[2:]
    assert [c.strip() for c in header.strip("|").split("|")] == [table.labels[c] for c in EXPECTED_COLUMNS]
    assert rule.count("|") == len(EXPECTED_COLUMNS) + 1
    assert len(body) == len(table.frame)
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in body]
    assert [row[0] for row in cells] == ["2", "1", "4", "5", ""]
    assert [row[1] for row in cells] == [str(w) for w in [*GRID, 16]]
    assert [row[EXPECTED_COLUMNS.index("pareto")] for row in cells] == ["*", "*", "", "", ""]
    assert [row[EXPECTED_COLUMNS.index("n")] for row in cells] == ["1", "1", "0", "1", ""]
    assert [row[EXPECTED_COLUMNS.index("delta.top1")] for row in cells] == ["baseline", "-2.00", "", "-4.00", ""]
    assert " ± " not in text  # one run each: no error bars, and the report says so
    assert "Noise floor: 1 seed: no error bars" in text
    assert text.rstrip().endswith("Pareto front (top1 / gflops): trials 1, 2")


def test_csv_round_trips_through_pandas(grid_results):
    table = ablation_table(grid_results)
    back = pd.read_csv(io.StringIO(render_report(grid_results, "csv")))
    assert render_report(grid_results, "csv") == to_csv(table)
    assert list(back.columns) == EXPECTED_FRAME
    assert [v if isinstance(v, str) else None for v in back["note"]] == [
        "1 seed: no error bars", "1 seed: no error bars", None, "1 seed: no error bars", None]
    for c in EXPECTED_FRAME:
        if c == "trials":
            assert [json.loads(v) if isinstance(v, str) else None for v in back[c]] == [[2], [1], [], [5], None]
        elif c in ("state", "pareto", "indistinguishable", "note") or c.startswith("verdict."):
            assert back[c].where(back[c].notna(), None).tolist() == \
                table.frame[c].where(table.frame[c].notna(), None).tolist(), c
        else:
            np.testing.assert_allclose(back[c].to_numpy(float), table.frame[c].to_numpy(float), err_msg=c)


def test_latex_is_booktabs_and_escaped(grid_results):
    text = render_report(grid_results, "latex")
    assert text == to_latex(ablation_table(grid_results))
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert text.count(rule) == 1
    assert r"window\_size" in text and r"Top-1 (\%)" in text and r"100\% \& more \#1" in text
    unescaped = re.compile(r"(?<!\\)[_%&#]")
    for line in text.splitlines():
        body = line.replace(r"$\star$", "")
        assert not unescaped.search(body.replace(" & ", " ").replace(r"\\", "")), line
    rows = text.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(rows) == 5 and all(r.count(" & ") == len(EXPECTED_COLUMNS) - 1 for r in rows)
    assert rows[0].count(r"$\star$") == rows[1].count(r"$\star$") == 1
    assert "1 seed: no error bars" in text and r"$\Delta$ Top-1 (\%)" in text


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_compiles(grid_results, tmp_path):
    body = render_report(grid_results, "latex")
    doc = "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + body + "\\end{document}\n"
    (tmp_path / "table.tex").write_text(doc)
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "table.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:]
    assert (tmp_path / "table.pdf").read_bytes().startswith(b"%PDF")


def test_html_is_one_self_contained_page(grid_results):
    from plotly.offline import get_plotlyjs

    page = render_report(grid_results, "html")
    plotly_js = get_plotlyjs()
    assert plotly_js in page  # plotly.js inline
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I)
    assert not re.search(r"<link\b", page, re.I)
    # plotly.js carries URLs in its own code (map tiles, credits); the rest of the page carries none
    rest = page.replace(plotly_js, "")
    assert "http://" not in rest and "https://" not in rest
    assert not re.search(r"""\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", rest, re.I)
    table = re.search(r"<table class='ablation'>.*?</table>", rest, re.S).group(0)
    assert table.count("<tr") == 1 + 5 and table.count("<tr class=front>") == 2
    assert "<th>window_size</th>" in table and "<td>80.10</td>" in table
    assert "100% &amp; more #1" in rest  # the title, escaped
    figure_json = re.search(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*(\[.*?\]),\s*\{", rest, re.S)
    assert figure_json and '"customdata":[1,2]' in figure_json.group(1).replace(" ", "")


def test_png_decodes(fake_results):
    import matplotlib.image as mpimg

    data = render_report(fake_results, "png")
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = mpimg.imread(io.BytesIO(data), format="png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_a_study_without_finished_trials_still_reports(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ostudy = open_optuna_study(study_from_dict(fake_spec("empty", url, 4), check=False))
    empty = load_results(url)
    assert empty.trials.empty and empty.pareto == []
    ostudy.ask()  # one RUNNING trial
    running = load_results(url)
    for results in (empty, running):
        for fmt in REPORT_FORMATS:
            assert render_report(results, fmt)
        assert figures.pareto_figure(results)["data"] == []
        assert _lines(figures.parallel_figure(results, "top1")) == 0
        assert figures.hypervolume_figure(results)["data"][0]["x"] == []
    assert "trials none (no COMPLETE trial)" in render_report(running, "md")
    assert ablation_table(running).frame[["trial", "state"]].values.tolist() == [[0, "RUNNING"]]
    with pytest.raises(StorageError, match="at least 2 COMPLETE trials"):
        StudyReader(url).importances("top1")


def test_unknown_format_is_refused(grid_results):
    assert REPORT_FORMATS == ("md", "latex", "csv", "html", "png")
    with pytest.raises(ValueError, match="allowed: md, latex"):
        render_report(grid_results, "docx")


# --------------------------------------------------------------------------- figures


def _by_number(results):
    return {int(r.number): r for r in results.trials.itertuples(index=False)}


def _config_means(results):
    """{first trial: (mean gflops, mean top1, its runs)} of each configuration, straight from the trials."""
    done = results.trials[results.trials["state"] == "COMPLETE"]
    runs = {}
    for key, number, values in zip(done["config"], done["number"], done["values"]):
        runs.setdefault(key, []).append((int(number), values["gflops"], values["top1"]))
    return {min(r)[0]: (np.mean([g for _, g, _ in r]), np.mean([t for _, _, t in r]), sorted(n for n, _, _ in r))
            for r in runs.values()}


def test_pareto_figure_front_is_the_brute_force_front_of_the_means(fake_results):
    fig = figures.pareto_figure(fake_results)
    assert figures.axes_of(fake_results) == ("gflops", "top1")
    fronts = [t for t in fig["data"] if t["meta"]["kind"] == "front"]
    assert len(fronts) == 1
    front = fronts[0]
    means = _config_means(fake_results)
    firsts = list(means)
    expected = [firsts[i] for i in brute_front([means[f][:2] for f in firsts], ["minimize", "maximize"])]
    assert sorted(front["customdata"]) == sorted(expected)  # each front configuration by its first trial
    assert front["x"] == sorted(front["x"])
    assert front["x"] == pytest.approx([means[n][0] for n in front["customdata"]])
    assert front["y"] == pytest.approx([means[n][1] for n in front["customdata"]])
    # error bars: the 95 % t interval of the runs' top-1 around their mean (GFLOPs do not vary)
    for n, plus, minus, xplus in zip(front["customdata"], front["error_y"]["array"], front["error_y"]["arrayminus"],
                                     front["error_x"]["array"]):
        tops = [fake_results.trials.set_index("number").loc[m, "values"]["top1"] for m in means[n][2]]
        half = 0.0 if len(tops) < 2 else \
            scipy_stats.t.ppf(0.975, len(tops) - 1) * np.std(tops, ddof=1) / len(tops) ** 0.5
        assert plus == pytest.approx(half) and minus == pytest.approx(half) and xplus == 0
    numbers, _ = _complete_points(fake_results)
    trial_traces = [t for t in fig["data"] if t["meta"]["kind"] == "trials"]
    assert {t["meta"]["state"] for t in trial_traces} == {"COMPLETE"}
    assert sorted(n for t in trial_traces for n in t["customdata"]) == numbers
    # every configuration off the front is drawn once, as a mean; the indistinguishable ones apart
    configs = [t for t in fig["data"] if t["meta"]["kind"] == "configs"]
    drawn = {t["meta"]["class"]: sorted(t["customdata"]) for t in configs}
    near = sorted(c["trials"][0] for c in fake_results.configs if c["key"] in fake_results.indistinguishable)
    assert near and drawn["near"] == near
    assert sorted(drawn["near"] + drawn["other"] + front["customdata"]) == sorted(firsts)


def test_pareto_figure_shows_pruned_trials_apart_and_never_on_the_front(fake_results):
    base = figures.pareto_figure(fake_results)
    fig = figures.pareto_figure(fake_results, states=("COMPLETE", "PRUNED"))
    pruned = [t for t in fig["data"] if t["meta"].get("state") == "PRUNED"]
    rows = _by_number(fake_results)
    expected = sorted(n for n, r in rows.items() if r.state == "PRUNED" and r.attrs.get("curve"))
    assert expected and sorted(n for t in pruned for n in t["customdata"]) == expected
    for t in pruned:
        assert t["name"].endswith("(PRUNED)") and t["marker"]["symbol"] == "triangle-down"
        for n, x, y in zip(t["customdata"], t["x"], t["y"]):
            assert x == rows[n].attrs["gflops"] and y == rows[n].attrs["curve"][-1]["top1"]
    front = next(t for t in fig["data"] if t["meta"]["kind"] == "front")
    base_front = next(t for t in base["data"] if t["meta"]["kind"] == "front")
    assert front["customdata"] == base_front["customdata"]
    assert not set(front["customdata"]) & set(expected)


def test_a_pruned_trial_that_looks_better_does_not_move_the_front():
    from ablate.results import StudyResults

    objectives = [{"name": "top1", "direction": "maximize"}, {"name": "gflops", "direction": "minimize"}]
    rows = [
        (0, "COMPLETE", {"top1": 80.0, "gflops": 2.0}, {"gflops": 2.0}),
        (1, "COMPLETE", {"top1": 82.0, "gflops": 3.0}, {"gflops": 3.0}),
        (2, "COMPLETE", {"top1": 79.0, "gflops": 2.5}, {"gflops": 2.5}),  # dominated by 0
        # placed at its cost and last epoch: it would dominate every COMPLETE trial
        (3, "PRUNED", {}, {"gflops": 1.0, "curve": [{"epoch": 1, "top1": 90.0}]}),
        (4, "RUNNING", {}, {"gflops": 0.5, "curve": [{"epoch": 1, "top1": 95.0}]}),
    ]
    trials = pd.DataFrame([{"number": n, "state": s, "params": {"attention": "focal", "i": n}, "values": v,
                            "attrs": a} for n, s, v, a in rows])  # distinct params: five configurations
    results = StudyResults(name="s", storage="sqlite:///s.db", objectives=objectives, spec=None, trials=trials,
                           pareto=pareto_front(trials, objectives))
    assert results.pareto == [0, 1]
    points = figures.pareto_points(results, "gflops", "top1")
    assert points.loc[points["front"], "number"].tolist() == [0, 1]
    fig = figures.pareto_figure(results, states=("COMPLETE", "PRUNED", "RUNNING"))
    front = next(t for t in fig["data"] if t["meta"]["kind"] == "front")
    assert front["customdata"] == [0, 1] and front["x"] == [2.0, 3.0] and front["y"] == [80.0, 82.0]
    shown = {t["meta"]["state"]: t["customdata"] for t in fig["data"] if t["meta"]["kind"] == "trials"}
    assert shown == {"COMPLETE": [0, 1, 2], "PRUNED": [3], "RUNNING": [4]}


@pytest.mark.parametrize("directions", DIRECTION_PAIRS, ids="-".join)
def test_front_staircase_only_passes_through_attained_corners(directions):
    """The front line is drawn as steps; every corner of the steps must be weakly dominated by a front point."""
    from ablate.results import StudyResults

    dx, dy = directions
    objectives = [{"name": "params_m", "direction": dx}, {"name": "latency_ms", "direction": dy}]
    rng = np.random.default_rng(11)
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)  # every quadrant has a front arc
    points = np.concatenate([10 * np.c_[np.cos(angles), np.sin(angles)], rng.uniform(-6, 6, size=(20, 2))])
    trials = pd.DataFrame([{"number": n, "state": "COMPLETE", "params": {"i": n}, "attrs": {},
                            "values": {"params_m": float(a), "latency_ms": float(b)}}
                           for n, (a, b) in enumerate(rng.permutation(points))])
    results = StudyResults(name="s", storage="sqlite:///s.db", objectives=objectives, spec=None, trials=trials)
    fig = figures.pareto_figure(results, x="params_m", y="latency_ms")
    front = next(t for t in fig["data"] if t["meta"]["kind"] == "front")
    xs, ys = front["x"], front["y"]
    assert len(xs) >= 3, "the data should give a front with steps"
    shape = front["line"]["shape"]
    assert shape in ("hv", "vh")
    corners = [(xs[i + 1], ys[i]) if shape == "hv" else (xs[i], ys[i + 1]) for i in range(len(xs) - 1)]
    cost = _costs(list(zip(xs, ys)), directions)
    for corner in corners:
        c = _costs([corner], directions)[0]
        assert np.any(np.all(cost <= c, axis=1)), (shape, corner)  # not better than what the front attains


def _lines(fig) -> int:
    return sum(t["x"].count(None) for t in fig["data"] if t.get("mode") == "lines")


def test_parallel_figure_draws_every_complete_trial(fake_results):
    n_done = int((fake_results.trials["state"] == "COMPLETE").sum())
    fig = figures.parallel_figure(fake_results, "top1")
    assert _lines(fig) == n_done
    assert fig["layout"]["title"]["text"].startswith(f"parallel coordinates of the {n_done} COMPLETE trials")
    n_axes = len(fig["layout"]["shapes"])
    assert n_axes == 5 + 2  # five settings, two objectives
    for t in fig["data"]:
        if t.get("mode") == "lines":
            assert len(t["x"]) == len(t["y"]) == (n_axes + 1) * t["x"].count(None)


@pytest.mark.parametrize("objective", ["top1", "gflops"])
def test_parallel_figure_keeps_only_the_best_lines_above_the_cap(fake_results, monkeypatch, objective):
    monkeypatch.setattr(figures, "PARALLEL_MAX", 10)
    done = fake_results.trials[fake_results.trials["state"] == "COMPLETE"]
    values = sorted((v[objective] for v in done["values"]), reverse=objective == "top1")
    fig = figures.parallel_figure(fake_results, objective)
    assert _lines(fig) == 10
    assert f"the 10 best of {len(done)} COMPLETE trials by {objective}" in fig["layout"]["title"]["text"]
    scale = fig["data"][-1]["marker"]
    assert (scale["cmin"], scale["cmax"]) == (min(values[:10]), max(values[:10]))  # the ten best, not ten others


def test_curve_figure_without_a_curve_is_empty():
    for attrs in ({}, {"curve": []}, {"curve": None}):
        fig = figures.curve_figure(attrs, "top1")
        assert fig["data"] == []
        assert "no epoch finished" in fig["layout"]["title"]["text"]


def test_curve_figure_plots_the_metric_and_the_loss(grid_results):
    attrs = _by_number(grid_results)[4].attrs  # the PRUNED trial's three epochs
    fig = figures.curve_figure(attrs, "top1")
    metric, loss = fig["data"]
    assert metric["x"] == loss["x"] == [1, 2, 3]
    assert metric["y"] == [61.0, 62.0, 63.0] and loss["y"] == pytest.approx([1.0, 0.5, 1 / 3])
    assert loss["yaxis"] == "y2"
