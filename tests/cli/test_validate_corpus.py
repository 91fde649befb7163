"""`ablate validate` and `ablate run --dry-run` give one verdict, over a corpus of studies.

Every shipped study, and ~80 mutations of them (a key deleted or misspelt, a wrong type,
a number out of range, an unknown attention family or option, an infeasible window, a bad
objective, storage URL or data path, a baseline outside the grid, ...), goes through both
commands in-process at each scale. They must agree on the exit code and, for bad input,
print the same single ``error:`` line naming the file; neither may write anything.

Each case also states the verdict it expects per scale, so a check that quietly stops
running turns a mutation into an ``ok`` and fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ablate.cli import app

ROOT = Path(__file__).parents[2]
STUDIES = sorted(ROOT.joinpath("studies").glob("*.yaml"))
SCALES = ("proxy", "paper")

#: What a case expects: ok at both scales, an error at both, or an error at one scale only
#: (the `proxy:` overrides change what trains at proxy scale, and only there).
OK, ERROR, PROXY_ONLY, PAPER_ONLY = "ok", "error", "proxy-error", "paper-error"


@dataclass(frozen=True)
class Case:
    id: str
    study: str  # a file stem under studies/
    edit: Callable[[dict, Path], Any] | None  # mutates the loaded YAML in place; Path: a scratch folder
    expect: str
    text: str | None = None  # the file's whole text instead (YAML that does not parse, ...)


def _set(path: str, value: Any) -> Callable[[dict, Path], None]:
    """An edit that sets ``a.b.c`` (creating mappings on the way)."""
    *head, last = path.split(".")

    def edit(d: dict, _: Path) -> None:
        for key in head:
            d = d.setdefault(key, {})
        d[last] = value
    return edit


def _del(path: str) -> Callable[[dict, Path], None]:
    *head, last = path.split(".")

    def edit(d: dict, _: Path) -> None:
        for key in head:
            d = d[key]
        del d[last]
    return edit


def _rename(path: str, new: str) -> Callable[[dict, Path], None]:
    *head, last = path.split(".")

    def edit(d: dict, _: Path) -> None:
        for key in head:
            d = d[key]
        d[new] = d.pop(last)
    return edit


def _both(*edits: Callable[[dict, Path], None]) -> Callable[[dict, Path], None]:
    def edit(d: dict, here: Path) -> None:
        for e in edits:
            e(d, here)
    return edit


def _storage_folder(d: dict, here: Path) -> None:
    (here / "a-folder.db").mkdir()
    d["storage"] = f"sqlite:///{here / 'a-folder.db'}"


def _storage_not_sqlite(d: dict, here: Path) -> None:
    (here / "notes.db").write_text("not a database\n")
    d["storage"] = f"sqlite:///{here / 'notes.db'}"


def _storage_under_a_file(d: dict, here: Path) -> None:
    (here / "plain-file").write_text("x\n")
    d["storage"] = f"sqlite:///{here / 'plain-file' / 'x.db'}"


def _imagefolder(d: dict, here: Path) -> None:
    from PIL import Image

    for cls in ("a", "b"):  # validate checks that every class folder holds an image
        (here / "images" / cls).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(here / "images" / cls / "0.png")
    d["data"] = {"name": "imagefolder", "path": "images"}


def _imagefolder_empty_class(d: dict, here: Path) -> None:
    _imagefolder(d, here)
    (here / "images" / "c").mkdir()


def _row(i: int, key: str, value: Any) -> Callable[[dict, Path], None]:
    def edit(d: dict, _: Path) -> None:
        d["grid"][i][key] = value
    return edit


MUTATIONS: list[Case] = [
    # still valid
    Case("ok-repeats-2", "window_size", _set("repeats", 2), OK),
    Case("ok-no-reference", "focal_levels", _del("reference"), OK),
    Case("ok-no-data-section", "window_size", _del("data"), OK),
    Case("ok-no-objectives", "focal_shift", _del("objectives"), OK),  # default: the task's metric
    Case("ok-imagefolder", "window_size", _imagefolder, OK),
    Case("data-imagefolder-class-without-images", "window_size", _imagefolder_empty_class, ERROR),
    Case("ok-absolute-storage", "focal_depth", lambda d, here: d.update(storage=f"sqlite:///{here}/sub/x.db"), OK),
    Case("ok-tpe-sampler", "attention_search", _set("sampler", {"name": "tpe", "seed": 1}), OK),
    Case("ok-random-sampler", "attention_search", _set("sampler", {"name": "random", "seed": 0}), OK),
    Case("ok-trials-under-grid", "flatten_focusing", _set("trials", 3), OK),
    # a required key deleted, or the document is not a study
    Case("missing-name", "window_size", _del("name"), ERROR),
    Case("missing-trials-sampled", "attention_search", _del("trials"), ERROR),
    Case("missing-space-sampled", "attention_search", _del("space"), ERROR),
    Case("empty-file", "window_size", None, ERROR, text=""),
    Case("a-list", "window_size", None, ERROR, text="- name: x\n- grid: {}\n"),
    Case("invalid-yaml", "window_size", None, ERROR, text="name: [unclosed\ngrid: {window_size: [7, 14]}\n"),
    Case("scale-in-file", "window_size", _set("scale", "paper"), ERROR),
    # misspelt keys
    Case("misspelt-top", "window_size", _rename("train", "trian"), ERROR),
    Case("misspelt-data", "window_size", _set("data", {"nmae": "digits"}), ERROR),
    Case("misspelt-proxy-arch", "window_size", _rename("proxy.embed_dim", "embed_dimm"), ERROR),
    Case("misspelt-proxy-grid", "window_size", _rename("proxy.grid.window_size", "windw_size"), ERROR),
    Case("misspelt-grid-key", "flatten_dwc_kernel", _both(_set("grid", {"kernel_sise": [3, 5, 7]}),
                                                          _set("baseline", {"kernel_sise": 5})), ERROR),
    Case("misspelt-objective-key", "window_size", _set("objectives", [{"nmae": "top1"}]), ERROR),
    # wrong types
    Case("type-epochs", "window_size", _set("train.epochs", "three"), PAPER_ONLY),  # the proxy sets 3
    Case("type-repeats", "window_size", _set("repeats", "many"), ERROR),
    Case("type-grid", "window_size", _set("grid", "window_size"), ERROR),
    Case("type-storage", "window_size", _set("storage", 3), ERROR),
    Case("type-space", "attention_search", _set("space", 7), ERROR),
    Case("type-reference", "window_size", _set("reference", "the paper"), ERROR),
    Case("type-fixed", "window_size", _set("fixed", ["attention", "focal"]), ERROR),
    # numbers out of range
    Case("range-batch-size", "window_size", _set("train.batch_size", 0), PAPER_ONLY),  # the proxy sets 64
    Case("range-proxy-batch-size", "window_size", _set("proxy.batch_size", 0), ERROR),  # `proxy:` is read at both
    Case("range-val-fraction", "window_size", _set("data.val_fraction", 1.5), ERROR),
    Case("range-cpu", "window_size", _set("resources.cpu", 0), ERROR),
    Case("range-seed", "window_size", _set("seed", -1), ERROR),
    Case("range-repeats", "window_size", _set("repeats", 0), ERROR),
    Case("range-proxy-repeats", "window_size", _set("proxy.repeats", 0), ERROR),
    Case("range-paper-resolution", "window_size", _set("paper_resolution", 0), ERROR),
    Case("range-trials-zero", "attention_search", _set("trials", 0), ERROR),
    Case("range-trials-over-grid", "window_size", _set("trials", 5), ERROR),
    Case("range-max-concurrent", "window_size", _set("max_concurrent", 0), ERROR),
    Case("range-proxy-image-size", "window_size", _set("proxy.image_size", 2), ERROR),
    Case("range-warmup-paper", "window_size", _set("train.warmup_epochs", 400), PAPER_ONLY),  # proxy: 1 of 3
    Case("range-warmup-proxy", "window_size", _set("proxy.warmup_epochs", 5), PROXY_ONLY),  # paper: 20 of 300
    Case("range-grace-period", "attention_search", _set("scheduler", {"name": "asha", "grace_period": 0}), ERROR),
    # unknown attention family or option, in fixed, grid, proxy and space
    Case("unknown-base", "window_size", _set("base", "focal_tiyn"), ERROR),
    Case("unknown-attention-fixed", "window_size", _set("fixed", {"attention": "focl"}), ERROR),
    Case("unknown-option-fixed", "window_size", _set("fixed", {"not_an_option": 3}), ERROR),
    Case("reserved-fixed", "window_size", _set("fixed", {"img_size": 64}), ERROR),
    Case("unknown-attention-grid-row", "flatten_deit_modules", _row(0, "attention", "flaten"), ERROR),
    Case("unknown-option-grid-row", "flatten_window", _row(1, "windows", [7, 7, 7, 7]), ERROR),
    Case("unknown-attention-yolo", "yolo_fla", _row(1, "attention", "flatn"), ERROR),
    Case("unknown-placement-yolo", "yolo_fla", _row(2, "placement", "head"), ERROR),
    Case("unknown-option-space", "attention_search",
         _set("space", {"fixed": {"attention": "focal"}, "params": {"not_an_option": {"choice": [1, 2]}}}), ERROR),
    Case("unknown-attention-space", "attention_search",
         _set("space", {"params": {"attention": {"choice": ["softmax", "focl"]}}}), ERROR),
    # infeasible candidates
    Case("infeasible-paper-window", "window_size", _set("grid.window_size", [7, 512]), ERROR),  # checked at both
    Case("infeasible-proxy-window", "window_size", _set("proxy.grid.window_size", [2, 64]), PROXY_ONLY),
    Case("infeasible-proxy-heads", "focal_levels", _set("proxy.num_heads", 3), PROXY_ONLY),
    Case("infeasible-paper-heads", "focal_levels", _set("fixed", {"num_heads": 5}), ERROR),
    Case("infeasible-regions", "biformer_regions", _set("grid.n_win", [4, 7, 15]), ERROR),
    # objectives
    Case("objective-unknown", "window_size", _set("objectives", [{"name": "top2", "direction": "maximize"}]), ERROR),
    Case("objective-direction", "window_size", _set("objectives", [{"name": "top1", "direction": "up"}]), ERROR),
    Case("objective-other-task", "window_size", _set("objectives", [{"name": "map50_95"}]), ERROR),
    Case("objective-needs-paper-resolution", "attention_search", _set("objectives", ["top1", "gflops_paper"]), ERROR),
    Case("objective-duplicate", "window_size", _set("objectives", ["top1", "top1"]), ERROR),
    Case("objective-empty", "window_size", _set("objectives", []), ERROR),
    # proxy grid
    Case("proxy-grid-short", "window_size", _set("proxy.grid.window_size", [2]), ERROR),
    Case("proxy-grid-long", "focal_shift", _set("proxy.grid.shift_size", [0, 1, 1]), ERROR),
    Case("proxy-grid-rows-short", "flatten_stages", lambda d, _: d["proxy"]["grid"].pop(), ERROR),
    # space
    Case("space-missing", "attention_search", _set("space", "no/such/space.yaml"), ERROR),
    Case("space-nothing-to-search", "attention_search",
         _set("space", {"fixed": {"attention": "focal"}, "params": {}}), ERROR),
    # storage
    Case("storage-no-scheme", "window_size", _set("storage", "runs/x.db"), ERROR),
    Case("storage-unknown-dialect", "window_size", _set("storage", "nosuchdb://127.0.0.1/x"), ERROR),
    Case("storage-unknown-driver", "window_size", _set("storage", "postgresql+nosuchdriver://127.0.0.1/x"), ERROR),
    Case("storage-sqlite-two-slashes", "window_size", _set("storage", "sqlite://runs/x.db"), ERROR),
    Case("storage-in-memory", "window_size", _set("storage", "sqlite:///:memory:"), ERROR),
    Case("storage-in-memory-empty", "window_size", _set("storage", "sqlite://"), ERROR),
    Case("storage-port-out-of-range", "window_size", _set("storage", "postgresql://u:pw@127.0.0.1:99999/x"), ERROR),
    Case("storage-is-a-folder", "window_size", _storage_folder, ERROR),
    Case("storage-not-sqlite", "window_size", _storage_not_sqlite, ERROR),
    Case("storage-under-a-file", "window_size", _storage_under_a_file, ERROR),
    # data
    Case("data-path-missing", "window_size", _set("data", {"name": "imagefolder", "path": "no/such/dir"}), ERROR),
    Case("data-path-unused", "window_size", _set("data", {"name": "digits", "path": "."}), ERROR),
    Case("data-unknown", "window_size", _set("data", {"name": "imagenet"}), ERROR),
    Case("data-other-task", "yolo_fla", _set("data", {"name": "digits"}), ERROR),
    Case("data-yolo-yaml-missing", "yolo_fla", _set("data", {"name": "yolo", "path": "no/such/data.yaml"}), ERROR),
    # baseline
    Case("baseline-not-in-grid", "window_size", _set("baseline", {"window_size": 9}), ERROR),
    Case("baseline-unknown-label", "flatten_stages", _set("baseline", "1+5"), ERROR),
    Case("baseline-sampled", "attention_search", _set("baseline", {"attention": "focal"}), ERROR),
    # everything else
    Case("name-characters", "window_size", _set("name", "bad name!"), ERROR),
    Case("task-unknown", "window_size", _set("task", "segment"), ERROR),
    Case("recipe-unknown", "window_size", _set("train.recipe", "adamw"), ERROR),
    Case("recipe-detect-deit", "yolo_fla", _set("train.recipe", "deit"), ERROR),
    Case("sampler-unknown", "attention_search", _set("sampler", {"name": "bayes"}), ERROR),
    Case("sampler-population-not-nsga2", "attention_search", _set("sampler", {"name": "tpe", "population_size": 8}),
         ERROR),
    Case("grid-empty-values", "window_size", _both(_set("grid.window_size", []), _del("proxy.grid")), ERROR),
]

CASES: list[Case] = [Case(f"shipped-{p.stem}", p.stem, None, OK) for p in STUDIES] + MUTATIONS


def write_case(case: Case, folder: Path) -> Path:
    """The case's study file in ``folder`` (paths in it made absolute against studies/)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{case.id}.yaml"
    if case.text is not None:
        path.write_text(case.text)
        return path
    source = ROOT / "studies" / f"{case.study}.yaml"
    d = yaml.safe_load(source.read_text())
    if isinstance(d.get("space"), str):
        d["space"] = str((source.parent / d["space"]).resolve())
    if case.edit is not None:
        case.edit(d, folder)
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def _cheap_costs(study, params):
    """Stands in for FLOP counting (seconds per paper-scale model on a CPU) in the dry run's
    table. Only a study that passed the check reaches it, so every verdict is still decided
    by the real check; only the numbers in the table are fake."""
    return {"params_m": 1.0, "gflops": 0.5, "params_m_paper": 2.0, "gflops_paper": 1.5, "gflops_ultralytics": 3.0}


