"""Reaching Ray: addresses that cannot work fail in one line, fast, writing nothing; signals
while connecting; token auth; what a killed driver left is cleaned up by the next run; a long
TMPDIR; and a real 2-node Ray cluster on loopback that spreads a study's trials.

Everything stays on loopback (CI runs this inside ``unshare -rn``). Ray clusters started here
are ``ray start --block`` processes that the tests stop by their own pids.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from ablate.errors import ConfigError
from ablate.run import ray_session, run_study
from ablate.run.ray_cluster import check_address, parse_address, ray_temp_root
from ablate.study import study_from_dict

PY = sys.executable
RAY = str(Path(sys.executable).with_name("ray"))


def _spec(tmp_path: Path, cells: int = 2, **over) -> dict:
    spec = {
        "name": "ray-cluster-test",
        "task": "classify",
        "fixed": {"attention": "softmax", "depths": [1, 1], "embed_dim": 16, "num_heads": 2},
        "grid": {"window_size": list(range(1, cells + 1))},
        "objectives": [{"name": "top1", "direction": "maximize"}],
        "data": {"name": "digits", "image_size": 32},
        "train": {"epochs": 1, "batch_size": 64},
        "resources": {"cpu": 1, "gpu": 0},
        "storage": f"sqlite:///{tmp_path / 'study.db'}",
    }
    spec.update(over)
    return spec


def _study_file(tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path)))
    return path


def _env(**over: str | None) -> dict[str, str]:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env.pop("RAY_AUTH_TOKEN", None)  # a token an earlier local session of this process made
    env.pop("RAY_ADDRESS", None)
    for key, value in over.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_error_line(stderr: str, *needles: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# -- addresses ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("address", "expected"), [
    ("127.0.0.1:6379", ("127.0.0.1", 6379)),
    ("head.example:10001", ("head.example", 10001)),
    ("[::1]:6379", ("::1", 6379)),
    ("auto", None),
])
def test_gcs_addresses_parse(address, expected):
    assert parse_address(address) == expected


@pytest.mark.parametrize(("address", "message"), [
    ("ray://127.0.0.1:10001", "ray:// (Ray Client) is not supported"),
    ("127.0.0.1", "expected HOST:PORT"),
    ("127.0.0.1:0", "expected HOST:PORT"),
    ("http://127.0.0.1:8265", "expected HOST:PORT"),
])
def test_addresses_that_cannot_work_are_refused(address, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_address(address)


_AUTH_LOG = "[...] gcs_client.cc:210: Failed to get cluster ID from GCS server: Unauthenticated: RPC error: InvalidAuthToken"
_HTTP_LOG = "[...] gcs_client.cc:210: Failed to get cluster ID from GCS server: RpcError: RPC error: http2 status: 404\n"


@pytest.mark.parametrize(("env", "log", "expected"), [
    ({}, _AUTH_LOG, "requires token authentication: give this driver its token with RAY_AUTH_TOKEN=TOKEN"),
    ({"RAY_AUTH_TOKEN": "t"}, _AUTH_LOG, "sent none: set RAY_AUTH_MODE=token to send the one from RAY_AUTH_TOKEN"),
    ({"RAY_AUTH_TOKEN": "t", "RAY_AUTH_MODE": "token"}, _AUTH_LOG, "refused the token from RAY_AUTH_TOKEN"),
    ({}, _HTTP_LOG * 2, None),  # Ray is still retrying
    ({}, _HTTP_LOG * 3, "its port answers but not as a Ray GCS (RpcError: RPC error: http2 status: 404)"),
    ({}, "", None),
])
def test_what_rays_client_logs_while_joining_ends_it_early_with_one_line(tmp_path, monkeypatch, env, log, expected):
    from ablate.run.ray_tune import connect_failure

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    err = connect_failure("10.0.0.1:6379", log)
    if expected is None:
        assert err is None
    else:
        assert expected in str(err) and "10.0.0.1:6379" in str(err) and "\n" not in str(err)


def test_a_closed_port_is_refused_at_once():
    port = _free_port()
    start = time.monotonic()
    with pytest.raises(ConfigError, match=rf"cannot reach the Ray cluster at 127.0.0.1:{port}: connection refused"):
        check_address(f"127.0.0.1:{port}")
    assert time.monotonic() - start < 2


@contextmanager
def _blackhole() -> Iterator[int]:
    """A loopback port whose SYNs go unanswered (full accept queue), like a non-routable host."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))  # fills the queue; nothing accepts
    try:
        yield port
    finally:
        filler.close()
        server.close()


