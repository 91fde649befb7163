"""One exception family for the whole project.

The CLI prints a single line for any :class:`AblateError` and exits 2 (bad input);
anything else is a bug and keeps its traceback. Each subclass also inherits a
builtin so callers that catch ``ValueError`` keep working.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import os
from collections.abc import Iterable, Iterator

__all__ = ["AblateError", "ConfigError", "Infeasible", "DataError", "StorageError", "EnvironmentProblem",
           "ENVIRONMENT_ERRNOS", "environment_problem", "environment_errors", "environment_problem_in",
           "did_you_mean", "unknown_name", "shown_path", "exception_line"]


class AblateError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class ConfigError(AblateError, ValueError):
    """A study or search-space file (or an equivalent dict) is invalid."""


class Infeasible(AblateError, ValueError):
    """A combination of settings that cannot be built (window larger than the map, ...)."""


class DataError(AblateError, FileNotFoundError):
    """A data path is missing or holds no usable samples."""


class StorageError(AblateError, RuntimeError):
    """A storage URL cannot be opened or holds no ablate study."""


class EnvironmentProblem(AblateError, OSError):
    """The machine, not the input, stops ablate: a full disk or quota, a read-only or
    forbidden folder, a path too long, a cache folder that another user owns.

    ``str(err)`` is the one line ``<path>: <what is wrong>, <what to do>``; ``errno`` and
    ``filename`` are set when an OS error was the cause, so callers that catch ``OSError``
    keep working.
    """

    def __str__(self) -> str:  # OSError would rebuild "[Errno N] ..." from errno/filename
        return str(self.args[0]) if self.args else ""


#: The errors the environment causes (not a bug, not the input), with what the user can do.
ENVIRONMENT_ERRNOS: dict[int, str] = {
    errno.ENOSPC: "free space on that disk or choose a folder on another one",
    errno.EDQUOT: "your disk quota is used up: free space or choose a folder elsewhere",
    errno.EROFS: "that file system is read-only: choose a writable folder",
    errno.EACCES: "choose a folder you can write to, or ask its owner for access",
    errno.EPERM: "choose a folder you can write to, or ask its owner for access",
    errno.ENAMETOOLONG: "use a shorter path (a shorter TMPDIR or output folder, e.g. TMPDIR=/tmp)",
}


def environment_problem(err: OSError, path: str | os.PathLike[str] | None = None, todo: str | None = None, *,
                        any_errno: bool = False) -> EnvironmentProblem | None:
    """The one-line :class:`EnvironmentProblem` for ``err``, or None when ``err`` is no
    environment error (then it is a bug and keeps its traceback).

    Args:
        err: The OS error as raised.
        path: The file or folder being written (the error's own filename when omitted:
            ``write()`` on an open file names none).
        todo: What to do instead of the generic advice for the errno.
        any_errno: Convert every errno (a write site that knows the path is the user's
            choice, e.g. ``-o FILE`` naming a folder); by default only
            :data:`ENVIRONMENT_ERRNOS`.
    """
    if isinstance(err, EnvironmentProblem):
        return err
    if err.errno not in ENVIRONMENT_ERRNOS and not any_errno:
        return None
    where = path if path is not None else err.filename
    what = err.strerror or (os.strerror(err.errno) if err.errno else str(err)) or type(err).__name__
    advice = todo or ENVIRONMENT_ERRNOS.get(err.errno or 0, "choose another place")
    line = f"{os.fspath(where)}: {what}, {advice}" if where is not None else f"{what}, {advice}"
    problem = EnvironmentProblem(" ".join(line.split()))  # one line, whatever the path holds
    problem.errno, problem.strerror, problem.filename = err.errno, err.strerror, where
    return problem


@contextlib.contextmanager
def environment_errors(path: str | os.PathLike[str], todo: str | None = None) -> Iterator[None]:
    """Inside: an :data:`ENVIRONMENT_ERRNOS` OS error becomes a one-line
    :class:`EnvironmentProblem` naming ``path`` (where the writer knows the path and the OS
    error may not: a failed ``write()`` names no file). Other errors pass unchanged."""
    try:
        yield
    except OSError as err:
        problem = environment_problem(err, path, todo)
        if problem is None:
            raise
        raise problem from err


#: SQLite's texts for the same class of errors (sqlite3 and SQLAlchemy carry no errno or path).
_SQLITE_PROBLEMS = {
    "database or disk is full": "free space on its disk, or give --storage a database elsewhere",
    "attempt to write a readonly database": "make the database and its folder writable, or give --storage "
                                            "a database elsewhere",
    "unable to open database file": "check that the database's folder exists and is writable, or give "
                                    "--storage a database elsewhere",
}


def environment_problem_in(exc: BaseException) -> EnvironmentProblem | None:
    """The environment error behind ``exc``, as one line, or None (then ``exc`` is a bug).

    The net under the CLI, for the writes nobody converted where they happen: ``exc`` and
    what caused it (``raise ... from``, the exception being handled, SQLAlchemy's ``orig``)
    are searched for an :data:`ENVIRONMENT_ERRNOS` OS error, a Unix socket path too long
    for ``TMPDIR``, or SQLite's "database or disk is full" / "attempt to write a readonly
    database" / "unable to open database file" (named by the database file when a frame
    of the traceback holds its ``sqlite:///`` URL).
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop(0)
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, EnvironmentProblem):
            return err
        if isinstance(err, OSError):
            problem = environment_problem(err, None if err.filename is not None else _stream_in(err))
            if problem is not None:
                return problem
            if "AF_UNIX path too long" in str(err):
                tmp = os.environ.get("TMPDIR", "")
                return EnvironmentProblem(f"{f'TMPDIR={tmp}: ' if tmp else ''}AF_UNIX path too long, use a "
                                          f"shorter TMPDIR (e.g. TMPDIR=/tmp)")
        text = str(err)
        for needle, advice in _SQLITE_PROBLEMS.items():
            if needle in text and type(err).__module__.split(".")[0] in ("sqlite3", "sqlalchemy", "optuna"):
                where = _sqlite_file(exc)
                return EnvironmentProblem(f"{where or 'SQLite database'}: {needle}, {advice}")
        todo += [err.__cause__, None if err.__suppress_context__ else err.__context__, getattr(err, "orig", None)]
    return None