def _invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
    return result.exit_code, result.stdout, result.stderr


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


@pytest.fixture()
def cheap_costs(monkeypatch):
    import ablate.run.trial

    monkeypatch.setattr(ablate.run.trial, "study_costs", _cheap_costs)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_validate_and_dry_run_agree(case: Case, tmp_path, monkeypatch, cheap_costs):
    from ablate.study import study_from_dict, study_to_dict
    from ablate.study.load import check_study

    path = write_case(case, tmp_path / "study")
    cwd = tmp_path / "cwd"  # relative storage (sqlite:///runs/x.db) resolves here
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = _files(tmp_path)

    verdicts = {}
    for scale in SCALES:
        v_code, v_out, v_err = _invoke("validate", str(path), "--scale", scale)
        r_code, r_out, r_err = _invoke("run", str(path), "--dry-run", "--scale", scale)
        assert v_code == r_code, (scale, v_err, r_err)
        assert v_code in (0, 2), (scale, v_out, v_err)
        if v_code:
            lines = v_err.splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), v_err
            assert r_err == v_err and not r_out and not v_out, (r_out, r_err)
        else:
            assert v_out.startswith(f"ok: {path}: ") and not v_err and not r_err, (v_err, r_err)
            assert "candidate(s), not trained" in r_out
            # The Ray boundary: each trial re-validates the stored spec, which must read back equal.
            study = check_study(path, scale=scale)
            assert study_from_dict(study_to_dict(study), check=False) == study
        verdicts[scale] = v_code, v_err

    # Both scales (the default): the first scale that fails, with its line; else one ok line.
    code, out, err = _invoke("validate", str(path))
    failing = [verdicts[s] for s in SCALES if verdicts[s][0]]
    assert (code, err) == (failing[0] if failing else (0, "")), (code, err)
    assert len((out + err).splitlines()) == 1

    assert _files(tmp_path) == before, "validate or the dry run wrote a file"
    expect = {(0, 0): OK, (2, 2): ERROR, (2, 0): PROXY_ONLY, (0, 2): PAPER_ONLY}[
        verdicts["proxy"][0], verdicts["paper"][0]]
    assert expect == case.expect, {s: verdicts[s][1] for s in SCALES}


