"""The training recipes: values, weight-decay groups, transforms, mixing, EMA, clipping, the data
path, and one ``recipe: deit`` trial end to end.

Models are tiny (linear probes, one- or two-block ViTs at 16-40 px) and torch runs on one
thread, as a Ray trial with ``resources.cpu: 1`` does; the weight-decay groups are checked on
the real paper-scale presets (built, never trained: about a second each).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset

from ablate.data import ClassificationData, classification_transforms, load_classification
from ablate.errors import ConfigError
from ablate.train import TrainConfig, train_classifier
from ablate.train.recipes import RECIPES


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- the table


def test_deit_table_is_deits_main_py_defaults() -> None:
    """facebookresearch/deit ``main.py`` (``--lr 5e-4`` per 512 images, ``--weight-decay 0.05``,
    ``--warmup-epochs 5``, ``--smoothing 0.1``, ``--aa``, ``--reprob 0.25``, ``--mixup 0.8``,
    ``--cutmix 1.0``, ``--clip-grad None``), as Swin's ``config.py`` repeats them."""
    assert dict(RECIPES["deit"]) == {
        "lr": 5.0e-4, "lr_batch": 512, "weight_decay": 0.05, "warmup_epochs": 5, "label_smoothing": 0.1,
        "randaugment": "rand-m9-mstd0.5-inc1", "random_erasing": 0.25, "mixup": 0.8, "cutmix": 1.0,
        "clip_grad": 0.0, "ema_decay": 0.0, "amp": True,
    }
    assert RECIPES["proxy"]["mixup"] == RECIPES["proxy"]["cutmix"] == RECIPES["proxy"]["random_erasing"] == 0.0
    assert RECIPES["proxy"]["randaugment"] == "" and RECIPES["proxy"]["lr_batch"] is None


def test_train_config_for_recipe_scales_lr_to_the_batch() -> None:
    deit = TrainConfig.for_recipe("deit", batch_size=1024)
    assert deit.lr == pytest.approx(1e-3) and deit.mixing and deit.augmented and deit.recipe == "deit"
    proxy = TrainConfig.for_recipe("proxy", batch_size=1024, lr=3e-3)
    assert proxy.lr == 3e-3 and not proxy.mixing and not proxy.augmented


# --------------------------------------------------------------------------- weight-decay groups


def _groups(model: nn.Module) -> tuple[list[str], list[str]]:
    """(no-decay names, decay names) as timm's optimizer factory splits them for training."""
    from timm.optim import param_groups_weight_decay

    groups = param_groups_weight_decay(model, 0.05, no_weight_decay_list=model.no_weight_decay())
    names = {id(p): n for n, p in model.named_parameters()}
    by_decay = {g["weight_decay"]: [names[id(p)] for p in g["params"]] for g in groups}
    return by_decay[0.0], by_decay[0.05]


def _shapes(model: nn.Module, names: list[str]) -> Counter:
    params = dict(model.named_parameters())
    return Counter(tuple(params[n].shape) for n in names)


#: timm's name of each table -> ours (timm's Swin `layers.i` are our `stages.i`; timm's ViT
#: keeps its one position table at the top, ours in stage 0).
_TIMM_TO_OURS = [(r"^layers\.", "stages."), (r"^pos_embed$", "stages.0.pos_embed")]


@pytest.mark.parametrize(("preset", "timm_name"), [("swin_tiny", "swin_tiny_patch4_window7_224"),
                                                   ("deit_tiny", "deit_tiny_patch16_224")])
def test_weight_decay_groups_match_timms_model_of_the_family(preset: str, timm_name: str) -> None:
    import timm

    from ablate.models import create_preset

    ours, theirs = create_preset(preset), timm.create_model(timm_name, pretrained=False)  # no download
    ours_no, ours_yes = _groups(ours)
    theirs_no, theirs_yes = _groups(theirs)
    # The same tensors (by shape, the models match parameter for parameter) take decay.
    assert _shapes(ours, ours_no) == _shapes(theirs, theirs_no)
    assert _shapes(ours, ours_yes) == _shapes(theirs, theirs_yes)
    # And the explicitly listed tables are the same ones, by name.
    theirs_listed = set(theirs.no_weight_decay()) & {n for n, _ in theirs.named_parameters()}
    mapped = set()
    for name in theirs_listed:
        for pattern, repl in _TIMM_TO_OURS:
            name = re.sub(pattern, repl, name)
        mapped.add(name)
    assert ours.no_weight_decay() == mapped
    assert mapped and all(p.ndim > 1 for n, p in ours.named_parameters() if n in mapped)


