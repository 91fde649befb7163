"""ablate's per-epoch values in a real optuna-dashboard server, seen in headless Chromium.

Two studies are recorded into one SQLite database by ablate's own recording code (the
driver's :class:`~ablate.run.searcher.StudySearcher`: ``suggest``, one ``on_trial_result`` per
epoch, ``on_trial_complete``, exactly what Ray calls; no training, so this takes seconds): one
with a single objective and one with two. optuna-dashboard (the ``test`` extra) is started
as its own process on 127.0.0.1 at a free port, serving its JavaScript from the installed
package, so it works offline (every request the page makes is checked to stay on loopback).

What optuna-dashboard 0.21 shows: the overlaid "Intermediate values" plot on a study's page,
for single-objective studies only (its page tests ``directions.length === 1``); for a
multi-objective study it lists each trial's intermediate values (``step value``) on the
trial's page. Both are checked against the storage, as is its API for both studies.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.cli_helpers import interrupt

CHROMIUM = "/usr/bin/chromium"
EPOCHS = 3

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                           "(apt-get install chromium; .ci/run does it)"),
]


def _study_spec(tmp_path: Path, name: str, objectives: list[str]) -> dict:
    return {
        "name": name,
        "fixed": {"attention": "softmax", "depths": [1, 1], "embed_dim": 16, "num_heads": 2},
        "grid": {"window_size": [2, 4]},
        "objectives": objectives,
        "data": {"name": "digits", "image_size": 32},
        "train": {"epochs": EPOCHS, "batch_size": 64},
        "storage": f"sqlite:///{tmp_path / 'studies.db'}",
    }


def _record(spec: dict) -> None:
    """Run the study's grid through the searcher as Ray would, with made-up epochs."""
    from ablate.run import open_optuna_study
    from ablate.run.searcher import FINISHED, StudySearcher
    from ablate.study import study_from_dict

    study = study_from_dict(spec, check=False)
    searcher = StudySearcher(study, open_optuna_study(study), budget=2)
    n = 0
    while True:
        config = searcher.suggest(f"t{n}")
        if config == FINISHED or config is None:
            break
        w = config["params"]["window_size"]
        last = {}
        for epoch in range(1, EPOCHS + 1):
            last = {"epoch": epoch, "top1": 10.0 * w + epoch, "train_loss": 1.0 / epoch, "epochs_done": epoch}
            searcher.on_trial_result(f"t{n}", last)
        searcher.on_trial_complete(f"t{n}", {**last, "gflops": 0.01 * w, "params_m": 0.1})
        n += 1
    assert n == 2 and not searcher.live


@pytest.fixture(scope="module")
def studies_db(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("optuna-dashboard")
    _record(_study_spec(root, "single", ["top1"]))
    _record(_study_spec(root, "multi", ["top1", "gflops"]))
    return root / "studies.db"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a loopback URL built here
        return response.read()


@pytest.fixture(scope="module")
def server(studies_db):
    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard (the test extra) is not installed")
    port = _free_port()
    exe = Path(sys.executable).with_name("optuna-dashboard")
    proc = subprocess.Popen([str(exe), f"sqlite:///{studies_db}", "--host", "127.0.0.1", "--port", str(port),
                             "--server", "wsgiref", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(url + "/api/studies")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    interrupt(proc, timeout=5)
                    pytest.fail(f"optuna-dashboard did not start: {proc.stdout.read()[-2000:]}")
                time.sleep(0.3)
        yield url
    finally:
        interrupt(proc, timeout=10)
        assert proc.returncode is not None


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield context.new_page()
    finally:
        context.close()


def _stored(db: Path, name: str) -> dict[int, dict[int, float]]:
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    return {t.number: t.intermediate_values for t in study.get_trials()}


def _study_ids(url: str) -> dict[str, int]:
    return {s["study_name"]: s["study_id"] for s in json.loads(_get(url + "/api/studies"))["study_summaries"]}


def test_the_api_serves_every_epoch_of_both_studies(studies_db, server):
    ids = _study_ids(server)
    for name in ("single", "multi"):
        stored = _stored(studies_db, name)
        assert all(sorted(v) == list(range(1, EPOCHS + 1)) for v in stored.values()), stored
        detail = json.loads(_get(f"{server}/api/studies/{ids[name]}?after=0"))
        assert detail["has_intermediate_values"] is True
        served = {t["number"]: {iv["step"]: iv["value"] for iv in t["intermediate_values"]} for t in detail["trials"]}
        assert served == stored


def test_single_objective_study_page_plots_one_curve_per_trial(studies_db, server, page, tmp_path):
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{server}/dashboard/studies/{_study_ids(server)['single']}")
    page.wait_for_selector("#graph-intermediate-values .scatterlayer .trace", timeout=30_000)
    traces = page.evaluate("() => document.getElementById('graph-intermediate-values').data"
                           ".map(t => ({name: t.name, x: t.x, y: t.y}))")
    stored = _stored(studies_db, "single")
    plotted = {int(t["name"].split("#")[1].split()[0]): dict(zip(t["x"], t["y"])) for t in traces}
    assert plotted == stored and len(plotted) == 2
    assert page.locator("#graph-intermediate-values .scatterlayer .trace .point").count() == 2 * EPOCHS
    shot = tmp_path / "optuna-dashboard-curves.png"
    page.screenshot(path=str(shot), full_page=True)
    keep = os.environ.get("ABLATE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
    assert shot.stat().st_size > 10_000  # a drawn page, not a blank one
    assert requests and all(r.startswith(server) or r.startswith("data:") for r in requests), requests


def test_multi_objective_trial_page_lists_every_epoch(studies_db, server, page):
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    stored = _stored(studies_db, "multi")
    page.goto(f"{server}/dashboard/studies/{_study_ids(server)['multi']}/trials?numbers=1")
    page.wait_for_selector("text=Intermediate Values", timeout=30_000)
    text = page.inner_text("body")
    for step, value in stored[1].items():
        assert f"{step} {value:g}" in text or f"{step} {value}" in text, (step, value, text[-2000:])
    assert all(r.startswith(server) or r.startswith("data:") for r in requests), requests
