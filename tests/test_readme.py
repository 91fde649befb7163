"""The README holds: the commands it shows exist with the flags it gives, the files it names
exist, the commands that run offline and quickly run (against a database made here), the
numbers of its cost tables are what `ablate profile` prints, and its Python example runs.

The README opens with exactly two commands, and CI runs the second one verbatim.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ABLATE = str(Path(sys.executable).with_name("ablate"))


def _readme_commands() -> list[str]:
    head = README.split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", head, flags=re.S)]


def test_readme_starts_with_two_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    setup_demo, setup_test = commands
    assert "ablate run studies/window_size.yaml" in setup_demo
    assert "pytest" in setup_test
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert setup_test in ci
    assert (ROOT / "studies" / "window_size.yaml").exists()


def _bash_lines() -> list[str]:
    return [line.strip() for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S)
            for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def ablate_commands() -> list[list[str]]:
    """Every ``ablate ...`` command of the README's bash blocks, as argument lists (comments
    dropped; ``a && b``, ``a | b`` and ``a; b`` give one command each)."""
    found = []
    for line in _bash_lines():
        tokens = shlex.split(line, comments=True)
        current: list[str] = []
        for tok in tokens + ["&&"]:
            if tok in ("&&", "||", "|", ";"):
                if current and Path(current[0]).name == "ablate":
                    found.append(current[1:])
                current = []
            else:
                current.append(tok)
    return found


def _click_root():
    import typer.main

    from ablate.cli import app

    return typer.main.get_command(app)


def _is_group(cmd) -> bool:
    """A command with subcommands (typer vendors its own click: no isinstance against click's)."""
    return hasattr(cmd, "list_commands") and hasattr(cmd, "get_command")


def _resolve(args: list[str]):
    """(click command, its name path, the remaining args) for ``ablate ARGS``."""
    cmd, names, rest = _click_root(), [], list(args)
    while _is_group(cmd) and rest and not rest[0].startswith("-"):
        sub = cmd.get_command(None, rest[0])  # type: ignore[arg-type]
        assert sub is not None, f"`ablate {' '.join(args)}`: no command {rest[0]!r} under `ablate {' '.join(names)}`"
        cmd, names, rest = sub, names + [rest.pop(0)], rest
    return cmd, names, rest


def test_the_readme_shows_commands():
    commands = ablate_commands()
    assert len(commands) >= 30
    named = {c[0] for c in commands if c}
    assert {"run", "show", "report", "validate", "profile", "export", "schema", "dashboard", "bench", "data"} <= named


@pytest.mark.parametrize("args", ablate_commands(), ids=lambda a: " ".join(a)[:60])
def test_every_readme_command_and_flag_exists(args):
    cmd, names, rest = _resolve(args)
    assert not _is_group(cmd), f"`ablate {' '.join(args)}` names a group, not a command"
    opts = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
    for tok in rest:
        if tok.startswith("-") and not re.fullmatch(r"-\d[\d.e-]*", tok):
            assert tok.split("=", 1)[0] in opts, f"`ablate {' '.join(args)}`: {tok} is not an option of " \
                                                f"`ablate {' '.join(names)}` ({', '.join(sorted(opts))})"


def test_every_flag_the_prose_gives_a_command_exists():
    """``ablate CMD ... --flag`` written in the prose (inline code), not only in the bash blocks."""
    checked = 0
    for snippet in re.findall(r"`(ablate [^`]+)`", README):
        try:
            tokens = shlex.split(snippet)
        except ValueError:
            continue
        cmd, names = _click_root(), []
        for tok in tokens[1:]:
            sub = cmd.get_command(None, tok) if _is_group(cmd) else None
            if sub is None:
                break
            cmd, names = sub, names + [tok]
        opts = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
        for tok in tokens[1:]:
            flag = tok.strip("[]").split("=", 1)[0]
            if flag.startswith("--"):
                checked += 1
                assert flag in opts, f"README `{snippet}`: {flag} is not an option of `ablate {' '.join(names)}`"
    assert checked >= 10


_PATH = re.compile(r"(?<![\w/.-])((?:studies|search_spaces|schemas|benchmarks|scripts|dashboards|tests|ablate)"
                   r"/[\w./*-]*\.(?:yaml|yml|py|json|md|txt))")


def test_every_file_the_readme_names_exists():
    named = sorted(set(_PATH.findall(README)))
    assert len(named) >= 20
    missing = [p for p in named if not glob.glob(str(ROOT / p))]
    assert not missing, missing


def _readme_studies() -> list[str]:
    return sorted({t for c in ablate_commands() for t in c if re.fullmatch(r"studies/[\w-]+\.ya?ml", t)})


def test_validate_accepts_every_study_the_readme_names():
    studies = _readme_studies()
    assert "studies/window_size.yaml" in studies and "studies/yolo_fla.yaml" in studies
    out = subprocess.run([ABLATE, "validate", *studies], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("ok: ") == len(studies)


def _help_targets() -> list[list[str]]:
    seen, out = set(), []
    for args in ablate_commands():
        _, names, _ = _resolve(args)
        if tuple(names) not in seen:
            seen.add(tuple(names))
            out.append(names)
    return out


def test_help_of_every_command_the_readme_names():
    for names in _help_targets():
        out = subprocess.run([ABLATE, *names, "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert out.returncode == 0 and "Usage" in out.stdout, (names, out.stderr[-1000:])


def _run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([ABLATE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_quick_offline_commands_run_as_the_readme_shows():
    """``schema``, ``profile`` (preset, list, study) and ``--dry-run`` of the demo, verbatim."""
    quick = [c for c in ablate_commands()
             if c[0] in ("schema", "profile") or (c[0] == "run" and "--dry-run" in c and "--scale" not in c)]
    assert len(quick) >= 5
    for args in quick:
        out = _run(args, ROOT)
        assert out.returncode == 0, (args, out.stderr[-2000:])
        assert out.stdout.strip(), args
        if "--format" in args and args[args.index("--format") + 1] == "json":
            json.loads(out.stdout)


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory) -> Path:
    """A folder like the repository's for the README's commands: ``studies/`` and a demo
    database (generated trials under the demo study's name) where the demo's ``storage:`` points."""
    from ablate.testing.fake_study import write_fake_study

    where = tmp_path_factory.mktemp("readme")
    (where / "studies").symlink_to(ROOT / "studies")
    (where / "search_spaces").symlink_to(ROOT / "search_spaces")
    (where / "runs").mkdir()
    write_fake_study(f"sqlite:///{where / 'runs' / 'focal-window-size.db'}", 24, name="focal-window-size")
    return where


def test_show_and_report_run_as_the_readme_shows(demo_folder):
    readers = [c for c in ablate_commands() if c[0] in ("show", "report") and "studies/window_size.yaml" in c]
    assert len(readers) >= 5
    for args in readers:
        out = _run(args, demo_folder)
        assert out.returncode == 0, (args, out.stderr[-2000:])
        if "-o" in args:
            assert (demo_folder / args[args.index("-o") + 1]).stat().st_size > 0
        else:
            assert out.stdout.strip(), args
    html = _run(["report", "studies/window_size.yaml", "-o", "demo.html"], demo_folder)
    assert html.returncode == 0, html.stderr[-2000:]
    page = (demo_folder / "demo.html").read_text(encoding="utf-8")
    assert str(demo_folder) not in page and str(ROOT) not in page and page.count("Plotly.newPlot(") == 1


def _table_after(marker: str) -> list[list[str]]:
    start = README.index(marker)
    rows = []
    for line in README[start:].splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows[2:]  # header and rule


def test_the_preset_table_is_what_profile_prints():
    """``ablate profile PRESET --resolution 224``'s count (``measure.profile`` of the built
    model), on the meta device: the same count without memory or init
    (tests/models/test_models.py checks meta == real)."""
    import torch

    from ablate.measure import profile
    from ablate.models import build_model, resolve_architecture

    rows = _table_after("Presets (`ablate profile --list`)")
    assert len(rows) >= 15
    for row in rows:
        name = row[0].strip("`")
        ours_params, ours_gflops = row[1].split(" / ")[0], row[2].split(" / ")[0]
        with torch.device("meta"):
            got = profile(build_model(resolve_architecture({"preset": name, "img_size": 224})), 224)
        assert ours_params == f"{got['params_m']:.2f}M", (name, ours_params, got)
        assert ours_gflops == f"{got['gflops']:.2f}", (name, ours_gflops, got)


def test_the_yolo_flops_table_is_what_profile_prints():
    from ablate.cli.profile import _profile_rows

    rows = _table_after("FLOPs at 640 px (`ablate profile`)")
    assert len(rows) >= 4
    for row in rows:
        name = row[0].strip("`")
        got = _profile_rows(name, None)[0]
        assert row[1] == f"{got['params_m']:.3f}M" and row[2] == f"{got['gflops']:.3f}", (name, row, got)
        assert row[3] == f"{got['gflops_ultralytics']:.3f}", (name, row, got)


def _python_example() -> str:
    section = README.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_the_python_example_runs_as_shown(tmp_path):
    """The README's Python block, verbatim, from a folder with ``studies/``: a real run
    through Ray (4 one-epoch trials on digits), then the results as DataFrames."""
    code = _python_example()
    assert "ablate.load_study(" in code and "ablate.run_study(" in code and "ablate.read_results(" in code
    (tmp_path / "studies").symlink_to(ROOT / "studies")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "4 new trials {'COMPLETE': 4}"
    shown = README.split("\n## Python API\n", 1)[1].split("It prints", 1)[1]
    printed = re.search(r"```\n(.*?)```", shown, flags=re.S).group(1).splitlines()
    assert [line.split()[:2] for line in lines[1:6]] == [line.split()[:2] for line in printed[1:6]]
    assert lines[6].split() == printed[6].split()  # the configs header
    assert [line.split()[:2] for line in lines[7:9]] == [line.split()[:2] for line in printed[7:9]]
    assert (tmp_path / "runs" / "api-demo.db").exists()


def test_export_examples_name_a_study_export_accepts():
    """A model YAML comes from a detection study, a .safetensors model file from a classification one."""
    from ablate.study import load_study

    exports = [c for c in ablate_commands() if c[0] == "export"]
    assert {a[a.index("-o") + 1].rsplit(".", 1)[-1] for a in exports} == {"yaml", "safetensors"}
    for args in exports:
        study = next(a for a in args if a.endswith((".yaml", ".yml")) and a.startswith("studies/"))
        out = args[args.index("-o") + 1]
        task = load_study(ROOT / study, check=False).task
        assert task == ("detect" if out.endswith((".yaml", ".yml")) else "classify"), args


def test_every_python_name_the_readme_gives_exists():
    """``ablate.x.y`` in the prose (a module, or a name in one) imports: the README's
    Python names follow the code."""
    import importlib

    names = sorted(set(re.findall(r"`(ablate(?:\.\w+)+)", README)))
    assert "ablate.load_study" in names and "ablate.read_results" in names
    missing = []
    for name in names:
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append(name)
            break
        else:
            missing.append(name)
    assert not missing, missing


def test_the_synthetic_set_command_runs_as_shown(tmp_path):
    line = next(c for c in ablate_commands() if c[:2] == ["data", "synth-det"] and "--train" in c)
    out = _run(line, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[0].endswith("data/shapes/data.yaml")
    assert (tmp_path / "data" / "shapes" / "data.yaml").exists()
