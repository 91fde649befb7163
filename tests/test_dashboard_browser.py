"""The dashboard in a real browser: headless Debian Chromium driven by Playwright.

A real (tiny) study is run through `ablate run`; the dashboard is served over its
database; the browser opens the studies page, follows the link to the Pareto page,
checks the plotted points and the front against the database, clicks a point, lands on
that trial's page, and saves screenshots. Every request the page makes must stay on this
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
from dashboards import Sources, create_app, make_server

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
    results = load_results(f"sqlite:///{study_db}")
    complete = sorted(int(n) for n in results.trials.number[results.trials.state == "COMPLETE"])
    assert len(complete) == 4 and results.pareto

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
    assert plotted == complete
    assert front == results.pareto
    # What is drawn: one marker per COMPLETE trial plus a ring per front member.
    assert page.locator("#pareto-graph .scatterlayer .point").count() == len(complete) + len(front)
    assert page.inner_text("#pareto-front-list") == ", ".join(map(str, results.pareto))
    _save(page, tmp_path, "pareto.png")

    # Click the first plotted point of the first family trace: its trial page opens.
    target = traces[0]["numbers"][0]
    point = page.locator("#pareto-graph .scatterlayer .trace").first.locator(".point").first
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
    _save(page, tmp_path, "table.png")

    page.click("a.tab:has-text('analysis')")
    page.wait_for_selector("#analysis-hypervolume .scatterlayer .trace")
    page.wait_for_selector("#analysis-parallel .scatterlayer .trace")
    _save(page, tmp_path, "analysis.png")

    foreign = [u for u in requests if not u.startswith(served) and not u.startswith("data:")]
    assert not foreign, foreign
