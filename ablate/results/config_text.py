"""Per-configuration text of a study: ``ablate show``'s table and CSV, the noise floor and the front.

These views read the seed aggregates (:class:`~ablate.results.Aggregates`) directly, one row
per configuration with a COMPLETE run, without building the ablation table; the noise floor
and front sentences are shared by the report, ``ablate show`` and the dashboard. They sit
below :mod:`ablate.results.table` (which captions its table with :func:`noise_text`) and
import nothing from it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ablate.results import stats
from ablate.results.cells import COST_COLUMNS, NEAR_MARK, cell_text, format_value
from ablate.results.reader import StudyResults

__all__ = ["config_rows", "configs_csv", "front_text", "noise_text", "trials_text"]


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
        parts.append(f"{name} varies by {cell_text(floor['pooled_std'], name)} from seed to seed (standard deviation "
                     f"pooled over {k} configuration{'s' if k != 1 else ''}); at n = {floor['n']} runs per "
                     + ("configuration a difference below "
                        f"{cell_text(mde, name)} is likely to go undetected (two-sided t-test, α = 0.05, power 0.8)"
                        if mde is not None else f"configuration no test is possible ({stats.ONE_SEED})"))
    if agg.deterministic:
        parts.append(f"{', '.join(agg.deterministic)}: the same for every seed")
    return "Noise floor: " + "; ".join(parts) + "."


def front_text(results: StudyResults) -> str:
    """The configurations on the front of the means, by their trials: ``1, 2`` (one run
    each) or ``(0, 1, 2), (6, 7, 8)``; ``none`` when nothing is COMPLETE."""
    return trials_text(results, results.pareto_configs) or "none"


def trials_text(results: StudyResults, keys: Sequence[str]) -> str:
    """The configurations ``keys`` by their trials, as :func:`front_text` prints them."""
    agg = results.aggregates
    assert agg is not None
    groups = [c["trials"] for k in keys if (c := agg.config(k)) is not None]
    if all(len(g) == 1 for g in groups):
        return ", ".join(str(g[0]) for g in groups)
    return ", ".join("(" + ", ".join(map(str, g)) + ")" for g in groups)



def _compared(results: StudyResults) -> list[str]:
    """The objectives a text view compares with the baseline: those with seed noise (a
    cost's difference is plain in its own column)."""
    agg = results.aggregates
    assert agg is not None
    if results.baseline is None:
        return []
    return [o["name"] for o in results.objectives if o["name"] not in agg.deterministic and o["name"] not in COST_COLUMNS]


def _varied_params(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = list(dict.fromkeys(k for c in configs for k in (c["params"] or {})))
    seen = {k: {json.dumps((c["params"] or {}).get(k), sort_keys=True, default=str) for c in configs} for k in keys}
    return [k for k in keys if len(seen[k]) > 1] or keys


def _pm_text(mean: float, ci: Sequence[float] | None, column: str) -> str:
    text = format_value(mean, column)
    if ci is not None and ci[1] > ci[0]:
        text += f" ± {format_value((ci[1] - ci[0]) / 2, column)}"
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
        row += [cell_text((c["params"] or {}).get(k), k) if not isinstance((c["params"] or {}).get(k), float)
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
