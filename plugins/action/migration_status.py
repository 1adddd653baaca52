# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""The migrations a deploy would apply (check mode), or a rollback would leave applied.

Task arguments: those of the module microsvc.deploy.migration_status, except that in ``plan``
mode ``services`` are built here from:
  work:      the probe's work list
  services:  plan entries of the same services
  migrate:   names of the services whose migrations run on this host
Only Django services whose migrations run on this host are planned. Releases the host lacks
are copied as one bundle (like deploy_batch), unpacked into a temporary directory there and
removed after.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase
from ansible_collections.microsvc.deploy.plugins.plugin_utils.bundle import execute_with_bundle


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        if args.get("mode") != "plan":
            result.update(self._execute_module(module_name="microsvc.deploy.migration_status", module_args=args,
                                               task_vars=task_vars))
            return result
        plan = {svc["name"]: svc for svc in args.pop("services", None) or []}
        migrate = set(args.pop("migrate", None) or [])
        services, files = [], {}
        for entry in args.pop("work", None) or []:
            svc = plan.get(entry["name"])
            django = (svc or {}).get("django") or {}
            if not django.get("migrate") or entry["name"] not in migrate:
                continue
            item = dict(name=svc["name"], root=svc["root"], group=svc["group"], manage=django["manage"],
                        release=entry["release"], venv=entry["venv"], venv_present=bool(entry.get("venv_present")),
                        archive_member=None)
            # Without its virtualenv the release cannot run (the module says so): copy nothing for it.
            if not entry.get("release_present") and item["venv_present"]:
                item["archive_member"] = "releases/%s.tar.gz" % svc["name"]
                files[item["archive_member"]] = entry["archive"]
            services.append(item)
        if not services:
            result.update(changed=False, services={}, skipped=True, msg="no migrations run on this host")
            return result
        args["services"] = services
        result.update(execute_with_bundle(self, files, "microsvc.deploy.migration_status", args, task_vars,
                                          prefix="microsvc-plan-"))
        return result
