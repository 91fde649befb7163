"""What ``train.compile: true`` needs from the machine, checked before anything trains.

``torch.compile``'s default backend (inductor) writes C++ kernels on the CPU and builds
them with the host's C++ compiler: ``$CXX`` when set, else ``g++`` (``clang++`` on macOS),
the names torch's inductor looks up (``torch._inductor.config.cpp.cxx``). On CUDA it writes
Triton kernels, and Triton builds its launcher with a C compiler (``$CC``, else ``cc``,
``gcc`` or ``clang`` on the path). Without one, compilation fails at the first training step
with a long traceback deep inside torch; ``ablate validate`` and ``ablate run`` refuse the
study up front instead, with one line. No torch import here: the study schema calls it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys

from ablate.errors import EnvironmentProblem

__all__ = ["compile_refusal", "missing_compiler", "require_compiler"]


def _first_word(command: str) -> str | None:
    """The program of a ``$CXX``-style command (``ccache g++`` -> ``ccache``); None if empty."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    return words[0] if words else None


def _found(command: str) -> bool:
    program = _first_word(command)
    return program is not None and shutil.which(program) is not None


def missing_compiler(device: str = "cpu") -> str | None:
    """Why ``torch.compile`` cannot build kernels for ``device`` here, or None when it can.

    Args:
        device: the torch device a trial trains on (``cpu``, ``cuda``, ``cuda:1``); any
            other kind (``mps``, ...) is left to torch.

    Returns:
        A sentence naming what was looked for (for a one-line error), or None.
    """
    kind = device.split(":", 1)[0]
    if kind == "cpu":
        cxx = os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++")
        if not _found(cxx):
            where = f"$CXX={cxx!r}" if "CXX" in os.environ else f"{cxx} (or $CXX)"
            return f"no C++ compiler found on the PATH: {where}, which torch.compile's inductor needs on the CPU"
    elif kind == "cuda":
        cc = os.environ.get("CC")
        if not (_found(cc) if cc is not None else any(shutil.which(c) for c in ("cc", "gcc", "clang"))):
            where = f"$CC={cc!r}" if cc is not None else "cc, gcc or clang (or $CC)"
            return f"no C compiler found on the PATH: {where}, which Triton needs for torch.compile on CUDA"
    return None


def compile_refusal(device: str = "cpu", allowed_key: str = "") -> str | None:
    """What ``train.compile: true`` is told on ``device`` (the text after its key), or None when it can run.

    ``allowed_key`` prefixes the allowed value where the line names no key of its own.
    """
    problem = missing_compiler(device)
    if problem is None:
        return None
    return (f"true needs a compiler: {problem}, allowed: {allowed_key}false, or install g++ "
            "(or set $CXX to a C++ compiler)")


def require_compiler(device: str = "cpu") -> None:
    """Raise :class:`EnvironmentProblem` (one line) unless ``torch.compile`` can build kernels on ``device``."""
    refusal = compile_refusal(device, allowed_key="train.compile: ")
    if refusal is not None:
        raise EnvironmentProblem(f"train.compile: {refusal}")
