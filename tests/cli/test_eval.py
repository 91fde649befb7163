"""``ablate eval``: the table and JSON a user reads, and one line with exit 2 for bad input.

A tiny DeiT-T skeleton (``--arch`` overrides) on a generated ImageFolder in a tmp folder;
the checkpoint is ablate's own ``state_dict()``. Offline.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ablate.models import create_model
from ablate.train.evaluate import evaluate_checkpoint
from tests.cli_helpers import run_cli
from tests.train.test_evaluate import CLASSES, TINY, make_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARCH = ["--arch", "img_size=48", "--arch", "patch_size=8", "--arch", "dims=[16]", "--arch", "depths=[1]",
        "--arch", "num_heads=[2]", "--arch", "num_classes=6"]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    make_folder(tmp_path / "imagenet" / "val", CLASSES, 3, seed=11)
    torch.manual_seed(0)
    torch.save(create_model("deit_tiny", **TINY).state_dict(), tmp_path / "w.pth")
    return tmp_path / "w.pth", tmp_path / "imagenet"


def test_json_matches_the_library(capsys: pytest.CaptureFixture[str], setup: tuple[Path, Path]) -> None:
    weights, data = setup
    code, out, err = run_cli(capsys, "eval", "deit_tiny", "--weights", str(weights), "--data", str(data),
                             "--device", "cpu", "--format", "json", *ARCH)
    assert code == 0, err
    got = json.loads(out)
    want = evaluate_checkpoint("deit_tiny", weights, data, device="cpu", overrides=TINY)
    assert {"preset", "weights", "data", "images", "top1", "top5", "wall_s", "top1_ci95"} <= set(got)
    assert (got["images"], got["correct1"], got["correct5"]) == (want.images, want.correct1, want.correct5) \
        == (18, want.correct1, want.correct5)
    assert got["top1"] == pytest.approx(want.top1) and got["top1_ci95"] == pytest.approx(list(want.top1_ci95))
    assert got["data"] == str(data / "val") and got["preset"] == "deit_tiny" and got["weights"] == str(weights)


def test_table(capsys: pytest.CaptureFixture[str], setup: tuple[Path, Path]) -> None:
    weights, data = setup
    code, out, err = run_cli(capsys, "eval", "deit_tiny", "--weights", str(weights), "--data", str(data / "val"),
                             "--device", "cpu", *ARCH)
    assert code == 0, err
    want = evaluate_checkpoint("deit_tiny", weights, data, device="cpu", overrides=TINY)
    assert f"top-1   {want.top1:6.2f} %" in out and f"n={want.images}" in out and "Wilson" in out
    assert f"top-5   {want.top5:6.2f} %" in out and "18 images, 6 classes, 48 px" in out


@pytest.mark.parametrize("case", ["missing_data", "train_only", "file_as_data", "missing_weights",
                                  "not_a_checkpoint", "class_count", "head", "arch_key", "arch_form", "device", "classes_file"])
def test_bad_input_is_one_line(capsys: pytest.CaptureFixture[str], setup: tuple[Path, Path], tmp_path: Path,
                               case: str) -> None:
    weights, data = setup
    args = {"weights": str(weights), "data": str(data), "extra": list(ARCH)}
    expect = ""
    if case == "missing_data":
        args["data"], expect = str(tmp_path / "nowhere"), "nowhere"
    elif case == "train_only":
        make_folder(tmp_path / "t" / "train", CLASSES, 1)
        args["data"], expect = str(tmp_path / "t"), "train/ but no val/"
    elif case == "file_as_data":
        args["data"], expect = str(weights), "not a directory"
    elif case == "missing_weights":
        args["weights"], expect = str(tmp_path / "absent.pth"), "absent.pth"
    elif case == "not_a_checkpoint":
        (tmp_path / "junk.pth").write_bytes(b"\x80\x04junk")
        args["weights"], expect = str(tmp_path / "junk.pth"), "junk.pth"
    elif case == "class_count":
        make_folder(tmp_path / "few", CLASSES[:4], 1)
        args["data"], expect = str(tmp_path / "few"), "4 class folders but deit_tiny"
    elif case == "head":
        args["extra"], expect = [*ARCH[:-2], "--arch", "num_classes=5"], "--num-classes 6"
    elif case == "arch_key":
        args["extra"], expect = [*ARCH, "--arch", "windw_size=7"], "windw_size"
    elif case == "arch_form":
        args["extra"], expect = [*ARCH, "--arch", "depths"], "--arch depths: not KEY=VALUE"
    elif case == "device":
        args["extra"], expect = [*ARCH, "--device", "tpu"], "allowed: auto, cpu, cuda"
    elif case == "classes_file":
        args["extra"], expect = [*ARCH, "--classes", str(tmp_path / "none.txt")], "none.txt"
    code, out, err = run_cli(capsys, "eval", "deit_tiny", "--weights", args["weights"], "--data", args["data"],
                             *args["extra"])
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and expect in err, err
    assert "Traceback" not in err and out == ""


def test_subset_with_class_names(capsys: pytest.CaptureFixture[str], setup: tuple[Path, Path],
                                 tmp_path: Path) -> None:
    weights, _ = setup
    subset = make_folder(tmp_path / "sub", ["n01", "n04"], 2, seed=2)
    (tmp_path / "names.txt").write_text("\n".join(CLASSES) + "\n")
    code, out, err = run_cli(capsys, "eval", "deit_tiny", "--weights", str(weights), "--data", str(subset),
                             "--classes", str(tmp_path / "names.txt"), "--format", "json", "--device", "cpu", *ARCH)
    assert code == 0, err
    got = json.loads(out)
    assert (got["images"], got["num_classes"], got["class_folders"]) == (4, 6, 2)
    code, out, err = run_cli(capsys, "eval", "deit_tiny", "--weights", str(weights), "--data", str(subset),
                             "--classes", str(tmp_path / "names.txt"), "--device", "cpu", *ARCH)
    assert code == 0 and "4 images, 2 class folders scored among 6 outputs" in out, err


def test_progress_lines_in_a_pipe(capsys: pytest.CaptureFixture[str], setup: tuple[Path, Path],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    weights, data = setup
    monkeypatch.setenv("ABLATE_PROGRESS_INTERVAL", "0.000001")
    code, out, err = run_cli(capsys, "eval", "deit_tiny", "--weights", str(weights), "--data", str(data),
                             "--device", "cpu", "--batch-size", "5", "--format", "json", *ARCH)
    assert code == 0 and json.loads(out)["images"] == 18
    assert [line.split(",")[0] for line in err.splitlines()] == [f"progress: {n}/18 images" for n in (5, 10, 15, 18)]
    monkeypatch.setenv("ABLATE_PROGRESS_INTERVAL", "0")
    code, out, err = run_cli(capsys, "eval", "deit_tiny", "--weights", str(weights), "--data", str(data),
                             "--device", "cpu", "--format", "json", *ARCH)
    assert code == 0 and err == ""
