"""The dashboard in a real browser: headless Debian Chromium driven by Playwright.

A real (tiny) study is run through `ablate run`, two seeds per configuration; the
dashboard is served over its database; the browser opens the studies page, follows the
link to the Pareto page, checks the plotted trials, the configuration means with their
error bars and the front of the means against the database, clicks a point, lands on
that trial's page, checks the ablation table's mean ± interval cells and noise floor, and
saves screenshots. Every request the page makes must stay on this
machine (the suite runs in a network namespace with only loopback anyway).

`.ci/run` installs Debian's chromium when it is missing; elsewhere the test is skipped
with a reason when there is no /usr/bin/chromium.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ablate.results import load_results
from ablate.dashboards import Sources, create_app, make_server

CHROMIUM = "/usr/bin/chromium"
ABLATE = str(Path(sys.executable).with_name("ablate"))

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                                    "(apt-get install chromium; .ci/run does it)")

STUDY = """\
name: browser
space: {fixed: {attention: focal}, params: {window_size: {choice: [2, 4]}}}
fixed: {depths: [1, 1], embed_dim: 16, num_heads: 2, focal_level: 2, focal_window: 3, expand_size: 1}
grid: {window_size: [2, 4], mlp_ratio: [1.0, 2.0]}
objectives: [{name: top1, direction: maximize}, {name: gflops, direction: minimize}]
data: {name: digits, image_size: 16}
train: {epochs: 1, batch_size: 128, lr: 3.0e-3}
resources: {cpu: 1}
paper_resolution: 64
reference: {source: "made up for the test", rows: [{window_size: 2, mlp_ratio: 1.0, top1: 50.0}]}
repeats: 2
storage: sqlite:///runs/browser.db
"""


@pytest.fixture(scope="module")
def study_db(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    (root / "study.yaml").write_text(STUDY)
    run = subprocess.run([ABLATE, "run", "study.yaml", "--quiet"], cwd=root, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return root / "runs" / "browser.db"


@pytest.fixture()
def served(study_db):
    server = make_server(create_app(Sources([study_db.parent]), refresh_s=1.0), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            yield browser.new_page(viewport={"width": 1300, "height": 950})
        finally:
            browser.close()


def _save(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("ABLATE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / name)
    assert path.stat().st_size > 10_000  # a drawn page, not a blank one
    return path


def test_pareto_plot_click_through_to_a_trial(study_db, served, page, tmp_path):
    from ablate.results.report import front_text

    results = load_results(f"sqlite:///{study_db}")
    complete = sorted(int(n) for n in results.trials.number[results.trials.state == "COMPLETE"])
    assert len(complete) == 8 and [c["n"] for c in results.configs] == [2, 2, 2, 2]
    first = {c["key"]: c["trials"][0] for c in results.configs}

    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(served + "/")
    page.wait_for_selector("#studies-table")
    assert "browser" in page.inner_text("#studies-table")
    page.click("#studies-table a:has-text('browser')")
    page.wait_for_selector("#pareto-graph .scatterlayer .point")
    page.wait_for_function("document.querySelector('#pareto-front-list') !== null")

    traces = page.evaluate("() => document.querySelector('#pareto-graph .js-plotly-plot').data"
                           ".map(t => ({kind: t.meta.kind, numbers: t.customdata}))")
    plotted = sorted(n for t in traces if t["kind"] == "trials" for n in t["numbers"])
    front = sorted(n for t in traces if t["kind"] == "front" for n in t["numbers"])
    means = sorted(n for t in traces if t["kind"] in ("configs", "front") for n in t["numbers"])
    assert plotted == complete
    assert front == sorted(first[k] for k in results.pareto_configs) and front
    assert means == sorted(first.values())  # every configuration's mean, once
    # What is drawn: one marker per COMPLETE trial plus one per configuration mean (ringed
    # on the front), and error bars on the means.
    assert page.locator("#pareto-graph .scatterlayer .point").count() == len(complete) + len(first)
    assert page.locator("#pareto-graph .scatterlayer .errorbar").count() >= len(first)
    assert page.inner_text("#pareto-front-list") == front_text(results)
    assert page.inner_text("#pareto-noise").startswith("Noise floor: ")
    _save(page, tmp_path, "pareto.png")

    # Click the first point of the front (drawn last, on top of the trials and means): the
    # first trial of that configuration opens.
    target = traces[-1]["numbers"][0]
    assert traces[-1]["kind"] == "front"
    point = page.locator("#pareto-graph .scatterlayer .trace").last.locator(".point").first
    box = point.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_url(f"**/trial/{target}")
    page.wait_for_selector("#trial-curve .scatterlayer .trace")
    assert page.inner_text("#trial-title").startswith(f"trial {target}")
    assert '"window_size"' in page.inner_text("#trial-arch")
    _save(page, tmp_path, "trial.png")

    # The ablation table: one row per grid cell, the reference value beside its row.
    page.click("a.tab:has-text('ablation table')")
    page.wait_for_selector("#ablation-table td")
    table_text = page.inner_text("#ablation-table")
    assert "Top-1 (%) (paper)" in table_text and "50" in table_text
    assert page.locator("#ablation-table tbody tr").count() == 1 + 4  # header row + 4 cells
    assert "verdict" in table_text and "baseline" in table_text
    assert any(" ± " in line for line in table_text.splitlines()) or all(
        c["std"]["top1"] == 0 for c in results.configs)  # mean ± 95 % interval unless the seeds agree exactly
    assert page.inner_text("#ablation-noise").startswith("Noise floor: ")
    _save(page, tmp_path, "table.png")

    page.click("a.tab:has-text('analysis')")
    page.wait_for_selector("#analysis-hypervolume .scatterlayer .trace")
    page.wait_for_selector("#analysis-parallel .scatterlayer .trace")
    _save(page, tmp_path, "analysis.png")

    foreign = [u for u in requests if not u.startswith(served) and not u.startswith("data:")]
    assert not foreign, foreign
