# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Placement: where each service runs, decided once for the whole run from every host's plan.

For every host of the run: whether its vassals listen on TCP (an app host that is not a
gateway), the gateway its health checks go through and the URLs they use, the routes it
serves as a gateway (each with its upstream members), and the services whose migrations and
``once`` processes (schedules, workers with ``once: true``) it runs.

Hosts are given in inventory order: the first app host of the run that runs a service is
the one that migrates it (the first batch of a rolling deploy).
"""

from __future__ import annotations


def gateway_url(gateway):
    """The URL of the gateway on its own host: HTTPS when TLS is on and plain HTTP redirects to it."""
    if gateway.get("tls_enabled") and gateway.get("tls_redirect", True):
        return "https://127.0.0.1:%d" % int(gateway.get("tls_port", 443))
    return "http://127.0.0.1:%d" % int(gateway.get("listen", 80))


def check_base(gateway, host):
    """The loopback-only check server's prefix that pins a request to ``host``."""
    return "http://127.0.0.1:%d/__microsvc/%s" % (int(gateway.get("check_port", 8099)), host)


def routes(gateway_host, plans, app_hosts, gateway_hosts, held=()):
    """The routes ``gateway_host`` serves: its plan's present services, each with ``members``, the
    app hosts (in inventory order) whose plan has the service present and that this gateway can
    reach: itself over its unix socket, app hosts that are not gateways over TCP (another
    gateway's vassals listen on unix sockets). A host without a plan of this run (outside the
    play, e.g. under --limit) counts with this gateway's plan. A service without members gets
    no route.

    ``held``: app hosts kept out of the upstreams (joining before their health checks passed, or
    leaving); a route lists them under ``held`` instead of ``members`` (the check server still
    reaches them, so a joining host's health checks can pass through the gateway)."""
    own = plans.get(gateway_host) or {}
    out = []
    for name in own.get("present", []):
        running = [host for host in app_hosts
                   if (host == gateway_host or host not in gateway_hosts)
                   and name in (plans.get(host) or own).get("present", [])]
        members = [host for host in running if host not in held]
        if members:
            out.append({"name": name, "members": members, "held": [host for host in running if host in held]})
    return out


def admit(routes_, app_hosts):
    """``routes_`` with their held hosts made members again, in inventory order (``app_hosts``):
    what a gateway serves once the hosts that joined passed their health checks."""
    order = {host: i for i, host in enumerate(app_hosts)}
    return [dict(r, members=sorted(r["members"] + r.get("held", []), key=lambda h: order.get(h, len(order))),
                 held=[]) for r in routes_]


def migrate_hosts(plans, apps, held=()):
    """service -> the first host of ``apps`` (the run's app hosts, inventory order) whose plan has
    it present, less the ``held`` hosts (a joining host takes over no migrations or schedules)."""
    out = {}
    for host in apps:
        if host in held:
            continue
        for name in (plans.get(host) or {}).get("present", []):
            out.setdefault(name, host)
    return out


def place(plans, gateway_hosts, app_hosts, play_hosts, gateway, held=()):
    """host -> placement, for every host of ``play_hosts``.

    ``plans``: host -> that host's plan (the hosts of the run); ``gateway_hosts`` and ``app_hosts``:
    the inventory's hosts of each pattern, in inventory order (outside the run too: a gateway
    keeps routing to app hosts a --limit leaves out); ``gateway``: the gateway's ports and TLS
    settings (listen, tls_enabled, tls_redirect, tls_port, check_port); ``held``: app hosts kept
    out of the upstreams, of migrations and of schedules (playbooks/join.yml, leave.yml)."""
    run_apps = [h for h in app_hosts if h in play_hosts]
    migrate = migrate_hosts(plans, run_apps, held)
    url = gateway_url(gateway)
    out = {}
    for host in play_hosts:
        is_gateway = host in gateway_hosts
        check = check_base(gateway, host)
        out[host] = {
            "gateway": is_gateway,
            "tcp": not is_gateway,
            "gateway_host": host if is_gateway else (gateway_hosts[0] if gateway_hosts else ""),
            "gateway_url": url,
            "check_base": check,
            "health_base": url if is_gateway else check,
            "routes": routes(host, plans, app_hosts, gateway_hosts, held) if is_gateway else [],
            # The other gateways (inventory order, outside the run too): an ACME challenge a
            # gateway has no token for is asked of them.
            "gateway_peers": [h for h in gateway_hosts if h != host] if is_gateway else [],
            "migrate": sorted(name for name, where in migrate.items() if where == host),
        }
    return out