def _normalised(names: set[str]) -> set[str]:
    return {re.sub(r"\.\d+(?=\.|$)", ".N", n) for n in names}


@pytest.mark.parametrize(("preset", "expected", "count"), [
    ("focal_tiny", {"stages.N.blocks.N.attn.relative_position_bias_table",
                    "stages.N.blocks.N.attn.relative_position_bias_table_to_neighbors",
                    "stages.N.blocks.N.attn.relative_position_bias_table_to_windows.N"}, None),
    ("flatten_swin_tiny", {"stages.N.blocks.N.attn.relative_position_bias_table"}, 8),  # softmax stages 3-4: 6 + 2
    ("flatten_deit_tiny", {"cls_token", "stages.N.pos_embed"}, 2),
    ("pvt_tiny", {"cls_token", "stages.N.pos_embed"}, 5),  # PVT v1: a class token joins stage 4
    ("flatten_pvt_tiny", {"stages.N.pos_embed"}, 4),
    ("biformer_tiny", set(), 0),
])
def test_no_weight_decay_names_of_each_family(preset: str, expected: set[str], count: int | None) -> None:
    """Hand-written from the official codes' lists (see ``HierarchicalViT.no_weight_decay``):
    FLatten's ``positional_encoding`` and ``scale`` decay, BiFormer exempts nothing beyond
    norms and biases."""
    from ablate.models import create_preset

    names = create_preset(preset).no_weight_decay()
    assert _normalised(names) == expected
    if count is not None:
        assert len(names) == count
    assert not any("positional_encoding" in n or n.endswith(".scale") for n in names)


class _ZeroGradTables(nn.Module):
    """A linear probe with two 2-D tables that get zero gradients: only weight decay moves them."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.head = nn.Linear(features, classes)
        self.table = nn.Parameter(torch.ones(4, 4))      # listed in no_weight_decay()
        self.decayed = nn.Parameter(torch.ones(4, 4))    # not listed

    def no_weight_decay(self) -> set[str]:
        return {"table"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(x.flatten(1))  # B, K
        return out + 0.0 * (self.table.sum() + self.decayed.sum())


def _blobs(n: int = 64, size: int = 4, classes: int = 4, seed: int = 0) -> ClassificationData:
    """Constant images: class k is the value k everywhere (so a mixed image is recognisable)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    images = labels.float().view(n, 1, 1, 1).expand(n, 3, size, size).contiguous()
    ds = TensorDataset(images, labels)
    return ClassificationData(train=ds, val=ds, num_classes=classes, in_chans=3, image_size=size, name="blobs",
                              in_memory=True)


@pytest.mark.parametrize("recipe", ["proxy", "deit"])
def test_training_exempts_the_models_no_weight_decay_names(recipe: str) -> None:
    data = _blobs()
    model = _ZeroGradTables(3 * 4 * 4, 4)
    cfg = TrainConfig.for_recipe(recipe, epochs=1, batch_size=16, lr=1e-1, weight_decay=1.0, warmup_epochs=0)
    train_classifier(model, data, cfg)
    assert torch.equal(model.table.detach(), torch.ones(4, 4))   # exempt: untouched
    assert model.decayed.detach().max() < 0.85                   # decayed: by (1 - lr_t * wd) at each of 4 steps


# --------------------------------------------------------------------------- transforms


def _picture(size: int = 48, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [40, 16])  # > 32: random-resized crops; <= 32: DeiT's padded random crop
def test_deit_train_transform_is_random_and_differs_from_eval(size: int) -> None:
    train_tf, eval_tf = classification_transforms(size, recipe="deit", randaugment="rand-m9-mstd0.5-inc1",
                                                  random_erasing=0.25)
    assert train_tf is not eval_tf
    image = _picture()
    random.seed(0)
    torch.manual_seed(0)
    np.random.seed(0)
    a, b = train_tf(image), train_tf(image)
    assert a.shape == b.shape == (3, size, size) and not torch.equal(a, b)
    e1, e2 = eval_tf(image), eval_tf(image)
    assert e1.shape == (3, size, size) and torch.equal(e1, e2)   # evaluation is deterministic
    assert not torch.equal(a, e1)


