"""Opening Optuna storages: SQLite in WAL mode, any SQLAlchemy URL, read-only checks.

A dashboard reading a SQLite file in the default journal mode has broken running studies
elsewhere, so every SQLite file ablate creates is switched to WAL before Optuna touches it.
Readers (``ablate show``, dashboards) never create a database: a missing file or a database
without Optuna's tables is a one-line StorageError.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ablate.errors import StorageError

if TYPE_CHECKING:
    import optuna

__all__ = ["open_storage", "sqlite_path", "storage_url_for", "display_url"]


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL, or None for other URLs and in-memory SQLite."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):]
    if not path or path == ":memory:":
        return None
    return Path(path)


def storage_url_for(target: str) -> str:
    """Turn a CLI argument (a URL or a path to a .db file) into a storage URL."""
    if "://" in target:
        return target
    return f"sqlite:///{Path(target).resolve()}"


def display_url(url: str) -> str:
    """``url`` with any password masked, for pages and reports that others will read."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL: nothing to hide
        return url


def open_storage(url: str, *, create: bool) -> "optuna.storages.RDBStorage":
    """Open ``url`` as an Optuna RDBStorage.

    Args:
        url: any SQLAlchemy URL; relative SQLite paths are taken relative to the cwd.
        create: make the file (and parent folder) and Optuna's tables if missing; readers
            pass False so that a typo never leaves an empty database behind.
    """
    import optuna
    import sqlalchemy

    path = sqlite_path(url)
    if path is not None:
        if not path.exists():
            if not create:
                raise StorageError(f"storage {url!r}: no such database file {str(path)!r}")
            path.parent.mkdir(parents=True, exist_ok=True)
        if create:  # writers only: a reader never changes the journal mode (DESIGN.md)
            _enable_wal(path, url)
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    if not create:
        _require_optuna_tables(url, sqlalchemy)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=not create)
        except Exception as err:  # sqlalchemy/driver errors have long, multi-line texts
            # Drivers that open a new database together race to create its tables; the
            # losers find them made a moment later.
            racing = ("already exists", "duplicate key", "UNIQUE constraint failed", "database is locked")
            if create and attempt < 3 and any(r in str(err) for r in racing):
                time.sleep(0.2 * (attempt + 1))
                continue
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise StorageError(f"storage {display_url(url)!r} cannot be opened: {first}") from None
    raise AssertionError("unreachable")


def _enable_wal(path: Path, url: str) -> None:
    try:
        with sqlite3.connect(path, timeout=60) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as err:
        raise StorageError(f"storage {url!r}: {str(path)!r} is not a SQLite database ({err})") from None


def _require_optuna_tables(url: str, sqlalchemy) -> None:
    engine = None
    try:
        engine = sqlalchemy.create_engine(url)
        with engine.connect() as conn:
            tables = set(sqlalchemy.inspect(conn).get_table_names())
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StorageError(f"storage {url!r} cannot be opened: {first}") from None
    finally:
        if engine is not None:
            engine.dispose()
    if not {"studies", "trials"} <= tables:
        raise StorageError(f"storage {url!r} is not an Optuna database (no 'studies'/'trials' tables)")
