"""Per-configuration aggregates: n, mean, spread and interval per objective, the front of the
means, each configuration against the baseline, and the study's noise floor.

A *configuration* is one grid cell or sampled setting; with ``repeats: N`` it is trained N
times (seeds ``train.seed + r``), each run one trial carrying the configuration's
``config_key``. See :func:`aggregate` for the definitions.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ablate.results import stats
from ablate.results.pareto import nondominated

__all__ = ["Aggregates", "aggregate", "config_keys", "significantly_dominated", "front_and_indistinguishable",
           "reference_repeats"]


@dataclass
class Aggregates:
    """The per-configuration view of a study (see :func:`aggregate`).

    Attributes:
        configs: One dict per configuration with a COMPLETE run, in the order of their
            first trial: ``{"key", "params", "n", "trials": [numbers], "mean": {OBJ: float},
            "std": {OBJ: float | None}, "ci95": {OBJ: [lo, hi] | None}}``.
        pareto_configs: Keys of the configurations on the Pareto front of the means.
        baseline: Key of the baseline configuration, None when there is none (a sampled
            study, or the baseline has no COMPLETE run yet).
        vs_baseline: ``{key: {"diff": {OBJ: float}, "ci95": {OBJ: [lo, hi] | None},
            "p": {OBJ: float | None}}}`` for every other configuration (Welch's t-test).
        indistinguishable: Keys of the configurations off the front that no configuration
            significantly dominates.
        deterministic: Objectives with no seed noise (every configuration with two runs or
            more has one value): costs such as GFLOPs, shown once, without "±".
        noise: ``{OBJ: {"pooled_std", "mde", "n"}}`` for every other objective: the pooled
            seed standard deviation and the minimum detectable difference at the study's n.
    """

    configs: list[dict[str, Any]] = field(default_factory=list)
    pareto_configs: list[str] = field(default_factory=list)
    baseline: str | None = None
    vs_baseline: dict[str, dict[str, Any]] = field(default_factory=dict)
    indistinguishable: list[str] = field(default_factory=list)
    deterministic: list[str] = field(default_factory=list)
    noise: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def max_n(self) -> int:
        """The most runs any configuration has (0 without COMPLETE runs); 1 means no error bars anywhere."""
        return max((c["n"] for c in self.configs), default=0)

    def config(self, key: str) -> dict[str, Any] | None:
        """The configuration with this key, if it has a COMPLETE run."""
        return next((c for c in self.configs if c["key"] == key), None)


def _params_text(params: Any) -> str:
    from ablate.study.space import thaw

    return json.dumps(thaw(params) if isinstance(params, Mapping) else {}, sort_keys=True, separators=(",", ":"),
                      default=str)


def config_keys(trials: pd.DataFrame) -> list[str]:
    """The configuration key of every trial row, in order.

    A trial's ``config_key`` attribute when it has one (the runner stores it; the repeats
    of a configuration share it). Trials stored before repeats have none: such a trial
    takes the key of a keyed trial with the same decoded params (a study resumed with
    more repeats), else a key of its own params (``sha1`` of their canonical JSON, 12 hex
    digits), so each distinct params set is one configuration.
    """
    if trials.empty:
        return []
    attrs = trials["attrs"] if "attrs" in trials.columns else [{}] * len(trials)
    params = trials["params"] if "params" in trials.columns else [{}] * len(trials)
    texts = [_params_text(p) for p in params]
    stored = [a.get("config_key") if isinstance(a, Mapping) else None for a in attrs]
    adopted: dict[str, str] = {}
    for text, key in zip(texts, stored):
        if key is not None:
            adopted.setdefault(text, str(key))
    return [str(key) if key is not None else adopted.get(text) or hashlib.sha1(text.encode()).hexdigest()[:12]
            for text, key in zip(texts, stored)]


def significantly_dominated(c: Sequence[tuple[float, float] | None], g: Sequence[tuple[float, float] | None],
                            directions: Sequence[str], constant: Sequence[tuple[bool, bool]]) -> bool:
    """Whether configuration ``g`` dominates configuration ``c`` beyond the seed noise.

    Args:
        c, g: Each one's 95 % interval ``(lo, hi)`` per objective, in objective order (None
            where it has one run and so no interval).
        directions: ``maximize`` / ``minimize`` per objective.
        constant: Per objective, whether ``c`` and ``g`` are each constant (a cost).

    ``g`` significantly dominates ``c`` when, in every objective, ``g`` is better with
    disjoint 95 % intervals, or both are the same constant (certainly equal), and at least
    one objective is of the first kind. A missing interval never counts as significant,
    and intervals that touch are not disjoint. This is the reference definition;
    :func:`front_and_indistinguishable` applies it to every pair at once.
    """
    better = False
    for c_iv, g_iv, d, (c_const, g_const) in zip(c, g, directions, constant):
        if c_iv is None or g_iv is None:
            return False
        if c_const and g_const and c_iv[0] == g_iv[0]:
            continue
        disjoint = g_iv[1] < c_iv[0] if d == "minimize" else g_iv[0] > c_iv[1]
        if not disjoint:
            return False
        better = True
    return better


def front_and_indistinguishable(summaries: Sequence[Sequence[stats.Summary]],
                                directions: Sequence[str]) -> tuple[list[int], list[int]]:
    """Indices of the front of the means, and of the configurations indistinguishable from it.

    ``summaries[i][j]`` is configuration i's :class:`~ablate.results.stats.Summary` in objective j.
    The front is :func:`nondominated` on the means; a configuration off the front with an
    interval in every objective (n >= 2) is indistinguishable from it when no configuration
    significantly dominates it (:func:`significantly_dominated`). Vectorised over the
    dominating configuration (a 2,000-trial study has hundreds of configurations); the
    tests hold it to the pairwise function.
    """
    import numpy as np

    k = len(summaries)
    if k == 0:
        return [], []
    front = nondominated([[s.mean for s in row] for row in summaries], directions)
    on_front = set(front)
    signs = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    has = np.array([all(s.ci95 is not None for s in row) for row in summaries])
    lo = np.array([[s.ci95[0] if s.ci95 else np.nan for s in row] for row in summaries]) * signs
    hi = np.array([[s.ci95[1] if s.ci95 else np.nan for s in row] for row in summaries]) * signs
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)  # as costs: lower is better
    const = np.array([[s.constant for s in row] for row in summaries])
    near = []
    for i in range(k):
        if i in on_front or not has[i]:
            continue
        better = hi < lo[i]  # g's worst beats c's best, per objective
        same = const & const[i] & (lo == lo[i])
        dominated = has & np.all(better | same, axis=1) & np.any(better, axis=1)
        dominated[i] = False
        if not dominated.any():
            near.append(i)
    return front, near


def aggregate(trials: pd.DataFrame, objectives: Sequence[Mapping[str, str]],
              baseline: Mapping[str, Any] | None = None) -> Aggregates:
    """Per-configuration aggregates of the COMPLETE trials (PRUNED, FAIL, RUNNING never count).

    Definitions (all from :mod:`ablate.results.stats`, α = 0.05, two-sided):

    * Each configuration (rows grouped by the ``config`` column, else :func:`config_keys`)
      gets n, and per objective the mean, sample std and 95 % Student-t interval of its
      runs; with n = 1 the std and interval are None ("1 seed: no error bars").
    * ``pareto_configs``: the nondominated configurations by their means.
    * ``baseline``: the configuration whose params contain every key of ``baseline`` (the
      spec's baseline grid cell) with the same value.
    * ``vs_baseline``: per other configuration, ``mean - baseline mean`` per objective,
      with the interval and p-value of Welch's t-test (None when either has one run).
    * ``indistinguishable``: configurations off the front, with two runs or more, that
      no configuration *significantly dominates*: for every configuration g that dominates
      it on the means, some objective leaves room for it to be as good as g after all
      (their 95 % intervals overlap and not both are the same constant; see
      :func:`significantly_dominated`). Such a configuration may be on the true front:
      the seeds cannot tell.
    * ``deterministic``: objectives in which every configuration with n >= 2 is constant.
    * ``noise``: for every other objective, the pooled seed std over the configurations
      with n >= 2, the study's n (the most common n, the smaller on a tie) and the
      minimum detectable difference at that n (power 0.8).
    """
    from ablate.study.space import freeze, same_value

    names = [o["name"] for o in objectives]
    directions = [o["direction"] for o in objectives]
    out = Aggregates()
    if trials.empty or not names:
        return out
    keys = list(trials["config"]) if "config" in trials.columns else config_keys(trials)
    groups: dict[str, dict[str, Any]] = {}
    for key, r in zip(keys, trials.itertuples(index=False)):
        values = r.values if isinstance(r.values, Mapping) else {}
        if r.state != "COMPLETE" or any(values.get(n) is None for n in names):
            continue
        g = groups.setdefault(key, {"params": getattr(r, "params", {}), "trials": [],
                                    "samples": {n: [] for n in names}})
        g["trials"].append(int(r.number))
        for n in names:
            g["samples"][n].append(float(values[n]))
    summaries: dict[str, dict[str, stats.Summary]] = {}
    for key, g in sorted(groups.items(), key=lambda kv: min(kv[1]["trials"])):
        order = sorted(range(len(g["trials"])), key=lambda i: g["trials"][i])
        samples = {n: [g["samples"][n][i] for i in order] for n in names}
        summ = {n: stats.summarize(samples[n]) for n in names}
        summaries[key] = summ
        out.configs.append({
            "key": key, "params": g["params"], "n": len(order), "trials": [g["trials"][i] for i in order],
            "mean": {n: summ[n].mean for n in names}, "std": {n: summ[n].std for n in names},
            "ci95": {n: list(summ[n].ci95) if summ[n].ci95 is not None else None for n in names}})
        g["samples"] = samples
    configs = out.configs
    if not configs:
        return out
    front, near = front_and_indistinguishable([[summaries[c["key"]][n] for n in names] for c in configs],
                                              directions)
    out.pareto_configs = [configs[i]["key"] for i in front]
    out.indistinguishable = [configs[i]["key"] for i in near]

    if baseline:
        for c in configs:
            params = c["params"] if isinstance(c["params"], Mapping) else {}
            if all(k in params and same_value(freeze(params[k]), freeze(v)) for k, v in baseline.items()):
                out.baseline = c["key"]
                break
    if out.baseline is not None:
        base = groups[out.baseline]["samples"]
        for c in configs:
            if c["key"] == out.baseline:
                continue
            tests = {n: stats.welch_test(groups[c["key"]]["samples"][n], base[n]) for n in names}
            out.vs_baseline[c["key"]] = {
                "diff": {n: c["mean"][n] - summaries[out.baseline][n].mean for n in names},
                "ci95": {n: list(t.ci95) if t is not None else None for n, t in tests.items()},
                "p": {n: t.p if t is not None else None for n, t in tests.items()}}


    repeated = [c for c in configs if c["n"] >= 2]
    out.deterministic = [n for n in names if repeated and all(summaries[c["key"]][n].constant for c in repeated)]
    counts = Counter(c["n"] for c in configs)
    study_n = min(n for n, k in counts.items() if k == max(counts.values()))
    for n in names:
        if n in out.deterministic:
            continue
        sigma = stats.pooled_std([groups[c["key"]]["samples"][n] for c in repeated])
        out.noise[n] = {"pooled_std": sigma, "n": study_n,
                        "mde": stats.minimum_detectable_difference(study_n, sigma) if sigma is not None else None}
    return out


def reference_repeats(reference: Mapping[str, Any] | None, baseline: Mapping[str, Any] | None,
                      sigma: Mapping[str, float]) -> list[dict[str, Any]]:
    """How many seeds per row would resolve each difference the paper prints.

    For every ``reference.rows`` entry other than the baseline's, and every objective in
    ``sigma`` that both rows print: the paper's difference to the baseline row, and
    :func:`ablate.results.stats.repeats_needed` for it at that seed noise (α 0.05, power 0.8).
    A reference row belongs to the baseline when every grid key (or ``label``) it names
    has the baseline's value.

    Args:
        reference: The study's ``reference:`` mapping (``rows``), or None.
        baseline: The baseline grid cell (:meth:`ablate.study.Study.baseline_cell`).
        sigma: Seed standard deviation per objective, e.g. the pooled one of a database.

    Returns:
        One dict per (row, objective): ``row`` (its grid keys), ``objective``, ``diff``,
        ``sigma`` and ``repeats`` (None: not detectable within 100,000 seeds or no difference).
    """
    from ablate.study.space import freeze, same_value

    rows = [r for r in ((reference or {}).get("rows") or ()) if isinstance(r, Mapping)]
    if not baseline or not rows:
        return []

    def keys_of(row: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k in baseline}

    def is_baseline(row: Mapping[str, Any]) -> bool:
        named = {k: v for k, v in row.items() if k in baseline}
        return bool(named) and all(same_value(freeze(baseline[k]), freeze(v)) for k, v in named.items())

    base_rows = [r for r in rows if is_baseline(r)]
    if not base_rows:
        return []
    out = []
    for row in rows:
        if is_baseline(row):
            continue
        for objective, s in sigma.items():
            a, b = row.get(objective), base_rows[0].get(objective)
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
                continue
            diff = float(a) - float(b)
            out.append({"row": keys_of(row), "objective": objective, "diff": diff, "sigma": float(s),
                        "repeats": stats.repeats_needed(abs(diff), float(s)) if diff else None})
    return out

