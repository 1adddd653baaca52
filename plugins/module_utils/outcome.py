# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""What becomes of a deployed service after its health check: settled when healthy (its workers
and schedules move to the new release, the environment kept for a rollback is forgotten), put back
on what served before when not; or rolled back on demand.

Used by the module deploy_outcome (a call of its own: the health check ran on the gateway, or a
rollback) and by deploy_batch (where the gateway is the deploying host, the checks and this step
are part of the deploy's call). ``vassal_fields`` and ``settle_items`` are also used on the
controller (the filter settle_plan)."""

from __future__ import annotations

import concurrent.futures
import os

from ansible_collections.microsvc.deploy.plugins.module_utils import envfile, fsutil, releases, units, vassal
from ansible_collections.microsvc.deploy.plugins.module_utils.paths import ini_path


def vassal_fields(svc, vassals_dir):
    """What settling or rolling back needs of a plan service."""
    return dict(name=svc["name"], root=svc["root"], group=svc["group"], env_file=svc["env_file"],
                ini_path=ini_path(vassals_dir, svc["name"], svc.get("interface") or "wsgi"),
                stats_socket=svc["stats_socket"], reload_file=svc["reload_file"],
                log_file=svc["log_dir"] + "/web.log" if svc.get("interface") == "asgi" else svc["uwsgi_log"],
                log_dir=svc["log_dir"],
                remove_sockets=[svc["stats_socket"], svc["socket"]])


def settle_items(deployed, health, fields):
    """One entry per service whose new release went live (``deployed``: deploy_batch's results):
    settle it when its check in ``health`` passed, with its workers and schedules made what the
    probe rendered (``units`` of its ``fields``), roll it back when not."""
    out = []
    for name in sorted(n for n, state in (deployed or {}).items() if state.get("ok")):
        state = deployed[name]
        healthy = ((health or {}).get(name) or {}).get("ok", False)
        item = {k: v for k, v in fields[name].items() if k != "units"}
        item.update(outcome="healthy" if healthy else "unhealthy", previous=state.get("previous"),
                    switched=state.get("switched"), env_changed=state.get("env_changed"))
        if healthy and fields[name].get("units") is not None:
            item["units"] = fields[name]["units"]
        out.append(item)
    return out


def settle(svc, timeout, units_dir=units.UNITS_DIR):
    out = dict(ok=True, msg="", step=None, action="none", previous=None, current=None, env_restored=False,
               stopped=False, units=None)
    gid = fsutil.gid_of(svc["group"])
    outcome = svc["outcome"]
    if outcome == "healthy":
        if svc.get("units") is not None:
            # Workers move to the new release only once the web process passed its health check.
            try:
                result, _undo = units.apply(svc["name"], svc["units"],
                                            restart_all=bool(svc.get("switched") or svc.get("env_changed")),
                                            units_dir=units_dir, log_dir=svc["units"].get("log_dir"))
            except units.UnitsError as exc:
                out.update(ok=False, step=exc.step, msg=str(exc)[-3000:])
                return back(svc, out, timeout, units_dir, getattr(exc, "undo", None))
            out["units"] = {k: result[k] for k in ("write", "remove", "stop", "restart", "start")}
            out["action"] = "units" if result["changed"] else "none"
        writes, removes = envfile.plan(svc["env_file"], "forget")[:2]
        envfile.apply(writes, removes, gid)
        if removes:
            out["action"] = "settled"
        return out
    if outcome == "unhealthy":
        return to_previous(svc, out, timeout, units_dir)
    # on-demand rollback
    plan = releases.plan_switch(svc["root"], svc.get("release") or None, rollback=True)
    if plan["changed"]:
        releases.apply_switch(svc["root"], plan)
    result = vassal.apply(svc["name"], svc["ini_path"], None, svc["stats_socket"], svc["reload_file"],
                          code_changed=plan["previous"] != plan["current"], timeout=timeout, log_file=svc.get("log_file"))
    out.update(action=result["action"], previous=plan["previous"], current=plan["current"])
    if plan["previous"] != plan["current"]:
        try:
            out["units"] = {"restart": units.restart_workers(svc["name"], units_dir, log_dir=svc.get("log_dir"))}
        except units.UnitsError as exc:
            out.update(ok=False, step=exc.step, msg=str(exc)[-3000:])
    return out


def to_previous(svc, out, timeout, units_dir, undo=None):
    """The service returns to what served before, web and workers: the previous environment and
    release (the vassal reloaded), the previous units with every worker process that ran restarted
    on that release (``undo``, when the units had changed); a first release is stopped altogether,
    units included (it never goes live)."""
    if svc.get("env_changed"):
        writes, removes = envfile.plan(svc["env_file"], "restore")[:2]
        envfile.apply(writes, removes, fsutil.gid_of(svc["group"]))
        out["env_restored"] = True
    previous = svc.get("previous")
    if not previous:
        units.remove_all(svc["name"], units_dir)
        vassal.stop(svc["ini_path"], svc["stats_socket"], svc.get("remove_sockets") or [], timeout, svc["name"])
        out.update(action="stopped", stopped=True)
        return out
    if svc.get("switched"):
        plan = releases.plan_switch(svc["root"], previous, rollback=True)
        releases.apply_switch(svc["root"], plan)
        out.update(previous=plan["previous"], current=plan["current"])
    result = vassal.apply(svc["name"], svc["ini_path"], None, svc["stats_socket"], svc["reload_file"],
                          code_changed=bool(svc.get("switched")), config_changed=out["env_restored"],
                          timeout=timeout, log_file=svc.get("log_file"))
    if undo is not None:
        out["units"] = {"restart": units.restore(svc["name"], undo, units_dir)}
    out["action"] = "rolled back (%s)" % result["action"]
    return out


def back(svc, out, timeout, units_dir, undo):
    """A healthy deploy whose workers failed: back to what served before (to_previous); a failure
    of that is reported with the workers' failure."""
    try:
        return to_previous(svc, out, timeout, units_dir, undo)
    except Exception as exc:  # noqa: BLE001 - reported with the failure; the other services go on
        out["recovery_error"] = str(exc)[-1500:]
    return out


def settle_all(services, timeout, units_dir=units.UNITS_DIR):
    """Each service of ``services`` (settle_items' entries, or rollbacks) concurrently, each alone:
    name -> its result."""
    results = {}
    if not services:
        return results
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(len(services), os.cpu_count() or 2))) as pool:
        futures = {pool.submit(settle, svc, timeout, units_dir): svc["name"] for svc in services}
        for future in concurrent.futures.as_completed(futures):
            exc = future.exception()
            if exc is None:
                results[futures[future]] = future.result()
            else:
                results[futures[future]] = dict(ok=False, msg=str(exc)[-3000:], action="failed")
    return results
