# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Render the gateway's templates on the controller, then stage/test/install them in one call.

Task arguments are those of the module microsvc.deploy.nginx_config, plus ``templates``:
a list of ``{src, dest}`` entries, where an entry with ``loop`` (a list of dicts) is
rendered once per item with the item available as ``item`` and ``dest`` formatted with
the item's keys (``microsvc/upstreams/{name}.conf``). ``secret: true`` routes the
rendered file to ``secret_files``. ``system_files`` entries may give ``template`` or ``src``, as
managed_files' do.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.microsvc.deploy.plugins.plugin_utils.render import Renderer, file_entries


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        templates = args.pop("templates", []) or []
        files = dict(args.pop("files", {}) or {})
        secret_files = dict(args.pop("secret_files", {}) or {})
        renderer = Renderer(self, task_vars)
        for entry in templates:
            if not isinstance(entry, dict) or "src" not in entry or "dest" not in entry:
                raise AnsibleActionFail("each templates entry needs src and dest, got %r" % (entry,))
            target = secret_files if entry.get("secret") else files
            items = entry.get("loop")
            if items is None:
                target[entry["dest"]] = renderer.render(entry["src"], dest=entry["dest"])
                continue
            for item in items:
                try:
                    dest = entry["dest"].format(**item)
                except (KeyError, IndexError) as exc:
                    raise AnsibleActionFail("cannot format dest %r with item: %s" % (entry["dest"], exc)) from None
                if dest in target:
                    raise AnsibleActionFail("two templates render to the same file %s" % dest)
                target[dest] = renderer.render(entry["src"], extra_vars={"item": item}, dest=dest)
        args["files"] = files
        if args.get("system_files"):
            args["system_files"] = file_entries(self, renderer, args["system_files"])
        if secret_files:
            args["secret_files"] = secret_files
        module_result = self._execute_module(
            module_name="microsvc.deploy.nginx_config", module_args=args, task_vars=task_vars
        )
        result.update(module_result)
        return result
