#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Take or release the deploy locks of services on a host (one run at a time per service)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deploy_lock
short_description: Take or release the deploy lock of services on a host
description:
  - A run of a playbook takes the lock of every service it is going to change on a host before the
    host changes, and releases it at the end, also on failure (the role C(microsvc.deploy.uwsgi_vassal)
    does both, in a block and its C(always)). Another run that needs one of those services waits, then
    fails naming the holder. Runs that touch different services proceed together.
  - The lock is a record per service in I(dir) (C(<service>.lock), JSON, 0600), because a run is many
    module calls; see C(plugins/module_utils/deploy_lock.py) for how records are kept atomic.
  - A lock whose holder is gone is broken (taken over), never while a module call of the holder still
    works under it, when its lease expired (no call of the holder renewed it for I(lease) seconds), or
    when the holder's own controller found its process gone (the action plugin does that check and
    passes I(break_runs)).
  - The action plugin of the same name identifies the run (controller host, user, PID and start time of
    the C(ansible-playbook) process, playbook), repeats the attempt until I(timeout), and fails naming the
    holder. In check mode it reports holders and waits for nothing.
  - Changes nothing that the play manages, so it never reports C(changed).
version_added: 0.2.0
options:
  services:
    description: Names of the services. With I(state=released), omitted means every lock this run holds on the host.
    type: list
    elements: str
    default: []
  state:
    description: C(acquired) takes the locks (in name order, each waiting for its holder), C(released) removes this run's.
    type: str
    choices: [acquired, released]
    default: acquired
  holder:
    description: The run (C(run), C(controller), C(user), C(pid), C(started), C(playbook), C(purpose), C(identity)); set by the action plugin.
    type: dict
    required: true
  lease:
    description: Seconds a lock stays valid without a call of its holder renewing it.
    type: int
    default: 900
  wait:
    description: Seconds this call tries before it returns the holder that blocks it (the action plugin loops until I(timeout)).
    type: int
    default: 0
  break_runs:
    description: Runs whose process their controller (this one) found gone; their locks may be broken when not in use.
    type: list
    elements: str
    default: []
  dir:
    description: Directory of the lock records.
    type: path
    default: /var/lib/microsvc/locks
  timeout:
    description: (action plugin) Seconds to wait for a lock held by another run before failing with its holder named; 0 fails at once.
    type: int
    default: 600
  purpose:
    description: (action plugin) What the run does (deploy, rollback, remove), recorded with the holder.
    type: str
    default: deploy
notes:
  - Why not a builtin - no builtin takes a lock that spans a run's many calls, with a lease and a holder to name.
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
- name: Take the deploy lock of the services this run changes
  microsvc.deploy.deploy_lock:
    services: [billing, search]
    timeout: 600          # action plugin: wait up to this long, then fail naming the holder
    lease: 900
    purpose: deploy
  register: lock

- name: Release every lock this run holds on the host
  microsvc.deploy.deploy_lock:
    state: released
"""

RETURN = r"""
acquired:
  description: Services whose lock this run holds now.
  returned: always
  type: list
blocked:
  description: Per service still held by another run, the holder's record.
  returned: always
  type: dict
broken:
  description: Locks taken over from a gone holder (C(service), C(holder), C(reason)).
  returned: always
  type: list
released:
  description: Services whose lock was released (state released).
  returned: always
  type: list
lock:
  description: C(run), C(dir) and C(lease), for the modules that work under the lock (their C(lock) option).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.microsvc.deploy.plugins.module_utils import deploy_lock


def main():
    module = AnsibleModule(
        argument_spec=dict(
            services=dict(type="list", elements="str", default=[]),
            state=dict(type="str", choices=["acquired", "released"], default="acquired"),
            holder=dict(type="dict", required=True),
            lease=dict(type="int", default=900),
            wait=dict(type="int", default=0),
            break_runs=dict(type="list", elements="str", default=[]),
            dir=dict(type="path", default=deploy_lock.DEFAULT_DIR),
            # Used by the action plugin (the wait, and the purpose recorded in the holder); the module
            # accepts them so that a direct call documented like the task works, and ignores them.
            timeout=dict(type="int", default=600),
            purpose=dict(type="str", default="deploy"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    run = p["holder"].get("run")
    if not run:
        module.fail_json(msg="holder has no run id")
    try:
        if p["state"] == "released":
            released = [] if module.check_mode else deploy_lock.release(p["dir"], run, p["services"] or None)
            module.exit_json(changed=False, released=released, acquired=[], blocked={}, broken=[],
                             lock={"run": run, "dir": p["dir"], "lease": p["lease"]})
        out = deploy_lock.acquire(p["dir"], p["services"], p["holder"], p["lease"], p["wait"], p["break_runs"],
                                  check_mode=module.check_mode)
    except (deploy_lock.LockError, OSError) as exc:
        module.fail_json(msg="deploy lock: %s" % exc)
    module.exit_json(changed=False, **out)


if __name__ == "__main__":
    main()
