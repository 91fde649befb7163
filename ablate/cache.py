"""ablate's per-user cache folder: ultralytics' settings and fonts, the generated detection
set, the records of running Ray sessions.

Where: ``$ABLATE_HOME``, else ``$XDG_CACHE_HOME/ablate``, else ``~/.cache/ablate``, else
(no usable home: unset, missing, read-only) ``<tempdir>/ablate-<uid>``. What is found there
is trusted (a settings file ultralytics reads, a data set ablate trains on, records naming
processes to stop and folders to remove), so every folder ablate makes is created with
mode 0700, and a folder that already exists must be a real directory (not a symlink), owned
by this user and writable by nobody else; else :class:`~ablate.errors.EnvironmentProblem`
says, in one line, whose it is and what to do. A shared temp dir is where another local
user could plant such a folder before ablate first runs.

Nothing happens at import; the folders are made by :func:`cache_dir` when asked for.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from ablate.errors import EnvironmentProblem, environment_problem

__all__ = ["cache_dir", "cache_root", "check_private_dir"]

_KIND_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
_TODO = "set ABLATE_HOME to a folder of yours"
#: A home cache that cannot be created or written (not one that exists and is wrong): use the temp dir.
_UNUSABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.ENOSPC,
                       errno.EDQUOT, errno.ENAMETOOLONG})


def cache_dir(kind: str) -> Path:
    """The private folder ``<cache root>/<kind>``, created (mode 0700) and checked.

    Args:
        kind: One lowercase folder name (``"ultralytics"``, ``"data"``, ``"ray-sessions"``).

    Raises:
        EnvironmentProblem: No usable cache root, or the folder exists but is not a private
            directory of this user (symlink, other owner, writable by others).
    """
    if not kind or set(kind) - _KIND_CHARS or kind.startswith("."):
        raise ValueError(f"cache kind must be one lowercase folder name, got {kind!r}")
    return _make_private(cache_root() / kind, f"remove it, or {_TODO}")


def cache_root() -> Path:
    """The cache root (created, checked), in the order the module docstring gives.

    ``$ABLATE_HOME`` and ``$XDG_CACHE_HOME`` are the user's choices: one that cannot be used
    is an error, not a silent move elsewhere, except that an ``$XDG_CACHE_HOME`` or home
    that cannot be *created or written* (a read-only or missing home, as in many containers)
    falls through to the temp dir. A folder that exists but is not private never falls
    through: someone else's folder in your home needs your attention.
    """
    home = os.environ.get("ABLATE_HOME")
    if home:
        # The user's own path may be a symlink they made; the folder it names is checked.
        root = Path(os.path.realpath(os.path.expanduser(home)))
        return _make_private(root, "set ABLATE_HOME to a folder of yours that only you can write",
                             label=f"ABLATE_HOME={home}")
    for base in _home_bases():
        try:
            return _make_private(base / "ablate", f"remove it, or {_TODO}")
        except EnvironmentProblem as problem:
            if problem.errno not in _UNUSABLE:
                raise  # exists but not private: never silently go elsewhere
    try:
        tmp = tempfile.gettempdir()
    except FileNotFoundError as err:  # no writable temp dir at all
        raise EnvironmentProblem(f"no usable temporary folder ({err}), set TMPDIR or ABLATE_HOME "
                                 f"to a writable folder of yours") from None
    return _make_private(Path(tmp) / f"ablate-{os.getuid()}", f"remove it, or {_TODO}")


def _home_bases() -> list[Path]:
    """``$XDG_CACHE_HOME`` (absolute only, as the XDG spec says), then ``~/.cache``."""
    bases = []
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        bases.append(Path(xdg))
    user_home = os.path.expanduser("~")
    if os.path.isabs(user_home) and user_home != "/":
        bases.append(Path(user_home) / ".cache")
    return bases


def _make_private(path: Path, todo: str, *, label: str | None = None) -> Path:
    """Create ``path`` (parents as needed, the leaf with mode 0700) or check the one there."""
    shown = label or str(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as err:
        problem = environment_problem(err, shown, f"cannot create ablate's cache folder; {_TODO}",
                                      any_errno=True)
        assert problem is not None
        raise problem from None
    check_private_dir(path, todo, label=label)
    if not os.access(path, os.W_OK | os.X_OK):
        problem = EnvironmentProblem(f"{shown}: ablate's cache folder is not writable ({_access_reason(path)}), "
                                     f"{_TODO}")
        problem.errno, problem.filename = errno.EACCES, str(path)
        raise problem
    return path


def _access_reason(path: Path) -> str:
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:  # pragma: no cover - statvfs of a folder we just stat'ed
        pass
    return "permission denied"


def check_private_dir(path: str | os.PathLike[str], todo: str, *, label: str | None = None) -> None:
    """Refuse ``path`` unless it is a real directory (not a symlink) owned by this user and
    writable by nobody else.

    Args:
        path: The folder to check (not followed if a symlink).
        todo: What the user should do, ending the one-line message.
        label: How to name the folder in the message (default: the path).

    Raises:
        EnvironmentProblem: It is a symlink, not a directory, another user's, or writable by
            group or others; or it cannot be examined.
    """
    shown = label or os.fspath(path)
    try:
        st = os.lstat(path)
    except OSError as err:
        problem = environment_problem(err, shown, todo, any_errno=True)
        assert problem is not None
        raise problem from None
    if stat.S_ISLNK(st.st_mode):
        what = f"is a symlink (to {os.readlink(path)!r}), not a folder of yours"
    elif not stat.S_ISDIR(st.st_mode):
        what = "is not a folder"
    elif st.st_uid != os.getuid():
        what = f"is owned by {_user(st.st_uid)}, not by you ({_user(os.getuid())})"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        what = f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
        todo = f"make it private (chmod go-w {os.fspath(path)}), or {todo}"
    else:
        return
    raise EnvironmentProblem(f"{shown}: ablate's cache folder {what}; its files would be trusted, {todo}")


def _user(uid: int) -> str:
    """``name (uid N)`` where the name is known."""
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"
