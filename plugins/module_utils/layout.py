# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""A service's account and directory tree on a host (used by service_layout and deploy_batch)."""

from __future__ import annotations

import os
import subprocess

from ansible_collections.microsvc.deploy.plugins.module_utils import fsutil, safefs
from ansible_collections.microsvc.deploy.plugins.module_utils.accounts import classify, register


class LayoutError(Exception):
    pass


def _run(argv):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LayoutError("%s failed: %s" % (" ".join(argv[:2]), (proc.stderr or proc.stdout).strip()))


def ensure_account(name, home, group=None, shell="/usr/sbin/nologin", comment="", registry=None,
                   check_mode=False):
    """The service's system group and user: created (and recorded as the collection's) when
    missing; refused when someone else's account has the name. Returns (changed, diff lines)."""
    group = group or name
    registry = registry or "/var/lib/microsvc/accounts"
    kind, reason = classify(name, home, registry)
    if kind == "foreign":
        raise LayoutError("service '%s': field 'name': %s; the host was not changed" % (name, reason))
    changed, diff = False, []
    if kind == "legacy" and not check_mode:
        register(name, registry, uid=fsutil.uid_of(name), gid=fsutil.gid_of(group))
    if fsutil.group(group) is None:
        changed = True
        diff.append("group %s" % group)
        if not check_mode:
            _run(["groupadd", "--system", group])
            register(name, registry, gid=fsutil.gid_of(group))
    entry = fsutil.user(name)
    if entry is None:
        changed = True
        diff.append("user %s (group %s, home %s, shell %s)" % (name, group, home, shell))
        if not check_mode:
            _run(["useradd", "--system", "--gid", group, "--home-dir", home, "--no-create-home",
                  "--shell", shell, "--comment", comment, name])
            register(name, registry, uid=fsutil.uid_of(name))
    elif entry.pw_shell != shell:
        changed = True
        diff.append("user %s shell %s -> %s" % (name, entry.pw_shell, shell))
        if not check_mode:
            _run(["usermod", "--shell", shell, name])
    return changed, diff


def ensure_tree(directories, default_group, check_mode=False):
    """Directories in order, each {path, owner, group?, mode}. Returns (changed paths, before, after)."""
    changed, before, after = [], [], []
    for entry in directories:
        owner = entry.get("owner", "root")
        grp_name = entry.get("group") or default_group
        mode = int(str(entry["mode"]), 8)
        try:
            uid, gid = fsutil.uid_of(owner), fsutil.gid_of(grp_name)
        except KeyError:
            if not check_mode:
                raise
            uid = gid = None
        did, b, a = fsutil.ensure_dir(entry["path"], uid, gid, mode, check_mode)
        if did:
            changed.append(entry["path"])
            before.append(b)
            after.append(a)
    return changed, before, after


def ensure_marker(path, name, check_mode=False):
    """The file that says a directory belongs to the service (a purge removes only such a one)."""
    if not path or os.path.isfile(path):
        return False
    if not check_mode:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as handle:
            handle.write(name + "\n")
    return True


def ensure_uwsgi_log(path, user, check_mode=False):
    """uWSGI's log, <root>/log/uwsgi.log: made by root in the root-owned log directory and given to
    the service's user, so that the master, still root when it opens it, finds a regular file of the
    service's (never a link: the service cannot change that directory), and, as the service's
    user after a reload, can open it again (log-reopen). Returns whether it changed."""
    if not path:
        return False
    uid, gid = fsutil.uid_of(user), fsutil.gid_of(user)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and (st.st_uid, st.st_gid) == (uid, gid):
        return False
    if not check_mode:
        fd = safefs.open_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode=0o640)
        try:
            os.fchown(fd, uid, gid)
        finally:
            os.close(fd)
    return True


def service_directories(svc, microsvc_root):
    """The layout of one service: code, virtualenvs and configuration belong to root and are
    read-only to the service; it writes only shared/data, shared/log, shared/static, run/ and, with
    accel_redirect, shared/protected.
    nginx ("other") may only traverse to the socket and read shared/static."""
    root, user = svc["root"], svc["user"]
    return [
        {"path": microsvc_root, "owner": "root", "group": "root", "mode": "0755"},
        {"path": root, "owner": "root", "mode": "0751"},
        {"path": root + "/releases", "owner": "root", "mode": "0750"},
        {"path": root + "/venvs", "owner": "root", "mode": "0750"},
        {"path": root + "/shared", "owner": "root", "mode": "0751"},
        {"path": root + "/log", "owner": "root", "mode": "0750"},
        {"path": root + "/shared/data", "owner": user, "mode": "0750"},
        {"path": root + "/shared/log", "owner": user, "mode": "0750"},
        {"path": root + "/shared/static", "owner": user, "mode": "0755"},
        {"path": root + "/run", "owner": user, "mode": "0750"},
    ] + ([
        # accel_redirect: the files the gateway's internal location of the service serves; the
        # service writes them, nginx's group reads them (setgid: new files keep that group).
        {"path": root + "/shared/protected", "owner": user, "group": svc["protected_group"], "mode": "2750"},
    ] if svc.get("protected_group") else [])
