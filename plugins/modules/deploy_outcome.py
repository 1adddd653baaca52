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

import contextlib

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.microsvc.deploy.plugins.module_utils import deploy_lock, outcome, units


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
    services = module.params["services"]
    # Work under this run's deploy lock of the services (verified first, renewed while working).
    held = contextlib.ExitStack()
    try:
        held.enter_context(deploy_lock.Held(module.params["lock"], [s["name"] for s in services]))
    except deploy_lock.LockError as exc:
        module.fail_json(msg=str(exc))
    with held:
        results = outcome.settle_all(services, module.params["timeout"], module.params["units_dir"])
    changed = any(r["action"] not in ("none",) for r in results.values())
    failed = sorted(n for n, r in results.items() if not r["ok"])
    if failed and all(s["outcome"] == "rollback" for s in services):
        module.fail_json(msg="; ".join("service '%s': %s" % (n, results[n]["msg"]) for n in failed), services=results)
    module.exit_json(changed=changed, services=results)


if __name__ == "__main__":
    main()
