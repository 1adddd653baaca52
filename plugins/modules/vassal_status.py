#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Report the state of every service of a host in one call (for playbooks/status.yml)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: vassal_status
short_description: Release, workers, memory and uptime of every service of a host
description:
  - For each service given, reads the C(current) release, the vassal's stats socket (master pid,
    workers and whether they accept requests) and C(/proc) (resident memory of the master and its
    workers, uptime of the master). Changes nothing.
  - Each stats socket is read as the service's user, within a few seconds and a size cap, and its
    answer schema-checked; a service whose answer cannot be used gets C(stats_error) (why) and no
    numbers, the other services are read as usual. Only processes of the service's user are measured.
  - For a service with workers or schedules (systemd units naming it in I(units_dir)), also each worker
    process (state, pid, uptime, automatic restarts) and each schedule (start and result of the last run,
    next run), from systemd.
version_added: 0.1.0
options:
  services:
    description: Services, each with C(name), C(root), C(stats_socket), C(user) and C(group).
    type: list
    elements: dict
    required: true
  units_dir:
    description: Where the services' systemd units are.
    type: path
    default: /etc/systemd/system
notes:
  - Why not a builtin - one read-only call reads every service's release, stats socket (as the service's user, size-
    and time-limited) and processes.
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
- name: Read release, workers, memory and uptime of every service
  microsvc.deploy.vassal_status:
    services: "{{ microsvc_plan.services | selectattr('state', 'equalto', 'present') | list }}"
  register: status
"""

RETURN = r"""
services:
  description: Per service name, C(release), C(running), C(stats_error) (why its stats answer could not
    be used, or null), C(master_pid), C(workers), C(accepting), C(requests), C(rss_kb), C(uptime_s), and
    C(processes) (its worker processes, each C(worker), C(instance),
    C(state), C(pid), C(uptime_s), C(restarts)) and C(schedules) (each C(schedule), C(last_run), C(result),
    C(next_run); times in unix seconds).
  returned: always
  type: dict
now:
  description: The host's time (unix seconds) when it was read.
  returned: always
  type: int
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.microsvc.deploy.plugins.module_utils import asgi, units, uwsgi_stats


def rss_kb(pid, uid=None):
    if uid is not None and not uwsgi_stats.owned_pid(pid, uid):
        return 0
    try:
        with open("/proc/%d/status" % pid, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def uptime_s(pid):
    """Seconds since the process started (from /proc/<pid>/stat and the boot time)."""
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])
        with open("/proc/stat", encoding="utf-8") as handle:
            btime = next(int(line.split()[1]) for line in handle if line.startswith("btime"))
        return int(time.time() - (btime + start_ticks / os.sysconf("SC_CLK_TCK")))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def fsutil_uid(user):
    try:
        import pwd

        return pwd.getpwnam(user).pw_uid
    except (KeyError, TypeError):
        return None


def main():
    module = AnsibleModule(
        argument_spec=dict(services=dict(type="list", elements="dict", required=True),
                           units_dir=dict(type="path", default=units.UNITS_DIR)),
        supports_check_mode=True,
    )
    out = {}
    owned = units.owned(module.params["units_dir"])
    now = time.time()
    # Every service's stats at once, each as its own user and bounded: a service that answers
    # garbage or nothing costs its own line a few seconds, never the others'.
    answers = uwsgi_stats.read_many([(svc["name"], svc["stats_socket"], svc.get("user"), svc.get("group"))
                                     for svc in module.params["services"] if svc.get("interface") != "asgi"])
    for svc in module.params["services"]:
        link = os.path.join(svc["root"], "current")
        release = os.path.basename(os.readlink(link)) if os.path.islink(link) else None
        answer = answers.get(svc["name"])
        stats = answer.stats if answer else None
        entry = dict(release=release, running=stats is not None, stats_error=answer.reason if answer else None,
                     master_pid=None, workers=0, accepting=0, requests=0, rss_kb=0, uptime_s=None, processes=[],
                     schedules=[])
        if answer is None:
            # An ASGI service: its live slot's server (systemd's main pid, counted only when it is
            # the service's process), its processes and their memory; no request count.
            try:
                _slot, pid = asgi.running(svc["name"], svc["root"])
            except units.UnitsError:
                pid = None
            uid = fsutil_uid(svc.get("user"))
            if pid and uwsgi_stats.owned_pid(pid, uid):
                children = [c for c in units.descendants(pid) if uwsgi_stats.owned_pid(c, uid)]
                entry.update(running=True, master_pid=pid, workers=len(children) or 1,
                             accepting=len(children) or 1, uptime_s=uptime_s(pid),
                             rss_kb=rss_kb(pid, uid) + sum(rss_kb(c, uid) for c in children))
        if svc["name"] in owned:
            try:
                procs = units.status(svc["name"], module.params["units_dir"], now=now,
                                     log_dir=os.path.join(svc["root"], "shared", "log"))
            except units.UnitsError as exc:
                module.fail_json(msg="service '%s': %s" % (svc["name"], exc))
            entry.update(processes=procs["workers"], schedules=procs["schedules"])
        if stats:
            # A checked answer: the fields used here have their types and ranges; its pids count only
            # when they are the service's own processes.
            workers = stats["workers"]
            master = stats["pid"]
            own = uwsgi_stats.owned_pid(master, answer.uid)
            entry.update(
                master_pid=master if own else None,
                workers=len(workers),
                accepting=sum(1 for w in workers if w["accepting"]),
                requests=sum(w["requests"] for w in workers),
                rss_kb=rss_kb(master, answer.uid) + sum(rss_kb(w["pid"], answer.uid) for w in workers if w["pid"]),
                uptime_s=uptime_s(master) if own else None,
            )
        out[svc["name"]] = entry
    module.exit_json(changed=False, services=out, now=int(now))


if __name__ == "__main__":
    main()