@contextmanager
def _silent_server() -> Iterator[tuple[int, list]]:
    """A loopback port that accepts connections and never says a word (Ray's connect hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list = []

    def loop() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=loop, daemon=True).start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        server.close()
        for conn in accepted:
            conn.close()


def _ablate_run(study_file: Path, address: str, env: dict | None = None) -> subprocess.Popen:
    """``ablate run STUDY --address ADDRESS``, by default with a HOME of its own (no ~/.ray/auth_token)."""
    if env is None:
        home = study_file.parent / "home"
        home.mkdir(exist_ok=True)
        env = _env(HOME=str(home))
    return subprocess.Popen([PY, "-m", "ablate", "run", str(study_file), "--address", address, "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.parametrize("kind", ["refused", "no-answer", "silent", "ray-client"])
def test_ablate_run_to_an_unreachable_cluster_exits_2_in_one_line_writing_nothing(tmp_path, kind):
    """refused: nothing listens; no-answer: SYNs dropped (a host that is down or filtered);
    silent: a port that accepts and never speaks (Ray's own connect would retry for minutes)."""
    study_file = _study_file(tmp_path)
    with _blackhole() as hole, _silent_server() as (silent, _):
        address = {"refused": f"127.0.0.1:{_free_port()}", "no-answer": f"127.0.0.1:{hole}",
                   "silent": f"127.0.0.1:{silent}", "ray-client": "ray://127.0.0.1:10001"}[kind]
        start = time.monotonic()
        proc = _ablate_run(study_file, address)
        out, err = proc.communicate(timeout=60)
        seconds = time.monotonic() - start
    assert proc.returncode == 2, (out, err)
    line = _one_error_line(err, address)
    assert seconds < 30, seconds
    assert not (tmp_path / "study.db").exists()  # nothing written
    print(f"{kind}: exit 2 after {seconds:.1f} s: {line}")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_are_honoured_while_connecting(tmp_path, sig, code):
    study_file = _study_file(tmp_path)
    with _silent_server() as (port, accepted):
        proc = _ablate_run(study_file, f"127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while len(accepted) < 2 and time.monotonic() < deadline and proc.poll() is None:  # the probe, then Ray
            time.sleep(0.1)
        assert len(accepted) >= 2, proc.communicate(timeout=30)
        time.sleep(1.0)
        sent = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        seconds = time.monotonic() - sent
    assert proc.returncode == code, (out, err)
    assert "Traceback" not in err and seconds < 5, (seconds, err)
    assert not (tmp_path / "study.db").exists()
    print(f"{sig.name} while connecting: exit {code} {seconds:.1f} s later")


# -- Ray nodes started here -----------------------------------------------------------------------

def _node_env(tmp_root: str, **over: str) -> dict[str, str]:
    # Ray's default cluster mode (its loopback-only mode refuses a second node; in a network
    # namespace with only `lo`, as in CI, every node is on 127.0.0.1 anyway); a known auth
    # mode (a ~/.ray/auth_token would switch token auth on); a short temp root for the sockets.
    return _env(**{"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": tmp_root,
                   **over})


@contextmanager
def _ray_nodes(count: int, env: dict[str, str], cpus: int = 1) -> Iterator[str]:
    """A head and ``count - 1`` more nodes on 127.0.0.1 (``ray start --block``, custom resources
    ``node0``, ``node1``, ...); yields the GCS address; stops them by their pids."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []
    family: dict[int, float] = {}

    def ports() -> list[str]:
        return ["--dashboard-agent-listen-port", str(_free_port()), "--metrics-export-port", str(_free_port())]

    def remember() -> None:
        for p in procs:
            try:
                for q in [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]:
                    family.setdefault(q.pid, q.create_time())
            except psutil.Error:
                pass

    common = ["--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--disable-usage-stats"]
    try:
        head = [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false",
'--resources={"node0": 1}', *common, *ports()]
        log_path = Path(env["RAY_TMPDIR"]) / "ray-start.log"
        log = log_path.open("ab")
        procs.append(subprocess.Popen(head, env=env, stdout=log, stderr=subprocess.STDOUT))
        _wait_port(port, procs[0], 90, log_path)
        for i in range(1, count):
            node = [RAY, "start", f"--address={address}", f'--resources={{"node{i}": 1}}', *common, *ports()]
            procs.append(subprocess.Popen(node, env=env, stdout=log, stderr=subprocess.STDOUT))
        time.sleep(1)
        remember()
        yield address
    finally:
        remember()
        for p in reversed(procs):
            p.terminate()  # `ray start --block` stops its node's processes on SIGTERM
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        _kill_left(family)


def _wait_port(port: int, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"ray start --head exited: {log.read_text()[-3000:]}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"no Ray head on port {port} after {timeout_s} s")


def _alive(pid: int, create_time: float) -> bool:
    try:
        return abs(psutil.Process(pid).create_time() - create_time) < 0.05
    except psutil.Error:
        return False


def _kill_left(family: dict[int, float]) -> None:
    left = [psutil.Process(pid) for pid, t in family.items() if _alive(pid, t)]
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=10)


_JOIN = """
import sys
import ray
from ablate.run import ray_session


class Echo:
    def ping(self):
        return 1


with ray_session(sys.argv[1]):
    # An actor, as Tune's trials are: a driver whose token mode differs from the cluster's joins
    # and runs tasks, but its actors never start.
    echo = ray.remote(num_cpus=0)(Echo).remote()
    assert ray.get(echo.ping.remote(), timeout=60) == 1
    print(ray.cluster_resources()["CPU"])
"""


def node_trial(study, params, report, *, device="cpu", repeat=0, candidate=None, out: str):
    """Records the node it ran on; trains nothing."""
    import ray

    start = time.time()
    time.sleep(2.0)
    with open(out, "a") as f:
        f.write(json.dumps({"node": ray.get_runtime_context().get_node_id(), "start": start, "end": time.time(),
                            "window_size": study.candidate(params)["window_size"]}) + "\n")
    report({"epoch": 1, "top1": 1.0, "epochs_done": 1})


def test_a_two_node_cluster_on_loopback_spreads_trials_in_a_fresh_driver_process(tmp_path):
    """The driver is a process of its own, as `ablate run` is: Ray keeps the auth token of a
    process's first session (a local run's) for the life of the process, and an earlier test's
    local Ray in this pytest process would make a cluster without auth cancel every trial."""
    if os.environ.get("ABLATE_TWO_NODE_CHILD"):
        pytest.skip("the child process runs the test body itself")
    target = f"{__file__}::_two_node_cluster_spreads_trials"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
                           "python_functions=_two_node_*", target, "--basetemp", str(tmp_path / "child")],
                          env={**os.environ, "ABLATE_TWO_NODE_CHILD": "1"}, capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0 and " passed" in done.stdout, (done.stdout + done.stderr)[-4000:]


def _two_node_cluster_spreads_trials(tmp_path):
    root = tempfile.mkdtemp(prefix="ablate-ray-test-", dir="/tmp")
    out = tmp_path / "trials.jsonl"
    begin = time.monotonic()
    try:
        with _ray_nodes(2, _node_env(root)) as address:
            with ray_session(address):
                import ray  # after ray_session: it sets how Ray treats a loopback address before the import
                from ray import cloudpickle

                cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests/
                deadline = time.monotonic() + 60
                while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
                    time.sleep(0.3)
                nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
                assert len(nodes) == 2
                study = study_from_dict(_spec(tmp_path, 4), check=False)
                summary = run_study(study, address=address, trial_fn=functools.partial(node_trial, out=str(out)),
                                    progress=False)
            # A token this driver knows (a stale ~/.ray/auth_token) is not sent to a cluster without auth.
            home = tmp_path / "home"
            (home / ".ray").mkdir(parents=True)
            (home / ".ray" / "auth_token").write_text("f" * 64)
            joined = subprocess.run([PY, "-c", _JOIN, address], env=_env(HOME=str(home)), capture_output=True,
                                    text=True, timeout=120)
            assert joined.returncode == 0, joined.stderr[-3000:]
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary.states == {"COMPLETE": 4} and len(rows) == 4
    assert {r["node"] for r in rows} == nodes, rows  # both nodes trained
    assert summary.concurrency == 2
    print(f"2 nodes: trials per node {sorted([r['node'][:8] for r in rows])}, "
          f"{time.monotonic() - begin:.1f} s with the cluster's start and stop")


# -- tokens -----------------------------------------------------------------------------------------



def test_a_cluster_with_token_auth_is_joined_with_the_token_and_refused_in_one_line_without(tmp_path):
    root = tempfile.mkdtemp(prefix="ablate-ray-test-", dir="/tmp")
    token = "0123456789abcdef" * 4
    home = tmp_path / "home"
    home.mkdir()
    try:
        with _ray_nodes(1, _node_env(root, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, HOME=str(home))) as address:
            start = time.monotonic()
            proc = _ablate_run(_study_file(tmp_path), address, env=_env(HOME=str(home)))
            out, err = proc.communicate(timeout=90)
            seconds = time.monotonic() - start
            assert proc.returncode == 2, (out, err)
            line = _one_error_line(err, address, "requires token authentication", "RAY_AUTH_TOKEN")
            assert not (tmp_path / "study.db").exists()
            joined = subprocess.run([PY, "-c", _JOIN, address], env=_env(HOME=str(home), RAY_AUTH_TOKEN=token),
                                    capture_output=True, text=True, timeout=90)
            assert joined.returncode == 0, joined.stderr
            assert float(joined.stdout.split()[-1]) == 1.0
            wrong = _ablate_run(_study_file(tmp_path), address, env=_env(HOME=str(home), RAY_AUTH_TOKEN="f" * 64))
            _, wrong_err = wrong.communicate(timeout=90)
            assert wrong.returncode == 2
            _one_error_line(wrong_err, "refused the token from RAY_AUTH_TOKEN")
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    assert not (home / ".ray" / "auth_token").exists()
    print(f"token auth without a token: exit 2 after {seconds:.1f} s: {line}")


# -- local runs: a long TMPDIR, no token file, a killed predecessor -----------------------------------

_DRIVER = """
import json, os, sys, time
from ablate.run import run_study
from ablate.study import study_from_dict


def trial(study, params, report, *, device="cpu", repeat=0, candidate=None):
    with open(os.environ["TRIAL_LOG"], "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "ray_tmpdir": os.environ.get("RAY_TMPDIR"),
                            "auth_mode": os.environ.get("RAY_AUTH_MODE")}) + "\\n")
    time.sleep(float(os.environ.get("TRIAL_SLEEP", "0")))
    report({"epoch": 1, "top1": 1.0, "epochs_done": 1})


