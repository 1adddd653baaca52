# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Action plugin: validate the service list and publish the plan (controller only)."""

from __future__ import annotations

import os

import yaml
from ansible.errors import AnsibleActionFail
from ansible.parsing.vault import VaultHelper, is_encrypted_file
from ansible.plugins.action import ActionBase
from ansible_collections.microsvc.deploy.plugins.plugin_utils.service_plan import (
    PlanError,
    Planner,
    load_service_spec,
)
from ansible_collections.microsvc.deploy.plugins.plugin_utils.trusted_store import TemplateIndex

SPEC_PATH = os.path.join(
    os.path.dirname(__file__), os.pardir, os.pardir, "roles", "service_plan", "meta", "argument_specs.yml"
)

_SPEC_CACHE = {}

try:  # ansible-core >= 2.19 marks values decrypted from vault, and where every value came from
    from ansible._internal._datatag._tags import Origin, TrustedAsTemplate
except ImportError:  # pragma: no cover - other ansible-core versions: inline vault only
    Origin = TrustedAsTemplate = None


def from_vault(value, _encrypted_files={}):  # noqa: B006 - a cache on purpose
    """Whether an inventory value came from ansible-vault: an inline !vault value (or a template
    that returned one unchanged), or any value of a vault-encrypted vars file."""
    if VaultHelper.get_ciphertext(value, with_tags=False):
        return True
    origin = Origin.get_tag(value) if Origin is not None else None
    path = getattr(origin, "path", None)
    if not path:
        return False
    if path not in _encrypted_files:
        try:
            with open(path, "rb") as handle:
                _encrypted_files[path] = is_encrypted_file(handle)
        except OSError:
            _encrypted_files[path] = False
    return _encrypted_files[path]


def trusted_store(task_vars):
    """The predicate microsvc_require_vault applies: a value from ansible-vault, or one that came
    unchanged from an amazon.aws SSM Parameter Store / Secrets Manager lookup written as a whole
    value in the inventory (see plugin_utils/trusted_store.py)."""
    if Origin is None:  # pragma: no cover - no origins to recognise lookups by
        return from_vault
    index = TemplateIndex(task_vars or {}, Origin.get_tag, TrustedAsTemplate.is_tagged_on)
    return lambda value: from_vault(value) or index.from_lookup(value)


def service_spec():
    if "spec" not in _SPEC_CACHE:
        with open(SPEC_PATH, encoding="utf-8") as handle:
            _SPEC_CACHE["spec"] = load_service_spec(yaml.safe_load(handle))
    return _SPEC_CACHE["spec"]


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("services", "defaults", "selected", "root", "route_prefix", "check_sources", "base_dir",
                             "require_vault", "secret_names"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        base_dir = args.get("base_dir") or self._loader.get_basedir()
        planner = Planner(
            service_spec(),
            root=args.get("root") or "/opt/www",
            route_prefix=args.get("route_prefix") or "/api/",
            base_dir=base_dir,
            secret_names=args.get("secret_names") or (),
            is_vaulted=trusted_store(task_vars) if args.get("require_vault") else None,
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
        # The plan holds every service's environment, secrets included (from vault or AWS): a
        # verbose run must not print it. Refusals (above) name fields, never values.
        if any(svc.get("env") for svc in plan["services"]):
            result["_ansible_no_log"] = True
        result["msg"] = "%d services (%d selected)" % (len(plan["names"]), len(plan["selected"]))
        return result
