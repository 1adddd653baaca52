# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Download (once) a package's source distribution and its build requirements on the controller.

Where uWSGI is built from PyPI (the RHEL family) and the host cannot reach a package index, the
host builds the pushed source with ``pip --no-index --find-links``: the build requirements
(setuptools, wheel, pure-Python wheels) travel with it, because pip's isolated build would
otherwise fetch them from the index.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.microsvc.deploy.plugins.plugin_utils.sources import cache_root
from ansible_collections.microsvc.deploy.plugins.plugin_utils.wheelhouse import WheelhouseError, pip_download_packed

# A pinned requirement: name==version, nothing else (no URL, no option, no marker).
PINNED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}==[0-9][A-Za-z0-9.+!_-]{0,49}")


def pinned(values, field):
    values = list(values or [])
    for value in values:
        if not isinstance(value, str) or not PINNED.fullmatch(value):
            raise AnsibleActionFail("%s: %r is not a pinned requirement (name==version)" % (field, value))
    return values


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("package", "build_requirements", "cache_dir", "index_url"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        (package,) = pinned([args.get("package")], "package")
        build = pinned(args.get("build_requirements"), "build_requirements")
        index_url = args.get("index_url") or ""
        key = hashlib.sha256("\0".join([package] + build + [index_url]).encode("utf-8")).hexdigest()[:16]
        cache = os.path.join(cache_root(args.get("cache_dir")), "sdist")
        archive = os.path.join(cache, "%s-%s.tar.gz" % (package.replace("==", "-"), key))
        result.update(changed=False, archive=archive)
        if os.path.exists(archive):
            return result

        def commands(_work, dest):
            base = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--dest", dest]
            if index_url:
                base += ["--index-url", index_url]
            steps = [base + ["--no-binary=:all:", "--no-deps", package]]
            if build:
                # Pure-Python wheels: any host Python the pins support can use them.
                steps.append(base + ["--only-binary=:all:"] + build)
            return steps

        try:
            pip_download_packed(cache, archive, "sdist", commands,
                                lambda cmd, out: "pip download of %s failed:\n%s"
                                % (" ".join(cmd[cmd.index("--dest") + 2:]), out))
        except WheelhouseError as exc:
            raise AnsibleActionFail(str(exc)) from None
        result.update(changed=True)
        return result
