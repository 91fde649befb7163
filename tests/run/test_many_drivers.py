"""Many drivers, one storage (issue 16): several ``ablate`` driver processes share one study on
SQLite (a file) and on a real PostgreSQL server (tests/conftest.py::postgres_url), and together
train every configuration × repeat exactly once; a driver killed mid-trial is outlived by the
others, which close its trial once its heartbeat is older than the grace period and re-run it.

Each driver is its own process (tests/run/drivers.py) with a synthetic trial that sleeps instead
of training. Every worker logs the runs it starts, so "trained once" is checked from what ran, not
only from what the storage says. The storage is read with ``optuna.load_study``.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from drivers import Driver, write_spec

# Each case starts two or three driver processes, each with its own local Ray: 13-26 s a case and
# about 2.5 min for the file on an idle 2-core machine (3.5 min while other work shares it), so the
# file stays in the default run.

DRIVER_TIMEOUT_S = 150  # one driver's whole run; a healthy one takes 15-40 s on a loaded 2-core machine
SLEEP = "0.3"  # seconds per synthetic epoch: two epochs a trial
GRID = {"window_size": [2, 4, 8], "num_heads": [1, 2]}  # 6 cells
CELLS = {(w, h) for w in GRID["window_size"] for h in GRID["num_heads"]}
#: How a dead driver's trial is described when another driver closes it.
ABANDONED = re.compile(r"abandon|dead|died|heartbeat|no longer (alive|running)", re.I)


def _spec(name: str, url: str, **over) -> dict:
    spec = {
        "name": name,
        "task": "classify",
        "fixed": {"attention": "softmax", "depths": [1, 1], "embed_dim": 16},
        "grid": GRID,
        "objectives": [{"name": "top1", "direction": "maximize"}, {"name": "gflops", "direction": "minimize"}],
        "data": {"name": "digits", "image_size": 32},
        "train": {"epochs": 2, "batch_size": 64},
        "resources": {"cpu": 1, "gpu": 0},
        "storage": url,
    }
    spec.update(over)
    return {k: v for k, v in spec.items() if v is not None}


@pytest.fixture(params=["sqlite", "postgres"])
def storage_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def fleet(tmp_path) -> Callable[..., Driver]:
    """``start(name, spec, url, *args)`` starts a driver; at the end every driver still alive and
    every process one of them started (Ray's included) is killed."""
    # Ray's session folders, per test and short (AF_UNIX paths): no `ray start` cluster elsewhere
    # on the machine is joined, and nothing is left behind.
    ray_tmp = Path(tempfile.mkdtemp(prefix="abl-", dir="/tmp"))
    started: list[Driver] = []

    def start(name: str, spec: dict, url: str, *args: str) -> Driver:
        path = write_spec(spec, tmp_path / f"{spec['name']}.json")
        driver = Driver(name, path, url, tmp_path, *args, env={"RAY_TMPDIR": str(ray_tmp)})
        started.append(driver)
        return driver

    try:
        yield start
    finally:
        for driver in started:
            driver.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)


class Storage:
    """Reads one study from ``url`` with Optuna's public API (one engine, reused while polling)."""

    def __init__(self, url: str, study_name: str) -> None:
        self.url, self.study_name = url, study_name
        self._storage: optuna.storages.RDBStorage | None = None

    def trials(self) -> list[FrozenTrial]:
        """The study's trials; [] while no driver has created it yet."""
        if self.url.startswith("sqlite:///") and not Path(self.url[len("sqlite:///"):]).exists():
            return []  # never create the file before a driver does (it switches it to WAL)
        try:
            if self._storage is None:
                self._storage = optuna.storages.RDBStorage(self.url, skip_table_creation=True)
            return optuna.load_study(study_name=self.study_name, storage=self._storage).get_trials()
        except KeyError:
            return []  # no such study yet
        except Exception:  # tables not created yet
            self.close()
            return []

    def close(self) -> None:
        if self._storage is not None:
            self._storage.engine.dispose()
            self._storage = None


@pytest.fixture
def storages():
    opened: list[Storage] = []

    def open_(url: str, name: str) -> Storage:
        opened.append(Storage(url, name))
        return opened[-1]

    yield open_
    for s in opened:
        s.close()


