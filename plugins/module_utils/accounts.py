# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Service accounts: which system users and groups the collection created, and for which service.

A service runs as a user and group named like it. The collection only ever uses, changes or
removes an account it created itself for that service: each creation is recorded in a
root-only registry (``/var/lib/microsvc/accounts/<name>.json``, with the uid or gid). An
account of the same name that is not in the registry belongs to someone else (root, shadow,
www-data, the image's login user, a package's service account) and the service is refused
on that host before it changes.

Accounts created by versions before the registry are recognised by what those versions wrote
(the comment "microsvc service <name>", home <root>/<name>, a nologin shell, and a primary
group of the same name) and registered on their next deploy.
"""

from __future__ import annotations

import grp
import json
import os
import pwd

REGISTRY = "/var/lib/microsvc/accounts"
COMMENT = "microsvc service %s"
NOLOGIN = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false")


def _path(name, registry):
    return os.path.join(registry, "%s.json" % name)


def registered(name, registry=REGISTRY):
    try:
        with open(_path(name, registry), encoding="utf-8") as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None


def register(name, registry=REGISTRY, **ids):
    """Record (merge) the uid and/or gid the collection created for a service."""
    os.makedirs(registry, mode=0o700, exist_ok=True)
    data = registered(name, registry) or {}
    data.update({k: v for k, v in ids.items() if v is not None}, service=name)
    tmp = _path(name, registry) + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, sort_keys=True)
    os.chmod(tmp, 0o600)
    os.replace(tmp, _path(name, registry))


def forget(name, registry=REGISTRY):
    try:
        os.unlink(_path(name, registry))
    except FileNotFoundError:
        pass


def lookup(name):
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        user = None
    try:
        group = grp.getgrnam(name)
    except KeyError:
        group = None
    return user, group


def _legacy(name, home, user, group):
    return (user is not None and group is not None and user.pw_gecos == COMMENT % name
            and user.pw_dir == home and user.pw_shell in NOLOGIN and user.pw_gid == group.gr_gid)


def classify(name, home, registry=REGISTRY):
    """("new" | "ours" | "legacy" | "foreign", reason). ``reason`` says what exists when foreign."""
    user, group = lookup(name)
    if user is None and group is None:
        return "new", None
    reg = registered(name, registry)
    if reg is not None:
        problems = []
        if user is not None and reg.get("uid") != user.pw_uid:
            problems.append("the user %r (uid %d) is not the one created for this service" % (name, user.pw_uid))
        if group is not None and reg.get("gid") != group.gr_gid:
            problems.append("the group %r (gid %d) is not the one created for this service" % (name, group.gr_gid))
        return ("foreign", "; ".join(problems)) if problems else ("ours", None)
    if _legacy(name, home, user, group):
        return "legacy", None
    what = []
    if user is not None:
        what.append("a user %r (uid %d, home %s)" % (name, user.pw_uid, user.pw_dir))
    if group is not None:
        what.append("a group %r (gid %d)" % (name, group.gr_gid))
    return "foreign", "there is already %s, which microsvc did not create for this service" % " and ".join(what)
