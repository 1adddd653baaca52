#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Report, in one call for every service of a host, what a deploy would have to do."""

from __future__ import annotations

DOCUMENTATION = r"""
module: vassal_probe
short_description: Compare the wanted state of many services with a host, in one call
description:
  - For each service given, reports whether its user, release, virtualenv, current release,
    vassal ini and environment file already match what is wanted, and lists the reasons a deploy is
    needed. Changes nothing.
  - Also compares each service's systemd units (workers and schedules) with the host's, and whether
    their processes and timers run.
  - Reads every service's stats socket as that service's user, bounded in time and size and
    schema-checked; a service whose answer cannot be used gets C(stats_error) (why), and the others
    are probed as usual.
  - Also reports the vassal ini files and units written by this collection for services that are no
    longer listed, and what is left on the host of services marked absent.
  - The action plugin of the same name computes the wanted state on the controller (release ids,
    rendered ini, checksums) and calls this module; a no-change run therefore costs one remote call
    whatever the number of services.
version_added: 0.1.0
options:
  services:
    description:
      - Services to compare, each with C(name), C(root), C(user), C(release), C(venv), C(python),
        C(ini_path), C(ini_sha1), C(env_file), C(env_sha1), C(stats_socket), C(group) (optional), and
        C(units), its systemd units
        (C(files), name to SHA-1; C(instances), the worker processes; C(timers), the schedules' timers).
    type: list
    elements: dict
    default: []
  absent:
    description: Services marked absent, each with C(name), C(root), C(user), C(ini_path), C(socket), C(purge).
    type: list
    elements: dict
    default: []
  listed:
    description: Names of every service in the list (present or absent).
    type: list
    elements: str
    default: []
  vassals_dir:
    description: The emperor's vassals directory.
    type: path
    required: true
  uwsgi:
    description:
      - C(binary) and C(plugin) (empty when Python is built in) of uWSGI; when given, its Python version is
        returned as C(plugin_python), for the per-service check that the virtualenvs use the same Python.
    type: dict
    default: {}
  marker:
    description: Line that identifies a vassal ini written by this collection.
    type: str
    default: "; microsvc-service:"
  units_dir:
    description: Where the services' systemd units are (their files carry a C(# microsvc-service:) line).
    type: path
    default: /etc/systemd/system
  logrotate:
    description:
      - Log rotation files of the services (C(service), C(dest), C(content), C(mode)), as the module
        C(microsvc.deploy.managed_files) writes them; written (root's, atomically, a link in their place
        replaced, never followed) where the service's account exists, the others' names returned in
        C(logrotate_pending). The only change this call makes.
    type: list
    elements: dict
    default: []
  lock:
    description:
      - The deploy lock to take first, in this call, as the module C(microsvc.deploy.deploy_lock) takes it
        (C(services), C(holder), C(lease), C(dir), C(wait)). When another run holds one of the locks after
        C(wait) seconds, nothing is probed (C(probed) is false) and C(lock) says who holds it; the action
        plugin then waits as deploy_lock does and probes again. Given by the role where the play's batch is
        one host (a batch of several takes its locks one host at a time, in a task of its own).
    type: dict
  uv_version:
    description:
      - The version of uv the controller installs virtualenvs with; C(uv_present) says whether the host
        has it (root's alone, under I(root)), so that the controller sends its wheel only where it is missing.
    type: str
    default: ""
  root:
    description: The services' root directory (the tools of the builds are under its C(.microsvc/tools)).
    type: path
    default: /opt/www
  release_if_idle:
    description:
      - With I(lock), release this run's locks on the host at the end of the call when nothing needs work (no
        service differs, none to remove), as the run has nothing left to do under them (C(lock_released)).
    type: bool
    default: false
notes:
  - Why not a builtin - one call compares every service of a host (files, units, stats), so a run with
    nothing to do costs one call.
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
# Written by the role microsvc.deploy.uwsgi_vassal (tasks/probe.yml); the action plugin renders
# each vassal ini and computes the release ids on the controller first.
- name: Compare the selected services with the host
  microsvc.deploy.vassal_probe:
    services: "{{ selected }}"
    absent: "{{ absent }}"
    listed: "{{ microsvc_plan.names }}"
    vassals_dir: /etc/uwsgi/vassals
    ini_template: vassal.ini.j2
    env_template: env.j2
  register: probe
"""

