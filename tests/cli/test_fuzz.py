"""Hostile input never gets past `ablate validate` as anything but one line and exit 2.

A seeded corpus of a few hundred files is made from every shipped study and search space:
each key deleted, retyped (string, list, mapping, null, boolean) or pushed out of range
(±1e12, 1e308, NaN, infinity, 2**64), plus YAML garbage (truncations, random bytes, tabs,
tags, unclosed brackets) and size and encoding attacks (alias and merge-key bombs, deep
nesting, a 6 MB file, UTF-16 with and without BOM, Latin-1, NUL and control characters).

Each file goes through `ablate validate` in-process. Every verdict is exit 0 or exit 2; an
exit 2 prints exactly one ``error:`` line naming the file and no traceback; nothing is
written (no database, no `runs/` folder). Out-of-range numbers and the attacks must be
refused. A sample of the refused files also goes through `ablate run`, which must refuse
them with the same line, and through a real `python -m ablate` process.
"""

from __future__ import annotations

import copy
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ablate.cli import app
from ablate.study.reference import REFERENCE_METRICS

ROOT = Path(__file__).parents[2]
STUDIES = sorted(ROOT.joinpath("studies").glob("*.yaml"))
SPACES = sorted(ROOT.joinpath("search_spaces").glob("*.yaml"))
SEED = 20261203

#: Values that make any key wrong or out of range (must be refused wherever they land).
HUGE: list[Any] = [10 ** 12, -10 ** 12, 1e308, -1e308, float("nan"), float("inf"), 2 ** 64]
#: Values that may happen to be valid for some keys (a string where a string is allowed).
RETYPE: list[Any] = ["x", -1, 0, 1.5, None, True, [], {}, [1, 2], {"a": 1}, "..", "../../etc/passwd", "${NOPE}"]

#: Where a huge number is allowed, with why: a search space's `when` lists values a param
#: applies for (a number nobody has only makes the param inactive); a reference row's grid
#: keys name the paper's configuration, which the study need not train (reports show it as
#: the paper's own row: display only, never built).



@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # "study" | "space"
    data: bytes
    must_fail: bool


def _leaves(d: Any, path: tuple = ()) -> Iterator[tuple]:
    if isinstance(d, dict):
        for k, v in d.items():
            yield path + (k,)
            yield from _leaves(v, path + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield path + (i,)
            yield from _leaves(v, path + (i,))


def _edit(d: Any, path: tuple, value: Any) -> Any:
    d = copy.deepcopy(d)
    target = d
    for p in path[:-1]:
        target = target[p]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return d


_DELETE = object()


def _dump(d: Any) -> bytes:
    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True).encode("utf-8")


def _huge_ok(path: tuple) -> bool:
    if "when" in path:
        return True
    return path[:2] == ("reference", "rows") and len(path) > 3 and path[3] not in (
        *REFERENCE_METRICS, "label", "note", "unchecked")


def _attacks(text: str, rng: random.Random) -> list[tuple[str, bytes]]:
    """Size, encoding and syntax attacks on one file's text."""
    laughs = "a: &a [" + ",".join(['"lol"'] * 9) + "]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(9))
    merge = "a: &a {x: 1, y: 2}\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} {{<<: [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]}\n" for i in range(9))
    body = text.encode("utf-8")
    cut = sorted(rng.sample(range(1, len(body)), 1))
    return [
        ("alias-bomb", (laughs + text).encode()),
        ("merge-bomb", (merge + text).encode()),
        ("recursive-alias", b"name: &a [*a]\n" + body),
        ("deep-nesting", b"name: " + b"[" * 100_000 + b"]" * 100_000 + b"\n"),
        ("six-megabytes", body + b"#" + b"x" * (6 * 2 ** 20) + b"\n"),
        ("utf-16-bom", text.encode("utf-16")),
        ("utf-16-le", text.encode("utf-16-le")),
        ("utf-16-be", text.encode("utf-16-be")),
        ("latin-1", ("description: caf\u00e9 \u00e0 la cr\u00e8me\n" + text).encode("latin-1", "replace")),
        ("nul-byte", body[: cut[0]] + b"\x00" + body[cut[0]:]),
        ("control-char", b"description: \"a\x01b\"\n" + body),
        ("escape-control", b"description: a\x1b[31mred\n" + body),
        ("tab-indent", body.replace(b"\n  ", b"\n\t", 1) if b"\n  " in body else b"a:\n\tb: 1\n"),
        ("duplicate-key", body + b"name: again\n"),
        ("python-tag", b"name: !!python/object/apply:os.system [\"true\"]\n" + body),
        ("unclosed", body + b"grid: {window_size: [7, 14\n"),
        ("random-bytes", bytes(rng.randrange(256) for _ in range(512))),
    ]


def _truncations(text: str, rng: random.Random) -> list[tuple[str, bytes]]:
    """A file cut short (an interrupted copy): may still be valid YAML, and even a valid study."""
    body = text.encode("utf-8")
    return [(f"truncated-{c}", body[:c]) for c in sorted(rng.sample(range(1, len(body)), 2))]


