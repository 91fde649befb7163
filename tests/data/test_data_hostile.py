"""Hostile data folders: the structural check that ``ablate validate`` and the loader share.

Every good layout must be read the same way by the check (:func:`check_classification_data`)
and the loader (:func:`load_classification`); every bad one must be refused by both with one
line naming the folder; corrupt image files must fail when read, naming the file; symbolic
link loops must end; huge folders must be checked without listing them; a detection YAML
pointing nowhere, at empty folders or at unlabelled images must name its key. The study
file and the command line give exit 2 for all of them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from ablate.data import check_classification_data, check_detection_data, load_classification, num_classes_of
from ablate.data.folders import IMG_EXTENSIONS, LAYOUT_FLAT, LAYOUT_SPLIT, LAYOUT_TRAIN, ImageFiles, read_image
from ablate.errors import ConfigError, DataError


def _png(path: Path, colour: tuple[int, int, int] = (10, 20, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def _classes(root: Path, names=("cat", "dog"), per_class: int = 2, suffix: str = ".png") -> None:
    for k, name in enumerate(names):
        for i in range(per_class):
            _png(root / name / f"{i}{suffix}", (60 * k, 30 * i, 90))


# --------------------------------------------------------------------------- good layouts


def _flat(root: Path) -> None:
    _classes(root)


def _split(root: Path) -> None:
    _classes(root / "train")
    _classes(root / "val", per_class=1)


def _train_only(root: Path) -> None:
    _classes(root / "train", per_class=3)


def _nested_and_upper_case(root: Path) -> None:
    _png(root / "cat" / "2024" / "a.PNG")  # a class's images may sit in sub-folders, any case
    _png(root / "dog" / "b.JpEg")


def _hidden_and_stray_things_ignored(root: Path) -> None:
    _classes(root)
    _png(root / ".ipynb_checkpoints" / "x.png")  # not a class
    (root / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07")  # a macOS resource fork: never read
    (root / "README.txt").write_text("stray files at the root are no class")
    (root / "dog" / "notes.txt").write_text("a non-image beside the images is ignored")


def _symlinked_class_and_loop(root: Path) -> None:
    _classes(root / "elsewhere", names=("cat",))
    root.joinpath("real").mkdir(parents=True)
    (root / "real" / "cat").symlink_to(root / "elsewhere" / "cat", target_is_directory=True)
    _png(root / "real" / "dog" / "0.png")
    (root / "real" / "dog" / "up").symlink_to(root / "real", target_is_directory=True)  # a loop
    (root / "real" / "dog" / "self").symlink_to(root / "real" / "dog" / "self")  # ELOOP on stat


GOOD = [
    ("flat", _flat, "", LAYOUT_FLAT, ("cat", "dog"), 4),
    ("train and val", _split, "", LAYOUT_SPLIT, ("cat", "dog"), 6),
    ("train only", _train_only, "", LAYOUT_TRAIN, ("cat", "dog"), 6),
    ("nested, upper-case suffixes", _nested_and_upper_case, "", LAYOUT_FLAT, ("cat", "dog"), 2),
    ("hidden and stray entries", _hidden_and_stray_things_ignored, "", LAYOUT_FLAT, ("cat", "dog"), 4),
    ("symlinked class, loop", _symlinked_class_and_loop, "real", LAYOUT_FLAT, ("cat", "dog"), 3),
]


@pytest.mark.parametrize("case,make,sub,layout,classes,n_images", GOOD, ids=[g[0] for g in GOOD])
def test_good_layouts_are_read_alike_by_the_check_and_the_loader(tmp_path, case, make, sub, layout, classes,
                                                                 n_images):
    make(tmp_path)
    root = tmp_path / sub
    info = check_classification_data("imagefolder", root)
    assert (info.layout, info.classes, info.num_classes) == (layout, classes, len(classes))
    assert num_classes_of("imagefolder", str(root)) == len(classes)
    data = load_classification("imagefolder", path=str(root), image_size=8, val_fraction=0.5)
    assert data.num_classes == info.num_classes
    assert len(data.train) + len(data.val) == n_images and len(data.train) >= 1 and len(data.val) >= 1
    for split in (data.train, data.val):
        for i in range(len(split)):
            image, label = split[i]
            assert image.shape == (3, 8, 8) and 0 <= label < len(classes)


def test_suffixes_and_sample_order_are_torchvisions(tmp_path):
    from torchvision import datasets
    from torchvision.datasets.folder import IMG_EXTENSIONS as TV

    assert IMG_EXTENSIONS == TV
    for rel in ("cat/b.png", "cat/a.png", "cat/z/c.png", "cat/y-1.png", "dog/0.jpg", "dog/sub/1.bmp", "dog/sub-x/2.png"):
        _png(tmp_path / rel)
    ours = ImageFiles(tmp_path, ["cat", "dog"])
    theirs = datasets.ImageFolder(str(tmp_path))
    assert ours.samples == theirs.samples  # the seeded split picks the same images as before


# --------------------------------------------------------------------------- bad layouts


def _nothing(root: Path) -> None:
    pass


def _images_without_class_folders(root: Path) -> None:
    _png(root / "a.png")
    _png(root / "b.png")


def _one_class(root: Path) -> None:
    _classes(root, names=("cat",))


def _a_class_without_images(root: Path) -> None:
    _classes(root, names=("cat", "dog"))
    (root / "fox").mkdir()
    (root / "fox" / "notes.txt").write_text("no image here")


def _only_hidden_images(root: Path) -> None:
    _classes(root, names=("cat",))
    _png(root / "dog" / ".0.png")


def _no_class_has_images(root: Path) -> None:
    for name in ("cat", "dog"):
        (root / name).mkdir()
        (root / name / "x.txt").write_text("")


def _val_without_train(root: Path) -> None:
    _classes(root / "val")


def _val_lacks_a_class(root: Path) -> None:
    _classes(root / "train", names=("cat", "dog", "fox"))
    _classes(root / "val", names=("cat", "dog"))


def _val_has_an_extra_class(root: Path) -> None:
    _classes(root / "train", names=("cat", "dog"))
    _classes(root / "val", names=("cat", "dog", "owl"))


def _empty_val(root: Path) -> None:
    _classes(root / "train")
    (root / "val").mkdir()


def _train_with_one_class(root: Path) -> None:
    _classes(root / "train", names=("cat",))


def _class_of_only_loops(root: Path) -> None:
    _classes(root, names=("cat",))
    (root / "dog").mkdir()
    (root / "dog" / "up").symlink_to(root, target_is_directory=True)
    (root / "dog" / "again").symlink_to(root / "dog", target_is_directory=True)


def _a_file(root: Path) -> None:
    pass  # the path given is a file (below)


BAD = [
    ("empty folder", _nothing, "", ["no class folders with images", ".png"]),
    ("images but no class folders", _images_without_class_folders, "", ["2 image(s) but no class folders"]),
    ("one class", _one_class, "", ["1 class folder ('cat')", "at least 2"]),
    ("a class without images", _a_class_without_images, "", ["'fox'", "hold no image"]),
    ("only hidden images", _only_hidden_images, "", ["'dog'", "hold no image"]),
    ("no class has images", _no_class_has_images, "", ["no class folders with images", "'cat', 'dog'"]),
    ("val without train", _val_without_train, "", ["val/ but no train/"]),
    ("val lacks a class", _val_lacks_a_class, "", [LAYOUT_SPLIT, "val/", "lacks", "'fox'"]),
    ("val has an extra class", _val_has_an_extra_class, "", ["val/", "'owl'", "train/ lacks"]),
    ("empty val", _empty_val, "", ["val/", "no class folders"]),
    ("train with one class", _train_with_one_class, "", [LAYOUT_TRAIN, "train/", "at least 2"]),
    ("a class of only link loops", _class_of_only_loops, "", ["'dog'", "hold no image"]),
    ("missing", _nothing, "nowhere", ["does not exist or is not a directory"]),
    ("a file", _a_file, "file.png", ["does not exist or is not a directory"]),
]


@pytest.mark.parametrize("case,make,sub,needles", BAD, ids=[b[0] for b in BAD])
def test_bad_layouts_are_refused_in_one_line_by_the_check_and_the_loader(tmp_path, case, make, sub, needles):
    make(tmp_path)
    root = tmp_path / sub
    if case == "a file":
        _png(root)
    begin = time.perf_counter()
    with pytest.raises(DataError) as err:
        check_classification_data("imagefolder", root)
    assert time.perf_counter() - begin < 5.0  # loops end
    message = str(err.value)
    assert "\n" not in message and str(root) in message
    assert all(n in message for n in needles), message
    with pytest.raises(DataError) as again:
        load_classification("imagefolder", path=str(root), image_size=8)
    assert str(again.value) == message


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_layout_is_checked_without_reading_it(tmp_path, name):
    folder, files = ("cifar-10-batches-py", ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                                             "data_batch_5", "test_batch", "batches.meta"]) \
        if name == "cifar10" else ("cifar-100-python", ["train", "test", "meta"])
    with pytest.raises(DataError, match=f"holds no {folder} folder"):
        check_classification_data(name, tmp_path)
    (tmp_path / folder).mkdir()
    for f in files:
        (tmp_path / folder / f).write_bytes(b"x")
    info = check_classification_data(name, tmp_path)
    assert info.num_classes == (10 if name == "cifar10" else 100) and folder in info.layout
    (tmp_path / folder / files[0]).write_bytes(b"")
    with pytest.raises(DataError, match=f"{files[0]} empty or unreadable"):
        check_classification_data(name, tmp_path / folder)


def test_unknown_name_and_digits():
    assert check_classification_data("digits").num_classes == 10
    with pytest.raises(DataError, match="unknown data set 'mnist'"):
        check_classification_data("mnist", "/tmp")


# --------------------------------------------------------------------------- unreadable folders


def _deny(monkeypatch, *denied: Path) -> None:
    """``os.scandir`` raises EACCES for ``denied``, as it does for a chmod 000 folder (root ignores modes)."""
    real = os.scandir
    blocked = {str(p) for p in denied}

    def scandir(path="."):
        if os.fspath(path) in blocked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


@pytest.mark.parametrize("which", ["root", "class", "train", "nested"])
def test_unreadable_folders_are_named(tmp_path, monkeypatch, which):
    if which == "train":
        _split(tmp_path)
        denied = tmp_path / "train"
    else:
        _classes(tmp_path)
        _png(tmp_path / "dog" / "deep" / "x.png")
        denied = {"root": tmp_path, "class": tmp_path / "cat", "nested": tmp_path / "dog" / "deep"}[which]
    _deny(monkeypatch, denied)
    if which == "nested":  # the check stops at a class's first image; the loader lists everything
        assert check_classification_data("imagefolder", tmp_path).num_classes == 2
    else:
        with pytest.raises(DataError, match="cannot list") as err:
            check_classification_data("imagefolder", tmp_path)
        assert str(denied) in str(err.value) and "Permission denied" in str(err.value)
    with pytest.raises(DataError, match="cannot list") as err:
        load_classification("imagefolder", path=str(tmp_path), image_size=8)
    assert str(denied) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder whatever its mode")
def test_a_chmod_000_class_folder_is_named(tmp_path):
    _classes(tmp_path)
    (tmp_path / "dog").chmod(0)
    try:
        with pytest.raises(DataError, match="cannot list") as err:
            check_classification_data("imagefolder", tmp_path)
        assert str(tmp_path / "dog") in str(err.value)
    finally:
        (tmp_path / "dog").chmod(0o755)


# --------------------------------------------------------------------------- huge folders


def test_a_huge_folder_is_checked_without_listing_it(tmp_path, monkeypatch):
    n = 3000
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(n):
            (tmp_path / name / f"{i:05d}.jpg").touch()  # never opened by the check
    real = os.scandir
    read = {"entries": 0}

    class Counting:
        def __init__(self, it):
            self.it = it

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.it.close()

        def __iter__(self):
            for entry in self.it:
                read["entries"] += 1
                yield entry

    monkeypatch.setattr(os, "scandir", lambda path=".": Counting(real(path)))
    begin = time.perf_counter()
    info = check_classification_data("imagefolder", tmp_path)
    took = time.perf_counter() - begin
    assert info.num_classes == 2
    assert read["entries"] <= 2 + 2 * 2, read  # the root's 2 entries, then about one per class
    assert took < 1.0, took


# --------------------------------------------------------------------------- corrupt images


def _corrupt(kind: str, path: Path) -> None:
    if kind == "truncated png":
        _png(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "zero bytes":
        path.write_bytes(b"")
    else:
        path.write_text("this is not a JPEG\n")


@pytest.mark.parametrize("kind,name", [("truncated png", "bad.png"), ("zero bytes", "bad.jpg"),
                                       ("text", "bad.jpg")])
def test_a_corrupt_image_fails_when_read_naming_the_file(tmp_path, kind, name):
    _classes(tmp_path)
    bad = tmp_path / "dog" / name
    _corrupt(kind, bad)
    info = check_classification_data("imagefolder", tmp_path)  # structure only: no image opened
    assert info.num_classes == 2
    data = load_classification("imagefolder", path=str(tmp_path), image_size=8, val_fraction=0.2)
    with pytest.raises(DataError) as err:
        for split in (data.train, data.val):
            for i in range(len(split)):
                split[i]
    message = str(err.value)
    assert str(bad) in message and "cannot read the image" in message and "\n" not in message
    with pytest.raises(DataError, match="cannot read the image"):
        read_image(str(bad))


def test_a_corrupt_image_through_loader_workers_is_one_line_for_the_trial(tmp_path):
    from torch.utils.data import DataLoader

    from ablate.run.trial import data_error_line

    _classes(tmp_path)
    bad = tmp_path / "cat" / "zz.jpg"
    _corrupt("text", bad)
    data = load_classification("imagefolder", path=str(tmp_path), image_size=8, val_fraction=0.2)
    with pytest.raises(DataError) as err:
        for _ in DataLoader(data.train, batch_size=2, num_workers=1):
            pass
    assert "\n" in str(err.value)  # torch appends the worker's traceback
    line = data_error_line(err.value)
    assert "\n" not in line and line.startswith(f"{bad}: cannot read the image"), line


# --------------------------------------------------------------------------- detection YAMLs


def _det(tmp_path: Path, text: str = "train: images/train\nval: images/val\nnames: [cat, dog]\n") -> Path:
    for split in ("train", "val"):
        _png(tmp_path / "ds" / "images" / split / "a.png")
        (tmp_path / "ds" / "labels" / split).mkdir(parents=True, exist_ok=True)
        (tmp_path / "ds" / "labels" / split / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    path = tmp_path / "ds" / "data.yaml"
    path.write_text(text)
    return path


def test_detection_yaml_pointing_nowhere_or_at_nothing_names_its_key(tmp_path, monkeypatch):
    path = _det(tmp_path)
    assert check_detection_data(path).n_train == 1
    path.write_text("train: images/train\nval: nowhere/val\nnames: [cat, dog]\n")
    with pytest.raises(DataError, match=r"data.yaml:2: val: .*nowhere/val does not exist"):
        check_detection_data(path)
    (tmp_path / "ds" / "empty").mkdir()
    path.write_text("train: empty\nval: images/val\nnames: [cat, dog]\n")
    with pytest.raises(DataError, match=r"data.yaml:1: train: .*empty has no images"):
        check_detection_data(path)
    _png(tmp_path / "ds" / "unlabelled" / "images" / "x.png")
    path.write_text("train: images/train\nval: unlabelled/images\nnames: [cat, dog]\n")
    with pytest.raises(DataError, match=r"data.yaml:2: val: none of the 1 images has a label file"):
        check_detection_data(path)
    (tmp_path / "ds" / "list.txt").write_bytes(b"\xff\xfe\x00binary")
    path.write_text("train: list.txt\nval: images/val\nnames: [cat, dog]\n")
    with pytest.raises(DataError, match=r"data.yaml:1: train: .*list.txt: cannot read the image list"):
        check_detection_data(path)


def test_detection_symlink_loop_is_refused_not_followed(tmp_path):
    path = _det(tmp_path)
    train = tmp_path / "ds" / "images" / "train"
    (train / "sub").mkdir()
    (train / "sub" / "up").symlink_to(train, target_is_directory=True)
    (train / "self").symlink_to(train, target_is_directory=True)
    begin = time.perf_counter()
    with pytest.raises(DataError, match=r"data.yaml:1: train: .*symbolic link back to") as err:
        check_detection_data(path)
    assert time.perf_counter() - begin < 5.0 and "\n" not in str(err.value)  # ultralytics' glob would hang


def test_detection_unreadable_split_is_named(tmp_path, monkeypatch):
    path = _det(tmp_path)
    _deny(monkeypatch, tmp_path / "ds" / "images" / "val")
    with pytest.raises(DataError, match=r"data.yaml:2: val: .*cannot list") as err:
        check_detection_data(path)
    assert str(tmp_path / "ds" / "images" / "val") in str(err.value)


# --------------------------------------------------------------------------- study file and command line


STUDY = """\
name: hostile
fixed: {attention: softmax, depths: [1, 1], embed_dim: 16, num_heads: 2, window_size: 2}
grid: {mlp_ratio: [2.0]}
objectives: [{name: top1, direction: maximize}]
data: {name: imagefolder, path: images, image_size: 16}
train: {epochs: 1, batch_size: 8}
storage: sqlite:///runs/hostile.db
"""


@pytest.mark.parametrize("make,needles", [(_nothing, ["no class folders with images"]),
                                          (_a_class_without_images, ["'fox'", "hold no image"]),
                                          (_val_lacks_a_class, ["val/", "'fox'"])],
                         ids=["empty", "class without images", "val lacks a class"])
def test_validate_and_run_exit_2_before_writing(tmp_path, monkeypatch, make, needles):
    from ablate.cli import app
    from ablate.study import check_study

    (tmp_path / "images").mkdir()
    make(tmp_path / "images")
    study = tmp_path / "study.yaml"
    study.write_text(STUDY)
    with pytest.raises(ConfigError) as err:
        check_study(study)
    assert str(err.value).startswith(f"{study}:5: data.path: data path") and all(n in str(err.value) for n in needles)
    monkeypatch.chdir(tmp_path)
    for command in ("validate", "run"):
        result = CliRunner().invoke(app, [command, str(study)])
        assert result.exit_code == 2, (command, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert lines == [f"error: {err.value}"], result.output
    assert not (tmp_path / "runs").exists()


def test_validate_refuses_a_detection_yaml_pointing_nowhere(tmp_path):
    from ablate.study import check_study

    data = _det(tmp_path, "train: images/train\nval: gone\nnames: [cat, dog]\n")
    study = tmp_path / "study.yaml"
    study.write_text(f"name: det\ntask: detect\nbase: yolo_fla_n\ndata: {{name: yolo, path: {data}}}\n"
                     "train: {epochs: 1, batch_size: 2}\nstorage: sqlite:///runs/det.db\n")
    with pytest.raises(ConfigError, match=r"study.yaml:4: data.path: .*data.yaml:2: val: .*gone does not exist"):
        check_study(study)


def test_a_corrupt_file_whose_name_holds_a_line_break_is_still_one_line(tmp_path):
    _classes(tmp_path)
    bad = tmp_path / "dog" / "two\nlines.png"
    bad.write_bytes(b"")
    with pytest.raises(DataError) as err:
        read_image(str(bad))
    assert "\n" not in str(err.value) and repr(str(bad)) in str(err.value)