def _run_of(t: FrozenTrial) -> tuple[str, int]:
    return t.user_attrs.get("config_key"), t.user_attrs.get("repeat", 0)


def _describe(trials: list[FrozenTrial]) -> str:
    return "\n".join(f"  #{t.number} {t.state.name} {t.params} key={t.user_attrs.get('config_key')} "
                     f"repeat={t.user_attrs.get('repeat')} skipped={t.user_attrs.get('skipped')} "
                     f"error={t.user_attrs.get('error')!r}" for t in trials)


def _context(trials: list[FrozenTrial], *drivers: Driver) -> str:
    started = [(d.name, r["key"], r["repeat"], r["params"]) for d in drivers for r in d.started_runs()]
    return (f"\ntrials in the storage:\n{_describe(trials)}\nruns started by the workers:\n"
            + "\n".join(f"  {s}" for s in started) + "\n" + "\n".join(d.output(3000) for d in drivers))


def _wait_all(*drivers: Driver) -> list[int]:
    return [d.wait(DRIVER_TIMEOUT_S) for d in drivers]


def _assert_each_run_once(trials: list[FrozenTrial], drivers: tuple[Driver, ...], *, cells: set, repeats: int,
                          rerun: tuple[str, int] | None = None) -> None:
    """Every grid cell × repeat is COMPLETE exactly once and was started by exactly one worker
    (``rerun``, the run of a killed driver, twice), and nothing is left RUNNING or WAITING."""
    ctx = _context(trials, *drivers)
    live = [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert not live, f"trials left RUNNING/WAITING: {live}{ctx}"
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    runs = Counter(_run_of(t) for t in complete)
    twice = {run: n for run, n in runs.items() if n > 1}
    assert not twice, f"runs COMPLETE more than once: {twice}{ctx}"
    assert len({key for key, _ in runs}) == len(cells), f"distinct configurations COMPLETE != {len(cells)}{ctx}"
    assert sorted((tuple(t.params[k] for k in GRID), t.user_attrs["repeat"]) for t in complete) == \
        sorted((c, r) for c in cells for r in range(repeats)), f"COMPLETE trials do not cover the grid × repeats{ctx}"
    started = Counter((r["key"], r["repeat"]) for d in drivers for r in d.started_runs())
    expected = {run: 2 if run == rerun else 1 for run in runs}
    assert dict(started) == expected, f"runs trained more or less than once: {dict(started)}{ctx}"


def _assert_rerun_has_nothing_to_do(fleet, spec: dict, url: str, storage: Storage) -> None:
    before = len(storage.trials())
    again = fleet("again", spec, url)
    code = again.wait(DRIVER_TIMEOUT_S)
    assert code == 0, again.output()
    assert "nothing to do" in again.summary()["message"], again.output()
    assert again.started_runs() == [] and len(storage.trials()) == before


def _wait_for(what: str, condition: Callable[[], object], timeout: float, *drivers: Driver):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for d in drivers:
            if d.proc.poll() is not None:
                raise AssertionError(f"driver {d.name} exited while waiting for {what}\n{d.output()}")
            d.snapshot_tree()
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n"
                         + "\n".join(d.output(3000) for d in drivers))


def test_two_drivers_train_each_grid_cell_once_and_a_rerun_has_nothing_to_do(storage_url, fleet, storages):
    spec = _spec("two-drivers-grid", storage_url)
    drivers = (fleet("a", spec, storage_url, "--sleep", SLEEP), fleet("b", spec, storage_url, "--sleep", SLEEP))
    codes = _wait_all(*drivers)
    storage = storages(storage_url, spec["name"])
    trials = storage.trials()
    assert codes == [0, 0], _context(trials, *drivers)
    assert not [t.number for t in trials if t.state == TrialState.FAIL], _context(trials, *drivers)
    _assert_each_run_once(trials, drivers, cells=CELLS, repeats=1)
    _assert_rerun_has_nothing_to_do(fleet, spec, storage_url, storage)