def test_the_corpus_is_large_and_varied():
    assert len(STUDIES) >= 10 and len(MUTATIONS) >= 40
    assert {c.expect for c in CASES} == {OK, ERROR, PROXY_ONLY, PAPER_ONLY}
    assert len({c.id for c in CASES}) == len(CASES)


def test_validate_several_files_reports_each_and_exits_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = write_case(CASES[0], tmp_path / "s")
    bad = write_case(next(c for c in MUTATIONS if c.id == "range-warmup-paper"), tmp_path / "s")
    code, out, err = _invoke("validate", str(good), str(bad), "--scale", "proxy")
    assert code == 0 and out.count("ok: ") == 2 and not err
    code, out, err = _invoke("validate", str(good), str(bad))
    assert code == 2 and out.count("ok: ") == 1 and err.count("error: ") == 1 and str(bad) in err


def test_a_bad_storage_override_fails_the_dry_run_as_it_would_fail_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_case(CASES[0], tmp_path / "s")
    code, out, err = _invoke("run", str(path), "--dry-run", "--storage", "nosuchdb://127.0.0.1/x")
    assert code == 2 and not out and err.startswith(f"error: {path}: --storage: ") and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_the_dry_run_proposes_what_the_runner_proposes(tmp_path, monkeypatch):
    """A sampled study's dry run asks the runner's sampler (make_sampler): its candidates are the
    first ones a run on an empty storage would train."""
    import dataclasses

    import ablate.run.trial
    from ablate.run.optuna_study import open_optuna_study
    from ablate.run.searcher import StudySearcher
    from ablate.study.load import check_study

    monkeypatch.chdir(tmp_path)
    path = ROOT / "studies" / "attention_search.yaml"  # NSGA-II
    seen: list[dict] = []
    monkeypatch.setattr(ablate.run.trial, "study_costs", lambda study, params: seen.append(dict(params)) or
                        _cheap_costs(study, params))
    code, out, err = _invoke("run", str(path), "--dry-run", "--trials", "4")
    assert code == 0 and "4 candidate(s), not trained" in out, err
    assert not any(tmp_path.iterdir())  # the dry run wrote nothing
    from ablate.storage import open_storage

    url = f"sqlite:///{tmp_path / 'runner.db'}"
    study = dataclasses.replace(check_study(path), repeats=1, storage=url)
    storage = open_storage(url, create=True)
    searcher = StudySearcher(study, open_optuna_study(study, url, storage=storage), 4, storage=storage)
    assert seen == [searcher.suggest(str(i))["params"] for i in range(4)]


@pytest.mark.slow
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_shipped_studies_dry_run_with_real_costs(path: Path, scale: str, tmp_path, monkeypatch):
    """The dry run without the cost stub (minutes: it counts the FLOPs of every paper-scale model):
    validate's ok holds for the whole dry run, and no candidate of a shipped study is infeasible."""
    monkeypatch.chdir(tmp_path)
    code, out, err = _invoke("validate", str(path), "--scale", scale)
    assert code == 0, err
    code, out, err = _invoke("run", str(path), "--dry-run", "--scale", scale, "--trials", "3")
    assert code == 0 and "infeasible" not in out, (out, err)
    assert not any(tmp_path.iterdir())
