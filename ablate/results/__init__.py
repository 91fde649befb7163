"""Results: read a study from its storage (never writing), aggregate its seeds per
configuration, test the differences, find the fronts, and turn it into reports and figures."""

from ablate.results.aggregate import (
    Aggregates,
    aggregate,
    config_keys,
    front_and_indistinguishable,
    reference_repeats,
    significantly_dominated,
)
from ablate.results.pareto import hypervolume_2d, hypervolume_history, nondominated, pareto_front
from ablate.results.reader import StudyReader, StudyResults, load_results, study_names, trial_metric

__all__ = ["StudyResults", "StudyReader", "Aggregates", "aggregate", "config_keys", "load_results", "study_names",
           "pareto_front", "nondominated", "significantly_dominated", "front_and_indistinguishable",
           "hypervolume_2d", "hypervolume_history", "trial_metric", "reference_repeats"]
