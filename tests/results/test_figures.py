"""The figure builders' rules: colour means family, PRUNED is never the front's colour, error bars
are the aggregates, an empty or flat plot says why, log axes, and the overlaid learning curves."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ablate.attention import list_attention
from ablate.results import StudyResults, load_results
from ablate.results import figures
from ablate.results.curves import CURVES_MAX, curve_metrics, curves_figure, trial_curve
from ablate.results.figure_style import (FAMILIES, FAMILY_PALETTE, FRONT_COLOR, IMPORTANCE_MIN_TRIALS, MEAN_COLOR,
                                         NEAR_COLOR, family_colors, note_of, registered_families, spans_decades,
                                         with_note)
from ablate.testing.fake_study import write_fake_study
from tests.cli_helpers import run_cli

OBJECTIVES = [{"name": "top1", "direction": "maximize"}, {"name": "gflops", "direction": "minimize"}]
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")


@pytest.fixture(scope="module")
def fake_db(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("figures") / "fake.db"
    write_fake_study(f"sqlite:///{path}", n_trials=60, seed=3)
    return str(path)


@pytest.fixture(scope="module")
def fake(fake_db) -> StudyResults:
    return load_results(f"sqlite:///{fake_db}")


def _results(rows: list[tuple], objectives=OBJECTIVES) -> StudyResults:
    """A study from (number, state, attention, values, attrs[, params]) rows, shaped as the reader shapes it."""
    trials = pd.DataFrame([{"number": r[0], "state": r[1], "params": {"attention": r[2], **(r[5] if len(r) > 5 else
                                                                                              {"i": r[0]})},
                            "values": r[3], "attrs": r[4], **{f"value.{o['name']}": r[3].get(o["name"])
                                                              for o in objectives}} for r in rows])
    return StudyResults(name="s", storage="sqlite:///s.db", objectives=objectives, spec=None, trials=trials)


def _trace_colors(fig) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for t in fig["data"]:
        if t["meta"].get("kind") in ("trials", "curve"):
            out.setdefault(t["meta"]["family"], set()).add(t["marker"]["color"] if "marker" in t and
                                                           isinstance(t["marker"].get("color"), str)
                                                           else t["line"]["color"])
    return out


# --------------------------------------------------------------------------- colours


def test_registered_families_own_fixed_colours_from_the_sorted_registry():
    names = sorted(list_attention())
    assert registered_families() == tuple(names)
    assert FAMILIES == tuple(names), "a family was added to the registry: list it in figure_style.FAMILIES"
    colors = family_colors([])
    assert [colors[n] for n in names] == list(FAMILY_PALETTE[:len(names)])
    # unknown names and mixtures come after the registry, sorted, whatever order they arrive in
    assert family_colors(["zeta", "focal+softmax"]) == family_colors(["focal+softmax", "zeta", "zeta"])
    assert family_colors(["zeta"])["focal"] == colors["focal"]


def test_no_family_is_drawn_in_the_front_near_or_mean_colour():
    many = family_colors([f"mix{i}" for i in range(40)])  # past the palette's length it cycles, never into red
    assert not {FRONT_COLOR, NEAR_COLOR, MEAN_COLOR} & set(many.values())
    assert FRONT_COLOR.lower() not in {c.lower() for c in FAMILY_PALETTE}


def test_family_colours_do_not_move_when_states_are_toggled(fake):
    base = _trace_colors(figures.pareto_figure(fake))
    every = _trace_colors(figures.pareto_figure(fake, states=STATES))
    expected = family_colors([])
    assert len(base) >= 3 and set(base) <= set(every)
    for family, colors in every.items():
        assert colors == {expected[family]}, family  # one colour per family, the registry's
        if family in base:
            assert base[family] == colors


def test_family_colours_do_not_depend_on_the_order_trials_appear():
    rows = [(0, "COMPLETE", "softmax", {"top1": 70.0, "gflops": 1.0}, {"gflops": 1.0}),
            (1, "COMPLETE", "focal", {"top1": 75.0, "gflops": 2.0}, {"gflops": 2.0}),
            (2, "PRUNED", "flatten", {}, {"gflops": 0.5, "curve": [{"epoch": 1, "top1": 40.0}]})]
    reordered = [(n, *r[1:]) for n, r in enumerate(reversed(rows))]
    a = _trace_colors(figures.pareto_figure(_results(rows), states=STATES))
    b = _trace_colors(figures.pareto_figure(_results(reordered), states=STATES))
    assert a == b and len(a) == 3


def test_pruned_trials_are_never_in_the_front_colour(fake):
    fig = figures.pareto_figure(fake, states=STATES)
    front = next(t for t in fig["data"] if t["meta"]["kind"] == "front")
    assert front["line"]["color"] == front["marker"]["color"] == FRONT_COLOR
    pruned = [t for t in fig["data"] if t["meta"].get("state") == "PRUNED"]
    assert pruned
    for t in pruned:
        assert t["marker"]["color"] != FRONT_COLOR and t["marker"]["line"]["color"] != FRONT_COLOR
        assert t["marker"]["symbol"] != front["marker"]["symbol"]


# --------------------------------------------------------------------------- error bars = aggregates


def test_configuration_error_bars_are_the_aggregates_show_prints(fake_db, fake, capsys):
    code, out, err = run_cli(capsys, "show", fake_db, "--format", "json")
    assert code == 0, err
    shown = {c["key"]: c for c in json.loads(out)["configs"]}
    fig = figures.config_figure(fake, "top1")
    drawn = 0
    for t in fig["data"]:
        if t["meta"].get("kind") != "config-means":
            continue
        for key, y, plus, minus in zip(t["meta"]["keys"], t["y"], t["error_y"]["array"], t["error_y"]["arrayminus"]):
            c = shown[key]
            assert y == pytest.approx(c["mean"]["top1"])
            lo, hi = c["ci95"]["top1"] or (c["mean"]["top1"],) * 2
            assert y + plus == pytest.approx(hi) and y - minus == pytest.approx(lo)
            drawn += 1
    assert drawn == len(shown) and any(c["ci95"]["top1"] for c in shown.values())
    traces = [t for t in fig["data"] if t["meta"]["kind"] == "config-means"]
    means = [y for t in traces for y in t["y"]]
    assert note_of(fig) is None and len(means) == drawn
    # best first: the x positions follow the means, highest top-1 at 0
    order = sorted((x, y) for t in traces for x, y in zip(t["x"], t["y"]))
    assert [y for _, y in order] == sorted(means, reverse=True)
    # the front's configurations are ringed in the front's colour, and only they
    (ring,) = [t for t in fig["data"] if t["meta"]["kind"] == "config-front"]
    assert sorted(ring["meta"]["keys"]) == sorted(fake.pareto_configs) and ring["marker"]["color"] == FRONT_COLOR
    assert all(t["marker"]["color"] != FRONT_COLOR for t in traces)


def test_pareto_means_and_intervals_are_the_aggregates(fake):
    fig = figures.pareto_figure(fake)
    by_key = {c["key"]: c for c in fake.configs}
    seen = 0
    for t in fig["data"]:
        if t["meta"]["kind"] not in ("configs", "front"):
            continue
        for key, y, plus, minus in zip(t["meta"]["keys"], t["y"], t["error_y"]["array"], t["error_y"]["arrayminus"]):
            c = by_key[key]
            lo, hi = c["ci95"]["top1"] or (c["mean"]["top1"],) * 2
            assert y == pytest.approx(c["mean"]["top1"]) and (y - minus, y + plus) == pytest.approx((lo, hi))
            seen += 1
    assert seen == len(by_key)


def test_one_run_per_configuration_says_there_are_no_error_bars():
    rows = [(i, "COMPLETE", "focal", {"top1": 70.0 + i, "gflops": 1.0 + i}, {"gflops": 1.0 + i}) for i in range(3)]
    fig = figures.config_figure(_results(rows), "top1")
    assert "no error bars" in note_of(fig) and "3 configuration(s)" in note_of(fig)
    assert all(v == 0 for t in fig["data"] if "error_y" in t for v in t["error_y"]["array"])


# --------------------------------------------------------------------------- empty and flat plots


def test_every_plot_of_an_empty_study_says_why():
    empty = _results([])
    assert empty.trials.empty
    assert "No trials yet" in note_of(figures.pareto_figure(empty))
    assert "none yet" in note_of(figures.hypervolume_figure(empty))
    assert "No COMPLETE trial" in note_of(figures.parallel_figure(empty, "top1"))
    assert "No COMPLETE trial" in note_of(figures.config_figure(empty, "top1"))
    assert "No trials yet" in note_of(curves_figure(empty, "top1"))
    note = figures.importance_note(empty)
    assert f"at least {IMPORTANCE_MIN_TRIALS} COMPLETE" in note and "has 0" in note


def test_hypervolume_says_why_it_is_flat():
    one = _results([(0, "COMPLETE", "focal", {"top1": 70.0, "gflops": 1.0}, {})])
    assert "at least 2 COMPLETE trials; the study has 1" in note_of(figures.hypervolume_figure(one))
    # two trials that only trade one objective for the other: the nadir is their corner, area 0
    trade = _results([(0, "COMPLETE", "focal", {"top1": 70.0, "gflops": 1.0}, {}),
                      (1, "COMPLETE", "softmax", {"top1": 80.0, "gflops": 2.0}, {})])
    fig = figures.hypervolume_figure(trade)
    assert fig["data"][0]["y"] == [0.0, 0.0]
    assert note_of(fig).startswith("Flat at 0: none of the 2 COMPLETE trials beats the reference point")
    rising = _results([(0, "COMPLETE", "focal", {"top1": 70.0, "gflops": 2.0}, {}),
                       (1, "COMPLETE", "softmax", {"top1": 80.0, "gflops": 1.0}, {})])
    fig = figures.hypervolume_figure(rising)
    assert fig["data"][0]["y"][-1] > 0 and note_of(fig) is None
    three = _results([(0, "COMPLETE", "focal", {"top1": 70.0, "gflops": 2.0, "params_m": 1.0}, {})],
                     objectives=[*OBJECTIVES, {"name": "params_m", "direction": "minimize"}])
    assert "has 3" in note_of(figures.hypervolume_figure(three))


def test_importance_says_how_many_trials_there_are_and_are_needed():
    few = _results([(i, "COMPLETE", "focal", {"top1": 70.0, "gflops": 1.0}, {}) for i in range(3)])
    note = figures.importance_note(few)
    assert f"at least {IMPORTANCE_MIN_TRIALS} COMPLETE trials" in note and "the study has 3" in note
    same = _results([(i, "COMPLETE", "focal", {"top1": 70.0 + i, "gflops": 1.0}, {}, {"w": 2})
                     for i in range(IMPORTANCE_MIN_TRIALS + 1)])
    assert "settings that vary" in figures.importance_note(same)
    varied = _results([(i, "COMPLETE", "focal", {"top1": 70.0 + i, "gflops": 1.0}, {}, {"w": i % 2})
                       for i in range(IMPORTANCE_MIN_TRIALS)])
    assert figures.importance_note(varied) is None
    fig = figures.importance_figure({}, "top1", "", note="why")
    assert note_of(fig) == "why" and fig["layout"]["annotations"][-1]["text"] == "why"


def test_a_plot_with_only_hidden_states_says_to_tick_them():
    rows = [(0, "PRUNED", "focal", {}, {"gflops": 1.0, "curve": [{"epoch": 1, "top1": 40.0}]})]
    fig = figures.pareto_figure(_results(rows))
    assert "tick another state" in note_of(fig)
    assert note_of(figures.pareto_figure(_results(rows), states=STATES)) is None


def test_with_note_keeps_the_figure_and_adds_one_sentence():
    fig = with_note({"data": [1], "layout": {"meta": {"a": 1}}}, "because")
    assert fig["data"] == [1] and fig["layout"]["meta"] == {"a": 1, "note": "because"}
    assert with_note({"data": []}, None) == {"data": []} and note_of({"data": []}) is None


# --------------------------------------------------------------------------- log axes


@pytest.mark.parametrize(("values", "decades", "expected"), [
    ([0.001, 0.5], 1.0, True), ([1, 9.9], 1.0, False), ([1, 10], 1.0, True), ([0.0, 10.0], 1.0, False),
    ([-1.0, 10.0], 0.0, False), ([1.0, None, "x", float("nan"), 100.0], 1.0, True), ([], 0.0, False),
    ([2.0], 0.0, True)])
def test_spans_decades(values, decades, expected):
    assert spans_decades(values, decades) is expected


def test_log_axes_apply_only_where_every_value_is_positive(fake):
    fig = figures.pareto_figure(fake, log_x=True, log_y=True)
    assert fig["layout"]["xaxis"]["type"] == "log" and fig["layout"]["yaxis"]["type"] == "log"
    assert "type" not in figures.pareto_figure(fake)["layout"]["xaxis"]
    rows = [(0, "COMPLETE", "focal", {"top1": 0.0, "gflops": 0.0}, {}),
            (1, "COMPLETE", "focal", {"top1": 50.0, "gflops": 1.0}, {})]
    fig = figures.pareto_figure(_results(rows), log_x=True, log_y=True)
    assert "type" not in fig["layout"]["xaxis"] and "type" not in fig["layout"]["yaxis"]
    # the axis type does not change with the shown states (it is decided on every trial)
    assert figures.pareto_figure(fake, states=STATES, log_x=True)["layout"]["xaxis"]["type"] == "log"


# --------------------------------------------------------------------------- learning curves


def test_trial_curve_prefers_the_curve_attribute_and_falls_back_to_intermediate_values():
    attrs = {"curve": [{"epoch": 1, "top1": 10.0, "train_loss": 2.0}]}
    assert trial_curve(attrs, {1: 99.0}, "top1") == attrs["curve"]
    assert trial_curve({}, {2: 20.0, 1: 10.0, "bad": "x"}, "top1") == [{"epoch": 1, "top1": 10.0},
                                                                       {"epoch": 2, "top1": 20.0}]
    assert trial_curve({"curve": None}, None, "top1") == []
    fig = figures.curve_figure({}, "top1", {1: 10.0, 2: 20.0})
    assert fig["data"][0]["y"] == [10.0, 20.0]


def test_curves_overlay_running_trials_by_default(fake):
    running = fake.trials[fake.trials.state == "RUNNING"]
    with_curves = sorted(int(r.number) for r in running.itertuples() if r.attrs.get("curve"))
    assert with_curves
    fig = curves_figure(fake, "top1")
    lines = [t for t in fig["data"] if t["meta"]["kind"] == "curve"]
    assert sorted(t["meta"]["number"] for t in lines) == with_curves
    rows = {int(r.number): r for r in fake.trials.itertuples()}
    colors = family_colors([])
    for t in lines:
        curve = rows[t["meta"]["number"]].attrs["curve"]
        assert t["x"] == [c["epoch"] for c in curve] and t["y"] == [c["top1"] for c in curve]
        assert t["line"]["color"] == colors[t["meta"]["family"]] and t["line"]["width"] == 3
        assert set(t["customdata"]) == {t["meta"]["number"]}
    legend = [t["name"] for t in fig["data"] if t["meta"]["kind"] == "legend"]
    assert legend == sorted({t["meta"]["family"] for t in lines})
    every = curves_figure(fake, "top1", states=STATES)
    assert _trace_colors(every).items() >= _trace_colors(fig).items()  # colours unchanged by the toggle
    assert len([t for t in every["data"] if t["meta"]["kind"] == "curve"]) > len(lines)


def test_curves_read_intermediate_values_when_there_is_no_curve():
    rows = [(0, "RUNNING", "focal", {}, {})]
    results = _results(rows)
    results.trials["intermediate"] = [{0: 10.0, 1: 30.0}]
    fig = curves_figure(results, "top1")
    (line,) = [t for t in fig["data"] if t["meta"]["kind"] == "curve"]
    assert line["x"] == [0, 1] and line["y"] == [10.0, 30.0]
    assert curve_metrics(results) == ["top1"]


def test_curves_cap_finished_trials_and_say_why_when_empty(monkeypatch):
    import ablate.results.curves as curves

    monkeypatch.setattr(curves, "CURVES_MAX", 3)
    rows = [(i, "COMPLETE", "softmax", {"top1": 1.0, "gflops": 1.0}, {"curve": [{"epoch": 1, "top1": float(i)}]})
            for i in range(6)]
    rows.append((6, "RUNNING", "focal", {}, {}))
    results = _results(rows)
    fig = curves.curves_figure(results, "top1", states=STATES)
    assert [t["meta"]["number"] for t in fig["data"] if t["meta"]["kind"] == "curve"] == [3, 4, 5]
    note = note_of(curves.curves_figure(results, "top1"))
    assert "None of the 1 RUNNING trial(s) has finished an epoch" in note
    assert "No trial is RUNNING" in note_of(curves.curves_figure(_results(rows[:6]), "top1"))
    assert CURVES_MAX >= 100


def test_log_y_on_curves_only_for_positive_values():
    rows = [(0, "RUNNING", "focal", {}, {"curve": [{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 0.01}]})]
    assert curves_figure(_results(rows), "train_loss", log_y=True)["layout"]["yaxis"]["type"] == "log"
    rows = [(0, "RUNNING", "focal", {}, {"curve": [{"epoch": 1, "train_loss": 0.0}]})]
    assert "type" not in curves_figure(_results(rows), "train_loss", log_y=True)["layout"]["yaxis"]


def test_configuration_means_show_the_best_few_and_say_how_many(fake, monkeypatch):
    monkeypatch.setattr(figures, "CONFIGS_MAX", 5)
    fig = figures.config_figure(fake, "top1")
    means = sorted((y for t in fig["data"] if t["meta"]["kind"] == "config-means" for y in t["y"]), reverse=True)
    best = sorted((c["mean"]["top1"] for c in fake.configs), reverse=True)[:5]
    assert means == pytest.approx(best) and len(fake.configs) > 5
    assert f"the 5 best of {len(fake.configs)} configurations" in fig["layout"]["title"]["text"]
    assert len(fig["layout"]["xaxis"]["ticktext"]) == 5


def test_curves_skip_what_cannot_be_plotted():
    """Foreign or damaged curves: not a list, records that are not dicts, flags, NaN, infinities, bad steps."""
    rows = [(0, "RUNNING", "focal", {}, {"curve": "not a list"}),
            (1, "RUNNING", "focal", {}, {"curve": [1, None, {"epoch": 1, "top1": float("nan")},
                                                  {"epoch": 2, "top1": True}, {"epoch": 3, "top1": 50.0},
                                                  {"epoch": 4, "top1": float("inf")}]})]
    results = _results(rows)
    results.trials["intermediate"] = [{"x": 1.0, 1: float("nan"), 2: 20.0, 3: "bad"}, {}]
    lines = {t["meta"]["number"]: t for t in curves_figure(results, "top1")["data"] if t["meta"]["kind"] == "curve"}
    assert lines[0]["x"] == [2] and lines[0]["y"] == [20.0]  # the bad curve attribute falls back to intermediate
    assert lines[1]["x"] == [3] and lines[1]["y"] == [50.0]
    assert curve_metrics(results) == ["top1"]


def test_intermediate_values_are_named_after_the_first_training_objective():
    from ablate.results.curves import curve_objective

    costs_first = [{"name": "gflops", "direction": "minimize"}, {"name": "top1", "direction": "maximize"}]
    results = _results([(0, "RUNNING", "focal", {}, {})], objectives=costs_first)
    results.trials["intermediate"] = [{1: 42.0}]
    assert curve_objective(results) == "top1"
    (line,) = [t for t in curves_figure(results, "top1")["data"] if t["meta"]["kind"] == "curve"]
    assert line["y"] == [42.0]
    assert curve_objective(_results([], objectives=[{"name": "gflops", "direction": "minimize"}])) == "gflops"
