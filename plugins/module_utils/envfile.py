# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""A service's environment file (secrets included): 0640 root:<service>, written atomically.

While a deploy runs, the previous content waits in ``<env>.previous`` (same mode) and is put
back if the deploy fails. Each uWSGI worker reads the file itself (microsvc_env.py, installed by
uwsgi_emperor) and the master never holds the service's environment, so a name dropped from the
file is gone from the next workers without any list of names to unset; an ``<env>.unset`` left by
an older version of the collection is removed."""

from __future__ import annotations

import os

from ansible_collections.microsvc.deploy.plugins.module_utils.atomic import write_atomic
from ansible_collections.microsvc.deploy.plugins.module_utils.fsutil import read_text


def names(text):
    """Variable names of an environment file."""
    return {line.split("=", 1)[0].strip() for line in (text or "").splitlines() if line.strip()}


def plan(path, state, content=None):
    """(writes, removes, previous kept afterwards) for one step of a deploy: stage (write the new
    content, keep the previous), restore (the deploy failed: put the previous back), forget (the
    deploy succeeded: drop the previous)."""
    previous_path, unset_path = path + ".previous", path + ".unset"
    current, kept = read_text(path), read_text(previous_path)
    writes = []  # (path, text) in order; the environment file itself last
    if state == "stage" and current != content:
        if current is not None:
            writes.append((previous_path, current))
            kept = current
        writes.append((path, content))
    elif state == "restore" and kept is not None:
        writes.append((path, kept))
    removes = [previous_path] if kept is not None and state in ("restore", "forget") else []
    if os.path.lexists(unset_path):
        removes.append(unset_path)
    return writes, removes, kept is not None and previous_path not in removes


def apply(writes, removes, gid):
    for target, text in writes:
        write_atomic(target, text, 0o640, uid=0, gid=gid, durable=True)
    for target in removes:
        os.unlink(target)
