"""`ablate dashboard` and `ablate report` without a browser: routing, callbacks, bad input.

The dashboard's callbacks are driven through Dash's own HTTP endpoint with Flask's test
client, exactly as the browser calls them; the browser test (test_dashboard_browser.py)
checks the drawn pages.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from ablate.testing.fake_study import write_fake_study
from ablate.results import StudyReader, load_results
from ablate.dashboards import Sources, create_app, make_server
from ablate.dashboards.app import _parse
from tests.cli_helpers import interrupt, run_cli

ABLATE = str(Path(sys.executable).with_name("ablate"))
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fake_db(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("dash") / "gen.db"
    write_fake_study(f"sqlite:///{path}", n_trials=40, seed=1)
    return str(path)


def _callback(client, output: str, inputs: list[dict], state: list[dict] | None = None,
              changed: list[str] | None = None) -> dict:
    """POST one callback the way dash-renderer does; returns the response's ``response`` object."""
    outputs = [dict(zip(("id", "property"), o.split("."))) for o in output.strip(".").split("...")]
    payload = {"output": output, "outputs": outputs[0] if len(outputs) == 1 else outputs, "inputs": inputs,
               "state": state or [], "changedPropIds": changed or [f"{i['id']}.{i['property']}" for i in inputs[:1]]}
    res = client.post("/_dash-update-component", json=payload)
    assert res.status_code in (200, 204), res.data[:500]
    return res.get_json()["response"] if res.status_code == 200 else {}


def _analysis(client, key: str, objective: str = "top1") -> dict:
    """Every figure of a study's analysis page, as one callback returns them."""
    return _callback(client, "..analysis-parallel.figure...analysis-configs.figure..."
                             "analysis-importance-note.children...analysis-importance.figure..."
                             "analysis-hypervolume.figure..",
                     [{"id": "version", "property": "data", "value": None},
                      {"id": "analysis-objective", "property": "value", "value": objective}],
                     [{"id": "url", "property": "pathname", "value": f"/study/{key}/analysis"}])


def _route(client, path: str) -> str:
    out = _callback(client, "page.children", [{"id": "url", "property": "pathname", "value": path},
                                              {"id": "version", "property": "data", "value": None}])
    return json.dumps(out)


def test_paths_parse():
    assert _parse("/") == ("studies", None, None)
    assert _parse("/study/ab12/pareto") == ("pareto", "ab12", None)
    assert _parse("/study/ab12/trial/17") == ("trial", "ab12", 17)
    assert _parse("/study/ab12/table/") == ("table", "ab12", None)
    assert _parse("/nope") == ("missing", None, None)