def test_deit_eval_resizes_to_size_over_0875_then_centre_crops() -> None:
    from torchvision.transforms import CenterCrop, Resize

    _, eval_tf = classification_transforms(224, recipe="deit")
    resize, crop = eval_tf.transforms[:2]
    assert isinstance(resize, Resize) and resize.size in (256, [256], (256,)) and isinstance(crop, CenterCrop)
    assert str(resize.interpolation).endswith("BICUBIC")


def test_proxy_trains_on_its_eval_transform() -> None:
    train_tf, eval_tf = classification_transforms(32, recipe="proxy")
    assert train_tf is eval_tf
    image = _picture(32)
    assert torch.equal(train_tf(image), eval_tf(image))


def test_proxy_with_an_explicit_randaugment_augments_without_random_geometry() -> None:
    train_tf, eval_tf = classification_transforms(32, recipe="proxy", randaugment="rand-m9-mstd0.5-inc1")
    assert train_tf is not eval_tf
    names = [type(t).__name__ for t in train_tf.transforms]
    assert "RandAugment" in names and not any("Random" in n and "Crop" in n for n in names)


def test_randaugment_survives_posterize_to_zero_bits() -> None:
    """``inc1`` at magnitude 10 posterizes to 0 bits, which Pillow 13 rejects; the pipeline
    gives it the old meaning (a black image) instead of ending the trial."""
    train_tf, _ = classification_transforms(16, recipe="proxy", randaugment="rand-m10-n1-p1.0-inc1")
    random.seed(0)
    np.random.seed(0)
    image = _picture(16)
    outs = [train_tf(image) for _ in range(200)]   # about 13 posterize draws
    black = torch.tensor([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]).view(3, 1, 1)
    assert any(torch.allclose(o, black.expand_as(o), atol=1e-5) for o in outs)


def test_unknown_recipe_or_bad_randaugment_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown recipe 'swin', allowed: proxy, deit"):
        classification_transforms(32, recipe="swin")
    with pytest.raises(ConfigError, match="not a timm RandAugment string"):
        classification_transforms(32, recipe="deit", randaugment="rand-q9")


# --------------------------------------------------------------------------- the loop


