"""Paper-style ablation tables and the Pareto front of a study, in md, LaTeX, CSV, HTML and PNG.

:func:`render_report` is what ``ablate report`` calls. The table it prints is built in
:mod:`ablate.results.table` (see there for its columns); this module renders it: Markdown,
booktabs LaTeX, the CSV with every detail column, and a self-contained HTML page with the
Pareto plot inlined. The PNG is :func:`ablate.results.paper_plot.pareto_png`, the noise
floor and front sentences and ``ablate show``'s per-configuration text are in
:mod:`ablate.results.config_text`. Every name that was importable from here before the
split still is (the CLI, the dashboard and the tests import them from here).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import pandas as pd

from ablate.results.cells import NEAR_MARK, cell_text, format_value, is_missing, is_true
from ablate.results.config_text import config_rows, configs_csv, front_text, noise_text, trials_text
from ablate.results.paper_plot import pareto_png
from ablate.results.reader import StudyResults
from ablate.results.table import AblationTable, ablation_table

__all__ = ["AblationTable", "ablation_table", "render_report", "REPORT_FORMATS", "pareto_png", "noise_text",
           "front_text", "text_cell", "to_markdown", "to_latex", "to_csv", "to_html", "to_html_table",
           "config_rows", "configs_csv", "strip_paths", "shown_storage"]

REPORT_FORMATS = ("md", "latex", "csv", "html", "png")


def text_cell(table: AblationTable, row: Mapping[str, Any], column: str) -> str:
    """What a text table prints for ``column`` of ``row`` (a record of ``table.frame``).

    A value with seed statistics prints as ``mean ± half-width`` of its 95 % interval, or
    alone when it has none (one run) or does not vary (a cost); a difference to the
    baseline with a sign and its interval's half-width; the front column ``*`` on the
    front and ``≈`` when indistinguishable from it.
    """
    value = row.get(column)
    if column == "pareto":
        return "*" if is_true(value) else NEAR_MARK if is_true(row.get("indistinguishable")) else ""
    if column.startswith("delta."):
        if row.get(column.replace("delta.", "verdict.", 1)) == "baseline":
            return "baseline"
        if is_missing(value):
            return ""
        text = format_value(float(value), column)
        text = text if text.startswith("-") else f"+{text}"
        lo, hi = row.get(f"{column}.ci95_lo"), row.get(f"{column}.ci95_hi")
        if not is_missing(lo) and not is_missing(hi) and hi > lo:
            text += f" ± {format_value((hi - lo) / 2, column)}"
        return text
    text = cell_text(value, column)
    lo, hi = row.get(f"{column}.ci95_lo"), row.get(f"{column}.ci95_hi")
    if text and not is_missing(lo) and not is_missing(hi) and hi > lo:
        text += f" ± {format_value((hi - lo) / 2, column)}"
    return text


def _text_rows(table: AblationTable) -> tuple[list[str], list[list[str]]]:
    header = [table.labels[c] for c in table.shown]
    body = [[text_cell(table, rec, c) for c in table.shown] for rec in table.frame.to_dict("records")]
    return header, body


def to_markdown(table: AblationTable) -> str:
    """A GitHub-flavoured Markdown table with its title above, caption and noise floor below."""
    header, body = _text_rows(table)
    numeric = [_is_numeric_column(table.frame[c]) for c in table.shown]
    lines = [f"**{table.title}**", "", "| " + " | ".join(h.replace("|", "\\|") for h in header) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    lines += ["", table.caption, "", table.noise, ""]
    return "\n".join(lines)


def _is_numeric_column(series: pd.Series) -> bool:
    values = [v for v in series if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "≈": r"$\approx$", "Δ": r"$\Delta$", "α": r"$\alpha$", "σ": r"$\sigma$",
                  "≥": r"$\geq$", "−": "-", "—": "---", "–": "--"}


def _tex(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: AblationTable) -> str:
    """A booktabs table (needs ``\\usepackage{booktabs}``); front rows are marked with a star,
    rows indistinguishable from the front with ≈; the caption ends with the noise floor."""
    header, body = _text_rows(table)
    align = "".join("r" if _is_numeric_column(table.frame[c]) else "l" for c in table.shown)
    caption = f"{table.title}. {table.caption} {table.noise}"
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{_tex(caption)}}}",
             rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(_tex(h) for h in header) + r" \\", r"\midrule"]
    for row in body:
        cells = [r"$\star$" if c == "pareto" and v == "*" else _tex(v) for c, v in zip(table.shown, row)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def to_csv(table: AblationTable) -> str:
    """Every column of the table (the CSV-only details too), machine keys as the header,
    raw values (means, interval bounds, p-values; lists as JSON)."""
    frame = table.frame.copy()
    for c in ("trial", "epochs", "n", "noise.n"):  # stay integers when a paper-only row leaves a blank
        if c in frame.columns:
            frame[c] = frame[c].astype("Int64")
    for c in frame.columns:
        frame[c] = [json.dumps(v) if isinstance(v, (list, tuple, dict)) else v for v in frame[c]]
    return frame.to_csv(index=False)


def to_html_table(table: AblationTable) -> str:
    """The table as an HTML ``<table>`` (escaped), front rows in bold, indistinguishable ones in italics."""
    header, body = _text_rows(table)
    out = ["<table class='ablation'>", "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
           + "</tr></thead>", "<tbody>"]
    for rec, row in zip(table.frame.to_dict("records"), body):
        kind = " class=front" if is_true(rec.get("pareto")) else " class=near" if is_true(rec.get("indistinguishable")) \
            else ""
        out.append(f"<tr{kind}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    out += ["</tbody></table>"]
    return "\n".join(out)


def to_html(results: StudyResults, table: AblationTable) -> str:
    """One self-contained page: the table, the noise floor, the Pareto plot, no network.

    plotly.js is inlined exactly once, in the head (the figure's own HTML is made without it,
    so no second copy can slip in). Nothing on the page names an absolute path: the study's
    storage file, its data folder and any other path the stored spec or a trial carries are
    shown relative to the working directory, or by name (:func:`strip_paths`), so a report
    can be shared without telling where it was made.
    """
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    from ablate.results.figures import pareto_figure

    plot = pio.to_html(pareto_figure(results, states=("COMPLETE",)), include_plotlyjs=False, full_html=False,
                       config={"displaylogo": False}, validate=False)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(results.name)}: ablate report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table.ablation {{ border-collapse: collapse; margin: 1em 0; font-size: 14px; }}
table.ablation th, table.ablation td {{ padding: 4px 10px; text-align: right; }}
table.ablation thead th {{ border-top: 2px solid #222; border-bottom: 1px solid #222; }}
table.ablation tbody tr:last-child td {{ border-bottom: 2px solid #222; }}
table.ablation tr.front td {{ font-weight: 600; }}
table.ablation tr.near td {{ font-style: italic; }}
p.caption {{ color: #555; }}
</style>
{_PLOTLY_SLOT}
</head><body>
<h1>{html.escape(table.title)}</h1>
<p>study <code>{html.escape(results.name)}</code>, storage <code>{html.escape(shown_storage(results.storage))}</code></p>
{to_html_table(table)}
<p class="caption">{html.escape(table.caption)}</p>
<p class="noise">{html.escape(table.noise)}</p>
{plot}
</body></html>
"""
    page = strip_paths(page, _known_paths(results))
    # Inserted after the paths are stripped: plotly.js is left byte for byte as plotly ships it.
    return page.replace(_PLOTLY_SLOT, f'<script type="text/javascript">{get_plotlyjs()}</script>', 1)


