"""Dashboard and report speed on a large study: every page under 2 s, the HTML report under 5 s.

A study of ``--trials`` generated trials (:func:`ablate.testing.fake_study.write_fake_study`: the
shape of a real study, values made up, nothing trained) and a baseline study of
``--baseline-trials`` are written to a temporary folder. Then, for each study:

* ``ablate report --format html`` is run as a user runs it (a fresh process, imports
  included) and timed;
* the dashboard is served in this process and headless Chromium opens each page twice:
  *cold* (a fresh browser context, nothing cached: what the first visit costs, plotly.js
  parsing included) and *warm* (the same page again, as when a user comes back to it). A
  page counts as rendered when its plots are drawn (the SVG traces exist), not when the
  HTML arrives.

Ratios are large study / baseline study, measured in the same process, so the cost of the
trials' number is separated from the browser's and the machine's fixed costs.

Usage::

    .venv/bin/python benchmarks/dashboard.py                  # 2,000 trials against 20
    .venv/bin/python benchmarks/dashboard.py --trials 500 --json

Needs Debian's chromium at /usr/bin/chromium and the ``playwright`` package (the test extra).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

#: page -> (path suffix, selector that exists once the page is drawn)
PAGES = {
    "studies": ("/", "#studies-table td"),
    "pareto": ("pareto", "#pareto-graph .scatterlayer .trace"),
    "curves": ("curves", "#curves-graph .scatterlayer .trace"),
    "trials": ("trials", "#trials-table td"),
    "trial": ("trial/{trial}", "#trial-curve .scatterlayer .trace"),
    "table": ("table", "#ablation-table td"),
    "analysis": ("analysis", "#analysis-configs .scatterlayer .trace"),
}


def _report_seconds(db: Path, out: Path) -> float:
    ablate = str(Path(sys.executable).with_name("ablate"))
    start = time.perf_counter()
    done = subprocess.run([ablate, "report", str(db), "--format", "html", "-o", str(out)], capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"ablate report failed: {done.stderr}")
    return seconds


def _page_seconds(db: Path) -> dict[str, dict[str, float]]:
    from playwright.sync_api import sync_playwright

    from ablate.dashboards import Sources, create_app, make_server

    sources = Sources([f"sqlite:///{db}"])
    (ref,), _ = sources.studies()
    sources.read(ref)  # what `ablate dashboard` does before printing its address
    server = make_server(create_app(sources), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    trial = int(sources.read(ref).pareto[0])
    out: dict[str, dict[str, float]] = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for name, (suffix, selector) in PAGES.items():
                path = suffix if suffix == "/" else f"/study/{ref.key}/{suffix.format(trial=trial)}"
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = context.new_page()
                times = []
                for _ in range(2):  # cold, then warm
                    start = time.perf_counter()
                    page.goto(base + path, wait_until="commit")
                    page.wait_for_selector(selector, state="attached", timeout=60_000)
                    times.append(time.perf_counter() - start)
                out[name] = {"cold_s": round(times[0], 3), "warm_s": round(times[1], 3)}
                context.close()
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--baseline-trials", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"needs {CHROMIUM} (apt-get install chromium)")

    from ablate.testing.fake_study import write_fake_study

    with tempfile.TemporaryDirectory() as tmp:
        rows = {}
        for label, n in (("baseline", args.baseline_trials), ("large", args.trials)):
            db = Path(tmp) / f"{label}.db"
            start = time.perf_counter()
            write_fake_study(f"sqlite:///{db}", n_trials=n, seed=0)
            if not args.json:
                print(f"wrote {n} generated trials in {time.perf_counter() - start:.1f}s", file=sys.stderr)
            rows[label] = {"trials": n, "report_html_s": round(_report_seconds(db, Path(tmp) / f"{label}.html"), 3),
                           "pages": _page_seconds(db)}
    large, base = rows["large"], rows["baseline"]
    result = {**rows, "ratio": {"report_html": round(large["report_html_s"] / base["report_html_s"], 2),
                                **{p: round(large["pages"][p]["cold_s"] / base["pages"][p]["cold_s"], 2)
                                   for p in PAGES}}}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'':24}{'baseline':>12}{'large':>12}{'ratio':>8}   (baseline {base['trials']} trials, "
          f"large {large['trials']})")
    print(f"{'report --format html':24}{base['report_html_s']:>11.2f}s{large['report_html_s']:>11.2f}s"
          f"{result['ratio']['report_html']:>8.2f}")
    for p in PAGES:
        for kind in ("cold_s", "warm_s"):
            b, l = base["pages"][p][kind], large["pages"][p][kind]
            print(f"{p + ' page, ' + kind[:-2]:24}{b:>11.2f}s{l:>11.2f}s{l / b:>8.2f}")
    worst = max(max(v.values()) for v in large["pages"].values())
    print(f"slowest page of the large study: {worst:.2f}s (target < 2 s); "
          f"report: {large['report_html_s']:.2f}s (target < 5 s)")


if __name__ == "__main__":
    main()
