"""Where the dashboard's studies come from: study files, database files, folders of them, URLs.

Each storage is listed again on every visit to the studies page (a folder picks up new
databases while studies run), and each study is read through one long-lived
:class:`~ablate.results.StudyReader`, so a refresh fetches only the trials that changed.
Nothing here writes to a storage; :meth:`Sources.close` releases them when the server stops.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ablate.errors import AblateError, ConfigError, StorageError
from ablate.results import StudyReader, StudyResults, study_names
from ablate.storage import display_url, expand_url, storage_url_for

__all__ = ["Sources", "StudyRef", "resolve_targets"]


def resolve_targets(targets: list[str]) -> list[str | Path]:
    """Storage URLs for the command line's targets; folders stay folders (scanned for ``*.db``).

    Raises:
        ConfigError: a study file that is missing, or a URL naming an unset ``${NAME}``.
        StorageError: ``no such study database: PATH``.
    """
    out: list[str | Path] = []
    for target in targets:
        if "://" in target:
            out.append(_expandable(target, display_url(target)))
            continue
        path = Path(target)
        if path.is_dir():
            out.append(path.resolve())
        elif path.suffix in (".yaml", ".yml"):
            from ablate.study import load_study

            if not path.is_file():
                raise ConfigError(f"{target}: no such study file")
            out.append(_expandable(load_study(path, check=False).storage, f"{target}: storage"))
        elif path.is_file():
            out.append(storage_url_for(target))
        else:
            raise StorageError(f"no such study database: {target}")
    return out


def _expandable(url: str, where: str) -> str:
    """``url`` unchanged (it keeps its ``${NAME}`` references), once every one is set."""
    try:
        expand_url(url)
    except StorageError as err:
        raise ConfigError(f"{where}: {err}") from None
    return url


def _key(url: str, name: str) -> str:
    # Of the shown URL: a page address must not carry a short hash of a password.
    return hashlib.sha1(f"{display_url(url)}\0{name}".encode()).hexdigest()[:10]


@dataclass(frozen=True)
class StudyRef:
    """One study in one storage, with a short stable key for URLs."""

    url: str
    name: str

    @property
    def key(self) -> str:
        return _key(self.url, self.name)


@dataclass
class Sources:
    """The storages given on the command line and a reader per study, shared by all requests."""

    targets: list[str | Path]
    _readers: dict[str, StudyReader] = field(default_factory=dict)
    _refs: dict[str, StudyRef] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _study_locks: dict[str, threading.Lock] = field(default_factory=dict)

    def storages(self) -> list[str]:
        """Every storage URL, folders expanded to their ``*.db`` files (sorted)."""
        urls: list[str] = []
        for target in self.targets:
            if isinstance(target, Path):
                urls += [storage_url_for(str(p)) for p in sorted(target.glob("*.db"))]
            else:
                urls.append(target)
        return list(dict.fromkeys(urls))

    def studies(self) -> tuple[list[StudyRef], list[tuple[str, str]]]:
        """Every study found now, and ``(storage, error)`` for each storage that could not be read."""
        refs, errors = [], []
        for url in self.storages():
            try:
                names = study_names(url)
            except AblateError as err:
                errors.append((url, str(err)))
                continue
            for name in names:
                ref = StudyRef(url, name)
                self._refs[ref.key] = ref
                refs.append(ref)
        return refs, errors

    def ref(self, key: str) -> StudyRef | None:
        """The study behind a URL key (listing the storages again if it is new)."""
        if key not in self._refs:
            self.studies()
        return self._refs.get(key)

    def read(self, ref: StudyRef) -> StudyResults:
        """The study as it is now; one reader per study, one read at a time per study."""
        with self._lock:
            lock = self._study_locks.setdefault(ref.key, threading.Lock())
        with lock:
            reader = self._readers.get(ref.key)
            if reader is None:
                reader = self._readers[ref.key] = StudyReader(ref.url, ref.name)
            return reader.read()

    def close(self) -> None:
        """Release every study's storage (the server stopped); SQLite folders are left as found."""
        with self._lock:
            readers, self._readers = list(self._readers.values()), {}
        for reader in readers:
            reader.close()

    def importances(self, ref: StudyRef, objective: str) -> tuple[dict[str, float], str]:
        """Parameter importances for one objective (see :meth:`StudyReader.importances`)."""
        self.read(ref)
        with self._study_locks[ref.key]:
            return self._readers[ref.key].importances(objective)

    def version(self, ref: StudyRef) -> int:
        """A number that changes whenever the study's trials change (reads the study)."""
        self.read(ref)
        return self._readers[ref.key].version
