# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""A service's environment file (secrets included): 0640 root:<service>, written atomically.

While a deploy runs, the previous content waits in ``<env>.previous`` (same mode) and is put
back if the deploy fails; names dropped from the environment are listed in ``<env>.unset``,
which the vassal ini unsets on reload (a uWSGI reload keeps the master's environment)."""

from __future__ import annotations

import os

from ansible_collections.microsvc.deploy.plugins.module_utils.atomic import write_atomic
from ansible_collections.microsvc.deploy.plugins.module_utils.fsutil import read_text


def names(text):
    """Variable names of an environment file (or of an .unset file: one name per line)."""
    return {line.split("=", 1)[0].strip() for line in (text or "").splitlines() if line.strip()}


def plan(path, state, content=None):
    """(writes, removes, previous kept afterwards, unset names) for one step of a deploy:
    stage (write the new content, keep the previous), restore (the deploy failed: put the previous
    back), forget (the deploy succeeded: drop the previous)."""
    previous_path, unset_path = path + ".previous", path + ".unset"
    current, kept, unset_text = read_text(path), read_text(previous_path), read_text(unset_path)
    listed = names(unset_text)
    writes = []  # (path, text) in order; the environment file itself last
    if state == "stage":
        if current != content:
            if current is not None:
                writes.append((previous_path, current))
                kept = current
            listed = (listed | names(current)) - names(content)
            writes.insert(0, (unset_path, "".join(n + "\n" for n in sorted(listed))))
            writes.append((path, content))
        elif unset_text is None:
            writes.append((unset_path, ""))
    elif state == "restore" and kept is not None:
        listed = (listed | names(current)) - names(kept)
        writes.append((unset_path, "".join(n + "\n" for n in sorted(listed))))
        writes.append((path, kept))
    removes = [previous_path] if kept is not None and state in ("restore", "forget") else []
    return writes, removes, kept is not None and not removes, sorted(listed)


def apply(writes, removes, gid):
    for target, text in writes:
        write_atomic(target, text, 0o640, uid=0, gid=gid, durable=True)
    for target in removes:
        os.unlink(target)
