"""Installs: ranges in the package metadata, one tested set in constraints.txt.

The fast tests check that the two agree and that the README and CI install the locked
set; the ``slow`` test builds a real virtualenv to show that a user's own torch and
torchvision are kept (it needs the package registry and several GB of disk).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).parents[1]
PYTHONS = ("3.10", "3.11", "3.12", "3.13")


def _metadata_requirements() -> list[Requirement]:
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: both lists are plain quoted strings
        blocks = re.findall(r"^dependencies = \[(.*?)^\]", text, flags=re.S | re.M)
        blocks += re.findall(r"^test = \[(.*?)\]$", text, flags=re.M)
        return [Requirement(r) for block in blocks for r in re.findall(r'"([^"]+)"', block)]
    project = tomllib.loads(text)["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]


def _lock() -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in (ROOT / "constraints.txt").read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def _locked_for(python: str) -> dict[str, Version]:
    env = dict(default_environment(), python_version=python, python_full_version=f"{python}.0",
               sys_platform="linux", platform_system="Linux", platform_machine="x86_64")
    out: dict[str, Version] = {}
    for req in _lock():
        if req.marker is None or req.marker.evaluate(env):
            (spec,) = req.specifier
            assert spec.operator == "==", f"constraints.txt must pin exactly: {req}"
            assert req.name.lower() not in out, f"constraints.txt pins {req.name} twice for Python {python}"
            out[req.name.lower()] = Version(spec.version)
    return out


def test_metadata_keeps_ranges_capped_below_an_untested_major():
    for req in _metadata_requirements():
        ops = {s.operator for s in req.specifier}
        assert "==" not in ops and "===" not in ops, f"pyproject.toml pins {req} exactly; keep a range"
        assert ">=" in ops and "<" in ops, f"pyproject.toml: {req} needs a lower bound and an upper bound"


@pytest.mark.parametrize("python", PYTHONS)
def test_lock_pins_every_requirement_inside_its_range(python):
    locked = _locked_for(python)
    for req in _metadata_requirements():
        name = req.name.lower()
        assert name in locked, f"constraints.txt has no {name} for Python {python}: refresh the lock"
        assert req.specifier.contains(locked[name]), \
            f"constraints.txt has {name}=={locked[name]} for Python {python}, outside pyproject's {req.specifier}"


def test_readme_and_ci_install_the_locked_set():
    text = (ROOT / "README.md").read_text().split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    assert len(commands) == 2
    for command in commands:
        assert re.search(r"pip install -c constraints\.txt -e (\.|'\.\[test\]') ", command), command


@pytest.mark.slow
def test_installing_ablate_keeps_a_users_torch_and_torchvision(tmp_path):
    """A venv with a working pair installed first, then ``pip install -e .`` (no constraints):
    the pair is unchanged and torchvision's compiled ops still run. The pair defaults to
    torch 2.14.1 + torchvision 0.29.1 (the lock has 0.29.2, the registry a newer torch);
    ``ABLATE_USER_TORCH="torch==2.9.1 torchvision==0.24.1"`` tries another."""
    pair = os.environ.get("ABLATE_USER_TORCH", "torch==2.14.1 torchvision==0.29.1").split()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")

    def versions() -> str:
        return subprocess.run([python, "-c", "import torch, torchvision; print(torch.__version__, "
                               "torchvision.__version__)"], check=True, capture_output=True, text=True).stdout

    subprocess.run([python, "-m", "pip", "install", "-q", *pair], check=True)
    before = versions()
    subprocess.run([python, "-m", "pip", "install", "-q", "-e", str(ROOT)], check=True)
    assert versions() == before
    nms = ("import torch, torchvision; b = torch.tensor([[0., 0, 10, 10], [1, 1, 11, 11]]); "
           "print(torchvision.ops.nms(b, torch.tensor([.9, .8]), 0.5).tolist())")
    assert subprocess.run([python, "-c", nms], check=True, capture_output=True, text=True).stdout.strip() == "[0]"
    assert subprocess.run([python, "-m", "ablate", "--version"], check=True, capture_output=True).returncode == 0


def _check_latest():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_latest", ROOT / "scripts" / "check_latest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_latest_reads_the_lock_and_the_direct_dependencies():
    check = _check_latest()
    assert check.direct_dependencies() == [r.name.lower() for r in _metadata_requirements()]
    locked = check.locked_versions(Path(sys.executable))  # markers evaluated by this Python
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert locked == {check._normal(k): str(v) for k, v in _locked_for(py).items()}


def test_check_latest_names_the_package_whose_locked_version_fixes_a_test(monkeypatch, tmp_path):
    """Each try installs one locked version and reruns what still fails; the first that
    makes a test pass is named for it, and every package is put back afterwards."""
    check = _check_latest()
    installed = {"optuna": "5.1.0", "numpy": "2.5.0", "ray": "2.61.0"}
    breaks = {"tests/a.py::test_x": ("optuna", "5.1.0"), "tests/b.py::test_y": ("ray", "2.61.0"),
              "tests/c.py::test_z": ("nothing", "")}

    def fake_pip(python, requirement):
        name, version = requirement.split("==")
        installed[name] = version

    def fake_tests(python, report, select, keyword):
        return [t for t in select if breaks[t][0] not in installed or installed[breaks[t][0]] == breaks[t][1]
                or breaks[t][0] == "nothing"]

    monkeypatch.setattr(check, "pip", fake_pip)
    monkeypatch.setattr(check, "run_tests", fake_tests)
    changed = [("numpy", "2.4.6", "2.5.0"), ("optuna", "5.0.0", "5.1.0"), ("ray", "2.60.0", "2.61.0")]
    culprits = check.trace(Path("python"), list(breaks), changed, tmp_path / "r.xml")
    assert culprits["tests/a.py::test_x"] == "optuna 5.0.0 -> 5.1.0"
    assert culprits["tests/b.py::test_y"] == "ray 2.60.0 -> 2.61.0"
    assert culprits["tests/c.py::test_z"].startswith("no single package")
    assert installed == {"optuna": "5.1.0", "numpy": "2.5.0", "ray": "2.61.0"}


def test_every_package_under_ablate_is_installed():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "ablate").rglob("__init__.py")}
    assert found | {"ablate.dashboards"} == listed


_SERVE_CSS = """
import sys, threading, urllib.request
sys.path[:0] = [sys.argv[1], sys.argv[2]]  # the installed wheel first, then the dependencies
import ablate.dashboards as d
assert d.__file__.startswith(sys.argv[1]), d.__file__
server = d.make_server(d.create_app(d.Sources([])), port=0)
threading.Thread(target=server.serve_forever, daemon=True).start()
with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/") as page:
    html = page.read().decode()
css = [part.split('"')[0] for part in html.split('href="')[1:] if ".css" in part.split('"')[0]]
with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}{css[0]}") as sheet:
    print(sheet.status, len(sheet.read()), css[0])
server.shutdown()
"""


def test_a_built_wheel_holds_only_ablate_and_serves_the_dashboards_css(tmp_path):
    """``pip wheel`` (offline: no build isolation), installed into a folder of its own and
    imported without the editable install: the dashboard serves its stylesheet."""
    import site
    import zipfile

    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                          str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("ablate-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"ablate", wheel.name.split("-py")[0] + ".dist-info"}
    assert "ablate/dashboards/assets/style.css" in names
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    run = subprocess.run([sys.executable, "-S", "-c", _SERVE_CSS, str(tmp_path / "site"), site.getsitepackages()[0]],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    status, size, path = run.stdout.split()
    assert status == "200" and int(size) > 100 and "style.css" in path
