#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Write a vassal's ini or reload it, then wait until every worker runs the new code; or stop and
remove services, all at once."""

from __future__ import annotations

DOCUMENTATION = r"""
module: vassal
short_description: Start or reload one uWSGI vassal and wait until its workers are ready, or remove services
description:
  - Chooses the gentlest way to make a vassal run what is on disk, and waits for it to finish.
  - When the vassal ini differs from I(ini_content) (or is missing), writes it atomically; the emperor
    then starts the vassal, or reloads it gracefully (the socket stays open, requests queue).
  - When only the environment file changed (I(config_changed)), touches the ini so the emperor reloads
    the vassal and it re-reads the file.
  - When only the code changed (I(code_changed)), touches the chain-reload file, and uWSGI replaces the
    workers one at a time, each loading the new release before the next one stops, so no request
    fails. Touching the ini for this would restart the whole vassal (uwsgi issue 2210).
  - Waits, through the vassal's stats socket, until every worker was replaced and accepts requests;
    on timeout fails with the stats and the end of the service's log.
version_added: 0.1.0
options:
  name:
    description: Service name (for messages; required with C(state=present)).
    type: str
  ini_path:
    description: The vassal ini in the emperor's directory (required with C(state=present)).
    type: path
  ini_content:
    description:
      - Wanted content of the vassal ini. When not given, the ini is left as it is (a rollback only
        reloads the code).
    type: str
  state:
    description:
      - C(present) starts or reloads the vassal as described above.
      - C(absent) removes every service of I(services), all at once (each mostly waits for the emperor). First
        its ini (the emperor stops the vassal), and waits until nothing listens on its stats socket, then stops
        the service's workers, schedules and slice and removes their systemd units (the files in I(units_dir)
        that name the service), its sockets (C(remove_sockets)) and its other files (C(remove_files), e.g. its
        log rotation). The vassal goes first, because with limits its master runs in the service's slice, and a
        slice stopped while the ini is still there kills a master that the emperor would start again.
    type: str
    choices: [present, absent]
    default: present
  services:
    description:
      - The services to remove (C(state=absent)), each with C(name), C(ini_path), C(stats_socket),
        C(remove_sockets) and C(remove_files) (paths that are unlinked, never followed).
    type: list
    elements: dict
    default: []
  stats_socket:
    description: The vassal's stats socket (required with C(state=present)).
    type: path
  reload_file:
    description: The vassal's C(touch-chain-reload) file (required with C(state=present)).
    type: path
  code_changed:
    description: The current release changed.
    type: bool
    default: false
  config_changed:
    description: Something the vassal reads only at start (its environment file) changed.
    type: bool
    default: false
  log_file:
    description: The service's uWSGI log, quoted on failure.
    type: path
  timeout:
    description: Seconds to wait for the workers.
    type: int
    default: 90
  units_dir:
    description: Where the service's systemd units are (C(state=absent)).
    type: path
    default: /etc/systemd/system
  lock:
    description:
      - The deploy lock this run holds (C(run), C(dir), C(lease)), from C(microsvc.deploy.deploy_lock). Outside
        check mode the call fails before any change when another run holds the lock of one of the services.
    type: dict
notes:
  - Why not a builtin - writing the ini, touching the reload file and waiting on the stats socket are one decision;
    C(template), C(file) and C(wait_for) cannot choose the reload or see the workers ready.
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
- name: Stop two services and remove their sockets, units and log rotation
  microsvc.deploy.vassal:
    state: absent
    services:
      - name: billing
        ini_path: /etc/uwsgi/vassals/billing.ini
        stats_socket: /opt/www/billing/run/stats.sock
        remove_sockets: [/opt/www/billing/uwsgi.sock, /opt/www/billing/run/stats.sock]
        remove_files: [/etc/logrotate.d/microsvc-billing]
      - name: search
        ini_path: /etc/uwsgi/vassals/search.ini
        stats_socket: /opt/www/search/run/stats.sock
        remove_sockets: [/opt/www/search/uwsgi.sock, /opt/www/search/run/stats.sock]
        remove_files: [/etc/logrotate.d/microsvc-search]
"""

RETURN = r"""
action:
  description: What was done; one of C(none), C(start), C(reload), C(chain-reload).
  returned: with state=present
  type: str
old_workers:
  description: Worker pids before.
  returned: with state=present
  type: list
new_workers:
  description: Worker pids after.
  returned: with state=present
  type: list
master_pid:
  description: The vassal's master pid after.
  returned: with state=present
  type: int
removed:
  description:
    - Per service removed (C(state=absent)), C(action) (C(stop) or C(none)) and C(removed_units) (the systemd unit
      files of its workers and schedules that were removed), or C(error).
  returned: when state is absent
  type: dict
