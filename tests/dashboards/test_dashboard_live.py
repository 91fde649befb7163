"""The dashboard's live pages through Dash's HTTP endpoint: overlaid curves of a RUNNING trial that
grow as its epochs are written, the trial table, the log toggle and the analysis plots' sentences.

The RUNNING trial is written the way the runner writes one: through Optuna's storage API
(a new trial, its ``curve`` user attribute after every epoch, the first objective as an
intermediate value at ``step = epoch``), while the dashboard reads the same database.
"""

from __future__ import annotations

import json

import optuna
import pytest

from ablate.dashboards import Sources, create_app
from ablate.results import load_results
from ablate.results.figure_style import FRONT_COLOR, family_colors
from ablate.testing.fake_study import write_fake_study
from tests.dashboards.test_dashboard import _analysis, _callback, _route


def add_running_trial(url: str, family: str, epochs: int, *, with_curve: bool = True,
                      study: str = "generated") -> int:
    """A RUNNING trial of ``family`` with ``epochs`` epochs, written through Optuna's storage API; its number."""
    storage = optuna.storages.RDBStorage(url)
    try:
        trial_id = storage.create_new_trial(storage.get_study_id_from_name(study))
        storage.set_trial_user_attr(trial_id, "arch", {"attention": family})
        storage.set_trial_user_attr(trial_id, "gflops", 0.02)
        extend_running_trial(storage, trial_id, 0, epochs, with_curve=with_curve)
        return storage.get_trial_number_from_id(trial_id)
    finally:
        storage.remove_session()
        storage.engine.dispose()


def extend_running_trial(storage, trial_id: int, done: int, epochs: int, *, with_curve: bool = True) -> None:
    """Epochs ``done + 1 .. epochs`` of a running trial, as the runner stores them."""
    curve = list(storage.get_trial(trial_id).user_attrs.get("curve", []))
    for epoch in range(done + 1, epochs + 1):
        top1 = 20.0 + 10 * epoch
        curve.append({"epoch": epoch, "top1": top1, "train_loss": 2.0 / epoch})
        if with_curve:
            storage.set_trial_user_attr(trial_id, "curve", curve)
        storage.set_trial_intermediate_value(trial_id, epoch, top1)
        storage.set_trial_user_attr(trial_id, "epochs_done", epoch)


def grow(url: str, number: int, epochs: int, study: str = "generated") -> None:
    """Write more epochs of RUNNING trial ``number``."""
    storage = optuna.storages.RDBStorage(url)
    try:
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study), number)
        trial = storage.get_trial(trial_id)
        extend_running_trial(storage, trial_id, len(trial.intermediate_values), epochs,
                             with_curve=bool(trial.user_attrs.get("curve")))
    finally:
        storage.remove_session()
        storage.engine.dispose()


