"""Paper-style ablation tables and the Pareto front of a study, in md, LaTeX, CSV, HTML and PNG.

The table has one row per configuration (a grid cell, in grid order, or a sampled
configuration), the settings that vary as its first columns, then ``n`` (its COMPLETE
runs, one per seed), the costs (params, GFLOPs at the training and the paper resolution)
and the metrics as mean ± the half-width of the 95 % Student-t interval over the seeds
(costs do not depend on the seed and are shown once), the difference to the baseline
configuration with its 95 % Welch interval and a verdict ("differs (p = 0.012)", "within
noise"), and, where the study file carries ``reference:`` rows, the paper's printed
numbers beside ours. ``front`` marks the Pareto front of the configuration means (*) and
the configurations indistinguishable from it (≈). The caption says what the accuracy was
obtained on (data, image size, epochs, seeds), since a proxy run's accuracy is not the
paper's, and every report states the study's noise floor: the pooled seed standard
deviation and the smallest difference its n can detect. A configuration with one run
has no error bars, and the report says "1 seed: no error bars".
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ablate.metrics import METRICS
from ablate.results import stats
from ablate.results.reader import StudyResults, trial_metric

__all__ = ["AblationTable", "ablation_table", "render_report", "REPORT_FORMATS", "pareto_png", "noise_text",
           "front_text", "text_cell", "to_markdown", "to_latex", "to_csv", "to_html", "to_html_table",
           "config_rows", "configs_csv"]

REPORT_FORMATS = ("md", "latex", "csv", "html", "png")

_STATE_ORDER = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "FAIL": 3}
#: The cost columns of a report, in the order a paper prints them (names from ablate.metrics).
_COSTS = ("params_m", "gflops", "params_m_paper", "gflops_paper", "gflops_ultralytics")
#: Which of our columns a paper's number sits beside (the paper-scale one where we have it).
_OURS_FOR_PAPER = {"params_m": ("params_m_paper", "params_m"), "gflops": ("gflops_paper", "gflops"),
                   "gflops_paper": ("gflops_paper",), "gflops_ultralytics": ("gflops_ultralytics",)}
_METRICS = tuple(m.name for m in METRICS.values() if m.kind == "training")  # top1, map50_95, map50
#: Suffixes of the detail columns a value column with seed statistics gets (CSV only).
_DETAILS = (".std", ".ci95_lo", ".ci95_hi")
#: What the front column shows for a configuration indistinguishable from the front.
NEAR_MARK = "≈"


@dataclass
class AblationTable:
    """The table as data: ``frame`` has machine keys as columns, ``labels`` their headers.

    Columns, in order: ``trial`` (a configuration's first COMPLETE run, else its most
    telling trial), the varied settings, ``state`` (only when some configuration has no
    COMPLETE run), ``n``, the costs, the metrics, ``paper.KEY`` right after our column for
    each number the reference rows give, ``delta.OBJ`` and ``verdict.OBJ`` per objective
    (only when the study has a baseline), ``epochs``, ``pareto`` (on the front of the
    configuration means). Then the detail columns that only the CSV shows: ``KEY.std``,
    ``KEY.ci95_lo``, ``KEY.ci95_hi`` for each objective and metric, ``delta.OBJ.ci95_lo``,
    ``delta.OBJ.ci95_hi``, ``delta.OBJ.p``, ``trials`` (the COMPLETE runs),
    ``indistinguishable`` (from the front), ``note`` ("1 seed: no error bars" where n = 1)
    and the study's noise floor ``noise.OBJ.pooled_std``, ``noise.OBJ.mde``, ``noise.n``.
    Numbers are means over the COMPLETE runs; ``shown`` lists the columns text formats print.
    """

    frame: pd.DataFrame
    labels: dict[str, str]
    varied: list[str]
    caption: str
    title: str
    pareto: list[int]
    noise: str = ""
    shown: list[str] = field(default_factory=list)


def ablation_table(results: StudyResults) -> AblationTable:
    """Build the ablation table of a study (see the module docstring)."""
    spec = results.spec or {}
    grid = spec.get("grid") or {}
    trials = results.trials
    rows = _configurations(trials) if not trials.empty else []
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
               if any(r["summary"].get(m) is not None for r in rows)]
    costs = [c for c in _COSTS if any(r["summary"].get(c) is not None for r in rows)]
    with_stats = [c for c in (*costs, *metrics) if c in objectives or c in metrics]
    show_state = any(r["state"] != "COMPLETE" for r in rows)
    agg = results.aggregates
    assert agg is not None
    front, near = set(results.pareto_configs), set(results.indistinguishable)
    compared = objectives if results.baseline is not None else []
    out = []
    for r in rows:
        row: dict[str, Any] = {"trial": r["number"]}
        row.update({k: r["params"].get(k, (r["attrs"].get("arch") or {}).get(k)) for k in varied})
        if show_state:
            row["state"] = r["state"]
        row["n"] = r["n"]
        for c in (*costs, *metrics):
            summary = r["summary"].get(c)
            row[c] = summary.mean if summary is not None else None
        for o in compared:
            row[f"delta.{o}"], row[f"verdict.{o}"] = _delta(results, r["key"], o)
        row["epochs"] = r["attrs"].get("epochs_done")
        row["pareto"] = r["key"] in front
        for c in with_stats:
            summary = r["summary"].get(c)
            row[f"{c}.std"] = summary.std if summary is not None else None
            lo, hi = summary.ci95 if summary is not None and summary.ci95 is not None else (None, None)
            row[f"{c}.ci95_lo"], row[f"{c}.ci95_hi"] = lo, hi
        for o in compared:
            test = results.vs_baseline.get(r["key"])
            ci = test["ci95"][o] if test else None
            row[f"delta.{o}.ci95_lo"], row[f"delta.{o}.ci95_hi"] = ci if ci else (None, None)
            row[f"delta.{o}.p"] = test["p"][o] if test else None
        row["trials"] = r["trials"]
        row["indistinguishable"] = r["key"] in near
        row["note"] = stats.ONE_SEED if r["n"] == 1 else None
        for o, floor in agg.noise.items():
            row[f"noise.{o}.pooled_std"], row[f"noise.{o}.mde"] = floor["pooled_std"], floor["mde"]
        if agg.noise:
            row["noise.n"] = next(iter(agg.noise.values()))["n"]
        out.append(row)
    paper_keys: list[str] = []
    reference = spec.get("reference") or {}
    ref_rows = reference.get("rows") if isinstance(reference, Mapping) else None
    if ref_rows:
        out, paper_keys = _join_reference(out, list(ref_rows), varied)
    columns = ["trial", *varied, *(["state"] if show_state else []), "n", *costs, *metrics,
               *(c for o in compared for c in (f"delta.{o}", f"verdict.{o}")), "epochs", "pareto"]
    for key in paper_keys:  # each paper number right after ours, else at the end
        ours = next((c for c in _OURS_FOR_PAPER.get(key, (key,)) if c in columns), None)
        columns.insert(columns.index(ours) + 1 if ours else len(columns), f"paper.{key}")
    details = [f"{c}{d}" for c in with_stats for d in _DETAILS]
    details += [f"delta.{o}{d}" for o in compared for d in (".ci95_lo", ".ci95_hi", ".p")]
    details += ["trials", "indistinguishable", "note"]
    details += [f"noise.{o}.{k}" for o in agg.noise for k in ("pooled_std", "mde")] + (["noise.n"] if agg.noise else [])
    shown = [c for c in columns if not (c.startswith(("delta.", "verdict.")) and not _compare_shown(c, agg, results))]
    frame = pd.DataFrame(out, columns=[*columns, *details])
    labels = {c: _label(c, spec, sum(1 for k in shown if k.startswith("verdict."))) for c in frame.columns}
    first = {r["key"]: r["number"] for r in rows}
    return AblationTable(frame=frame, labels=labels, varied=varied, caption=_caption(results, reference),
                         title=spec.get("description") or results.name,
                         pareto=sorted(first[k] for k in front if k in first), noise=noise_text(results),
                         shown=shown)


def _compare_shown(column: str, agg: Any, results: StudyResults) -> bool:
    """Text tables compare only the objectives with seed noise (a cost's difference is in
    its own column), and give verdicts only where some configuration has two runs."""
    objective = column.split(".", 1)[1]
    if objective in agg.deterministic or objective in _COSTS:
        return False
    return column.startswith("delta.") or agg.max_n >= 2


def _delta(results: StudyResults, key: str, objective: str) -> tuple[float | None, str | None]:
    if key == results.baseline:
        return 0.0, "baseline"
    test = results.vs_baseline.get(key)
    if test is None:
        return None, None
    return test["diff"][objective], stats.verdict(test["p"][objective])


def _configurations(trials: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per configuration: its most telling trial and the seed statistics of its runs.

    The representative trial is the first COMPLETE run, else the most telling one
    (PRUNED over RUNNING over FAIL, then newest); the statistics cover every cost and
    metric of its COMPLETE runs.
    """
    groups: dict[str, list[Any]] = {}
    keys = trials["config"] if "config" in trials.columns else [json.dumps(p, sort_keys=True, default=str)
                                                                  for p in trials["params"]]
    for key, r in zip(keys, trials.itertuples(index=False)):
        groups.setdefault(key, []).append(r)
    out = []
    for key, members in groups.items():
        complete = sorted((r for r in members if r.state == "COMPLETE"), key=lambda r: int(r.number))
        if complete:
            rep = complete[0]
        else:
            rep = min(members, key=lambda r: (_STATE_ORDER.get(r.state, 9), -int(r.number)))
        summary: dict[str, stats.Summary | None] = {}
        for column in (*_COSTS, *_METRICS, *(complete[0].values if complete else {})):
            found = [v for v in (_value(r, column) for r in complete) if v is not None]
            if found:
                summary[column] = stats.summarize(found)
            else:
                value = _value(rep, column)
                summary[column] = stats.summarize([value]) if value is not None else None
        out.append({"key": key, "number": int(rep.number), "state": "COMPLETE" if complete else rep.state,
                    "params": rep.params, "attrs": rep.attrs, "n": len(complete), "summary": summary,
                    "trials": [int(r.number) for r in complete]})
    return out


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


