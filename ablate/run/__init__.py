"""Running a study: the only code that drives Ray Tune and Optuna's sampler and storage.

:func:`run_study` (driver) plans the missing runs; :class:`StudySearcher` (searcher) proposes
and records them; Ray Tune (ray_tune) executes :func:`run_trial` (trial) in its workers.
"""

from ablate.run.driver import RunSummary, run_study
from ablate.run.optuna_study import INTERRUPTED, open_optuna_study
from ablate.run.ray_tune import ray_session
from ablate.run.trial import TrialFn, run_trial

__all__ = ["RunSummary", "run_study", "open_optuna_study", "ray_session", "run_trial",
           "TrialFn", "INTERRUPTED"]
