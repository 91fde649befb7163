"""Hostile environments through the command line: a full disk, a read-only study or storage
folder, a read-only or long TMPDIR, a cache folder that is not the user's. Each refusal is
exit 2, exactly one ``error:`` line on stderr, no traceback, and nothing half-written.

Real conditions where the machine allows them: /dev/full; a size-limited tmpfs (a real
ENOSPC) and read-only bind mounts (a real EROFS) inside ``unshare -rm`` (a user and mount
namespace; also works nested inside CI's ``unshare -rn``). Where not, ``os.write`` or a
library call is made to raise the OS error. As root, folder permissions do not stop writes,
so "not writable" is a read-only mount, or a patched ``os.access``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shlex
import sqlite3
import stat
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from tests.cli_helpers import run_cli

ABLATE = str(Path(sys.executable).with_name("ablate"))

STUDY = """\
name: env
space: ../spaces/focal.yaml
fixed: {depths: [1, 1], embed_dim: 16, num_heads: 2, focal_level: 2, focal_window: 3, expand_size: 1}
grid: {window_size: [2]}
objectives: [{name: top1, direction: maximize}, {name: gflops, direction: minimize}]
data: {name: digits, image_size: 16}
train: {epochs: 1, batch_size: 128, lr: 3.0e-3}
resources: {cpu: 1}
paper_resolution: 64
storage: sqlite:///runs/env.db
"""


# -- helpers -------------------------------------------------------------------------------------

def _tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of its content (folders: "dir")."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _one_error_line(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@lru_cache(maxsize=1)
def _namespaces() -> bool:
    """Can this machine give a process its own user and mount namespace (tmpfs, ro binds)?"""
    try:
        probe = subprocess.run(["unshare", "-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=16k tmpfs "
                                "$d && umount $d && rmdir $d"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


needs_namespaces = pytest.mark.skipif(not _namespaces(), reason="no user+mount namespaces (unshare -rm)")


def _sandboxed(args: list[str], *, cwd: Path, env: dict[str, str], read_only: tuple[Path, ...] = (),
               tmpfs: dict[Path, str] | None = None, fill: Path | None = None,
               timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``args`` in a user+mount namespace with ``tmpfs`` (folder: size) mounted, ``fill``
    written until that disk is full, then ``read_only`` folders made read-only."""
    steps = [f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(p))}" for p, size in (tmpfs or {}).items()]
    if fill is not None:
        steps.append(f"(cat /dev/zero > {shlex.quote(str(fill))}) 2>/dev/null; true")
    steps += [f"mount --bind {shlex.quote(str(p))} {shlex.quote(str(p))} && "
              f"mount -o remount,bind,ro {shlex.quote(str(p))}" for p in read_only]
    script = " && ".join(steps + ['exec "$@"'])
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ABLATE_HOME", "XDG_CACHE_HOME", "YOLO_CONFIG_DIR",
                                                             "ABLATE_DEBUG", "TMPDIR")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {**env, "HOME": str(home), "PYTHONUNBUFFERED": "1", **extra}


def _project(root: Path) -> Path:
    (root / "spaces").mkdir(parents=True)
    (root / "spaces" / "focal.yaml").write_text("fixed: {attention: focal}\nparams:\n  window_size: {choice: [2, 4]}\n")
    (root / "studies").mkdir()
    (root / "studies" / "env.yaml").write_text(STUDY)
    return root / "studies" / "env.yaml"


@pytest.fixture(scope="module")
def fake_db(tmp_path_factory) -> Path:
    from ablate.testing.fake_study import write_fake_study

    db = tmp_path_factory.mktemp("db") / "fake.db"
    write_fake_study(f"sqlite:///{db}", n_trials=12, name="fake")
    return db


@pytest.fixture(scope="module")
def det_db(tmp_path_factory) -> Path:
    """A detection study with one stored YOLO candidate (what `ablate export` writes out)."""
    import optuna

    from ablate.models import yolo

    arch = yolo.resolve_yolo_arch({"base": "yolov8n", "attention": "flatten", "placement": "sppf", "img_size": 64})
    db = tmp_path_factory.mktemp("det") / "det.db"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{db}", study_name="det", directions=["maximize", "minimize"])
    study.set_user_attr("spec", {"name": "det", "task": "detect"})
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, values=[0.1, 1.0],
                                              user_attrs={"arch": arch}))
    return db


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# -- a full disk ---------------------------------------------------------------------------------

