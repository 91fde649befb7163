"""``train.compile: true``: every attention family and tiny preset compiles and trains as in eager mode.

Three kinds of check:

* graph breaks: each registered family's mixer (default run, seconds) and each tiny preset
  (``slow``: dynamo traces a whole model for up to a minute here) through
  ``torch.compile(..., fullgraph=True, backend="eager")``: dynamo alone decides graph
  breaks, so no kernel is built. :data:`GRAPH_BREAKS` is the list the README gives; a
  family on it must still break (so the list cannot go stale when it is fixed);
* the loop itself with inductor (default run: ``train_classifier`` on a linear probe, cheap
  to compile) against eager: losses within 1e-4 relative, same parameter names;
* an inductor train step (loss with the aux loss, every gradient) against eager within
  1e-4 relative for every tiny preset and every mixer (``slow``: 5 to 60 s each on a cold
  inductor cache, on a shared two-core machine).

The refusal without a compiler is in ``tests/study/test_compile_key.py`` and below.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from ablate.attention import create_mixer, list_attention
from ablate.data import ClassificationData, load_classification
from ablate.errors import AblateError, EnvironmentProblem
from ablate.models import create_preset, list_presets, preset_arch
from ablate.train import TrainConfig, train_classifier
from ablate.train.classify import compile_model
from ablate.train.toolchain import missing_compiler

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def fresh_compiler() -> None:
    """Torch counts recompilations per Python function across models: without a reset, a
    later test's model could exceed the limit and silently run eagerly (and pass)."""
    torch.compiler.reset()


def _compiled_calls(model: nn.Module) -> dict[str, bool | None]:
    """``["last"]``: whether ``model``'s last call ran inside a compiled graph (the hook is
    traced with the forward; eagerly ``is_compiling()`` is False). One overwritten entry, not
    a growing list: dynamo would guard on the list's length and recompile at every call."""
    state: dict[str, bool | None] = {"last": None}

    def hook(module: nn.Module, args: Any) -> None:
        state["last"] = torch.compiler.is_compiling()

    model.register_forward_pre_hook(hook)
    return state

#: Families whose forward cannot be one graph, with the reason (the README's list). Empty since
#: focal decides "no padded key" from integers (commit 122e53a); it broke once per focal layer.
GRAPH_BREAKS: dict[str, str] = {}

#: Mixer option sets per family, covering each family's layouts (window, shift, spatial
#: reduction, routing, global); a family missing here fails test_every_family_is_covered.
MIXERS: dict[str, list[dict[str, Any]]] = {
    "softmax": [{}, {"window_size": 4, "shift_size": 2}, {"sr_ratio": 2, "rel_pos_bias": False}],
    "flatten": [{"window_size": 4, "shift_size": 2}, {"sr_ratio": 2}],
    "focal": [{"window_size": 4, "focal_window": 3, "expand_size": 2}],
    "biformer": [{"n_win": 2, "topk": 1, "side_dwconv": 3}, {"topk": -2, "side_dwconv": 3}],
    "lavit": [{}],
}
MIXER_CASES = [(name, opts) for name in sorted(MIXERS) for opts in MIXERS[name]]
MIXER_IDS = [f"{name}-{i}" for name in sorted(MIXERS) for i, _ in enumerate(MIXERS[name])]

#: Each tiny preset shrunk to seconds of CPU (no drop path: inductor draws other random numbers).
SMALL: dict[str, dict[str, Any]] = {
    "focal_tiny": dict(img_size=32, embed_dim=16, depths=[1, 1, 1, 1], num_heads=1, window_size=4,
                       focal_window=[3, 3, 1, 1]),
    "swin_tiny": dict(img_size=32, window_size=2, shift_size=1, embed_dim=16, depths=[1, 2, 1, 1], num_heads=1),
    "pvt_tiny": dict(img_size=64, dims=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1]),
    "deit_tiny": dict(img_size=32, dims=[24], depths=[1]),
    "flatten_swin_tiny": dict(img_size=64, window_size=[16, 8, 2, 2], shift_size=[0, 0, 1, 1], embed_dim=16,
                              depths=[1, 1, 2, 1], num_heads=1),
    "flatten_pvt_tiny": dict(img_size=64, dims=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1]),
    "flatten_deit_tiny": dict(img_size=32, dims=[24], depths=[1]),
    "biformer_tiny": dict(img_size=64, n_win=2, topk=[1, 2, 4, -2], dims=[16, 32, 64, 64], depths=[1, 1, 1, 1],
                          num_heads=[1, 1, 2, 2]),
    "lavit_swin_tiny": dict(img_size=32, embed_dim=16, depths=[1, 1, 2, 2], num_heads=1, va_layers=[1, 1, 1, 1]),
}
TINY = sorted(n for n in list_presets() if n.endswith("_tiny"))

