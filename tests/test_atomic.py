"""Files written whole or not at all (ablate/atomic.py): a full disk, a read-only folder or an
interrupt leaves the old file (or none) and no temporary file; the error is one line naming
the target. ENOSPC is simulated by failing ``os.write``/``os.fsync``; a real full device is
/dev/full (written through: a device is never replaced)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from ablate.atomic import write_atomic
from ablate.errors import EnvironmentProblem


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_writes_and_replaces_keeping_the_mode(tmp_path):
    target = tmp_path / "report.md"
    assert write_atomic(target, "first\n") == target and target.read_text() == "first\n"
    os.chmod(target, 0o640)
    write_atomic(target, b"\x00second")
    assert target.read_bytes() == b"\x00second" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert _listing(tmp_path) == {"report.md": b"\x00second"}


def test_new_files_get_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640


def test_a_symlink_is_followed_and_kept(tmp_path):
    real = tmp_path / "real.yaml"
    real.write_text("old")
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    write_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


@pytest.mark.parametrize("fail", ["write", "fsync", "replace"])
def test_a_full_disk_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch, fail):
    target = tmp_path / "out.yaml"
    target.write_text("old content")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, fail, full)
    with pytest.raises(EnvironmentProblem) as info:
        write_atomic(target, "new content " * 1000)
    text = str(info.value)
    assert text == f"{target}: No space left on device, free space on that disk or choose a folder on another one"
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    monkeypatch.undo()
    assert _listing(tmp_path) == {"out.yaml": b"old content"}


def test_a_failed_first_write_leaves_no_file(tmp_path, monkeypatch):
    calls = []
    real_write = os.write

    def half_then_full(fd, data):
        if calls:
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        calls.append(1)
        return real_write(fd, bytes(data[: len(data) // 2]))

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(EnvironmentProblem, match="Disk quota exceeded, your disk quota is used up"):
        write_atomic(tmp_path / "new.md", "x" * 10000, todo=None)
    monkeypatch.undo()
    assert _listing(tmp_path) == {}


def test_an_interrupt_leaves_no_temp(tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "x.md", "data")
    monkeypatch.undo()
    assert _listing(tmp_path) == {}


@pytest.mark.parametrize("case", ["folder", "missing-folder"])
def test_a_target_that_cannot_be_a_file_is_one_line(tmp_path, case):
    target = tmp_path / "out"
    if case == "folder":
        target.mkdir()
        (target / "keep").write_text("k")
    else:
        target = tmp_path / "no" / "out.md"
    with pytest.raises(EnvironmentProblem) as info:
        write_atomic(target, "data", todo="allowed: a file in an existing, writable folder")
    assert str(info.value).startswith(f"{target}: ") and "\n" not in str(info.value)
    assert str(info.value).endswith("allowed: a file in an existing, writable folder")
    assert sorted(p.name for p in tmp_path.rglob("*")) == (["keep", "out"] if case == "folder" else [])


def test_a_name_at_the_limit_still_writes(tmp_path):
    target = tmp_path / ("n" * 250 + ".md")  # a temp name built from it must stay under NAME_MAX
    write_atomic(target, "ok")
    assert target.read_text() == "ok" and len(list(tmp_path.iterdir())) == 1


def test_too_long_a_name_is_one_line(tmp_path):
    target = tmp_path / ("n" * 300 + ".md")
    with pytest.raises(EnvironmentProblem, match="File name too long, use a shorter path"):
        write_atomic(target, "x")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not os.path.exists("/dev/full") or not stat.S_ISCHR(os.stat("/dev/full").st_mode),
                    reason="no /dev/full")
def test_dev_full_is_written_through_and_never_replaced():
    before = os.stat("/dev/full")
    with pytest.raises(EnvironmentProblem) as info:
        write_atomic("/dev/full", "x" * 100000)
    assert str(info.value).startswith("/dev/full: No space left on device, ")
    after = os.stat("/dev/full")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev and after.st_ino == before.st_ino
    assert not [n for n in os.listdir("/dev") if n.startswith(".full.")]


def test_dev_null_is_written_through():
    assert write_atomic("/dev/null", "gone") == Path("/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
