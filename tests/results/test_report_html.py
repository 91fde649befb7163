"""The HTML report (and the Markdown and LaTeX ones) can be shared: one copy of plotly.js, no
absolute path (storage, data folder, working directory, temporary folder), whatever folder
the study lives in and whichever folder the report is made from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from ablate.results import load_results
from ablate.results.report import render_report, shown_storage, strip_paths
from ablate.testing.fake_study import write_fake_study

ABLATE = str(Path(sys.executable).with_name("ablate"))


def _study_with_paths(tmp_path: Path) -> tuple[Path, Path]:
    """A generated study in a folder with a space and an ampersand in its name, whose stored
    spec names a data folder and a search-space file by absolute path."""
    where = tmp_path / "my runs & more"
    where.mkdir()
    db = where / "paths.db"
    url = f"sqlite:///{db}"
    write_fake_study(url, 24, name="paths")
    data = tmp_path / "data_set" / "images"
    storage = optuna.storages.RDBStorage(url)
    study = optuna.load_study(study_name="paths", storage=storage)
    spec = dict(study.user_attrs["spec"])
    spec["data"] = {**spec["data"], "name": "imagefolder", "path": str(data)}
    spec["description"] = f"made in {tmp_path} from {os.getcwd()}"
    spec["space_file"] = str(tmp_path / "spaces" / "attention.yaml")
    study.set_user_attr("spec", spec)
    storage.engine.dispose()
    return db, data


def _assert_no_absolute_path(text: str, *paths: str) -> None:
    for p in paths:
        for variant in {p, p.replace("&", "&amp;"), p.replace("_", r"\_")}:
            assert variant not in text, f"{variant!r} is in the report"


@pytest.mark.parametrize("fmt", ["html", "md", "latex"])
def test_a_report_names_no_absolute_path(tmp_path, monkeypatch, fmt):
    db, data = _study_with_paths(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    results = load_results(f"sqlite:///{db}")
    page = render_report(results, fmt)
    assert isinstance(page, str)
    _assert_no_absolute_path(page, str(tmp_path), os.getcwd(), str(db), str(data))
    assert "…/images" in page.replace(r"\ldots{}", "…")  # the data folder by name
    if fmt == "html":
        assert "storage <code>…/paths.db</code>" in page


def test_html_holds_plotly_once_and_the_storage_relative_to_the_working_folder(tmp_path, monkeypatch):
    from plotly.offline import get_plotlyjs

    db, _ = _study_with_paths(tmp_path)
    monkeypatch.chdir(tmp_path)
    page = render_report(load_results(f"sqlite:///{db}"), "html")
    assert page.count(get_plotlyjs()) == 1
    assert len([line for line in page.splitlines() if "plotly.js v" in line]) == 1
    assert page.count("<script type=\"text/javascript\">") >= 1 and page.count("Plotly.newPlot(") == 1
    assert "storage <code>sqlite:///my runs &amp; more/paths.db</code>" in page
    _assert_no_absolute_path(page, str(tmp_path))
    # the figure survived the path stripping: its data is still the study's trials
    assert '"customdata"' in page and page.index(get_plotlyjs()) < page.index("Plotly.newPlot(")


def test_the_command_writes_a_report_without_paths(tmp_path):
    db, _ = _study_with_paths(tmp_path)
    out = tmp_path / "report.html"
    run = subprocess.run([ABLATE, "report", str(db), "--format", "html", "-o", str(out)], cwd=tmp_path / "my runs & more",
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    page = out.read_text(encoding="utf-8")
    _assert_no_absolute_path(page, str(tmp_path))
    assert "storage <code>sqlite:///paths.db</code>" in page


@pytest.mark.parametrize(("text", "expected"), [
    ("/w/p/runs/a.db", "runs/a.db"),
    ("see /w/p/runs/a.db, then", "see runs/a.db, then"),
    ('{"path": "/w/p/data/x y"}', '{"path": "data/x y"}'),  # a known path with a space: replaced whole
    ("/w/p", "."),
    ("/w/pq/other", "/w/pq/other"),  # not under /w/p: a different folder
    ("/tmp/abc/deep/file.txt", "…/file.txt"),
    ("(/tmp/abc/x.db)", "(…/x.db)"),
    ("sqlite:////tmp/abc/x.db", "sqlite:///…/x.db"),
    ("a/tmp/b", "a/tmp/b"),  # inside a relative path: not a path of its own
    ("1/2 and top1 / gflops", "1/2 and top1 / gflops"),
])
def test_strip_paths(text, expected):
    assert strip_paths(text, ["/w/p", "/tmp", "/w/p/data/x y", "/"], cwd="/w/p") == expected


def test_shown_storage(tmp_path):
    assert shown_storage(f"sqlite:///{tmp_path}/runs/a.db", cwd=str(tmp_path)) == "sqlite:///runs/a.db"
    assert shown_storage(f"sqlite:///{tmp_path}/runs/a.db", cwd=str(tmp_path / "x")) == "…/a.db"
    assert shown_storage("postgresql://me:secret@db.example/ablate") == "postgresql://me:***@db.example/ablate"
