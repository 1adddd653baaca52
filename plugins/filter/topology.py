# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Which app hosts serve a service, and at which address: the layout as tested code.

Used by the gateway (upstreams, check server), the firewall (who may reach the service
ports) and the vassals (what to bind). One definition of a host's private address:
``microsvc_private_address``, else ``private_ip_address`` (the aws_ec2 inventory's).
"""

from __future__ import annotations

import ipaddress

from ansible.errors import AnsibleFilterError


def private_address(host_vars, host=None):
    """The private address of a host, from its variables; fails naming the host when it has none
    or when it is not a single non-wildcard IP address."""
    value = host_vars.get("microsvc_private_address") or host_vars.get("private_ip_address") or ""
    name = host or host_vars.get("inventory_hostname", "a host")
    if not value:
        raise AnsibleFilterError("%s has no microsvc_private_address (its private IP; the aws_ec2 inventory "
                                 "provides private_ip_address)" % name)
    try:
        parsed = ipaddress.ip_address(str(value))
    except ValueError:
        raise AnsibleFilterError("%s: microsvc_private_address %r is not an IP address" % (name, str(value)[:60])) \
            from None
    if parsed.is_unspecified:
        raise AnsibleFilterError("%s: microsvc_private_address %s is a wildcard address" % (name, value))
    return str(parsed)


def host_port(address, port):
    """``address:port``, with IPv6 addresses in brackets."""
    address = str(address)
    return "[%s]:%d" % (address, int(port)) if ":" in address else "%s:%d" % (address, int(port))


def gateway_services(plan, hostvars, app_hosts, gateway_hosts, this_host):
    """The present services of ``plan`` that this gateway routes, each with ``members``: the app
    hosts (in the given order) whose own plan has the service present and that this gateway can
    reach — itself over its unix socket, app hosts that are not gateways over TCP. Another
    gateway's vassals listen on unix sockets and are not reachable from here. A host where the
    service's first release failed in this run (its ``uwsgi_vassal_never_live``) is no member: a
    service without members gets no route."""
    out = []
    for svc in plan.get("services", []):
        if svc.get("state") != "present":
            continue
        members = []
        for host in app_hosts:
            if host != this_host and host in gateway_hosts:
                continue
            host_vars = hostvars.get(host) or {}
            host_plan = plan if host == this_host else host_vars.get("microsvc_plan") or plan
            if svc["name"] in host_plan.get("present", []) and svc["name"] not in (
                    host_vars.get("uwsgi_vassal_never_live") or []):
                members.append(host)
        if members:
            out.append(dict(svc, members=members))
    return out


def gateway_addresses(hostvars, gateway_hosts):
    """Private addresses of the gateways (the sources an app host's firewall lets in)."""
    return [private_address(hostvars.get(h) or {}, h) for h in gateway_hosts]


def migration_hosts(hostvars, play_hosts, names, override=""):
    """name -> the host that runs the service's Django migrations: ``override`` when set, else the
    first host of the play (inventory order, so in the first batch of a rolling deploy) whose plan
    has the service present. Once per rollout."""
    out = {}
    for name in names or []:
        if override:
            out[name] = override
            continue
        for host in play_hosts:
            plan = (hostvars.get(host) or {}).get("microsvc_plan") or {}
            if name in plan.get("present", []):
                out[name] = host
                break
    return out


class FilterModule:
    def filters(self):
        return {
            "private_address": private_address,
            "host_port": host_port,
            "gateway_services": gateway_services,
            "gateway_addresses": gateway_addresses,
            "migration_hosts": migration_hosts,
        }
