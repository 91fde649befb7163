"""Reaching Ray safely: the address check, bounded connects, token auth, a short session
path, signals while connecting, and the records that let a run clean up what a killed
predecessor left on this machine.

Nothing here imports Ray at module level (``ablate run --help`` stays instant) and the checks
that run before the database is created (:func:`check_address`) never import it at all.
Ray's public knobs are used: ``RAY_TMPDIR``, ``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN`` /
``RAY_AUTH_TOKEN_PATH`` / ``~/.ray/auth_token`` (Ray's token-auth guide), ``ray status``.

Why (ray 2.60, measured): ``ray.init(address=...)`` to an unreachable host retries for
minutes and, in the main thread, swaps SIGTERM for a ``sys.exit`` that waits for the C++
connect, so a TCP probe answers first and the connect runs in a thread the caller can
abandon (:func:`bounded`); a *local* Ray must start in the main thread (Ray ties its daemons
to the starting thread with ``PR_SET_PDEATHSIG``). A new local Ray writes ``~/.ray/auth_token``
when no token is known, and a later ``ray start --head`` enforces it: local runs use a
per-process ``RAY_AUTH_TOKEN`` instead. A driver's token mode must match its cluster's
(:func:`auth_env`). A SIGKILLed driver leaves Ray's agents for 60-120 s and its directories
forever: sessions are recorded (:class:`SessionRecord`) and the next run cleans up after
dead drivers, by pid and start time, never by process name. Ray's AF_UNIX socket paths
(107 bytes at most) live under the temp dir: each local session gets a short root.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ablate.errors import ConfigError

__all__ = ["Interrupted", "interrupt_on_signals", "bounded", "parse_address", "is_loopback", "check_address",
           "connect_hint", "token_advice", "token_source", "auth_env", "cluster_wants_token",
           "ray_temp_root", "SessionRecord", "record_dir", "clean_stale_sessions", "sessions_dir", "PROBE_TIMEOUT_S",
           "CONNECT_TIMEOUT_S"]

#: Seconds a TCP probe of the cluster's GCS port may take.
PROBE_TIMEOUT_S = 5.0
#: Seconds from the start of a connect (probe included) to giving up with one line.
CONNECT_TIMEOUT_S = 20.0
#: Longest AF_UNIX path on Linux (108 bytes with the NUL) and what Ray appends to its temp
#: root: ``/ray/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store``.
_UNIX_PATH_MAX = 107
_RAY_SOCKET_TAIL = len("/ray/session_2026-12-03_10-37-03_546407_4194304/sockets/plasma_store")
_TOKEN_FILE = Path("~/.ray/auth_token")
_T = TypeVar("_T")


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``exit_code`` is the shell's ``128 + signal``."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def interrupt_on_signals(on_signal: Callable[[int], None] | None = None) -> Iterator[list[int]]:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread while inside.

    Yields the list of signals received (``on_signal`` is called first with each). Outside
    the main thread (a test runner's worker thread) nothing is installed. The previous
    handlers come back on exit.
    """
    received: list[int] = []

    def handler(signum, frame):  # noqa: ANN001
        received.append(signum)
        if on_signal is not None:
            on_signal(signum)
        raise Interrupted(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def bounded(fn: Callable[[], _T], timeout_s: float, on_timeout: Callable[[], BaseException],
            watch: Callable[[], BaseException | None] | None = None) -> _T:
    """``fn()`` in a daemon thread; the caller waits at most ``timeout_s`` and stays
    responsive to signals (the wait wakes every 0.1 s). On timeout the thread is abandoned
    and ``on_timeout()`` is raised; so is what ``watch()`` returns, asked at every wake-up,
    when it returns an exception. ``fn``'s own exception is re-raised as is."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # handed to the caller
            box["error"] = err

    thread = threading.Thread(target=target, name="ablate-ray-connect", daemon=True)
    deadline = time.monotonic() + max(0.0, timeout_s)
    thread.start()
    while thread.is_alive():
        left = deadline - time.monotonic()
        if left <= 0:
            raise on_timeout()
        thread.join(min(0.1, left))
        early = watch() if watch is not None and thread.is_alive() else None
        if early is not None:
            raise early
    if "error" in box:
        raise box["error"]
    return box["value"]


def parse_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a GCS address ``HOST:PORT`` (IPv6 in brackets); None for ``auto``.

    Raises:
        ConfigError: a ``ray://`` (Ray Client) address, or no port.
    """
    text = address.strip()
    if text == "auto":
        return None
    if text.startswith("ray://"):
        raise ConfigError(
            f"--address {address}: ray:// (Ray Client) is not supported: Ray Client runs Ray Tune on the head "
            f"node, away from this driver's study storage and searcher; give the head's GCS address instead "
            f"(HOST:6379, what `ray start --head` prints) from a machine that reaches the cluster, or start the "
            f"run on the cluster: `ray job submit -- ablate run STUDY --address auto`")
    if "://" in text:
        raise ConfigError(f"--address {address}: expected HOST:PORT, the head's GCS address (port 6379 by default)")
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--address {address}: expected HOST:PORT, the head's GCS address "
                          f"(`ray start --head` prints it; port 6379 by default)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _unreachable(address: str, port: int, why: str) -> ConfigError:
    return ConfigError(f"cannot reach the Ray cluster at {address}: {why}; check that `ray start --head` runs "
                       f"there, that {port} is its GCS port (`ray start --head --port`, 6379 by default) and that "
                       f"this machine can reach it (host name, firewall)")


def check_address(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Refuse an address that cannot work, in at most ``timeout_s`` and without importing Ray:
    its form (``ray://``, a missing port) and a TCP connect to its GCS port.

    Raises:
        ConfigError: one line naming the address and what to check.
        Interrupted: SIGINT/SIGTERM while probing (in the main thread).
    """
    parsed = parse_address(address)
    if parsed is None:
        return
    host, port = parsed

    def probe() -> None:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass

    def timed_out() -> ConfigError:
        return _unreachable(address, port, f"no answer within {timeout_s:g} s")

    try:
        with interrupt_on_signals():
            bounded(probe, timeout_s + 0.5, timed_out)
    except ConnectionRefusedError:
        raise _unreachable(address, port, f"connection refused (nothing listens on port {port})") from None
    except socket.gaierror as err:
        raise _unreachable(address, port, f"unknown host {host!r} ({err.strerror})") from None
    except (socket.timeout, TimeoutError):
        raise timed_out() from None
    except OSError as err:
        raise _unreachable(address, port, err.strerror or str(err)) from None


def token_source() -> str | None:
    """Where Ray would find a token for this process, or None: ``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return f"RAY_AUTH_TOKEN_PATH={path}" if Path(path).expanduser().is_file() else None
    if _TOKEN_FILE.expanduser().is_file():
        return str(_TOKEN_FILE)
    return None


def auth_env(address: str | None, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[dict[str, str], dict[str, str]]:
    """Environment for Ray's token auth: ``(for the session, for the process)``.

    A local Ray (``address`` None) with token auth on and no token known gets a random
    per-process token in ``RAY_AUTH_TOKEN`` (kept for the process: Ray caches the token it
    first read), so Ray writes no ``~/.ray/auth_token``. Joining a cluster: Ray never turns
    token auth on for an explicit address, and token mode must match the cluster's (a
    token-mode driver on a cluster without auth joins, but its workers' calls back to it are
    refused and every Tune trial dies), so with a token known the cluster is asked first
    (:func:`cluster_wants_token`) and ``RAY_AUTH_MODE=token`` is set only when it wants one.
    An explicit ``RAY_AUTH_MODE`` is always respected.
    """
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.lower() != "token":
        return {}, {}
    if address is None:
        return {}, ({} if token_source() else {"RAY_AUTH_TOKEN": secrets.token_hex(32)})
    if mode is None and token_source() and cluster_wants_token(address, timeout_s):
        return {"RAY_AUTH_MODE": "token"}, {}
    return {}, {}


def cluster_wants_token(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the cluster refuses a client without a token: Ray's public ``ray status
    --address`` run with token auth off (about 0.5 s). Unknown (no answer in ``timeout_s``,
    the ray command missing) counts as no."""
    import subprocess

    ray_cli = Path(sys.executable).with_name("ray")
    command = [str(ray_cli)] if ray_cli.exists() else [sys.executable, "-m", "ray.scripts.scripts"]
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    try:
        done = subprocess.run([*command, "status", f"--address={address}"], env=env, capture_output=True,
                              text=True, timeout=timeout_s)
    except (subprocess.TimeoutExpired, OSError):
        return False
    text = done.stdout + done.stderr
    return done.returncode != 0 and ("InvalidAuthToken" in text or "Unauthenticated" in text)


_GIVE_TOKEN = "RAY_AUTH_TOKEN=TOKEN or RAY_AUTH_TOKEN_PATH=FILE (`ray get-auth-token` on the head node prints it)"


def token_advice(known_refusal: bool = True) -> str:
    """What a cluster that refused this driver's token (or its lack of one) wants, by where
    the token would come from and whether one was sent (``RAY_AUTH_MODE=token``);
    ``known_refusal=False`` words it as a possibility."""
    source = token_source()
    sent = (os.environ.get("RAY_AUTH_MODE") or "").lower() == "token"
    if source is None:
        what, todo = "requires token authentication", f"give this driver its token with {_GIVE_TOKEN}"
    elif not sent:
        what = "requires token authentication and this driver sent none"
        todo = f"set RAY_AUTH_MODE=token to send the one from {source}, or give it with {_GIVE_TOKEN}"
    else:
        what, todo = f"refused the token from {source}", f"give the cluster's token with {_GIVE_TOKEN}"
    return f"{what}: {todo}" if known_refusal else f"if the cluster uses token authentication, {todo}"


def connect_hint(address: str, ray_version: str) -> str:
    """What to check when a cluster answered on its port but Ray could not join it."""
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    return (f"{token_advice(known_refusal=False)}; else check that {address} is a Ray GCS running Ray "
            f"{ray_version} and Python {py}, like this driver")


def ray_temp_root() -> str:
    """A fresh directory for one local Ray session (Ray's ``RAY_TMPDIR``), short enough for
    Ray's AF_UNIX socket paths: under ``RAY_TMPDIR`` or ``TMPDIR`` (Ray's own choice on
    Linux) when those are short, else under ``/tmp``."""
    base = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    name_len = len("/ablate-rs-") + 8  # mkdtemp's random suffix
    if len(os.path.abspath(base)) + name_len + _RAY_SOCKET_TAIL > _UNIX_PATH_MAX or not os.path.isdir(base) \
            or not os.access(base, os.W_OK | os.X_OK):  # a read-only TMPDIR: Python's tempfile skips it too
        base = "/tmp"
    return tempfile.mkdtemp(prefix="ablate-rs-", dir=base)


def sessions_dir() -> Path:
    """Where running drivers record their Ray sessions: ``ray-sessions`` in ablate's private
    cache folder (:func:`ablate.cache.cache_dir`, e.g. ``$XDG_CACHE_HOME/ablate/ray-sessions``).
    Private and checked for its owner: a record names processes to stop and folders to remove."""
    from ablate.cache import cache_dir

    return cache_dir("ray-sessions")


def _me() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def record_dir(path: str) -> None:
    """Add ``path`` to this driver's session record (removed if the driver is killed).
    Nothing happens when this process records no session."""
    where = sessions_dir() / f"{_me()}.dirs"
    if where.with_suffix(".json").exists():
        with where.open("a") as f:
            f.write(os.path.abspath(path) + "\n")


class SessionRecord:
    """What one driver's Ray session put on this machine, on disk while the session lives.

    ``<sessions_dir>/<host>-<pid>.json`` holds the driver's pid and start time, the Ray
    processes (pid and start time: Ray's children of the driver and their descendants,
    refreshed every ``every_s`` while the session lives) and the session's directories;
    ``<host>-<pid>.dirs`` lists more directories (:func:`record_dir`).
    """

    def __init__(self, dirs: list[str], every_s: float = 2.0) -> None:
        import psutil

        self.path = sessions_dir() / f"{_me()}.json"
        self.dirs = [os.path.abspath(d) for d in dirs]
        self.procs: dict[int, float] = {}
        self._me = psutil.Process()
        self._before = {p.pid for p in self._me.children()}
        self._roots: list[Any] = []
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.save()

    def save(self) -> None:
        """Write the record (atomically); a cache directory that cannot be written leaves the
        session unrecorded rather than failing the run."""
        data = {"host": socket.gethostname(), "pid": os.getpid(), "create_time": self._me.create_time(),
                "procs": [[pid, t] for pid, t in sorted(self.procs.items())], "dirs": self.dirs}
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
        except OSError:
            pass

    def adopt(self) -> None:
        """Take the driver's children that appeared since the record was made (Ray's daemons)
        as the roots whose descendants are Ray's, and record them."""
        if not self._roots:
            self._roots = [p for p in self._me.children() if p.pid not in self._before]
        self.refresh()

    def track(self) -> None:
        """:meth:`adopt`, then refresh every ``every_s`` while the session lives."""
        self.adopt()
        self._thread = threading.Thread(target=self._loop, name="ablate-ray-record", daemon=True)
        self._thread.start()

    def refresh(self) -> None:
        import psutil

        seen = dict(self.procs)
        for root in self._roots:
            try:
                family = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for p in family:
                try:
                    seen.setdefault(p.pid, p.create_time())
                except psutil.Error:
                    pass
        if seen != self.procs:
            self.procs = seen
            self.save()

    def _loop(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self.refresh()
            except Exception:  # a record that lags is better than a driver that dies
                pass

    def close(self) -> None:
        """End of the session: stop refreshing, stop what Ray left running (a Ray that failed
        to start included), remove the session's directories and the record."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            self.adopt()
        except Exception:  # the record as it stands is cleaned all the same
            pass
        _clean(self.path, {"procs": [[pid, t] for pid, t in self.procs.items()], "dirs": self.dirs})


def _same(pid: int, create_time: float) -> Any:
    """The process ``pid`` if it is still the one recorded (same start time, our user)."""
    import psutil

    try:
        p = psutil.Process(pid)
        if abs(p.create_time() - create_time) > 0.05 or p.uids().real != os.getuid():
            return None
        return p
    except psutil.Error:
        return None


def _clean(record: Path, data: dict[str, Any] | None = None) -> dict[str, list]:
    """Stop the processes and remove the directories ``record`` lists (or ``data``, what a
    live session knows), then the record."""
    import psutil

    if data is None:
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            data = {}
    extra = record.with_suffix(".dirs")
    try:
        more = [line.strip() for line in extra.read_text().splitlines() if line.strip()]
    except OSError:
        more = []
    procs = [p for p in (_same(int(pid), float(t)) for pid, t in data.get("procs", [])) if p is not None]
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=3)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=3)
    removed = []
    for d in [*data.get("dirs", []), *more]:
        # Only what ablate made: a corrupt record must not remove anything else.
        if os.path.basename(d.rstrip("/")).startswith("ablate-") and os.path.isdir(d):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    for f in (record, extra):
        f.unlink(missing_ok=True)
    return {"killed": [p.pid for p in procs], "removed": removed}


def clean_stale_sessions() -> list[dict[str, Any]]:
    """Stop and remove what drivers on this host left when they died without cleaning up
    (SIGKILL, OOM kill, power loss): their Ray processes, by recorded pid and start time,
    and their directories. Records of live drivers are left alone.

    Returns:
        One entry per dead driver cleaned: ``{"pid", "killed": [pids], "removed": [dirs]}``.
    """
    where = sessions_dir()
    done = []
    for record in sorted(where.glob(f"{socket.gethostname()}-*.json")):
        try:
            data = json.loads(record.read_text())
            pid, started = int(data["pid"]), float(data["create_time"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours to judge
        if data.get("host") != socket.gethostname():
            continue  # another host's (a shared home directory)
        if _same(pid, started) is not None:
            continue  # that driver is alive
        done.append({"pid": pid, **_clean(record)})
    return done
