"""Claims: which driver trains which run, decided by the storage so that any number of
drivers can share one study.

A run is one (configuration key, repeat). A driver may train it only after it inserted the
claim row ``(study, key, repeat, attempt)``: the primary key makes the insert succeed for
exactly one driver, in one transaction, on SQLite and on PostgreSQL alike. A sampled
study's budget is claimed the same way, one *slot* per new configuration
(``key = "#slot"``, ``repeat`` = the slot's index), so N drivers never start more than the
budget's configurations between them.

While a claim runs, its driver refreshes ``heartbeat`` (:class:`Heartbeat`). A claim whose
heartbeat is older than the grace period belongs to a driver that is gone: any driver may
mark it ``dead`` (a conditional update: one driver wins) and close its trial; the run is
then claimed again as the next attempt, up to ``max_retries`` more times. A run whose
trial failed by its own error is ``failed`` and is never retried.

The table lives next to Optuna's in the same database (Optuna's own tables are only ever
touched through Optuna's public API); readers ignore it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa

__all__ = ["MAX_BEAT_S", "SLOT", "INTERRUPTED_DETAIL", "Claim", "Claims", "Heartbeat", "iter_free_slots", "owner_id"]

#: The key of a sampled study's configuration slots.
SLOT = "#slot"

RUNNING, DONE, FAILED, DEAD = "running", "done", "failed", "dead"
#: The detail of a run given back on Ctrl-C or SIGTERM: resumed later, not counted as a failed attempt.
INTERRUPTED_DETAIL = "interrupted"

_metadata = sa.MetaData()
_table = sa.Table(
    "ablate_claims", _metadata,
    sa.Column("study", sa.String(512), primary_key=True),
    sa.Column("config_key", sa.String(64), primary_key=True),
    sa.Column("repeat", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("attempt", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("owner", sa.String(256), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("trial_number", sa.Integer, nullable=True),
    sa.Column("detail", sa.String(256), nullable=True),
    sa.Column("heartbeat", sa.Float, nullable=False),
)


def owner_id() -> str:
    """This driver's name in the claims: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Claim:
    """One claim row."""

    key: str
    repeat: int
    attempt: int
    owner: str
    state: str
    trial_number: int | None
    detail: str | None
    heartbeat: float


