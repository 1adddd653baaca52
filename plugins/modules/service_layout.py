#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Create a service's system user, group and directory tree in one call."""

from __future__ import annotations

DOCUMENTATION = r"""
module: service_layout
short_description: Create a service's system group, user and directories in one call
description:
  - Ensures a system group and a system user (no login shell, no home directory created) and a list of
    directories with owner, group and mode. Parent directories are never created with the service's
    ownership; each directory of the list is created with exactly what the list says.
  - Uses, changes or creates only an account that the collection created for this service (recorded in
    I(registry)); a user or group of that name that someone else created fails the call before anything
    changes (see the module C(microsvc.deploy.service_accounts), which the plan runs first).
  - Writes I(marker) (the service's name) so that a purge removes only a directory the collection made.
  - One call instead of one per directory; supports check mode and diff.
version_added: 0.1.0
options:
  user:
    description: Name of the system user (and of its primary group).
    type: str
    required: true
  group:
    description: Name of the system group; defaults to I(user).
    type: str
  home:
    description: Home directory recorded for the user (not created).
    type: path
    required: true
  shell:
    description: Login shell of the user.
    type: path
    default: /usr/sbin/nologin
  comment:
    description: GECOS field.
    type: str
    default: ""
  directories:
    description: Directories, in creation order, each with C(path), C(owner) (a user name) and C(mode).
    type: list
    elements: dict
    default: []
  marker:
    description: File (root-owned, 0644) that records the service's name; written when missing.
    type: path
  registry:
    description: Directory of the account registry.
    type: path
    default: /var/lib/microsvc/accounts
author:
  - microsvc maintainers
"""

RETURN = r"""
created_user:
  description: Whether the user (or group) was created.
  returned: always
  type: bool
changed_paths:
  description: Directories created or changed.
  returned: always
  type: list
"""

import grp
import os
import pwd

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.microsvc.deploy.plugins.module_utils.accounts import classify, register


def lookup_user(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def lookup_group(name):
    try:
        return grp.getgrnam(name)
    except KeyError:
        return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            user=dict(type="str", required=True),
            group=dict(type="str"),
            home=dict(type="path", required=True),
            shell=dict(type="path", default="/usr/sbin/nologin"),
            comment=dict(type="str", default=""),
            directories=dict(type="list", elements="dict", default=[]),
            marker=dict(type="path"),
            registry=dict(type="path", default="/var/lib/microsvc/accounts"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    group = p["group"] or p["user"]
    result = dict(changed=False, created_user=False, changed_paths=[])
    diff_before, diff_after = [], []

    kind, reason = classify(p["user"], p["home"], p["registry"])
    if kind == "foreign":
        module.fail_json(msg="service '%s': field 'name': %s; the host was not changed" % (p["user"], reason))
    if kind == "legacy" and not module.check_mode:
        register(p["user"], p["registry"], uid=lookup_user(p["user"]).pw_uid, gid=lookup_group(group).gr_gid)
    if lookup_group(group) is None:
        result.update(changed=True, created_user=True)
        diff_after.append("group %s" % group)
        if not module.check_mode:
            rc, out, err = module.run_command(["groupadd", "--system", group])
            if rc != 0:
                module.fail_json(msg="groupadd %s failed: %s" % (group, err or out))
            register(p["user"], p["registry"], gid=lookup_group(group).gr_gid)
    user = lookup_user(p["user"])
    if user is None:
        result.update(changed=True, created_user=True)
        diff_after.append("user %s (group %s, home %s, shell %s)" % (p["user"], group, p["home"], p["shell"]))
        if not module.check_mode:
            rc, out, err = module.run_command([
                "useradd", "--system", "--gid", group, "--home-dir", p["home"], "--no-create-home",
                "--shell", p["shell"], "--comment", p["comment"], p["user"]])
            if rc != 0:
                module.fail_json(msg="useradd %s failed: %s" % (p["user"], err or out))
            register(p["user"], p["registry"], uid=lookup_user(p["user"]).pw_uid)
    elif user.pw_shell != p["shell"]:
        result["changed"] = True
        diff_before.append("user %s shell %s" % (p["user"], user.pw_shell))
        diff_after.append("user %s shell %s" % (p["user"], p["shell"]))
        if not module.check_mode:
            module.run_command(["usermod", "--shell", p["shell"], p["user"]], check_rc=True)

    for entry in p["directories"]:
        path, mode = entry["path"], int(str(entry["mode"]), 8)
        owner_name = entry.get("owner", "root")
        group_name = entry.get("group", group)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None and not os.path.isdir(path):
            module.fail_json(msg="%s exists and is not a directory" % path)
        if module.check_mode:
            uid = lookup_user(owner_name).pw_uid if lookup_user(owner_name) else None
            gid = lookup_group(group_name).gr_gid if lookup_group(group_name) else None
        else:
            uid = pwd.getpwnam(owner_name).pw_uid
            gid = grp.getgrnam(group_name).gr_gid
        wanted = (uid, gid, mode)
        current = (st.st_uid, st.st_gid, st.st_mode & 0o7777) if st else None
        if current == wanted:
            continue
        result["changed"] = True
        result["changed_paths"].append(path)
        diff_before.append("%s %s" % (path, "absent" if st is None else "%s:%s %o" % (
            st.st_uid, st.st_gid, st.st_mode & 0o7777)))
        diff_after.append("%s %s:%s %o" % (path, owner_name, group_name, mode))
        if module.check_mode:
            continue
        if st is None:
            os.mkdir(path, mode)
        os.chown(path, uid, gid)
        os.chmod(path, mode)

    marker = p["marker"]
    if marker and not os.path.isfile(marker):
        result["changed"] = True
        diff_after.append("%s (marker of service %s)" % (marker, p["user"]))
        if not module.check_mode:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w") as handle:
                handle.write(p["user"] + "\n")

    if module._diff and result["changed"]:
        result["diff"] = dict(before="\n".join(diff_before) + "\n", after="\n".join(diff_after) + "\n")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
