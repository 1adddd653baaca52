# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Render templates and read role files on the controller, then ensure them in one call.

Task arguments are those of the module microsvc.deploy.managed_files; a ``files`` entry may give
``template`` (a name in the role's templates/, rendered with the entry's own ``vars`` added to
the task's) or ``src`` (a name in its files/) instead of ``content``.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase
from ansible_collections.microsvc.deploy.plugins.plugin_utils.render import Renderer, file_entries


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        args["files"] = file_entries(self, Renderer(self, task_vars), args.get("files"))
        result.update(self._execute_module(module_name="microsvc.deploy.managed_files", module_args=args,
                                           task_vars=task_vars))
        return result
