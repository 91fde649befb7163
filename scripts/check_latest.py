#!/usr/bin/env python3
"""Would a fresh, *unlocked* install of ablate pass its tests today?

The README's commands install the tested set in ``constraints.txt``, so an upstream
release cannot turn a fresh machine red overnight. This script looks ahead instead: it
builds a throw-away virtualenv with the newest versions that ``pyproject.toml``'s ranges
allow (no constraints), runs the fast test suite in it, and for every failing test names
the upgraded package whose locked version makes it pass again. Run it before refreshing the
lock (README, "Installs") and before raising an upper bound. It is not part of CI: it
downloads several GB and takes 15-30 minutes.

Usage::

    python3 scripts/check_latest.py                      # newest allowed versions
    python3 scripts/check_latest.py --pin optuna==5.0.0  # newest, except these
    python3 scripts/check_latest.py -k runner            # only tests matching -k
    python3 scripts/check_latest.py --keep /tmp/latest   # keep (and reuse) the venv

Exit status: 0 when the suite passes, 1 when a test fails (the report names it), 2 on bad
arguments or when the venv cannot be built.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"
#: How many failing tests are traced back to a package (each trace reinstalls packages).
MAX_TRACED = 10


def _normal(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(python: Path) -> dict[str, str]:
    """The lock's version of each package for the venv's Python (markers evaluated there)."""
    code = ("import json, sys\n"
            "from packaging.requirements import Requirement\n"
            "out = {}\n"
            "for line in open(sys.argv[1]):\n"
            "    line = line.split('#', 1)[0].strip()\n"
            "    if not line: continue\n"
            "    r = Requirement(line)\n"
            "    if r.marker is None or r.marker.evaluate():\n"
            "        out[r.name] = str(r.specifier).lstrip('=')\n"
            "print(json.dumps(out))\n")
    import json

    out = subprocess.run([str(python), "-c", code, str(LOCK)], check=True, capture_output=True, text=True).stdout
    return {_normal(k): v for k, v in json.loads(out).items()}


def installed_versions(python: Path) -> dict[str, str]:
    out = subprocess.run([str(python), "-m", "pip", "list", "--format", "freeze", "--exclude-editable"],
                         check=True, capture_output=True, text=True).stdout
    pairs = (line.split("==", 1) for line in out.splitlines() if "==" in line)
    return {_normal(name): version for name, version in pairs}


def direct_dependencies() -> list[str]:
    """The project's own requirements (pyproject.toml, with the test extra), in its order."""
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # 3.10: the two lists are plain quoted strings
        blocks = re.findall(r"^dependencies = \[(.*?)^\]", text, flags=re.S | re.M)
        blocks += re.findall(r"^test = \[(.*?)\]$", text, flags=re.M)
        reqs = [r for block in blocks for r in re.findall(r'"([^"]+)"', block)]
    else:
        project = tomllib.loads(text)["project"]
        reqs = list(project["dependencies"]) + list(project.get("optional-dependencies", {}).get("test", []))
    return [_normal(re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0]) for r in reqs]


def pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args], check=True)


def run_tests(python: Path, report: Path, select: list[str], keyword: str | None) -> list[str]:
    """Run the fast suite as CI does (inside a loopback-only network namespace where the
    machine allows it); return the node ids of the tests that failed or errored."""
    pytest = [str(python), "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider",
              f"--junitxml={report}", *select]
    if keyword:
        pytest += ["-k", keyword]
    env = dict(os.environ)
    command = pytest
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0:
        env["ABLATE_NETNS"] = "1"
        command = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *pytest]
    if report.exists():
        report.unlink()
    subprocess.run(command, cwd=ROOT, env=env)
    if not report.exists():
        return ["(pytest did not run: see its output above)"]
    failed = []
    for case in ET.parse(report).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            path = case.get("classname", "").replace(".", "/")
            failed.append(f"{path}.py::{case.get('name')}")
    return failed


