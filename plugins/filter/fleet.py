# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""The requests of the fleet playbooks (join, leave, run, logs, releases), checked on the
controller before any host is contacted: the same allow-lists as the service list (a command is
checked like a worker's argv), every problem in one report naming the variable and what is allowed."""

from __future__ import annotations

import json
import re

from ansible.errors import AnsibleFilterError
from ansible_collections.microsvc.deploy.plugins.plugin_utils.checks import Argv, has_control, show

KINDS = ("join", "leave", "run", "logs", "releases")
HOST = re.compile(r"[A-Za-z0-9_.:-]{1,253}")
SERVICE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
# journalctl --since and GNU date understand both: an absolute UTC time, or a time ago.
SINCE = re.compile(r"(?:[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[ T][0-9]{2}:[0-9]{2}(?::[0-9]{2})?)?|[1-9][0-9]{0,4}[smhd])")
SINCE_RULE = "a UTC time YYYY-MM-DD[ HH:MM[:SS]] or a time ago: 1 to 99999 followed by s, m, h or d (90m, 2h, 1d)"
MAX_LINES = 10000


def _text(value):
    return value if isinstance(value, str) else None


def _argv(value):
    """The command as a list: given as a list (-e '{"command": [...]}') or as a JSON list in a
    string (-e 'command=["python","manage.py","check"]', which Ansible leaves a string)."""
    if isinstance(value, str):
        if has_control(value):
            return None, "contains a control character or line break"
        try:
            value = json.loads(value)
        except ValueError:
            return None, 'must be a JSON list of arguments, e.g. command=\'["python","manage.py","check"]\''
    if isinstance(value, (list, tuple)):
        value = list(value)
    return value, Argv()(value)


def _hosts(request, names, key, problems):
    """The host names of ``key`` (a comma-separated list or a list), each in the inventory."""
    value = request.get(key)
    items = value.split(",") if isinstance(value, str) and value.strip() else value
    if not isinstance(items, (list, tuple)) or not items or any(not isinstance(h, str) for h in items):
        problems.append("%s must name one or more inventory hosts (comma-separated)" % key)
        return []
    out = []
    for host in (h.strip() for h in items):
        if not HOST.fullmatch(host):
            problems.append("%s: %s is not a host name (letters, digits and _.:-)" % (key, show(host)))
        elif host not in names:
            problems.append("%s: host %s is not in the inventory" % (key, show(host)))
        else:
            out.append(host)
    return out


def fleet_request(request, inventory_hosts, app_hosts, gateway_hosts, plans, migrate=None):
    """The checked request: ``request`` (kind and the extra variables given) with ``service``,
    ``argv``, ``hosts`` (the hosts it reaches), ``lines`` and ``since`` normalised, and
    ``problems``: every refusal, each naming the variable and what is allowed (empty: go on).

    ``inventory_hosts``: every host of the inventory; ``app_hosts``, ``gateway_hosts``: the run's,
    in inventory order; ``plans``: app host -> the names of the services present there;
    ``migrate``: app host -> the services whose migrations it runs (where ``run`` goes by default)."""
    if not isinstance(request, dict) or request.get("kind") not in KINDS:
        raise AnsibleFilterError("fleet_request: kind must be one of %s" % ", ".join(KINDS))
    kind = request["kind"]
    problems = []
    out = {"kind": kind, "service": None, "argv": None, "hosts": [], "lines": None, "since": None}
    inventory_hosts = list(inventory_hosts)
    if kind in ("join", "leave"):
        hosts = _hosts(request, inventory_hosts, kind, problems)
        for host in hosts:
            if host not in app_hosts:
                problems.append("%s: host %s is not an app host (microsvc_app_hosts)" % (kind, host))
            elif host in gateway_hosts:
                problems.append("%s: host %s is a gateway too; only app hosts apart from the gateways join and "
                                "leave (the one-host layout has no upstream to enter)" % (kind, host))
        if hosts and set(hosts) >= {h for h in app_hosts if h not in gateway_hosts}:
            problems.append("%s: every app host would be held out of the upstreams; at least one must serve"
                            % kind)
        out["hosts"] = hosts
        return dict(out, problems=problems)

    service = _text(request.get("service"))
    if service is None or not SERVICE.fullmatch(service):
        problems.append("service must name a service of microsvc_services ([a-z][a-z0-9_-]*, at most 32 "
                        "characters), got %s" % show(service if service is not None else request.get("service")))
        service = None
    running = [h for h in app_hosts if service and service in (plans.get(h) or [])]
    if service and not running:
        listed = sorted({n for names in plans.values() for n in names or []})
        problems.append("service %s is not present on any app host of this run (present: %s)"
                        % (show(service), ", ".join(listed) or "none"))
    out["service"] = service

    if request.get("host") not in (None, ""):
        targets = _hosts(request, inventory_hosts, "host", problems)
        for host in targets:
            if service and running and host not in running:
                problems.append("host: %s does not run service %s (it runs on: %s)"
                                % (host, service, ", ".join(running)))
        out["hosts"] = targets
    else:
        out["hosts"] = running

    if kind == "run":
        argv, problem = _argv(request.get("command"))
        if request.get("command") in (None, "", []):
            problem = 'must be given: -e \'command=["python","manage.py","check"]\''
        if problem:
            problems.append("command %s" % problem)
        out["argv"] = argv if not problem else None
        if not request.get("host") and service and running:
            there = [h for h in running if service in ((migrate or {}).get(h) or [])]
            out["hosts"] = there[:1] or running[:1]
    if kind == "logs":
        lines = request.get("lines")
        if lines in (None, ""):
            lines = 100
        try:
            lines = int(lines)
            if isinstance(request.get("lines"), bool) or not 1 <= lines <= MAX_LINES:
                raise ValueError
        except (TypeError, ValueError):
            problems.append("lines must be an integer from 1 to %d, got %s" % (MAX_LINES, show(str(lines))))
            lines = None
        out["lines"] = lines
        since = request.get("since")
        if since not in (None, ""):
            if not isinstance(since, str) or not SINCE.fullmatch(since):
                problems.append("since must be %s, got %s" % (SINCE_RULE, show(str(since))))
            else:
                out["since"] = since
    return dict(out, problems=problems)


class FilterModule:
    def filters(self):
        return {"fleet_request": fleet_request}
