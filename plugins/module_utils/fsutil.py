# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Small file-system and account helpers shared by the host-side modules."""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd

from ansible_collections.microsvc.deploy.plugins.module_utils import safefs


def read_text(path):
    """A file's text, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_bytes(path):
    """A file's bytes, or None when it does not exist."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def mode_of(path):
    """A path's permission bits, or None when it does not exist."""
    try:
        return os.stat(path).st_mode & 0o7777
    except (FileNotFoundError, NotADirectoryError):
        return None


def user_exists(name):
    return user(name) is not None


def group_exists(name):
    return group(name) is not None


def read_json(path):
    """A JSON file's data, or None when it does not exist or is not JSON."""
    text = read_text(path)
    try:
        return None if text is None else json.loads(text)
    except ValueError:
        return None


def sha1_of(path):
    data = read_bytes(path)
    return None if data is None else hashlib.sha1(data).hexdigest()


def user(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def group(name):
    try:
        return grp.getgrnam(name)
    except KeyError:
        return None


def uid_of(name):
    entry = user(name)
    if entry is None:
        raise KeyError("no user %r" % name)
    return entry.pw_uid


def gid_of(name):
    entry = group(name)
    if entry is None:
        raise KeyError("no group %r" % name)
    return entry.gr_gid


def ensure_dir(path, uid, gid, mode, check_mode=False):
    """Create or correct one directory (never its parents); return (changed, before, after) as
    text for a diff."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not os.path.isdir(path):
        raise OSError("%s exists and is not a directory" % path)
    current = (st.st_uid, st.st_gid, st.st_mode & 0o7777) if st else None
    if current == (uid, gid, mode):
        return False, None, None
    before = "%s absent" % path if st is None else "%s %s:%s %o" % (path, st.st_uid, st.st_gid, st.st_mode & 0o7777)
    after = "%s %s:%s %o" % (path, uid, gid, mode)
    if not check_mode:
        if st is None:
            os.mkdir(path, mode)
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    return True, before, after


def touch(path):
    """Create a root-owned file or move its mtime forward by at least a second (uWSGI compares
    whole seconds), never through a link, a hard link or a file of someone else's (safefs)."""
    safefs.touch(path, owner=0)


def tail(path, lines=30):
    """The last lines of a (log) file, or an empty string. Logs are written by the services'
    users: a symlink anywhere in the part of the path they can change, a hard link, or anything
    but a regular file is never read (its content would reach the play's output; safefs)."""
    if not path:
        return ""
    try:
        data = safefs.read_bytes(path, 16384, tail=True)
    except OSError:
        return ""
    if data is None:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
