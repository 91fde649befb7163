"""The ablation table of a study as data: one row per configuration, with its seed statistics.

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

The renderers (Markdown, LaTeX, CSV, HTML) are in :mod:`ablate.results.report`; this
module only builds the :class:`AblationTable` they print, so that the dashboard and tests
can take the table without the renderers, and the table's assembly (grid order, reference
rows, labels, caption) reads on its own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ablate.metrics import METRICS
from ablate.results import stats
from ablate.results.cells import COST_COLUMNS, NEAR_MARK, cell_text
from ablate.results.config_text import noise_text
from ablate.results.reader import StudyResults, trial_metric

__all__ = ["AblationTable", "ablation_table"]

_STATE_ORDER = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "FAIL": 3}
#: Which of our columns a paper's number sits beside (the paper-scale one where we have it).
_OURS_FOR_PAPER = {"params_m": ("params_m_paper", "params_m"), "gflops": ("gflops_paper", "gflops"),
                   "gflops_paper": ("gflops_paper",), "gflops_ultralytics": ("gflops_ultralytics",)}
_METRICS = tuple(m.name for m in METRICS.values() if m.kind == "training")  # top1, map50_95, map50
#: Suffixes of the detail columns a value column with seed statistics gets (CSV only).
_DETAILS = (".std", ".ci95_lo", ".ci95_hi")


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
    metrics = [m for m in dict.fromkeys([*(n for n in objectives if n not in COST_COLUMNS), *_METRICS])
               if any(r["summary"].get(m) is not None for r in rows)]
    costs = [c for c in COST_COLUMNS if any(r["summary"].get(c) is not None for r in rows)]
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
    if objective in agg.deterministic or objective in COST_COLUMNS:
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
        for column in (*COST_COLUMNS, *_METRICS, *(complete[0].values if complete else {})):
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
    return ", ".join(f"{k} = {cell_text(v, k)}" for k, v in baseline.items())
