"""The shipped paper studies: valid at both scales, and their paper-scale cost column
matches every params / GFLOPs figure the papers print for them.

For each ``reference.rows`` entry that prints a cost, the matching grid row's paper-scale
model (the unscaled base with that row's settings, at ``paper_resolution``) is built and
counted. Tolerances are the issue's: params within 1 %, GFLOPs within 3 %, or within half
a unit of the printed precision when that is wider (Table 7 prints 29.64M as "30M"); a
reference that marks a figure ``truncated`` (FLatten's Table 4 prints DeiT-T's 1.26G as
1.2G) must lie in ``[printed, printed + 0.1)``. A row may list figures under ``unchecked``
only with a ``note`` that says why the printed figure cannot be the model's (FLatten's
Tables 6-7 print 29M on every row, Swin-T's 28.3M included).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ablate.study import LABEL, load_study
from ablate.study.space import thaw
from ablate.run.trial import measure_costs, paper_arch

ROOT = Path(__file__).resolve().parents[2]
#: The papers' ablations are the study files that name a ``base`` preset (as in
#: benchmarks/paper_tables.py); the others are searches, checked below to be searches.
ALL_STUDIES = sorted((ROOT / "studies").glob("*.yaml"))
STUDIES = [p for p in ALL_STUDIES if re.search(r"^base:", p.read_text(encoding="utf-8"), re.M)]
SEARCHES = [p for p in ALL_STUDIES if p not in STUDIES]
COSTS = {"params_m": 0.01, "gflops": 0.03, "gflops_ultralytics": 0.03}


def _matches(cell: dict[str, Any], ref: dict[str, Any]) -> bool:
    keys = [k for k in ref if k in cell or k == LABEL]
    return bool(keys) and all(k in cell and thaw(cell[k]) == thaw(ref[k]) for k in keys)


def _half_unit(value: float) -> float:
    """Half a unit of the last printed digit: 0.5 for ``30``, 0.05 for ``4.5``."""
    if isinstance(value, int):
        return 0.5
    decimals = len(repr(float(value)).split(".")[1].rstrip("0")) if "." in repr(float(value)) else 0
    return 0.5 * 10.0 ** -decimals


def _cases() -> list[Any]:
    cases = []
    for path in STUDIES:
        study = load_study(path, check=False)
        reference = study.reference or {}
        truncated = set(reference.get("truncated") or ())
        for i, ref in enumerate(reference.get("rows") or ()):
            ref = dict(ref)
            unchecked = set(ref.get("unchecked") or ())
            assert not unchecked or ref.get("note"), f"{path.name}: reference row {i} leaves {unchecked} unchecked " \
                                                     "without a note saying why"
            printed = {k: ref[k] for k in COSTS if k in ref and k not in unchecked}
            if not printed:
                continue
            cells = [c for c in study.cells() if _matches(c, ref)]
            cases.append(pytest.param(path.name, cells, printed, truncated, id=f"{path.stem}-{i}"))
    return cases


CASES = _cases()


@pytest.mark.parametrize("path", SEARCHES, ids=[p.stem for p in SEARCHES])
def test_a_study_without_a_base_is_a_search_shown_in_the_readme(path: Path) -> None:
    study = load_study(path)
    assert not study.is_grid and study.space.params, f"{path.name}: a study without a base must be a search"
    assert f"ablate run studies/{path.name}" in (ROOT / "README.md").read_text()


def test_every_study_has_a_checked_cost_or_says_why() -> None:
    checked = {c.values[0] for c in CASES}
    for path in STUDIES:
        study = load_study(path, check=False)
        assert study.base and study.paper_resolution, f"{path.name}: paper studies name a base and paper_resolution"
        if path.name not in checked:
            assert path.name.startswith("lavit_"), f"{path.name}: no reference row prints a cost"


@pytest.mark.parametrize(("name", "cells", "printed", "truncated"), CASES)
def test_paper_scale_costs_match_the_paper(name: str, cells: list, printed: dict, truncated: set) -> None:
    assert len(cells) == 1, f"{name}: a reference row must match exactly one grid row, matched {len(cells)}"
    study = load_study(ROOT / "studies" / name, check=False)
    costs = measure_costs(paper_arch(study, cells[0]))
    if "gflops_paper" in costs:  # measure_costs of the paper arch itself: its own size is the paper's
        costs.pop("gflops_paper")
    for key, value in printed.items():
        ours = costs[key]
        if key in truncated:
            assert value <= ours < value + 0.1 + 1e-9, f"{name} {cells[0]}: {key} {ours:.3f}, printed {value} (truncated)"
        else:
            tolerance = max(COSTS[key] * value, _half_unit(value))
            assert abs(ours - value) <= tolerance + 1e-9, \
                f"{name} {cells[0]}: {key} {ours:.3f}, printed {value} (tolerance {tolerance:.3g})"


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
@pytest.mark.parametrize("scale", ["proxy", "paper"])
def test_study_validates_at_both_scales(path: Path, scale: str) -> None:
    study = load_study(path, scale=scale)
    if scale == "paper":
        assert study.data.image_size == study.paper_resolution
        assert all(study.candidate(c) == study.paper_candidate(c) for c in study.cells())
    else:
        assert study.train.epochs <= 5 and study.data.image_size <= 96, "proxy runs stay laptop-sized"


def _readme_block(stem: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"<!-- study: {stem} -->")
    return text[start:text.index("<!-- /study -->", start) + len("<!-- /study -->")]


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_readme_shows_every_study_with_its_command(path: Path) -> None:
    block = _readme_block(path.stem)
    assert f"ablate run studies/{path.name} && ablate report studies/{path.name}" in block
    study = load_study(path, check=False)
    assert f"**{study.description}**" in block and "Accuracy: proxy scale" in block, "run benchmarks/paper_tables.py"


def test_readme_demo_table_is_what_the_command_prints(tmp_path: Path) -> None:
    """The demo study, re-run from an empty database, prints its README table byte for byte:
    the tables are command output, and the proxy runs are seeded and repeatable."""
    import importlib.util
    import subprocess
    import sys

    spec = importlib.util.spec_from_file_location("paper_tables", ROOT / "benchmarks" / "paper_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    storage = f"sqlite:///{tmp_path / 'demo.db'}"
    cli = [sys.executable, "-m", "ablate"]
    subprocess.run([*cli, "run", "studies/window_size.yaml", "--storage", storage, "-q"], cwd=ROOT, check=True,
                   capture_output=True)
    report = subprocess.run([*cli, "report", "studies/window_size.yaml", "--storage", storage], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    assert tables.block("window_size", report) == _readme_block("window_size")
