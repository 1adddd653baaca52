#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Write a service's environment file so that a failed deploy can put the old one back, and
so that variables dropped from the inventory leave the running vassal too."""

from __future__ import annotations

DOCUMENTATION = r"""
module: vassal_env
short_description: Write, restore or settle the environment file of one service
description:
  - The environment file holds one C(NAME=value) line per variable; the vassal reads it at start
    (uWSGI C(for-readline) + C(env)). It may hold secrets, so it is written atomically as
    C(0640 root:<group>) and its content is never logged or diffed.
  - A uWSGI reload re-executes the master with the environment it already has, so a variable
    removed from the file would stay set. The vassal ini therefore first unsets every name listed
    in C(<path>.unset); this module keeps there the names the service had before and no longer has.
  - C(state=present) writes I(content). When the file changes, its previous content is kept in
    C(<path>.previous) (same owner and mode) until C(state=settled) removes it or
    C(state=restored) puts it back (a deploy that failed).
  - Supports check mode.
version_added: 0.1.0
options:
  path:
    description: The environment file.
    type: path
    required: true
  content:
    description: The file's content (C(state=present)).
    type: str
  group:
    description: Group that may read the files (the service's group).
    type: str
    required: true
  state:
    description:
      - C(present) writes I(content), keeping the previous content.
      - C(restored) puts the previous content back, if any was kept.
      - C(settled) forgets the previous content (the deploy succeeded).
    type: str
    choices: [present, restored, settled]
    default: present
author:
  - microsvc maintainers
"""

EXAMPLES = r"""
- name: Write the environment file of service2
  microsvc.deploy.vassal_env:
    path: /opt/www/service2/env
    group: service2
    content: "GREETING=hello\n"
  no_log: true
"""

RETURN = r"""
previous:
  description: Whether a previous content is kept in C(<path>.previous) after this call.
  returned: always
  type: bool
unset:
  description: Names listed in C(<path>.unset) (never values).
  returned: always
  type: list
"""

import grp
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.microsvc.deploy.plugins.module_utils.atomic import write_atomic


def read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def names(text):
    """Variable names of an environment file (or of an .unset file: one name per line)."""
    return {line.split("=", 1)[0].strip() for line in (text or "").splitlines() if line.strip()}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            content=dict(type="str", no_log=True),
            group=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "restored", "settled"], default="present"),
        ),
        required_if=[("state", "present", ("content",))],
        supports_check_mode=True,
    )
    p = module.params
    path, previous_path, unset_path = p["path"], p["path"] + ".previous", p["path"] + ".unset"
    try:
        gid = grp.getgrnam(p["group"]).gr_gid
    except KeyError:
        module.fail_json(msg="group %s does not exist" % p["group"])

    current = read(path)
    kept = read(previous_path)
    unset_text = read(unset_path)
    listed = names(unset_text)
    writes = []  # (path, text) in order; the environment file itself last

    if p["state"] == "present":
        if current != p["content"]:
            if current is not None:
                writes.append((previous_path, current))
                kept = current
            listed = (listed | names(current)) - names(p["content"])
            writes.insert(0, (unset_path, "".join(n + "\n" for n in sorted(listed))))
            writes.append((path, p["content"]))
        elif unset_text is None:
            writes.append((unset_path, ""))
    elif p["state"] == "restored" and kept is not None:
        listed = (listed | names(current)) - names(kept)
        writes.append((unset_path, "".join(n + "\n" for n in sorted(listed))))
        writes.append((path, kept))
    removes = [previous_path] if kept is not None and p["state"] in ("restored", "settled") else []

    changed = bool(writes or removes)
    if not module.check_mode:
        try:
            for target, text in writes:
                write_atomic(target, text, 0o640, uid=0, gid=gid, durable=True)
            for target in removes:
                os.unlink(target)
        except OSError as exc:
            module.fail_json(msg="cannot write the environment files of %s: %s" % (path, exc))
    module.exit_json(changed=changed, previous=kept is not None and not removes, unset=sorted(listed))


if __name__ == "__main__":
    main()