class _Recorder(nn.Module):
    """A linear probe that keeps every training batch it sees."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.head = nn.Linear(features, classes)
        self.batches: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.batches.append(x.detach().clone())
        return self.head(x.flatten(1))  # B, K


@pytest.mark.parametrize(("recipe", "mixed"), [("deit", True), ("proxy", False)])
def test_mixup_mixes_images_within_a_batch_only_in_deit(recipe: str, mixed: bool) -> None:
    data = _blobs(n=64, classes=4)
    model = _Recorder(3 * 4 * 4, 4)
    # Images and mixing only: the blobs' TensorDataset has no image transform to apply.
    train_classifier(model, data, TrainConfig.for_recipe(recipe, epochs=1, batch_size=16, seed=0))
    assert len(model.batches) == 4
    values = torch.cat([b.flatten() for b in model.batches])  # every pixel the model trained on
    blended = bool((~torch.isclose(values, values.round())).any())  # mixup: between two classes' values
    boxed = any(len(torch.unique(img)) > 1 for b in model.batches for img in b)  # cutmix: two values in one image
    assert (blended or boxed) is mixed


@pytest.mark.parametrize("recipe", ["deit", "proxy"])
def test_mixing_trains_on_smoothed_soft_targets(recipe: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import timm.loss

    seen: list[torch.Tensor] = []

    class Recording(timm.loss.SoftTargetCrossEntropy):
        def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            seen.append(target.detach().clone())
            return super().forward(x, target)

    monkeypatch.setattr(timm.loss, "SoftTargetCrossEntropy", Recording)
    train_classifier(nn.Sequential(nn.Flatten(), nn.Linear(48, 4)), _blobs(),
                     TrainConfig.for_recipe(recipe, epochs=1, batch_size=16))
    if recipe == "proxy":
        assert seen == []  # hard labels, plain cross-entropy
        return
    assert len(seen) == 4
    for target in seen:  # B, K: mixed one-hot rows, smoothed by 0.1 / 4 classes
        assert target.shape == (16, 4) and torch.allclose(target.sum(1), torch.ones(16))
        assert target.min() >= 0.1 / 4 - 1e-6 and target.max() <= 1 - 0.1 + 0.1 / 4 + 1e-6


def test_odd_batches_lose_one_image_when_mixing() -> None:
    data = _blobs(n=21, classes=3)   # one batch of 21 (smaller than batch_size: no drop_last)
    model = _Recorder(3 * 4 * 4, 3)
    history = train_classifier(model, data, TrainConfig.for_recipe("deit", epochs=1, batch_size=32))
    assert [len(b) for b in model.batches] == [20] and math.isfinite(history[0]["train_loss"])


def test_ema_is_reported_beside_top1() -> None:
    data = _blobs()
    plain = train_classifier(nn.Sequential(nn.Flatten(), nn.Linear(48, 4)), data,
                             TrainConfig.for_recipe("proxy", epochs=2, batch_size=16))
    assert "top1_ema" not in plain[-1]
    torch.manual_seed(0)
    history = train_classifier(nn.Sequential(nn.Flatten(), nn.Linear(48, 4)), data,
                               TrainConfig.for_recipe("proxy", epochs=2, batch_size=16, ema_decay=0.5))
    assert all(0.0 <= m["top1_ema"] <= 100.0 and 0.0 <= m["top1"] <= 100.0 for m in history)
    assert list(history[0]) == ["epoch", "train_loss", "top1", "lr", "top1_ema", "epoch_s"]


@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_gradients_are_clipped_only_when_asked(clip: float, monkeypatch: pytest.MonkeyPatch) -> None:
    import timm.utils

    real = timm.utils.dispatch_clip_grad
    norms: list[float] = []

    def recording(parameters, value, mode="norm", norm_type=2.0):
        parameters = list(parameters)
        real(parameters, value, mode=mode, norm_type=norm_type)
        norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters]))))
        assert value == clip and mode == "norm"

    monkeypatch.setattr(timm.utils, "dispatch_clip_grad", recording)
    cfg = TrainConfig.for_recipe("proxy", epochs=1, batch_size=16, lr=1.0, clip_grad=clip)
    train_classifier(nn.Sequential(nn.Flatten(), nn.Linear(48, 4)), _blobs(), cfg)
    if clip:
        assert len(norms) == 4 and max(norms) <= clip * (1 + 1e-4)
    else:
        assert norms == []


def _digits_subset(size: int, transforms: tuple | None = None) -> ClassificationData:
    kwargs = {} if transforms is None else dict(train_transform=transforms[0], eval_transform=transforms[1])
    data = load_classification("digits", image_size=size, **kwargs)
    return ClassificationData(train=Subset(data.train, range(192)), val=Subset(data.val, range(96)),
                              num_classes=10, in_chans=3, image_size=size, name="digits", in_memory=True)


@pytest.mark.parametrize("recipe", ["proxy", "deit"])
def test_same_seed_same_metrics_with_augmentation_and_mixing(recipe: str) -> None:
    def run(seed: int) -> list[tuple]:
        cfg = TrainConfig.for_recipe(recipe, epochs=2, batch_size=32, lr=5e-3, warmup_epochs=1, seed=seed)
        from ablate.train import recipe_transforms

        data = _digits_subset(16, recipe_transforms(cfg, 16))
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10))
        return [(m["train_loss"], m["top1"], m["lr"]) for m in train_classifier(model, data, cfg)]

    first = run(3)
    assert run(3) == first
    assert run(4) != first


def test_channels_last_trains_a_vit_on_the_cpu() -> None:
    """The CUDA path's memory format, exercised here: a channels-last input through the stem."""
    from ablate.models import build

    arch = {"attention": "focal", "depths": [1, 1], "embed_dim": 16, "num_heads": 2, "img_size": 16,
            "num_classes": 10, "window_size": 2, "expand_size": 1}
    torch.manual_seed(0)
    model = build(arch).eval()  # no drop path: the two forwards must agree
    x = torch.randn(2, 3, 16, 16)
    expected = model(x)
    torch.testing.assert_close(model.to(memory_format=torch.channels_last)(
        x.contiguous(memory_format=torch.channels_last)), expected, rtol=1e-5, atol=1e-5)
    history = train_classifier(build(arch), _digits_subset(16),
                               TrainConfig(epochs=1, batch_size=64, channels_last=True))
    assert math.isfinite(history[0]["train_loss"])