@pytest.fixture()
def live_db(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    write_fake_study(url, n_trials=24, seed=2)
    return url


def _curves(client, key: str, states=("RUNNING",), metric="top1", log=()) -> dict:
    out = _callback(client, "..curves-graph.figure...curves-summary.children..",
                    [{"id": "version", "property": "data", "value": None},
                     {"id": "curves-metric", "property": "value", "value": metric},
                     {"id": "curves-states", "property": "value", "value": list(states)},
                     {"id": "curves-log", "property": "value", "value": list(log)}],
                    [{"id": "url", "property": "pathname", "value": f"/study/{key}/curves"}])
    return out["curves-graph"]["figure"]


def _lines(fig) -> dict[int, dict]:
    return {t["meta"]["number"]: t for t in fig["data"] if t["meta"].get("kind") == "curve"}


def test_curves_of_a_running_trial_grow_with_each_epoch(live_db):
    number = add_running_trial(live_db, "lavit", 2)
    bare = add_running_trial(live_db, "softmax", 1, with_curve=False)  # intermediate values only
    sources = Sources([live_db])
    client = create_app(sources).server.test_client()
    (ref,) = sources.studies()[0]
    assert "curves-graph" in _route(client, f"/study/{ref.key}/curves")

    lines = _lines(_curves(client, ref.key))
    assert lines[number]["x"] == [1, 2] and lines[number]["y"] == [30.0, 40.0]
    assert lines[number]["line"]["color"] == family_colors([])["lavit"] != FRONT_COLOR
    assert lines[bare]["y"] == [30.0]  # read from the intermediate values
    assert {t["meta"]["state"] for t in lines.values()} == {"RUNNING"}

    def poll(seen):
        return _callback(client, "version.data", [{"id": "tick", "property": "n_intervals", "value": 1}],
                         [{"id": "url", "property": "pathname", "value": f"/study/{ref.key}/curves"},
                          {"id": "version", "property": "data", "value": seen}])

    seen = poll(None)["version"]["data"]
    grow(live_db, number, 4)
    assert poll(seen)["version"]["data"] != seen  # the poll sees the new epochs and re-draws
    assert _lines(_curves(client, ref.key))[number]["x"] == [1, 2, 3, 4]
    grow(live_db, bare, 3)
    assert _lines(_curves(client, ref.key))[bare]["x"] == [1, 2, 3]

    # finished trials join when ticked, each family keeping its colour
    every = _lines(_curves(client, ref.key, states=("RUNNING", "COMPLETE", "PRUNED", "FAIL")))
    assert len(every) > len(lines) and every[number]["line"]["color"] == lines[number]["line"]["color"]
    loss = _curves(client, ref.key, metric="train_loss", log=("y",))
    assert loss["layout"]["yaxis"]["type"] == "log"


def test_curves_page_of_a_study_with_nothing_running_says_so(tmp_path):
    url = f"sqlite:///{tmp_path / 'idle.db'}"
    write_fake_study(url, n_trials=4, seed=1)  # the last two are RUNNING: finish them
    storage = optuna.storages.RDBStorage(url)
    study_id = storage.get_study_id_from_name("generated")
    for t in storage.get_all_trials(study_id):
        if t.state == optuna.trial.TrialState.RUNNING:
            storage.set_trial_state_values(storage.get_trial_id_from_study_id_trial_number(study_id, t.number),
                                           optuna.trial.TrialState.FAIL)
    storage.engine.dispose()
    sources = Sources([url])
    client = create_app(sources).server.test_client()
    (ref,) = sources.studies()[0]
    fig = _curves(client, ref.key)
    assert "No trial is RUNNING" in fig["layout"]["meta"]["note"]


def test_trial_table_lists_every_trial_and_filters_natively(live_db):
    number = add_running_trial(live_db, "lavit", 2)
    sources = Sources([live_db])
    client = create_app(sources).server.test_client()
    (ref,) = sources.studies()[0]
    page = json.loads(_route(client, f"/study/{ref.key}/trials"))
    text = json.dumps(page)
    assert '"filter_action": "native"' in text and '"sort_action": "native"' in text
    results = load_results(live_db)
    rows = _callback(client, "trials-table.data", [{"id": "version", "property": "data", "value": 1}],
                     [{"id": "url", "property": "pathname", "value": f"/study/{ref.key}/trials"}])["trials-table"]["data"]
    assert sorted(r["number"] for r in rows) == sorted(int(n) for n in results.trials.number)
    mine = next(r for r in rows if r["number"] == number)
    assert mine["state"] == "RUNNING" and mine["family"] == "lavit" and mine["value.gflops"] == 0.02
    assert mine["link"] == f"[{number}](/study/{ref.key}/trial/{number})"
    done = next(r for r in rows if r["state"] == "COMPLETE")
    assert isinstance(done["value.top1"], float) and isinstance(done["param.embed_dim"], int)


def test_pareto_log_toggle_and_analysis_sentences(live_db):
    sources = Sources([live_db])
    client = create_app(sources).server.test_client()
    (ref,) = sources.studies()[0]

    def pareto(log):
        return _callback(client, "..pareto-graph.figure...pareto-summary.children..",
                         [{"id": "version", "property": "data", "value": None},
                          {"id": "pareto-states", "property": "value", "value": ["PRUNED"]},
                          {"id": "pareto-x", "property": "value", "value": "gflops"},
                          {"id": "pareto-log", "property": "value", "value": log}],
                         [{"id": "url", "property": "pathname", "value": f"/study/{ref.key}/pareto"}]
                         )["pareto-graph"]["figure"]

    assert pareto(["x"])["layout"]["xaxis"]["type"] == "log"
    assert "type" not in pareto([])["layout"]["xaxis"]
    analysis = _analysis(client, ref.key)
    configs = analysis["analysis-configs"]["figure"]
    assert any(t["error_y"]["array"] for t in configs["data"] if t["meta"]["kind"] == "config-means")
    assert analysis["analysis-importance"]["figure"]["data"][0]["x"]  # enough trials: bars, no sentence


def test_analysis_of_a_tiny_study_says_what_is_missing(tmp_path):
    url = f"sqlite:///{tmp_path / 'tiny.db'}"
    write_fake_study(url, n_trials=4, seed=5, repeats=1)
    sources = Sources([url])
    client = create_app(sources).server.test_client()
    (ref,) = sources.studies()[0]
    analysis = _analysis(client, ref.key)
    note = analysis["analysis-importance-note"]["children"]
    assert "needs at least 5 COMPLETE trials" in note and "the study has" in note
    assert analysis["analysis-importance"]["figure"]["layout"]["meta"]["note"] == note
    assert "no error bars" in analysis["analysis-configs"]["figure"]["layout"]["meta"]["note"]
    hv = analysis["analysis-hypervolume"]["figure"]["layout"].get("meta", {}).get("note")
    assert hv is None or "COMPLETE" in hv
