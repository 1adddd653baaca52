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

A deploy starts the idle slot on the release ``current`` names now, waits until it answers HTTP
on its own socket, swaps the link (nginx connects through it, so new connections go to the new
release from then on) and stops the old slot: microsvc-asgi lets its requests finish and closes
its WebSockets with 1001 after the service's grace period. Nothing here follows a path the
service can change: the directory, both sockets and the link are root's.
"""

from __future__ import annotations

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


def read_meta(text):
    """{root, group, ...} from the unit's marker line, each value checked."""
    for line in (text or "").splitlines()[:12]:
        if line.startswith(WEB_MARKER):
            words = line[len(WEB_MARKER):].split()
            meta = dict(w.partition("=")[::2] for w in words[1:] if "=" in w)
            meta["service"] = words[0] if words else ""
            if not re.fullmatch(NAME, meta["service"]) or any("=" not in w for w in words[1:]):
                break
            if not re.fullmatch(r"/[A-Za-z0-9_./-]{1,80}", meta.get("root", "")) or ".." in meta["root"]:
                break
            if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", meta.get("group", "")):
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
    old, old_pid = running(name, root)
    if live == wanted and old is not None and not code_changed and not config_changed:
        boot_slot(name, path, old)  # the probe found the live slot not enabled at boot
        return dict(action="none", old_workers=[old_pid], new_workers=[old_pid], master_pid=old_pid)
    sock_path = os.path.join(os.path.dirname(path), "microsvc-%s.web@.socket" % name)
    changed = False
    if live != wanted:
        write_atomic(path, wanted, 0o644)
        changed = True
    if fsutil.read_text(sock_path) != socket_unit(meta):
        write_atomic(sock_path, socket_unit(meta), 0o644)
        changed = True
    if changed:
        _systemctl(["daemon-reload"])
    new = 2 if old == 1 else 1
    try:
        pid = start_slot(name, root, new, timeout, log_file)
    except AsgiError as exc:
        from ansible_collections.microsvc.deploy.plugins.module_utils.vassal import VassalError

        raise VassalError(str(exc)) from None
    swap_link(root, new)
    if old is not None:
        # Connections that reached the old socket just before the swap wait in its backlog: the old
        # server accepts and answers them before it is told to stop (a stop closes the backlog).
        time.sleep(SWAP_DRAIN)
        stop_slot(name, old)
    else:
        # A slot that runs without the link naming it (a run cut short) goes too.
        other = 2 if new == 1 else 1
        stop_slot(name, other)
    # After a reboot, systemd starts the slot the link names.
    boot_slot(name, path, new)
    return dict(action="start" if old is None else "swap", old_workers=[old_pid] if old_pid else [],
                new_workers=[pid], master_pid=pid)


def stop(name, path, timeout=90):
    """Stop both slots, remove the units, the sockets and the link. False when nothing was there."""
    root = None
    text = fsutil.read_text(path)
    if text is not None:
        try:
            root = read_meta(text)["root"]
        except AsgiError:
            root = None
    sock_path = os.path.join(os.path.dirname(path), "microsvc-%s.web@.socket" % name)
    if text is None and not os.path.lexists(sock_path):
        return False
    for slot in SLOTS:
        stop_slot(name, slot, block=True)
    for slot in SLOTS:
        if boots(name, path, slot):
            os.unlink(os.path.join(os.path.dirname(path), "multi-user.target.wants", instance(name, slot)))
    for unit in (path, sock_path):
        if os.path.lexists(unit):
            os.unlink(unit)
    _systemctl(["daemon-reload"], check=False)
    _systemctl(["reset-failed", "--"] + [instance(name, s) for s in SLOTS], check=False)
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
