"""ablate's per-user cache folder (ablate/cache.py): the order of places, mode 0700, and
refusing a folder that is a symlink, another user's or writable by others, in one line.

Ownership cannot be given away without root outside a namespace, so another owner is
simulated with a patched ``os.getuid`` (the folder is then "someone else's"); permissions
and symlinks are real."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

import pytest

from ablate.cache import cache_dir, cache_root
from ablate.errors import AblateError, EnvironmentProblem


@pytest.fixture
def env(tmp_path, monkeypatch):
    """No ABLATE_HOME/XDG_CACHE_HOME, HOME and the temp dir inside tmp_path."""
    for name in ("ABLATE_HOME", "XDG_CACHE_HOME", "YOLO_CONFIG_DIR", "YOLO_OFFLINE", "YOLO_AUTOINSTALL",
                 "YOLO_VERBOSE"):
        monkeypatch.setenv(name, "")  # recorded, so that teardown restores what ultralytics_offline sets
        monkeypatch.delenv(name)
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp_path


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert text and "\n" not in text, text
    return text


def test_order_ablate_home_then_xdg_then_home_cache(env, monkeypatch):
    assert cache_dir("data") == env / "home" / ".cache" / "ablate" / "data"
    home_cache = env / "home" / ".cache" / "ablate"
    assert _mode(home_cache) == 0o700 and _mode(home_cache / "data") == 0o700
    monkeypatch.setenv("XDG_CACHE_HOME", str(env / "xdg"))
    assert cache_dir("ultralytics") == env / "xdg" / "ablate" / "ultralytics"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/xdg")  # the XDG spec: relative paths are ignored
    assert cache_root() == env / "home" / ".cache" / "ablate"
    monkeypatch.setenv("ABLATE_HOME", str(env / "mine"))
    assert cache_dir("ray-sessions") == env / "mine" / "ray-sessions"
    assert _mode(env / "mine") == 0o700 and _mode(env / "mine" / "ray-sessions") == 0o700
    assert not (env / "tmp" / f"ablate-{os.getuid()}").exists()


def test_an_unusable_home_falls_back_to_a_private_temp_folder(env, monkeypatch):
    (env / "file").write_text("")
    monkeypatch.setenv("HOME", str(env / "file"))  # ENOTDIR: a home that is a file
    assert cache_dir("data") == env / "tmp" / f"ablate-{os.getuid()}" / "data"
    assert _mode(env / "tmp" / f"ablate-{os.getuid()}") == 0o700


def test_a_read_only_home_falls_back_and_an_explicit_ablate_home_does_not(env, monkeypatch):
    real_mkdir = os.mkdir

    def read_only_home(path, mode=0o777, **kw):
        if str(path).startswith(str(env / "home")) or str(path).startswith(str(env / "ro")):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_mkdir(path, mode, **kw)

    monkeypatch.setattr(os, "mkdir", read_only_home)
    assert cache_root() == env / "tmp" / f"ablate-{os.getuid()}"
    monkeypatch.setenv("ABLATE_HOME", str(env / "ro" / "cache"))
    with pytest.raises(EnvironmentProblem) as info:
        cache_root()
    text = _one_line(info.value)
    assert text.startswith(f"ABLATE_HOME={env / 'ro' / 'cache'}: Read-only file system") and "ABLATE_HOME" in text
    assert info.value.errno == errno.EROFS


def test_an_existing_folder_that_cannot_be_written_is_no_cache(env, monkeypatch):
    home_cache = env / "home" / ".cache" / "ablate"
    home_cache.mkdir(parents=True, mode=0o700)
    real_access = os.access
    monkeypatch.setattr(os, "access",
                        lambda p, m, **kw: False if str(p) == str(home_cache) else real_access(p, m, **kw))
    assert cache_root() == env / "tmp" / f"ablate-{os.getuid()}"  # home: fall back
    monkeypatch.setenv("ABLATE_HOME", str(home_cache))
    with pytest.raises(EnvironmentProblem, match="cache folder is not writable"):  # chosen: say so
        cache_root()


def test_a_symlink_planted_in_the_temp_dir_is_refused(env, monkeypatch):
    monkeypatch.setenv("HOME", str(env / "file"))
    (env / "file").write_text("")
    elsewhere = env / "attacker"
    elsewhere.mkdir(mode=0o700)
    (env / "tmp" / f"ablate-{os.getuid()}").symlink_to(elsewhere)
    with pytest.raises(EnvironmentProblem) as info:
        cache_dir("ultralytics")
    text = _one_line(info.value)
    assert f"ablate-{os.getuid()}: ablate's cache folder is a symlink" in text and "remove it" in text
    assert list(elsewhere.iterdir()) == []  # nothing created through the link


def test_a_folder_writable_by_others_is_refused_with_the_chmod_to_run(env):
    root = env / "home" / ".cache" / "ablate"
    root.mkdir(parents=True)
    os.chmod(root, 0o777)
    with pytest.raises(EnvironmentProblem) as info:
        cache_dir("data")
    text = _one_line(info.value)
    assert "writable by others (mode 0777)" in text and f"chmod go-w {root}" in text
    assert not (root / "data").exists()
    os.chmod(root, 0o755)  # only the owner writes: accepted as it is
    assert cache_dir("data") == root / "data"


def test_a_kind_folder_writable_by_others_is_refused(env, monkeypatch):
    monkeypatch.setenv("ABLATE_HOME", str(env / "mine"))
    (env / "mine" / "data").mkdir(parents=True)
    os.chmod(env / "mine" / "data", 0o772)
    with pytest.raises(EnvironmentProblem, match=r"mine/data: ablate's cache folder is writable by others"):
        cache_dir("data")


def test_a_folder_owned_by_another_user_is_refused_naming_the_owner(env, monkeypatch):
    """Another local user created ``<tmp>/ablate-<uid>`` first (and planted a settings file)."""
    me = os.getuid()
    fake = me + 4242
    monkeypatch.setattr(os, "getuid", lambda: fake)  # every existing folder is now someone else's
    monkeypatch.setenv("HOME", str(env / "file"))
    (env / "file").write_text("")
    planted = env / "tmp" / f"ablate-{fake}"
    (planted / "ultralytics" / "Ultralytics").mkdir(parents=True)
    os.chmod(planted, 0o700)
    (planted / "ultralytics" / "Ultralytics" / "settings.json").write_text('{"sync": true}')
    with pytest.raises(EnvironmentProblem) as info:
        cache_dir("ultralytics")
    text = _one_line(info.value)
    assert str(planted) in text and f"uid {me})" in text and f"not by you (uid {fake})" in text
    assert "remove it" in text and "ABLATE_HOME" in text
    assert isinstance(info.value, AblateError) and isinstance(info.value, OSError)


def test_an_other_users_folder_in_home_is_reported_not_skipped(env, monkeypatch):
    (env / "home" / ".cache" / "ablate").mkdir(parents=True, mode=0o700)
    monkeypatch.setattr(os, "getuid", lambda: 4242 + 1)
    with pytest.raises(EnvironmentProblem, match="is owned by"):
        cache_root()
    assert not (env / "tmp" / "ablate-4243").exists()  # no silent move to the temp dir


def test_a_file_where_the_folder_should_be_is_refused(env, monkeypatch):
    monkeypatch.setenv("ABLATE_HOME", str(env / "mine"))
    (env / "mine").mkdir(mode=0o700)
    (env / "mine" / "data").write_text("not a folder")
    with pytest.raises(EnvironmentProblem, match="mine/data: ablate's cache folder is not a folder"):
        cache_dir("data")


def test_no_usable_temp_dir_is_one_line(env, monkeypatch):
    monkeypatch.setenv("HOME", "/")

    def no_tmp() -> str:
        raise FileNotFoundError(errno.ENOENT, "No usable temporary directory found in ['/nope']")

    monkeypatch.setattr(tempfile, "gettempdir", no_tmp)
    with pytest.raises(EnvironmentProblem) as info:
        cache_root()
    assert "no usable temporary folder" in _one_line(info.value) and "TMPDIR or ABLATE_HOME" in str(info.value)


@pytest.mark.parametrize("kind", ["", "../x", "a/b", ".hidden", "Data"])
def test_kind_is_one_plain_folder_name(kind):
    with pytest.raises(ValueError):
        cache_dir(kind)


def test_the_users_of_the_cache_refuse_a_planted_folder(env, monkeypatch):
    """offline.config_dir, the synthetic data cache and the Ray session records all go
    through cache_dir: none uses a folder someone else owns."""
    from ablate.data.synth_det import synth_det_cache_dir
    from ablate.offline import config_dir
    from ablate.run.ray_cluster import sessions_dir

    monkeypatch.setenv("ABLATE_HOME", str(env / "mine"))
    assert config_dir() == env / "mine" / "ultralytics"
    assert synth_det_cache_dir(n_train=4).parent == env / "mine" / "data"
    assert sessions_dir() == env / "mine" / "ray-sessions"
    monkeypatch.setattr(os, "getuid", lambda: os.geteuid() + 7)
    for get in (config_dir, lambda: synth_det_cache_dir(n_train=4), sessions_dir):
        with pytest.raises(EnvironmentProblem, match="is owned by"):
            get()


def test_ultralytics_offline_writes_nothing_into_a_planted_folder(env, monkeypatch):
    from ablate.offline import ultralytics_offline

    monkeypatch.setenv("ABLATE_HOME", str(env / "mine"))
    (env / "mine").mkdir()
    os.chmod(env / "mine", 0o777)
    with pytest.raises(EnvironmentProblem, match="writable by others"):
        ultralytics_offline()
    assert list((env / "mine").iterdir()) == [] and "YOLO_CONFIG_DIR" not in os.environ
    os.chmod(env / "mine", 0o700)
    cfg = ultralytics_offline()
    assert cfg == env / "mine" / "ultralytics" and (cfg / "Ultralytics" / "settings.json").is_file()
    assert not [p for p in (cfg / "Ultralytics").iterdir() if p.name.endswith(".tmp")]