def _frames(exc: BaseException) -> list:
    """The frames of ``exc``'s traceback and of what caused it, innermost first."""
    frames = []
    err: BaseException | None = exc
    while err is not None and len(frames) < 500:
        tb = err.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame)
            tb = tb.tb_next
        err = err.__cause__ or err.__context__
    return frames[::-1]


def _sqlite_file(exc: BaseException) -> str | None:
    """The SQLite file a failed write went to: the ``sqlite:///`` URL held by a frame of the
    traceback (Optuna's storage object, or a local named ``url``/``storage``)."""
    for frame in _frames(exc):
        local = frame.f_locals
        try:
            owner_url = getattr(local.get("self"), "url", None)
        except Exception:  # a property that fails: not the storage
            owner_url = None
        for value in (owner_url, local.get("url"), local.get("storage")):
            if isinstance(value, str) and value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
                return os.path.abspath(value[len("sqlite:///"):])
    return None


def _stream_in(exc: OSError) -> str | None:
    """The open file a failed ``write()`` went to (it names none), from the innermost frame
    holding one: ``standard output`` for ``ablate show > /dev/full``."""
    import io

    for frame in _frames(exc)[:20]:
        local = frame.f_locals
        try:
            held = getattr(local.get("self"), "file", None)  # rich's Console, click's writers
        except Exception:
            held = None
        for value in [*local.values(), held]:
            if isinstance(value, io.IOBase):
                name = getattr(value, "name", None)
                if isinstance(name, str):
                    return {"<stdout>": "standard output", "<stderr>": "standard error"}.get(name, name)
    return None


def shown_path(path: str | bytes | os.PathLike[str]) -> str:
    """A path (or a name from a file) as an error line shows it: as typed, or quoted with
    escapes when it holds control characters, so a hostile name cannot break the one line."""
    text = os.fspath(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    text = text if isinstance(text, str) else os.fsdecode(text)
    return text if text.isprintable() else repr(text)


def exception_line(exc: BaseException, limit: int = 200) -> str:
    """What another library's exception says, on one line and at most ``limit`` characters,
    for the parenthesis of an error line (its message may span lines or run long)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:limit] + ("..." if len(text) > limit else "")


def did_you_mean(name: object, valid: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest valid name (or ``""``): the one hint every
    "unknown name" message in the project ends with."""
    hint = difflib.get_close_matches(str(name), list(valid), n=1)
    return f"; did you mean {hint[0]!r}?" if hint else ""


def unknown_name(what: str, name: object, valid: Iterable[str]) -> str:
    """``unknown WHAT 'name', allowed: a, b, c; did you mean 'a'?``"""
    valid = list(valid)
    return f"unknown {what} {name!r}, allowed: {', '.join(valid)}{did_you_mean(name, valid)}"
