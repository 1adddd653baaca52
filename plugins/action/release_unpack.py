# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Copy a release tarball from the controller and unpack it on the host in one module call."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        archive = args.pop("archive", None)
        if not archive:
            raise AnsibleActionFail("archive (the release tarball on the controller) is required")
        if self._play_context.check_mode:
            args["src"] = "/nonexistent"  # the module answers from the marker alone in check mode
            result.update(self._execute_module(module_name="microsvc.deploy.release_unpack", module_args=args,
                                               task_vars=task_vars))
            return result
        tmp_dir = self._make_tmp_path()
        try:
            remote = self._connection._shell.join_path(tmp_dir, "release.tar.gz")
            self._transfer_file(archive, remote)
            self._fixup_perms2((tmp_dir, remote))
            args["src"] = remote
            result.update(self._execute_module(module_name="microsvc.deploy.release_unpack", module_args=args,
                                               task_vars=task_vars))
        finally:
            self._remove_tmp_path(tmp_dir)
        return result
