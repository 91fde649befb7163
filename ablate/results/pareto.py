"""Pareto fronts and hypervolume: which points no other point beats.

Pure functions over numbers and trial frames; the readers, reports and dashboard use them
for single trials (``pareto``) and for configuration means (:mod:`ablate.results.aggregate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from ablate.results.reader import StudyResults

__all__ = ["nondominated", "pareto_front", "hypervolume_2d", "hypervolume_history"]


def nondominated(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the points no other point dominates (equal points are all kept).

    A point dominates another when it is at least as good in every objective and better in
    one; "good" follows each direction (``maximize`` / ``minimize``).
    """
    signs = [1.0 if d == "minimize" else -1.0 for d in directions]
    costs = [[s * v for s, v in zip(signs, p)] for p in points]
    front = []
    for i, a in enumerate(costs):
        dominated = any(
            all(bj <= aj for aj, bj in zip(a, b)) and any(bj < aj for aj, bj in zip(a, b))
            for j, b in enumerate(costs) if j != i)
        if not dominated:
            front.append(i)
    return front


def pareto_front(trials: pd.DataFrame, objectives: Sequence[dict[str, str]]) -> list[int]:
    """Trial numbers on the Pareto front: COMPLETE trials only (PRUNED never count)."""
    done = trials[trials["state"] == "COMPLETE"]
    names = [o["name"] for o in objectives]
    points, numbers = [], []
    for r in done.itertuples(index=False):
        if all(n in r.values for n in names):
            points.append([float(r.values[n]) for n in names])
            numbers.append(int(r.number))
    return sorted(numbers[i] for i in nondominated(points, [o["direction"] for o in objectives]))


def hypervolume_2d(points: Sequence[Sequence[float]], directions: Sequence[str],
                   reference: Sequence[float]) -> float:
    """Area dominated by ``points`` and bounded by ``reference`` (two objectives).

    Optuna's hypervolume is private API, and two objectives need only a sweep: turn every
    objective into one to minimise, keep the points better than the reference in both,
    sort by the first and add the rectangles of the staircase.
    """
    if len(directions) != 2:
        raise ValueError(f"hypervolume_2d needs two objectives, got {len(directions)}")
    signs = [1.0 if d == "minimize" else -1.0 for d in directions]
    rx, ry = signs[0] * reference[0], signs[1] * reference[1]
    pts = sorted((signs[0] * p[0], signs[1] * p[1]) for p in points)
    area, best_y = 0.0, ry
    for x, y in pts:
        if x >= rx or y >= best_y:
            continue
        area += (rx - x) * (best_y - y)
        best_y = y
    return area


def hypervolume_history(results: StudyResults, reference: Sequence[float] | None = None) -> pd.DataFrame:
    """Hypervolume of the COMPLETE trials after each trial number (two-objective studies).

    The default reference point is the worst value of each objective over all COMPLETE
    trials (the nadir), so the curve starts at 0 and can only rise.
    """
    names = [o["name"] for o in results.objectives]
    directions = [o["direction"] for o in results.objectives]
    done = _complete_points(results, names)
    if len(names) != 2 or done.empty:
        return pd.DataFrame(columns=["number", "hypervolume"])
    if reference is None:
        reference = [done[n].min() if d == "maximize" else done[n].max() for n, d in zip(names, directions)]
    out, seen = [], []
    for number, a, b in done[["number", *names]].itertuples(index=False):
        seen.append((a, b))
        front = [seen[i] for i in nondominated(seen, directions)]
        seen = front  # only the front matters for later trials
        out.append((number, hypervolume_2d(front, directions, reference)))
    return pd.DataFrame(out, columns=["number", "hypervolume"])


def _complete_points(results: StudyResults, names: Sequence[str]) -> pd.DataFrame:
    frame = results.trials
    if frame.empty:
        return pd.DataFrame(columns=["number", *names])
    done = frame[frame["state"] == "COMPLETE"]
    cols = [f"value.{n}" for n in names]
    if any(c not in done.columns for c in cols):
        return pd.DataFrame(columns=["number", *names])
    out = done[["number", *cols]].dropna().sort_values("number")
    out.columns = ["number", *names]
    return out

