# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""An ASGI service's web processes: two slots of one systemd template, a new release started
next to the old one (used by vassal.py, which hands an ASGI service's calls here).

    /etc/systemd/system/microsvc-<svc>.web@.service   the web unit (rendered on the controller, the
                                                       "ini" of an ASGI service: the probe compares it)
    /etc/systemd/system/microsvc-<svc>.web@.socket    its socket, written here from the unit's marker
    <root>/<svc>/asgi-1.sock, asgi-2.sock             made by systemd (root) in the root-owned
                                                       service directory, <svc>:<nginx group> 0660
    <root>/<svc>/asgi.sock -> asgi-N.sock             the gateway's address: root's link to the live slot

On an app host apart from the gateway (the split layout) the marker names the service's TCP address
(``listen=<address>:<port>``) and systemd's proxy (``proxy=<path>``), and two more units are written here:

    /etc/systemd/system/microsvc-<svc>.web-tcp.socket  ListenStream=<address>:<port> (systemd, root, binds it)
    /etc/systemd/system/microsvc-<svc>.web-tcp.service systemd-socket-proxyd <root>/<svc>/asgi.sock, as the
                                                       service's user, in its slice, without a network
                                                       of its own (PrivateNetwork=, AF_UNIX only)

The proxy connects through root's link for each connection it accepts, so the link's swap switches
the TCP connections too; the slots and the link are the same as on a gateway host.

A deploy starts the idle slot on the release ``current`` names now, waits until it answers HTTP
on its own socket, swaps the link (nginx connects through it, so new connections go to the new
release from then on) and stops the old slot: microsvc-asgi lets its requests finish and closes
its WebSockets with 1001 after the service's grace period. Nothing here follows a path the
service can change: the directory, both sockets and the link are root's.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import time

from ansible_collections.microsvc.deploy.plugins.module_utils import fsutil
from ansible_collections.microsvc.deploy.plugins.module_utils.atomic import write_atomic

UNITS_DIR = "/etc/systemd/system"
WEB_MARKER = "# microsvc-web: "
SLOTS = (1, 2)
NAME = r"[a-z][a-z0-9_-]{0,31}"
MARKER_FIELDS = ("root", "group", "listen", "proxy")
# Where each platform has systemd's proxy (the uwsgi_vassal role's platform variable __uwsgi_vassal_socket_proxyd).
PROXIES = ("/lib/systemd/systemd-socket-proxyd", "/usr/lib/systemd/systemd-socket-proxyd")
# Connections the TCP proxy carries at once (each holds two sockets and two pipes).
PROXY_CONNECTIONS = 1024
# Sockets that let a process ask for one outside its sandbox: hidden from the TCP proxy (the same
# list as the uwsgi_vassal role's __uwsgi_vassal_control_sockets; a unit test compares them).
CONTROL_SOCKETS = ("/run/systemd/private", "/run/dbus", "/var/run/dbus", "/run/initctl", "/run/udev/control",
                   "/run/docker.sock", "/var/run/docker.sock", "/run/containerd", "/run/podman",
                   "/run/snapd.socket", "/run/snapd-snap.socket")


class AsgiError(Exception):
    pass


def unit_path(name, units_dir=UNITS_DIR):
    return os.path.join(units_dir, "microsvc-%s.web@.service" % name)


def is_web_unit(path):
    return bool(re.fullmatch(r"microsvc-%s\.web@\.service" % NAME, os.path.basename(path or "")))


def _name_of(path):
    return os.path.basename(path)[len("microsvc-"):-len(".web@.service")]


def instance(name, slot, kind="service"):
    return "microsvc-%s.web@%d.%s" % (name, slot, kind)


def _listen(value):
    """``address:port`` (IPv6 in brackets) of a TCP listener: a literal, non-wildcard address and a
    port in 1024-65535, written back in its one canonical form; None when it is not."""
    match = re.fullmatch(r"(?:\[([0-9a-fA-F:.]{2,45})\]|([0-9.]{7,15})):([0-9]{4,5})", value)
    if not match:
        return None
    text, port = match.group(1) or match.group(2), int(match.group(3))
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version != (6 if match.group(1) else 4) or address.is_unspecified or address.is_multicast \
            or not 1024 <= port <= 65535 or str(address) != text:
        return None
    return ("[%s]:%d" if address.version == 6 else "%s:%d") % (address, port)


def read_meta(text):
    """{service, root, group[, listen, proxy]} from the unit's marker line, each value checked: one
    word per field, known fields only, each once."""
    for line in (text or "").splitlines()[:12]:
        if line.startswith(WEB_MARKER):
            words = line[len(WEB_MARKER):].split(" ")
            pairs = [w.partition("=")[::2] for w in words[1:]]
            meta = dict(pairs)
            meta["service"] = words[0] if words else ""
            if not re.fullmatch(NAME, meta["service"]) or any("=" not in w for w in words[1:]):
                break
            if len(meta) != len(pairs) + 1 or any(key not in MARKER_FIELDS for key, _value in pairs):
                break
            if not re.fullmatch(r"/[A-Za-z0-9_./-]{1,80}", meta.get("root", "")) or ".." in meta["root"]:
                break
            if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", meta.get("group", "")):
                break
            # A TCP listener needs both, or neither is there.
            if ("listen" in meta) != ("proxy" in meta):
                break
            if "listen" in meta and (_listen(meta["listen"]) != meta["listen"] or meta["proxy"] not in PROXIES):
                break
            return meta
    raise AsgiError("the web unit has no valid '%s' line" % WEB_MARKER.strip())


def socket_unit(meta):
    """The slot's socket: systemd (root) makes it in the root-owned service directory and hands it
    to the service's user and the gateway's group."""
    return "\n".join([
        "# Written by microsvc.deploy (module_utils/asgi.py) from microsvc-%s.web@.service." % meta["service"],
        "[Unit]",
        "Description=microsvc %s: web socket of slot %%i" % meta["service"],
        "",
        "[Socket]",
        "ListenStream=%s/asgi-%%i.sock" % meta["root"],
        "SocketUser=%s" % meta["service"],
        "SocketGroup=%s" % meta["group"],
        "SocketMode=0660",
        "DirectoryMode=0755",
        "RemoveOnStop=true",
        "Backlog=1024",
        "Service=microsvc-%s.web@%%i.service" % meta["service"],
        "",
    ])


def tcp_names(name):
    """The TCP listener's socket and service unit of a service."""
    return ("microsvc-%s.web-tcp.socket" % name, "microsvc-%s.web-tcp.service" % name)


def _slice(name):
    from ansible_collections.microsvc.deploy.plugins.module_utils.units import slice_name

    return slice_name(name)


def tcp_units(meta):
    """{file name: text} of the TCP listener (the split layout), or {} without ``listen``.

    systemd (root) binds the service's address and port and hands the listening socket to
    systemd-socket-proxyd, which accepts as the service's user and connects each connection to
    root's link, so it reaches the live slot. The proxy has no network of its own and may open unix
    sockets only: the listening socket it was given is all it has of the host's network."""
    if "listen" not in meta:
        return {}
    from ansible_collections.microsvc.deploy.plugins.module_utils.units import SANDBOX

    svc = meta["service"]
    sock_name, service_name = tcp_names(svc)
    head = "# Written by microsvc.deploy (module_utils/asgi.py) from microsvc-%s.web@.service." % svc
    sock = "\n".join([
        head,
        "[Unit]",
        "Description=microsvc %s: ASGI web on %s (to the live slot)" % (svc, meta["listen"]),
        "",
        "[Socket]",
        "ListenStream=%s" % meta["listen"],
        # The private address may come up after the socket at boot.
        "FreeBind=true",
        "NoDelay=true",
        "Backlog=1024",
        "Service=%s" % service_name,
        "",
        # Enabled with the live slot (asgi.py): the port listens from boot on.
        "[Install]",
        "WantedBy=sockets.target",
        "",
    ])
    service = "\n".join([
        head,
        "[Unit]",
        "Description=microsvc %s: ASGI web proxy from %s to %s" % (svc, meta["listen"], link_path(meta["root"])),
        "Requires=%s" % sock_name,
        "After=%s" % sock_name,
        "",
        "[Service]",
        "Type=simple",
        # One connection to root's link per connection accepted: the link names the live slot.
        "ExecStart=%s --connections-max=%d %s" % (meta["proxy"], PROXY_CONNECTIONS, link_path(meta["root"])),
        "User=%s" % svc,
        "Group=%s" % svc,
        "Slice=%s" % _slice(svc),
        "Restart=on-failure",
        "RestartSec=1",
        "LimitNOFILE=%d" % (PROXY_CONNECTIONS * 8),
        "SyslogIdentifier=microsvc-%s.web-tcp" % svc,
    ] + list(SANDBOX) + [
        "CapabilityBoundingSet=",
        "PrivateNetwork=true",
        "RestrictAddressFamilies=AF_UNIX",
        "MemoryDenyWriteExecute=true",
        "ProtectProc=invisible",
        "UMask=0077",
        "InaccessiblePaths=%s" % " ".join("-" + path for path in CONTROL_SOCKETS),
        "",
    ])
    return {sock_name: sock, service_name: service}


def listens(path):
    """Whether the web unit at ``path`` asks for a TCP listener (a valid marker with ``listen``)."""
    try:
        return "listen" in read_meta(fsutil.read_text(path))
    except AsgiError:
        return False


def tcp_active(name):
    """Whether the service's TCP listener (its socket unit) is active."""
    from ansible_collections.microsvc.deploy.plugins.module_utils.units import Systemd

    unit = tcp_names(name)[0]
    return Systemd(60).show([unit], ["ActiveState"]).get(unit, {}).get("ActiveState") == "active"


def _tcp_match(units_dir, wanted):
    return all(fsutil.read_text(os.path.join(units_dir, file_name)) == text for file_name, text in wanted.items())


def _write_tcp_units(units_dir, name, wanted):
    """Write the TCP listener's units (or remove them when none is wanted); True when a file changed."""
    changed = False
    for file_name in tcp_names(name):
        path = os.path.join(units_dir, file_name)
        if file_name in wanted:
            if fsutil.read_text(path) != wanted[file_name]:
                write_atomic(path, wanted[file_name], 0o644)
                changed = True
        elif os.path.lexists(path):
            os.unlink(path)
            changed = True
    link = os.path.join(units_dir, WANTS["socket"], tcp_names(name)[0])
    if not wanted and os.path.lexists(link):
        os.unlink(link)
    return changed


def stop_tcp(name):
    """Stop the TCP listener: the socket first (systemd closes the port), then the proxy (its open
    connections close with it)."""
    sock_name, service_name = tcp_names(name)
    _systemctl(["stop", "--", sock_name, service_name], check=False)


def link_path(root):
    return os.path.join(root, "asgi.sock")


def live_slot(root):
    """The slot the gateway's link names, or None."""
    try:
        target = os.readlink(link_path(root))
    except OSError:
        return None
    match = re.fullmatch(r"asgi-([12])\.sock", target)
    return int(match.group(1)) if match else None


def _systemctl(args, check=True, timeout=120):
    from ansible_collections.microsvc.deploy.plugins.module_utils.units import Systemd

    return Systemd(timeout).run(args, check=check)


def _show(name, slot):
    from ansible_collections.microsvc.deploy.plugins.module_utils.units import Systemd

    unit = instance(name, slot)
    return Systemd(60).show([unit], ["ActiveState", "SubState", "MainPID", "NRestarts"]).get(unit, {})


def running(name, root):
    """(slot, main pid) of the live slot when it runs, else (None, None)."""
    slot = live_slot(root)
    if slot is None:
        return None, None
    state = _show(name, slot)
    if state.get("ActiveState") in ("active", "reloading") and state.get("MainPID") not in (None, "", "0"):
        return slot, int(state["MainPID"])
    return None, None


def http_answers(path, timeout=2.0):
    """Whether an HTTP server answers a request on the unix socket ``path`` (any status line; an
    answer is read at most 64 bytes far: it comes from the service)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: microsvc-deploy\r\nConnection: close\r\n\r\n")
        head = sock.recv(64)
    except OSError:
        return False
    finally:
        sock.close()
    return bool(re.match(rb"HTTP/1\.[01] [1-5][0-9][0-9]", head))


def _log_tail(log_file):
    return fsutil.tail(log_file, 25) if log_file else ""


def start_slot(name, root, slot, timeout, log_file=None):
    """Start a slot and wait until it answers on its own socket; returns its main pid."""
    _systemctl(["stop", "--", instance(name, slot), instance(name, slot, "socket")], check=False)
    _systemctl(["reset-failed", "--", instance(name, slot), instance(name, slot, "socket")], check=False)
    _systemctl(["start", "--", instance(name, slot, "socket"), instance(name, slot)], check=False)
    path = os.path.join(root, "asgi-%d.sock" % slot)
    deadline = time.time() + timeout
    first = None
    while time.time() < deadline:
        state = _show(name, slot)
        first = first or state.get("NRestarts")
        if state.get("ActiveState") in ("failed", "inactive") or state.get("NRestarts") != first:
            break
        if state.get("ActiveState") == "active" and http_answers(path):
            state = _show(name, slot)
            if state.get("ActiveState") == "active":
                return int(state.get("MainPID") or 0)
        time.sleep(0.2)
    state = _show(name, slot)
    _systemctl(["stop", "--", instance(name, slot), instance(name, slot, "socket")], check=False)
    raise AsgiError("service '%s': the ASGI server (%s) did not answer on its socket within %ds: it is %s (%s). "
                    "End of %s:\n%s" % (name, instance(name, slot), timeout, state.get("ActiveState"),
                                        state.get("SubState"), log_file or "its log", _log_tail(log_file)))


SWAP_DRAIN = 1.0  # seconds between the link's swap and the old slot's stop


def swap_link(root, slot):
    """Point the gateway's link at a slot's socket, atomically (rename over the old link)."""
    tmp = os.path.join(root, ".asgi.sock.new")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink("asgi-%d.sock" % slot, tmp)
    os.replace(tmp, link_path(root))


def boots(name, path, slot):
    """Whether systemd starts ``slot`` at boot (``systemctl enable``'s link; ``path``: the web unit)."""
    return os.path.lexists(os.path.join(os.path.dirname(path), "multi-user.target.wants", instance(name, slot)))


def boot_slot(name, path, slot):
    """Make ``slot`` the one systemd starts at boot (its socket comes with it: the unit requires it)
    and no other: the enabled instance follows the link. ``path`` is the web unit's."""
    for other in SLOTS:
        enabled = boots(name, path, other)
        if other == slot and not enabled:
            _systemctl(["enable", "--", instance(name, other)])
        elif other != slot and enabled:
            _systemctl(["disable", "--", instance(name, other)], check=False)


def stop_slot(name, slot, block=False):
    """Stop a slot: its socket first (no new connection reaches it), then its server, which lets
    its requests finish and closes its WebSockets after their grace period (without waiting for it
    unless ``block``)."""
    _systemctl(["stop", "--", instance(name, slot, "socket")], check=False)
    _systemctl(["stop"] + ([] if block else ["--no-block"]) + ["--", instance(name, slot)], check=False)


def apply(name, path, content, code_changed=False, config_changed=False, timeout=90, log_file=None):
    """Make the ASGI service serve what its unit and ``current`` say; returns the result vassal.apply
    returns (action, old_workers, new_workers, master_pid)."""
    live = fsutil.read_text(path)
    wanted = live if content is None else content
    if wanted is None:
        raise AsgiError("service '%s': no web unit at %s" % (name, path))
    meta = read_meta(wanted)
    if meta["service"] != name or _name_of(path) != name:
        raise AsgiError("service '%s': the web unit names service %r" % (name, meta["service"]))
    root = meta["root"]
    units_dir = os.path.dirname(path)
    tcp_wanted = tcp_units(meta)
    if tcp_wanted and not os.path.isfile(meta["proxy"]):
        raise AsgiError("service '%s': systemd's proxy %s is not on this host: it carries the service's TCP port "
                        "to its socket (the split layout)" % (name, meta["proxy"]))
    old, old_pid = running(name, root)
    tcp_in_place = _tcp_match(units_dir, tcp_wanted) and (tcp_active(name) if tcp_wanted else not any(
        os.path.lexists(os.path.join(units_dir, file_name)) for file_name in tcp_names(name)))
    if live == wanted and old is not None and not code_changed and not config_changed and tcp_in_place:
        _enable(name, path, old, bool(tcp_wanted))  # the probe found the live slot not enabled at boot
        return dict(action="none", old_workers=[old_pid], new_workers=[old_pid], master_pid=old_pid)
    sock_path = os.path.join(units_dir, "microsvc-%s.web@.socket" % name)
    changed = False
    if live != wanted:
        write_atomic(path, wanted, 0o644)
        changed = True
    if fsutil.read_text(sock_path) != socket_unit(meta):
        write_atomic(sock_path, socket_unit(meta), 0o644)
        changed = True
    # The TCP listener's units are written now, and a running listener keeps its old ones until
    # the new slot is live (below).
    tcp_changed = _write_tcp_units(units_dir, name, tcp_wanted)
    if changed or tcp_changed:
        _systemctl(["daemon-reload"])
    new = 2 if old == 1 else 1
    try:
        pid = start_slot(name, root, new, timeout, log_file)
    except AsgiError as exc:
        from ansible_collections.microsvc.deploy.plugins.module_utils.vassal import VassalError

        raise VassalError(str(exc)) from None
    swap_link(root, new)
    from ansible_collections.microsvc.deploy.plugins.module_utils.vassal import VassalError

    try:
        _start_tcp(name, tcp_wanted, tcp_changed)
        tcp_error = None
    except VassalError as exc:  # reported once the old slot is stopped: one slot runs, as after any switch
        tcp_error = exc
    _enable(name, path, new, bool(tcp_wanted))
    if old is not None:
        # Connections that reached the old socket just before the swap wait in its backlog: the old
        # server accepts and answers them before it is told to stop (a stop closes the backlog).
        time.sleep(SWAP_DRAIN)
        stop_slot(name, old)
    else:
        # A slot that runs without the link naming it (a run cut short) goes too.
        other = 2 if new == 1 else 1
        stop_slot(name, other)
    if tcp_error is not None:
        raise tcp_error
    return dict(action="start" if old is None else "swap", old_workers=[old_pid] if old_pid else [],
                new_workers=[pid], master_pid=pid)


WANTS = {"service": "multi-user.target.wants", "socket": "sockets.target.wants"}


def _enable(name, path, slot, tcp):
    """What starts at boot: the live slot (and the TCP listener where there is one), not the other
    slot (boot_slot)."""
    boot_slot(name, path, slot)
    if tcp and not os.path.lexists(os.path.join(os.path.dirname(path), WANTS["socket"], tcp_names(name)[0])):
        _systemctl(["enable", "--no-reload", "--", tcp_names(name)[0]], check=False)


def _wants_links(units_dir, name):
    """The links that enable a service's web units at boot (the slots', the TCP listener's)."""
    return [os.path.join(units_dir, WANTS["service"], instance(name, s)) for s in SLOTS] + [
        os.path.join(units_dir, WANTS["socket"], tcp_names(name)[0])]


def _start_tcp(name, wanted, changed):
    """Once a slot is live: the TCP listener on (again, on its new units when they changed), or
    gone when none is wanted. A listener that runs on units that did not change is left alone: it
    already connects through the link, to the new slot from the swap on."""
    from ansible_collections.microsvc.deploy.plugins.module_utils.units import UnitsError
    from ansible_collections.microsvc.deploy.plugins.module_utils.vassal import VassalError

    if changed:
        stop_tcp(name)
        _systemctl(["reset-failed", "--"] + list(tcp_names(name)), check=False)
    if not wanted:
        return
    try:
        _systemctl(["start", "--", tcp_names(name)[0]])
    except UnitsError as exc:
        raise VassalError("service '%s': its TCP listener (%s) did not start: %s"
                          % (name, tcp_names(name)[0], exc)) from None


def stop(name, path, timeout=90):
    """Stop the TCP listener and both slots, remove the units, the sockets and the link. False when
    nothing was there."""
    root = None
    text = fsutil.read_text(path)
    if text is not None:
        try:
            root = read_meta(text)["root"]
        except AsgiError:
            root = None
    units_dir = os.path.dirname(path)
    sock_path = os.path.join(units_dir, "microsvc-%s.web@.socket" % name)
    tcp_paths = [os.path.join(units_dir, file_name) for file_name in tcp_names(name)]
    if text is None and not any(os.path.lexists(p) for p in [sock_path] + tcp_paths + _wants_links(units_dir, name)):
        return False
    # The port first: the gateway's next connection goes to another app host at once.
    stop_tcp(name)
    for slot in SLOTS:
        stop_slot(name, slot, block=True)
    # Not started at boot any more: the links in the wants directories (root's) go with the units.
    for unit in [path, sock_path] + tcp_paths + _wants_links(units_dir, name):
        if os.path.lexists(unit):
            os.unlink(unit)
    _systemctl(["daemon-reload"], check=False)
    _systemctl(["reset-failed", "--"] + [instance(name, s) for s in SLOTS] + list(tcp_names(name)), check=False)
    if root:
        for leftover in [link_path(root)] + [os.path.join(root, "asgi-%d.sock" % s) for s in SLOTS]:
            if os.path.lexists(leftover):
                os.unlink(leftover)
    return True


def written(units_dir=UNITS_DIR):
    """Names of the services whose web unit this collection wrote."""
    out = []
    try:
        entries = sorted(os.listdir(units_dir))
    except OSError:
        return out
    for entry in entries:
        path = os.path.join(units_dir, entry)
        if is_web_unit(path):
            try:
                out.append(read_meta(fsutil.read_text(path))["service"])
            except AsgiError:
                continue
    return out
