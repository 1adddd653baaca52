# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Ship many controller files to a host as one tar bundle, for one module call.

A file per service (release tarballs, wheelhouses) would cost one transfer each; the action
plugins that need them (``deploy_batch``, ``migration_status``) pack them into one tar. A tar of at
most INLINE_LIMIT bytes (new code, cached virtualenvs) goes inside the module's arguments
(``bundle_data``, base64; the module writes it to its private temporary directory, see
module_utils/bundle.py). A larger one (wheelhouses) is copied into a private temporary directory of
the host, its path passed as the module's ``bundle`` option, and both copies are removed
afterwards, also when the module fails.
"""

from __future__ import annotations

import base64
import os
import tarfile
import tempfile

# Sent inside the module's arguments up to this size (4 MiB; a third more as base64).
INLINE_LIMIT = 4 * 1024 * 1024


def execute_with_bundle(action, files, module_name, module_args, task_vars, prefix="microsvc-bundle-"):
    """Run ``module_name`` from ``action`` (an ActionBase) with ``files`` ({member: local path})
    shipped as the bundle; no bundle when ``files`` is empty. Returns the module's result."""
    bundle_local = tmp_dir = None
    try:
        if files:
            fd, bundle_local = tempfile.mkstemp(prefix=prefix, suffix=".tar")
            os.close(fd)
            with tarfile.open(bundle_local, "w") as tar:
                for member, path in sorted(files.items()):
                    tar.add(path, arcname=member)
            if os.path.getsize(bundle_local) <= INLINE_LIMIT:
                with open(bundle_local, "rb") as handle:
                    module_args = dict(module_args, bundle_data=base64.b64encode(handle.read()).decode("ascii"))
                return action._execute_module(module_name=module_name, module_args=module_args, task_vars=task_vars)
            tmp_dir = action._make_tmp_path()
            remote = action._connection._shell.join_path(tmp_dir, "bundle.tar")
            action._transfer_file(bundle_local, remote)
            action._fixup_perms2((tmp_dir, remote))
            module_args = dict(module_args, bundle=remote)
        return action._execute_module(module_name=module_name, module_args=module_args, task_vars=task_vars)
    finally:
        if bundle_local:
            os.unlink(bundle_local)
        if tmp_dir:
            action._remove_tmp_path(tmp_dir)
