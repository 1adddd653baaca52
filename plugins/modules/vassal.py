#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Write a vassal's ini or reload it, then wait until every worker runs the new code."""

from __future__ import annotations

DOCUMENTATION = r"""
module: vassal
short_description: Start or reload one uWSGI vassal and wait until its workers are ready
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
    description: Service name (for messages).
    type: str
    required: true
  ini_path:
    description: The vassal ini in the emperor's directory.
    type: path
    required: true
  ini_content:
    description:
      - Wanted content of the vassal ini. When not given, the ini is left as it is (a rollback only
        reloads the code).
    type: str
  state:
    description:
      - C(present) starts or reloads the vassal as described above.
      - C(absent) first removes the ini (the emperor stops the vassal) and waits until nothing listens on its
        stats socket, then stops the service's workers, schedules and slice and removes their systemd units
        (the files in I(units_dir) that name the service), and removes the sockets listed in I(remove_sockets).
        The vassal goes first, because with limits its master runs in the service's slice, and a slice stopped
        while the ini is still there kills a master that the emperor would start again.
    type: str
    choices: [present, absent]
    default: present
  remove_sockets:
    description: Socket files to remove after the vassal stopped (C(state=absent)).
    type: list
    elements: path
    default: []
  stats_socket:
    description: The vassal's stats socket.
    type: path
    required: true
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
        check mode the call fails before any change when another run holds the service's lock.
    type: dict
notes:
  - Why not a builtin - writing the ini, touching the reload file and waiting on the stats socket are one decision;
    C(template), C(file) and C(wait_for) cannot choose the reload or see the workers ready.
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
- name: Stop a service's vassal and remove its sockets
  microsvc.deploy.vassal:
    name: billing
    state: absent
    ini_path: /etc/uwsgi/vassals/billing.ini
    stats_socket: /opt/www/billing/run/stats.sock
    remove_sockets: [/opt/www/billing/uwsgi.sock, /opt/www/billing/run/stats.sock]
"""

RETURN = r"""
action:
  description: What was done; one of C(none), C(start), C(reload), C(chain-reload).
  returned: always
  type: str
old_workers:
  description: Worker pids before.
  returned: always
  type: list
new_workers:
  description: Worker pids after.
  returned: always
  type: list
master_pid:
  description: The vassal's master pid after.
  returned: always
  type: int
removed_units:
  description: The systemd unit files of the service's workers and schedules that were removed (C(state=absent)).
  returned: when state is absent
  type: list
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.microsvc.deploy.plugins.module_utils import asgi, deploy_lock, units, vassal

AFTER_SLICE_STOP = 10  # seconds for the stats socket to go quiet once the service's slice is stopped


def stop_then_remove_units(p):
    """The vassal first, then the service's units and slice. With limits the vassal's master runs in
    the service's slice: stopping the slice while the ini is still there kills the master, and the
    emperor starts it again from that ini, too early to hear the stop that follows. When something
    still listens on the stats socket after the timeout, stopping the slice ends what is left of the
    service, and one more short wait must then see the socket quiet."""
    try:
        changed, leftover = vassal.stop(p["ini_path"], p["stats_socket"], p["remove_sockets"], p["timeout"],
                                        p["name"]), None
    except vassal.VassalError as exc:
        changed, leftover = True, exc
    # A service no longer listed may have been an ASGI one: its web slots go too.
    changed = asgi.stop(p["name"], asgi.unit_path(p["name"]), p["timeout"]) or changed
    removed_units = units.remove_all(p["name"], p["units_dir"])
    if leftover is not None:
        vassal.stop(p["ini_path"], p["stats_socket"], p["remove_sockets"], AFTER_SLICE_STOP, p["name"])
    return changed, removed_units


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            ini_path=dict(type="path", required=True),
            ini_content=dict(type="str"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            remove_sockets=dict(type="list", elements="path", default=[]),
            stats_socket=dict(type="path", required=True),
            reload_file=dict(type="path"),
            code_changed=dict(type="bool", default=False),
            config_changed=dict(type="bool", default=False),
            log_file=dict(type="path"),
            timeout=dict(type="int", default=90),
            units_dir=dict(type="path", default=units.UNITS_DIR),
            lock=dict(type="dict"),
        ),
        required_if=[("state", "present", ("reload_file",))],
        supports_check_mode=True,
    )
    p = module.params
    try:
        if p["state"] == "absent":
            if module.check_mode:
                removed_units = units.remove_all(p["name"], p["units_dir"], check_mode=True)
                changed = any(os.path.lexists(path) for path in [p["ini_path"]] + p["remove_sockets"])
            else:
                with deploy_lock.Held(p["lock"], [p["name"]]):
                    changed, removed_units = stop_then_remove_units(p)
            module.exit_json(changed=changed or bool(removed_units), action="stop" if changed else "none",
                             removed_units=removed_units)
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
    except units.UnitsError as exc:
        module.fail_json(msg="service '%s': %s" % (p["name"], exc))
    except deploy_lock.LockError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