#: Compiled vs eager: loss and gradients within 1e-4 relative (atol for gradients near 0).
TOL = {"rtol": 1e-4, "atol": 1e-5}


def _families(name: str) -> set[str]:
    attention = preset_arch(name).get("attention", "softmax")
    return set(attention) if isinstance(attention, list) else {attention}


def _tiny(name: str) -> nn.Module:
    torch.manual_seed(0)
    return create_preset(name, num_classes=5, drop_path_rate=0.0, **SMALL[name])


def _mixer(name: str, opts: dict[str, Any]) -> nn.Module:
    torch.manual_seed(0)
    return create_mixer(name, 16, 2, input_resolution=(8, 8), **opts)


def _mixer_step(mixer: nn.Module, name: str) -> torch.Tensor:
    x = torch.randn(2, 64, 16, generator=torch.Generator().manual_seed(1))  # B, N, C
    state = {"aux_losses": []} if name == "lavit" else None  # LaViT passes scores between layers
    out = mixer(x, (8, 8), state) if state is not None else mixer(x, (8, 8))  # B, N, C
    return out.square().mean()


def _train_step(model: nn.Module, forward: nn.Module, images: torch.Tensor, labels: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One step as :func:`train_classifier` takes it: loss (+ the model's aux loss), backward."""
    model.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(forward(images), labels)  # forward: model or its compiled wrapper
    aux = getattr(model, "aux_loss", None)
    if aux is not None:
        loss = loss + aux
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _assert_compiled_equals_eager(name: str, batches: tuple[int, ...] = (4,)) -> None:
    model = _tiny(name).train()
    compiled = compile_model(model, "cpu")
    seen = _compiled_calls(model)
    size = SMALL[name]["img_size"]
    for b in batches:
        gen = torch.Generator().manual_seed(b)
        images, labels = torch.randn(b, 3, size, size, generator=gen), torch.randint(0, 5, (b,), generator=gen)
        loss_e, grads_e = _train_step(model, model, images, labels)
        assert seen["last"] is False
        loss_c, grads_c = _train_step(model, compiled, images, labels)
        assert seen["last"] is True, f"{name} ran eagerly under torch.compile"
        torch.testing.assert_close(loss_c, loss_e, **TOL)
        assert grads_c.keys() == grads_e.keys() == {n for n, p in model.named_parameters() if p.requires_grad}
        for key in grads_e:
            torch.testing.assert_close(grads_c[key], grads_e[key], **TOL, msg=lambda m, k=key: f"{name} {k}: {m}")
    assert set(model.state_dict()) == set(_tiny(name).state_dict())  # no `_orig_mod.` in checkpoints


# --------------------------------------------------------------------------- coverage


def test_every_family_and_tiny_preset_is_covered() -> None:
    assert set(MIXERS) == set(list_attention())
    assert set(SMALL) == set(TINY)
    assert set().union(*(_families(n) for n in TINY)) == set(list_attention())  # every family in a preset
    assert set(GRAPH_BREAKS) <= set(list_attention())


# --------------------------------------------------------------------------- graph breaks


@pytest.mark.parametrize(("name", "opts"), MIXER_CASES, ids=MIXER_IDS)
def test_each_mixer_is_one_graph_or_listed(name: str, opts: dict[str, Any]) -> None:
    """fullgraph=True raises at the first graph break; a family on GRAPH_BREAKS must still break."""
    mixer = _mixer(name, opts)
    whole = torch.compile(mixer, fullgraph=True, backend="eager")  # dynamo only: breaks, no kernels
    if name in GRAPH_BREAKS:
        with pytest.raises(Exception):  # noqa: B017 - dynamo's error classes are private
            _mixer_step(whole, name)
        return
    loss = _mixer_step(whole, name)
    torch.testing.assert_close(loss, _mixer_step(mixer, name), **TOL)


@pytest.mark.slow
@pytest.mark.parametrize("name", TINY)
def test_each_tiny_preset_is_one_graph_unless_a_family_breaks(name: str) -> None:
    model = _tiny(name)
    images = torch.randn(2, 3, SMALL[name]["img_size"], SMALL[name]["img_size"])
    whole = torch.compile(model, fullgraph=True, backend="eager")
    if _families(name) & set(GRAPH_BREAKS):
        with pytest.raises(Exception):  # noqa: B017 - dynamo's error classes are private
            whole(images)
        return
    whole(images).sum().backward()


# --------------------------------------------------------------------------- inductor: numerics


@pytest.mark.slow
@pytest.mark.parametrize("name", TINY)
def test_every_tiny_preset_compiled_train_step_equals_eager(name: str) -> None:
    """One batch size (shapes are static: another one is the same compilation again; the
    loop's test covers a second one)."""
    _assert_compiled_equals_eager(name)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "opts"), MIXER_CASES, ids=MIXER_IDS)
