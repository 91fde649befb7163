"""Reading a study back from its storage: a DataFrame of trials and the Pareto front.

Only the storage is needed: the resolved study spec lives in the Optuna study's user
attributes (DESIGN.md, "the database is self-describing"). Readers never write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ablate.errors import StorageError
from ablate.storage import open_storage

__all__ = ["StudyResults", "load_results", "pareto_front", "nondominated"]


@dataclass
class StudyResults:
    """One study as read from a storage."""

    name: str
    storage: str
    objectives: list[dict[str, str]]
    spec: dict[str, Any] | None
    trials: pd.DataFrame
    pareto: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``ablate show --format json`` object of DESIGN.md."""
        rows = []
        for r in self.trials.itertuples(index=False):
            rows.append({"number": int(r.number), "state": r.state, "params": r.params, "values": r.values,
                         "attrs": r.attrs})
        return {"study": self.name, "storage": self.storage, "objectives": self.objectives, "trials": rows,
                "pareto": list(self.pareto)}


def nondominated(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the points no other point dominates (ties kept once per distinct point).

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


def load_results(url: str, name: str | None = None) -> StudyResults:
    """Read one study (by name, or the only one in the storage) into a DataFrame.

    Columns: ``number``, ``state``, ``params`` (decoded values), ``values`` (objective name →
    value), ``attrs`` (user attributes), plus one column per objective and per parameter for
    convenient filtering.
    """
    import optuna

    storage = open_storage(url, create=False)
    names = [s.study_name for s in storage.get_all_studies()]
    if name is None:
        if not names:
            raise StorageError(f"storage {url!r} holds no study")
        if len(names) > 1:
            raise StorageError(f"storage {url!r} holds several studies ({', '.join(names)}); name one")
        name = names[0]
    elif name not in names:
        raise StorageError(f"storage {url!r} has no study {name!r}"
                           + (f", it has: {', '.join(names)}" if names else " (it is empty)"))
    ostudy = optuna.load_study(study_name=name, storage=storage)
    spec = ostudy.user_attrs.get("spec")
    metric_names = ostudy.metric_names or [f"objective_{i}" for i in range(len(ostudy.directions))]
    objectives = [{"name": n, "direction": "maximize" if d == optuna.study.StudyDirection.MAXIMIZE else "minimize"}
                  for n, d in zip(metric_names, ostudy.directions)]
    decode = _decoder(spec)
    rows = []
    for t in ostudy.get_trials(deepcopy=False):
        if t.user_attrs.get("skipped"):
            continue  # duplicates and infeasible proposals were never trained
        values = dict(zip(metric_names, t.values)) if t.values is not None else {}
        row = {"number": t.number, "state": t.state.name, "params": decode(t.params), "values": values,
               "attrs": dict(t.user_attrs)}
        row.update({f"value.{k}": v for k, v in values.items()})
        row.update({f"param.{k}": v for k, v in row["params"].items()})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else ["number", "state", "params", "values", "attrs"])
    result = StudyResults(name=name, storage=url, objectives=objectives, spec=spec, trials=frame)
    result.pareto = pareto_front(frame, objectives) if rows else []
    return result


def _decoder(spec: dict[str, Any] | None):
    """Decode list-valued params (stored as JSON strings) with the study's own spec."""
    from ablate.config import study_from_dict

    if spec is None:
        return dict
    try:
        study = study_from_dict(spec, check=False)
    except Exception:  # an older or foreign spec: show raw params rather than fail
        return dict
    return study.decode_params