@pytest.mark.parametrize("existing", [False, True])
def test_report_on_a_full_disk_leaves_no_partial_file(tmp_path, capsys, monkeypatch, fake_db, existing):
    out = tmp_path / "out" / "report.md"
    out.parent.mkdir()
    if existing:
        out.write_text("the previous report\n")
    before = _tree(tmp_path)
    monkeypatch.setattr(os, "write", _enospc)
    code, _, err = run_cli(capsys, "report", str(fake_db), "-o", str(out))
    monkeypatch.undo()
    line = _one_error_line(code, err)
    assert line == f"error: {out}: No space left on device, free space on that disk or choose a folder on another one"
    assert _tree(tmp_path) == before


def test_report_to_dev_full_is_one_line(capsys, fake_db, monkeypatch):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    code, _, err = run_cli(capsys, "report", str(fake_db), "-o", "/dev/full")
    assert _one_error_line(code, err).startswith("error: /dev/full: No space left on device, ")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)  # a device is written through, never replaced
    monkeypatch.setenv("ABLATE_DEBUG", "1")  # tracebacks always
    with pytest.raises(OSError, match="No space left on device"):
        run_cli(capsys, "report", str(fake_db), "-o", "/dev/full")


@pytest.mark.parametrize("command", [["show"], ["show", "--format", "json"]])
def test_standard_output_on_a_full_disk_is_one_line(tmp_path, fake_db, command):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([ABLATE, command[0], str(fake_db), *command[1:]], stdout=full, stderr=subprocess.PIPE,
                              text=True, env=_env(tmp_path), timeout=120)
    line = _one_error_line(proc.returncode, proc.stderr)
    assert line.startswith("error: standard output: No space left on device, "), line


def test_schema_on_a_full_disk(tmp_path, capsys, monkeypatch):
    out = tmp_path / "study.schema.json"
    monkeypatch.setattr(os, "fsync", _enospc)
    code, _, err = run_cli(capsys, "schema", "study", "-o", str(out))
    monkeypatch.undo()
    assert _one_error_line(code, err).startswith(f"error: {out}: No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_export_on_a_full_disk(tmp_path, capsys, monkeypatch, det_db):
    out = tmp_path / "out" / "yolov8n-best.yaml"
    out.parent.mkdir()
    monkeypatch.setattr(os, "write", _enospc)
    code, _, err = run_cli(capsys, "export", str(det_db), "--trial", "0", "-o", str(out))
    monkeypatch.undo()
    assert _one_error_line(code, err).startswith(f"error: {out}: No space left on device")
    assert list(out.parent.iterdir()) == []


def test_generated_detection_set_on_a_full_disk(tmp_path, capsys, monkeypatch):
    from PIL import Image

    saved = []
    real_save = Image.Image.save

    def save_then_full(self, fp, *args, **kwargs):
        if len(saved) >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        saved.append(fp)
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_then_full)
    out = tmp_path / "set"
    code, _, err = run_cli(capsys, "data", "synth-det", "--out", str(out), "--train", "8", "--val", "2")
    monkeypatch.undo()
    assert _one_error_line(code, err).startswith(f"error: {tmp_path}: No space left on device")
    assert len(saved) == 3 and list(tmp_path.iterdir()) == []  # no set, no temporary folder


@needs_namespaces
def test_generated_detection_set_on_a_really_full_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = _sandboxed([ABLATE, "data", "synth-det", "--out", str(disk / "set"), "--train", "64", "--val", "4"],
                      cwd=tmp_path, env=_env(tmp_path), tmpfs={disk: "96k"})
    assert _one_error_line(proc.returncode, proc.stderr).startswith(f"error: {disk}: No space left on device")
    assert not disk.exists() or list(disk.iterdir()) == []  # the tmpfs is gone with the namespace


