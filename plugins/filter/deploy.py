# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""The batch deploy's bookkeeping between its calls, as tested code: which health checks to run,
which services to settle or roll back, and what became of each (the messages the play ends with).

Inputs are the results of the batch's calls: deploy_batch (prepare and switch), health_check
(through the gateway), deploy_outcome (roll back the unhealthy ones) and the health check of
what serves again."""

from __future__ import annotations

from ansible_collections.microsvc.deploy.plugins.module_utils import outcome


def _verdict(name, rehealth):
    check = (rehealth or {}).get(name)
    if check is None:
        return ""
    if check.get("ok"):
        return ", which is healthy again"
    return ", which is NOT healthy either (HTTP %s)" % (check.get("status") or check.get("error") or "none")


def _seen(check):
    if check.get("status") is not None:
        body = (check.get("body") or "").strip().replace("\n", " ")
        return "HTTP %s%s" % (check["status"], ": " + body[:200] if body else "")
    return check.get("error") or "no answer"


def _migrations_note(state):
    """Migrations that this deploy applied stay applied when its service goes back: name them."""
    applied = ((state.get("migrations") or {}).get("applied")) or []
    if not applied:
        return ""
    return " Migrations this deploy applied stay applied in the database (it is not migrated back): %s." % (
        ", ".join(applied))


def deploy_report(deployed, health=None, settled=None, rehealth=None):
    """One message per failed service, naming it, the step and the reason, and what serves now."""
    messages = []
    for name in sorted(deployed or {}):
        state = deployed[name]
        release = state.get("release")
        if not state.get("ok"):
            text = "service '%s': deploy of release %s failed at %s: %s." % (name, release, state.get("step"),
                                                                             (state.get("msg") or "").rstrip("."))
            previous = state.get("previous")
            if state.get("rolled_back"):
                text += " Rolled back to release %s%s%s." % (
                    previous, " and its environment" if state.get("env_restored") else "", _verdict(name, rehealth))
            elif state.get("step") in ("switch", "reload") and previous:
                text += " Release %s serves again%s%s." % (
                    previous, " with the environment of the previous deploy" if state.get("env_restored") else "",
                    _verdict(name, rehealth))
            elif previous or (state.get("step") not in ("switch", "reload") and not state.get("first_deploy")):
                text += " Release %s was never switched away from and still serves%s." % (
                    previous or "(current)",
                    "; the environment file of the previous deploy was put back" if state.get("env_restored") else "")
            else:
                text += " This was the service's first release; it never went live and has no route."
            if state.get("recovery_error"):
                text += " Returning to the previous state failed too: %s." % state["recovery_error"]
            messages.append(text + _migrations_note(state) + " Other services were not touched.")
            continue
        check = (health or {}).get(name)
        settle = (settled or {}).get(name) or {}
        if check is not None and check.get("ok") and settle.get("ok", True) is False:
            # Healthy, but its workers did not start: back to what served before, web and workers.
            text = "service '%s': deploy of release %s failed at %s: %s." % (
                name, release, settle.get("step") or "settle", (settle.get("msg") or "").rstrip("."))
            if settle.get("stopped"):
                text += " This was the service's first release; it was stopped, never went live and has no route."
            elif settle.get("recovery_error"):
                text += " Returning to release %s failed too: %s." % (state.get("previous"), settle["recovery_error"])
            else:
                text += " Rolled back to release %s%s, its workers included%s." % (
                    state.get("previous"), " and its environment" if settle.get("env_restored") else "",
                    _verdict(name, rehealth))
            messages.append(text + " Other services were not touched.")
            continue
        if check is None or check.get("ok"):
            continue
        text = "service '%s': deploy of release %s failed at the health check through the gateway " \
               "(health check saw %s)." % (name, release, _seen(check))
        if settle.get("stopped"):
            text += " This was the service's first release; it was stopped, never went live and has no route."
        elif not settle.get("ok", True):
            text += " Rolling back failed: %s." % settle.get("msg")
        else:
            text += " Rolled back to release %s%s%s." % (
                state.get("previous"), " and its environment" if settle.get("env_restored") else "",
                _verdict(name, rehealth))
        messages.append(text + _migrations_note(state) + " Other services were not touched.")
    return messages


def never_live(deployed, health=None, settled=None):
    """Services whose first release failed (its deploy, its health check or its workers): they
    have no vassal, and must have no route."""
    names = []
    for name, state in (deployed or {}).items():
        if not state.get("first_deploy"):
            continue
        if not state.get("ok") or ((health or {}).get(name) or {}).get("ok") is False \
                or ((settled or {}).get(name) or {}).get("stopped"):
            names.append(name)
    return sorted(names)


def health_checks(services, base, check_base=None):
    """name -> the health check of each service, through the gateway at ``base``; a service in
    maintenance (its public route answers 503) through the gateway's check server at ``check_base``.

    The entry's ``health`` settings pass through whole (health_check reads them), so a new way to
    decide health is its schema option plus ``passes`` in module_utils/health.py."""
    out = {}
    for svc in services or []:
        health = {key: value for key, value in svc["health"].items() if key not in ("path", "url_path")}
        url = (check_base if svc.get("maintenance") and check_base else base) + svc["health"]["url_path"]
        out[svc["name"]] = dict(health, name=svc["name"], url=url)
    return out


def switched(deployed):
    """Services whose new release went live (and now need their health checked)."""
    return sorted(name for name, state in (deployed or {}).items() if state.get("ok"))


def settle_plan(deployed, health, services, vassals_dir="/etc/uwsgi/vassals", work=None):
    """What deploy_outcome does with each switched service: settle it when healthy (its workers
    and schedules made what the probe rendered, ``units`` of its entry in ``work``), roll it
    back (to what served before) when not (module_utils/outcome.py, which deploy_batch uses
    too where it settles in its own call)."""
    units = {entry["name"]: entry.get("units") for entry in work or []}
    fields = {svc["name"]: dict(outcome.vassal_fields(svc, vassals_dir), units=units.get(svc["name"]))
              for svc in services or [] if svc["name"] in (deployed or {})}
    return outcome.settle_items(deployed, health, fields)


def returned(deployed, settled=None):
    """Services that were put back on the release that served before (their health is checked again)."""
    names = [name for name, state in (deployed or {}).items()
             if not state.get("ok") and state.get("step") in ("switch", "reload") and state.get("previous")
             and not state.get("recovery_error")]
    names += [name for name, result in (settled or {}).items() if str(result.get("action", "")).startswith("rolled")]
    return sorted(set(names))


def rollback_plan(services, name, release="", vassals_dir="/etc/uwsgi/vassals"):
    """The deploy_outcome entry of an on-demand rollback (playbooks/rollback.yml)."""
    svc = next(s for s in services if s["name"] == name)
    return [dict(outcome.vassal_fields(svc, vassals_dir), outcome="rollback", release=release or None)]


class FilterModule:
    def filters(self):
        return {"deploy_report": deploy_report, "never_live": never_live, "health_checks": health_checks,
                "switched": switched, "settle_plan": settle_plan, "returned": returned,
                "rollback_plan": rollback_plan}