def _corpus() -> list[Case]:
    rng = random.Random(SEED)
    cases: list[Case] = []
    for kind, files in (("study", STUDIES), ("space", SPACES)):
        for f in files:
            text = f.read_text(encoding="utf-8")
            src = yaml.safe_load(text)
            paths = list(_leaves(src))
            for path in rng.sample(paths, min(len(paths), 4)):
                name = ".".join(map(str, path))
                cases.append(Case(f"{f.stem}:del:{name}", kind, _dump(_edit(src, path, _DELETE)), False))
                value = rng.choice(RETYPE)
                cases.append(Case(f"{f.stem}:retype:{name}={value!r}", kind, _dump(_edit(src, path, value)), False))
                big = rng.choice(HUGE)
                cases.append(Case(f"{f.stem}:huge:{name}={big!r}", kind, _dump(_edit(src, path, big)),
                                  not _huge_ok(path)))
            for attack, data in rng.sample(_attacks(text, rng), 6):
                cases.append(Case(f"{f.stem}:{attack}", kind, data, True))
            for attack, data in _truncations(text, rng):
                cases.append(Case(f"{f.stem}:{attack}", kind, data, False))
    return cases


CORPUS = _corpus()


def _write(case: Case, here: Path) -> Path:
    """The study file for a case (a space case is referenced from a minimal sampled study)."""
    if case.kind == "study":
        target = here / "study.yaml"
        target.write_bytes(case.data)
        return target
    (here / "space.yaml").write_bytes(case.data)
    study = here / "study.yaml"
    study.write_text("name: fuzz\nspace: space.yaml\ntrials: 2\nobjectives: [top1]\n"
                     "storage: sqlite:///runs/fuzz.db\n")
    return study


def _invoke(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(*result.exc_info))  # type: ignore[misc]
        raise AssertionError(f"{args}: raised instead of exiting 2:\n{tb}")
    return result.exit_code, result.stdout, result.stderr


def _check_refusal(case: Case, code: int, err: str, study: Path) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"{case.id}: exit {code}, allowed: 0 or 2\n{err}"
    assert len(lines) == 1, f"{case.id}: {len(lines)} lines on stderr, allowed: one\n{err}"
    assert lines[0].startswith("error: "), f"{case.id}: {lines[0]!r}"
    named = ("study.yaml", "space.yaml", "--storage", "ABLATE_MEMORY_LIMIT")
    assert any(n in lines[0] for n in named), f"{case.id}: names no file: {lines[0]!r}"
    assert "Traceback" not in err and len(lines[0]) < 2000, f"{case.id}: {lines[0][:300]!r}"


def test_the_corpus_is_a_few_hundred_varied_cases() -> None:
    ids = [c.id for c in CORPUS]
    assert 250 <= len(CORPUS) <= 600 and len(set(ids)) == len(ids)
    assert sum(c.must_fail for c in CORPUS) >= 150
    assert {c.kind for c in CORPUS} == {"study", "space"}


def test_every_hostile_file_gets_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole corpus in one test: it must stay well under a minute."""
    start = time.monotonic()
    refused, slowest = 0, (0.0, "")
    for i, case in enumerate(CORPUS):
        here = tmp_path / str(i)
        here.mkdir()
        monkeypatch.chdir(here)
        study = _write(case, here)
        before = sorted(p.name for p in here.rglob("*"))
        t = time.monotonic()
        code, _, err = _invoke(["validate", str(study), "--scale", "both"])
        took = time.monotonic() - t
        slowest = max(slowest, (took, case.id))
        assert took < 5, f"{case.id}: {took:.1f} s, allowed: under 5 s"
        if code != 0 or case.must_fail:
            _check_refusal(case, code, err, study)
            refused += 1
        assert sorted(p.name for p in here.rglob("*")) == before, f"{case.id}: validate wrote something"
    took = time.monotonic() - start
    assert took < 60, f"the corpus took {took:.0f} s (slowest: {slowest[1]} {slowest[0]:.1f} s)"
    assert refused >= sum(c.must_fail for c in CORPUS)


def test_run_refuses_what_validate_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ablate run` (no --dry-run) makes the same checks: the same line, nothing written."""
    sample = [c for c in CORPUS if c.must_fail][::12]
    for i, case in enumerate(sample):
        here = tmp_path / str(i)
        here.mkdir()
        monkeypatch.chdir(here)
        study = _write(case, here)
        _, _, validated = _invoke(["validate", str(study), "--scale", "proxy"])
        code, _, err = _invoke(["run", str(study), "--scale", "proxy"])
        _check_refusal(case, code, err, study)
        assert err.strip() == validated.strip(), case.id
        assert not (here / "runs").exists(), f"{case.id}: run created runs/"


def test_the_real_entry_point_prints_one_line(tmp_path: Path) -> None:
    """`python -m ablate` in a fresh process, for a few attacks: what a user sees."""
    picks = [c for c in CORPUS if c.must_fail and c.kind == "study"]
    picks = [next(c for c in picks if c.id.endswith(a)) for a in ("alias-bomb", "utf-16-le", "deep-nesting")
             if any(c.id.endswith(a) for c in picks)]
    assert picks
    env = {k: v for k, v in os.environ.items() if k != "ABLATE_DEBUG"}
    for i, case in enumerate(picks):
        here = tmp_path / str(i)
        here.mkdir()
        study = _write(case, here)
        proc = subprocess.run([sys.executable, "-m", "ablate", "validate", str(study)], cwd=here, env=env,
                              capture_output=True, text=True, timeout=120)
        _check_refusal(case, proc.returncode, proc.stderr, study)
        assert sorted(p.name for p in here.iterdir()) == ["study.yaml"]


def test_nan_and_infinity_never_pass_as_numbers() -> None:
    """The generator really writes non-finite numbers (YAML's .nan / .inf), not strings."""
    text = _dump({"x": float("nan"), "y": float("inf")}).decode()
    loaded = yaml.safe_load(text)
    assert math.isnan(loaded["x"]) and math.isinf(loaded["y"])
