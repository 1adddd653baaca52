#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Check, before a host changes, that each service's account is the collection's own; purge
only what the collection created."""

from __future__ import annotations

DOCUMENTATION = r"""
module: service_accounts
short_description: Refuse services named like accounts the collection did not create; purge only its own
description:
  - For each service of I(check), fails (listing every service at once, naming the field C(name)) when a
    user or a group of the service's name exists on the host and was not created by this collection for
    that service (root, shadow, www-data, the image's login user, a package's service account...). The
    collection records every account it creates in C(/var/lib/microsvc/accounts/); accounts created by
    earlier versions are recognised by what those versions wrote. Changes nothing.
  - For each service of I(purge), removes its directory (only when it carries the collection's marker),
    then its user and group (only when the collection created them), and forgets them.
  - One call for all services of a host; supports check mode.
version_added: 0.2.0
options:
  check:
    description:
      - Services whose account must be free or the collection's own, each with C(name) and C(root) (the
        service's directory, which is also the home of its user).
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
author:
  - microsvc maintainers
"""

EXAMPLES = r"""
- name: Refuse services named like someone else's account
  microsvc.deploy.service_accounts:
    check:
      - {name: billing, root: /opt/www/billing}
"""

RETURN = r"""
accounts:
  description: Per service name, C(new), C(ours), C(legacy) or C(foreign).
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
from ansible_collections.microsvc.deploy.plugins.module_utils.accounts import classify, forget, lookup

SERVICE_MARKER = ".microsvc-service"


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
    kind, _ = classify(name, root, registry)
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
            check=dict(type="list", elements="dict", default=[]),
            purge=dict(type="list", elements="dict", default=[]),
            registry=dict(type="path", default="/var/lib/microsvc/accounts"),
        ),
        supports_check_mode=True,
    )
    registry = module.params["registry"]
    accounts, refused = {}, []
    for svc in module.params["check"]:
        kind, reason = classify(svc["name"], svc["root"], registry)
        accounts[svc["name"]] = kind
        if kind == "foreign":
            refused.append("service '%s': field 'name': %s; a service runs as an account of its own, so "
                           "choose another name (or remove that account)" % (svc["name"], reason))
    if refused:
        module.fail_json(msg="A service is named like an account on this host; the host was not changed.\n- "
                         + "\n- ".join(refused), accounts=accounts)
    purged = {}
    for svc in module.params["purge"]:
        done = purge_one(module, svc, registry)
        if done:
            purged[svc["name"]] = done
    module.exit_json(changed=bool(purged), accounts=accounts, purged=purged)


if __name__ == "__main__":
    main()
