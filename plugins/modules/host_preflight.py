#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""One read-only call per host before anything changes: refuse foreign accounts, and gather the
facts every role needs (so no role has to ask the host again)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: host_preflight
short_description: Check a host before it changes and gather, in one call, what the roles need to know
description:
  - Fails, listing every service at once and naming the field C(name), when a user or a group named like a
    service exists on the host and was not created by this collection for that service (see
    C(microsvc.deploy.service_accounts)). Nothing is changed, in any mode.
  - Returns, as facts, the distribution facts the roles' platform variables need (the same values as the
    C(setup) module's C(min) subset gives for C(distribution), C(os_family) and C(architecture)), the installed
    packages, the state of the named systemd units and the SELinux mode, so that later
    tasks skip what is already so instead of asking the host again.
version_added: 0.2.0
options:
  accounts:
    description: Services whose account must be free or the collection's own, each with C(name) and C(root).
    type: list
    elements: dict
    default: []
  units:
    description: systemd units whose state to report (active, enabled).
    type: list
    elements: str
    default: []
  registry:
    description: Directory of the account registry.
    type: path
    default: /var/lib/microsvc/accounts
notes:
  - Why not a builtin - one read-only call replaces C(setup), C(package_facts) and C(service_facts), and only this
    refuses an account the collection did not create.
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
- name: Check the host and gather its facts
  microsvc.deploy.host_preflight:
    accounts: "{{ microsvc_plan.accounts }}"
    units: [nginx, uwsgi-emperor]
"""

RETURN = r"""
ansible_facts:
  description:
    - C(distribution), C(distribution_version), C(distribution_major_version), C(os_family), C(architecture),
      C(system), and C(microsvc_host) with C(packages) (installed package names), C(units) (per unit
      C(active) and C(enabled)), C(selinux) (C(enforcing), C(permissive),
      C(disabled), or C(absent) without getenforce) and C(accounts) (per service C(new), C(ours) or C(legacy)).
  returned: always
  type: dict
"""

import shutil
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.facts.system.distribution import DistributionFactCollector
from ansible.module_utils.facts.system.platform import PlatformFactCollector
from ansible_collections.microsvc.deploy.plugins.module_utils.accounts import classify


def run(argv):
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc


def packages():
    if shutil.which("dpkg-query"):
        proc = run(["dpkg-query", "--show", "--showformat=${db:Status-Status} ${Package}\n"])
        lines = (proc.stdout if proc else "").splitlines()
        return sorted({line.split(" ", 1)[1].split(":")[0] for line in lines if line.startswith("installed ")})
    if shutil.which("rpm"):
        proc = run(["rpm", "--query", "--all", "--queryformat", "%{NAME}\n"])
        return sorted(set((proc.stdout if proc else "").split()))
    return []


def unit_state(name):
    active = run(["systemctl", "is-active", name])
    enabled = run(["systemctl", "is-enabled", name])
    return {"active": bool(active) and active.stdout.strip() == "active",
            "enabled": bool(enabled) and enabled.stdout.strip() == "enabled"}


def selinux_mode():
    """enforcing, permissive or disabled, as getenforce says; absent without getenforce (SELinux is
    not part of the system), as the selinux_mode filter reads a registered getenforce."""
    if not shutil.which("getenforce"):
        return "absent"
    proc = run(["getenforce"])
    mode = proc.stdout.strip().lower() if proc and proc.returncode == 0 else ""
    return mode if mode in ("enforcing", "permissive", "disabled") else "absent"


def main():
    module = AnsibleModule(
        argument_spec=dict(
            accounts=dict(type="list", elements="dict", default=[]),
            units=dict(type="list", elements="str", default=[]),
            registry=dict(type="path", default="/var/lib/microsvc/accounts"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    accounts, refused = {}, []
    for svc in p["accounts"]:
        kind, reason = classify(svc["name"], svc["root"], p["registry"])
        accounts[svc["name"]] = kind
        if kind == "foreign":
            refused.append("service '%s': field 'name': %s; a service runs as an account of its own, so "
                           "choose another name (or remove that account)" % (svc["name"], reason))
    if refused:
        module.fail_json(msg="A service is named like an account on this host; the host was not changed.\n- "
                         + "\n- ".join(refused), accounts=accounts)
    facts = {}
    facts.update(PlatformFactCollector().collect(module=module))
    facts.update(DistributionFactCollector().collect(module=module, collected_facts=facts))
    wanted = ("distribution", "distribution_version", "distribution_release", "distribution_major_version",
              "os_family", "architecture", "system", "machine")
    facts = {k: v for k, v in facts.items() if k in wanted}
    facts["microsvc_host"] = {
        "packages": packages(),
        "units": {name: unit_state(name) for name in p["units"]},
        "selinux": selinux_mode(),
        "accounts": accounts,
    }
    module.exit_json(changed=False, ansible_facts=facts)


if __name__ == "__main__":
    main()