class Claims:
    """The claims of one study in one storage, seen by one driver (``owner``)."""

    def __init__(self, url: str, study: str, *, owner: str | None = None) -> None:
        from ablate.storage import expand_url

        url = expand_url(url)  # ${NAME} parts are taken from the environment only when connecting
        kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
        self.engine = sa.create_engine(url, **kwargs)
        self.study = study
        self.owner = owner or owner_id()
        self._create_table()

    def _create_table(self) -> None:
        """Create the table once; drivers starting together race for it, and the losers see it exist."""
        for _ in range(5):
            try:
                _metadata.create_all(self.engine, checkfirst=True)
                return
            except sa.exc.SQLAlchemyError:
                if sa.inspect(self.engine).has_table(_table.name):
                    return
                time.sleep(0.2)
        _metadata.create_all(self.engine, checkfirst=True)  # the error, if it persists

    def close(self) -> None:
        self.engine.dispose()

    # -- reading
    def rows(self, key: str | None = None) -> list[Claim]:
        """Every claim of the study (of one key), oldest attempt first."""
        query = sa.select(_table).where(_table.c.study == self.study)
        if key is not None:
            query = query.where(_table.c.config_key == key)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(_table.c.config_key, _table.c.repeat, _table.c.attempt)).all()
        return [Claim(r.config_key, r.repeat, r.attempt, r.owner, r.state, r.trial_number, r.detail, r.heartbeat)
                for r in rows]

    def latest(self) -> dict[tuple[str, int], Claim]:
        """The last attempt of every claimed run (and slot)."""
        out: dict[tuple[str, int], Claim] = {}
        for c in self.rows():
            out[(c.key, c.repeat)] = c  # attempts come in order: the last one stays
        return out

    # -- writing
    def claim(self, key: str, repeat: int, *, max_retries: int) -> int | None:
        """Claim run (``key``, ``repeat``) for this driver; the attempt number, or None when
        another driver holds it, it is finished, or its retries are used up."""
        attempts = [c for c in self.rows(key) if c.repeat == repeat]
        died = sum(c.detail != INTERRUPTED_DETAIL for c in attempts)
        if any(c.state != DEAD for c in attempts) or died > max_retries:
            return None
        attempt = len(attempts)
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(_table).values(
                    study=self.study, config_key=key, repeat=repeat, attempt=attempt, owner=self.owner,
                    state=RUNNING, trial_number=None, detail=None, heartbeat=time.time()))
        except sa.exc.IntegrityError:
            return None  # another driver inserted it first
        return attempt

    def update(self, key: str, repeat: int, attempt: int, *, state: str | None = None,
               trial_number: int | None = None, detail: str | None = None) -> None:
        """Record what became of one of this driver's claims."""
        values: dict = {"heartbeat": time.time()}
        if state is not None:
            values["state"] = state
        if trial_number is not None:
            values["trial_number"] = trial_number
        if detail is not None:
            values["detail"] = detail[:256]
        with self.engine.begin() as conn:
            conn.execute(sa.update(_table).where(
                _table.c.study == self.study, _table.c.config_key == key, _table.c.repeat == repeat,
                _table.c.attempt == attempt, _table.c.owner == self.owner).values(**values))

    def beat(self) -> None:
        """Refresh the heartbeat of every claim this driver is running."""
        with self.engine.begin() as conn:
            conn.execute(sa.update(_table).where(
                _table.c.study == self.study, _table.c.owner == self.owner, _table.c.state == RUNNING)
                .values(heartbeat=time.time()))

    def reap(self, grace_s: float) -> list[Claim]:
        """Mark running claims whose driver went silent for ``grace_s`` as dead.

        Each row is taken over with a conditional update (still running, still that old
        heartbeat), so when several drivers reap at once each dead claim is reaped once.
        Returns the claims this driver reaped (their trials are its to close).
        """
        cutoff = time.time() - grace_s
        reaped = []
        for c in self.rows():
            if c.state != RUNNING or c.heartbeat >= cutoff or c.owner == self.owner:
                continue
            with self.engine.begin() as conn:
                result = conn.execute(sa.update(_table).where(
                    _table.c.study == self.study, _table.c.config_key == c.key, _table.c.repeat == c.repeat,
                    _table.c.attempt == c.attempt, _table.c.state == RUNNING,
                    _table.c.heartbeat == c.heartbeat).values(state=DEAD, detail=f"silent since {c.heartbeat:.0f}"))
            if result.rowcount == 1:
                reaped.append(c)
        return reaped

    def live_trials(self, grace_s: float) -> set[int]:
        """Trial numbers of claims that are running with a fresh heartbeat (never to be touched)."""
        cutoff = time.time() - grace_s
        return {c.trial_number for c in self.rows()
                if c.state == RUNNING and c.trial_number is not None and (c.heartbeat >= cutoff or c.owner == self.owner)}

    def attaching(self, grace_s: float) -> bool:
        """Whether a live claim has not named its trial yet (its driver is creating it)."""
        cutoff = time.time() - grace_s
        return any(c.state == RUNNING and c.trial_number is None and c.key != SLOT and c.heartbeat >= cutoff
                   for c in self.rows())

    def in_flight(self) -> int:
        """How many runs (not slots) are claimed as running anywhere, fresh or silent (a silent
        one is reaped and re-queued by the next look, so a driver waits for it either way)."""
        return sum(1 for c in self.rows() if c.key != SLOT and c.state == RUNNING)


#: The most seconds between two heartbeats, whatever a driver's own grace: drivers with
#: different ``--heartbeat-grace`` share a study, and each must look alive to the others.
MAX_BEAT_S = 2.0


class Heartbeat:
    """A daemon thread that refreshes this driver's claims every ``interval_s`` seconds."""

    def __init__(self, claims: Claims, interval_s: float) -> None:
        self.claims, self.interval_s = claims, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ablate-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.claims.beat()
            except sa.exc.SQLAlchemyError:
                pass  # a busy database: the next beat tries again, well within the grace period

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def iter_free_slots(latest: dict[tuple[str, int], Claim], budget: int) -> Iterator[int]:
    """Slot indexes below ``budget`` that nobody holds or finished (dead ones may be taken again)."""
    for i in range(budget):
        c = latest.get((SLOT, i))
        if c is None or c.state == DEAD:
            yield i
