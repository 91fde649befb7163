"""Readers read: `ablate show`/`report`/`export`/`dashboard`, `ablate.results` and `run --dry-run`/
`validate` leave a study database and its folder exactly as they found them (bytes, mtime,
journal mode, the folder's listing), on WAL and DELETE databases, with and without the -wal/-shm
a killed writer leaves, on a read-only file in a read-only folder, and refuse an empty, a foreign
or a missing file in one line that creates nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
from pathlib import Path

import pytest

from ablate.errors import StorageError
from ablate.results import StudyReader, load_results, study_names
from tests.cli_helpers import interrupt, run_cli

PY = sys.executable
_WRITE = textwrap.dedent("""
    import sys
    from ablate.testing.fake_study import write_fake_study
    write_fake_study("sqlite:///" + sys.argv[1], n_trials=12, seed=3)
""")
# A writer that commits and dies without closing: its -wal (holding the last commit) and -shm stay.
_KILLED_WRITER = textwrap.dedent("""
    import os, sqlite3, sys
    conn = sqlite3.connect(sys.argv[1])
    conn.execute("INSERT INTO study_user_attributes (study_id, key, value_json) VALUES (1, 'late', '1')")
    conn.commit()
    if sys.argv[2] == "wal-only":
        os.remove(sys.argv[1] + "-shm")
    os._exit(0)
""")


@pytest.fixture(scope="module")
def wal_template(tmp_path_factory) -> Path:
    """A study database written by its own process, closed cleanly: WAL mode, no -wal/-shm."""
    path = tmp_path_factory.mktemp("template") / "study.db"
    subprocess.run([PY, "-c", _WRITE, str(path)], check=True, timeout=300)
    assert sorted(p.name for p in path.parent.iterdir()) == ["study.db"]
    return path


def _make(template: Path, folder: Path, kind: str) -> Path:
    """A copy of the template in ``folder``: ``wal``, ``delete``, ``wal-left`` (-wal and -shm of a
    killed writer) or ``wal-only`` (its -wal without -shm)."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "study.db"
    shutil.copyfile(template, db)
    if kind == "delete":
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA journal_mode=DELETE")
    elif kind in ("wal-left", "wal-only"):
        subprocess.run([PY, "-c", _KILLED_WRITER, str(db), kind], check=True, timeout=60)
        assert Path(f"{db}-wal").stat().st_size > 0
    return db


def _journal(db: Path) -> str:
    """The journal mode as the file's header says (bytes 18-19: 2 = WAL), read without SQLite."""
    head = db.read_bytes()[:20]
    return "wal" if head[18:20] == b"\x02\x02" else "rollback"


def _state(folder: Path) -> dict:
    """Everything a reader must not change: each file's bytes, mtime and mode, the listing, the journal mode.

    A -shm that exists is SQLite's shared-memory index, not data: every WAL reader records its
    read mark there so that a writer does not overwrite what it reads, so only its presence counts.
    """
    files = {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns, p.stat().st_mode)
             if not p.name.endswith("-shm") else "present" for p in sorted(folder.iterdir())}
    return {"files": files, "folder_mode": folder.stat().st_mode,
            "journal": _journal(folder / "study.db") if (folder / "study.db").exists() else None}


def _study_file(folder: Path, db: Path) -> Path:
    """The repository's window-size study (a grid with reference rows, so `run --dry-run` also
    reads the database's noise) renamed to the generated study and stored in ``db``."""
    text = (Path(__file__).resolve().parents[2] / "studies" / "window_size.yaml").read_text()
    text = text.replace("name: focal-window-size", "name: generated")
    text = text.replace("storage: sqlite:///runs/focal-window-size.db", f"storage: sqlite:///{db}")
    assert f"sqlite:///{db}" in text
    path = folder / "study.yaml"
    path.write_text(text)
    return path


def _python_readers(db: Path) -> None:
    url = f"sqlite:///{db}"
    assert study_names(url) == ["generated"]
    assert len(load_results(url).trials) > 0
    with StudyReader(url) as reader:
        reader.read()
        reader.read()
        reader.importances("top1")


def _cli_commands(db: Path, out_dir: Path) -> list[list[str]]:
    return [["show", str(db)], ["show", str(db), "--format", "json"], ["show", str(db), "--format", "csv"],
            ["show", f"sqlite:///{db}", "--view", "trials"],
            ["report", str(db)], ["report", str(db), "--format", "latex"], ["report", str(db), "--format", "html"],
            ["report", str(db), "-o", str(out_dir / "r.md")], ["report", str(db), "-o", str(out_dir / "r.png")],
            ["export", str(db), "--trial", "0", "-o", str(out_dir / "m.yaml")]]


