"""Paper studies' mechanics: ``base``, ``proxy`` (only at ``--scale proxy``), list-form grids
with row labels, the paper-scale cost column of the unscaled base, and the report beside
the paper's numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablate.study import load_study, study_from_dict, study_to_dict
from ablate.errors import ConfigError
from ablate.measure import profile
from ablate.models import build
from tests.cli_helpers import run_cli

# A DeiT-T base keeps the paper-scale builds cheap (about a second at 224 px).
STUDY = """\
name: tiny-paper
base: deit_tiny
grid:
  - {label: "two blocks", depths: [2]}
  - {label: "four blocks", depths: [4]}
proxy:
  patch_size: 4
  dims: [32]
  num_heads: [2]
  grid:
    - {depths: [1]}
    - {depths: [2]}
  image_size: 16
  epochs: 1
  batch_size: 64
  warmup_epochs: 0
objectives: [top1, gflops_paper]
data: {name: digits}
train: {epochs: 300, batch_size: 1024, lr: 1.0e-3, warmup_epochs: 20, seed: 0}
paper_resolution: 224
storage: sqlite:///runs/tiny-paper.db
reference:
  source: "made up for the test"
  rows:
    - {label: "two blocks", params_m: 1.0, top1: 50.0}
    - {label: "not run", top1: 1.0}
