"""The memory estimate is a lower bound, and what cannot fit is refused before anything is built.

The bound is checked against what PyTorch really keeps: every tensor the autograd graph
saves during a training forward pass of one image (``saved_tensors_hooks``, counted once
per storage), and the model's real parameter count, over every preset.
"""

from __future__ import annotations

import pytest
import torch

from ablate.errors import ConfigError
from ablate.models import build_model, resolve_architecture
from ablate.models.memory import DoesNotFit, check_memory, estimate_memory, format_bytes, machine_memory
from ablate.models.presets import list_presets


def _saved_bytes(model: torch.nn.Module, size: int) -> int:
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(torch.randn(1, 3, size, size))
    out.sum().backward()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in seen.items() if ptr not in params)


# Small images keep this fast; each preset's own options are kept (window sizes need maps of
# at least their size, so the sizes are per family).
_SIZES = {"flatten_swin": 224, "focal": 112, "biformer": 224, "swin": 112, "pvt": 64, "deit": 64, "lavit": 112, "flatten": 112}


@pytest.mark.parametrize("name", list_presets())
def test_the_estimate_is_below_what_pytorch_keeps(name: str) -> None:
    size = next((s for k, s in _SIZES.items() if k in name), 64)
    if "base" in name or "small" in name:
        pytest.skip("same formulas as the tiny preset; too slow for the default suite")
    arch = resolve_architecture({"preset": name, "img_size": size})
    torch.manual_seed(0)
    model = build_model(arch)
    est = estimate_memory(arch)
    real_params = sum(p.numel() for p in model.parameters())
    assert 0 < est.params <= real_params, (est.params, real_params)
    saved = _saved_bytes(model, size)
    assert est.per_image <= saved + 3 * size * size * 4, (format_bytes(est.per_image), format_bytes(saved))
    assert est.per_image > saved / 20, "a bound this loose would never refuse anything"


def test_an_image_no_machine_holds_is_refused_naming_the_limit() -> None:
    arch = resolve_architecture({"preset": "focal_tiny", "img_size": 8192})
    with pytest.raises(DoesNotFit) as info:
        check_memory(arch, limit=(32 * 2 ** 30, "RAM"))
    message = str(info.value)
    assert "\n" not in message
    assert "8192x8192" in message and "32.0 GiB of this machine's RAM" in message
    assert "allowed: a smaller image_size, width or depth" in message


def test_the_batch_counts_only_for_training() -> None:
    arch = resolve_architecture({"preset": "deit_tiny"})
    est = estimate_memory(arch)
    limit = (est.train_bytes(64) + 1, "RAM")
    check_memory(arch, batch=64, limit=limit)
    with pytest.raises(DoesNotFit, match="on 128 images"):
        check_memory(arch, batch=128, limit=limit)
    check_memory(arch, train=False, limit=(est.measure_bytes(), "RAM"))


def test_the_limit_comes_from_the_machine_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    total, what = machine_memory()
    assert total >= psutil.virtual_memory().total and what in ("RAM",) + tuple(f"GPU {i}" for i in range(16))
    monkeypatch.setenv("ABLATE_MEMORY_LIMIT", "1.5G")
    assert machine_memory() == (int(1.5 * 2 ** 30), "ABLATE_MEMORY_LIMIT")
    monkeypatch.setenv("ABLATE_MEMORY_LIMIT", "lots")
    with pytest.raises(ConfigError, match="ABLATE_MEMORY_LIMIT must be a size"):
        machine_memory()


@pytest.mark.parametrize(("keys", "message"), [
    ({"img_size": 10 ** 6}, "img_size must be an integer in [1, 8192]"),
    ({"depths": [10 ** 12, 1]}, "depths[0] must be an integer in [1, 1024]"),
    ({"embed_dim": 32768}, "gives 262144 channels"),
    ({"mlp_ratio": float("nan")}, "mlp_ratio must be in (0.0, 64.0)"),
    ({"attention": "focal", "window_size": 10 ** 9}, "window_size must be an integer in [-65536, 65536]"),
    ({"attention": "lavit", "dp_loss_weight": 1e308}, "dp_loss_weight must be a finite number"),
])
def test_builder_keys_are_bounded(keys: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_architecture(keys)
    assert message in str(info.value)


def test_a_trial_whose_batch_cannot_fit_its_device_fails_before_building(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker checks the full batch against the device it trains on (here: 64 KiB)."""
    from ablate.run.trial import run_trial
    from ablate.study import study_from_dict

    study = study_from_dict({"name": "m", "grid": {"window_size": [2]}, "objectives": ["top1"],
                             "fixed": {"attention": "softmax", "embed_dim": 16, "depths": [1, 1],
                                       "num_heads": 1},
                             "data": {"image_size": 16}, "train": {"epochs": 1, "batch_size": 32}})
    built = []
    monkeypatch.setattr("ablate.run.trial.build_model", lambda arch: built.append(arch))
    monkeypatch.setenv("ABLATE_MEMORY_LIMIT", "64K")
    with pytest.raises(DoesNotFit, match="on 32 images at 16x16.*64.0 KiB of this machine.s ABLATE_MEMORY_LIMIT"):
        run_trial(study, {"window_size": 2}, lambda m: None)
    assert built == []


def test_the_guard_turns_running_out_of_ram_into_one_line() -> None:
    """A model the lower bound passes can still need more than the machine has: inside the guard
    an allocation beyond the available RAM raises DoesNotFit instead of waking the OOM killer."""
    import resource

    import psutil

    from ablate.models.memory import memory_guard

    before = resource.getrlimit(resource.RLIMIT_DATA)
    too_much = int(psutil.virtual_memory().available) + 2 ** 30
    with pytest.raises(DoesNotFit, match="^focal_tiny at 8192x8192: ran out of this machine's memory"):
        with memory_guard("focal_tiny at 8192x8192"):
            torch.empty(too_much, dtype=torch.uint8)
    assert resource.getrlimit(resource.RLIMIT_DATA) == before
    with memory_guard("small"):
        assert torch.ones(1024).sum() == 1024
