"""Runner overhead: the wall time of a real study under Ray against the trials' own time.

The target (from the issue): for trials of about 20 s,

    ratio = wall time of the run / (sum of the trials' own ``wall_s`` / concurrency) < 1.15

A grid of small Focal ViTs on digits (32 px, four stages, the architecture of
``studies/window_size.yaml``) is run through :func:`ablate.run.run_study` with one CPU
per trial and SQLite storage in a temporary folder. The whole call is timed, Ray's start
and shutdown included. Each trial's ``wall_s`` (measured inside the worker, from the start
of the trainable: cost counting, data loading and training) is read back from the Optuna
storage with the time the driver recorded it; a trial ran over ``[tell − wall_s, tell]``.
Laid on ``concurrency`` slots, these spans split the overhead into

* start-up: each slot's wait for its first trial (Ray start, Tuner set-up, actor start and
  the worker's imports);
* gaps: from a trial's end to the next trial's start on the same slot (result reporting,
  the searcher's tell and ask, actor reuse or start);
* imbalance: a slot idle while another finishes the last trial (packing, not Ray);
* tail: from the last trial's end to the call's return (Tuner and Ray shutdown).

These are slot-seconds: they add up to ``concurrency × wall − Σ wall_s``, so
``ratio − 1 = (start-up + gaps + imbalance + tail) / Σ wall_s``.

A baseline then runs the first ``--baseline`` cells in this process with
:func:`ablate.run.trial.run_trial` (no Ray, torch on as many threads as a trial gets), so the
reader can compare one trial's time with and without Ray. Finally Ray is started and shut
down once with no trial, which is the fixed cost of any run.

Usage::

    python benchmarks/runner_overhead.py                  # 6 cells, 4 epochs (≈ 20 s a trial)
    python benchmarks/runner_overhead.py --cells 4 --epochs 2 --json

The trials' times depend on the machine's load; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import tempfile
import time
import warnings
from typing import Any

WINDOWS = (2, 4, 8)
DROP_PATH = (0.0, 0.1, 0.2, 0.05, 0.15)


def build_spec(cells: int, epochs: int, embed_dim: int, storage: str) -> dict[str, Any]:
    """A grid study of ``cells`` Focal ViTs that differ in window size and stochastic depth.

    The grid varies architecture keys only: cells that differ in a training key alone
    (``lr``, ...) are currently taken for duplicates by the runner. Drop-path changes no
    cost, so trials of the same window take the same time.
    """
    n_drop = math.ceil(cells / len(WINDOWS))
    if n_drop > len(DROP_PATH):
        raise SystemExit(f"--cells must be at most {len(WINDOWS) * len(DROP_PATH)}, got {cells}")
    return {
        "name": "runner-overhead",
        "description": "benchmarks/runner_overhead.py",
        "task": "classify",
        "fixed": {"attention": "focal", "depths": [1, 1, 2, 1], "embed_dim": embed_dim, "num_heads": 2,
                  "focal_level": 2, "focal_window": 3, "expand_size": 1},
        "grid": {"drop_path_rate": list(DROP_PATH[:n_drop]), "window_size": list(WINDOWS)},  # last key fastest
        "trials": cells,
        "objectives": [{"name": "top1", "direction": "maximize"}, {"name": "gflops", "direction": "minimize"}],
        "data": {"name": "digits", "image_size": 32},
        "train": {"epochs": epochs, "batch_size": 64, "lr": 2.0e-3, "weight_decay": 0.05, "warmup_epochs": 1,
                  "seed": 0},
        "resources": {"cpu": 1, "gpu": 0},
        "paper_resolution": 224,
        "storage": storage,
    }


def _seconds(a: dt.datetime, b: dt.datetime) -> float:
    return (b - a).total_seconds()


def _slots(spans: list[tuple[float, float]], concurrency: int) -> list[list[tuple[float, float]]]:
    """Assign (start, end) spans to ``concurrency`` slots: each goes to the slot free longest."""
    slots: list[list[tuple[float, float]]] = [[] for _ in range(max(1, concurrency))]
    for span in sorted(spans):
        free = [s for s in slots if not s or s[-1][1] <= span[0] + 0.5] or slots  # 0.5 s: clock jitter
        min(free, key=lambda s: s[-1][1] if s else -math.inf).append(span)
    return slots


def timeline(spans: list[tuple[float, float]], concurrency: int, wall: float) -> dict[str, float]:
    """Where the idle slot-seconds (concurrency × wall − Σ wall_s) go.

    ``startup``: each slot's wait for its first trial (Ray start, Tuner set-up, actor start and
    the worker's imports); ``gaps``: from one trial's end to the next trial's start in the same
    slot (result reporting, tell/ask, actor reuse or start); ``imbalance``: a slot idle while
    another finishes the last trial (packing, not Ray); ``tail``: from the last trial's end
    to the call's return (Tuner and Ray shutdown), on every slot.
    """
    slots = _slots(spans, concurrency)
    last = max(end for _, end in spans)
    startup = sum(s[0][0] for s in slots if s)
    gaps = sum(b[0] - a[1] for s in slots for a, b in zip(s, s[1:]))
    imbalance = sum(last - s[-1][1] for s in slots if s)
    tail = (wall - last) * len(slots)
    idle_slots = len([s for s in slots if not s]) * wall
    return {"startup_slot_s": startup, "gaps_slot_s": gaps, "imbalance_slot_s": imbalance, "tail_slot_s": tail,
            "unused_slot_s": idle_slots, "first_start_s": min(start for start, _ in spans), "tail_s": wall - last,
            "trials_per_slot": [len(s) for s in slots],
            "gap_list_s": [round(b[0] - a[1], 2) for s in slots for a, b in zip(s, s[1:])]}


def run_with_ray(study, num_cpus: int | None) -> dict[str, Any]:
    """Time ``run_study`` and split its overhead with the trials' times in the storage.

    A trial's training span is ``[tell − wall_s, tell]``: ``wall_s`` runs from the start of
    the trainable to its last report, and the driver tells Optuna right after that report.
    (``datetime_start`` is when Ray asked for the trial, which may be long before it runs.)
    """
    import optuna

    from ablate.run import run_study

    t0 = dt.datetime.now()
    start = time.perf_counter()
    summary = run_study(study, progress=False, num_cpus=num_cpus)
    wall = time.perf_counter() - start

    trials = optuna.load_study(study_name=study.name, storage=study.storage).get_trials()
    rows, spans = [], []
    for t in trials:
        own = t.user_attrs.get("wall_s")
        row = {"number": t.number, "params": t.params, "state": t.state.name, "wall_s": own,
               "asked_s": _seconds(t0, t.datetime_start) if t.datetime_start else None,
               "top1": t.values[0] if t.values else None, "error": t.user_attrs.get("error")}
        if isinstance(own, (int, float)) and t.datetime_complete:
            end = _seconds(t0, t.datetime_complete)
            row["start_s"], row["end_s"] = end - own, end
            spans.append((end - own, end))
        rows.append(row)
    total = sum(end - begin for begin, end in spans)
    conc = summary.concurrency
    ideal = total / conc if conc else float("nan")
    return {
        "trials": len(rows),
        "states": summary.states,
        "concurrency": conc,
        "sum_wall_s": total,
        "ideal_s": ideal,
        "wall_s": wall,
        "ratio": wall / ideal if ideal else float("nan"),
        # a schedule cannot be shorter than its longest trial: what part of the ratio is packing, not Ray
        "makespan_bound_s": max([ideal] + [end - begin for begin, end in spans]),
        "timeline": timeline(spans, conc, wall) if spans else {},
        "per_trial": rows,
    }


def run_in_process(study, cells: int) -> list[dict[str, Any]]:
    """The first ``cells`` grid cells, one after the other, without Ray."""
    import torch

    from ablate.run.trial import run_trial

    torch.set_num_threads(max(1, int(study.resources.cpu)))  # what the runner gives a trial
    out = []
    for params in study.cells()[:cells]:
        start = time.perf_counter()
        last = run_trial(study, params, lambda metrics: None)
        out.append({"params": params, "wall_s": time.perf_counter() - start, "top1": last.get("top1")})
    return out


def ray_start_stop(num_cpus: int | None) -> float:
    """Seconds to start a local Ray the way the runner does and shut it down, with no trial."""
    from ablate.run import ray_session

    start = time.perf_counter()
    with ray_session(num_cpus=num_cpus):
        pass
    return time.perf_counter() - start


def _fmt(x: Any, digits: int = 1) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) else str(x)


def print_table(res: dict[str, Any]) -> None:
    ray = res["ray"]
    print(f"machine: {res['cpus']} CPUs, load average {res['load_before'][0]:.2f} before, "
          f"{res['load_after'][0]:.2f} after (1 min)")
    print(f"study: {ray['trials']} trials ({res['args']['epochs']} epochs, embed_dim {res['args']['embed_dim']}), "
          f"states {ray['states']}")
    print(f"  concurrency                   {ray['concurrency']}")
    print(f"  sum of trials' wall_s         {_fmt(ray['sum_wall_s'])} s")
    print(f"  ideal = sum / concurrency     {_fmt(ray['ideal_s'])} s   (max(ideal, longest trial) = "
          f"{_fmt(ray['makespan_bound_s'])} s)")
    print(f"  measured wall of run_study    {_fmt(ray['wall_s'])} s")
    print(f"  ratio = wall / ideal          {_fmt(ray['ratio'], 3)}   (target < 1.15)")
    tl = ray["timeline"]
    idle = ray["concurrency"] * ray["wall_s"] - ray["sum_wall_s"]
    print(f"idle slot-seconds = concurrency x wall - sum = {_fmt(idle)} (trials per slot {tl.get('trials_per_slot')}):")
    print(f"  start-up  {_fmt(tl.get('startup_slot_s'))}  (first trial starts {_fmt(tl.get('first_start_s'))} s "
          f"after the call: Ray start, actor start, imports)")
    print(f"  gaps      {_fmt(tl.get('gaps_slot_s'))}  (between trials of a slot: {tl.get('gap_list_s')} s)")
    print(f"  imbalance {_fmt(tl.get('imbalance_slot_s'))}  (a slot idle while another finishes: packing, not Ray)")
    print(f"  tail      {_fmt(tl.get('tail_slot_s'))}  ({_fmt(tl.get('tail_s'))} s from the last trial's end "
          f"to the return: shutdown)")
    print(f"Ray start + shutdown alone, no trial: {_fmt(res['ray_start_stop_s'])} s")
    print("trials under Ray:")
    for r in ray["per_trial"]:
        print(f"  #{r['number']:<2} {json.dumps(r['params'], sort_keys=True):<45} {r['state']:<8} "
              f"wall_s {_fmt(r['wall_s'])}  ran {_fmt(r.get('start_s'))}-{_fmt(r.get('end_s'))} s  "
              f"top1 {_fmt(r['top1'])}"
              + (f"  error: {r['error']}" if r["error"] else ""))
    if res["baseline"]:
        print("baseline, same cells in this process without Ray (one at a time):")
        for b in res["baseline"]:
            print(f"  {json.dumps(b['params'], sort_keys=True):<49} wall {_fmt(b['wall_s'])} s  top1 {_fmt(b['top1'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=6, help="grid cells = trials (default 6)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial (default 4: about 20 s on one "
                                                               "busy core)")
    parser.add_argument("--embed-dim", type=int, default=32, help="stage-1 width (default 32)")
    parser.add_argument("--baseline", type=int, default=2, help="cells to re-run in-process without Ray (default 2; "
                                                                 "0 skips)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)

    from optuna.exceptions import ExperimentalWarning

    from ablate.study import study_from_dict

    warnings.filterwarnings("ignore", category=ExperimentalWarning)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ablate-bench-") as tmp:
        study = study_from_dict(build_spec(args.cells, args.epochs, args.embed_dim, f"sqlite:///{tmp}/bench.db"))
        ray = run_with_ray(study, args.num_cpus)
        start_stop = ray_start_stop(args.num_cpus)
        baseline = run_in_process(study, args.baseline) if args.baseline else []
    res = {"args": vars(args), "cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg(),
           "ray": ray, "ray_start_stop_s": start_stop, "baseline": baseline}
    if args.json:
        json.dump(res, sys.stdout, indent=1, default=str)
        print()
    else:
        print_table(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
