#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Purge services: only the directories and accounts the collection created for them; and
create the accounts of present services ahead of their deploy (the service firewall names them)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: service_accounts
short_description: Purge services (only what the collection created), or create the accounts of present ones
description:
  - For each service of I(purge), removes its directory (only when it carries the collection's marker),
    then its user and group (only when the collection created them for that service, as recorded in
    C(/var/lib/microsvc/accounts/), or, for accounts of earlier versions, recognised by what those versions
    wrote), and forgets them. Anything else stays, with a warning.
  - Refusing a service named like someone else's account, before a host changes, is C(microsvc.deploy.host_preflight)'s.
  - For each service of I(present), makes sure its system user and group exist (created and recorded as the
    collection's when missing, exactly as a deploy does; refused when someone else's account has the name), and
    returns their uids (the service firewall's rules name them before the service's first deploy).
  - One call for all services of a host; supports check mode.
version_added: 0.2.0
options:
  present:
    description: Services whose account must exist, each with C(name) and C(root) (their directory, also their home).
    type: list
    elements: dict
    default: []
  purge:
    description: Services to purge, each with C(name) and C(root) (their directory, also their home).
    type: list
    elements: dict
    default: []
  registry:
    description: Directory of the account registry.
    type: path
    default: /var/lib/microsvc/accounts
notes:
  - Why not a builtin - C(ansible.builtin.user) takes one account per call and cannot tell the collection's accounts
    from others; this creates or purges them for every service in one call, touching only its own (safety).
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
- name: Create the accounts of the services present here
  microsvc.deploy.service_accounts:
    present:
      - {name: billing, root: /opt/www/billing}

- name: Purge a service that is gone
  microsvc.deploy.service_accounts:
    purge:
      - {name: billing, root: /opt/www/billing}
"""

RETURN = r"""
created:
  description: The accounts created (or that check mode would create), per service.
  returned: always
  type: dict
uids:
  description: The uid of each account of I(present) (null for an account check mode would create).
  returned: always
  type: dict
purged:
  description: What was removed, per service.
  returned: always
  type: dict
"""

import os
import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.microsvc.deploy.plugins.module_utils import fsutil, layout
from ansible_collections.microsvc.deploy.plugins.module_utils.accounts import classify, forget, lookup
from ansible_collections.microsvc.deploy.plugins.module_utils.paths import SERVICE_MARKER


def ours_directory(root, name):
    """A service directory the collection made: its marker names the service (or, from versions
    before the marker, it has the collection's layout)."""
    if os.path.islink(root) or not os.path.isdir(root):
        return False
    try:
        with open(os.path.join(root, SERVICE_MARKER), encoding="utf-8") as handle:
            return handle.read().strip() == name
    except OSError:
        return os.path.isdir(os.path.join(root, "releases")) and os.path.isdir(os.path.join(root, "shared"))


def purge_one(module, svc, registry):
    name, root = svc["name"], svc["root"]
    done = []
    if os.path.lexists(root):
        if ours_directory(root, name):
            done.append("directory %s" % root)
            if not module.check_mode:
                shutil.rmtree(root)
        else:
            module.warn("service '%s': %s is not a directory the collection made for it; left in place"
                        % (name, root))
    kind = classify(name, root, registry)[0]
    if kind == "foreign":
        module.warn("service '%s': the account %r was not created by the collection; left in place" % (name, name))
    elif kind in ("ours", "legacy"):
        for tool, index in (("userdel", 0), ("groupdel", 1)):
            if lookup(name)[index] is None:
                continue  # never there, or userdel took the user's own group with it
            done.append("%s %s" % ("user" if index == 0 else "group", name))
            if module.check_mode:
                continue
            rc, out, err = module.run_command([tool, name])
            if rc != 0 and lookup(name)[index] is not None:
                module.fail_json(msg="service '%s': %s %s failed: %s" % (name, tool, name, err or out))
        if not module.check_mode:
            forget(name, registry)
    return done


def main():
    module = AnsibleModule(
        argument_spec=dict(
            purge=dict(type="list", elements="dict", default=[]),
            present=dict(type="list", elements="dict", default=[]),
            registry=dict(type="path", default="/var/lib/microsvc/accounts"),
        ),
        supports_check_mode=True,
    )
    purged, created, uids = {}, {}, {}
    for svc in module.params["present"]:
        name = svc["name"]
        try:
            changed, diff = layout.ensure_account(name, svc["root"], name, comment="microsvc service %s" % name,
                                                  registry=module.params["registry"], check_mode=module.check_mode)
        except layout.LayoutError as exc:
            module.fail_json(msg=str(exc))
        if changed:
            created[name] = diff
        entry = fsutil.user(name)
        uids[name] = entry.pw_uid if entry is not None else None
    for svc in module.params["purge"]:
        done = purge_one(module, svc, module.params["registry"])
        if done:
            purged[svc["name"]] = done
    module.exit_json(changed=bool(purged or created), purged=purged, created=created, uids=uids)


if __name__ == "__main__":
    main()
