"""``ablate.train.evaluate``: the validation split found in a folder, labels against the head,
top-1/top-5 counts against an independent computation, the Wilson interval, devices.

Models are tiny (DeiT-T's skeleton at 48 px, one block of width 16); checkpoints are
ablate's own ``state_dict()`` saved with ``torch.save``, which ``create_model(weights=...)``
loads as they are. Nothing touches the network.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ablate.errors import ConfigError, DataError, EnvironmentProblem
from ablate.models import create_model
from ablate.train.evaluate import (
    ValSplit,
    count_correct,
    evaluate_checkpoint,
    find_val_split,
    head_labels,
    read_class_names,
    resolve_device,
    wilson_interval,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: A 48 px DeiT-T skeleton: large enough for the 0.875 crop to act (48 > 32), small enough for a second.
TINY = dict(img_size=48, patch_size=8, dims=[16], depths=[1], num_heads=[2], num_classes=6)


def make_folder(root: Path, classes: list[str], per_class: int = 3, *, seed: int = 0) -> Path:
    """Class folders of random RGB PNGs of assorted sizes (not square: the resize and crop matter)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = int(rng.integers(40, 90)), int(rng.integers(40, 90))
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def save_checkpoint(path: Path, seed: int = 0, **overrides: object) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(seed)
    model = create_model("deit_tiny", **{**TINY, **overrides})
    torch.save(model.state_dict(), path)
    return path, model


CLASSES = [f"n0{i}" for i in range(6)]


# --------------------------------------------------------------------------- the split


def test_split_is_the_folder_of_class_folders(tmp_path: Path) -> None:
    make_folder(tmp_path / "val", CLASSES[:3], 1)
    split = find_val_split(tmp_path / "val")
    assert split.folder == tmp_path / "val" and split.classes == tuple(CLASSES[:3])
    assert "root" in split.layout


def test_split_is_val_inside(tmp_path: Path) -> None:
    make_folder(tmp_path / "val", CLASSES[:3], 1)
    split = find_val_split(tmp_path)
    assert split.folder == tmp_path / "val" and split.classes == tuple(CLASSES[:3])


