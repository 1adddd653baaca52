# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""The controller's side of the deploy lock, for the action plugins that take it: deploy_lock (a
call of its own) and vassal_probe (in the probe's call, where the play's batch is one host).

The run is this ansible-playbook process: an action runs in a worker that the playbook process
forked, so the worker's parent is the run. Its identity (controller host name, boot, PID namespace,
PID and the process's start time) is the same for every task and host of the run, and lets this
controller tell whether a holder that came from here is gone: its process no longer exists, or the
PID now belongs to a process that started at another time. A holder from another controller is
gone when its lease expires (the module decides; see module_utils/deploy_lock.py).
"""

from __future__ import annotations

import datetime
import getpass
import hashlib
import os
import socket
import time

from ansible import context
from ansible.errors import AnsibleActionFail
from ansible_collections.microsvc.deploy.plugins.module_utils import deploy_lock

# How long one module call waits on the host before the controller looks at the holder again.
POLL = 15


def _started(pid, ticks):
    """The start time of a process in UTC (ISO 8601), from /proc; None where unknown."""
    if ticks is None:
        return None
    try:
        with open("/proc/stat", encoding="utf-8") as handle:
            btime = next(int(line.split()[1]) for line in handle if line.startswith("btime "))
        when = btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError):
        return None
    return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def this_run(purpose="deploy"):
    """The holder record of this run."""
    pid = os.getppid()
    ticks = deploy_lock.process_start_ticks(pid)
    identity = dict(deploy_lock.machine_identity(), start_ticks=ticks)
    controller = socket.gethostname()
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "uid %d" % os.getuid()
    playbooks = (context.CLIARGS or {}).get("args") or ()
    run = hashlib.sha1(("%s|%s|%s|%s|%s" % (controller, identity["boot_id"], identity["pid_ns"], pid, ticks))
                       .encode("utf-8")).hexdigest()[:20]
    return dict(run=run, controller=controller, user=user, pid=pid,
                started=_started(pid, ticks) or "unknown",
                playbook=", ".join(os.path.basename(str(p)) for p in playbooks) or "unknown",
                purpose=purpose, identity=identity)


def gone_here(record, me):
    """Whether ``record``'s holder ran on this controller and its process is gone."""
    identity = record.get("identity") or {}
    if not deploy_lock.same_machine(identity, record.get("controller"), me["identity"], me["controller"]):
        return False
    return not deploy_lock.process_alive(record.get("pid"), identity.get("start_ticks"))


def call_module(action, task_vars, **args):
    """One call of the module deploy_lock from ``action`` (an ActionBase); fails the task on failure."""
    result = action._execute_module(module_name="microsvc.deploy.deploy_lock", module_args=args, task_vars=task_vars)
    if result.get("failed"):
        raise AnsibleActionFail(result.get("msg") or "deploy_lock failed", result=result)
    return result


def take(action, task_vars, me, services, lock_dir, lease, timeout, first=None):
    """Take the deploy lock of ``services`` for the run ``me`` (this_run()), from ``action``: waits up
    to ``timeout`` seconds for other runs, breaks the lock of a run from this controller that is
    gone, and fails naming the holder when the time is up. ``first``: the outcome of an attempt
    already made in another module's call (the probe's), so that the common case costs no call
    of its own. Returns the task's result fields (acquired, blocked, broken, waited, lock, holder, msg)."""
    common = dict(holder=me, dir=lock_dir, lease=lease)
    started = time.time() - ((first or {}).get("waited") or 0)  # the first attempt's wait counts
    break_runs, broken = [], []
    out = first
    while True:
        if out is None:
            remaining = max(0, started + timeout - time.time())
            out = call_module(action, task_vars, services=services, state="acquired", wait=int(min(remaining, POLL)),
                              break_runs=break_runs, **common)
        broken += out["broken"]
        blocked = out["blocked"]
        if not blocked or action._play_context.check_mode:
            break
        gone = [r["run"] for r in blocked.values() if r.get("run") and r["run"] not in break_runs
                and gone_here(r, me)]
        if gone:
            break_runs += gone
            out = None
            continue
        if time.time() - started >= timeout:
            name, record = min(blocked.items())
            raise AnsibleActionFail(
                "service '%s': the deploy lock on %s is held by %s. Waited %ds (uwsgi_vassal_lock_timeout is %d); "
                "this run changed nothing of the service on this host. Run again when that run has finished; "
                "a lock whose run is gone is broken by the next run, at once from the same controller, otherwise "
                "when its lease expires." % (name, task_vars.get("inventory_hostname"),
                                             deploy_lock.describe(record, out.get("now")), time.time() - started,
                                             timeout),
                result=dict(blocked=blocked, acquired=out["acquired"], lock=out["lock"]))
        out = None
    waited = round(time.time() - started, 1)
    for entry in broken:
        action._display.warning("service '%s' on %s: broke the deploy lock of %s, because %s" % (
            entry["service"], task_vars.get("inventory_hostname"),
            deploy_lock.describe(entry["holder"], out.get("now")), entry["reason"]))
    msg = "holding the deploy lock of %s" % (", ".join(out["acquired"]) or "no service")
    if blocked:  # check mode: report, never wait
        msg = "; ".join("service '%s' is locked by %s" % (n, deploy_lock.describe(r, out.get("now")))
                        for n, r in sorted(blocked.items()))
        action._display.warning(msg)
    elif waited >= 1:
        msg += " after waiting %ss" % waited
    return dict(changed=False, acquired=out["acquired"], blocked=blocked, broken=broken, waited=waited,
                lock=out["lock"], holder=me, msg=msg)


def lock_args(args):
    """(services, dir, lease, timeout, purpose) of a task's lock arguments."""
    return ([str(s) for s in args.get("services") or []], args.get("dir") or deploy_lock.DEFAULT_DIR,
            int(args.get("lease") or 900), int(args.get("timeout") if args.get("timeout") is not None else 600),
            str(args.get("purpose") or "deploy"))
