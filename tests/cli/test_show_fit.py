"""`ablate show` fits the terminal: no line wider than COLUMNS, no header broken inside a word,
costs in readable units, hidden columns named, `--columns` chooses (unknown names refused)."""

from __future__ import annotations

import json
import re

import pytest

from ablate.cli.table_fit import TextColumn, chosen_columns, column_widths, count_text, fit, flops_text, render, \
    seconds_text
from ablate.errors import ConfigError
from cli_helpers import run_cli


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    from ablate.testing.fake_study import write_fake_study

    path = tmp_path_factory.mktemp("show") / "gen.db"
    write_fake_study(f"sqlite:///{path}", n_trials=12, seed=3)  # a sampled study over four families
    return path


def _header_words(out: str) -> set[str]:
    words = set()
    for line in out.splitlines():
        if line.startswith("┃"):
            words |= {w for cell in line.strip("┃").split("┃") for w in cell.split()}
    return words


@pytest.mark.parametrize("width", [80, 120])
def test_show_fits_the_width_and_keeps_header_words_whole(db, capsys, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))
    code, out, err = run_cli(capsys, "show", str(db))
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= width
    words = _header_words(out)
    # every header word printed whole (a broken one would show as a fragment such as "window_siz")
    known = {"★", "#", "state", "attention", "window_size", "embed_dim", "depths", "lr", "n", "top1", "↑", "↓",
             "FLOPs", "paper", "params", "epochs", "wall", "trials"}
    assert words <= known, words - known
    assert "0.7348" not in out and "735 M" in out  # GFLOPs in units
    if width == 80:
        assert re.search(r"hidden to fit 80 columns: .*--columns", out.replace("\n", " "))


def test_show_without_a_terminal_prints_every_column(db, capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    code, out, _ = run_cli(capsys, "show", str(db), "--view", "trials")
    assert code == 0 and "hidden" not in out
    assert {"lr", "window_size", "wall", "epochs"} <= _header_words(out)


def test_columns_choose_and_order(db, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    code, out, err = run_cli(capsys, "show", str(db), "--view", "trials", "--columns", "number,gflops,attention")
    assert code == 0, err
    header = next(line for line in out.splitlines() if line.startswith("┃"))
    assert [c.strip() for c in header.strip("┃").split("┃")] == ["#", "FLOPs ↓", "attention"]
    code, out, err = run_cli(capsys, "show", str(db), "--columns", "number,top1,atention")
    assert code == 2 and not out and len(err.strip().splitlines()) == 1
    assert "unknown column 'atention'" in err and "allowed: " in err and "did you mean 'attention'" in err
    code, out, err = run_cli(capsys, "show", str(db), "--columns", ",")
    assert code == 2 and "no column named" in err
    code, out, err = run_cli(capsys, "show", str(db), "--format", "json", "--columns", "top1")
    assert code == 2 and "--format table" in err


def test_json_keeps_full_precision(db, capsys):
    code, out, _ = run_cli(capsys, "show", str(db), "--format", "json")
    obj = json.loads(out)
    g = next(t["attrs"]["gflops"] for t in obj["trials"] if "gflops" in t["attrs"])
    assert isinstance(g, float) and len(repr(g)) > 6  # not rounded to the table's 3 digits


@pytest.mark.parametrize("value,text", [(0.004683, "4.68 M"), (36.01, "36.0 G"), (0.7348, "735 M"),
                                        (0.9997, "1.00 G"), (1234.0, "1.23 T"), (0.0, "0"), (None, "")])
def test_flops_text(value, text):
    assert flops_text(value) == text


@pytest.mark.parametrize("value,text", [(6.048, "6.05 M"), (0.0853, "85.3 K"), (28.29, "28.3 M"),
                                        (float("nan"), "")])
def test_count_text(value, text):
    assert count_text(value) == text


def test_seconds_text():
    assert [seconds_text(v) for v in (3.04, 42.4, 185, 7440, None)] == ["3.0s", "42s", "3m05s", "2h04m", ""]


def test_fit_hides_the_least_important_and_never_narrows_below_a_word():
    cols = [TextColumn("number", "#", ("1",)), TextColumn("focal_level", "focal_level", ("2",), wrap=True),
            TextColumn("message", "error message", ("a long message that may wrap at spaces",), wrap=True),
            TextColumn("top1", "top1 ↑", ("81.25",))]
    shown, hidden = fit(cols, 36, ["number", "top1", "focal_level", "message"])
    assert [c.name for c in shown] == ["number", "focal_level", "top1"] and hidden == ["message"]
    shown, hidden = fit(cols, 60, ["number", "top1", "focal_level", "message"])
    assert not hidden
    widths = column_widths(shown, 60)
    assert all(w >= c.min_width for w, c in zip(widths, shown)) and widths[1] >= len("focal_level")
    text = render(shown, 60)
    assert max(len(line) for line in text.splitlines()) <= 60 and "focal_level" in text and "message" in text
    assert fit(cols, None)[1] == []


def test_chosen_columns():
    assert chosen_columns(None, ["a"]) is None
    assert chosen_columns("b, a,b", ["a", "b"]) == ["b", "a"]
    with pytest.raises(ConfigError, match=r"unknown column 'c\\x07'"):
        chosen_columns("c\x07", ["a", "b"])