def trace(python: Path, failed: list[str], changed: list[tuple[str, str, str]], report: Path) -> dict[str, str]:
    """For each failing test, the first upgraded package whose locked version makes it pass.

    Direct dependencies are tried first (the usual culprits), then the rest. Each try
    installs one locked version (pip may move what depends on it), reruns the failing
    tests, and restores the newest version.
    """
    culprits: dict[str, str] = {}
    todo = failed[:MAX_TRACED]
    for name, old, new in changed:
        if not todo:
            break
        print(f"\n--- does {name}=={old} (locked; installed {new}) make them pass?", flush=True)
        try:
            pip(python, f"{name}=={old}")
            still = set(run_tests(python, report, todo, None))
        except subprocess.CalledProcessError:
            still = set(todo)
        finally:
            pip(python, f"{name}=={new}")
        for test in [t for t in todo if t not in still]:
            culprits[test] = f"{name} {old} -> {new}"
        todo = [t for t in todo if t in still]
    for test in todo:
        culprits[test] = ("no single package: downgrading any one upgraded package alone does not fix it"
                          if changed else "every package is at its locked version: it fails with the lock too")
    return culprits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pin", action="append", default=[], metavar="REQ",
                        help="install this requirement instead of the newest (repeatable), e.g. optuna==5.0.0")
    parser.add_argument("--python", default=sys.executable, help="the Python to build the venv with")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="build the venv here and keep it (reused if present)")
    parser.add_argument("-k", dest="keyword", help="only tests matching this pytest -k expression")
    args = parser.parse_args(argv)

    venv = args.keep or Path(tempfile.mkdtemp(prefix="ablate-latest-")) / "venv"
    python = venv / "bin" / "python"
    try:
        if not python.exists():
            subprocess.run([args.python, "-m", "venv", str(venv)], check=True)
        print(f"installing the newest allowed versions into {venv} (no constraints) ...", flush=True)
        pip(python, "--upgrade", "--upgrade-strategy", "eager", "-e", f"{ROOT}[test]", *args.pin)
    except subprocess.CalledProcessError as err:
        print(f"check_latest: the unlocked install failed ({err}); that is itself the finding", file=sys.stderr)
        return 2

    locked, now = locked_versions(python), installed_versions(python)
    direct = direct_dependencies()
    changed = [(name, locked[name], now[name]) for name in now if name in locked and locked[name] != now[name]]
    changed.sort(key=lambda c: (c[0] not in direct, direct.index(c[0]) if c[0] in direct else 0, c[0]))
    new_packages = sorted(set(now) - set(locked) - {"pip", "setuptools", "wheel"})
    print("\ndifferent from the lock:" if changed else "\nevery package is at its locked version")
    for name, old, new in changed:
        print(f"  {name:<28} {old:>14} -> {new}{'  (direct)' if name in direct else ''}")
    if new_packages:
        print("not in the lock: " + ", ".join(f"{n}=={now[n]}" for n in new_packages))

    report = venv.parent / "latest-junit.xml"
    failed = run_tests(python, report, [], args.keyword)
    if not failed:
        which = f"the tests matching -k {args.keyword!r} pass" if args.keyword else "the fast suite passes"
        print(f"\ncheck_latest: {which} with these versions ({len(changed)} package(s) differ from the lock)")
        if not args.keep:
            shutil.rmtree(venv.parent, ignore_errors=True)
        return 0
    print(f"\n{len(failed)} test(s) fail with the newest versions; tracing up to {MAX_TRACED} of them ...")
    culprits = trace(python, failed, changed, report)
    print("\ncheck_latest: what broke")
    for test in failed:
        print(f"  {test}\n      {culprits.get(test, 'not traced (only the first ' + str(MAX_TRACED) + ' are)')}")
    if not args.keep:
        shutil.rmtree(venv.parent, ignore_errors=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
