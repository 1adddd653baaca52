# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""At which address app hosts serve a service: the layout as tested code (where each service
runs is the plan's placement, plugin_utils/placement.py).

Used by the gateway (upstreams, check server), the firewall (who may reach the service
ports) and the vassals (what to bind). One definition of a host's private address:
``microsvc_private_address``, else ``private_ip_address`` (the aws_ec2 inventory's).
"""

from __future__ import annotations

import ipaddress

from ansible.errors import AnsibleFilterError
from ansible_collections.microsvc.deploy.plugins.plugin_utils.placement import admit


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


def routed(services, routes, never_live=None):
    """The services of ``routes`` (the plan's placement: name and members, in route order), each a
    copy of its entry in ``services`` with ``members``, less the hosts where its first release
    failed in this run (``never_live``: host -> service names). A service without members is
    left out: it gets no route. ``held``: the route's app hosts kept out of the upstream (joining
    or leaving), which the check server still reaches."""
    by_name = {svc["name"]: svc for svc in services}
    failed = never_live or {}
    out = []
    for route in routes:
        members = [host for host in route["members"] if route["name"] not in (failed.get(host) or [])]
        held = [host for host in route.get("held", []) if route["name"] not in (failed.get(host) or [])]
        if members and route["name"] in by_name:
            out.append(dict(by_name[route["name"]], members=members, held=held))
    return out


def admit_held(placement, app_hosts):
    """A gateway's placement with the held app hosts of its routes made upstream members, in
    inventory order (``app_hosts``): playbooks/join.yml, once the joining hosts passed their
    health checks."""
    return dict(placement, routes=admit(placement.get("routes", []), list(app_hosts)))


def gateway_addresses(hostvars, gateway_hosts):
    """Private addresses of the gateways (the sources an app host's firewall lets in)."""
    return [private_address(hostvars.get(h) or {}, h) for h in gateway_hosts]


class FilterModule:
    def filters(self):
        return {
            "private_address": private_address,
            "host_port": host_port,
            "routed": routed,
            "gateway_addresses": gateway_addresses,
            "admit_held": admit_held,
        }
