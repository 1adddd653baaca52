#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""After the health checks: settle healthy services, roll back the others; or roll one back on demand."""

from __future__ import annotations

DOCUMENTATION = r"""
module: vassal_settle
short_description: Settle or roll back many services of a host in one call
description:
  - For each service, by its C(outcome)
  - C(healthy) (its deploy passed the health check), forgets the environment file kept for a rollback;
  - C(unhealthy) (the health check failed after the switch), puts back the previous environment file and
    the release that served before, and reloads the vassal with them, waiting for its new workers; a first
    release that fails is stopped instead (it never goes live);
  - C(rollback) (the rollback playbook), switches C(current) to C(release), or to the release that served
    before the current one, and chain-reloads the vassal.
  - Services are handled concurrently; one that cannot be returned is reported, the others go on.
version_added: 0.2.0
options:
  services:
    description:
      - Each with C(name), C(root), C(group), C(env_file), C(ini_path), C(stats_socket), C(reload_file),
        C(log_file), C(remove_sockets), C(outcome), and for C(unhealthy) C(previous), C(switched) and
        C(env_changed) (from the deploy's results), for C(rollback) an optional C(release).
    type: list
    elements: dict
    required: true
  timeout:
    description: Seconds to wait for a vassal's workers after a reload.
    type: int
    default: 90
  lock:
    description:
      - The deploy lock this run holds (C(run), C(dir), C(lease)), from C(microsvc.deploy.deploy_lock). The call
        fails before any change when another run holds the lock of one of the services, and renews the lease.
    type: dict
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
- name: Roll one service back to the release that served before
  microsvc.deploy.vassal_settle:
    services:
      - {name: billing, root: /opt/www/billing, group: billing, env_file: /opt/www/billing/env,
         ini_path: /etc/uwsgi/vassals/billing.ini, stats_socket: /opt/www/billing/run/stats.sock,
         reload_file: /opt/www/billing/run/chain-reload, outcome: rollback}
"""

RETURN = r"""
services:
  description:
    - Per service name, C(ok), C(msg), C(action), C(previous) and C(current) (releases before and after),
      C(env_restored), C(stopped).
  returned: always
  type: dict
"""

import concurrent.futures
import contextlib
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.microsvc.deploy.plugins.module_utils import deploy_lock, envfile, fsutil, releases, vassal


def settle(svc, timeout):
    out = dict(ok=True, msg="", action="none", previous=None, current=None, env_restored=False, stopped=False)
    gid = fsutil.gid_of(svc["group"])
    outcome = svc["outcome"]
    if outcome == "healthy":
        writes, removes = envfile.plan(svc["env_file"], "forget")[:2]
        envfile.apply(writes, removes, gid)
        out["action"] = "settled" if removes else "none"
        return out
    if outcome == "unhealthy":
        if svc.get("env_changed"):
            writes, removes = envfile.plan(svc["env_file"], "restore")[:2]
            envfile.apply(writes, removes, gid)
            out["env_restored"] = True
        previous = svc.get("previous")
        if not previous:
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
        out["action"] = "rolled back (%s)" % result["action"]
        return out
    # on-demand rollback
    plan = releases.plan_switch(svc["root"], svc.get("release") or None, rollback=True)
    if plan["changed"]:
        releases.apply_switch(svc["root"], plan)
    result = vassal.apply(svc["name"], svc["ini_path"], None, svc["stats_socket"], svc["reload_file"],
                          code_changed=plan["previous"] != plan["current"], timeout=timeout, log_file=svc.get("log_file"))
    out.update(action=result["action"], previous=plan["previous"], current=plan["current"])
    return out


def main():
    module = AnsibleModule(
        argument_spec=dict(
            services=dict(type="list", elements="dict", required=True),
            timeout=dict(type="int", default=90),
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
        futures = {pool.submit(settle, svc, module.params["timeout"]): svc["name"] for svc in services}
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
