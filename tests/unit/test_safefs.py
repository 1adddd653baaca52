"""Root's file operations under a service's directories (module_utils/safefs.py): no symlink, hard
link, fifo, swapped directory or foreign file is ever followed, read or changed."""

import os
import stat

import pytest
from ansible_collections.microsvc.deploy.plugins.module_utils import fsutil, safefs


@pytest.fixture()
def tree(tmp_path):
    """<tmp>/svc/shared/log/uwsgi.log written by "the service", and <tmp>/other/env, a file
    of someone else's that the service would like root to read or change."""
    log = tmp_path / "svc" / "shared" / "log"
    log.mkdir(parents=True)
    (log / "uwsgi.log").write_text("line 1\nline 2\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "env").write_text("SECRET=1\n")
    os.chmod(other / "env", 0o640)
    return tmp_path


def snapshot(path):
    st = os.lstat(path)
    return st.st_uid, st.st_gid, st.st_mode, st.st_mtime_ns, open(path, "rb").read()


def test_reads_and_tails_a_regular_file(tree):
    path = str(tree / "svc/shared/log/uwsgi.log")
    assert safefs.read_bytes(path) == b"line 1\nline 2\n"
    assert safefs.read_bytes(path, limit=7, tail=True) == b"line 2\n"
    assert fsutil.tail(path, 1) == "line 2"
    assert safefs.read_bytes(str(tree / "svc/shared/log/absent.log")) is None


def test_symlink_as_last_component_is_refused(tree):
    target = tree / "other/env"
    before = snapshot(target)
    link = tree / "svc/shared/log/uwsgi.log"
    link.unlink()
    link.symlink_to(target)
    with pytest.raises(safefs.UnsafePath, match="symbolic link"):
        safefs.read_bytes(str(link))
    with pytest.raises(safefs.UnsafePath, match="symbolic link"):
        safefs.touch(str(link), owner=os.getuid())
    assert fsutil.tail(str(link)) == ""
    assert snapshot(target) == before


def test_symlink_as_middle_directory_is_refused(tree):
    (tree / "other/log").mkdir()
    (tree / "other/log/runs.log").write_text("neighbour's run\n")
    before = snapshot(tree / "other/log/runs.log")
    schedules = tree / "svc/shared/log/schedules"
    schedules.symlink_to(tree / "other")
    path = str(schedules / "log" / "runs.log")
    with pytest.raises(safefs.UnsafePath, match="schedules is a symbolic link"):
        safefs.read_bytes(path)
    with pytest.raises(safefs.UnsafePath):
        safefs.touch(path, owner=os.getuid())
    with pytest.raises(safefs.UnsafePath):
        safefs.listdir(str(schedules / "log"))
    assert fsutil.tail(path) == ""
    assert snapshot(tree / "other/log/runs.log") == before


def test_hard_link_is_refused(tree):
    target = tree / "other/env"
    before = snapshot(target)
    link = tree / "svc/shared/log/worker-x.log"
    os.link(target, link)
    with pytest.raises(safefs.UnsafePath, match="2 hard links"):
        safefs.read_bytes(str(link))
    with pytest.raises(safefs.UnsafePath, match="hard links"):
        safefs.touch(str(link), owner=os.getuid())
    assert fsutil.tail(str(link)) == ""
    assert snapshot(target) == before


def test_directory_swapped_for_a_symlink_between_check_and_use(tree, monkeypatch):
    """The service swaps shared/log for a link to another directory right before root opens it:
    the open of that component refuses the link instead of following it."""
    (tree / "other/uwsgi.log").write_text("neighbour's log\n")
    before = snapshot(tree / "other/uwsgi.log")
    path = str(tree / "svc/shared/log/uwsgi.log")
    assert safefs.read_bytes(path) == b"line 1\nline 2\n"  # the check a caller might have made
    real_open = os.open

    def swapping_open(name, flags, *args, **kwargs):
        if name == "log" and kwargs.get("dir_fd") is not None:
            log = tree / "svc/shared/log"
            os.rename(log, tree / "svc/shared/log.old")
            log.symlink_to(tree / "other")
        return real_open(name, flags, *args, **kwargs)

    monkeypatch.setattr(safefs.os, "open", swapping_open)
    with pytest.raises(safefs.UnsafePath, match="log is a symbolic link"):
        safefs.read_bytes(path)
    monkeypatch.setattr(safefs.os, "open", real_open)
    with pytest.raises(safefs.UnsafePath):
        safefs.touch(path, owner=os.getuid())
    assert snapshot(tree / "other/uwsgi.log") == before


def test_fifo_neither_hangs_nor_is_read(tree):
    fifo = tree / "svc/shared/log/uwsgi.log"
    fifo.unlink()
    os.mkfifo(fifo)
    with pytest.raises(safefs.UnsafePath, match="not a regular file"):
        safefs.read_bytes(str(fifo))
    with pytest.raises(safefs.UnsafePath, match="not a regular file"):
        safefs.touch(str(fifo), owner=os.getuid())
    assert fsutil.tail(str(fifo)) == ""
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_wrong_owner_is_refused(tree):
    path = tree / "svc/chain-reload"
    path.write_text("")
    os.utime(path, (1000, 1000))
    with pytest.raises(safefs.UnsafePath, match="owned by uid"):
        safefs.touch(str(path), owner=os.getuid() + 1)
    assert os.stat(path).st_mtime == 1000
    with pytest.raises(safefs.UnsafePath, match="owned by uid"):
        safefs.read_bytes(str(path), owner=os.getuid() + 1)


def test_touch_creates_then_moves_the_mtime_forward(tree):
    path = str(tree / "svc/chain-reload")
    safefs.touch(path, owner=os.getuid())
    st = os.stat(path)
    assert stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and st.st_mode & 0o777 == 0o644
    safefs.touch(path, owner=os.getuid())
    assert os.stat(path).st_mtime >= st.st_mtime + 1
    fsutil.touch(path) if os.getuid() == 0 else safefs.touch(path, owner=os.getuid())
    assert os.stat(path).st_mtime >= st.st_mtime + 2


def test_listdir_of_a_real_directory(tree):
    assert safefs.listdir(str(tree / "svc/shared/log")) == ["uwsgi.log"]
    with pytest.raises(safefs.UnsafePath, match="not a directory"):
        safefs.listdir(str(tree / "svc/shared/log/uwsgi.log"))


def test_a_link_root_put_in_its_own_directories_is_followed(tree, monkeypatch):
    """Above the first directory that someone else may write (here: every directory counts as
    root's alone), a link is root's own: e.g. /opt -> /srv/opt."""
    (tree / "real").mkdir()
    (tree / "real/file").write_text("x")
    (tree / "alias").symlink_to(tree / "real")
    monkeypatch.setattr(safefs, "_trusted", lambda st: True)
    assert safefs.read_bytes(str(tree / "alias/file")) == b"x"
    monkeypatch.setattr(safefs, "_trusted", lambda st: False)
    with pytest.raises(safefs.UnsafePath, match="alias is a symbolic link"):
        safefs.read_bytes(str(tree / "alias/file"))


@pytest.mark.parametrize("path", ["relative/x", "/a/../b", "/a/./b", "/"])
def test_paths_that_are_not_plain_absolute_ones_are_refused(path):
    with pytest.raises(safefs.UnsafePath):
        safefs.read_bytes(path)