"""


@pytest.fixture
def study_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "study.yaml"
    path.write_text(STUDY)
    return path


def _write(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return path


def test_proxy_applies_only_at_proxy_scale(study_file: Path) -> None:
    proxy, paper = load_study(study_file), load_study(study_file, scale="paper")
    assert (proxy.scale, paper.scale) == ("proxy", "paper")
    assert (proxy.data.image_size, proxy.train.epochs, proxy.train.batch_size) == (16, 1, 64)
    assert (paper.data.image_size, paper.train.epochs, paper.train.batch_size) == (224, 300, 1024)
    assert proxy.train.lr == paper.train.lr == 1.0e-3  # not overridden: the same at both scales
    cell = proxy.cells()[1]
    assert cell == {"label": "four blocks", "depths": [4]}
    assert proxy.candidate(cell) == {"preset": "deit_tiny", "patch_size": 4, "dims": [32], "num_heads": [2],
                                     "depths": [2], "img_size": 16}
    assert paper.candidate(cell) == {"preset": "deit_tiny", "depths": [4], "img_size": 224}
    # The cost column is the unscaled base at paper_resolution, whatever the scale.
    assert proxy.paper_candidate(cell) == paper.paper_candidate(cell) == paper.candidate(cell)


@pytest.mark.parametrize("scale", ["proxy", "paper"])
def test_spec_round_trip(study_file: Path, scale: str) -> None:
    study = load_study(study_file, scale=scale)
    spec = study_to_dict(study)
    assert spec["scale"] == scale and spec["base"] == "deit_tiny" and spec["proxy"]["epochs"] == 1
    assert study_from_dict(spec, check=False) == study


@pytest.mark.parametrize(("old", "new", "message"), [
    ("name: tiny-paper", "name: tiny-paper\nscale: paper",
     "study.yaml:2: scale: is chosen when running (ablate run --scale proxy|paper), allowed: drop it from the study file"),
    ("  epochs: 1\n", "  epochs: 0\n", "study.yaml:14: proxy.epochs: must be an integer in [1, 100000], got 0"),
    ("  patch_size: 4\n", "  patch_size: 4\n  depths: [1]\n",
     "study.yaml:8: proxy.depths: 'depths' is a grid key, allowed: map its values with proxy.grid"),
    ("    - {depths: [2]}\n", "",
     "study.yaml:10: proxy.grid: must be a list of 2 mappings, one per grid row"),
    ("  warmup_epochs: 0\n", "",
     "study.yaml:18: train.warmup_epochs: must be an integer in [0, 1], got 20"),
    ("  batch_size: 64\n", "  batch_size: 0\n", "study.yaml:15: proxy.batch_size: must be an integer in [1, 65536], got 0"),
    ("  image_size: 16\n", "  image_size: 16\n  seed: 3\n",
     "study.yaml:14: proxy.seed: 'seed' is the same at both scales"),
    ('  - {label: "four blocks", depths: [4]}', '  - {label: "two blocks", depths: [4]}',
     "study.yaml:5: grid[1].label: duplicate label 'two blocks' (also row 0), allowed: each once"),
    ('  - {label: "four blocks", depths: [4]}', '  - {depths: [4]}',
     "study.yaml:5: grid[1]: every row needs a label when one has it"),
    ('  - {label: "four blocks", depths: [4]}', '  - {label: "four blocks"}',
     "study.yaml:5: grid[1]: a row must set at least one key besides label"),
    ("base: deit_tiny", "base: deit_tiy", "study.yaml:2: base: unknown base 'deit_tiy'"),
    ("    - {depths: [1]}", "    - {depths: [1], label: x}", "study.yaml:11: proxy.grid[0].label: 'label' is not an arch key"),
])
def test_bad_paper_study(study_file: Path, old: str, new: str, message: str) -> None:
    _write(study_file, old, new)
    with pytest.raises(ConfigError) as info:
        load_study(study_file)
    text = str(info.value)
    assert "\n" not in text
    assert text.replace(str(study_file), "study.yaml").startswith(message), text


def test_infeasible_proxy_row_names_the_row_and_scale(study_file: Path) -> None:
    _write(study_file, "  num_heads: [2]\n", "  num_heads: [3]\n")
    with pytest.raises(ConfigError, match=r"row 'two blocks'; the proxy-scale model"):
        load_study(study_file)


def test_dry_run_at_both_scales(study_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "run", str(study_file), "--dry-run", "--scale", "paper")
    assert code == 0, err
    assert "paper scale, trained at 224 px" in out and "params_m_paper" in out
    rows = [line for line in out.splitlines() if "label=" in line]
    assert len(rows) == 2
    code, out, _ = run_cli(capsys, "run", str(study_file), "--dry-run")
    assert code == 0 and "proxy scale, trained at 16 px" in out
    assert not Path("runs").exists(), "a dry run writes nothing"


def test_trial_stores_the_unscaled_cost_column(study_file: Path) -> None:
    from ablate.run.trial import run_trial

    study = load_study(study_file)
    reports: list[dict] = []
    run_trial(study, study.cells()[0], reports.append)
    paper = build({"preset": "deit_tiny", "depths": [2], "img_size": 224})  # 1000 classes, as printed
    expected = profile(paper, 224)
    last = reports[-1]
    assert last["params_m_paper"] == pytest.approx(expected["params_m"])
    assert last["gflops_paper"] == pytest.approx(expected["gflops"])
    assert last["params_m"] < 0.1 < last["params_m_paper"]  # the proxy trained, the paper model is costed


def test_scale_is_frozen_per_storage(study_file: Path) -> None:
    from ablate.run import open_optuna_study

    ostudy = open_optuna_study(load_study(study_file))
    ostudy.tell(ostudy.ask(), [1.0, 1.0])
    with pytest.raises(ConfigError, match="holds this study's proxy-scale run, allowed: --storage"):
        open_optuna_study(load_study(study_file, scale="paper"))


def test_report_puts_paper_numbers_beside_ours(study_file: Path) -> None:
    from ablate.results.report import ablation_table
    from ablate.results import load_results
    from ablate.run import open_optuna_study
    import optuna

    from ablate.run.searcher import grid_distribution

    study = load_study(study_file)
    ostudy = open_optuna_study(study)
    for i, cell in enumerate(study.cells()):
        stored = {p.name: grid_distribution(p, cell[p.name]) for p in study.grid_params}  # as the runner stores a row
        attrs = {"params_m": 0.05, "gflops": 0.001, "params_m_paper": 1.0 + i, "gflops_paper": 0.2, "epochs_done": 1}
        ostudy.add_trial(optuna.trial.create_trial(
            params={k: v for k, (v, _) in stored.items()}, distributions={k: d for k, (_, d) in stored.items()},
            values=[60.0 + i, 0.2], user_attrs=attrs))
    table = ablation_table(load_results(study.storage, study.name))
    columns = list(table.frame.columns)
    assert columns.index("paper.params_m") == columns.index("params_m_paper") + 1
    assert columns.index("paper.top1") == columns.index("top1") + 1
    assert list(table.frame["label"]) == ["two blocks", "four blocks", "not run"]
    assert table.frame["paper.params_m"].tolist()[0] == 1.0
    assert table.labels["params_m"] == "Params (M) proxy" and table.labels["params_m_paper"] == "Params (M) @224"
    assert "Accuracy: proxy scale, digits at 16 px, 1 epochs" in table.caption
    assert "the unscaled deit_tiny" in table.caption


def test_per_stage_option_written_off_with_nulls() -> None:
    from ablate.models import resolve_arch

    arch = {"preset": "flatten_swin_tiny", "attention": "flatten", "window_size": 56, "shift_size": 0,
            "rel_pos_bias": [None, None, None, None]}
    resolved = resolve_arch(arch)
    assert resolve_arch(resolved) == resolved
    with pytest.raises(ConfigError, match="unknown arch key 'rel_pos_bias'"):
        resolve_arch({**arch, "rel_pos_bias": [None, None, None, True]})
