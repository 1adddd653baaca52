# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Directories and files (content, owner, group, mode) made so in one call: the module
managed_files, nginx_config for the gateway's files outside nginx's directory, and the services'
log rotation files (vassal_probe, deploy_batch)."""

from __future__ import annotations

import grp
import os
import pwd

from ansible_collections.microsvc.deploy.plugins.module_utils import fsutil
from ansible_collections.microsvc.deploy.plugins.module_utils.atomic import write_atomic


def ids(module, entry):
    owner, group = entry.get("owner", "root"), entry.get("group", "root")
    try:
        return pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid
    except KeyError as exc:
        if module.check_mode:
            return None, None
        module.fail_json(msg="%s: unknown owner or group (%s)" % (entry.get("dest") or entry.get("path"), exc))
    return None, None


def ensure(module, directories, files):
    """Create or fix ``directories`` (in order), then write each file of ``files`` whose content,
    owner, group or mode differs, atomically. Returns (changed paths, diffs); changes nothing in
    check mode."""
    changed, diffs = [], []
    for entry in directories or []:
        path, mode = entry["path"], int(str(entry.get("mode", "0755")), 8)
        uid, gid = ids(module, entry)
        st = os.stat(path) if os.path.isdir(path) else None
        if st is not None and (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (uid, gid, mode):
            continue
        changed.append(path)
        diffs.append(dict(before_header=path, after_header=path,
                          before="absent\n" if st is None else "%d:%d %o\n" % (st.st_uid, st.st_gid, st.st_mode & 0o7777),
                          after="directory %s:%s %o\n" % (entry.get("owner", "root"), entry.get("group", "root"), mode)))
        if module.check_mode:
            continue
        if st is None:
            os.makedirs(path, mode)
        os.chown(path, uid, gid)
        os.chmod(path, mode)

    for entry in files or []:
        dest, mode = entry["dest"], int(str(entry.get("mode", "0644")), 8)
        data = str(entry["content"]).encode("utf-8")
        uid, gid = ids(module, entry)
        try:
            with open(dest, "rb") as handle:
                live = handle.read()
            st = os.stat(dest)
        except FileNotFoundError:
            live, st = None, None
        if live == data and (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (uid, gid, mode):
            continue
        changed.append(dest)
        diffs.append(dict(before_header=dest, after_header=dest, before=(live or b"").decode("utf-8", "replace"),
                          after=data.decode("utf-8", "replace")))
        if module.check_mode:
            continue
        write_atomic(dest, data, mode, uid=uid, gid=gid)
    return changed, diffs


def ensure_for_accounts(module, files):
    """``ensure`` for the files of services (each with its ``service``) whose account exists: a file
    that names the account (logrotate's su) is written only once there is one. Returns (changed
    paths, diffs, names of the services still without an account)."""
    pending = sorted({entry["service"] for entry in files if not fsutil.user_exists(entry["service"])})
    changed, diffs = ensure(module, [], [entry for entry in files if entry["service"] not in pending])
    return changed, diffs, pending
