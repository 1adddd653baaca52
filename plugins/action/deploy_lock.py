# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Take or release the deploy locks of services on a host, as this run.

Task arguments: those of the module microsvc.deploy.deploy_lock (services, state, lease, dir),
plus ``timeout`` (seconds to wait for a lock held by another run; 0 fails at once) and
``purpose`` (deploy, rollback, remove: recorded with the holder). Who the run is, the wait and
the breaking of a gone run's lock: plugins/plugin_utils/deploy_lock.py.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase
from ansible_collections.microsvc.deploy.plugins.plugin_utils.deploy_lock import call_module, lock_args, take, this_run


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("services", "state", "lease", "dir", "timeout", "purpose"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        services, lock_dir, lease, timeout, purpose = lock_args(args)
        me = this_run(purpose)
        if args.get("state", "acquired") == "released":
            out = call_module(self, task_vars, services=services, state="released", holder=me, dir=lock_dir, lease=lease)
            result.update(changed=False, released=out["released"], lock=out["lock"],
                          msg="released: %s" % (", ".join(out["released"]) or "nothing"))
            return result
        result.update(take(self, task_vars, me, services, lock_dir, lease, timeout))
        return result
