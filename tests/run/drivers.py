"""Run one ``ablate`` driver as its own process over a given storage, with a cheap synthetic trial.

Used by the many-driver tests (tests/run/test_many_drivers.py), which start several of these at
once on one storage, kill some, and inspect the storage::

    python tests/run/drivers.py STUDY_JSON STORAGE_URL [--sleep S] [--log FILE] [--trials N]
                                [--max-retries N] [--heartbeat-grace-s S] [--num-cpus N]

``STUDY_JSON`` is a study as a JSON object (a file, or the object itself); it is built with
``ablate.study.study_from_dict(spec, check=False)`` and run with ``ablate.run.run_study`` on a
local Ray of ``--num-cpus`` CPUs (default 1). The trial trains nothing: it reports the study's
``train.epochs`` epochs of made-up ``top1``, ``gflops`` and ``params_m``, sleeping ``S`` seconds
per epoch. With ``--log FILE`` every trial appends one JSON line when it starts: its
configuration key, repeat, and this driver's pid, so a test knows which driver ran what without
relying on how the runner marks ownership. ``--max-retries`` and ``--heartbeat-grace-s`` are
passed to ``run_study`` only when given.

The driver prints its summary as one JSON line (``{"summary": {...}}``) and exits 0; an
``AblateError`` prints ``error: ...`` and exits 2, like ``ablate run``; anything else is a bug
with its traceback (exit 1).

Importing this module is cheap: the test helpers below start and inspect drivers.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]


# -- the driver process --------------------------------------------------------------------------

def synthetic_trial(study, params, report, *, device="cpu", repeat=0, candidate=None, sleep_s=0.0,
                    log=None, driver_pid=None):
    """A trial without training: ``study.train.epochs`` reports, ``sleep_s`` seconds apart.

    Accuracy and cost are made up from the configuration (stable across processes); ``log``
    gets one JSON line per started trial.
    """
    key = candidate.key if candidate is not None else json.dumps(params, sort_keys=True, default=str)
    if log:
        line = json.dumps({"key": key, "repeat": repeat, "driver": driver_pid, "worker": os.getpid(),
                           "params": params, "t": time.time()}, default=str)
        with open(log, "a") as f:
            f.write(line + "\n")
    base = zlib.crc32(json.dumps(params, sort_keys=True, default=str).encode()) % 50
    last = {}
    for epoch in range(1, study.train.epochs + 1):
        time.sleep(sleep_s)
        last = {"epoch": epoch, "top1": 40.0 + base + epoch, "train_loss": 1.0 / epoch,
                "gflops": 0.01 * (1 + base), "params_m": 0.1, "epochs_done": epoch}
        report(last)
    return last


def _read_spec(arg: str) -> dict:
    text = arg if arg.lstrip().startswith("{") else Path(arg).read_text()
    return json.loads(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study_json")
    parser.add_argument("storage_url")
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds per synthetic epoch")
    parser.add_argument("--log", default=None, help="file that gets one JSON line per started trial")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--max-retries", type=int, default=None)
    parser.add_argument("--heartbeat-grace-s", type=float, default=None)
    parser.add_argument("--num-cpus", type=int, default=1)
    args = parser.parse_args(argv)

    import functools

    from ablate.errors import AblateError
    from ablate.run import run_study
    from ablate.study import study_from_dict

    if __name__ != "__main__":  # __main__'s functions are pickled by value already
        from ray import cloudpickle  # Ray's vendored copy: Ray workers cannot import tests/

        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    kw: dict[str, Any] = {}
    if args.trials is not None:
        kw["trials"] = args.trials
    if args.max_retries is not None:
        kw["max_retries"] = args.max_retries
    if args.heartbeat_grace_s is not None:
        kw["heartbeat_grace_s"] = args.heartbeat_grace_s
    trial_fn = functools.partial(synthetic_trial, sleep_s=args.sleep, driver_pid=os.getpid(),
                                 log=str(Path(args.log).resolve()) if args.log else None)
    try:
        study = study_from_dict(_read_spec(args.study_json), check=False)
        summary = run_study(study, storage=args.storage_url, trial_fn=trial_fn, progress=False, num_cpus=args.num_cpus,
                            **kw)
    except AblateError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    import dataclasses

    print(json.dumps({"summary": dataclasses.asdict(summary)}, default=str), flush=True)
    return 0


# -- helpers for the tests -----------------------------------------------------------------------

class Driver:
    """One driver subprocess: its output goes to files beside ``log`` (never a pipe that could fill)."""

    def __init__(self, name: str, spec_path: Path, url: str, workdir: Path, *args: str,
                 env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.log = workdir / f"{name}.trials.jsonl"
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        cmd = [sys.executable, str(HERE), str(spec_path), url, "--log", str(self.log), *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)
        self.started = time.monotonic()
        #: Every descendant ever seen, pid -> start time (Ray's processes outlive a killed driver).
        self.tree: dict[int, float] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def snapshot_tree(self) -> None:
        import psutil

        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            try:
                self.tree.setdefault(child.pid, child.create_time())
            except psutil.Error:
                pass

    def wait(self, timeout: float) -> int:
        """The exit code; a driver still running after ``timeout`` seconds is killed and fails the test."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.snapshot_tree()
            time.sleep(0.25)
        if self.proc.poll() is None:
            self.kill()
            raise AssertionError(f"driver {self.name} still running after {timeout:.0f} s\n{self.output()}")
        return self.proc.returncode

    def sigkill(self) -> None:
        """SIGKILL the driver process alone (what the OOM killer or a lost node does to it)."""
        self.snapshot_tree()
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def kill(self) -> None:
        """Kill the driver and everything it started (its session and every descendant seen)."""
        import psutil

        if self.proc.poll() is None:
            self.snapshot_tree()
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        doomed = []
        for p in psutil.process_iter():
            try:
                # the driver leads its own session, which Ray's processes keep even when reparented
                if p.pid != os.getpid() and (os.getsid(p.pid) == self.pid or self.tree.get(p.pid) == p.create_time()):
                    doomed.append(p)
            except (OSError, psutil.Error):
                pass
        for p in doomed:
            try:
                p.kill()
            except psutil.Error:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass

    def started_runs(self) -> list[dict]:
        """The trials this driver's workers started, in order (one dict per ``--log`` line)."""
        return read_log(self.log)

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def summary(self) -> dict:
        for line in reversed(self.stdout().splitlines()):
            if line.startswith('{"summary"'):
                return json.loads(line)["summary"]
        raise AssertionError(f"driver {self.name} printed no summary\n{self.output()}")

    def output(self, tail: int = 6000) -> str:
        err = self.err_path.read_text(errors="replace") if self.err_path.exists() else ""
        return f"--- {self.name} (pid {self.pid}, exit {self.proc.returncode}) stdout:\n{self.stdout()[-tail:]}" \
               f"\n--- stderr:\n{err[-tail:]}"


def read_log(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_spec(spec: Mapping[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(spec))
    return path


if __name__ == "__main__":
    sys.exit(main())
