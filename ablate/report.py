"""Paper-style ablation tables and the Pareto front of a study, in md, LaTeX, CSV, HTML and PNG.

The table has one row per distinct configuration (a grid cell, in grid order, or a
sampled configuration), the settings that vary as its first columns, then the costs
(params, GFLOPs at the training and the paper resolution) and the metrics of the run, and,
where the study file carries ``reference:`` rows, the paper's printed numbers beside ours.
The caption says what the accuracy was obtained on (data, image size, epochs, seed), since
a proxy run's accuracy is not the paper's.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ablate.results import StudyResults, trial_metric

__all__ = ["AblationTable", "ablation_table", "render_report", "REPORT_FORMATS", "pareto_png"]

REPORT_FORMATS = ("md", "latex", "csv", "html", "png")

_STATE_ORDER = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "FAIL": 3}
_COSTS = ("params_m", "gflops", "params_m_paper", "gflops_paper", "gflops_ultralytics")
#: Which of our columns a paper's number sits beside (the paper-scale one where we have it).
_OURS_FOR_PAPER = {"params_m": ("params_m_paper", "params_m"), "gflops": ("gflops_paper", "gflops"),
                   "gflops_paper": ("gflops_paper",), "gflops_ultralytics": ("gflops_ultralytics",)}
_METRICS = ("top1", "map50_95", "map50")


@dataclass
class AblationTable:
    """The table as data: ``frame`` has machine keys as columns, ``labels`` their headers.

    Columns, in order: ``trial``, the varied settings, ``state`` (only when some row did not
    complete), the costs, the metrics, ``epochs``, ``pareto`` (on the study's front), and
    ``paper.KEY`` for each number the reference rows give.
    """

    frame: pd.DataFrame
    labels: dict[str, str]
    varied: list[str]
    caption: str
    title: str
    pareto: list[int]


def ablation_table(results: StudyResults) -> AblationTable:
    """Build the ablation table of a study (see the module docstring)."""
    spec = results.spec or {}
    grid = spec.get("grid") or {}
    trials = results.trials
    rows = _one_per_configuration(trials) if not trials.empty else []
    if isinstance(grid, list):  # list-form grid: one row per paper row, named by `label` when given
        labelled = bool(grid) and all(isinstance(g, Mapping) and "label" in g for g in grid)
        varied = ["label"] if labelled else list(dict.fromkeys(k for g in grid for k in g))
        rows.sort(key=lambda r: _row_position(r["params"], grid))
    else:
        varied = list(grid) if grid else _varied_keys(rows)
    if grid and not isinstance(grid, list):
        rows.sort(key=lambda r: _grid_position(r["params"], grid))
    else:
        rows.sort(key=lambda r: r["number"])
    objectives = [o["name"] for o in results.objectives]
    metrics = [m for m in dict.fromkeys([*(n for n in objectives if n not in _COSTS), *_METRICS])
               if any(_value(r, m) is not None for r in rows)]
    costs = [c for c in _COSTS if any(_value(r, c) is not None for r in rows)]
    show_state = any(r["state"] != "COMPLETE" for r in rows)
    front = set(results.pareto)
    out = []
    for r in rows:
        row: dict[str, Any] = {"trial": r["number"]}
        row.update({k: r["params"].get(k, (r["attrs"].get("arch") or {}).get(k)) for k in varied})
        if show_state:
            row["state"] = r["state"]
        row.update({c: _value(r, c) for c in costs})
        row.update({m: _value(r, m) for m in metrics})
        row["epochs"] = r["attrs"].get("epochs_done")
        row["pareto"] = r["number"] in front
        out.append(row)
    paper_keys: list[str] = []
    reference = spec.get("reference") or {}
    ref_rows = reference.get("rows") if isinstance(reference, Mapping) else None
    if ref_rows:
        out, paper_keys = _join_reference(out, list(ref_rows), varied)
    columns = ["trial", *varied, *(["state"] if show_state else []), *costs, *metrics, "epochs", "pareto"]
    for key in paper_keys:  # each paper number right after ours, else at the end
        ours = next((c for c in _OURS_FOR_PAPER.get(key, (key,)) if c in columns), None)
        columns.insert(columns.index(ours) + 1 if ours else len(columns), f"paper.{key}")
    frame = pd.DataFrame(out, columns=columns)
    labels = {c: _label(c, spec) for c in columns}
    return AblationTable(frame=frame, labels=labels, varied=varied, caption=_caption(results, reference),
                         title=spec.get("description") or results.name, pareto=sorted(front))


def _one_per_configuration(trials: pd.DataFrame) -> list[dict[str, Any]]:
    """The most telling trial per configuration: COMPLETE over PRUNED over RUNNING over FAIL, then newest."""
    best: dict[str, dict[str, Any]] = {}
    for r in trials.itertuples(index=False):
        key = json.dumps(r.params, sort_keys=True, default=str)
        cand = {"number": int(r.number), "state": r.state, "params": r.params, "values": r.values, "attrs": r.attrs}
        old = best.get(key)
        if old is None or (_STATE_ORDER.get(r.state, 9), -cand["number"]) < (_STATE_ORDER.get(old["state"], 9),
                                                                            -old["number"]):
            best[key] = cand
    return list(best.values())


def _varied_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = list(dict.fromkeys(k for r in rows for k in r["params"]))
    seen = {k: {json.dumps(r["params"].get(k), default=str) for r in rows} for k in keys}
    return [k for k in keys if len(seen[k]) > 1] or keys


def _row_position(params: Mapping[str, Any], rows: Sequence[Any]) -> int:
    for i, row in enumerate(rows):
        if isinstance(row, Mapping) and all(_same(params.get(k), v) for k, v in row.items()):
            return i
    return len(rows)


def _grid_position(params: Mapping[str, Any], grid: Mapping[str, Sequence[Any]]) -> tuple:
    pos = []
    for key, values in grid.items():
        enc = [json.dumps(v) for v in values]
        value = json.dumps(params.get(key))
        pos.append(enc.index(value) if value in enc else len(enc))
    return tuple(pos)


def _value(row: Mapping[str, Any], key: str) -> float | None:
    # Only a finished run's curve stands in for a missing metric (older databases).
    return trial_metric(row["values"], row["attrs"], key,
                        from_curve=key in _METRICS and row["state"] == "COMPLETE")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b))
    return json.dumps(a, default=str) == json.dumps(b, default=str)


def _join_reference(rows: list[dict[str, Any]], refs: list[Any], varied: list[str]) -> tuple[list[dict], list[str]]:
    """Put each reference row's numbers beside the row with the same varied settings.

    A reference row's keys that name a varied setting select the row; its other numeric
    keys are the paper's values. Reference rows that match nothing are appended (the
    paper has them, this run did not train them).
    """
    paper_keys: list[str] = []
    for ref in refs:
        if not isinstance(ref, Mapping):
            continue
        match = {k: v for k, v in ref.items() if k in varied}
        values = {k: v for k, v in ref.items() if k not in varied and isinstance(v, (int, float))
                  and not isinstance(v, bool)}
        paper_keys.extend(k for k in values if k not in paper_keys)
        hits = [r for r in rows if match and all(_same(r.get(k), v) for k, v in match.items())]
        if not hits:
            extra = {"trial": None, **match, "pareto": False}
            rows.append(extra)
            hits = [extra]
        for r in hits:
            r.update({f"paper.{k}": v for k, v in values.items()})
    return rows, paper_keys


def _label(column: str, spec: Mapping[str, Any]) -> str:
    train_px = (spec.get("data") or {}).get("image_size")
    paper_px = spec.get("paper_resolution")
    if column.startswith("paper."):
        key = column[len("paper."):]
        if key in ("gflops", "gflops_paper"):
            return "GFLOPs (paper)"  # papers print costs at their own resolution
        if key == "params_m":
            return "Params (M) (paper)"
        return f"{_label(key, spec)} (paper)"
    proxy = " proxy" if spec.get("scale", "proxy") == "proxy" and spec.get("proxy") else ""
    fixed = {
        "trial": "trial", "state": "state", "params_m": f"Params (M){proxy}",
        "gflops": (f"GFLOPs @{train_px}" if train_px else "GFLOPs") + proxy,
        "params_m_paper": f"Params (M) @{paper_px}" if paper_px else "Params (M, paper scale)",
        "gflops_paper": f"GFLOPs @{paper_px}" if paper_px else "GFLOPs (paper res.)",
        "gflops_ultralytics": "GFLOPs (ultralytics @640)",
        "top1": "Top-1 (%)", "map50_95": "mAP50-95", "map50": "mAP50", "epochs": "epochs", "pareto": "front",
    }
    return fixed.get(column, column)


def _caption(results: StudyResults, reference: Any) -> str:
    spec = results.spec or {}
    data, train = spec.get("data") or {}, spec.get("train") or {}
    parts = []
    if data:
        where = data.get("name", "?") + (f" ({data['path']})" if data.get("path") else "")
        scale = spec.get("scale", "proxy")
        scaled = f"{scale} scale, " if spec.get("proxy") or spec.get("base") else ""
        parts.append(f"Accuracy: {scaled}{where} at {data.get('image_size', '?')} px, "
                     f"{train.get('epochs', '?')} epochs, seed {train.get('seed', spec.get('seed', '?'))}")
    if spec.get("base") and spec.get("paper_resolution"):
        parts.append(f"Params and GFLOPs @{spec['paper_resolution']}: the unscaled {spec['base']} with each row's "
                     f"settings, at {spec['paper_resolution']} px, whatever scale was trained")
    parts.append("GFLOPs: multiply-adds, 1e9" + (f"; paper resolution {spec['paper_resolution']} px"
                                                 if spec.get("paper_resolution") else ""))
    if isinstance(reference, Mapping) and reference.get("source"):
        parts.append(f"paper values: {reference['source']}")
    parts.append("front: on the Pareto front of " + " / ".join(
        f"{o['name']} ({'max' if o['direction'] == 'maximize' else 'min'})" for o in results.objectives))
    return ". ".join(parts) + "."


# --------------------------------------------------------------------------- rendering


def _cell(value: Any, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column == "pareto":
        return "*" if value else ""
    if column == "trial":
        return str(int(value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        key = column.removeprefix("paper.")
        if key == "params_m":
            return f"{value:.2f}"
        if key.startswith("gflops"):
            return f"{value:.4g}" if value < 1 else f"{value:.3f}" if value < 10 else f"{value:.2f}"
        if key in ("top1",):
            return f"{value:.2f}"
        if key.startswith("map"):
            return f"{value:.4f}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_cell(v, "") for v in value) + "]"
    return str(value)


def _text_rows(table: AblationTable) -> tuple[list[str], list[list[str]]]:
    header = [table.labels[c] for c in table.frame.columns]
    body = [[_cell(v, c) for c, v in zip(table.frame.columns, row)]
            for row in table.frame.itertuples(index=False, name=None)]
    return header, body


def to_markdown(table: AblationTable) -> str:
    """A GitHub-flavoured Markdown table with its title above and caption below."""
    header, body = _text_rows(table)
    numeric = [_is_numeric_column(table.frame[c]) for c in table.frame.columns]
    lines = [f"**{table.title}**", "", "| " + " | ".join(h.replace("|", "\\|") for h in header) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    lines += ["", table.caption, ""]
    return "\n".join(lines)


def _is_numeric_column(series: pd.Series) -> bool:
    values = [v for v in series if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: AblationTable) -> str:
    """A booktabs table (needs ``\\usepackage{booktabs}``); front rows are marked with a star."""
    header, body = _text_rows(table)
    align = "".join("r" if _is_numeric_column(table.frame[c]) else "l" for c in table.frame.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{_tex(table.title)}. {_tex(table.caption)}}}",
             rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(_tex(h) for h in header) + r" \\", r"\midrule"]
    for row in body:
        cells = [r"$\star$" if c == "pareto" and v else _tex(v) for c, v in zip(table.frame.columns, row)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def to_csv(table: AblationTable) -> str:
    """The table's machine keys as the header and raw values (lists as JSON)."""
    frame = table.frame.copy()
    for c in ("trial", "epochs"):  # stay integers when a paper-only row leaves a blank
        if c in frame.columns:
            frame[c] = frame[c].astype("Int64")
    for c in frame.columns:
        frame[c] = [json.dumps(v) if isinstance(v, (list, tuple, dict)) else v for v in frame[c]]
    return frame.to_csv(index=False)


