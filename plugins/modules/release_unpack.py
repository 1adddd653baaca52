#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Unpack a release tarball into releases/<id>/ atomically, linked to its virtualenv."""

from __future__ import annotations

DOCUMENTATION = r"""
module: release_unpack
short_description: Unpack one release of a service, all or nothing
description:
  - Extracts the release tarball into a hidden directory next to C(releases/<id>/), links C(.venv) to
    C(../../venvs/<venv>), writes the C(.microsvc-release) marker and only then renames the directory to
    C(releases/<id>/). A release directory therefore always is complete; one left by an earlier
    interrupted run without its marker is replaced.
  - Members that would land outside the release (absolute paths, C(..), links pointing out) and device
    files are refused.
  - The action plugin of the same name copies the tarball from the controller first; the module itself
    works on a tarball already on the host.
version_added: 0.1.0
options:
  src:
    description: Path of the tarball on the host (the action plugin sets it from I(archive)).
    type: path
    required: true
  releases_dir:
    description: The service's C(releases/) directory.
    type: path
    required: true
  release:
    description: Release id (the directory name).
    type: str
    required: true
  group:
    description: Group of the release directory (mode 0750, owner root).
    type: str
    required: true
  venv:
    description: Virtualenv key that C(.venv) points to (C(../../venvs/<venv>)).
    type: str
    required: true
  marker:
    description: Facts about the release, written as JSON into C(.microsvc-release).
    type: dict
    default: {}
author:
  - microsvc maintainers
"""

RETURN = r"""
path:
  description: The release directory.
  returned: always
  type: str
"""

import grp
import json
import os
import shutil
import tarfile
import tempfile

from ansible.module_utils.basic import AnsibleModule

MARKER = ".microsvc-release"


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path", required=True),
            releases_dir=dict(type="path", required=True),
            release=dict(type="str", required=True),
            group=dict(type="str", required=True),
            venv=dict(type="str", required=True),
            marker=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if "/" in p["release"] or p["release"].startswith(".") or "/" in p["venv"]:
        module.fail_json(msg="invalid release id or virtualenv key")
    final = os.path.join(p["releases_dir"], p["release"])
    if os.path.isfile(os.path.join(final, MARKER)):
        module.exit_json(changed=False, path=final)
    if module.check_mode:
        module.exit_json(changed=True, path=final)

    gid = grp.getgrnam(p["group"]).gr_gid
    partial = tempfile.mkdtemp(prefix=".%s.partial-" % p["release"], dir=p["releases_dir"])
    try:
        root = os.path.realpath(partial)
        with tarfile.open(p["src"]) as tar:
            for member in tar.getmembers():
                target = os.path.realpath(os.path.join(root, member.name))
                if not (target == root or target.startswith(root + os.sep)):
                    module.fail_json(msg="release member %r escapes the release directory" % member.name)
                if member.isdev():
                    module.fail_json(msg="release member %r is a device file" % member.name)
            tar.extractall(root, filter="tar") if hasattr(tarfile, "data_filter") else tar.extractall(root)
        os.symlink(os.path.join("..", "..", "venvs", p["venv"]), os.path.join(root, ".venv"))
        with open(os.path.join(root, MARKER), "w", encoding="utf-8") as handle:
            json.dump(dict(p["marker"], release=p["release"], venv=p["venv"]), handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.chmod(os.path.join(root, MARKER), 0o644)
        os.chown(root, 0, gid)
        os.chmod(root, 0o750)
        if os.path.lexists(final):
            shutil.rmtree(final)
        os.rename(root, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    module.exit_json(changed=True, path=final)


if __name__ == "__main__":
    main()