@needs_namespaces
def test_report_on_a_really_full_disk_keeps_the_old_report(tmp_path, fake_db):
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (f"echo old > {disk}/report.md && (cat /dev/zero > {disk}/filler) 2>/dev/null; "
              f"{shlex.quote(ABLATE)} report {shlex.quote(str(fake_db))} -o {disk}/report.md; rc=$?; "
              f"ls -a {disk}; cat {disk}/report.md; exit $rc")
    proc = _sandboxed(["sh", "-c", script], cwd=tmp_path, env=_env(tmp_path), tmpfs={disk: "64k"})
    assert _one_error_line(proc.returncode, proc.stderr).startswith(f"error: {disk}/report.md: No space left")
    assert proc.stdout.split() == [".", "..", "filler", "report.md", "old"]  # no temp file, the old report


def test_a_full_sqlite_database_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    """SQLite's own "database or disk is full" (PRAGMA max_page_count caps the file), raised
    by a real Optuna write, through the CLI's net."""
    import optuna
    import sqlalchemy

    from ablate.cli import common

    db = tmp_path / "capped.db"
    url = f"sqlite:///{db}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, study_name="capped")
    pages = sqlite3.connect(db).execute("PRAGMA page_count").fetchone()[0]
    sqlalchemy.event.listen(storage.engine, "connect",
                            lambda conn, _: conn.execute(f"PRAGMA max_page_count={pages + 1}"))
    storage.engine.dispose()

    def command() -> None:
        for i in range(200):
            study.set_user_attr(f"k{i}", "x" * 4000)

    monkeypatch.setattr(common, "app", lambda **_: command())
    code, _, err = run_cli(capsys)
    line = _one_error_line(code, err)
    assert line == (f"error: {db}: database or disk is full, free space on its disk, or give --storage a "
                    f"database elsewhere")
    monkeypatch.setenv("ABLATE_DEBUG", "1")  # tracebacks always
    with pytest.raises(optuna.exceptions.StorageInternalError):
        run_cli(capsys)


def _readonly_db(tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.commit()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        conn.execute("INSERT INTO t VALUES (1)")


def _unopenable_db(tmp_path: Path) -> None:
    import optuna

    # Optuna's storage holds its URL: the net names the file from it.
    optuna.storages.RDBStorage("sqlite:///" + str(tmp_path / "missing" / "x.db"))


def _long_socket_path(tmp_path: Path) -> None:
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / ("s" * 120)))


@pytest.mark.parametrize("make, expected", [
    (_readonly_db, "error: SQLite database: attempt to write a readonly database, make the database and its folder "
                   "writable, or give --storage a database elsewhere"),
    (_unopenable_db, "error: {tmp}/missing/x.db: unable to open database file, check that the database's folder "
                     "exists and is writable, or give --storage a database elsewhere"),
    (_long_socket_path, "error: AF_UNIX path too long, use a shorter TMPDIR (e.g. TMPDIR=/tmp)"),
])
def test_the_net_names_sqlite_and_socket_errors(tmp_path, capsys, monkeypatch, make, expected):
    """Real errors from sqlite3, SQLAlchemy and socket (no errno, no path) reach the net."""
    from ablate.cli import common

    monkeypatch.delenv("TMPDIR", raising=False)
    monkeypatch.setattr(common, "app", lambda **_: make(tmp_path))
    assert _one_error_line(*run_cli(capsys)[::2]) == expected.format(tmp=tmp_path)


def test_other_os_errors_stay_bugs_with_a_traceback(capsys, monkeypatch):
    from ablate.cli import common

    def command() -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(common, "app", lambda **_: command())
    with pytest.raises(OSError, match="Input/output error"):
        run_cli(capsys)


# -- read-only folders ---------------------------------------------------------------------------

def test_validate_with_a_storage_folder_not_writable(tmp_path, capsys, monkeypatch):
    """As a non-root user in a folder without write permission (simulated: root writes anyway)."""
    study = _project(tmp_path / "p")
    monkeypatch.chdir(tmp_path / "p")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **kw: False if str(p) == str(tmp_path / "p") and m & os.W_OK
                        else real_access(p, m, **kw))
    before = _tree(tmp_path)
    code, _, err = run_cli(capsys, "validate", str(study))
    line = _one_error_line(code, err)
    assert f"'{tmp_path / 'p'}' is not writable" in line and "storage" in line
    assert _tree(tmp_path) == before


