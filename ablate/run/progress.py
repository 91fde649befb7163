"""What a run shows while it works: on a terminal a progress bar, elsewhere (a pipe, a log
file, CI) plain lines; in both one line per finished trial.

Without a terminal rich's live bar draws nothing until it stops, so a log stayed empty until
the first trial ended. There the run prints a start line at once, one line per finished
trial, and every :data:`INTERVAL_ENV` seconds (default :data:`DEFAULT_INTERVAL_S`) a line
``progress: 3/10 done, 2 running, elapsed 1m05s, ETA 2m31s``. Every line is flushed.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

import optuna
from optuna.trial import TrialState

from ablate.errors import ConfigError
from ablate.study import Study

__all__ = ["DEFAULT_INTERVAL_S", "INTERVAL_ENV", "Progress", "format_duration", "progress_interval"]

#: Seconds between two ``progress:`` lines when stdout is not a terminal.
DEFAULT_INTERVAL_S = 30.0
#: The environment variable that sets them (``0`` turns the periodic line off).
INTERVAL_ENV = "ABLATE_PROGRESS_INTERVAL"
_MAX_INTERVAL_S = 86400.0
#: Longest params text in a trial line before it is cut (a sampled study over many keys).
_MAX_PARAMS_CHARS = 160


def progress_interval() -> float:
    """Seconds between ``progress:`` lines, from :data:`INTERVAL_ENV` (0: none).

    The command line calls this before it opens anything, so a bad value is one line and
    exit 2 with nothing written.

    Raises:
        ConfigError: the variable is not a number of seconds in [0, 86400].
    """
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= _MAX_INTERVAL_S:  # also NaN
        raise ConfigError(f"{INTERVAL_ENV}={raw!r}: must be a number of seconds in [0, {_MAX_INTERVAL_S:g}] "
                          f"(0: no periodic progress line), allowed: e.g. {INTERVAL_ENV}=30")
    return value


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h04m``: short enough for a log line, exact enough for an ETA."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Done / total, elapsed and ETA, and one line per finished trial (module docstring).

    Args:
        study: The study (its name, objectives and how params print).
        enabled: False (``-q``): nothing is printed.
        stream: Where lines go (default ``sys.stdout``); a terminal gets the bar.
        interval_s: Seconds between ``progress:`` lines without a terminal (default:
            :func:`progress_interval`).
    """

    def __init__(self, study: Study, enabled: bool, *, stream: TextIO | None = None,
                 interval_s: float | None = None) -> None:
        self.study = study
        self.enabled = enabled
        #: How many runs are in flight; the driver sets it (its searcher knows), else unknown.
        self.in_flight: Callable[[], int] | None = None
        self._stream = stream
        self._interval = interval_s
        self._progress = None
        self._task = None
        self._plain = False
        self._lock = threading.Lock()
        self._total = 0
        self._done = 0
        self._start = 0.0

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    @contextmanager
    def running(self, total: int) -> Iterator[None]:
        """Show progress over ``total`` runs while the body runs."""
        if not self.enabled:
            yield
            return
        self._total, self._done, self._start = total, 0, time.monotonic()
        if not _is_terminal(self.stream):
            yield from self._running_plain()
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        from rich.console import Console

        console = Console(file=self._stream) if self._stream is not None else None
        with Progress(TextColumn(f"[bold]{self.study.name}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("trials"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                      console=console) as prog:
            self._progress = prog
            self._task = prog.add_task("trials", total=total)
            try:
                yield
            finally:
                self._progress = None

    def _running_plain(self) -> Iterator[None]:
        interval = self._interval if self._interval is not None else progress_interval()
        every = f", a progress line every {format_duration(interval)}" if interval > 0 else ""
        self._say(f"{self.study.name}: {self._total} run(s) to train{every}")
        stop = threading.Event()
        ticker = None
        if interval > 0:
            ticker = threading.Thread(target=self._tick, args=(stop, interval), name="ablate-progress", daemon=True)
            ticker.start()
        self._plain = True
        try:
            yield
        finally:
            self._plain = False
            stop.set()
            if ticker is not None:
                ticker.join(timeout=5)

    def _tick(self, stop: threading.Event, interval: float) -> None:
        while not stop.wait(interval):
            self._say(self.status_line())

    def status_line(self) -> str:
        """``progress: 3/10 done, 2 running, elapsed 1m05s, ETA 2m31s``."""
        elapsed = time.monotonic() - self._start
        done, total = self._done, self._total
        running = ""
        if self.in_flight is not None:
            try:
                running = f", {int(self.in_flight())} running"
            except Exception:  # the count is a courtesy; a driver mid-shutdown must not kill the ticker
                running = ""
        eta = format_duration(elapsed / done * (total - done)) if done and total > done else \
            "0s" if total and done >= total else "unknown until a run finishes"
        return f"progress: {done}/{total} done{running}, elapsed {format_duration(elapsed)}, ETA {eta}"

    def trial_done(self, frozen: optuna.trial.FrozenTrial) -> None:
        """Print one line for a finished trial: number, state, params, values or why not, wall time."""
        if self._progress is None and not self._plain:
            return
        line = self.trial_line(frozen)
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False)
            self._progress.advance(self._task)
            return
        self._done += 1
        self._say(line)

    def trial_line(self, frozen: optuna.trial.FrozenTrial) -> str:
        """``trial   3 COMPLETE window_size=7  top1=81.2  gflops_paper=4.493 (12.3s)``."""
        params = self.study.decode_params(frozen.params)
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        if len(shown) > _MAX_PARAMS_CHARS:
            shown = shown[:_MAX_PARAMS_CHARS - 3] + "..."
        if self.study.repeats > 1 and "seed" in frozen.user_attrs:
            shown += f" (seed {frozen.user_attrs['seed']}, repeat {frozen.user_attrs.get('repeat', 0) + 1}" \
                     f"/{self.study.repeats})"
        if frozen.state == TrialState.COMPLETE:
            outcome = "  ".join(f"{o.name}={v:.4g}" for o, v in zip(self.study.objectives, frozen.values))
        elif frozen.state == TrialState.PRUNED:
            outcome = f"stopped early after {frozen.user_attrs.get('epochs_done', '?')} epoch(s)"
        else:
            outcome = f"failed: {frozen.user_attrs.get('error', '?')}"
        wall = frozen.user_attrs.get("wall_s")
        took = f" ({wall:.1f}s)" if isinstance(wall, (int, float)) else ""
        return f"trial {frozen.number:>3} {frozen.state.name:<8} {shown}  {outcome}{took}"

    def _say(self, line: str) -> None:
        with self._lock:
            try:
                print(line, file=self.stream, flush=True)
            except (BrokenPipeError, ValueError):  # `| head` closed the pipe, or stdout is closed: keep training
                pass


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
