#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""After the health checks: settle healthy services, roll back the others; or roll one back on demand."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deploy_outcome
short_description: Settle or roll back many services of a host in one call
description:
  - For each service, by its C(outcome)
  - C(healthy) (its deploy passed the health check), makes its workers and schedules what C(units) says (unit
    files written, removed ones stopped, every worker process restarted on the new release when the release or
    the environment changed, new ones started) and waits until each started process stays up for its
    C(start_seconds); then forgets the environment file kept for a rollback. A worker that does not stay up
    fails the service, naming the worker, and the service goes back as for C(unhealthy), its previous units
    and worker processes included;
  - C(unhealthy) (the health check failed after the switch), puts back the previous environment file and
    the release that served before, and reloads the vassal with them, waiting for its new workers; a first
    release that fails is stopped instead (it never goes live);
  - C(rollback) (the rollback playbook), switches C(current) to C(release), or to the release that served
    before the current one, chain-reloads the vassal and restarts the service's worker processes.
  - Services are handled concurrently; one that cannot be returned is reported, the others go on.
version_added: 0.2.0
options:
  services:
    description:
      - Each with C(name), C(root), C(group), C(env_file), C(ini_path), C(stats_socket), C(reload_file),
        C(log_file), C(remove_sockets), C(outcome), and for C(healthy) and C(unhealthy) C(previous),
        C(switched) and C(env_changed) (from the deploy's results), for C(healthy) C(units) (the probe's
        C(files), C(workers), C(timers), C(log_dir)), for C(rollback) an optional C(release).
    type: list
    elements: dict
    required: true
  timeout:
    description: Seconds to wait for a vassal's workers after a reload.
    type: int
    default: 90
  units_dir:
    description: Where the services' systemd units are.
    type: path
    default: /etc/systemd/system
  lock:
    description:
      - The deploy lock this run holds (C(run), C(dir), C(lease)), from C(microsvc.deploy.deploy_lock). The call
        fails before any change when another run holds the lock of one of the services, and renews the lease.
    type: dict
notes:
  - Why not a builtin - one call settles or rolls back every service of a host concurrently, each alone, under the
    deploy lock.
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
- name: Roll one service back to the release that served before
  microsvc.deploy.deploy_outcome:
    services:
      - {name: billing, root: /opt/www/billing, group: billing, env_file: /opt/www/billing/env,
         ini_path: /etc/uwsgi/vassals/billing.ini, stats_socket: /opt/www/billing/run/stats.sock,
         reload_file: /opt/www/billing/chain-reload, outcome: rollback}
"""

RETURN = r"""
services:
  description:
    - Per service name, C(ok), C(msg), C(step) (what failed, such as C(worker 'default')), C(action),
      C(previous) and C(current) (releases before and after), C(env_restored), C(stopped), C(units) (what
      was done to the workers and schedules).
  returned: always
  type: dict
