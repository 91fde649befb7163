"""GPUs by resources: a trial that reserves ``gpu: g`` gets its own device from Ray
(``CUDA_VISIBLE_DEVICES``) and ``GPUs / g`` trials run at once, fractions included.

The scheduling is tested with logical GPUs on a CPU node (Ray hands out device ids whether or
not a device exists; the trials run on ``--device cpu``); ``-m gpu`` runs the same on real GPUs.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time

import pytest
from optuna.trial import TrialState

from ablate.errors import ConfigError
from ablate.run import ray_session, run_study
from ablate.run.ray_tune import check_resources, concurrency
from ablate.study import study_from_dict


def _spec(tmp_path, cells: int, **over) -> dict:
    spec = {
        "name": "gpu-resources",
        "task": "classify",
        "fixed": {"attention": "softmax", "depths": [1, 1], "embed_dim": 16, "num_heads": 2},
        "grid": {"window_size": list(range(1, cells + 1))},
        "objectives": [{"name": "top1", "direction": "maximize"}],
        "data": {"name": "digits", "image_size": 32},
        "train": {"epochs": 1, "batch_size": 64},
        "resources": {"cpu": 0.5, "gpu": 0.5},
        "storage": f"sqlite:///{tmp_path / 'study.db'}",
    }
    spec.update(over)
    return spec


@pytest.mark.parametrize(("cpu", "gpu", "resources", "expected"), [
    (0.5, 0.5, {"CPU": 2, "GPU": 2}, 4),      # the example: 2 GPUs / 0.5
    (1, 0.5, {"CPU": 2, "GPU": 2}, 2),        # CPUs bind first
    (0.1, 0.1, {"CPU": 16, "GPU": 1}, 10),    # 1 // 0.1 is 9 in floats; Ray counts 10
    (0.25, 0.3, {"CPU": 8, "GPU": 1}, 3),
    (1, 1, {"CPU": 8, "GPU": 3}, 3),
    (1, 0, {"CPU": 3, "GPU": 2}, 3),          # no GPU reserved: GPUs do not count
    (1, 0.5, {"CPU": 8}, 1),                  # nothing fits: at least 1 (check_resources refuses it)
])
def test_concurrency_is_resources_over_what_a_trial_reserves(tmp_path, cpu, gpu, resources, expected):
    study = study_from_dict(_spec(tmp_path, 2, resources={"cpu": cpu, "gpu": gpu}), check=False)
    assert concurrency(study, resources) == expected


def test_concurrency_counts_per_node_and_honours_max_concurrent(tmp_path):
    study = study_from_dict(_spec(tmp_path, 2, resources={"cpu": 1, "gpu": 1}), check=False)
    nodes = [{"CPU": 1.5, "GPU": 1}, {"CPU": 1.5, "GPU": 1}]  # 3 CPUs in all, but one trial per node
    assert concurrency(study, {"CPU": 3, "GPU": 2}, nodes=nodes) == 2
    capped = study_from_dict(_spec(tmp_path, 2, resources={"cpu": 0.5, "gpu": 0.5}, max_concurrent=3), check=False)
    assert concurrency(capped, {"CPU": 4, "GPU": 4}) == 3


def test_a_trial_that_fits_on_no_node_is_refused_in_one_line(tmp_path):
    study = study_from_dict(_spec(tmp_path, 2, resources={"cpu": 1, "gpu": 0.5}), check=False)
    check_resources(study, [{"CPU": 2}, {"CPU": 1, "GPU": 1}])  # the second node fits
    with pytest.raises(ConfigError, match=r"resources: each trial reserves cpu: 1, gpu: 0.5, which no Ray node has "
                                          r"\(nodes: CPU 2, GPU 0\)") as err:
        check_resources(study, [{"CPU": 2}])
    assert "\n" not in str(err.value)


def recording_trial(study, params, report, *, device="cpu", repeat=0, candidate=None, out: str, sleep_s: float):
    """Records the devices Ray gave this trial and when it ran; trains nothing."""
    start = time.time()
    time.sleep(sleep_s)
    line = {"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time(),
            "device": device, "pid": os.getpid()}
    if device == "cuda":
        import torch

        torch.ones(4, device="cuda").sum().item()  # the device given is usable
        line["torch_devices"] = torch.cuda.device_count()
    with open(out, "a") as f:
        f.write(json.dumps(line) + "\n")
    report({"epoch": 1, "top1": float(study.candidate(params)["window_size"]), "epochs_done": 1})


def _overlap(rows: list[dict]) -> int:
    """The most rows running at one instant."""
    events = sorted([(r["start"], 1) for r in rows] + [(r["end"], -1) for r in rows], key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


@pytest.fixture(scope="module")
def logical_gpus():
    """A local Ray with 2 CPUs and 2 logical GPUs (no device behind them)."""
    with ray_session(num_cpus=2, num_gpus=2):
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests/
        yield


def test_logical_gpus_give_each_trial_its_own_device_and_run_gpus_over_fraction_at_once(tmp_path, logical_gpus):
    out = tmp_path / "trials.jsonl"
    study = study_from_dict(_spec(tmp_path, 8), check=False)
    summary = run_study(study, trial_fn=functools.partial(recording_trial, out=str(out), sleep_s=6.0),
                        device="cpu", progress=False)
    assert summary.concurrency == 4  # 2 GPUs / 0.5, 2 CPUs / 0.5
    assert summary.states == {TrialState.COMPLETE.name: 8}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8
    assert all(r["cuda"] in ("0", "1") for r in rows), rows  # one id each, set by Ray
    assert {r["cuda"] for r in rows} == {"0", "1"}  # spread over both devices
    most = _overlap(rows)
    for gpu in ("0", "1"):
        assert _overlap([r for r in rows if r["cuda"] == gpu]) <= 2  # 0.5 each: two per device
    assert most == 4, rows  # Tune keeps the nodes full (not one pending trial at a time)
    print(f"logical GPUs: {most} trials at once (at most 4 allowed); devices "
          f"{sorted(r['cuda'] for r in rows)}")


@pytest.mark.gpu
def test_real_gpus_are_shared_by_fraction(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    out = tmp_path / "trials.jsonl"
    study = study_from_dict(_spec(tmp_path, 4, resources={"cpu": 0.5, "gpu": 0.5}), check=False)
    with ray_session(num_cpus=4):  # Ray finds the machine's GPUs itself
        import ray
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        gpus = int(ray.cluster_resources().get("GPU", 0))
        summary = run_study(study, trial_fn=functools.partial(recording_trial, out=str(out), sleep_s=3.0),
                            device="cuda", progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert gpus >= 1 and summary.states == {TrialState.COMPLETE.name: 4}
    assert all(r["device"] == "cuda" and r["torch_devices"] == 1 and r["cuda"] in {str(i) for i in range(gpus)}
               for r in rows), rows
    assert _overlap(rows) <= min(4, 2 * gpus)
    print(f"real GPUs: {gpus}; {_overlap(rows)} trials at once; devices {sorted(r['cuda'] for r in rows)}")