_PLOTLY_SLOT = "<!--ablate:plotly.js-->"


def _known_paths(results: StudyResults) -> list[str]:
    """Absolute paths a report of ``results`` may print: the storage file, the working and
    home folders, the temporary folder, and every absolute path in the stored spec."""
    import tempfile

    from ablate.storage import sqlite_path

    found = [os.getcwd(), os.path.expanduser("~"), tempfile.gettempdir()]
    db = sqlite_path(results.storage)
    if db is not None:
        found.append(os.path.abspath(db))

    def walk(value: Any) -> None:
        if isinstance(value, str) and os.path.isabs(value):
            found.append(value)
        elif isinstance(value, Mapping):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(results.spec or {})
    return found


def shown_storage(url: str, cwd: str | None = None) -> str:
    """A storage as a report names it: a SQLite file as ``sqlite:///`` and its path relative to
    ``cwd`` (default: the working directory) when inside it, else by its name; other URLs
    without their password (:func:`ablate.storage.display_url`)."""
    from ablate.storage import display_url, sqlite_path

    db = sqlite_path(url)
    if db is None:
        return display_url(url)
    shown = _shown_path(os.path.abspath(db), os.path.normpath(cwd or os.getcwd()))
    return f"sqlite:///{shown}" if not shown.startswith("…") else shown