"""

import concurrent.futures
import contextlib
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.microsvc.deploy.plugins.module_utils import (
    deploy_lock,
    envfile,
    fsutil,
    releases,
    units,
    vassal,
)


def settle(svc, timeout, units_dir=units.UNITS_DIR):
    out = dict(ok=True, msg="", step=None, action="none", previous=None, current=None, env_restored=False,
               stopped=False, units=None)
    gid = fsutil.gid_of(svc["group"])
    outcome = svc["outcome"]
    if outcome == "healthy":
        if svc.get("units") is not None:
            # Workers move to the new release only once the web process passed its health check.
            try:
                result, _undo = units.apply(svc["name"], svc["units"],
                                            restart_all=bool(svc.get("switched") or svc.get("env_changed")),
                                            units_dir=units_dir, log_dir=svc["units"].get("log_dir"))
            except units.UnitsError as exc:
                out.update(ok=False, step=exc.step, msg=str(exc)[-3000:])
                return back(svc, out, timeout, units_dir, getattr(exc, "undo", None))
            out["units"] = {k: result[k] for k in ("write", "remove", "stop", "restart", "start")}
            out["action"] = "units" if result["changed"] else "none"
        writes, removes = envfile.plan(svc["env_file"], "forget")[:2]
        envfile.apply(writes, removes, gid)
        if removes:
            out["action"] = "settled"
        return out
    if outcome == "unhealthy":
        return to_previous(svc, out, timeout, units_dir)
    # on-demand rollback
    plan = releases.plan_switch(svc["root"], svc.get("release") or None, rollback=True)
    if plan["changed"]:
        releases.apply_switch(svc["root"], plan)
    result = vassal.apply(svc["name"], svc["ini_path"], None, svc["stats_socket"], svc["reload_file"],
                          code_changed=plan["previous"] != plan["current"], timeout=timeout, log_file=svc.get("log_file"))
    out.update(action=result["action"], previous=plan["previous"], current=plan["current"])
    if plan["previous"] != plan["current"]:
        try:
            out["units"] = {"restart": units.restart_workers(svc["name"], units_dir, log_dir=svc.get("log_dir"))}
        except units.UnitsError as exc:
            out.update(ok=False, step=exc.step, msg=str(exc)[-3000:])
    return out


def to_previous(svc, out, timeout, units_dir, undo=None):
    """The service returns to what served before, web and workers: the previous environment and
    release (the vassal reloaded), the previous units with every worker process that ran restarted
    on that release (``undo``, when the units had changed); a first release is stopped altogether,
    units included (it never goes live)."""
    if svc.get("env_changed"):
        writes, removes = envfile.plan(svc["env_file"], "restore")[:2]
        envfile.apply(writes, removes, fsutil.gid_of(svc["group"]))
        out["env_restored"] = True
    previous = svc.get("previous")
    if not previous:
        units.remove_all(svc["name"], units_dir)
        vassal.stop(svc["ini_path"], svc["stats_socket"], svc.get("remove_sockets") or [], timeout, svc["name"])
        out.update(action="stopped", stopped=True)
        return out
    if svc.get("switched"):
        plan = releases.plan_switch(svc["root"], previous, rollback=True)
        releases.apply_switch(svc["root"], plan)
        out.update(previous=plan["previous"], current=plan["current"])
    result = vassal.apply(svc["name"], svc["ini_path"], None, svc["stats_socket"], svc["reload_file"],
                          code_changed=bool(svc.get("switched")), config_changed=out["env_restored"],
                          timeout=timeout, log_file=svc.get("log_file"))
    if undo is not None:
        out["units"] = {"restart": units.restore(svc["name"], undo, units_dir)}
    out["action"] = "rolled back (%s)" % result["action"]
    return out


def back(svc, out, timeout, units_dir, undo):
    """A healthy deploy whose workers failed: back to what served before (to_previous); a failure
    of that is reported with the workers' failure."""
    try:
        return to_previous(svc, out, timeout, units_dir, undo)
    except Exception as exc:  # noqa: BLE001 - reported with the failure; the other services go on
        out["recovery_error"] = str(exc)[-1500:]
    return out


def main():
    module = AnsibleModule(
        argument_spec=dict(
            services=dict(type="list", elements="dict", required=True),
            timeout=dict(type="int", default=90),
            units_dir=dict(type="path", default=units.UNITS_DIR),
            lock=dict(type="dict"),
        ),
        supports_check_mode=False,
    )
    results = {}
    services = module.params["services"]
    # Work under this run's deploy lock of the services (verified first, renewed while working).
    held = contextlib.ExitStack()
    try:
        held.enter_context(deploy_lock.Held(module.params["lock"], [s["name"] for s in services]))
    except deploy_lock.LockError as exc:
        module.fail_json(msg=str(exc))
    with held, concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(len(services), os.cpu_count() or 2))) as pool:
        futures = {pool.submit(settle, svc, module.params["timeout"], module.params["units_dir"]): svc["name"]
                   for svc in services}
        for future in concurrent.futures.as_completed(futures):
            exc = future.exception()
            if exc is None:
                results[futures[future]] = future.result()
            else:
                results[futures[future]] = dict(ok=False, msg=str(exc)[-3000:], action="failed")
    changed = any(r["action"] not in ("none",) for r in results.values())
    failed = sorted(n for n, r in results.items() if not r["ok"])
    if failed and all(s["outcome"] == "rollback" for s in services):
        module.fail_json(msg="; ".join("service '%s': %s" % (n, results[n]["msg"]) for n in failed), services=results)
    module.exit_json(changed=changed, services=results)


if __name__ == "__main__":
    main()