"""

import concurrent.futures
import contextlib
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.microsvc.deploy.plugins.module_utils import asgi, deploy_lock, units, vassal

AFTER_SLICE_STOP = 10  # seconds for the stats socket to go quiet once the service's slice is stopped
AT_ONCE = 16  # services removed at once (each mostly waits for the emperor)


def stop_then_remove_units(svc, units_dir, timeout):
    """The vassal first, then the service's units and slice. With limits the vassal's master runs in
    the service's slice: stopping the slice while the ini is still there kills the master, and the
    emperor starts it again from that ini, too early to hear the stop that follows. When something
    still listens on the stats socket after the timeout, stopping the slice ends what is left of the
    service, and one more short wait must then see the socket quiet."""
    sockets = svc.get("remove_sockets") or []
    try:
        changed, leftover = vassal.stop(svc["ini_path"], svc["stats_socket"], sockets, timeout, svc["name"]), None
    except vassal.VassalError as exc:
        changed, leftover = True, exc
    # A service no longer listed may have been an ASGI one: its web slots go too.
    changed = asgi.stop(svc["name"], asgi.unit_path(svc["name"]), timeout) or changed
    removed_units = units.remove_all(svc["name"], units_dir)
    if leftover is not None:
        vassal.stop(svc["ini_path"], svc["stats_socket"], sockets, AFTER_SLICE_STOP, svc["name"])
    return changed, removed_units


def remove_one(svc, units_dir, timeout, check_mode):
    """One service gone: {action, removed_units}, or {error}."""
    files = [p for p in svc.get("remove_files") or [] if os.path.lexists(p)]
    try:
        if check_mode:
            removed_units = units.remove_all(svc["name"], units_dir, check_mode=True)
            changed = bool(files) or any(os.path.lexists(p) for p in [svc["ini_path"]] + (svc.get("remove_sockets") or []))
        else:
            changed, removed_units = stop_then_remove_units(svc, units_dir, timeout)
            for path in files:
                os.unlink(path)  # the link itself where one is: never followed
    except (vassal.VassalError, units.UnitsError, OSError) as exc:
        return dict(error="service '%s': %s" % (svc["name"], exc))
    return dict(action="stop" if changed or files else "none", removed_units=removed_units,
                changed=bool(changed or files or removed_units))


def remove(module):
    p = module.params
    services = p["services"]
    held = contextlib.ExitStack()
    if not module.check_mode:
        try:
            held.enter_context(deploy_lock.Held(p["lock"], [s["name"] for s in services]))
        except deploy_lock.LockError as exc:
            module.fail_json(msg=str(exc))
    with held, concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(AT_ONCE, len(services)))) as pool:
        outcomes = pool.map(lambda svc: remove_one(svc, p["units_dir"], p["timeout"], module.check_mode), services)
        results = dict(zip([s["name"] for s in services], outcomes))
    changed = any(r.pop("changed", False) or r.get("error") for r in results.values())
    errors = [results[name]["error"] for name in sorted(results) if results[name].get("error")]
    if errors:
        module.fail_json(msg="; ".join(errors), removed=results, changed=changed)
    module.exit_json(changed=changed, removed=results)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str"),
            ini_path=dict(type="path"),
            ini_content=dict(type="str"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            services=dict(type="list", elements="dict", default=[]),
            stats_socket=dict(type="path"),
            reload_file=dict(type="path"),
            code_changed=dict(type="bool", default=False),
            config_changed=dict(type="bool", default=False),
            log_file=dict(type="path"),
            timeout=dict(type="int", default=90),
            units_dir=dict(type="path", default=units.UNITS_DIR),
            lock=dict(type="dict"),
        ),
        required_if=[("state", "present", ("name", "ini_path", "stats_socket", "reload_file"))],
        supports_check_mode=True,
    )
    p = module.params
    if p["state"] == "absent":
        remove(module)
    try:
        action, live, old, master = vassal.decide(p["ini_path"], p["ini_content"], p["stats_socket"],
                                                  p["code_changed"], p["config_changed"])
        result = dict(changed=action != "none", action=action, old_workers=old, new_workers=old, master_pid=master)
        wanted = live if p["ini_content"] is None else p["ini_content"]
        if module._diff and live != wanted:
            result["diff"] = dict(before_header=p["ini_path"], after_header=p["ini_path"], before=live or "",
                                  after=wanted)
        if module.check_mode or action == "none":
            module.exit_json(**result)
        vassal.act(action, p["ini_path"], p["ini_content"], live, p["reload_file"])
        result["new_workers"], result["master_pid"] = vassal.wait(p["stats_socket"], action, old, p["timeout"],
                                                                  p["log_file"], p["name"])
    except vassal.VassalError as exc:
        module.fail_json(msg=str(exc), stats=exc.stats, log_tail=exc.log_tail)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