def _shown_path(path: str, cwd: str) -> str:
    """How a report names ``path``: relative to ``cwd`` when inside it, else ``…/`` and its name."""
    path = os.path.normpath(path)
    if path == cwd:
        return "."
    if cwd != os.sep and path.startswith(cwd.rstrip(os.sep) + os.sep):
        return os.path.relpath(path, cwd).replace(os.sep, "/")
    name = os.path.basename(path.rstrip(os.sep))
    return f"…/{name}" if name else "…"


def strip_paths(text: str, paths: list[str], cwd: str | None = None) -> str:
    """``text`` with every absolute path under one of ``paths`` (longest first) shown by
    :func:`_shown_path`: relative to ``cwd`` (default: the working directory), else by name.

    A path is replaced whole, up to the next character that cannot be part of a path in
    text, HTML or JSON (whitespace, quotes, ``<>&``, a backslash, ``?#,;)]}``), so
    ``/tmp/x/runs/a.db`` becomes ``…/a.db`` and not ``…/x/runs/a.db``. The root folder is
    never a prefix (it would match every path).
    """
    cwd = os.path.normpath(cwd or os.getcwd())
    plain = {os.path.normpath(p) for p in paths if p and os.path.isabs(p)} - {os.sep}
    # as HTML and JSON print them too (a path with `&` or a quote in it)
    prefixes = sorted(plain | {html.escape(p) for p in plain} | {json.dumps(p)[1:-1] for p in plain}, key=len,
                      reverse=True)
    if not prefixes:
        return text
    pattern = re.compile(r"(?<![\w.~-])(?:" + "|".join(re.escape(p) for p in prefixes) + r")(?![\w.-])"
                         r"(?:/[^\s\"'<>&\\?#,;)\]}]*)?")
    return pattern.sub(lambda m: _shown_path(m.group(0).rstrip("/") or m.group(0), cwd), text)


def render_report(results: StudyResults, fmt: str) -> str | bytes:
    """The report of a study in one of :data:`REPORT_FORMATS` (``png`` gives bytes).

    Markdown, LaTeX and HTML name no absolute path (:func:`strip_paths`: relative to the
    working directory, else by name); the CSV keeps every value as stored.
    """
    if fmt not in REPORT_FORMATS:
        raise ValueError(f"unknown report format {fmt!r}, allowed: {', '.join(REPORT_FORMATS)}")
    if fmt == "png":
        return pareto_png(results)
    table = ablation_table(results)
    if fmt == "csv":
        return to_csv(table)
    # Text for a paper or a pull request names no absolute path (the CSV keeps the raw values):
    # stripped before LaTeX or HTML escaping could hide a path from the match.
    table = _table_without_paths(table, _known_paths(results))
    if fmt == "md":
        return strip_paths(to_markdown(table) + _front_line(results), _known_paths(results))
    if fmt == "latex":
        return to_latex(table)
    return to_html(results, table)


def _table_without_paths(table: AblationTable, paths: list[str]) -> AblationTable:
    """``table`` with :func:`strip_paths` applied to its title, caption, noise line and text cells."""
    import dataclasses

    frame = table.frame.copy()
    for c in frame.columns:
        if frame[c].dtype == object:
            frame[c] = [strip_paths(v, paths) if isinstance(v, str) else v for v in frame[c]]
    return dataclasses.replace(table, frame=frame, title=strip_paths(table.title, paths),
                               caption=strip_paths(table.caption, paths), noise=strip_paths(table.noise, paths),
                               labels={k: strip_paths(v, paths) for k, v in table.labels.items()})


def _front_line(results: StudyResults) -> str:
    names = " / ".join(o["name"] for o in results.objectives)
    agg = results.aggregates
    assert agg is not None
    if not agg.configs:
        return f"Pareto front ({names}): trials none (no COMPLETE trial)\n"
    line = f"Pareto front ({names}): trials {front_text(results)}\n"
    if agg.max_n >= 2:
        line = f"Pareto front ({names}) of the configuration means: trials {front_text(results)}\n"
        if agg.indistinguishable:
            line += f"Indistinguishable from the front: trials {trials_text(results, agg.indistinguishable)}\n"
    return line