def test_split_with_train_uses_trains_classes(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", CLASSES[:3], 1)
    make_folder(tmp_path / "val", CLASSES[:3], 1)
    assert find_val_split(tmp_path).classes == tuple(CLASSES[:3])
    make_folder(tmp_path / "val", ["extra"], 1)
    with pytest.raises(DataError, match="'extra'"):
        find_val_split(tmp_path)


def test_training_split_alone_is_refused(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", CLASSES[:3], 1)
    with pytest.raises(DataError, match="train/ but no val/"):
        find_val_split(tmp_path)


@pytest.mark.parametrize("case", ["missing", "file", "empty", "images_only", "empty_class"])
def test_bad_folders_are_one_line(tmp_path: Path, case: str) -> None:
    target = tmp_path / "data"
    if case == "file":
        target.write_text("x")
    elif case == "empty":
        target.mkdir()
    elif case == "images_only":
        make_folder(tmp_path, ["data"], 2)
    elif case == "empty_class":
        make_folder(target, CLASSES[:2], 1)
        (target / "hollow").mkdir()
    with pytest.raises(DataError) as info:
        find_val_split(target)
    assert "\n" not in str(info.value) and str(target) in str(info.value)


# --------------------------------------------------------------------------- labels


def test_labels_identity_needs_equal_counts() -> None:
    split = ValSplit(Path("v"), tuple(CLASSES[:3]), "root")
    assert head_labels(split, 3) == (0, 1, 2)
    with pytest.raises(ConfigError, match="3 class folders but the model has 1000 outputs") as info:
        head_labels(split, 1000)
    assert "--classes" in str(info.value) and "--num-classes 3" in str(info.value)


def test_labels_of_a_subset_follow_the_name_list() -> None:
    split = ValSplit(Path("v"), ("b", "d"), "root")
    assert head_labels(split, 4, ["a", "b", "c", "d"]) == (1, 3)
    with pytest.raises(ConfigError, match="'e'"):
        head_labels(ValSplit(Path("v"), ("b", "e"), "root"), 4, ["a", "b", "c", "d"])
    with pytest.raises(ConfigError, match="3 names but the model has 4 outputs"):
        head_labels(split, 4, ["a", "b", "d"])


def test_class_names_read_like_imagenets_mapping(tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_text("n01440764 tench, Tinca tinca\n\nn01443537 goldfish\n")
    assert read_class_names(tmp_path / "m.txt") == ("n01440764", "n01443537")
    (tmp_path / "d.txt").write_text("a\nb\na\n")
    with pytest.raises(ConfigError, match="named twice"):
        read_class_names(tmp_path / "d.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_class_names(tmp_path / "bin.txt")
    with pytest.raises(ConfigError, match="no such class-name file"):
        read_class_names(tmp_path / "absent.txt")


# --------------------------------------------------------------------------- counting


def test_wilson_interval_matches_its_formula() -> None:
    z = 1.959963984540054
    for k, n in [(0, 10), (7, 10), (10, 10), (812, 1000), (40590, 50000)]:
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        low, high = wilson_interval(k, n)
        assert low == pytest.approx(100 * (centre - half), abs=1e-9)
        assert high == pytest.approx(100 * (centre + half), abs=1e-9)
        assert 0 <= low <= 100 * p <= high <= 100
    with pytest.raises(ValueError):
        wilson_interval(3, 0)


def test_counts_of_a_known_model() -> None:
    """A model whose logits are its input: every count is known by construction."""
    logits = torch.tensor([[9.0, 8, 7, 6, 5, 4, 3],  # label 0: top-1
                           [9.0, 8, 7, 6, 5, 4, 3],  # label 4: top-5, not top-1
                           [9.0, 8, 7, 6, 5, 4, 3],  # label 6: neither
                           [1.0, 2, 3, 4, 5, 6, 7]])  # label 6: top-1
    labels = torch.tensor([0, 4, 6, 6])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(logits, labels), batch_size=3)
    seen: list[tuple[int, int]] = []
    acc = count_correct(torch.nn.Identity(), loader, torch.device("cpu"), progress=lambda d, t: seen.append((d, t)))
    assert (acc.images, acc.correct1, acc.correctk, acc.k) == (4, 2, 3, 5)
    assert acc.top1 == 50.0 and acc.topk == 75.0 and seen == [(3, 4), (4, 4)]
    # folder label i scored as head output labels[i]
    acc = count_correct(torch.nn.Identity(), loader, torch.device("cpu"), labels=[6, 1, 2, 3, 4, 5, 0])
    assert (acc.correct1, acc.correctk) == (1, 2)


def test_fewer_classes_than_five_count_top_k_of_all() -> None:
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.eye(3), torch.tensor([0, 2, 1])))
    acc = count_correct(torch.nn.Identity(), loader, torch.device("cpu"))
    assert (acc.k, acc.correct1, acc.correctk, acc.topk) == (3, 1, 3, 100.0)


def _independent(model: torch.nn.Module, folder: Path, classes: list[str], size: int,
                 crop: float = 0.875) -> tuple[int, int, int]:
    """torchvision's own pieces and a plain argsort: DeiT's evaluation transform written out."""
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(int(size / crop), interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                    T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    n = c1 = c5 = 0
    model.eval()
    for label, name in enumerate(classes):
        for path in sorted((folder / name).iterdir()):
            with Image.open(path) as im:
                x = tf(im.convert("RGB"))[None]
            with torch.no_grad():
                order = np.argsort(-model(x)[0].numpy(), kind="stable")
            n, c1, c5 = n + 1, c1 + int(order[0] == label), c5 + int(label in order[:5])
    return n, c1, c5


def test_checkpoint_accuracy_equals_an_independent_computation(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "val", CLASSES, 4, seed=3)
    ckpt, model = save_checkpoint(tmp_path / "w.pth", seed=1)
    result = evaluate_checkpoint("deit_tiny", ckpt, data, device="cpu", batch_size=5, overrides=TINY)
    n, c1, c5 = _independent(model, data, CLASSES, 48)
    assert (result.images, result.correct1, result.correct5) == (n, c1, c5) == (24, c1, c5)
    assert result.top1 == pytest.approx(100 * c1 / n) and result.top5 == pytest.approx(100 * c5 / n)
    assert result.top1_ci95 == pytest.approx(wilson_interval(c1, n))
    assert (result.num_classes, result.image_size, result.recipe, result.device) == (6, 48, "deit", "cpu")
    assert set(result.to_json()) >= {"preset", "weights", "data", "images", "top1", "top5", "wall_s"}
    assert 0 < c5 < n or c1 < c5  # the random model is neither perfect nor blind at top-5


def test_the_weights_are_what_is_scored(tmp_path: Path) -> None:
    """Two checkpoints of one preset give each its own counts (the file is loaded, not ignored)."""
    data = make_folder(tmp_path / "val", CLASSES, 4, seed=5)
    for seed in (1, 2):
        ckpt, model = save_checkpoint(tmp_path / f"w{seed}.pth", seed=seed)
        r = evaluate_checkpoint("deit_tiny", ckpt, data, device="cpu", overrides=TINY)
        assert (r.images, r.correct1, r.correct5) == _independent(model, data, CLASSES, 48)


def test_subset_scored_among_all_outputs(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "val", ["n03", "n05"], 3, seed=7)
    (tmp_path / "names.txt").write_text("".join(f"{c} some words\n" for c in CLASSES))
    ckpt, model = save_checkpoint(tmp_path / "w.pth", seed=4)
    r = evaluate_checkpoint("deit_tiny", ckpt, data, device="cpu", overrides=TINY,
                            class_names=read_class_names(tmp_path / "names.txt"))
    n = c1 = c5 = 0
    model.eval()
    from torchvision import transforms as T
    from PIL import Image

    tf = T.Compose([T.Resize(54, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(48), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    for name, label in (("n03", 3), ("n05", 5)):
        for path in sorted((data / name).iterdir()):
            with Image.open(path) as im, torch.no_grad():
                order = torch.argsort(model(tf(im.convert("RGB"))[None])[0], descending=True, stable=True)
            n, c1, c5 = n + 1, c1 + int(order[0] == label), c5 + int(label in order[:5].tolist())
    assert (r.images, r.correct1, r.correct5, r.num_classes) == (n, c1, c5, 6)


def test_class_count_mismatch_is_one_line(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "val", CLASSES[:4], 1)
    ckpt, _ = save_checkpoint(tmp_path / "w.pth")
    with pytest.raises(ConfigError, match="4 class folders but deit_tiny from .*w.pth has 6 outputs") as info:
        evaluate_checkpoint("deit_tiny", ckpt, data, device="cpu", overrides=TINY)
    assert "\n" not in str(info.value)


def test_undecodable_image_is_named(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "val", CLASSES, 1)
    (data / "n02" / "bad.png").write_bytes(b"not a png")
    ckpt, _ = save_checkpoint(tmp_path / "w.pth")
    with pytest.raises(DataError, match="bad.png: cannot read the image"):
        evaluate_checkpoint("deit_tiny", ckpt, data, device="cpu", overrides=TINY)


def test_bad_arguments(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "val", CLASSES, 1)
    ckpt, _ = save_checkpoint(tmp_path / "w.pth")
    with pytest.raises(ConfigError, match="unknown recipe"):
        evaluate_checkpoint("deit_tiny", ckpt, data, recipe="imagenet", overrides=TINY)
    with pytest.raises(ConfigError, match="detection model"):
        evaluate_checkpoint("yolov8n", ckpt, data)
    with pytest.raises(ConfigError, match="did you mean"):
        evaluate_checkpoint("deit_tiyn", ckpt, data)
    with pytest.raises(ConfigError, match="a checkpoint file is required"):
        evaluate_checkpoint("deit_tiny", None, data, overrides=TINY)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="absent.pth"):
        evaluate_checkpoint("deit_tiny", tmp_path / "absent.pth", data, device="cpu", overrides=TINY)


def test_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="allowed: auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(EnvironmentProblem, match="--device cpu"):
            resolve_device("cuda")
    with pytest.raises(EnvironmentProblem, match="cuda:99"):
        resolve_device("cuda:99")


def test_a_head_of_another_class_count_is_refused(tmp_path: Path) -> None:
    """create_model leaves such a head fresh; scoring it would measure chance, so eval refuses and names the fix."""
    data = make_folder(tmp_path / "val", CLASSES, 1)
    ckpt, _ = save_checkpoint(tmp_path / "w.pth", num_classes=4)
    with pytest.raises(ConfigError, match=r"w.pth: its classifier has 4 classes .* allowed: --num-classes 4"):
        evaluate_checkpoint("deit_tiny", ckpt, data, device="cpu", overrides=TINY)
    # with the checkpoint's count the head loads, and the folder's 6 classes are then the mismatch
    with pytest.raises(ConfigError, match="6 class folders but deit_tiny .* has 4 outputs"):
        evaluate_checkpoint("deit_tiny", ckpt, data, device="cpu", overrides={**TINY, "num_classes": 4})


def test_tensor_counts_are_reported(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "val", CLASSES, 1)
    ckpt, model = save_checkpoint(tmp_path / "w.pth")
    r = evaluate_checkpoint("deit_tiny", ckpt, data, device="cpu", overrides=TINY)
    assert r.tensors_loaded == r.tensors == len(model.state_dict())


def test_a_batch_that_cannot_fit_is_refused_before_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ablate.models.memory import DoesNotFit

    data = make_folder(tmp_path / "val", CLASSES, 1)
    monkeypatch.setenv("ABLATE_MEMORY_LIMIT", "512M")
    with pytest.raises(DoesNotFit, match=r"--batch-size 4096: .* allowed: --batch-size \d+ or less"):
        evaluate_checkpoint("swin_tiny", tmp_path / "never-read.pth", data, device="cpu", batch_size=4096)
    monkeypatch.setenv("ABLATE_MEMORY_LIMIT", "1M")  # not even the weights fit
    with pytest.raises(DoesNotFit, match="allowed: a smaller model or image size"):
        evaluate_checkpoint("swin_tiny", tmp_path / "never-read.pth", data, device="cpu", batch_size=1)


def test_an_undecodable_image_read_by_a_worker_is_one_line(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "val", CLASSES, 1)
    (data / "n01" / "bad.png").write_bytes(b"")
    ckpt, _ = save_checkpoint(tmp_path / "w.pth")
    with pytest.raises(DataError) as info:
        evaluate_checkpoint("deit_tiny", ckpt, data, device="cpu", num_workers=1, overrides=TINY)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(data / "n01" / "bad.png"))


def test_crop_pct_replaces_the_recipes(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "val", CLASSES, 4, seed=9)
    ckpt, model = save_checkpoint(tmp_path / "w.pth", seed=6)
    for crop in (1.0, 0.5):
        r = evaluate_checkpoint("deit_tiny", ckpt, data, device="cpu", crop_pct=crop, overrides=TINY)
        assert (r.images, r.correct1, r.correct5) == _independent(model, data, CLASSES, 48, crop)
        assert r.crop_pct == crop
        # the counts of a random model may not move with the crop; the pixels it sees must
        from PIL import Image
        from torchvision import transforms as T

        from ablate.train.evaluate import _eval_transform

        want = T.Compose([T.Resize(int(48 / crop), interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(48),
                          T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
        with Image.open(data / "n01" / "0.png") as im:
            torch.testing.assert_close(_eval_transform(48, "deit", crop)(im.convert("RGB")), want(im.convert("RGB")))
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="crop_pct must be in"):
            evaluate_checkpoint("deit_tiny", ckpt, data, crop_pct=bad, overrides=TINY)


def test_counts_known_by_construction(tmp_path: Path) -> None:
    """Each image is filed under the class the model itself ranks 1st, 3rd or 6th (through
    torchvision's pipeline written out), so top-1 is exactly a third and top-5 two thirds:
    a wrong transform, label order or top-k shows as other counts."""
    import shutil

    from PIL import Image
    from torchvision import transforms as T

    stage = make_folder(tmp_path / "stage", ["all"], 24, seed=13) / "all"
    ckpt, model = save_checkpoint(tmp_path / "w.pth", seed=8)
    for p in model.parameters():  # a livelier random model: its ranking moves with the image
        p.data.mul_(3.0)
    torch.save(model.state_dict(), ckpt)
    tf = T.Compose([T.Resize(54, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(48), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    model.eval()
    for i, path in enumerate(sorted(stage.iterdir())):
        with Image.open(path) as im, torch.no_grad():
            logits = model(tf(im.convert("RGB"))[None])[0]
        ranked = logits.argsort(descending=True).tolist()
        assert len(set(logits.tolist())) == 6  # no ties: the ranks are well defined
        cls = CLASSES[ranked[(0, 2, 5)[i % 3]]]
        (tmp_path / "val" / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp_path / "val" / cls / path.name)
    r = evaluate_checkpoint("deit_tiny", ckpt, tmp_path, device="cpu", batch_size=7, overrides=TINY,
                            class_names=CLASSES)
    assert (r.images, r.correct1, r.correct5) == (24, 8, 16)
