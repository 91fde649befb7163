"""Runner overhead: the wall time of a real study under Ray against the trials' own time.

The target (from the issue): for trials of about 20 s,

    ratio = wall time of the run / (sum of the trials' own ``wall_s`` / concurrency) < 1.15

A grid of small Focal ViTs on digits (32 px, four stages, the architecture of
``studies/window_size.yaml``) is run through :func:`ablate.runner.run_study` with one CPU
per trial and SQLite storage in a temporary folder. The whole call is timed, Ray's start
and shutdown included. Each trial's ``wall_s`` (measured inside the worker, from the start
of the trainable: cost counting, data loading and training) is read back from the Optuna
storage; so is each trial's ask/tell time, which splits the overhead into

* start-up: from the call to the first trial being asked for (Ray start, Tuner set-up);
* per trial: from ask to tell, minus the trial's own ``wall_s`` (actor start and imports,
  scheduling, result reporting);
* tail: from the last trial's tell to the call's return (Tuner and Ray shutdown).

A baseline then runs the first ``--baseline`` cells in this process with
:func:`ablate.trial.run_trial` (no Ray, torch on as many threads as a trial gets), so the
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


def run_with_ray(study, num_cpus: int | None) -> dict[str, Any]:
    """Time ``run_study`` and split its overhead with the storage's ask/tell times."""
    import optuna

    from ablate.runner import run_study

    t0 = dt.datetime.now()
    start = time.perf_counter()
    summary = run_study(study, progress=False, num_cpus=num_cpus)
    wall = time.perf_counter() - start
    t1 = dt.datetime.now()

    trials = optuna.load_study(study_name=study.name, storage=study.storage).get_trials()
    rows = []
    for t in trials:
        own = t.user_attrs.get("wall_s")
        span = _seconds(t.datetime_start, t.datetime_complete) if t.datetime_complete else None
        rows.append({"number": t.number, "params": t.params, "state": t.state.name, "wall_s": own,
                     "ask_to_tell_s": span, "outside_trial_s": None if own is None or span is None else span - own,
                     "top1": t.values[0] if t.values else None, "error": t.user_attrs.get("error")})
    finished = [r for r in rows if isinstance(r["wall_s"], (int, float))]
    total = sum(r["wall_s"] for r in finished)
    conc = summary.concurrency
    ideal = total / conc if conc else float("nan")
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    return {
        "trials": len(rows),
        "states": summary.states,
        "concurrency": conc,
        "sum_wall_s": total,
        "ideal_s": ideal,
        "wall_s": wall,
        "ratio": wall / ideal if ideal else float("nan"),
        # a schedule cannot be shorter than its longest trial: what part of the ratio is packing, not Ray
        "makespan_bound_s": max([ideal] + [r["wall_s"] for r in finished]),
        "startup_s": _seconds(t0, min(starts)) if starts else None,
        "tail_s": _seconds(max(ends), t1) if ends else None,
        "mean_outside_trial_s": (sum(r["outside_trial_s"] for r in finished if r["outside_trial_s"] is not None)
                                 / max(1, len(finished))),
        "per_trial": rows,
    }


def run_in_process(study, cells: int) -> list[dict[str, Any]]:
    """The first ``cells`` grid cells, one after the other, without Ray."""
    import torch

    from ablate.trial import run_trial

    torch.set_num_threads(max(1, int(study.resources.cpu)))  # what the runner gives a trial
    out = []
    for params in study.cells()[:cells]:
        start = time.perf_counter()
        last = run_trial(study, params, lambda metrics: None)
        out.append({"params": params, "wall_s": time.perf_counter() - start, "top1": last.get("top1")})
    return out


def ray_start_stop(num_cpus: int | None) -> float:
    """Seconds to start a local Ray the way the runner does and shut it down, with no trial."""
    from ablate.runner import ray_session

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
    print(f"  ideal = sum / concurrency     {_fmt(ray['ideal_s'])} s   (no schedule beats "
          f"{_fmt(ray['makespan_bound_s'])} s: the longest trial)")
    print(f"  measured wall of run_study    {_fmt(ray['wall_s'])} s")
    print(f"  ratio = wall / ideal          {_fmt(ray['ratio'], 3)}   (target < 1.15)")
    print("overhead breakdown:")
    print(f"  start-up (call -> first ask)  {_fmt(ray['startup_s'])} s")
    print(f"  per trial, ask->tell - wall_s {_fmt(ray['mean_outside_trial_s'], 2)} s (mean)")
    print(f"  tail (last tell -> return)    {_fmt(ray['tail_s'])} s")
    print(f"  Ray start + shutdown, no trial {_fmt(res['ray_start_stop_s'])} s")
    print("trials under Ray:")
    for r in ray["per_trial"]:
        print(f"  #{r['number']:<2} {json.dumps(r['params'], sort_keys=True):<45} {r['state']:<8} "
              f"wall_s {_fmt(r['wall_s'])}  ask->tell {_fmt(r['ask_to_tell_s'])}  top1 {_fmt(r['top1'])}"
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

    warnings.filterwarnings("ignore", category=Warning, module="optuna")
    from ablate.config import study_from_dict

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
