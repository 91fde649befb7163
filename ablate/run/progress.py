"""What a run shows while it works: a progress bar and one line per finished trial."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import optuna
from optuna.trial import TrialState

from ablate.study import Study

__all__ = ["Progress"]


class Progress:
    """A rich progress bar (done / total, elapsed, ETA) and one line per finished trial."""

    def __init__(self, study: Study, enabled: bool) -> None:
        self.study = study
        self.enabled = enabled
        self._progress = None
        self._task = None

    @contextmanager
    def running(self, total: int) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        with Progress(TextColumn(f"[bold]{self.study.name}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("trials"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()) as prog:
            self._progress = prog
            self._task = prog.add_task("trials", total=total)
            try:
                yield
            finally:
                self._progress = None

    def trial_done(self, frozen: optuna.trial.FrozenTrial) -> None:
        if self._progress is None:
            return
        params = self.study.decode_params(frozen.params)
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
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
        self._progress.console.print(f"trial {frozen.number:>3} {frozen.state.name:<8} {shown}  {outcome}{took}")
        self._progress.advance(self._task)

