#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""List every release of services on a host (for playbooks/releases.yml)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: service_releases
short_description: Every release of services on a host, the live one and the valid rollback targets
description:
  - For each service given, lists the directories of C(<root>/releases/) - the release id, whether it is
    complete (its marker written last by the deploy), the source and git revision it was built from (the
    marker), when it went live and who deployed it (the service's deploy log, C(<root>/deploy.log) and
    C(deploy.log.1)), whether it is live (C(current)) and whether it is a valid rollback target (a complete
    release other than the live one, as playbooks/rollback.yml requires), and which one a rollback without
    C(rollback_release) would return to. Changes nothing.
  - Reads only root's files in root's directories, each opened without following a link and checked on its
    descriptor (owner root, a regular file, one hard link); a service's user can change none of them. A
    file that fails the checks is reported under C(errors), never read.
version_added: 0.3.0
options:
  services:
    description: Services, each with C(name) and C(root) (its directory, C(<microsvc_root>/<name>)).
    type: list
    elements: dict
    required: true
notes:
  - Why not a builtin - one read-only call reads every release of every service given, never through a link
    a service could have planted, and joins them with the deploy log's entries.
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
- name: List the releases of service1
  microsvc.deploy.service_releases:
    services: [{name: service1, root: /opt/www/service1}]
  register: releases
"""

RETURN = r"""
services:
  description: Per service name, C(current) (the live release id or null), C(rollback_default) (the release a
    rollback without a release id returns to, or null), C(releases) (newest first, each C(id), C(complete),
    C(live), C(rollback_target), C(source), C(revision), C(live_at) (UTC, when it last went live, or null),
    C(deployed_by) (or null), C(built_at) (UTC, the release directory's time)) and C(errors).
  returned: always
  type: dict
"""

import json
import os
import re
import stat
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.microsvc.deploy.plugins.module_utils import safefs
from ansible_collections.microsvc.deploy.plugins.module_utils.paths import HISTORY, RELEASE_MARKER

RELEASE_ID = re.compile(r"[0-9a-f]{12}")
LIVE = re.compile(r"=== ([0-9T:-]+Z) release ([0-9a-f]{12}) live: deployed by ([A-Za-z0-9_.@+?-]{1,120})$")
LOG_LIMIT = 2 << 20


def utc(stamp):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def read_json(path, errors):
    try:
        data = safefs.read_bytes(path, limit=64 << 10, owner=0)
    except OSError as exc:
        errors.append(str(exc))
        return None
    if data is None:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError:
        errors.append("%s: not JSON" % path)
        return None


def live_entries(root, errors):
    """release id -> (when, by whom) of its last 'went live' entry in the deploy log (oldest first)."""
    out = {}
    for name in ("deploy.log.1", "deploy.log"):
        try:
            data = safefs.read_bytes(os.path.join(root, name), limit=LOG_LIMIT, tail=True, owner=0)
        except OSError as exc:
            errors.append(str(exc))
            continue
        for line in (data or b"").decode("utf-8", "replace").splitlines():
            match = LIVE.match(line)
            if match:
                out[match.group(2)] = (match.group(1), match.group(3))
    return out


def current_of(root, errors):
    """The live release: the target of <root>/current, read through root's own directory."""
    try:
        fd = safefs.open_file(root, kind="dir", owner=0)
    except FileNotFoundError:
        return None
    except OSError as exc:
        errors.append(str(exc))
        return None
    try:
        if os.fstat(fd).st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            errors.append("%s: writable by others than root" % root)
            return None
        try:
            target = os.readlink("current", dir_fd=fd)
        except OSError:
            return None
    finally:
        os.close(fd)
    head, release = os.path.split(target.rstrip("/"))
    return release if head in ("releases", os.path.join(root, "releases")) and RELEASE_ID.fullmatch(release) else None


def releases_of(root):
    errors = []
    current = current_of(root, errors)
    releases_dir = os.path.join(root, "releases")
    try:
        names = safefs.listdir(releases_dir, owner=0)
    except FileNotFoundError:
        names = []
    except OSError as exc:
        errors.append(str(exc))
        names = []
    history = read_json(os.path.join(releases_dir, HISTORY), errors)
    history = [str(r) for r in history] if isinstance(history, list) else []
    live = live_entries(root, errors)
    out = []
    for name in names:
        if not RELEASE_ID.fullmatch(name):
            continue
        path = os.path.join(releases_dir, name)
        try:
            fd = safefs.open_file(path, kind="dir", owner=0)
        except OSError as exc:
            errors.append(str(exc))
            continue
        try:
            built = os.fstat(fd).st_mtime
        finally:
            os.close(fd)
        marker = read_json(os.path.join(path, RELEASE_MARKER), errors)
        complete = isinstance(marker, dict) and marker.get("release") == name
        marker = marker if complete else {}
        when, who = live.get(name, (None, None))
        out.append({
            "id": name, "complete": complete, "live": name == current,
            "rollback_target": complete and name != current,
            "source": str(marker.get("source") or "")[:300] or None,
            "revision": str(marker.get("revision") or "")[:64] or None,
            "live_at": when, "deployed_by": who, "built_at": utc(built),
        })
    order = {rid: i for i, rid in enumerate(history)}
    out.sort(key=lambda r: (order.get(r["id"], -1), r["live_at"] or "", r["built_at"]), reverse=True)
    complete_ids = {r["id"] for r in out if r["complete"]}
    earlier = history[: history.index(current)] if current in history else [r for r in history if r != current]
    earlier = [r for r in earlier if r != current and r in complete_ids]
    return {"current": current, "rollback_default": earlier[-1] if earlier else None, "releases": out,
            "errors": errors}


def main():
    module = AnsibleModule(argument_spec={"services": {"type": "list", "elements": "dict", "required": True}},
                           supports_check_mode=True)
    result = {}
    for svc in module.params["services"]:
        name, root = str(svc.get("name") or ""), str(svc.get("root") or "")
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", name) or not os.path.isabs(root) \
                or os.path.basename(os.path.normpath(root)) != name:
            module.fail_json(msg="invalid service %r with root %r" % (name, root))
        result[name] = releases_of(os.path.normpath(root))
    module.exit_json(changed=False, services=result)


if __name__ == "__main__":
    main()