summary = run_study(study_from_dict(json.loads(sys.argv[1]), check=False), trial_fn=trial, progress=False,
                    num_cpus=1)
print(json.dumps(summary.states))
"""


def test_a_local_run_under_a_long_tmpdir_uses_a_short_session_dir_and_writes_no_token(tmp_path):
    long_tmp = tmp_path / ("t" * (150 - len(str(tmp_path)) - 1))
    long_tmp.mkdir()
    assert len(str(long_tmp)) == 150
    home = tmp_path / "home"
    home.mkdir()
    log = tmp_path / "trials.jsonl"
    (tmp_path / "driver.py").write_text(_DRIVER)
    env = _env(TMPDIR=str(long_tmp), HOME=str(home), TRIAL_LOG=str(log), XDG_CACHE_HOME=str(tmp_path / "cache"),
               RAY_AUTH_MODE=None, RAY_TMPDIR=None)
    done = subprocess.run([PY, str(tmp_path / "driver.py"), json.dumps(_spec(tmp_path, 1))], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"COMPLETE": 1}
    row = json.loads(log.read_text().splitlines()[0])
    assert row["ray_tmpdir"].startswith("/tmp/ablate-rs-"), row  # not under the long TMPDIR
    assert not os.path.exists(row["ray_tmpdir"])  # removed with the session
    assert row["auth_mode"] == "token"  # Ray's default for a new local cluster, kept ...
    assert not (home / ".ray").exists()  # ... with a per-process token: no ~/.ray/auth_token
    assert not list((tmp_path / "cache" / "ablate" / "ray-sessions").iterdir())  # record removed


def test_ray_temp_root_is_short_enough_for_unix_sockets(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path / ("x" * 120)))
    root = ray_temp_root()
    try:
        assert root.startswith("/tmp/ablate-rs-")
        assert len(root) + len("/ray/session_2026-12-03_10-37-03_546407_4194304/sockets/plasma_store") <= 107
    finally:
        os.rmdir(root)
    monkeypatch.setenv("RAY_TMPDIR", "/nonexistent/dir")  # Ray's own variable first, unusable: /tmp
    root = ray_temp_root()
    try:
        assert root.startswith("/tmp/ablate-rs-")
    finally:
        os.rmdir(root)
    monkeypatch.delenv("RAY_TMPDIR")
    short = Path(tempfile.mkdtemp(prefix="t-", dir="/tmp"))
    monkeypatch.setenv("TMPDIR", str(short))  # short enough: used
    try:
        root = ray_temp_root()
        os.rmdir(root)
        assert os.path.dirname(root) == str(short)
    finally:
        short.rmdir()


def test_the_next_run_cleans_up_what_a_killed_driver_left(tmp_path):
    log = tmp_path / "trials.jsonl"
    cache = tmp_path / "cache"
    (tmp_path / "driver.py").write_text(_DRIVER)
    env = _env(TRIAL_LOG=str(log), TRIAL_SLEEP="300", XDG_CACHE_HOME=str(cache))
    driver = subprocess.Popen([PY, str(tmp_path / "driver.py"), json.dumps(_spec(tmp_path, 1))], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sessions = cache / "ablate" / "ray-sessions"
    try:
        deadline = time.monotonic() + 180
        while not (log.exists() and log.read_text().strip()) and time.monotonic() < deadline:
            assert driver.poll() is None, "the driver exited"
            time.sleep(0.3)
        time.sleep(2.5)  # one more refresh of the record (every 2 s)
        record = json.loads((sessions / f"{socket.gethostname()}-{driver.pid}.json").read_text())
        dirs = record["dirs"] + (sessions / f"{socket.gethostname()}-{driver.pid}.dirs").read_text().split()
    finally:
        driver.kill()  # SIGKILL: no finally, no atexit
        driver.wait(30)
    procs = {int(pid): t for pid, t in record["procs"]}
    worker = json.loads(log.read_text().splitlines()[0])["pid"]
    assert worker in procs and len(procs) >= 4  # gcs, raylet, agents, the trial's worker, ...
    assert len(dirs) == 2 and all(os.path.isdir(d) for d in dirs)  # Ray's session root, Tune's directory
    lingering = [pid for pid, t in procs.items() if _alive(pid, t)]
    start = time.monotonic()
    nxt = subprocess.run([PY, "-c", "from ablate.run import ray_session\nwith ray_session(num_cpus=1): pass"],
                         env=_env(XDG_CACHE_HOME=str(cache)), capture_output=True, text=True, timeout=180)
    seconds = time.monotonic() - start
    try:
        assert nxt.returncode == 0, nxt.stderr[-3000:]
        assert not [pid for pid, t in procs.items() if _alive(pid, t)]
        assert not [d for d in dirs if os.path.exists(d)]
        assert not list(sessions.iterdir())
    finally:
        _kill_left(procs)
    print(f"killed driver: {len(lingering)} of its {len(procs)} Ray processes still alive when the next run "
          f"started; the next run (start and stop of its own Ray included) took {seconds:.1f} s and left none, "
          f"and removed {len(dirs)} directories")