@pytest.mark.parametrize("preset", ["swin_tiny", "pvt_tiny", "deit_tiny", "biformer_stl", "flatten_swin_tiny"])
def test_every_family_accepts_channels_last_input(preset: str) -> None:
    from ablate.models import create_preset

    small = {"swin_tiny": dict(img_size=64, window_size=2, shift_size=1, embed_dim=16, depths=[1, 2, 1, 1],
                               num_heads=1),
             "pvt_tiny": dict(img_size=64, dims=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1]),
             "deit_tiny": dict(img_size=32, dims=[24], depths=[1]),
             "biformer_stl": dict(img_size=64, n_win=2, topk=[1, 2, 4, -2], dims=[16, 32, 64, 64],
                                  depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2]),
             "flatten_swin_tiny": dict(img_size=64, window_size=[16, 8, 2, 2], shift_size=[0, 0, 1, 1], embed_dim=16,
                                       depths=[1, 1, 2, 1], num_heads=1)}[preset]
    torch.manual_seed(0)
    model = create_preset(preset, num_classes=5, **small).eval()
    x = torch.randn(2, 3, small["img_size"], small["img_size"])
    expected = model(x)
    out = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    out.sum().backward()


# --------------------------------------------------------------------------- end to end


def _write_pngs(root: Path, classes: int = 3, per_class: int = 12, size: int = 48) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(classes):
        folder = root / f"class{k}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            base = np.zeros((size, size, 3), dtype=np.uint8)
            base[..., k] = 200  # each class has its own colour, with noise
            noise = rng.integers(0, 55, (size, size, 3), dtype=np.uint8)
            Image.fromarray(base + noise).save(folder / f"{i}.png")


def test_one_deit_epoch_on_a_generated_imagefolder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ablate.study import study_from_dict
    from ablate.run.trial import run_trial

    monkeypatch.chdir(tmp_path)
    _write_pngs(tmp_path / "images")
    study = study_from_dict({
        "name": "deit-folder",
        "fixed": {"attention": "softmax", "depths": [1, 1], "embed_dim": 16, "num_heads": 2, "window_size": 5},
        "grid": {"mlp_ratio": [2.0]},
        "objectives": ["top1", "gflops"],
        "data": {"name": "imagefolder", "path": str(tmp_path / "images"), "image_size": 40, "val_fraction": 0.25},
        "train": {"recipe": "deit", "epochs": 1, "batch_size": 9, "warmup_epochs": 0, "seed": 0},
        "storage": "sqlite:///runs/deit-folder.db",
    })
    train = study.train_for(study.cells()[0])
    assert train.recipe == "deit" and train.mixup == 0.8 and train.randaugment == "rand-m9-mstd0.5-inc1"
    reports: list[dict] = []
    last = run_trial(study, study.cells()[0], reports.append)
    assert len(reports) == 1 and last is reports[-1]
    assert 0.0 <= last["top1"] <= 100.0 and math.isfinite(last["train_loss"]) and last["epochs_done"] == 1
    assert last["gflops"] > 0 and last["epoch_s"] > 0


# --------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_trains_under_autocast_channels_last_with_workers(tmp_path: Path) -> None:
    from ablate.data import loader_workers
    from ablate.models import build
    from ablate.train import recipe_transforms
    from ablate.train.classify import autocast_dtype

    dtype = autocast_dtype(torch.device("cuda"), True)
    assert dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    _write_pngs(tmp_path / "images")
    cfg = TrainConfig.for_recipe("deit", epochs=1, batch_size=8, device="cuda", cpus=3)
    train_tf, eval_tf = recipe_transforms(cfg, 40)
    data = load_classification("imagefolder", path=str(tmp_path / "images"), image_size=40,
                               train_transform=train_tf, eval_transform=eval_tf)
    assert loader_workers(None, device="cuda", cpus=3, in_memory=data.in_memory, augmented=True) == 2
    model = build({"attention": "softmax", "depths": [1, 1], "embed_dim": 16, "num_heads": 2, "window_size": 5,
                   "img_size": 40, "num_classes": 3})
    history = train_classifier(model, data, cfg)
    assert math.isfinite(history[0]["train_loss"]) and 0.0 <= history[0]["top1"] <= 100.0
    assert next(model.parameters()).is_cuda


def test_one_table_of_training_defaults():
    """A study file's train: defaults, TrainConfig's defaults and the proxy recipe agree."""
    import dataclasses

    from ablate.study.declaration import TrainSection
    from ablate.train import TrainConfig
    from ablate.train.recipes import BUDGET, RECIPES

    config = TrainConfig()
    for key, value in BUDGET.items():
        assert getattr(config, key) == value == TrainSection.model_fields[key].default
    proxy = {k: v for k, v in RECIPES["proxy"].items() if k != "lr_batch"}
    assert {k: getattr(config, k) for k in proxy} == proxy and config.recipe == "proxy"
    assert {f.name for f in dataclasses.fields(TrainConfig)} >= set(proxy) | set(BUDGET)