def test_every_page_renders_through_the_callbacks(fake_db):
    sources = Sources([f"sqlite:///{fake_db}"])
    client = create_app(sources).server.test_client()
    index = client.get("/")
    assert index.status_code == 200
    # Every script and stylesheet is served by this process: no CDN.
    html = index.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and not [a for a in assets if a.startswith(("http:", "https:", "//"))], assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset

    results = load_results(f"sqlite:///{fake_db}")
    page = _route(client, "/")
    assert "generated" in page and f"{(results.trials.state == 'COMPLETE').sum()}" in page
    (ref,) = sources.studies()[0]
    assert ref.key in page
    for path, needle in [(f"/study/{ref.key}/pareto", "pareto-graph"), (f"/study/{ref.key}/table", "ablation-table"),
                         (f"/study/{ref.key}/analysis", "analysis-hypervolume"),
                         (f"/study/{ref.key}/trial/3", "trial-arch")]:
        assert needle in _route(client, path), path

    fig = _callback(client, "..pareto-graph.figure...pareto-summary.children..",
                    [{"id": "version", "property": "data", "value": None},
                     {"id": "pareto-states", "property": "value", "value": []},
                     {"id": "pareto-x", "property": "value", "value": "gflops"},
                     {"id": "pareto-log", "property": "value", "value": []}],
                    [{"id": "url", "property": "pathname", "value": f"/study/{ref.key}/pareto"}])
    data = fig["pareto-graph"]["figure"]["data"]
    plotted = sum(len(t["customdata"]) for t in data if t["meta"]["kind"] == "trials")
    front = next(t for t in data if t["meta"]["kind"] == "front")
    assert plotted == (results.trials.state == "COMPLETE").sum()
    # the generated study has three seeds per configuration: the front is on the means, each
    # configuration drawn once with error bars, the indistinguishable ones apart
    first = {c["key"]: c["trials"][0] for c in results.configs}
    assert sorted(front["customdata"]) == sorted(first[k] for k in results.pareto_configs)
    near = next(t for t in data if t["meta"].get("class") == "near")
    assert sorted(near["customdata"]) == sorted(first[k] for k in results.indistinguishable)
    assert near["error_y"]["visible"] and len(near["error_y"]["array"]) == len(near["x"])
    summary = json.dumps(fig["pareto-summary"]["children"])
    assert "Noise floor: top1 varies by" in summary and "pareto-near-list" in summary
    table = json.dumps(json.loads(_route(client, f"/study/{ref.key}/table")), ensure_ascii=False)
    assert " ± " in table and "≈" in table and "Noise floor" in table  # mean ± CI, indistinguishable marks
    trial = _route(client, f"/study/{ref.key}/trial/{results.configs[0]['trials'][1]}")
    assert f"configuration {results.configs[0]['key']}: n = " in trial

    # A click on a point goes to that trial's page.
    nav = _callback(client, "url.pathname", [{"id": "pareto-graph", "property": "clickData",
                                               "value": {"points": [{"customdata": 7}]}}],
                    [{"id": "url", "property": "pathname", "value": f"/study/{ref.key}/pareto"}])
    assert nav["url"]["pathname"] == f"/study/{ref.key}/trial/7"

    analysis = _analysis(client, ref.key)
    assert analysis["analysis-importance"]["figure"]["data"][0]["type"] == "bar"
    assert analysis["analysis-hypervolume"]["figure"]["data"][0]["y"]


def test_failed_trial_page_shows_its_error_and_bad_paths_are_notices(fake_db):
    sources = Sources([f"sqlite:///{fake_db}"])
    client = create_app(sources).server.test_client()
    (ref,) = sources.studies()[0]
    results = load_results(f"sqlite:///{fake_db}")
    failed = results.trials[results.trials.state == "FAIL"]
    if not failed.empty:
        page = _route(client, f"/study/{ref.key}/trial/{int(failed.number.iloc[0])}")
        assert "generated failure" in page and "trial-error" in page
    assert "no such page" in _route(client, "/whatever")
    assert "not in the dashboard" in _route(client, "/study/0000000000/pareto")
    assert "has no trial 99999" in _route(client, f"/study/{ref.key}/trial/99999")


def test_poll_changes_version_only_when_the_study_changes(tmp_path):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    write_fake_study(url, n_trials=5)
    sources = Sources([url])
    client = create_app(sources).server.test_client()
    (ref,) = sources.studies()[0]
    path = {"id": "url", "property": "pathname", "value": f"/study/{ref.key}/pareto"}

    def poll(seen):
        return _callback(client, "version.data", [{"id": "tick", "property": "n_intervals", "value": 1}],
                         [path, {"id": "version", "property": "data", "value": seen}])

    first = poll(None)["version"]["data"]
    assert poll(first) == {}  # unchanged: no update, nothing re-drawn
    study = optuna.load_study(study_name="generated", storage=url)
    old = study.get_trials()[0]
    study.add_trial(optuna.trial.create_trial(params=old.params, distributions=old.distributions,
                                              values=[99.0, 0.001], user_attrs={"curve": []}))
    assert poll(first)["version"]["data"] != first


