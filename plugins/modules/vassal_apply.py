#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Write a vassal's ini or reload it, then wait until every worker runs the new code."""

from __future__ import annotations

DOCUMENTATION = r"""
module: vassal_apply
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
      - C(absent) removes the ini (the emperor stops the vassal), waits until its stats socket no
        longer answers, and removes the sockets listed in I(remove_sockets).
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
author:
  - microsvc maintainers
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
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.microsvc.deploy.plugins.module_utils.atomic import write_atomic
from ansible_collections.microsvc.deploy.plugins.module_utils.uwsgi_stats import read_stats, summary, workers


def tail(path, lines=30):
    if not path:
        return ""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 16384))
            data = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def touch(path):
    now = time.time()
    if not os.path.exists(path):
        with open(path, "a", encoding="utf-8"):
            pass
    # uWSGI compares whole seconds: make sure the mtime really moves forward.
    st = os.stat(path)
    stamp = max(now, st.st_mtime + 1)
    os.utime(path, (stamp, stamp))


def stop(module):
    p = module.params
    leftovers = [path for path in [p["ini_path"]] + p["remove_sockets"] if os.path.lexists(path)]
    if not leftovers:
        module.exit_json(changed=False, action="none", old_workers=[], new_workers=[], master_pid=None)
    before = read_stats(p["stats_socket"])
    result = dict(changed=True, action="stop", old_workers=[pid for pid, _a, _s in workers(before)],
                  new_workers=[], master_pid=None)
    if module.check_mode:
        module.exit_json(**result)
    if os.path.exists(p["ini_path"]):
        os.unlink(p["ini_path"])
    deadline = time.time() + p["timeout"]
    while read_stats(p["stats_socket"]) is not None:
        if time.time() > deadline:
            module.fail_json(msg="service '%s': the vassal still answers %ds after its ini was removed"
                             % (p["name"], p["timeout"]), **result)
        time.sleep(0.2)
    for path in p["remove_sockets"]:
        if os.path.lexists(path):
            os.unlink(path)
    module.exit_json(**result)


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
        ),
        required_if=[("state", "present", ("reload_file",))],
        supports_check_mode=True,
    )
    p = module.params
    if p["state"] == "absent":
        stop(module)
    before = read_stats(p["stats_socket"])
    old = [pid for pid, _acc, _st in workers(before)]
    try:
        with open(p["ini_path"], encoding="utf-8") as handle:
            live_ini = handle.read()
    except FileNotFoundError:
        live_ini = None

    wanted_ini = live_ini if p["ini_content"] is None else p["ini_content"]
    if wanted_ini is None:
        module.fail_json(msg="service '%s': no vassal ini at %s" % (p["name"], p["ini_path"]))
    if live_ini != wanted_ini:
        action = "start" if (live_ini is None or before is None) else "reload"
    elif p["config_changed"]:
        action = "reload"
    elif before is None:
        # The ini is right but nothing answers: the emperor will (re)start it; just wait.
        action = "wait"
    elif p["code_changed"]:
        action = "chain-reload"
    else:
        module.exit_json(changed=False, action="none", old_workers=old, new_workers=old,
                         master_pid=(before or {}).get("pid"))

    result = dict(changed=True, action=action, old_workers=old)
    if module._diff and live_ini != wanted_ini:
        result["diff"] = dict(before_header=p["ini_path"], after_header=p["ini_path"],
                              before=live_ini or "", after=wanted_ini)
    if module.check_mode:
        module.exit_json(new_workers=old, master_pid=(before or {}).get("pid"), **result)

    if action in ("start", "reload") and live_ini != wanted_ini:
        write_atomic(p["ini_path"], wanted_ini)
    elif action == "reload":
        touch(p["ini_path"])
    elif action == "chain-reload":
        touch(p["reload_file"])

    deadline = time.time() + p["timeout"]
    last = None
    while time.time() < deadline:
        last = read_stats(p["stats_socket"])
        current = workers(last)
        if current and all(acc for _pid, acc, _st in current):
            pids = [pid for pid, _acc, _st in current]
            if not old or action == "wait" or not set(pids) & set(old):
                result.update(new_workers=pids, master_pid=last.get("pid"))
                module.exit_json(**result)
        time.sleep(0.2)
    module.fail_json(
        msg="service '%s': the vassal did not come up with new workers within %ds after a %s. "
        "Last stats: %s. End of its log:\n%s" % (p["name"], p["timeout"], action, summary(last), tail(p["log_file"])),
        stats=summary(last),
        log_tail=tail(p["log_file"]),
        **result
    )


if __name__ == "__main__":
    main()