def test_every_mixer_compiled_with_inductor_equals_eager(name: str, opts: dict[str, Any]) -> None:
    mixer = _mixer(name, opts)
    compiled = torch.compile(mixer, dynamic=False)  # graph breaks allowed, as train.compile runs it
    seen = _compiled_calls(mixer)
    loss_c = _mixer_step(compiled, name)
    assert seen["last"] is True
    loss_c.backward()
    grads_c = {n: p.grad.clone() for n, p in mixer.named_parameters() if p.grad is not None}
    mixer.zero_grad(set_to_none=True)
    loss_e = _mixer_step(mixer, name)
    loss_e.backward()
    torch.testing.assert_close(loss_c.detach(), loss_e.detach(), **TOL)
    for key, grad in mixer.named_parameters():
        if grad.grad is not None:
            torch.testing.assert_close(grads_c[key], grad.grad, **TOL)


# --------------------------------------------------------------------------- the loop


@pytest.fixture(scope="module")
def digits8() -> ClassificationData:
    return load_classification("digits", image_size=8)


def _subset(data: ClassificationData, n: int) -> ClassificationData:
    return ClassificationData(train=Subset(data.train, range(n)), val=Subset(data.val, range(n // 2)),
                              num_classes=data.num_classes, in_chans=3, image_size=data.image_size, name=data.name,
                              in_memory=True)


def test_train_classifier_with_compile_matches_eager_and_keeps_the_module(digits8: ClassificationData) -> None:
    """Two epochs of a linear probe (cheap to compile): a short last batch, evaluation, an EMA."""
    cfg = dict(epochs=2, batch_size=48, lr=1e-2, ema_decay=0.9, num_workers=0)
    data = _subset(digits8, 120)  # 2 full batches + 24 (no drop_last: dynamic batch), 60 val images

    def run(compile_: bool) -> tuple[list[dict], nn.Module]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
        return train_classifier(model, data, TrainConfig(**cfg, compile=compile_)), model

    eager, eager_model = run(False)
    compiled, compiled_model = run(True)
    assert type(compiled_model) is nn.Sequential and set(compiled_model.state_dict()) == {"1.weight", "1.bias"}
    for e, c in zip(eager, compiled, strict=True):
        assert e.keys() == c.keys()
        assert math.isclose(c["train_loss"], e["train_loss"], rel_tol=1e-4)
        assert c["lr"] == e["lr"]
        for key in ("top1", "top1_ema"):  # argmax of logits equal to 1e-4: at most one of 60 images may flip
            assert abs(c[key] - e[key]) <= 100 / 60 + 1e-9, (key, c[key], e[key])
    for key, value in eager_model.state_dict().items():
        torch.testing.assert_close(compiled_model.state_dict()[key], value, **TOL)


def test_no_compiler_is_one_line_before_training(digits8: ClassificationData, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    monkeypatch.setattr("shutil.which", lambda name, *a, **k: None)
    assert "no C++ compiler" in (missing_compiler("cpu") or "")
    with pytest.raises(EnvironmentProblem) as err:
        train_classifier(nn.Sequential(nn.Flatten(), nn.Linear(192, 10)), _subset(digits8, 20),
                         TrainConfig(epochs=1, batch_size=8, compile=True, num_workers=0))
    message = str(err.value)
    assert isinstance(err.value, AblateError) and "\n" not in message
    assert message.startswith("train.compile: true needs a compiler: no C++ compiler found on the PATH")
    assert "allowed: train.compile: false" in message


@pytest.mark.parametrize(("env", "device", "found", "expected"), [
    ({}, "cpu", {"g++"}, None),
    ({}, "cpu", set(), "g++ (or $CXX)"),
    ({"CXX": "clang++"}, "cpu", {"g++"}, "$CXX='clang++'"),
    ({"CXX": "ccache g++"}, "cpu", {"ccache"}, None),
    ({"CXX": ""}, "cpu", {"g++"}, "$CXX=''"),
    ({"CXX": "'unbalanced"}, "cpu", {"g++"}, "$CXX=\"'unbalanced\""),
    ({}, "cuda", {"gcc"}, None),
    ({}, "cuda:1", set(), "cc, gcc or clang (or $CC)"),
    ({"CC": "icx"}, "cuda", {"gcc"}, "$CC='icx'"),
    ({}, "mps", set(), None),
])
@pytest.mark.skipif(__import__("sys").platform == "darwin", reason="macOS looks for clang++")
def test_missing_compiler_table(env: dict[str, str], device: str, found: set[str], expected: str | None,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("CXX", "CC"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr("shutil.which", lambda name, *a, **k: f"/usr/bin/{name}" if name in found else None)
    problem = missing_compiler(device)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem and "\n" not in problem


# --------------------------------------------------------------------------- detection


@pytest.mark.slow
def test_detect_trains_compiled_through_ultralytics(tmp_path: Any) -> None:
    """ultralytics' own ``compile`` argument: the model runs compiled (parameter names of the
    checkpoint's module unchanged) and the first epoch's loss equals the eager one. Several
    minutes on 2 CPUs: inductor compiles YOLO's forward and backward."""
    from ablate.data import generate_synth_det
    from ablate.train.detect import DetectConfig, train_detector

    data = generate_synth_det(tmp_path / "shapes", seed=1, n_train=16, n_val=8, image_size=64)
    arch = {"base": "yolov8n", "attention": "flatten", "placement": "sppf", "img_size": 64}
    rows = {}
    for compile_ in (False, True):
        cfg = DetectConfig(epochs=1, batch_size=8, image_size=64, compile=compile_)
        rows[compile_] = train_detector(arch, data, cfg, workdir=tmp_path / f"run-{compile_}")[0]
    assert math.isclose(rows[True]["train_loss"], rows[False]["train_loss"], rel_tol=1e-4)
    saved = torch.load(tmp_path / "run-True" / "train" / "weights" / "last.pt", weights_only=False)
    module = saved["model"] if saved["model"] is not None else saved["ema"]  # final checkpoints keep the EMA as model
    assert module is not None and not any(k.startswith("_orig_mod") for k in module.state_dict())


def test_detect_without_a_compiler_is_one_line(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from ablate.train.detect import DetectConfig, train_detector

    monkeypatch.setattr("shutil.which", lambda name, *a, **k: None)
    with pytest.raises(EnvironmentProblem, match=r"^train.compile: true needs a compiler: no C\+\+ compiler"):
        train_detector({"base": "yolov8n"}, tmp_path / "data.yaml", DetectConfig(compile=True), workdir=tmp_path)