def test_reading_never_blocks_the_writer(tmp_path):
    """A reader polling in a loop (as the dashboard does) while a writer adds trials: no lock errors."""
    url = f"sqlite:///{tmp_path / 'wal.db'}"
    write_fake_study(url, n_trials=3)
    reader = StudyReader(url)
    stop, errors = threading.Event(), []

    def read_loop():
        while not stop.is_set():
            try:
                reader.read()
            except Exception as err:  # noqa: BLE001 - any failure is the test's failure
                errors.append(err)

    thread = threading.Thread(target=read_loop)
    thread.start()
    try:
        study = optuna.load_study(study_name="generated", storage=url)
        old = study.get_trials()[0]
        for i in range(20):
            study.add_trial(optuna.trial.create_trial(params=old.params, distributions=old.distributions,
                                                      values=[50.0 + i, 0.01]))
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert len(reader.read().trials) == 23
    with sqlite3.connect(tmp_path / "wal.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_port_in_use_is_one_line_exit_2(fake_db, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = run_cli(capsys, "dashboard", fake_db, "--port", str(port))
    assert code == 2 and err.count("\n") == 1 and f"--port {port}" in err and "Traceback" not in err


@pytest.mark.parametrize("case", ["missing", "not-sqlite", "not-optuna", "bad-url", "study-never-run"])
def test_bad_targets_are_one_line_exit_2(tmp_path, capsys, case):
    if case == "missing":
        target = str(tmp_path / "nope.db")
    elif case == "not-sqlite":
        target = str(tmp_path / "notes.db")
        Path(target).write_text("hello, not a database\n")
    elif case == "not-optuna":
        target = str(tmp_path / "other.db")
        with sqlite3.connect(target) as conn:
            conn.execute("CREATE TABLE foo (x INTEGER)")
    elif case == "bad-url":
        target = "postgresql://nobody@127.0.0.1:1/none"
    else:
        # a valid study file whose database does not exist yet (never run)
        text = (ROOT / "studies" / "window_size.yaml").read_text().replace("../search_spaces/",
                                                                           f"{ROOT}/search_spaces/")
        target = str(tmp_path / "study.yaml")
        Path(target).write_text(re.sub(r"storage: .*", f"storage: sqlite:///{tmp_path / 'absent.db'}", text))
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run_cli(capsys, "dashboard", target, "--port", "0")
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    code, _, err = run_cli(capsys, "report", target)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created


def test_report_of_an_empty_study_is_one_line(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    write_fake_study(url, n_trials=0)
    code, _, err = run_cli(capsys, "report", str(tmp_path / "empty.db"))
    assert code == 2 and "no trials yet" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "report", str(tmp_path / "empty.db"), "--format", "png")
    assert code == 2 and "-o FILE.png" in err


def test_report_formats_from_the_command_line(fake_db, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "report", fake_db)
    assert code == 0 and out.startswith("**") and "Pareto front (top1 / gflops)" in out
    for suffix, magic in [(".tex", b"\\begin{table}"), (".csv", b"trial,"), (".html", b"<!doctype html>"),
                          (".png", b"\x89PNG")]:
        target = tmp_path / f"r{suffix}"
        code, _, err = run_cli(capsys, "report", fake_db, "-o", str(target))
        assert code == 0 and "wrote" in err
        assert target.read_bytes().startswith(magic), suffix


def test_dashboard_command_serves_and_stops_on_ctrl_c(fake_db, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # As in a terminal: SIGINT at its default even when the tests themselves run in a
    # background job (where the shell ignores it, and Python would inherit that).
    proc = subprocess.Popen([ABLATE, "dashboard", fake_db, "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line and "1 study" in line, line + proc.stderr.read()
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as res:
            assert res.status == 200 and b"ablate dashboard" in res.read()
        # bound to loopback only
        listening = [c for c in __import__("psutil").Process(proc.pid).net_connections("inet")
                     if c.status == "LISTEN"]
        assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening)
    finally:
        interrupt(proc, timeout=10)
    assert proc.returncode == 0, proc.stderr.read()


def test_make_server_binds_an_ephemeral_port(fake_db):
    server = make_server(create_app(Sources([f"sqlite:///{fake_db}"])), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        import urllib.request

        start = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/", timeout=10) as res:
            assert res.status == 200
        assert time.perf_counter() - start < 5
    finally:
        server.shutdown()
        server.server_close()