RETURN = r"""
services:
  description:
    - Per service name, its state on the host, C(needs), the reasons to deploy its web process,
      C(unit_needs), the reasons to change its workers' and schedules' units, and C(stats_error), why
      its stats answer could not be used (null when it could, or when nothing listens).
  returned: always
  type: dict
unlisted:
  description: Names of services whose vassal ini or units are on the host but which are no longer listed.
  returned: always
  type: list
plugin_python:
  description: The Python version uWSGI runs (x.y.z), when I(uwsgi) was given and uWSGI answered.
  returned: always
  type: str
absent_leftovers:
  description: Names of absent services that still have an ini, a socket or (with purge) a directory or user.
  returned: always
  type: list
logrotate_changed:
  description: Paths of I(logrotate) written.
  returned: always
  type: list
logrotate_pending:
  description: Services of I(logrotate) whose account does not exist yet (their files were not written).
  returned: always
  type: list
uv_present:
  description: Whether the host has uv of I(uv_version), root's alone (false without I(uv_version)).
  returned: always
  type: bool
lock_released:
  description: Whether I(release_if_idle) released the locks.
  returned: always
  type: bool
probed:
  description: False when I(lock) was blocked by another run, and nothing was probed.
  returned: always
  type: bool
lock:
  description: With I(lock), what the module C(microsvc.deploy.deploy_lock) returns for it.
  returned: when I(lock) is given
  type: dict
"""

import os
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.microsvc.deploy.plugins.module_utils import asgi, deploy_lock, units, venvs
from ansible_collections.microsvc.deploy.plugins.module_utils.fsutil import (
    group_exists,
    read_json,
    sha1_of,
    user_exists,
)
from ansible_collections.microsvc.deploy.plugins.module_utils.managed import ensure_for_accounts
from ansible_collections.microsvc.deploy.plugins.module_utils.paths import (
    HISTORY,
    INI_MARKER,
    RELEASE_MARKER,
    VENV_MARKER,
)
from ansible_collections.microsvc.deploy.plugins.module_utils.uwsgi_stats import read_many, summary

_PY_CACHE = {}