def _check_cli(code: int, out: str, err: str, args: list[str]) -> None:
    if args[0] == "export":  # a classification study: refused in one line, still a reader
        assert code == 2 and len(err.strip().splitlines()) == 1 and "detection" in err, err
    else:
        assert code == 0, (args, err)
        if "json" in args:
            assert json.loads(out)["study"] == "generated"


def _dashboard(target: str, *, prefix: list[str] = (), cwd: str | None = None) -> None:
    """`ablate dashboard TARGET`: serve, render the studies page through its callback, stop on Ctrl-C."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*prefix, PY, "-m", "ablate", "dashboard", target, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        assert "1 study" in line, line + proc.stderr.read()
        body = json.dumps({"output": "page.children", "outputs": {"id": "page", "property": "children"},
                           "inputs": [{"id": "url", "property": "pathname", "value": "/"},
                                      {"id": "version", "property": "data", "value": None}],
                           "state": [], "changedPropIds": ["url.pathname"]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/_dash-update-component", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as res:
            assert res.status == 200 and b"generated" in res.read()
    finally:
        interrupt(proc, timeout=20)
    assert proc.returncode == 0, proc.stderr.read()


def _late(db: Path, prefix: list[str], cwd: str | None = None) -> str:
    """The study attribute only the killed writer's -wal holds, as a reader sees it."""
    check = ("import sys, optuna; from ablate.storage import open_storage, close_storage; "
             "s = open_storage(sys.argv[1], create=False); "
             "print(optuna.load_study(study_name='generated', storage=s).user_attrs.get('late')); close_storage(s)")
    proc = subprocess.run([*prefix, PY, "-c", check, f"sqlite:///{db}"], capture_output=True, text=True,
                          env=_env(), cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _env() -> dict[str, str]:
    return {**os.environ, "HOME": tempfile.gettempdir(), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


# --------------------------------------------------------------------------- writable folders


@pytest.mark.parametrize("kind", ["wal", "delete", "wal-left", "wal-only"])
def test_readers_leave_a_database_and_its_folder_as_they_were(wal_template, tmp_path, capsys, kind):
    folder, out_dir = tmp_path / "db", tmp_path / "out"
    out_dir.mkdir()
    db = _make(wal_template, folder, kind)
    study_file = _study_file(tmp_path, db)
    before = _state(folder)
    assert before["journal"] == ("rollback" if kind == "delete" else "wal")
    _python_readers(db)
    assert _state(folder) == before, "ablate.results"
    for args in _cli_commands(db, out_dir):
        _check_cli(*run_cli(capsys, *args), args)
        assert _state(folder) == before, args
    for args in (["validate", str(study_file)], ["run", str(study_file), "--dry-run"],
                 ["show", str(study_file), "--format", "json"]):
        code, out, err = run_cli(capsys, *args)
        assert code == 0, (args, err)
        assert _state(folder) == before, args
    if kind in ("wal-left", "wal-only"):  # the commit only the -wal holds is read
        assert _late(db, []) == "1"
        assert _state(folder) == before
    if kind == "wal":
        _dashboard(str(db))
        assert _state(folder) == before, "dashboard"


def test_a_reader_sees_a_running_writer_and_leaves_its_files(wal_template, tmp_path):
    """While a writer holds the database, a reader shares its -wal/-shm, sees its commits, and
    neither removes nor changes them."""
    db = _make(wal_template, tmp_path, "wal")
    writer = sqlite3.connect(db)
    writer.execute("SELECT count(*) FROM trials").fetchall()  # the writer's -wal/-shm exist now
    try:
        with StudyReader(f"sqlite:///{db}") as reader:
            first = reader.read().trials
            writer.execute("DELETE FROM trial_values WHERE trial_id = (SELECT max(trial_id) FROM trials)")
            writer.execute("UPDATE trials SET state = 'RUNNING' WHERE trial_id = (SELECT max(trial_id) FROM trials)")
            writer.commit()
            listing = sorted(p.name for p in tmp_path.iterdir())
            assert listing == ["study.db", "study.db-shm", "study.db-wal"]
            assert load_results(f"sqlite:///{db}").trials["state"].tolist()[-1] == "RUNNING"
            assert len(reader.read().trials) == len(first)
        assert sorted(p.name for p in tmp_path.iterdir()) == listing  # the writer's files stay
    finally:
        writer.close()


# --------------------------------------------------------------------------- read-only file and folder

# Runs `ablate ARGS` for each ARGS of a JSON list in this one process; prints [[code, out, err], ...].
_MANY = textwrap.dedent("""
    import contextlib, io, json, sys
    from ablate.cli import main
    results = []
    for args in json.loads(sys.argv[1]):
        out, err = io.StringIO(), io.StringIO()
        sys.argv = ["ablate", *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        results.append([code, out.getvalue(), err.getvalue()])
    print(json.dumps(results))
""")
_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


def _unprivileged() -> list[str] | None:
    """[] when not root; as root, a prefix that runs a command as nobody (root ignores chmod), or None."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        return None
    probe = subprocess.run([*_NOBODY, PY, "-c", "import os, ablate; print(os.geteuid())"], capture_output=True,
                           text=True, env=_env(), cwd=tempfile.gettempdir())
    return _NOBODY if probe.returncode == 0 and probe.stdout.strip() not in ("", "0") else None


@pytest.mark.parametrize("kind", ["wal", "delete", "wal-left", "wal-only"])
def test_readers_read_a_read_only_database_in_a_read_only_folder(wal_template, capsys, kind):
    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("running as root with no way to drop to an unprivileged user (root ignores chmod)")
    base = Path(tempfile.mkdtemp(prefix="ablate-ro-", dir="/tmp" if prefix else None))
    folder, out_dir = base / "db", base / "out"
    try:
        base.chmod(0o755)
        out_dir.mkdir()
        out_dir.chmod(0o777)
        db = _make(wal_template, folder, kind)
        for p in folder.iterdir():
            p.chmod(0o444)
        folder.chmod(0o555)
        before = _state(folder)
        commands = _cli_commands(db, out_dir)
        if prefix:  # one process as nobody runs every command, in order
            proc = subprocess.run([*prefix, PY, "-c", _MANY, json.dumps(commands)], capture_output=True, text=True,
                                  env=_env(), cwd=str(out_dir), timeout=600)
            assert proc.returncode == 0, proc.stderr
            for args, result in zip(commands, json.loads(proc.stdout.splitlines()[-1]), strict=True):
                _check_cli(*result, args)
        else:
            for args in commands:
                _check_cli(*run_cli(capsys, *args), args)
                assert _state(folder) == before, args
        assert _state(folder) == before
        if prefix:
            code = ("import sys; from ablate.results import load_results; r = load_results(sys.argv[1]); "
                    "print(r.name, len(r.trials), r.spec is not None)")
            proc = subprocess.run([*prefix, PY, "-c", code, f"sqlite:///{db}"], capture_output=True, text=True,
                                  env=_env(), cwd=str(out_dir), timeout=300)
            assert proc.returncode == 0 and proc.stdout.split() == ["generated", "12", "True"], proc.stderr
        else:
            _python_readers(db)
        assert _state(folder) == before
        if kind in ("wal-left", "wal-only"):  # the killed writer's last commit is read too
            assert _late(db, prefix, cwd=str(out_dir)) == "1"
        if kind == "wal":
            _dashboard(str(db), prefix=prefix, cwd=str(out_dir))
        assert _state(folder) == before
    finally:
        for p in (folder, *folder.iterdir()) if folder.exists() else ():
            p.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- not a study database


@pytest.mark.parametrize("content,needle", [(b"", "is an empty file"), (b"name: not a database\n", "not a SQLite file"),
                                            (b"SQLite format 3\x00" + b"\x00" * 84, "")])
def test_an_empty_or_foreign_file_is_one_line_and_unchanged(tmp_path, capsys, content, needle):
    db = tmp_path / "x.db"
    db.write_bytes(content)
    before = _state(tmp_path)
    for args in (["show", str(db)], ["report", str(db)], ["export", str(db), "--trial", "0", "-o",
                                                             str(tmp_path / "m.yaml")]):
        code, out, err = run_cli(capsys, *args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), (args, err)
        assert needle in err and "Traceback" not in err
        assert _state(tmp_path) == before, args
    with pytest.raises(StorageError):
        load_results(f"sqlite:///{db}")
    assert _state(tmp_path) == before


def test_a_missing_database_is_one_line_and_nothing_is_created(tmp_path, capsys):
    missing = tmp_path / "sub" / "missing.db"
    study_file = _study_file(tmp_path, missing)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for args in (["show", str(missing)], ["show", f"sqlite:///{missing}"], ["show", str(study_file)],
                 ["report", str(missing)], ["report", str(study_file)], ["dashboard", str(missing)],
                 ["dashboard", f"sqlite:///{missing}"],
                 ["export", str(missing), "--trial", "0", "-o", str(tmp_path / "m.yaml")]):
        code, out, err = run_cli(capsys, *args)
        assert code == 2 and err.strip().splitlines() == [err.strip()], (args, err)
        assert "no such study database: " in err and "missing.db" in err, (args, err)
        assert sorted(p.name for p in tmp_path.rglob("*")) == before, args
    with pytest.raises(StorageError, match="no such study database: "):
        study_names(f"sqlite:///{missing}")
    assert not missing.parent.exists()
