"""Files written whole or not at all: a report, an exported model YAML, a settings file.

:func:`write_atomic` writes into a temporary file in the target's own folder (same file
system, so the final :func:`os.replace` is atomic), flushes it to disk, and renames it over
the target. A full disk, a quota, a read-only or forbidden folder, or a crash part-way
leaves the old target (or none) and no temporary file; the error is one line naming the
target (:class:`~ablate.errors.EnvironmentProblem`), since ``write()`` on an open file
names no path.
"""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

from ablate.errors import environment_problem

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike[str], data: str | bytes, *, encoding: str = "utf-8",
                 todo: str | None = None) -> Path:
    """Replace ``path`` with ``data`` atomically.

    The new file gets the mode of the file it replaces, else the usual mode for a new file
    (0666 less the umask). A symlink at ``path`` is followed: its target is replaced and the
    link kept. A device, pipe or socket (``/dev/stdout``, a FIFO) is written into, not
    replaced: there is no file to swap.

    Args:
        path: The file to write; its folder must exist.
        data: Text (encoded with ``encoding``) or bytes.
        encoding: Encoding of text data.
        todo: What the user should do if the write fails (default: advice for the error).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        EnvironmentProblem: Any OS error while writing (full disk, read-only folder, no such
            folder, ``path`` is a folder, ...), naming ``path``; nothing is left behind.
    """
    target = Path(path)
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    try:
        kind = os.stat(target).st_mode
    except OSError:
        kind = None  # missing (or unreadable: the write below says why)
    special = os.path.abspath(target).startswith(("/dev/", "/proc/"))  # /dev/stdout may be a file we must not swap
    if kind is not None and ((not stat.S_ISREG(kind) and not stat.S_ISDIR(kind)) or special):
        # A device, pipe or socket (-o /dev/stdout, a FIFO): written through, never replaced.
        _write_through(target, payload, todo)
        return target
    real = Path(os.path.realpath(target) if os.path.islink(target) else os.path.abspath(target))
    # A short temp name: a target name near NAME_MAX must not fail for the temp's sake.
    tmp = real.with_name(f".{real.name[:64]}.{uuid.uuid4().hex[:12]}.tmp")
    fd, done = -1, False
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            os.chmod(tmp, stat.S_IMODE(os.stat(real).st_mode))
        except FileNotFoundError:
            pass
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)  # ENOSPC on some file systems shows only here; never rename an unwritten file
        os.close(fd)
        fd = -1
        os.replace(tmp, real)
        done = True
    except OSError as err:
        problem = environment_problem(err, target, todo, any_errno=True)
        assert problem is not None
        raise problem from err
    finally:
        if not done:  # an error or an interrupt: leave the old target and no temp file
            if fd >= 0:
                os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return target


def _write_through(target: Path, payload: bytes, todo: str | None) -> None:
    """Write into an existing non-regular file (there is nothing to rename over)."""
    try:
        with open(target, "ab") as handle:  # append: `-o /dev/stdout >> log` keeps the log
            handle.write(payload)
    except OSError as err:
        problem = environment_problem(err, target, todo, any_errno=True)
        assert problem is not None
        raise problem from err
