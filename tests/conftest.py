"""Test-wide guards (no network beyond loopback, quiet Ray, offline ultralytics) and a throwaway
PostgreSQL server on loopback (``postgres_server``, ``postgres_url``).

CI also runs the suite inside ``unshare -n`` (a network namespace with only loopback),
which covers child processes such as Ray's; this in-process guard makes a stray
download fail loudly on machines where that is not possible.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class NetworkBlocked(OSError):
    """Raised by the test guard for any connection that leaves this machine."""


def _is_local(sock: socket.socket, address) -> bool:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return True  # unix sockets, netlink, ...
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost would need DNS


def _guarded_connect(self, address):
    if not _is_local(self, address):
        raise NetworkBlocked(f"tests must not use the network: connect to {address!r} blocked")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_local(self, address):
        raise NetworkBlocked(f"tests must not use the network: connect to {address!r} blocked")
    return _real_connect_ex(self, address)


def pytest_configure(config: pytest.Config) -> None:
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex


@pytest.fixture(autouse=True)
def no_inherited_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables fit ``COLUMNS`` when it is set (ablate/cli/table_fit.py); the tests about fitting set
    it themselves. A width inherited from the shell, or the 80 that pytest-xdist's workers get,
    would drop columns that other tests read (and reach the CLI subprocesses they start)."""
    monkeypatch.delenv("COLUMNS", raising=False)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's training tests: steadier timings and results on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- PostgreSQL: a throwaway server on loopback, for the storage tests ---------------------------
#
# Debian's server binaries (``.ci/run`` installs the ``postgresql`` package when they are missing);
# the fixture initialises a cluster in a temporary folder, serves it on 127.0.0.1 at a free port
# (TCP only: no unix socket, so a long TMPDIR does not matter) and removes it at the end of the
# session. initdb and postgres refuse to run as root: as root (inside ``unshare -rn`` too) the
# server runs in a nested user namespace that maps the current user to ``nobody``, or else under
# setpriv as ``nobody``.

_PG_USER = "ablate"
_NOBODY = 65534


def _postgres_bindir() -> Path | None:
    """The newest folder holding both ``initdb`` and ``postgres`` (Debian's layout first)."""
    def version(path: Path) -> tuple:
        return tuple(int(p) if p.isdigit() else 0 for p in path.parent.parent.name.split("."))

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    for initdb in [*found, *([Path(on_path)] if on_path else [])]:
        if (initdb.parent / "postgres").exists():
            return initdb.parent
    return None


def _unprivileged_prefix() -> tuple[list[str], bool] | None:
    """(command prefix, whether the server's folder must be chowned to nobody) that runs a
    command as a user other than root; None when no way works here."""
    if os.geteuid() != 0:
        return [], False
    ways = ([["unshare", "--user", f"--map-user={_NOBODY}", f"--map-group={_NOBODY}", "--"], False],
            [["setpriv", f"--reuid={_NOBODY}", f"--regid={_NOBODY}", "--clear-groups", "--"], True])
    for prefix, chown in ways:
        if shutil.which(prefix[0]) is None:
            continue
        try:
            out = subprocess.run([*prefix, "id", "-u"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() not in ("", "0"):
            return prefix, chown
    return None


def _sqlalchemy_postgres_driver() -> str | None:
    for module, dialect in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        try:
            __import__(module)
        except ImportError:
            continue
        return dialect
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A running throwaway PostgreSQL server: ``url(db)`` gives a SQLAlchemy URL (with a password)."""

    def __init__(self, dialect: str, port: int, password: str) -> None:
        self.dialect, self.port, self.password = dialect, port, password
        self.user = _PG_USER
        self._made = 0

    def url(self, database: str = "postgres") -> str:
        return f"{self.dialect}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, hint: str = "db") -> str:
        """A new, empty database; returns its URL."""
        import re

        import sqlalchemy

        self._made += 1
        name = f"t{self._made}_{re.sub(r'[^a-z0-9_]+', '_', hint.lower())}"[:63]
        engine = sqlalchemy.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)


def _wait_ready(server: PostgresServer, proc: subprocess.Popen, timeout: float) -> bool:
    import time

    import sqlalchemy

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        engine = sqlalchemy.create_engine(server.url(), connect_args={"connect_timeout": 2})
        try:
            with engine.connect():
                return True
        except sqlalchemy.exc.OperationalError:
            time.sleep(0.2)
        finally:
            engine.dispose()
    return False


def _stop(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server of Debian's binaries on 127.0.0.1, for this test session only.

    Skips when the binaries or a Python driver are missing, except under CI (``CI`` set),
    where ``.ci/run`` must have installed them and the fixture fails instead.
    """
    import secrets
    import tempfile

    def unavailable(reason: str):
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL tests cannot run in CI: {reason}")
        pytest.skip(reason)

    bindir = _postgres_bindir()
    if bindir is None:
        unavailable("PostgreSQL's server binaries (initdb, postgres) are not installed: .ci/run installs "
                    "Debian's `postgresql` package (apt-get install -y -q postgresql)")
    dialect = _sqlalchemy_postgres_driver()
    if dialect is None:
        unavailable("no PostgreSQL driver for SQLAlchemy: pip install 'psycopg[binary]' (the test extra has it)")
    way = _unprivileged_prefix()
    if way is None:
        unavailable("running as root and neither `unshare --map-user` nor `setpriv` can drop to an unprivileged "
                    "user, which initdb and postgres require")
    prefix, chown = way
    base = Path(tempfile.mkdtemp(prefix="ablate-pg-"))
    proc = None
    try:
        password = secrets.token_hex(12)
        (base / "pw").write_text(password + "\n")
        if chown:
            os.chown(base, _NOBODY, _NOBODY)
            os.chown(base / "pw", _NOBODY, _NOBODY)
        log = base / "server.log"
        init = subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(base / "data"), "-U", _PG_USER,
                               f"--pwfile={base / 'pw'}", "--auth=scram-sha-256", "-E", "UTF8", "--no-sync",
                               "--no-instructions"], capture_output=True, text=True, timeout=120)
        if init.returncode != 0:
            pytest.fail(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        for _ in range(5):  # a free port can be taken between the check and the server's bind
            port = _free_port()
            server = PostgresServer(dialect, port, password)
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    [*prefix, str(bindir / "postgres"), "-D", str(base / "data"), "-h", "127.0.0.1",
                     "-p", str(port), "-k", "", "-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off", "-c", "max_connections=200"],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            if _wait_ready(server, proc, timeout=60):
                break
            _stop(proc)
            proc = None
        else:
            pytest.fail(f"PostgreSQL did not start; its log:\n{log.read_text()[-4000:]}")
        yield server
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server, request) -> str:
    """A fresh, empty database on the session's PostgreSQL server; its SQLAlchemy URL carries a password."""
    return postgres_server.create_database(request.node.name)
