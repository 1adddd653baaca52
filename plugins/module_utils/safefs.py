# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Root's file operations on paths a service's user may be able to change.

A service writes its shared/log, shared/data, shared/static and run/: it can put a symlink, a
hard link, a fifo or a directory swapped for a link anywhere in them. Root must never follow
such a path. Every operation here walks the path from ``/`` one component at a time, each
relative to the file descriptor of the previous directory (``dir_fd``):

- while every directory so far is root's and writable by nobody else (the *trusted* part of the
  path, e.g. ``/opt/www/<svc>``), a component is opened like any path (root put whatever link
  is there);
- from the first directory that someone else owns or may write, every later component is
  opened with ``O_NOFOLLOW``, so no link is followed, and a directory swapped for a link after
  a check fails the next ``open`` instead of leading elsewhere;
- the last component is always opened with ``O_NOFOLLOW`` (and ``O_NONBLOCK``: a fifo never
  blocks), then checked on the descriptor (``fstat``): a regular file (or a directory where one
  is asked for), one link only (a hard link to a file elsewhere is refused), and the expected
  owner where there is one.

Every refusal raises ``UnsafePath`` (an ``OSError``), naming the path and why.
"""

from __future__ import annotations

import os
import stat
import time

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_LEAF_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafePath(OSError):
    """A path that root refuses to act on (a link, not a regular file, a hard link, a foreign owner)."""


def _is_link(name, dir_fd):
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def root_alone(st):
    """Whether root owns what ``st`` describes and nobody else may write it."""
    return st.st_uid == 0 and not st.st_mode & 0o022


def _trusted(st):
    return root_alone(st)


def _parts(path):
    if not os.path.isabs(path):
        raise UnsafePath("%s: not an absolute path" % path)
    parts = [p for p in path.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise UnsafePath("%s: not a normalised path to a file" % path)
    return parts


def open_parent(path):
    """(fd of the directory holding the last component, the last component's name, whether that
    directory is trusted). The caller closes the fd."""
    parts = _parts(path)
    fd = os.open("/", _DIR_FLAGS)
    trusted = _trusted(os.fstat(fd))
    try:
        for part in parts[:-1]:
            try:
                nfd = os.open(part, _DIR_FLAGS | (0 if trusted else os.O_NOFOLLOW), dir_fd=fd)
            except OSError:
                if not trusted and _is_link(part, fd):
                    raise UnsafePath("%s: %s is a symbolic link in a directory that is not root's alone"
                                     % (path, part)) from None
                raise
            os.close(fd)
            fd = nfd
            trusted = trusted and _trusted(os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd, parts[-1], trusted


def _check(path, fd, kind, owner):
    st = os.fstat(fd)
    if kind == "dir":
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePath("%s: not a directory" % path)
    elif not stat.S_ISREG(st.st_mode):
        raise UnsafePath("%s: not a regular file" % path)
    elif st.st_nlink > 1:
        raise UnsafePath("%s: has %d hard links (a link to a file elsewhere is never used)" % (path, st.st_nlink))
    if owner is not None and st.st_uid != owner:
        raise UnsafePath("%s: owned by uid %d, not %d" % (path, st.st_uid, owner))
    return st


def open_file(path, flags=os.O_RDONLY, mode=0o644, kind="file", owner=None):
    """An fd of ``path`` opened without following any link the service could have planted, and
    checked (see the module's description). ``flags`` are added to the safe ones."""
    parent, name, _trusted_dir = open_parent(path)
    try:
        try:
            fd = os.open(name, flags | _LEAF_FLAGS | (os.O_DIRECTORY if kind == "dir" else 0), mode, dir_fd=parent)
        except OSError as exc:
            try:
                mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
            except OSError:
                raise exc from None
            if stat.S_ISLNK(mode):
                raise UnsafePath("%s: is a symbolic link" % path) from None
            if kind == "dir" and not stat.S_ISDIR(mode):
                raise UnsafePath("%s: not a directory" % path) from None
            if kind != "dir" and not stat.S_ISREG(mode):
                raise UnsafePath("%s: not a regular file" % path) from None
            raise
    finally:
        os.close(parent)
    try:
        _check(path, fd, kind, owner)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(path, limit=1 << 20, tail=False, owner=None):
    """At most ``limit`` bytes of a regular file (its last ones with ``tail``), or None when it
    does not exist. Raises UnsafePath for a link, a hard link, a fifo and the like."""
    try:
        fd = open_file(path, os.O_RDONLY, owner=owner)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with os.fdopen(fd, "rb") as handle:
        if tail:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - limit))
        return handle.read(limit)


def touch(path, owner=0, mode=0o644):
    """Create ``path`` (owner root unless told) or move its mtime forward by at least a second
    (uWSGI compares whole seconds), through a descriptor: never through a link, never on a
    file with another owner or a second hard link."""
    fd = open_file(path, os.O_WRONLY | os.O_CREAT, mode=mode, owner=owner)
    try:
        stamp = max(time.time(), os.fstat(fd).st_mtime + 1)
        os.utime(fd, (stamp, stamp))
    finally:
        os.close(fd)


def listdir(path, owner=None):
    """The names in a directory, never through a link."""
    fd = open_file(path, os.O_RDONLY, kind="dir", owner=owner)
    try:
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)
