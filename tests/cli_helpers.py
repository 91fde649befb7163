"""Run the ``ablate`` command line in-process, as a user would, and capture what it prints."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from ablate.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``ablate ARGS...`` through :func:`ablate.cli.main`; returns (exit code, stdout, stderr)."""
    argv = sys.argv
    sys.argv = ["ablate", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


def interrupt(proc: subprocess.Popen, timeout: float) -> None:
    """Stop a server process as Ctrl-C would; kill it if it has not exited after ``timeout`` seconds."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
