#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Point a service's ``current`` link at a release, keep its history, prune old releases."""

from __future__ import annotations

DOCUMENTATION = r"""
module: release_switch
short_description: Switch, roll back and prune the releases of one service
description:
  - Releases live in C(<root>/releases/<id>/); C(<root>/current) is a symlink to one of them, swapped
    atomically (a new link renamed over the old one, so a reader never sees it missing).
  - The order in which releases went live is kept in C(<root>/releases/.history).
  - C(state=current) makes I(release) current. C(state=rollback) returns to I(release) or, when
    not given, to the release that was live before the current one.
  - With I(keep), releases beyond the I(keep) most recent ones of the history are removed (never the
    current one), as are virtualenvs in C(<root>/venvs/) that no remaining release links to.
version_added: 0.1.0
options:
  root:
    description: The service's directory.
    type: path
    required: true
  release:
    description: Release id to make current (required with C(state=current)).
    type: str
  state:
    description: C(current) or C(rollback).
    type: str
    choices: [current, rollback]
    default: current
  keep:
    description: Number of releases to keep; 0 keeps all.
    type: int
    default: 0
author:
  - microsvc maintainers
"""

RETURN = r"""
previous:
  description: Release that was current before (null when none).
  returned: always
  type: str
current:
  description: Release that is current now.
  returned: always
  type: str
history:
  description: Release ids in the order they went live, oldest first.
  returned: always
  type: list
pruned_releases:
  description: Release directories removed.
  returned: always
  type: list
pruned_venvs:
  description: Virtualenv directories removed.
  returned: always
  type: list
"""

import json
import os
import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.microsvc.deploy.plugins.module_utils.atomic import write_atomic

MARKER = ".microsvc-release"


def read_history(path):
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return [str(x) for x in data] if isinstance(data, list) else []
    except (FileNotFoundError, ValueError):
        return []


def current_release(link):
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else None


def swap_link(link, target):
    tmp = "%s.microsvc-new" % link
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path", required=True),
            release=dict(type="str"),
            state=dict(type="str", choices=["current", "rollback"], default="current"),
            keep=dict(type="int", default=0),
        ),
        required_if=[("state", "current", ("release",))],
        supports_check_mode=True,
    )
    p = module.params
    root = p["root"]
    releases = os.path.join(root, "releases")
    link = os.path.join(root, "current")
    history_file = os.path.join(releases, ".history")
    history = read_history(history_file)
    previous = current_release(link)

    def complete(rid):
        return bool(rid) and "/" not in rid and os.path.isfile(os.path.join(releases, rid, MARKER))

    target = p["release"]
    if p["state"] == "rollback" and not target:
        earlier = [r for r in history if r != previous]
        if previous in history:
            earlier = [r for r in history[: history.index(previous)] if r != previous]
        earlier = [r for r in earlier if complete(r)]
        if not earlier:
            module.fail_json(msg="no earlier release to roll back to in %s (history: %s)" % (releases, history),
                             previous=previous, history=history)
        target = earlier[-1]
    if not complete(target):
        available = sorted(r for r in os.listdir(releases) if complete(r)) if os.path.isdir(releases) else []
        module.fail_json(msg="release %r is not a complete release in %s (available: %s)"
                         % (target, releases, ", ".join(available) or "none"), previous=previous)

    changed = previous != target
    new_history = [r for r in history if r != target] + [target]
    if p["state"] == "rollback":
        # A rollback returns to an earlier point: the abandoned release goes to the front
        # of the prune order instead of being remembered as the newest.
        new_history = ([previous] if previous and previous != target else []) + [
            r for r in history if r not in (target, previous)
        ] + [target]
    changed = changed or new_history != history

    pruned_releases, pruned_venvs = [], []
    if p["keep"] > 0 and os.path.isdir(releases):
        keep_set = set(new_history[-p["keep"]:]) | {target}
        for entry in sorted(os.listdir(releases)):
            full = os.path.join(releases, entry)
            if entry.startswith(".") or not os.path.isdir(full) or entry in keep_set:
                continue
            pruned_releases.append(entry)
        used = set()
        for entry in keep_set:
            venv_link = os.path.join(releases, entry, ".venv")
            if os.path.islink(venv_link):
                used.add(os.path.basename(os.readlink(venv_link)))
        venvs = os.path.join(root, "venvs")
        if os.path.isdir(venvs):
            for entry in sorted(os.listdir(venvs)):
                if entry not in used and os.path.isdir(os.path.join(venvs, entry)):
                    pruned_venvs.append(entry)
        new_history = [r for r in new_history if r not in pruned_releases]
        changed = changed or bool(pruned_releases or pruned_venvs)

    result = dict(changed=changed, previous=previous, current=target, history=new_history,
                  pruned_releases=pruned_releases, pruned_venvs=pruned_venvs)
    if module._diff and previous != target:
        result["diff"] = dict(before="current -> %s\n" % previous, after="current -> %s\n" % target,
                              before_header=link, after_header=link)
    if module.check_mode or not changed:
        module.exit_json(**result)

    if previous != target:
        swap_link(link, os.path.join("releases", target))
    write_atomic(history_file, json.dumps(new_history))
    for entry in pruned_releases:
        shutil.rmtree(os.path.join(releases, entry), ignore_errors=True)
    for entry in pruned_venvs:
        shutil.rmtree(os.path.join(root, "venvs", entry), ignore_errors=True)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
