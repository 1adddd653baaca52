# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Action plugin: check the gateway's edge-feature settings on the controller (no host involved)."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.microsvc.deploy.plugins.plugin_utils.gateway_settings import check


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("settings",))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        settings = self._task.args.get("settings") or {}
        if not isinstance(settings, dict):
            raise AnsibleActionFail("settings: expected a mapping of variable names to values")
        errors = check(dict(settings))
        if errors:
            raise AnsibleActionFail("The gateway settings are invalid; no host was changed.\n- " + "\n- ".join(errors))
        result["changed"] = False
        result["msg"] = "%d settings checked" % len(settings)
        return result