def trusted_interpreter(path):
    """Only an interpreter that root owns and nobody else may change is ever run (as root, it
    builds virtualenvs): the file and every directory above it."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
        if not os.path.isfile(real) or st.st_uid != 0 or st.st_mode & 0o022:
            return False
        parent = os.path.dirname(real)
        while True:
            pst = os.stat(parent)
            if pst.st_uid != 0 or pst.st_mode & 0o022:
                return False
            if parent == "/":
                return True
            parent = os.path.dirname(parent)
    except OSError:
        return False


# One run of the interpreter tells its version and what its virtualenv's wheels must fit: the
# implementation, the machine and the C library it is linked with (the controller resolves the
# requirements for exactly this).
PY_FACTS = ("import platform, sys; print(sys.implementation.name, '%d.%d.%d' % sys.version_info[:3], "
            "platform.machine(), *(platform.libc_ver()[:2] or ('', '')))")


def python_facts(path):
    """implementation, version, machine, libc and libc_version of a trusted interpreter, or None."""
    if not trusted_interpreter(path):
        return None
    if path not in _PY_CACHE:
        facts = None
        try:
            out = subprocess.run([path, "-c", PY_FACTS], capture_output=True, text=True, timeout=30, check=False)
            words = out.stdout.split()
            if out.returncode == 0 and len(words) in (3, 5):
                facts = dict(zip(("implementation", "version", "machine", "libc", "libc_version"), words + ["", ""]))
        except OSError:
            pass
        _PY_CACHE[path] = facts
    return _PY_CACHE[path]


def python_version(path):
    facts = python_facts(path)
    return facts["version"] if facts else None


def uwsgi_python(uwsgi):
    """The Python version uWSGI's Python plugin (or built-in Python) runs, or an empty string."""
    binary = (uwsgi or {}).get("binary")
    if not binary or not os.path.exists(binary):
        return ""
    argv = [binary] + (["--plugin", uwsgi["plugin"]] if uwsgi.get("plugin") else []) + ["--python-version"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout.strip()
    except OSError:
        return ""
    return out.splitlines()[-1] if out else ""


def probe_units(svc, owned, loaded, units_dir):
    """The reasons a service's systemd units differ from what it should have."""
    mine = owned.get(svc["name"], {})
    present = {name: sha1_of(os.path.join(units_dir, name)) for name in mine}
    spec = svc.get("units") or {}
    enabled = units.enabled_of(units_dir, svc["name"])
    mine_loaded = {u: s for u, s in loaded.items() if u.startswith(units.prefix(svc["name"]))}
    return units.needs(svc["name"], spec, present, mine_loaded, enabled)


def probe_service(svc, answer):
    root = svc["root"]
    release = svc["release"]
    state = {"name": svc["name"]}
    needs = []
    state["user"] = user_exists(svc["user"])
    if not state["user"]:
        needs.append("user missing")
    marker = read_json(os.path.join(root, "releases", release, RELEASE_MARKER))
    state["release_present"] = marker is not None
    if marker is None:
        needs.append("release %s not on host" % release)
    link = os.path.join(root, "current")
    target = os.readlink(link) if os.path.islink(link) else None
    state["current"] = os.path.basename(target) if target else None
    if state["current"] != release:
        needs.append("current is %s, wanted %s" % (state["current"] or "unset", release))
    venv_marker = read_json(os.path.join(root, "venvs", svc["venv"], VENV_MARKER))
    version = python_version(svc["python"])
    state["python_version"] = version
    state["python_facts"] = python_facts(svc["python"])
    state["venv_present"] = bool(venv_marker) and venv_marker.get("python_version") == version
    if not state["venv_present"]:
        needs.append("virtualenv %s missing" % svc["venv"])
    release_venv = os.path.join(root, "releases", release, ".venv")
    if (marker is not None and os.path.islink(release_venv)
            and os.path.basename(os.readlink(release_venv)) != svc["venv"]):
        needs.append("release linked to another virtualenv")
    live_ini = sha1_of(svc["ini_path"])
    state["ini_present"] = live_ini is not None
    state["ini_match"] = live_ini == svc["ini_sha1"]
    if not state["ini_match"]:
        needs.append("vassal ini differs" if live_ini else "vassal ini missing")
    state["env_match"] = sha1_of(svc["env_file"]) == svc["env_sha1"]
    if not state["env_match"]:
        needs.append("environment file differs")
    for sub in ("shared/log", "shared/data", "run") + (("shared/protected",) if svc.get("protected") else ()):
        if not os.path.isdir(os.path.join(root, sub)):
            needs.append("directory %s missing" % sub)
            break
    if answer is None:  # an ASGI service: its live slot's server
        slot, pid = asgi.running(svc["name"], root)
        state.update(running=slot is not None, master_pid=pid, stats_error=None)
        if slot is None and state["ini_present"]:
            needs.append("ASGI server not running")
        if slot is not None and not asgi.boots(svc["name"], svc["ini_path"], slot):
            needs.append("ASGI server's slot not enabled at boot")
        if slot is not None and state["ini_match"] and asgi.listens(svc["ini_path"]) \
                and not asgi.tcp_active(svc["name"]):
            needs.append("ASGI TCP listener not running")
    else:
        stats = summary(answer.stats)
        state["running"] = stats["running"]
        state["master_pid"] = stats.get("master_pid")
        state["stats_error"] = answer.reason
    state["needs"] = needs
    history = read_json(os.path.join(root, "releases", HISTORY)) or []
    state["history"] = history
    return state


def written_vassals(vassals_dir, marker):
    """Names of the services whose vassal ini this collection wrote (its marker line)."""
    names = []
    if not os.path.isdir(vassals_dir):
        return names
    for entry in sorted(os.listdir(vassals_dir)):
        if not entry.endswith(".ini"):
            continue
        try:
            with open(os.path.join(vassals_dir, entry), encoding="utf-8", errors="replace") as handle:
                head = handle.read(4096)
        except OSError:
            continue
        for line in head.splitlines():
            if line.startswith(marker):
                if line[len(marker):].strip():
                    names.append(line[len(marker):].strip())
                break
    return names


def idle(services, unlisted, leftovers):
    """Whether the run has nothing to do here: no service differs (web process, workers or
    schedules) and none is to be removed."""
    return not unlisted and not leftovers and not any(
        state.get("needs") or state.get("unit_needs") for state in services.values())


def take_lock(module, spec):
    """The deploy lock of ``spec`` (module_utils/deploy_lock.py), waiting up to its ``wait``."""
    try:
        return deploy_lock.acquire(spec.get("dir") or deploy_lock.DEFAULT_DIR, spec.get("services") or [],
                                   spec.get("holder") or {}, int(spec.get("lease") or 900), int(spec.get("wait") or 0),
                                   check_mode=module.check_mode)
    except (deploy_lock.LockError, OSError) as exc:
        module.fail_json(msg="deploy lock: %s" % exc)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            services=dict(type="list", elements="dict", default=[]),
            absent=dict(type="list", elements="dict", default=[]),
            listed=dict(type="list", elements="str", default=[]),
            vassals_dir=dict(type="path", required=True),
            marker=dict(type="str", default=INI_MARKER),
            uwsgi=dict(type="dict", default={}),
            units_dir=dict(type="path", default=units.UNITS_DIR),
            lock=dict(type="dict"),
            logrotate=dict(type="list", elements="dict", default=[]),
            release_if_idle=dict(type="bool", default=False),
            uv_version=dict(type="str", default=""),
            root=dict(type="path", default="/opt/www"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    extra = {}
    if p["lock"]:
        # Under the lock from the start, so that what the probe finds stays true until the run is done.
        extra["lock"] = take_lock(module, p["lock"])
        if extra["lock"]["blocked"] and not module.check_mode:
            module.exit_json(changed=False, probed=False, services={}, unlisted=[], absent_leftovers=[],
                             plugin_python="", logrotate_changed=[], logrotate_pending=[], lock_released=False,
                             uv_present=False, **extra)
    # Every stats socket at once, each as its service's user and bounded in time and size.
    # An ASGI service has no stats socket: its state comes from systemd (asgi.running).
    answers = read_many([(svc["name"], svc["stats_socket"], svc["user"], svc.get("group")) for svc in p["services"]
                         if not asgi.is_web_unit(svc["ini_path"])])
    services = {svc["name"]: probe_service(svc, answers.get(svc["name"])) for svc in p["services"]}
    owned = units.owned(p["units_dir"])
    wants_units = any((svc.get("units") or {}).get("files") for svc in p["services"])
    try:
        loaded = units.Systemd().loaded("microsvc-*") if (owned or wants_units) else {}
    except units.UnitsError as exc:
        module.fail_json(msg="cannot read the state of the services' systemd units: %s" % exc)
    for svc in p["services"]:
        services[svc["name"]]["unit_needs"] = probe_units(svc, owned, loaded, p["units_dir"])

    unlisted = [name for name in written_vassals(p["vassals_dir"], p["marker"]) + asgi.written(p["units_dir"])
                if name not in p["listed"]]
    # A service whose units remain but whose vassal is gone (a failed first deploy, a removal cut short).
    unlisted += sorted(name for name in owned if name not in p["listed"] and name not in unlisted)

    leftovers = []
    for svc in p["absent"]:
        left = os.path.exists(svc["ini_path"]) or os.path.lexists(svc["socket"]) or svc["name"] in owned
        if svc.get("purge"):
            left = left or os.path.lexists(svc["root"]) or user_exists(svc["user"]) or group_exists(svc["user"])
        if left:
            leftovers.append(svc["name"])

    # Each service's log rotation, where its account exists (logrotate switches to it: su).
    written, diffs, pending = ensure_for_accounts(module, p["logrotate"])
    if module._diff and diffs:
        extra["diff"] = diffs
    # Nothing to deploy or remove: the run is done with the locks it took in this call.
    extra["lock_released"] = False
    if p["lock"] and p["release_if_idle"] and idle(services, unlisted, leftovers) and not module.check_mode:
        try:
            deploy_lock.release(p["lock"].get("dir") or deploy_lock.DEFAULT_DIR, p["lock"]["holder"]["run"])
        except (deploy_lock.LockError, OSError) as exc:
            module.fail_json(msg="deploy lock: %s" % exc)
        extra["lock_released"] = True
    try:
        uv_present = bool(p["uv_version"]) and venvs.installed_uv(p["root"], p["uv_version"]) is not None
    except venvs.VenvError as exc:
        module.fail_json(msg="uv_version: %s" % exc)
    module.exit_json(changed=bool(written), probed=True, services=services, unlisted=unlisted,
                     absent_leftovers=leftovers, plugin_python=uwsgi_python(p["uwsgi"]), logrotate_changed=written,
                     logrotate_pending=pending, uv_present=uv_present, **extra)


if __name__ == "__main__":
    main()
