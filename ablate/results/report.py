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
           "config_rows", "configs_csv"]

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
    """One self-contained page: the table, the noise floor, the Pareto plot (plotly.js inlined), no network."""
    import plotly.io as pio

    from ablate.results.figures import pareto_figure
    from ablate.storage import display_url

    plot = pio.to_html(pareto_figure(results, states=("COMPLETE",)), include_plotlyjs=True, full_html=False,
                       config={"displaylogo": False}, validate=False)
    return f"""<!doctype html>
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
</style></head><body>
<h1>{html.escape(table.title)}</h1>
<p>study <code>{html.escape(results.name)}</code>, storage <code>{html.escape(display_url(results.storage))}</code></p>
{to_html_table(table)}
<p class="caption">{html.escape(table.caption)}</p>
<p class="noise">{html.escape(table.noise)}</p>
{plot}
</body></html>
"""


def render_report(results: StudyResults, fmt: str) -> str | bytes:
    """The report of a study in one of :data:`REPORT_FORMATS` (``png`` gives bytes)."""
    if fmt not in REPORT_FORMATS:
        raise ValueError(f"unknown report format {fmt!r}, allowed: {', '.join(REPORT_FORMATS)}")
    if fmt == "png":
        return pareto_png(results)
    table = ablation_table(results)
    if fmt == "md":
        return to_markdown(table) + _front_line(results)
    if fmt == "latex":
        return to_latex(table)
    if fmt == "csv":
        return to_csv(table)
    return to_html(results, table)


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