def to_html_table(table: AblationTable) -> str:
    """The table as an HTML ``<table>`` (escaped), front rows in bold."""
    header, body = _text_rows(table)
    cols = list(table.frame.columns)
    out = ["<table class='ablation'>", "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
           + "</tr></thead>", "<tbody>"]
    for row in body:
        front = row[cols.index("pareto")] == "*"
        out.append(f"<tr{' class=front' if front else ''}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row)
                   + "</tr>")
    out += ["</tbody></table>"]
    return "\n".join(out)


def to_html(results: StudyResults, table: AblationTable) -> str:
    """One self-contained page: the table, the Pareto plot (plotly.js inlined), no network."""
    import plotly.io as pio

    from ablate.figures import pareto_figure
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
p.caption {{ color: #555; }}
</style></head><body>
<h1>{html.escape(table.title)}</h1>
<p>study <code>{html.escape(results.name)}</code>, storage <code>{html.escape(display_url(results.storage))}</code></p>
{to_html_table(table)}
<p class="caption">{html.escape(table.caption)}</p>
{plot}
</body></html>
"""


def pareto_png(results: StudyResults, *, dpi: int = 200) -> bytes:
    """The Pareto plot for a paper (matplotlib, bundled fonts only): trials by family, the front as steps."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from ablate.figures import axes_of, label_of, pareto_points

    x, y = axes_of(results)
    pts = pareto_points(results, x, y)
    pts = pts[pts["state"] == "COMPLETE"]
    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=dpi)
    try:
        markers = "osD^v<>ph*"
        for i, (family, group) in enumerate(pts.groupby("family", sort=True)):
            ax.scatter(group["x"], group["y"], s=28, marker=markers[i % len(markers)], label=family, alpha=0.8,
                       edgecolors="#333", linewidths=0.5, zorder=3)
        front = pts[pts["front"]].sort_values("x")
        if not front.empty:
            x_min = next((o["direction"] == "minimize" for o in results.objectives if o["name"] == x), True)
            ax.step(front["x"], front["y"], where="post" if x_min else "pre", color="#d62728", lw=1.5, label="Pareto front", zorder=2)
            for r in front.itertuples(index=False):
                ax.annotate(str(r.number), (r.x, r.y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel(label_of(x))
        ax.set_ylabel(label_of(y))
        ax.set_title(results.name, fontsize=10)
        ax.grid(alpha=0.3)
        if not pts.empty:
            ax.legend(fontsize=7, title="attention", title_fontsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


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
    front = ", ".join(str(n) for n in results.pareto) or "none (no COMPLETE trial)"
    return f"Pareto front ({names}): trials {front}\n"