def _value(row: Any, key: str) -> float | None:
    # Only a finished run's curve stands in for a missing metric (older databases).
    return trial_metric(row.values if isinstance(row.values, Mapping) else None, row.attrs, key,
                        from_curve=key in _METRICS and row.state == "COMPLETE")


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


def _label(column: str, spec: Mapping[str, Any], n_compared: int = 1) -> str:
    train_px = (spec.get("data") or {}).get("image_size")
    paper_px = spec.get("paper_resolution")
    if column.startswith("paper."):
        key = column[len("paper."):]
        if key in ("gflops", "gflops_paper"):
            return "GFLOPs (paper)"  # papers print costs at their own resolution
        if key == "params_m":
            return "Params (M) (paper)"
        return f"{_label(key, spec)} (paper)"
    if column.startswith("noise."):
        return column
    if column.startswith("delta."):
        key = column[len("delta."):]
        for suffix, what in ((".ci95_lo", " 95% lo"), (".ci95_hi", " 95% hi"), (".p", " p")):
            if key.endswith(suffix):
                return f"Δ {_label(key[:-len(suffix)], spec)}{what}"
        return f"Δ {_label(key, spec)}"
    if column.startswith("verdict."):
        return "verdict" if n_compared == 1 else f"verdict {column[len('verdict.'):]}"
    for suffix, what in ((".std", " std"), (".ci95_lo", " 95% lo"), (".ci95_hi", " 95% hi")):
        if column.endswith(suffix):
            return _label(column[:-len(suffix)], spec) + what
    proxy = " proxy" if spec.get("scale", "proxy") == "proxy" and spec.get("proxy") else ""
    fixed = {
        "trial": "trial", "state": "state", "n": "n", "params_m": f"Params (M){proxy}",
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
    agg = results.aggregates
    assert agg is not None
    parts = []
    if data:
        where = data.get("name", "?") + (f" ({data['path']})" if data.get("path") else "")
        scale = spec.get("scale", "proxy")
        scaled = f"{scale} scale, " if spec.get("proxy") or spec.get("base") else ""
        seed = train.get("seed", spec.get("seed", "?"))
        repeats = spec.get("repeats") or 1  # the plan; a study still running may have fewer runs so far
        seeds = (f"seeds {seed}-{seed + repeats - 1}" if repeats > 1 and agg.max_n >= 2 and isinstance(seed, int)
                 else f"seed {seed}")
        parts.append(f"Accuracy: {scaled}{where} at {data.get('image_size', '?')} px, "
                     f"{train.get('epochs', '?')} epochs, {seeds}")
    if spec.get("base") and spec.get("paper_resolution"):
        parts.append(f"Params and GFLOPs @{spec['paper_resolution']}: the unscaled {spec['base']} with each row's "
                     f"settings, at {spec['paper_resolution']} px, whatever scale was trained")
    parts.append("GFLOPs: multiply-adds, 1e9" + (f"; paper resolution {spec['paper_resolution']} px"
                                                 if spec.get("paper_resolution") else ""))
    if isinstance(reference, Mapping) and reference.get("source"):
        parts.append(f"paper values: {reference['source']}")
    if agg.max_n >= 2:
        parts.append("n: COMPLETE runs (seeds) per configuration; a ± b: their mean and the half-width of its "
                     "95 % Student-t interval (costs do not depend on the seed and are shown once)")
    else:
        parts.append(f"n: COMPLETE runs (seeds) per configuration; {stats.ONE_SEED}")
    if results.baseline is not None:
        base = _baseline_text(spec.get("baseline") or {})
        parts.append(f"Δ: difference to the baseline ({base})" + (
            " with its 95 % Welch interval; verdict: Welch's t-test, \"differs\" when p < 0.05, else "
            "\"within noise\"" if agg.max_n >= 2 else ""))
    names = " / ".join(f"{o['name']} ({'max' if o['direction'] == 'maximize' else 'min'})" for o in results.objectives)
    front = f"front: * on the Pareto front of the configuration means of {names}"
    if agg.max_n >= 2:
        front += (f", {NEAR_MARK} indistinguishable from it (no configuration is better in every objective "
                  "beyond the 95 % intervals)")
    parts.append(front)
    return ". ".join(parts) + "."


def _baseline_text(baseline: Mapping[str, Any]) -> str:
    if "label" in baseline:
        return f"row {baseline['label']!r}"
    return ", ".join(f"{k} = {_cell(v, k)}" for k, v in baseline.items())


def noise_text(results: StudyResults) -> str:
    """The study's noise floor in one sentence, for every report and the dashboard.

    Per objective with seed noise: the pooled seed standard deviation and the smallest
    difference of means that the study's n detects (two-sided t-test, α = 0.05, power
    0.8). A study with one run per configuration says "1 seed: no error bars".
    """
    agg = results.aggregates
    assert agg is not None
    if not agg.configs:
        return "Noise floor: no COMPLETE run yet."
    if agg.max_n < 2:
        return (f"Noise floor: {stats.ONE_SEED} (train each configuration with repeats: 3 or more to measure the "
                "seed noise and test each difference).")
    parts = []
    for name, floor in agg.noise.items():
        k = sum(1 for c in agg.configs if c["n"] >= 2)
        mde = floor["mde"]
        parts.append(f"{name} varies by {_cell(floor['pooled_std'], name)} from seed to seed (standard deviation "
                     f"pooled over {k} configuration{'s' if k != 1 else ''}); at n = {floor['n']} runs per "
                     + ("configuration a difference below "
                        f"{_cell(mde, name)} is likely to go undetected (two-sided t-test, α = 0.05, power 0.8)"
                        if mde is not None else f"configuration no test is possible ({stats.ONE_SEED})"))
    if agg.deterministic:
        parts.append(f"{', '.join(agg.deterministic)}: the same for every seed")
    return "Noise floor: " + "; ".join(parts) + "."


def front_text(results: StudyResults) -> str:
    """The configurations on the front of the means, by their trials: ``1, 2`` (one run
    each) or ``(0, 1, 2), (6, 7, 8)``; ``none`` when nothing is COMPLETE."""
    return _configs_text(results, results.pareto_configs) or "none"


def _configs_text(results: StudyResults, keys: Sequence[str]) -> str:
    agg = results.aggregates
    assert agg is not None
    groups = [c["trials"] for k in keys if (c := agg.config(k)) is not None]
    if all(len(g) == 1 for g in groups):
        return ", ".join(str(g[0]) for g in groups)
    return ", ".join("(" + ", ".join(map(str, g)) + ")" for g in groups)


# --------------------------------------------------------------------------- per-configuration views (ablate show)


def _compared(results: StudyResults) -> list[str]:
    """The objectives a text view compares with the baseline: those with seed noise (a
    cost's difference is plain in its own column)."""
    agg = results.aggregates
    assert agg is not None
    if results.baseline is None:
        return []
    return [o["name"] for o in results.objectives if o["name"] not in agg.deterministic and o["name"] not in _COSTS]


def _varied_params(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = list(dict.fromkeys(k for c in configs for k in (c["params"] or {})))
    seen = {k: {json.dumps((c["params"] or {}).get(k), sort_keys=True, default=str) for c in configs} for k in keys}
    return [k for k in keys if len(seen[k]) > 1] or keys


def _pm_text(mean: float, ci: Sequence[float] | None, column: str) -> str:
    text = _format(mean, column)
    if ci is not None and ci[1] > ci[0]:
        text += f" ± {_format((ci[1] - ci[0]) / 2, column)}"
    return text


def config_rows(results: StudyResults) -> tuple[str, list[str], list[list[str]]]:
    """``ablate show``'s per-configuration table: (title, header, rows of text).

    One row per configuration with a COMPLETE run: ★ on the front of the means, ≈
    indistinguishable from it; the settings that vary; n; each objective as mean ± the
    half-width of its 95 % interval (alone when it does not vary, a cost, or n = 1); with
    a baseline, the difference to it and the verdict of Welch's t-test for the objectives
    with seed noise; the trials and the configuration key.
    """
    agg = results.aggregates
    assert agg is not None
    configs = agg.configs
    params = _varied_params(configs)
    compared = _compared(results)
    verdicts = agg.max_n >= 2
    header = ["★", *params, "n",
              *(f"{o['name']} {'↑' if o['direction'] == 'maximize' else '↓'}" for o in results.objectives)]
    for name in compared:
        header += [f"Δ {name}"] + ([f"vs baseline ({name})" if len(compared) > 1 else "vs baseline"]
                                   if verdicts else [])
    header.append("trials")
    front, near = set(agg.pareto_configs), set(agg.indistinguishable)
    rows = []
    for c in configs:
        key = c["key"]
        row = ["★" if key in front else NEAR_MARK if key in near else ""]
        row += [_cell((c["params"] or {}).get(k), k) if not isinstance((c["params"] or {}).get(k), float)
                else f"{c['params'][k]:.4g}" for k in params]
        row.append(str(c["n"]))
        row += [_pm_text(c["mean"][o["name"]], c["ci95"][o["name"]], o["name"]) for o in results.objectives]
        for name in compared:
            if key == agg.baseline:
                row += ["baseline"] + (["baseline"] if verdicts else [])
                continue
            test = agg.vs_baseline[key]
            diff = _pm_text(test["diff"][name], test["ci95"][name], name)
            row += [diff if diff.startswith("-") else f"+{diff}"] + ([stats.verdict(test["p"][name])]
                                                                    if verdicts else [])
        row.append(", ".join(map(str, c["trials"])))
        rows.append(row)
    n_text = f"n up to {agg.max_n} seeds" if verdicts else stats.ONE_SEED
    title = (f"{results.name}: {len(configs)} configuration(s) with a COMPLETE run ({n_text}); "
             + (f"mean ± half-width of the 95 % interval; ★ = Pareto front of the means, {NEAR_MARK} = "
                "indistinguishable from it" if verdicts else "★ = Pareto front"))
    return title, header, rows


def configs_csv(results: StudyResults) -> str:
    """``ablate show --format csv``: one row per configuration with a COMPLETE run.

    Columns: ``config``, ``n``, ``trials`` (JSON), ``pareto`` and ``indistinguishable``
    (0/1), ``baseline`` (1 for the baseline), the params (lists as JSON), per objective
    ``mean_OBJ``, ``std_OBJ``, ``ci95_lo_OBJ``, ``ci95_hi_OBJ``, with a baseline
    ``diff_OBJ``, ``diff_ci95_lo_OBJ``, ``diff_ci95_hi_OBJ``, ``p_OBJ``, ``verdict_OBJ``,
    and ``note`` ("1 seed: no error bars" where n = 1). Missing values are empty.
    """
    import csv

    agg = results.aggregates
    assert agg is not None
    names = [o["name"] for o in results.objectives]
    params = sorted({k for c in agg.configs for k in (c["params"] or {})})
    header = ["config", "n", "trials", "pareto", "indistinguishable", "baseline", *params]
    header += [f"{what}_{n}" for n in names for what in ("mean", "std", "ci95_lo", "ci95_hi")]
    if agg.baseline is not None:
        header += [f"{what}_{n}" for n in names for what in ("diff", "diff_ci95_lo", "diff_ci95_hi", "p", "verdict")]
    header.append("note")

    def blank(v: Any) -> Any:
        return "" if v is None else v

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for c in agg.configs:
        key, p = c["key"], c["params"] or {}
        row: list[Any] = [key, c["n"], json.dumps(c["trials"]), int(key in agg.pareto_configs),
                          int(key in agg.indistinguishable), int(key == agg.baseline)]
        row += [json.dumps(p[k]) if isinstance(p.get(k), (list, dict)) else blank(p.get(k)) for k in params]
        for n in names:
            ci = c["ci95"][n]
            row += [c["mean"][n], blank(c["std"][n]), *(ci if ci else ("", ""))]
        if agg.baseline is not None:
            for n in names:
                if key == agg.baseline:
                    row += [0.0, "", "", "", "baseline"]
                    continue
                test = agg.vs_baseline[key]
                ci = test["ci95"][n]
                row += [test["diff"][n], *(ci if ci else ("", "")), blank(test["p"][n]), stats.verdict(test["p"][n])]
        row.append(stats.ONE_SEED if c["n"] == 1 else "")
        writer.writerow(row)
    return buf.getvalue()


# --------------------------------------------------------------------------- rendering


def _format(value: float, column: str) -> str:
    key = column.removeprefix("paper.").removeprefix("delta.").removeprefix("noise.")
    key = key.split(".")[0]
    if key == "params_m":
        return f"{value:.2f}"
    if key.startswith("gflops"):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"
    if key in ("top1",):
        return f"{value:.2f}"
    if key.startswith("map"):
        return f"{value:.4f}"
    return f"{value:.4g}"


def _cell(value: Any, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column == "pareto":
        return "*" if value else ""
    if column in ("trial", "n"):
        return str(int(value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _format(value, column)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_cell(v, "") for v in value) + "]"
    return str(value)


def _true(value: Any) -> bool:
    return not _missing(value) and bool(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def text_cell(table: AblationTable, row: Mapping[str, Any], column: str) -> str:
    """What a text table prints for ``column`` of ``row`` (a record of ``table.frame``).

    A value with seed statistics prints as ``mean ± half-width`` of its 95 % interval, or
    alone when it has none (one run) or does not vary (a cost); a difference to the
    baseline with a sign and its interval's half-width; the front column ``*`` on the
    front and ``≈`` when indistinguishable from it.
    """
    value = row.get(column)
    if column == "pareto":
        return "*" if _true(value) else NEAR_MARK if _true(row.get("indistinguishable")) else ""
    if column.startswith("delta."):
        if row.get(column.replace("delta.", "verdict.", 1)) == "baseline":
            return "baseline"
        if _missing(value):
            return ""
        text = _format(float(value), column)
        text = text if text.startswith("-") else f"+{text}"
        lo, hi = row.get(f"{column}.ci95_lo"), row.get(f"{column}.ci95_hi")
        if not _missing(lo) and not _missing(hi) and hi > lo:
            text += f" ± {_format((hi - lo) / 2, column)}"
        return text
    text = _cell(value, column)
    lo, hi = row.get(f"{column}.ci95_lo"), row.get(f"{column}.ci95_hi")
    if text and not _missing(lo) and not _missing(hi) and hi > lo:
        text += f" ± {_format((hi - lo) / 2, column)}"
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
        kind = " class=front" if _true(rec.get("pareto")) else " class=near" if _true(rec.get("indistinguishable")) \
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


def pareto_png(results: StudyResults, *, dpi: int = 200) -> bytes:
    """The Pareto plot for a paper (matplotlib, bundled fonts only).

    Trials by family; with repeats, each configuration's mean with its 95 % intervals as
    error bars (trials faded behind), the configurations indistinguishable from the
    front as open diamonds, and the front of the means as steps.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from ablate.results.figures import axes_of, config_points, label_of, pareto_points

    x, y = axes_of(results)
    pts = pareto_points(results, x, y)
    pts = pts[pts["state"] == "COMPLETE"]
    configs = config_points(results, x, y)
    repeated = not configs.empty and int(configs["n"].max()) >= 2
    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=dpi)
    try:
        markers = "osD^v<>ph*"
        for i, (family, group) in enumerate(pts.groupby("family", sort=True)):
            ax.scatter(group["x"], group["y"], s=14 if repeated else 28, marker=markers[i % len(markers)],
                       label=family, alpha=0.35 if repeated else 0.8, edgecolors="#333", linewidths=0.5, zorder=3)
        if repeated:
            for kind, style in (("other", {"fmt": "o", "color": "#555", "mfc": "#555", "label": "configuration mean"}),
                                ("near", {"fmt": "D", "color": "#ff7f0e", "mfc": "white",
                                          "label": "indistinguishable from the front"}),
                                ("front", {"fmt": "o", "color": "#d62728", "mfc": "#d62728", "label": None})):
                sub = configs[configs["kind"] == kind]
                if sub.empty:
                    continue
                ax.errorbar(sub["x"], sub["y"], xerr=[sub["x_minus"], sub["x_plus"]],
                            yerr=[sub["y_minus"], sub["y_plus"]], fmt=style["fmt"], color=style["color"],
                            mfc=style["mfc"], ms=5, elinewidth=1, capsize=2, label=style["label"], zorder=4)
        front = configs[configs["kind"] == "front"].sort_values("x")
        if not front.empty:
            x_min = next((o["direction"] == "minimize" for o in results.objectives if o["name"] == x), True)
            ax.step(front["x"], front["y"], where="post" if x_min else "pre", color="#d62728", lw=1.5,
                    label="Pareto front" + (" of the means" if repeated else ""), zorder=2)
            for r in front.itertuples(index=False):
                ax.annotate(str(r.first), (r.x, r.y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel(label_of(x))
        ax.set_ylabel(label_of(y))
        title = results.name if repeated or configs.empty else f"{results.name} ({stats.ONE_SEED})"
        ax.set_title(title, fontsize=10)
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
    agg = results.aggregates
    assert agg is not None
    if not agg.configs:
        return f"Pareto front ({names}): trials none (no COMPLETE trial)\n"
    line = f"Pareto front ({names}): trials {front_text(results)}\n"
    if agg.max_n >= 2:
        line = f"Pareto front ({names}) of the configuration means: trials {front_text(results)}\n"
        if agg.indistinguishable:
            line += f"Indistinguishable from the front: trials {_configs_text(results, agg.indistinguishable)}\n"
    return line
