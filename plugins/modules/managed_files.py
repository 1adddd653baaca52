#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Ensure several directories and files in one call, and say which ones changed."""

from __future__ import annotations

DOCUMENTATION = r"""
module: managed_files
short_description: Ensure several directories and files (content, owner, group, mode) in one call
description:
  - Creates or fixes the directories, then writes each file whose content, owner, group or mode differs,
    atomically (a temporary file renamed over the old one). Reports which paths changed, so that later
    tasks can react to one file only (reload for a settings file, daemon-reload for a unit).
  - The action plugin of the same name renders C(template) entries from the role's C(templates/) and reads
    C(src) entries from its C(files/) on the controller, so the whole set costs one remote call.
  - Supports check mode and diff.
version_added: 0.1.0
options:
  directories:
    description: Directories, in creation order, each with C(path), C(owner), C(group), C(mode).
    type: list
    elements: dict
    default: []
  files:
    description: Files, each with C(dest), C(content), C(owner), C(group), C(mode).
    type: list
    elements: dict
    default: []
notes:
  - Why not a builtin - C(ansible.builtin.template), C(copy) and C(file) cost one call per file or directory; this
    writes them all, atomically, in one call.
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
- name: Write the emperor's settings and its unit, and their directory, in one call
  microsvc.deploy.managed_files:
    directories:
      - {path: /etc/uwsgi, owner: root, group: root, mode: "0755"}
    files:
      - {dest: /etc/uwsgi/emperor.ini, template: emperor.ini.j2}
      - {dest: /usr/local/sbin/microsvc-run, src: microsvc-run, mode: "0750"}
  register: written
"""

RETURN = r"""
changed_paths:
  description: Directories and files created or changed.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.microsvc.deploy.plugins.module_utils.managed import ensure


def main():
    module = AnsibleModule(
        argument_spec=dict(
            directories=dict(type="list", elements="dict", default=[]),
            files=dict(type="list", elements="dict", default=[]),
        ),
        supports_check_mode=True,
    )
    changed, diffs = ensure(module, module.params["directories"], module.params["files"])
    result = dict(changed=bool(changed), changed_paths=changed)
    if module._diff and diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