def test_validate_with_a_writable_database_in_a_read_only_folder(tmp_path, capsys, monkeypatch):
    """SQLite writes its journal (or WAL) beside the database: the folder must be writable too."""
    study = _project(tmp_path / "p")
    monkeypatch.chdir(tmp_path / "p")
    (tmp_path / "p" / "runs").mkdir()
    sqlite3.connect(tmp_path / "p" / "runs" / "env.db").execute("CREATE TABLE t (x)").connection.close()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **kw: False if str(p) == str(tmp_path / "p" / "runs") and m & os.W_OK
                        else real_access(p, m, **kw))
    before = _tree(tmp_path)
    code, _, err = run_cli(capsys, "validate", str(study))
    line = _one_error_line(code, err)
    assert "env.db' is in a read-only folder" in line and "storage" in line
    assert _tree(tmp_path) == before


@needs_namespaces
@pytest.mark.parametrize("command, read_only", [("validate", "project"), ("run", "project"), ("run", "cwd"),
                                                ("run", "storage")])
def test_a_read_only_study_or_storage_folder_stops_before_anything_starts(tmp_path, command, read_only):
    """`validate` and `run` share the check (study.load.check_study); each place is tried by one."""
    study = _project(tmp_path / "p")
    if read_only == "cwd":  # the study is writable; the cwd, where runs/ is made, is not
        (tmp_path / "cwd").mkdir()
        cwd, ro, args = tmp_path / "cwd", tmp_path / "cwd", [str(study)]
    elif read_only == "storage":  # runs/ exists (with a database) and is read-only
        (tmp_path / "p" / "runs").mkdir()
        sqlite3.connect(tmp_path / "p" / "runs" / "env.db").close()
        cwd, ro, args = tmp_path / "p", tmp_path / "p" / "runs", ["studies/env.yaml"]
    else:
        cwd, ro, args = tmp_path / "p", tmp_path / "p", ["studies/env.yaml"]
    env = _env(tmp_path)
    before = _tree(tmp_path / "p")
    proc = _sandboxed([ABLATE, command, *args], cwd=cwd, env=env, read_only=(ro,), timeout=120)
    line = _one_error_line(proc.returncode, proc.stderr)
    assert "storage:" in line and ("not writable" in line or "read-only" in line), line
    assert _tree(tmp_path / "p") == before
    assert not (tmp_path / "home" / ".cache" / "ablate" / "ray-sessions").exists() or \
        not list((tmp_path / "home" / ".cache" / "ablate" / "ray-sessions").iterdir())


# -- the cache folder ----------------------------------------------------------------------------

