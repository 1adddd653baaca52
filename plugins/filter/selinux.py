# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""SELinux decisions for the gateway and the services, as pure functions (unit-tested).

nginx runs confined (``httpd_t``); uWSGI, started by systemd from /usr/bin or /opt/uwsgi, runs
unconfined (``unconfined_service_t``). What nginx needs from the services' tree:

- write (connect to) each unix socket: a socket file gets the type of the directory it is
  created in, so the services' root and each service's directory are ``httpd_var_run_t``
  (directories only; a new service's directory inherits it from the root, so its first socket is
  right before any relabel), and so is a custom socket's directory;
- read the static files Django collects: ``shared/static`` is ``httpd_sys_content_t`` (files
  collected later inherit it);
- write its own per-service logs: ``httpd_log_t`` on the gateway's log directory (already so
  below /var/log/nginx, needed when it is moved);
- in the split layout, connect to TCP upstreams (``httpd_can_network_connect``), and listen on
  ports outside the policy's ``http_port_t`` (the loopback check server, a custom listen port).

Where SELinux is disabled or absent nothing is decided. Permissive hosts (Amazon Linux 2023's
default) are labelled too, so that switching to enforcing does not break the gateway.
"""

from __future__ import annotations

import posixpath
import re

# Ports the targeted policy already labels http_port_t.
HTTP_PORTS = frozenset((80, 81, 443, 488, 8008, 8009, 8443, 9000))
MODES = ("enforcing", "permissive", "disabled", "absent")


def selinux_mode(getenforce):
    """The mode from a registered ``getenforce`` result: enforcing, permissive, disabled, or absent
    (no getenforce: SELinux is not part of the system)."""
    if not isinstance(getenforce, dict) or getenforce.get("skipped"):
        return "absent"
    if getenforce.get("rc") != 0:
        return "absent"
    out = str(getenforce.get("stdout", "")).strip().lower()
    return out if out in ("enforcing", "permissive", "disabled") else "absent"


def _exact(path):
    """An fcontext regular expression matching exactly this absolute path."""
    path = posixpath.normpath(str(path))
    if not path.startswith("/") or any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise ValueError("not an absolute path without control characters: %r" % path)
    return re.escape(path).replace("\\/", "/")


def selinux_plan(mode, root=None, sockets=(), static_dirs=(), log_dir=None, tcp_upstreams=False, listen_ports=()):
    """What to label and switch on a host, given the SELinux mode and what runs there.

    - root: the services' root (app hosts), with ``sockets``: the unix socket paths of its present
      services and ``static_dirs``: their static directories;
    - log_dir: the gateway's per-service log directory; tcp_upstreams: whether this gateway reaches
      app hosts over TCP; listen_ports: every port nginx listens on (gateways).

    Returns ``enabled``, ``fcontexts`` (target regex, setype, ftype), ``restore`` (paths to
    relabel now: ``flat`` without descending, ``recursive``), ``booleans`` and ``ports``.
    """
    if mode not in MODES:
        raise ValueError("unknown SELinux mode %r; expected one of %s" % (mode, ", ".join(MODES)))
    plan = {"enabled": mode in ("enforcing", "permissive"), "mode": mode, "fcontexts": [],
            "restore": {"flat": [], "recursive": []}, "booleans": [], "ports": []}
    if not plan["enabled"]:
        return plan
    fcontexts, flat, recursive = plan["fcontexts"], plan["restore"]["flat"], plan["restore"]["recursive"]

    def label(target, setype, ftype):
        entry = {"target": target, "setype": setype, "ftype": ftype}
        if entry not in fcontexts:
            fcontexts.append(entry)

    if root:
        base = _exact(root)
        # The root and every service directory directly below it: sockets created there.
        label(base, "httpd_var_run_t", "d")
        label(base + "/[^/]+", "httpd_var_run_t", "d")
        flat.append(posixpath.normpath(root))
        for sock in sorted(set(sockets)):
            directory = posixpath.dirname(posixpath.normpath(sock))
            if posixpath.dirname(directory) != posixpath.normpath(root):  # a custom socket directory
                label(_exact(directory), "httpd_var_run_t", "d")
            if directory not in flat:
                flat.append(directory)
        for static in sorted(set(static_dirs)):
            label(_exact(static) + "(/.*)?", "httpd_sys_content_t", "a")
            recursive.append(posixpath.normpath(static))
    if log_dir:
        label(_exact(log_dir) + "(/.*)?", "httpd_log_t", "a")
        recursive.append(posixpath.normpath(log_dir))
    if tcp_upstreams:
        plan["booleans"].append({"name": "httpd_can_network_connect", "state": True})
    for port in sorted({int(p) for p in listen_ports}):
        if not 0 < port < 65536:
            raise ValueError("port %r out of range 1-65535" % port)
        if port not in HTTP_PORTS:
            plan["ports"].append({"port": port, "proto": "tcp", "setype": "http_port_t"})
    return plan


class FilterModule:
    def filters(self):
        return {"selinux_mode": selinux_mode, "selinux_plan": selinux_plan}
