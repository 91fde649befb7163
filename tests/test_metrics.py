"""One vocabulary of metrics: every name the schema, runner and readers use comes from it."""

from __future__ import annotations

from ablate import metrics
from ablate.results import cells, figures
from ablate.study import schema


def test_objectives_the_schema_accepts_are_the_vocabularys():
    assert schema.OBJECTIVES is metrics.OBJECTIVES and schema.TRAINING_METRICS is metrics.TRAINING_METRICS
    assert set(metrics.OBJECTIVES) == {"top1", "map50_95", "gflops", "gflops_paper", "params_m", "latency_ms"}
    assert all(metrics.METRICS[n].kind == "training" for n in metrics.TRAINING_METRICS)
    assert set(metrics.TASK_METRIC.values()) <= set(metrics.TRAINING_METRICS)


def test_reports_and_figures_name_metrics_from_the_vocabulary():
    assert set(cells.COST_COLUMNS) <= set(metrics.COSTS) and figures.COST_KEYS == metrics.COSTS
    assert figures.label_of("top1") == metrics.METRICS["top1"].label and figures.label_of("other") == "other"
    for m in metrics.METRICS.values():
        assert m.direction in ("maximize", "minimize") and format(1.23456, m.fmt)
