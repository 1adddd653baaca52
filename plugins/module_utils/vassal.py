# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Start, reload or stop one vassal of the uWSGI emperor, and wait until it serves.

A new or changed ini starts or reloads the vassal; a changed environment reloads it (uWSGI
reads it at start); new code only touches the chain-reload file, which replaces the workers one
at a time. Each call waits until every worker accepts and none of the old ones is left."""

from __future__ import annotations

import os
import time

from ansible_collections.microsvc.deploy.plugins.module_utils import asgi, fsutil
from ansible_collections.microsvc.deploy.plugins.module_utils.atomic import write_atomic
from ansible_collections.microsvc.deploy.plugins.module_utils.uwsgi_stats import (
    NotRunning,
    read,
    read_stats,
    summary,
    workers,
)

# Stats sockets are read as the owner of the service's run/ directory (the service's user), each read
# bounded in time and size and schema-checked (uwsgi_stats); an answer that cannot be used counts as
# no answer, so a service that hijacks its own stats socket can only make its own deploy wait and fail.


class VassalError(Exception):
    def __init__(self, message, stats=None, log_tail=""):
        super().__init__(message)
        self.stats = stats
        self.log_tail = log_tail


def decide(ini_path, ini_content, stats_socket, code_changed=False, config_changed=False):
    """(action, live ini, old worker pids, master pid) for one vassal; action is one of none,
    start, reload, wait, chain-reload."""
    before = read_stats(stats_socket)
    old = [pid for pid, _acc, _st in workers(before)]
    live = fsutil.read_text(ini_path)
    wanted = live if ini_content is None else ini_content
    if wanted is None:
        raise VassalError("no vassal ini at %s" % ini_path)
    if live != wanted:
        action = "start" if (live is None or before is None) else "reload"
    elif config_changed:
        action = "reload"
    elif before is None:
        action = "wait"  # the ini is right but nothing answers: the emperor will (re)start it
    elif code_changed:
        action = "chain-reload"
    else:
        action = "none"
    return action, live, old, (before or {}).get("pid")


def act(action, ini_path, ini_content, live, reload_file):
    if action in ("start", "reload") and ini_content is not None and live != ini_content:
        write_atomic(ini_path, ini_content)
    elif action == "reload":
        fsutil.touch(ini_path)
    elif action == "chain-reload":
        fsutil.touch(reload_file)


def wait(stats_socket, action, old, timeout, log_file=None, name=""):
    """Until every worker accepts and none of ``old`` remains (a new generation); returns
    (new worker pids, master pid)."""
    deadline = time.time() + timeout
    last = None
    reason = None
    while time.time() < deadline:
        answer = read(stats_socket)
        last, reason = answer.stats, answer.reason
        current = workers(last)
        if current and all(acc for _pid, acc, _st in current):
            pids = [pid for pid, _acc, _st in current]
            if not old or action == "wait" or not set(pids) & set(old):
                return pids, last.get("pid")
        time.sleep(0.2)
    log = fsutil.tail(log_file)
    raise VassalError("service '%s': the vassal did not come up with new workers within %ds after a %s. "
                      "Last stats: %s. End of its log:\n%s"
                      % (name, timeout, action, reason or summary(last), log),
                      stats=summary(last), log_tail=log)


def apply(name, ini_path, ini_content, stats_socket, reload_file, code_changed=False, config_changed=False,
          timeout=90, log_file=None):
    """Decide, act and wait; returns a result dict (action, old_workers, new_workers, master_pid).
    An ASGI service (its "ini" is its web unit) starts its new release next to the old (asgi.py)."""
    if asgi.is_web_unit(ini_path):
        try:
            return asgi.apply(name, ini_path, ini_content, code_changed, config_changed, timeout, log_file)
        except asgi.AsgiError as exc:
            raise VassalError(str(exc)) from None
    action, live, old, master = decide(ini_path, ini_content, stats_socket, code_changed, config_changed)
    if action == "none":
        return dict(action="none", old_workers=old, new_workers=old, master_pid=master)
    act(action, ini_path, ini_content, live, reload_file)
    pids, master = wait(stats_socket, action, old, timeout, log_file, name)
    return dict(action=action, old_workers=old, new_workers=pids, master_pid=master)


def stopped(stats_socket):
    """Whether nothing listens on the stats socket any more. A master that is shutting down still
    holds it, and may not answer in time (a timeout, not an absence): only a refused connection
    or a missing socket means that it is gone."""
    return isinstance(read(stats_socket).error, NotRunning)


def stop(ini_path, stats_socket, remove_sockets, timeout=90, name=""):
    """Remove the ini (the emperor stops the vassal), wait until nothing listens on its stats
    socket, then remove its sockets. Returns False when there was nothing to do. An ASGI service's
    slots, units, sockets and link go together (asgi.py)."""
    if asgi.is_web_unit(ini_path):
        return asgi.stop(name, ini_path, timeout)
    if not [p for p in [ini_path] + list(remove_sockets) if os.path.lexists(p)]:
        return False
    if os.path.exists(ini_path):
        os.unlink(ini_path)
    deadline = time.time() + timeout
    while not stopped(stats_socket):
        if time.time() > deadline:
            raise VassalError("service '%s': something still listens on the vassal's stats socket %ds after its "
                              "ini was removed" % (name, timeout))
        time.sleep(0.2)
    for path in remove_sockets:
        if os.path.lexists(path):
            os.unlink(path)
    return True
