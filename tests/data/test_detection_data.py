"""Detection data: the synthetic set is seeded, tight and readable by ultralytics offline; the cache
is reused, repaired and race-free; user data YAMLs are checked one clear line at a time."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ablate.data import (
    check_detection_data,
    default_detection_data,
    generate_synth_det,
    synth_det_cache_dir,
)
from ablate.data import synth_det, synth_image
from ablate.errors import ConfigError, DataError
from cli_helpers import run_cli

SMALL = dict(n_train=24, n_val=6)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return generate_synth_det(tmp_path_factory.mktemp("synth") / "set", seed=3, **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _labels(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- the generated set


def test_same_seed_same_bytes_other_seed_other_images(tmp_path, small_set):
    again = _files(generate_synth_det(tmp_path / "a", seed=3, **SMALL).parent)
    first = _files(small_set.parent)
    assert again.keys() == first.keys()
    for name in first:
        if name == "data.yaml":  # differs only in its absolute `path:`
            assert first[name].replace(str(small_set.parent).encode(), b"ROOT") == \
                again[name].replace(str(tmp_path / "a").encode(), b"ROOT")
        else:
            assert first[name] == again[name], name
    other = _files(generate_synth_det(tmp_path / "b", seed=4, **SMALL).parent)
    assert other.keys() == first.keys()
    assert sum(other[n] != first[n] for n in first if n.startswith("images/")) == 30


def test_layout_and_label_format(small_set):
    root = small_set.parent
    for split, count in (("train", 24), ("val", 6)):
        images = sorted((root / "images" / split).iterdir())
        labels = sorted((root / "labels" / split).iterdir())
        assert [p.stem for p in images] == [p.stem for p in labels] and len(images) == count
        for image, label in zip(images, labels):
            with Image.open(image) as im:
                assert im.size == (128, 128) and im.mode == "RGB"
            rows = _labels(label)
            assert 1 <= len(rows) <= 6
            for cls, cx, cy, w, h in rows:
                assert cls in (0, 1, 2)
                assert 0 < w <= 1 and 0 < h <= 1
                assert -1e-6 <= cx - w / 2 and cx + w / 2 <= 1 + 1e-6
                assert -1e-6 <= cy - h / 2 and cy + h / 2 <= 1 + 1e-6
            assert all(len(line.split()) == 5 for line in label.read_text().splitlines())
    text = small_set.read_text()
    assert f'path: "{root}"' in text and "train: images/train" in text and "val: images/val" in text
    assert (root / synth_det.MARKER).is_file()


def test_boxes_are_tight_around_each_drawn_shape(small_set):
    params = synth_det._params(**dict(synth_det._DEFAULTS, seed=3, **SMALL))
    for split, count in (("train", 24), ("val", 6)):
        for index in range(count):
            image, objects = synth_image.render_image(params, split, index)
            written = np.asarray(Image.open(small_set.parent / "images" / split / f"{index:06d}.png"))
            np.testing.assert_array_equal(image, written)
            rows = _labels(small_set.parent / "labels" / split / f"{index:06d}.txt")
            assert len(rows) == len(objects)
            for obj, (cls, cx, cy, w, h) in zip(objects, rows):
                x0, y0, x1, y1 = obj.box
                assert cls == obj.cls
                assert (cx, cy, w, h) == pytest.approx(((x0 + x1) / 256, (y0 + y1) / 256, (x1 - x0) / 128,
                                                       (y1 - y0) / 128), abs=1e-6)
                ys, xs = np.nonzero(obj.mask)
                # every pixel of the shape lies in the box, and the shape touches all four sides
                assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)


def test_scales_borders_and_classes_are_all_present(tmp_path):
    yaml_path = generate_synth_det(tmp_path / "set", seed=0, n_train=64, n_val=8,
                                   classes=("circle", "square", "triangle", "cross", "star"))
    rows = [r for p in (tmp_path / "set" / "labels").rglob("*.txt") for r in _labels(p)]
    side = np.array([max(r[3], r[4]) for r in rows])
    assert (side < 0.12).sum() >= 20 and ((side >= 0.12) & (side < 0.28)).sum() >= 20 and (side >= 0.3).sum() >= 10
    at_border = [r for r in rows if min(r[1] - r[3] / 2, r[2] - r[4] / 2) < 1e-6
                 or max(r[1] + r[3] / 2, r[2] + r[4] / 2) > 1 - 1e-6]
    assert len(at_border) >= 10
    assert {int(r[0]) for r in rows} == {0, 1, 2, 3, 4}
    counts = [len(_labels(p)) for p in (tmp_path / "set" / "labels" / "train").iterdir()]
    assert min(counts) == 1 and max(counts) == 6
    assert check_detection_data(yaml_path).names == ("circle", "square", "triangle", "cross", "star")


def test_bad_parameters_and_out_are_one_line(tmp_path):
    for kwargs, needle in ((dict(n_train=0), "n_train"), (dict(image_size=16), "image_size"),
                           (dict(classes=("circle", "hexagon")), "hexagon"), (dict(seed=-1), "seed"),
                           (dict(min_objects=3, max_objects=2), "max_objects")):
        with pytest.raises(ConfigError, match=needle) as err:
            generate_synth_det(tmp_path / "x", **kwargs)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "x").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not an empty folder"):
        generate_synth_det(tmp_path / "full", n_train=1, n_val=1)
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()  # an empty folder is fine
    assert generate_synth_det(tmp_path / "empty", n_train=1, n_val=1).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "full"]  # no temporary folders left


def test_ultralytics_reads_the_set_offline(small_set):
    from ablate.offline import ultralytics_offline

    ultralytics_offline()
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(small_set))
    assert data["nc"] == 3 and data["names"] == {0: "circle", 1: "square", 2: "triangle"}
    assert Path(data["train"]) == small_set.parent / "images" / "train"
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import YOLODataset

    dataset = YOLODataset(img_path=data["val"], data=data, task="detect", imgsz=128, augment=False, hyp=get_cfg())
    assert len(dataset) == 6
    rows = sum(len(_labels(p)) for p in (small_set.parent / "labels" / "val").iterdir())
    assert sum(len(lb["bboxes"]) for lb in dataset.labels) == rows  # ultralytics dropped no box as invalid


# --------------------------------------------------------------------------- the cache


def _counting(monkeypatch) -> list[Path]:
    calls: list[Path] = []
    real = synth_det._write_set

    def write_set(root, final, params):
        calls.append(final)
        real(root, final, params)

    monkeypatch.setattr(synth_det, "_write_set", write_set)
    return calls


def test_cache_is_generated_once_then_reused(tmp_path, monkeypatch):
    calls = _counting(monkeypatch)
    first = default_detection_data(tmp_path, n_train=4, n_val=2)
    marker = first.parent / synth_det.MARKER
    stamp = marker.stat().st_mtime_ns
    assert default_detection_data(tmp_path, n_train=4, n_val=2) == first
    assert len(calls) == 1 and marker.stat().st_mtime_ns == stamp
    assert first.parent == synth_det_cache_dir(tmp_path, n_train=4, n_val=2)
    assert first.parent.name.startswith("synth-det-")
    other = default_detection_data(tmp_path, n_train=4, n_val=2, seed=1)  # other parameters, other folder
    assert other != first and len(calls) == 2
    assert check_detection_data(first).n_train == 4


def test_cache_lives_under_ablate_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_HOME", str(tmp_path / "home"))
    path = default_detection_data(n_train=2, n_val=1)
    assert path.parent.parent == tmp_path / "home" / "data"
    with pytest.raises(ConfigError, match="n_trian"):
        default_detection_data(n_trian=2)


def test_half_written_cache_is_regenerated(tmp_path, monkeypatch):
    final = synth_det_cache_dir(tmp_path, n_train=4, n_val=2)
    (final / "images" / "train").mkdir(parents=True)  # a killed writer's leftovers: no marker
    (final / "images" / "train" / "000000.png").write_bytes(b"truncated")
    (final / "data.yaml").write_text("path: nowhere\n")
    stale = tmp_path / f".{final.name}.tmp-999999-deadbeef"
    stale.mkdir()
    calls = _counting(monkeypatch)
    path = default_detection_data(tmp_path, n_train=4, n_val=2)
    assert len(calls) == 1 and path == final / "data.yaml"
    assert check_detection_data(path).n_train == 4
    with Image.open(final / "images" / "train" / "000000.png") as im:
        assert im.size == (128, 128)
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([final.name, f"{final.name}.lock"])


def _ask(cache: Path, start, result: Path) -> None:
    start.wait()
    result.write_text(str(default_detection_data(cache, n_train=8, n_val=2)))


def test_two_processes_asking_at_once_get_one_valid_set(tmp_path, monkeypatch):
    log = tmp_path / "generations.log"
    real = synth_det._write_set

    def write_set(root, final, params):  # inherited by the forked children
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        real(root, final, params)

    monkeypatch.setattr(synth_det, "_write_set", write_set)
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(2)
    cache = tmp_path / "cache"
    procs = [ctx.Process(target=_ask, args=(cache, start, tmp_path / f"result{i}")) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    results = {(tmp_path / f"result{i}").read_text() for i in range(2)}
    assert len(results) == 1
    assert len(log.read_text().split()) == 1  # the second waited for the first and reused its set
    info = check_detection_data(Path(results.pop()))
    assert (info.n_train, info.n_val) == (8, 2)
    assert not [p for p in cache.iterdir() if ".tmp-" in p.name or ".trash-" in p.name]


def test_the_loser_of_a_rename_race_uses_the_winners_set(tmp_path, monkeypatch):
    real = synth_det._write_set

    def write_set(root, final, params):  # another writer (one without the lock) finishes first
        real(root, final, params)
        real(final.parent / "winner", final, params)
        os.rename(final.parent / "winner", final)

    monkeypatch.setattr(synth_det, "_write_set", write_set)
    path = default_detection_data(tmp_path, n_train=3, n_val=1)
    assert check_detection_data(path).n_train == 3
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


# --------------------------------------------------------------------------- user data YAMLs


def _user_set(tmp_path: Path, yaml_text: str) -> Path:
    for split in ("train", "val"):
        (tmp_path / "ds" / "images" / split).mkdir(parents=True)
        (tmp_path / "ds" / "labels" / split).mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "ds" / "images" / split / "a.jpg")
        (tmp_path / "ds" / "labels" / split / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    path = tmp_path / "ds" / "data.yaml"
    path.write_text(yaml_text)
    return path


GOOD_YAML = "train: images/train\nval: images/val\nnames: [cat, dog]\n"


def test_a_user_yaml_with_lists_and_relative_paths(tmp_path, monkeypatch):
    path = _user_set(tmp_path, GOOD_YAML)
    info = check_detection_data(path)
    assert (info.names, info.nc, info.n_train, info.n_val) == (("cat", "dog"), 2, 1, 1)
    assert info.root == tmp_path / "ds" and info.train == (tmp_path / "ds" / "images" / "train",)
    (tmp_path / "ds" / "train.txt").write_text("./images/train/a.jpg\n./images/val/a.jpg\n")
    path.write_text("path: ../ds\ntrain: [train.txt, images/train]\nval: images/val\nnc: 2\n"
                    "names: {0: cat, 1: dog}\ndownload: null\n")
    monkeypatch.chdir(tmp_path / "ds" / "images")  # `path:` is found next to the YAML, not here
    info = check_detection_data(path)
    assert info.n_train == 3 and info.root == tmp_path / "ds"
    assert info.to_yaml_dict() == {"path": str(tmp_path / "ds"),
                                   "train": [str(tmp_path / "ds" / "train.txt"),
                                             str(tmp_path / "ds" / "images" / "train")],
                                   "val": str(tmp_path / "ds" / "images" / "val"), "names": {0: "cat", 1: "dog"}}


BAD_YAML = [
    ("missing train", GOOD_YAML.replace("train: images/train\n", ""), ConfigError, ["train", "required"]),
    ("missing val", GOOD_YAML.replace("val: images/val\n", ""), ConfigError, ["val", "required"]),
    ("missing names", GOOD_YAML.replace("names: [cat, dog]\n", ""), ConfigError, ["names", "required"]),
    ("invalid yaml", GOOD_YAML.replace("val:", "  val:"), ConfigError, [":2: invalid YAML"]),
    ("not a mapping", "- a\n- b\n", ConfigError, ["mapping"]),
    ("download url", GOOD_YAML + "download: https://example.com/ds.zip\n", ConfigError,
     [":4: download", "never downloads"]),
    ("download script", GOOD_YAML + "download: |\n  import os\n", ConfigError, ["download", "never downloads"]),
    ("nc mismatch", GOOD_YAML + "nc: 3\n", ConfigError, ["nc", "2 names"]),
    ("bad names", GOOD_YAML.replace("[cat, dog]", "{1: cat}"), ConfigError, ["names", "0..0"]),
    ("string names keys", GOOD_YAML.replace("[cat, dog]", "{'0': cat, 1: dog}"), ConfigError, ["names", "0..1"]),
    ("missing split dir", GOOD_YAML.replace("images/val", "images/test"), DataError,
     [":2: val", "images/test", "does not exist"]),
    ("missing root", "path: /no/such/root\n" + GOOD_YAML, DataError, ["path", "/no/such/root", "not found"]),
    ("no images", GOOD_YAML.replace("images/val", "labels/val"), DataError, ["val", "has no images"]),
]


@pytest.mark.parametrize("case,text,error,needles", BAD_YAML, ids=[b[0] for b in BAD_YAML])
def test_bad_user_yaml_is_one_clear_line(tmp_path, case, text, error, needles):
    path = _user_set(tmp_path, text)
    with pytest.raises(error) as err:
        check_detection_data(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert all(n in message for n in needles), message


def test_missing_file_folder_and_unlabelled_images(tmp_path):
    with pytest.raises(DataError, match="data YAML not found") as err:
        check_detection_data(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(err.value)
    with pytest.raises(DataError, match="is a folder"):
        check_detection_data(tmp_path)
    path = _user_set(tmp_path, GOOD_YAML)
    (tmp_path / "ds" / "labels" / "train" / "a.txt").unlink()
    with pytest.raises(DataError, match="train: none of the 1 images has a label file"):
        check_detection_data(path)


# --------------------------------------------------------------------------- command line


def test_cli_writes_a_set_and_refuses_a_used_folder(tmp_path, capsys):
    out = tmp_path / "synth"
    code, stdout, err = run_cli(capsys, "data", "synth-det", "--out", str(out), "--train", "3", "--val", "2",
                                "--seed", "1", "--image-size", "64")
    assert code == 0, err
    assert stdout.splitlines()[0] == str(out / "data.yaml")
    assert "3 train / 2 val images of 64 px, 3 classes" in stdout
    info = check_detection_data(out / "data.yaml")
    assert (info.n_train, info.n_val) == (3, 2)
    with Image.open(out / "images" / "train" / "000000.png") as im:
        assert im.size == (64, 64)
    for bad in (str(out), str(out / "data.yaml")):  # a used folder; a file
        code, stdout, err = run_cli(capsys, "data", "synth-det", "--out", bad)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert bad in err and "not an empty folder" in err
    code, _, err = run_cli(capsys, "data", "synth-det", "--out", str(tmp_path / "x"), "--train", "0")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "n_train" in err
    assert not (tmp_path / "x").exists()
