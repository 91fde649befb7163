"""Storage URLs and opening them: writers in SQLite's WAL mode, readers strictly read-only,
secrets kept out of everything shown or stored.

Writers (``ablate run``) switch every SQLite file to WAL before Optuna touches it, so that a
reader never blocks a run. Readers (``ablate show``/``report``/``export``, dashboards,
:mod:`ablate.results`) open with ``create=False``: they never create a database, never change
its journal mode, write no byte of it and leave its folder as they found it (see
:class:`_ReadOnlySQLite`); on PostgreSQL every reader transaction is read-only.

Secrets: a storage URL may take any part from the environment as ``${NAME}`` (``$NAME``
without braces is literal text: passwords may hold ``$``). The URL is kept with its
references everywhere it is shown or stored, and expanded only by :func:`expand_url` when
connecting. A literal password is shown as ``***`` (:func:`display_url`), and driver errors
are scrubbed of it (:func:`scrub_secrets`).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import tempfile
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from ablate.errors import StorageError

if TYPE_CHECKING:
    import optuna

__all__ = ["open_storage", "close_storage", "sqlite_path", "storage_url_for", "display_url", "expand_url",
           "storage_variables", "scrub_secrets"]

_REF_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ONLY_REFS = re.compile(r"(?:\$\{[A-Za-z_][A-Za-z0-9_]*\})+\Z")
#: SQLAlchemy's own split of ``scheme://user:password@``: the password runs to the first ``@``.
_SA_AUTH = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://(?P<user>[^:/]*)(?::(?P<password>[^@]*))?@")
#: For masking, the widest reading: the password runs to the last ``@`` (an unquoted ``@`` in it).
_WIDE_AUTH = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^:/]*:(?P<password>.*)@", re.S)
_LOOSE_AUTH = re.compile(r"([^\s:/@]+:)[^\s@]+@")  # user:password@ in text that is no URL
_SECRET_KEY = re.compile(r"pass|pwd|secret|token", re.I)
_SQLITE = re.compile(r"sqlite(?:\+pysqlite)?:///")
_HEADER = b"SQLite format 3\x00"


# ----------------------------------------------------------------------------- URLs and secrets

def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL (query dropped, as SQLAlchemy reads it), or None
    for other URLs and in-memory SQLite."""
    m = _SQLITE.match(url)
    if m is None:
        return None
    path = url[m.end():].partition("?")[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def storage_url_for(target: str) -> str:
    """Turn a CLI argument (a URL or a path to a .db file) into a storage URL."""
    if "://" in target:
        return target
    return f"sqlite:///{Path(target).resolve()}"


def storage_variables(url: str) -> list[str]:
    """The environment variables a storage URL refers to as ``${NAME}``, in order, once each.

    Raises:
        StorageError: a ``${`` that does not start a ``${NAME}`` reference (the fragment is
            not quoted: it may be part of a password).
    """
    names: list[str] = []
    start = url.find("${")
    while start >= 0:
        end = url.find("}", start)
        name = url[start + 2:end] if end >= 0 else ""
        if not _REF_NAME.match(name):
            raise StorageError("a '${' that does not start a ${NAME} reference, allowed: ${NAME} with NAME of "
                               "letters, digits and '_' (a literal '${' in a password is written %24%7B)")
        if name not in names:
            names.append(name)
        start = url.find("${", end)
    return names


def expand_url(url: str) -> str:
    """The URL to connect with: every ``${NAME}`` replaced by the environment's value.

    Called only when connecting, so that what is shown and stored keeps the reference. A
    value that lands in the user or password part is percent-quoted (SQLAlchemy unquotes
    it), so a password may hold ``@``, ``/`` or ``:``; elsewhere (host, database, a whole
    URL in one variable) the value is pasted as written.

    Raises:
        StorageError: a malformed reference, or a variable that is not set (named).
    """
    names = storage_variables(url)
    if not names:
        return url
    missing = [n for n in names if n not in os.environ]
    if missing:
        listed = ", ".join(missing)
        raise StorageError(f"environment variable{'s' if len(missing) > 1 else ''} {listed} "
                           f"{'are' if len(missing) > 1 else 'is'} not set (the URL uses "
                           f"{', '.join('${' + n + '}' for n in missing)}), allowed: export {missing[0]}=... "
                           "before running, or write the value into the URL")
    auth = _SA_AUTH.match(url)
    quoted_until = auth.end() - 1 if auth else -1

    def value(m: re.Match[str]) -> str:
        text = os.environ[m[1]]
        return quote(text, safe="") if m.start() < quoted_until else text

    return _REF.sub(value, url)


def display_url(url: str) -> str:
    """``url`` for pages, reports, errors and the stored spec: a literal password (and any
    password-like query value) becomes ``***``; ``${NAME}`` references stay as written.

    Works on any text, parsable or not: the password is taken in its widest reading (up to
    the last ``@``), so an unquoted ``@`` in it cannot leak its tail.
    """
    m = _WIDE_AUTH.match(url)
    if m is None:
        shown = _LOOSE_AUTH.sub(r"\1***@", url) if "://" not in url else url
    elif m["password"] and not _ONLY_REFS.match(m["password"]):
        shown = url[:m.start("password")] + "***" + url[m.end("password"):]
    else:
        shown = url
    head, sep, query = shown.partition("?")
    if not sep:
        return shown
    parts = []
    for item in query.split("&"):
        key, eq, val = item.partition("=")
        if eq and val and _SECRET_KEY.search(key) and not _ONLY_REFS.match(val):
            item = f"{key}=***"
        parts.append(item)
    return head + sep + "&".join(parts)


def _secrets(url: str) -> list[str]:
    found: set[str] = set()
    for text in (url, _try_expand(url)):
        if text is None:
            continue
        for rx in (_SA_AUTH, _WIDE_AUTH):
            m = rx.match(text)
            if m and m["password"]:
                found.update({m["password"], unquote(m["password"])})
        if "://" not in text:
            found.update(m[0][len(m[1]):-1] for m in _LOOSE_AUTH.finditer(text))
        for item in text.partition("?")[2].split("&"):
            key, _, val = item.partition("=")
            if val and _SECRET_KEY.search(key):
                found.update({val, unquote(val)})
    # and the literal pieces around an unquoted @ : / ? or a ${NAME}, which a driver may quote alone
    found.update(p for s in list(found) for p in re.split(r"[@:/?]|\$\{[^}]*\}", s) if len(p) >= 4)
    return sorted((s for s in found if len(s) >= 3 and s != "***" and not _ONLY_REFS.match(s)), key=len, reverse=True)


def _try_expand(url: str) -> str | None:
    try:
        return expand_url(url)
    except StorageError:
        return None


def scrub_secrets(text: str, url: str) -> str:
    """``text`` (a driver's or SQLAlchemy's error) with every secret of ``url`` (its literal
    password, the values its ``${NAME}`` references give it) replaced by ``***``."""
    expanded = _try_expand(url)
    for whole in {url, expanded} - {None}:
        text = text.replace(whole, display_url(url))  # type: ignore[arg-type]
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


def _first_line(err: BaseException) -> str:
    """The first line of the innermost cause: Optuna wraps a driver's "database or disk is
    full" in its own "An exception is raised during the commit", which says nothing."""
    seen: set[int] = set()
    while id(err) not in seen and (err.__cause__ or err.__context__) is not None:
        seen.add(id(err))
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ----------------------------------------------------------------------------- opening

def open_storage(url: str, *, create: bool) -> "optuna.storages.RDBStorage":
    """Open ``url`` as an Optuna RDBStorage.

    Args:
        url: any SQLAlchemy URL, ``${NAME}`` parts taken from the environment now; relative
            SQLite paths are taken relative to the cwd.
        create: writers: make the file (and parent folder) and Optuna's tables if missing,
            and turn on WAL. Readers pass False: nothing is created or changed, a missing
            database is ``no such study database: PATH``; close them with
            :func:`close_storage`.

    Raises:
        StorageError: one line, with no secret in it.
    """
    import optuna

    shown = display_url(url)
    try:
        real = expand_url(url)
    except StorageError as err:
        raise StorageError(f"storage {shown!r}: {err}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not create:
        return _open_reader(url, real, shown)
    path = sqlite_path(real)
    if path is not None:
        if path.is_dir():
            raise StorageError(f"storage {shown!r}: {str(path)!r} is a folder, not a database file")
        path.parent.mkdir(parents=True, exist_ok=True)
        _enable_wal(path, shown)
    engine_kwargs = {"connect_args": {"timeout": 60}} if path is not None else {}
    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(_optuna_url(real), engine_kwargs=engine_kwargs)
        except Exception as err:  # sqlalchemy/driver errors have long, multi-line texts
            # Drivers that open a new database together race to create its tables; the
            # losers find them made a moment later.
            racing = ("already exists", "duplicate key", "UNIQUE constraint failed", "database is locked")
            if attempt < 3 and any(r in str(err) for r in racing):
                time.sleep(0.2 * (attempt + 1))
                continue
            raise StorageError(f"storage {shown!r} cannot be opened: {scrub_secrets(_first_line(err), url)}") from None
    raise AssertionError("unreachable")


def close_storage(storage: "optuna.storages.RDBStorage") -> None:
    """Close a storage's connections; for a read-only SQLite storage also remove what SQLite
    had to create to read it (see :class:`_ReadOnlySQLite`)."""
    storage.remove_session()
    storage.engine.dispose()
    opener = storage.engine_kwargs.get("creator")
    if isinstance(opener, _ReadOnlySQLite):
        opener.close()


def _optuna_url(url: str) -> str:
    # RDBStorage runs str.format on the URL ({SCHEMA_VERSION}): braces in a path or password are literal.
    return url.replace("{", "{{").replace("}", "}}")


_OPTUNA_TABLES = {"studies", "trials"}
_VERSION_TABLES = {"version_info", "alembic_version"}


def _check_tables(tables: set[str], shown: str) -> None:
    if not _OPTUNA_TABLES <= tables:
        raise StorageError(f"storage {shown!r} is not an Optuna database (no 'studies'/'trials' tables)")
    if not _VERSION_TABLES <= tables:  # Optuna would write them; a reader never does
        raise StorageError(f"storage {shown!r} is an Optuna database without its version tables (an old Optuna "
                           "made it); readers never upgrade it, allowed: `optuna storage upgrade` first")


def _open_reader(url: str, real: str, shown: str) -> "optuna.storages.RDBStorage":
    import optuna
    import sqlalchemy

    path = sqlite_path(real)
    if path is not None:
        engine_kwargs: dict = {"creator": _ReadOnlySQLite(path, shown)}
        target = "sqlite:///" + str(path)
    else:
        try:
            parsed = sqlalchemy.engine.make_url(real)
        except Exception as err:  # ArgumentError, or ValueError for a port that is no number
            raise StorageError(f"storage {shown!r} cannot be opened: {scrub_secrets(_first_line(err), url)}") from None
        connect_args = {}
        if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("psycopg", "psycopg2"):
            # The server refuses any write in a reader's transactions.
            options = str(parsed.query.get("options", ""))
            connect_args["options"] = (options + " -c default_transaction_read_only=on").strip()
        engine_kwargs, target = {"connect_args": connect_args}, real
        engine = None
        try:
            engine = sqlalchemy.create_engine(real, **engine_kwargs)
            with engine.connect() as conn:
                tables = set(sqlalchemy.inspect(conn).get_table_names())
        except Exception as err:
            raise StorageError(f"storage {shown!r} cannot be opened: {scrub_secrets(_first_line(err), url)}") from None
        finally:
            if engine is not None:
                engine.dispose()
        _check_tables(tables, shown)
    try:
        return optuna.storages.RDBStorage(_optuna_url(target), engine_kwargs=engine_kwargs, skip_table_creation=True)
    except Exception as err:
        if "creator" in engine_kwargs:
            engine_kwargs["creator"].close()
        raise StorageError(f"storage {shown!r} cannot be opened: {scrub_secrets(_first_line(err), url)}") from None


def _enable_wal(path: Path, shown: str) -> None:
    try:
        with sqlite3.connect(path, timeout=60) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as err:  # full, read-only, locked, cannot be opened: the file may be fine
        raise StorageError(f"storage {shown!r}: {str(path)!r} cannot be written: {err}") from None
    except sqlite3.DatabaseError as err:
        raise StorageError(f"storage {shown!r}: {str(path)!r} is not a SQLite database ({err})") from None


class _ReadOnlySQLite:
    """Opens connections to one SQLite study database that cannot write it (the engine's
    ``creator``), choosing once, when the storage opens, how SQLite may read it:

    - ``mode=ro`` (a ``file:`` URI): rollback-journal (DELETE) databases in any folder, and
      WAL databases whose ``-shm`` exists (a run may be writing: the reader shares its
      index and sees its commits as they land). A cleanly closed WAL database has no
      ``-wal``/``-shm``; when its file and folder are writable a run may start at any moment,
      so it is read live too. SQLite then creates an empty ``-wal`` and ``-shm`` that a
      read-only connection never removes: :meth:`close` opens one connection that can only
      query (``PRAGMA query_only``), reads, and closes it, so that SQLite's own last-connection
      rule deletes them if, and only if, nobody else has the database open. The ``-wal``
      is empty, so that close checkpoints nothing: the database's bytes, mtime and
      journal mode stay as they were.
    - ``immutable=1``: a WAL database without ``-shm`` and with an empty or no ``-wal``
      whose file or folder is not writable. ``mode=ro`` cannot read it (SQLite must create
      the ``-shm``), and nothing can be writing it: a WAL writer needs a ``-shm``, and a run
      of ours could neither write the file nor create one. Immutable means no locks and
      no change detection, which is safe only then.
    - a private copy (database and ``-wal`` in a temporary folder, read with ``mode=ro``,
      removed on :meth:`close` or at exit): a WAL database without ``-shm`` but with a
      non-empty ``-wal`` (a writer died before its last checkpoint). Its last commits live
      only in the ``-wal``, which ``immutable`` would ignore and which cannot be indexed
      in place without creating a ``-shm``. Also the fallback when ``mode=ro`` fails on a
      stale ``-shm`` in a folder that cannot be written.

    A header check first turns an empty file or a foreign file into one line.
    """

    def __init__(self, path: Path, shown: str) -> None:
        self.path, self.shown = Path(os.path.abspath(path)), shown
        self._tidy = False
        self._cleanup: weakref.finalize | None = None
        self.uri = ""
        if not self.path.exists():
            raise StorageError(f"no such study database: {path}")
        if self.path.is_dir():
            raise StorageError(f"not a study database: {path} is a folder")
        try:
            with self.path.open("rb") as f:
                head = f.read(100)
        except OSError as err:
            raise StorageError(f"storage {shown!r}: {str(path)!r} cannot be read ({err.strerror})") from None
        if not head:
            raise StorageError(f"not a study database: {path} is an empty file")
        if not head.startswith(_HEADER):
            raise StorageError(f"not a study database: {path} is not a SQLite file")
        wal, shm = Path(f"{self.path}-wal"), Path(f"{self.path}-shm")
        wal_mode = len(head) > 18 and head[18] == 2
        writable = os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK | os.X_OK)
        if not wal_mode or shm.exists() or (writable and not wal.exists()):
            self.uri = self._uri(self.path, "mode=ro")
            self._tidy = wal_mode and not shm.exists()
        elif not wal.exists() or wal.stat().st_size == 0:
            self.uri = self._uri(self.path, "mode=ro&immutable=1")
        else:
            self._copy()
        try:
            tables = self._tables()
        except sqlite3.DatabaseError as err:
            if wal_mode and not writable and self._cleanup is None:  # e.g. a stale -shm that needs recovery
                self._copy()
                tables = self._tables()
            else:
                self.close()
                raise StorageError(f"storage {shown!r}: {str(path)!r} cannot be read: {err}") from None
        try:
            _check_tables(tables, shown)
        except StorageError:
            self.close()
            raise

    @staticmethod
    def _uri(path: Path, query: str) -> str:
        return f"file:{quote(str(path), safe='/')}?{query}"

    def _copy(self) -> None:
        folder = tempfile.mkdtemp(prefix="ablate-read-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, folder, True)
        copy = Path(folder) / "study.db"
        shutil.copyfile(self.path, copy)
        if Path(f"{self.path}-wal").exists():
            shutil.copyfile(f"{self.path}-wal", f"{copy}-wal")
        self.uri, self._tidy = self._uri(copy, "mode=ro"), False

    def _tables(self) -> set[str]:
        conn = self()
        try:
            return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()

    def __call__(self) -> sqlite3.Connection:
        return sqlite3.connect(self.uri, uri=True, timeout=60, check_same_thread=False)

    def close(self) -> None:
        """Remove the empty ``-wal``/``-shm`` that reading created (see the class), or the copy."""
        if self._cleanup is not None:
            self._cleanup()
        wal = Path(f"{self.path}-wal")
        if not self._tidy or not wal.exists() or wal.stat().st_size != 0:
            return
        try:
            conn = sqlite3.connect(self._uri(self.path, "mode=rw"), uri=True, timeout=5)
            try:
                conn.execute("PRAGMA query_only = ON")
                conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
            finally:
                conn.close()
        except sqlite3.Error:
            pass  # another connection holds the database: its own close removes them
