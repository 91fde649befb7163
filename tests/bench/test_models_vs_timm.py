"""``benchmarks/models_vs_timm.py`` on tiny stand-ins (one step, batch 2, 32 px), so the script
cannot rot: the pairs are built and checked, every row has its figures. Speed is not asserted."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("models_vs_timm", ROOT / "benchmarks" / "models_vs_timm.py")
bench = importlib.util.module_from_spec(SPEC)
sys.modules.setdefault(SPEC.name, bench)  # dataclasses look their module up there
SPEC.loader.exec_module(bench)

#: Stand-ins: two-stage Swin and one-block DeiT, the same on both sides; a tiny Focal as context.
ABLATE = {
    "swin_tiny": dict(img_size=32, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4, shift_size=2,
                      num_classes=10),
    "deit_tiny": dict(img_size=32, dims=[16], depths=[1], num_heads=[2], num_classes=10),
    "focal_tiny": dict(img_size=32, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=2, focal_window=[3, 1],
                       expand_size=1, num_classes=10),
}
TIMM = {
    "swin_tiny_patch4_window7_224": dict(img_size=32, embed_dim=16, depths=(1, 1), num_heads=(1, 2), window_size=4,
                                         num_classes=10),
    "deit_tiny_patch16_224": dict(img_size=32, embed_dim=16, depth=1, num_heads=2, num_classes=10),
}


def test_measure_runs_every_kind_of_row_on_tiny_standins() -> None:
    entries = bench.build_entries(list(ABLATE), ABLATE, TIMM)
    assert [(e.name, e.reference_name, e.twin) for e in entries] == [
        ("swin_tiny", "swin_tiny_patch4_window7_224", True), ("deit_tiny", "deit_tiny_patch16_224", True),
        ("focal_tiny", "swin_tiny_patch4_window7_224", False)]
    # the same stochastic depth on both sides (the last block's rate is the preset's 0.2)
    assert entries[0].model.stages[-1].blocks[-1].drop_path.p == pytest.approx(0.2)
    assert entries[0].reference.layers[-1].blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)
    before = {e.name: [p.detach().clone() for p in e.model.parameters()] for e in entries}
    lines: list[str] = []
    rows = bench.measure(entries, batch=2, image_size=32, steps=1, warmup=0, num_classes=10, memory=True,
                         mixers=True, clock="cpu", progress=lines.append)
    assert [r["model"] for r in rows] == list(ABLATE) and len(lines) == 3
    for r in rows:
        assert r["images_per_s"] > 0 and r["reference_images_per_s"] > 0 and r["ratio"] > 0
        assert len(r["step_s"]) == len(r["reference_step_s"]) == 1
        assert r["peak_mib"] > 0 and r["reference_peak_mib"] > 0 and r["mixer_s"] > 0
    assert rows[0]["reference_mixer_s"] > 0 and rows[1]["reference_mixer_s"] > 0
    assert rows[2]["reference_mixer_s"] is None
    # one mixer per block on each side: two Swin blocks, one DeiT block
    assert [len(bench._mixer_calls(e.model, torch.zeros(1, 3, 32, 32))) for e in entries] == [2, 1, 2]
    assert [len(bench._mixer_calls(e.reference, torch.zeros(1, 3, 32, 32))) for e in entries[:2]] == [2, 1]
    assert rows[0]["params_equal"] is True and rows[1]["params_equal"] is True and rows[2]["params_equal"] is None
    for e in entries:  # a real optimiser step happened
        assert any(not p.equal(q) for p, q in zip(e.model.parameters(), before[e.name]))
    with pytest.raises(ValueError, match="clock"):
        bench.measure(entries, batch=2, image_size=32, steps=1, clock="sundial")
    text = bench.table(rows)
    assert text.count("\n") == 4 and "n/a (no twin)" in text
    json.dumps(rows)  # the --json output is plain data


def test_the_script_refuses_bad_flags_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--batch", "0"], ["--steps", "-1"], ["--models", " , "], ["--image-size", "33"],
                 ["--clock", "sundial"], ["--batch", "100000"]):
        with pytest.raises(SystemExit) as info:
            bench.main(argv)
        assert info.value.code == 2
    assert bench.main(["--models", "swin_tinny", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "swin_tinny" in err and "Traceback" not in err
