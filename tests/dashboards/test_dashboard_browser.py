"""The dashboard in a real browser: headless Debian Chromium driven by Playwright.

The second test serves a generated study with a RUNNING trial written through Optuna's
storage API and checks the live pages: the trial's curve is drawn and grows when an epoch
is written, the trial table filters and sorts natively, the log toggle switches the Pareto
plot's axis, and families keep their registry colours when states are toggled.

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
    # The page polls every second, and a poll may redraw the plot between measuring the point
    # and clicking it: measure and click again (a few times) until the trial's page opens.
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(5):
        point = page.locator("#pareto-graph .scatterlayer .trace").last.locator(".point").first
        box = point.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        try:
            page.wait_for_url(f"**/trial/{target}", timeout=6000)
            break
        except PlaywrightTimeout:
            if attempt == 4:
                raise
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


@pytest.fixture()
def live_served(tmp_path):
    """A generated study plus a RUNNING trial written through Optuna's storage API, served with a 1 s poll."""
    from ablate.testing.fake_study import write_fake_study
    from tests.dashboards.test_dashboard_live import add_running_trial

    url = f"sqlite:///{tmp_path / 'live.db'}"
    write_fake_study(url, n_trials=30, seed=3)  # with PRUNED, FAIL and RUNNING trials
    number = add_running_trial(url, "lavit", 2)
    sources = Sources([url])
    server = make_server(create_app(sources, refresh_s=1.0), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        (ref,) = sources.studies()[0]
        yield url, number, f"http://127.0.0.1:{server.server_port}/study/{ref.key}"
    finally:
        server.shutdown()
        server.server_close()


_TRACES = ("(id) => document.querySelector(id + ' .js-plotly-plot').data"
           ".map(t => ({meta: t.meta || {}, x: t.x, color: (t.line && t.line.color) || (t.marker && t.marker.color)}))")


def _family_colours(page, graph: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for t in page.evaluate(_TRACES, graph):
        if t["meta"].get("family"):
            assert out.setdefault(t["meta"]["family"], t["color"]) == t["color"], t  # one colour per family
    return out


def _table_numbers(page) -> list[int]:
    return [int(t) for t in page.locator("#trials-table tbody tr td[data-dash-column='number']").all_inner_texts()]


def test_live_curves_trial_table_and_log_axes(live_served, page, tmp_path):
    from ablate.results.figure_style import FRONT_COLOR, family_colors
    from tests.dashboards.test_dashboard_live import grow

    url, number, base = live_served
    results = load_results(url)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))

    # Live curves: the RUNNING trial's curve is drawn, and grows when the runner writes an epoch.
    page.goto(base + "/curves")
    page.wait_for_selector("#curves-graph .scatterlayer .trace")
    lines = {t["meta"]["number"]: t for t in page.evaluate(_TRACES, "#curves-graph") if t["meta"].get("kind") == "curve"}
    running = sorted(int(n) for n in results.trials.number[results.trials.state == "RUNNING"])
    assert number in lines and lines[number]["x"] == [1, 2]
    assert set(lines) <= set(running) and {t["meta"]["state"] for t in lines.values()} == {"RUNNING"}
    assert lines[number]["color"] == family_colors([])["lavit"] != FRONT_COLOR
    grow(url, number, 4)
    page.wait_for_function(f"() => document.querySelector('#curves-graph .js-plotly-plot').data"
                           f".some(t => t.meta && t.meta.number === {number} && t.x.length === 4)", timeout=15_000)
    # Ticking the finished states adds their curves; the families keep their colours.
    before = _family_colours(page, "#curves-graph")
    page.click("#curves-states label:has-text('COMPLETE')")
    page.wait_for_function("() => document.querySelector('#curves-graph .js-plotly-plot').data"
                           f".filter(t => t.meta && t.meta.kind === 'curve').length > {len(lines)}")
    after = _family_colours(page, "#curves-graph")
    assert before.items() <= after.items()
    _save(page, tmp_path, "curves.png")

    # The trial table: every trial; the native filter and sort work in the browser.
    page.click("a.tab:has-text('trials')")
    page.wait_for_selector("#trials-table td[data-dash-column='number']")
    assert number in running and sorted(_table_numbers(page)) == sorted(int(n) for n in results.trials.number)
    page.fill("#trials-table th.dash-filter[data-dash-column='state'] input", "RUNNING")
    page.press("#trials-table th.dash-filter[data-dash-column='state'] input", "Enter")
    page.wait_for_function("() => document.querySelectorAll(\"#trials-table td[data-dash-column='number']\").length"
                           f" === {len(running)}")
    assert sorted(_table_numbers(page)) == running
    assert set(page.locator("#trials-table td[data-dash-column='state']").all_inner_texts()) == {"RUNNING"}
    # the runner writes another epoch: the rows refresh on the poll and the filter stays
    grow(url, number, 6)
    page.wait_for_function("(n) => Array.from(document.querySelectorAll('#trials-table tbody tr')).some(tr => {"
                           "const c = (k) => tr.querySelector(`td[data-dash-column='${k}']`);"
                           "return c('number') && c('number').innerText.trim() === String(n)"
                           " && c('attr.epochs_done').innerText.trim() === '6'; })", arg=number, timeout=15_000)
    assert sorted(_table_numbers(page)) == running
    page.fill("#trials-table th.dash-filter[data-dash-column='state'] input", "")
    page.press("#trials-table th.dash-filter[data-dash-column='state'] input", "Enter")
    page.fill("#trials-table th.dash-filter[data-dash-column='value.top1'] input", "> 84")
    page.press("#trials-table th.dash-filter[data-dash-column='value.top1'] input", "Enter")
    above = sorted(int(r.number) for r in results.trials.itertuples() if (r.values or {}).get("top1", 0) > 84)
    assert above
    page.wait_for_function("() => document.querySelectorAll(\"#trials-table td[data-dash-column='number']\").length"
                           f" === {len(above)}")
    assert sorted(_table_numbers(page)) == above
    sort = "#trials-table th.dash-header[data-dash-column='value.top1'] .column-header--sort"
    page.click(sort)  # ascending
    page.wait_for_timeout(300)
    tops = [float(t) for t in page.locator("#trials-table td[data-dash-column='value.top1']").all_inner_texts()]
    assert tops == sorted(tops) and len(tops) == len(above)
    page.click(sort)  # descending
    page.wait_for_timeout(300)
    tops = [float(t) for t in page.locator("#trials-table td[data-dash-column='value.top1']").all_inner_texts()]
    assert tops == sorted(tops, reverse=True)
    _save(page, tmp_path, "trials.png")

    # Pareto: the log toggle switches the axis; showing PRUNED keeps every family's colour.
    page.click("a.tab:has-text('Pareto')")
    page.wait_for_selector("#pareto-graph .scatterlayer .point")

    def xaxis_type() -> str:
        return page.evaluate("() => document.querySelector('#pareto-graph .js-plotly-plot')._fullLayout.xaxis.type")

    start = xaxis_type()
    page.click("#pareto-log label:has-text('log x')")
    page.wait_for_function(f"() => document.querySelector('#pareto-graph .js-plotly-plot')._fullLayout.xaxis.type"
                           f" !== '{start}'")
    assert {start, xaxis_type()} == {"log", "linear"}
    assert (results.trials.state == "PRUNED").any()
    base_colours = _family_colours(page, "#pareto-graph")
    page.click("#pareto-states label:has-text('PRUNED')")
    page.wait_for_function("() => document.querySelector('#pareto-graph .js-plotly-plot').data"
                           ".some(t => t.meta && t.meta.state === 'PRUNED')")
    colours = _family_colours(page, "#pareto-graph")
    assert base_colours.items() <= colours.items() and FRONT_COLOR not in colours.values()
    assert colours == {f: family_colors([])[f] for f in colours} and len(colours) >= 3  # the registry's colours
    _save(page, tmp_path, "pareto-log.png")

    # Analysis: the configuration means with their error bars.
    page.click("a.tab:has-text('analysis')")
    page.wait_for_selector("#analysis-configs .scatterlayer .errorbar")
    assert page.locator("#analysis-configs .scatterlayer .point").count() >= len(results.configs)

    foreign = [u for u in requests if not u.startswith(base.split("/study/")[0]) and not u.startswith("data:")]
    assert not foreign, foreign