def test_export_refuses_a_cache_folder_writable_by_others(tmp_path, det_db):
    """`ablate export` imports ultralytics, which reads its settings from ablate's cache."""
    (tmp_path / "cache").mkdir()
    os.chmod(tmp_path / "cache", 0o775)
    out = tmp_path / "model.yaml"
    env = _env(tmp_path, ABLATE_HOME=str(tmp_path / "cache"))
    before = _tree(tmp_path)
    proc = subprocess.run([ABLATE, "export", str(det_db), "--trial", "0", "-o", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    line = _one_error_line(proc.returncode, proc.stderr)
    assert line == (f"error: ABLATE_HOME={tmp_path / 'cache'}: ablate's cache folder is writable by others "
                    f"(mode 0775); its files would be trusted, make it private (chmod go-w {tmp_path / 'cache'}), "
                    f"or set ABLATE_HOME to a folder of yours that only you can write")
    assert _tree(tmp_path) == before  # nothing written: no settings, no fonts, no model


@pytest.mark.parametrize("case", ["symlink", "read-only-ablate-home"])
def test_ultralytics_settings_refuse_a_cache_folder_that_is_not_usable(tmp_path, capsys, monkeypatch, case):
    from ablate.cli import common
    from ablate.offline import ultralytics_offline

    for name in ("ABLATE_HOME", "XDG_CACHE_HOME", "YOLO_CONFIG_DIR"):
        monkeypatch.setenv(name, "")  # recorded: teardown restores them
        monkeypatch.delenv(name)
    if case == "symlink":
        (tmp_path / "xdg").mkdir()
        (tmp_path / "theirs").mkdir(mode=0o700)
        (tmp_path / "xdg" / "ablate").symlink_to(tmp_path / "theirs")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        needle = f"error: {tmp_path / 'xdg' / 'ablate'}: ablate's cache folder is a symlink"
    else:
        real_mkdir = os.mkdir

        def read_only(path, mode=0o777, **kw):
            if str(path).startswith(str(tmp_path / "ro")):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_mkdir(path, mode, **kw)

        monkeypatch.setattr(os, "mkdir", read_only)
        monkeypatch.setenv("ABLATE_HOME", str(tmp_path / "ro" / "cache"))
        needle = f"error: ABLATE_HOME={tmp_path / 'ro' / 'cache'}: Read-only file system, "
    before = _tree(tmp_path)
    monkeypatch.setattr(common, "app", lambda **_: ultralytics_offline())
    line = _one_error_line(*run_cli(capsys)[::2])
    assert line.startswith(needle) and "ABLATE_HOME" in line, line
    assert _tree(tmp_path) == before


def test_a_cache_folder_of_another_user_is_one_line(tmp_path, capsys, monkeypatch, fake_db):
    """Another user made ``<tmp>/ablate-<uid>`` first: the command that would read it stops."""
    from ablate.cli import common
    from ablate.data.synth_det import default_detection_data

    fake = os.getuid() + 4242
    monkeypatch.setattr(os, "getuid", lambda: fake)
    for name in ("ABLATE_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "home").write_text("")  # no usable home: the temp dir is next
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    (tmp_path / f"ablate-{fake}" / "data").mkdir(parents=True)
    os.chmod(tmp_path / f"ablate-{fake}", 0o700)
    before = _tree(tmp_path)
    monkeypatch.setattr(common, "app", lambda **_: default_detection_data(n_train=2, n_val=1))
    line = _one_error_line(*run_cli(capsys)[::2])
    assert f"{tmp_path / f'ablate-{fake}'}: ablate's cache folder is owned by" in line and "remove it" in line
    assert _tree(tmp_path) == before


# -- TMPDIR --------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["missing", "read-only", "long"])
def test_ray_temp_root_takes_a_usable_short_folder(tmp_path, monkeypatch, case):
    from ablate.run.ray_cluster import ray_temp_root

    tmp = {"missing": tmp_path / "nope", "read-only": tmp_path, "long": tmp_path / ("t" * 200)}[case]
    if case == "long":
        tmp.mkdir()
    if case == "read-only":
        real_access = os.access
        monkeypatch.setattr(os, "access",
                            lambda p, m, **kw: False if str(p) == str(tmp) else real_access(p, m, **kw))
    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp))
    root = ray_temp_root()
    try:
        assert Path(root).parent == Path("/tmp") and Path(root).name.startswith("ablate-rs-")
    finally:
        os.rmdir(root)


@pytest.mark.parametrize("tmpdir", [pytest.param("read-only", marks=needs_namespaces),
                                    pytest.param("300 chars", marks=pytest.mark.slow)])
def test_a_tiny_run_with_a_hostile_tmpdir(tmp_path, tmpdir):
    study = _project(tmp_path / "p")
    env = _env(tmp_path)
    read_only: tuple[Path, ...] = ()
    if tmpdir == "read-only":
        (tmp_path / "rotmp").mkdir()
        env["TMPDIR"], read_only = str(tmp_path / "rotmp"), (tmp_path / "rotmp",)
    else:
        long = tmp_path / ("u" * 200) / ("v" * (300 - len(str(tmp_path)) - 202))
        long.mkdir(parents=True)
        assert len(str(long)) == 300
        env["TMPDIR"] = str(long)
    args = [ABLATE, "run", str(study), "-q"]
    proc = _sandboxed(args, cwd=tmp_path / "p", env=env, read_only=read_only, timeout=400) if read_only else \
        subprocess.run(args, cwd=tmp_path / "p", env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "1 new trial(s)" in proc.stdout
    with sqlite3.connect(tmp_path / "p" / "runs" / "env.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0] == 1
