# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Action plugin: validate the service list and publish the plan (controller only)."""

from __future__ import annotations

import os

import yaml
from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.microsvc.deploy.plugins.plugin_utils.service_plan import (
    PlanError,
    Planner,
    load_service_spec,
)

SPEC_PATH = os.path.join(
    os.path.dirname(__file__), os.pardir, os.pardir, "roles", "service_plan", "meta", "argument_specs.yml"
)

_SPEC_CACHE = {}


def service_spec():
    if "spec" not in _SPEC_CACHE:
        with open(SPEC_PATH, encoding="utf-8") as handle:
            _SPEC_CACHE["spec"] = load_service_spec(yaml.safe_load(handle))
    return _SPEC_CACHE["spec"]


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("services", "defaults", "selected", "root", "route_prefix", "check_sources", "base_dir"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        base_dir = args.get("base_dir") or self._loader.get_basedir()
        planner = Planner(
            service_spec(),
            root=args.get("root") or "/opt/www",
            route_prefix=args.get("route_prefix") or "/api/",
            base_dir=base_dir,
        )
        try:
            plan = planner.plan(
                args.get("services"),
                defaults=args.get("defaults"),
                selected=args.get("selected"),
                check_sources=args.get("check_sources", True),
            )
        except PlanError as exc:
            raise AnsibleActionFail(
                "The service list is invalid; no host was changed.\n- " + "\n- ".join(exc.errors)
            ) from None
        result["changed"] = False
        result["ansible_facts"] = {"microsvc_plan": plan}
        result["msg"] = "%d services (%d selected)" % (len(plan["names"]), len(plan["selected"]))
        return result