@pytest.mark.slow  # the default run keeps the grid and the kill cases; these add a minute
def test_two_drivers_train_each_cell_and_repeat_once(storage_url, fleet, storages):
    spec = _spec("two-drivers-repeats", storage_url, repeats=2)
    drivers = (fleet("a", spec, storage_url, "--sleep", SLEEP), fleet("b", spec, storage_url, "--sleep", SLEEP))
    codes = _wait_all(*drivers)
    trials = storages(storage_url, spec["name"]).trials()
    assert codes == [0, 0], _context(trials, *drivers)
    assert not [t.number for t in trials if t.state == TrialState.FAIL], _context(trials, *drivers)
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 12, _context(trials, *drivers)
    _assert_each_run_once(trials, drivers, cells=CELLS, repeats=2)


@pytest.mark.slow  # the default run keeps the grid and the kill cases; these add a minute
def test_two_drivers_of_a_sampled_study_train_the_budget_of_distinct_configurations_once(
        storage_url, fleet, storages):
    # 9 configurations, a budget of 4; both drivers' samplers share one seed, so they propose
    # the same configurations in the same order: only the storage's claims keep them apart.
    spec = _spec("two-drivers-sampled", storage_url, grid=None, trials=4, sampler={"name": "random", "seed": 0},
                 space={"fixed": {"attention": "softmax"},
                        "params": {"window_size": {"choice": [2, 4, 8]}, "num_heads": {"choice": [1, 2, 4]}}})
    drivers = (fleet("a", spec, storage_url, "--sleep", SLEEP), fleet("b", spec, storage_url, "--sleep", SLEEP))
    codes = _wait_all(*drivers)
    trials = storages(storage_url, spec["name"]).trials()
    ctx = _context(trials, *drivers)
    assert codes == [0, 0], ctx
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)], ctx
    trained = [t for t in trials if not t.user_attrs.get("skipped")]
    assert [t.state for t in trained] == [TrialState.COMPLETE] * 4, ctx
    assert len({t.user_attrs["config_key"] for t in trained}) == 4, ctx
    started = Counter(r["key"] for d in drivers for r in d.started_runs())
    assert sorted(started.values()) == [1, 1, 1, 1], ctx
    assert set(started) == {t.user_attrs["config_key"] for t in trained}, ctx


def test_a_driver_killed_mid_trial_is_outlived_and_its_trial_rerun(storage_url, fleet, storages):
    spec = _spec("killed-driver", storage_url)
    storage = storages(storage_url, spec["name"])
    victim = fleet("victim", spec, storage_url, "--sleep", "2.5")  # 5 s per trial: easy to catch running

    def victims_running_trial() -> FrozenTrial | None:
        mine = victim.started_runs()
        if not mine:
            return None
        current = (mine[-1]["key"], mine[-1]["repeat"])
        running = [t for t in storage.trials() if t.state == TrialState.RUNNING and _run_of(t) == current]
        return running[0] if len(running) == 1 else None

    _wait_for("a RUNNING trial of the victim", victims_running_trial, 90, victim)
    survivor = fleet("survivor", spec, storage_url, "--sleep", SLEEP, "--heartbeat-grace-s", "5")
    # The survivor starts while the victim is alive: the victim's trial must stay RUNNING.
    _wait_for("the survivor's first trial", survivor.started_runs, 90, victim, survivor)
    killed = _wait_for("a RUNNING trial of the live victim (a starting driver must not close it)",
                       victims_running_trial, 30, victim, survivor)
    victim.sigkill()
    code = survivor.wait(DRIVER_TIMEOUT_S)
    trials = storage.trials()
    ctx = _context(trials, victim, survivor)
    assert code == 0, ctx
    row = next(t for t in trials if t.number == killed.number)
    assert row.state == TrialState.FAIL, ctx
    assert ABANDONED.search(str(row.user_attrs.get("error", ""))), \
        f"the killed trial's error should say it was abandoned by a dead driver: {row.user_attrs.get('error')!r}{ctx}"
    assert [t for t in trials if t.state == TrialState.COMPLETE and _run_of(t) == _run_of(killed)], \
        f"the killed trial was not re-run{ctx}"
    _assert_each_run_once(trials, (victim, survivor), cells=CELLS, repeats=1, rerun=_run_of(killed))
    _assert_rerun_has_nothing_to_do(fleet, spec, storage_url, storage)
