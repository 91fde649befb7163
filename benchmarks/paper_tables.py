"""Run every paper study at proxy scale, time it, and write its `ablate report` into README.md.

The README's "Reproducing the papers" tables are this script's output, never edited by
hand: for each ``studies/*.yaml`` that names a ``base`` it runs (unless ``--report-only``)

    ablate run studies/X.yaml          # proxy scale, the default
    ablate report studies/X.yaml

and replaces the block between ``<!-- study: X -->`` and ``<!-- /study -->`` with the
command and the report's Markdown. It prints each study's proxy wall time, the issue's
"under 10 minutes on 2 cores" check, against the demo study's time as the baseline.

    python benchmarks/paper_tables.py [--report-only] [STUDY_STEM ...]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ABLATE = [sys.executable, "-m", "ablate"]
LIMIT_S = 600.0


def paper_studies() -> list[Path]:
    """Study files with a ``base``: the papers' ablations (README order: file name order)."""
    return [p for p in sorted((ROOT / "studies").glob("*.yaml"))
            if re.search(r"^base:", p.read_text(encoding="utf-8"), re.M)]


def block(stem: str, report: str) -> str:
    """The README block of one study: the commands, then the report as printed."""
    path = f"studies/{stem}.yaml"
    return (f"<!-- study: {stem} -->\n```bash\nablate run {path} && ablate report {path}\n```\n\n"
            f"{report.rstrip()}\n<!-- /study -->")


def splice(readme: str, stem: str, new_block: str) -> str:
    pattern = re.compile(rf"<!-- study: {re.escape(stem)} -->.*?<!-- /study -->", re.S)
    if not pattern.search(readme):
        raise SystemExit(f"README.md has no block <!-- study: {stem} --> ... <!-- /study -->; add one")
    return pattern.sub(lambda _: new_block, readme)


def _remove_database(path: Path) -> None:
    """Start from an empty SQLite database, so the table shows this run only."""
    from ablate.study import load_study

    url = load_study(path, check=False).storage
    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///"):].partition("?")[0])
        for extra in ("", "-wal", "-shm"):
            Path(f"{db}{extra}").unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stems", nargs="*", help="only these studies (file stems)")
    parser.add_argument("--report-only", action="store_true", help="do not run; report the existing databases")
    args = parser.parse_args()
    studies = [p for p in paper_studies() if not args.stems or p.stem in args.stems]
    times: dict[str, float] = {}
    for path in studies:
        rel = path.relative_to(ROOT)
        if not args.report_only:
            _remove_database(path)
            start = time.perf_counter()
            subprocess.run([*ABLATE, "run", str(rel), "-q"], cwd=ROOT, check=True)
            times[path.stem] = time.perf_counter() - start
            print(f"{path.stem}: proxy run {times[path.stem]:.0f} s", flush=True)
        report = subprocess.run([*ABLATE, "report", str(rel)], cwd=ROOT, check=True, capture_output=True,
                                text=True).stdout
        README.write_text(splice(README.read_text(encoding="utf-8"), path.stem, block(path.stem, report)),
                          encoding="utf-8")
    if times:
        base = times.get("window_size")
        print(f"\n{'study':<24} {'proxy run (s)':>13} {'vs demo':>8}  under {LIMIT_S:.0f} s")
        for stem, seconds in times.items():
            ratio = f"{seconds / base:.2f}x" if base else "-"
            print(f"{stem:<24} {seconds:>13.0f} {ratio:>8}  {'yes' if seconds < LIMIT_S else 'NO'}")


if __name__ == "__main__":
    main()
