# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""A service's workers and schedules as systemd units on a host (used by vassal_probe,
deploy_outcome, vassal and vassal_status).

The unit files are rendered on the controller (roles/uwsgi_vassal/templates) and carry two
marker lines: ``# microsvc-service: <service>`` (whose they are: removal is a set difference
over the files with a marker) and ``# microsvc-unit: <kind> <name> [key=value ...]`` (what they
are, so that a rollback or the status needs nothing from the controller). Names:

    microsvc-<service>.worker-<worker>@.service    a worker, one instance (@1, @2, ...) per process
    microsvc-<service>.schedule-<name>.timer       a schedule's timer ...
    microsvc-<service>.schedule-<name>.service     ... which starts this "tick": start a run, or skip and log
    microsvc-<service>.run-<name>.service          one run of the schedule
    microsvc-<service>.slice                       the limits of all of the service's processes
                                                   ('-' in <service> escaped as systemd does: \\x2d)

Service and entry names are [a-z][a-z0-9_-]*, so the '.' after the service's name ends it.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import os
import re
import subprocess
import time

from ansible_collections.microsvc.deploy.plugins.module_utils import fsutil
from ansible_collections.microsvc.deploy.plugins.module_utils.atomic import write_atomic

# The sandbox every unit of the collection starts from (systemd.exec(5)), written once: the
# templates of every role take it from the lookup microsvc.deploy.systemd_sandbox, the
# virtualenv builds' transient units from here (venvs.py). Each unit adds only what is its
# own: capabilities, writable paths, address families, hidden paths, system call filters.
SANDBOX = (
    "NoNewPrivileges=true",
    "ProtectSystem=strict",
    "ProtectHome=true",
    "PrivateTmp=true",
    "PrivateDevices=true",
    "ProtectKernelTunables=true",
    "ProtectKernelModules=true",
    "ProtectKernelLogs=true",
    "ProtectControlGroups=true",
    "ProtectClock=true",
    "ProtectHostname=true",
    "RestrictSUIDSGID=true",
    "RestrictRealtime=true",
    "RestrictNamespaces=true",
    "LockPersonality=true",
    "SystemCallArchitectures=native",
)
UNITS_DIR = "/etc/systemd/system"
SERVICE_MARKER = "# microsvc-service: "
UNIT_MARKER = "# microsvc-unit: "
WANTS = {"service": "multi-user.target.wants", "timer": "timers.target.wants"}
# A unit in one of these states runs (or systemd is about to run it again): no start needed.
RUNNING = ("active", "activating", "reloading")
NAME = r"[a-z][a-z0-9_-]{0,31}"


class UnitsError(Exception):
    """A step of the units failed; ``step`` names it for the report (e.g. "worker 'default'")."""

    def __init__(self, step, msg):
        super().__init__(msg)
        self.step = step


# --- names ---------------------------------------------------------------------------------------

def worker_template(service, worker):
    return "microsvc-%s.worker-%s@.service" % (service, worker)


def worker_instances(service, worker, count):
    return ["microsvc-%s.worker-%s@%d.service" % (service, worker, index) for index in range(1, int(count) + 1)]


def schedule_units(service, name):
    return {"timer": "microsvc-%s.schedule-%s.timer" % (service, name),
            "tick": "microsvc-%s.schedule-%s.service" % (service, name),
            "run": "microsvc-%s.run-%s.service" % (service, name)}


def slice_name(service):
    """The service's slice. A '-' in a slice's name means nesting (a-b.slice is inside a.slice), so
    it is escaped as systemd-escape does: service 'a-b' gets its own slice, not one in a's."""
    return "microsvc-%s.slice" % service.replace("-", "\\x2d")


def prefix(service):
    return "microsvc-%s." % service


def parse_unit(service, unit):
    """(kind, name, instance) of one of a service's unit names, or None."""
    match = re.fullmatch(r"%s(worker|schedule|run)-(%s)(?:@([0-9]{1,3}))?\.(service|timer)"
                         % (re.escape(prefix(service)), NAME), unit)
    if not match:
        return None
    kind, name, instance, suffix = match.groups()
    if kind == "schedule":
        kind = "timer" if suffix == "timer" else "tick"
    return kind, name, int(instance) if instance else None


# --- what is on the host -------------------------------------------------------------------------

def _head(path, size=4096):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read(size).decode("utf-8", "replace")


def read_marker(text):
    """(service, meta) of a unit file's text; meta is kind, name and key=value fields."""
    service, meta = None, {}
    for line in (text or "").splitlines()[:12]:
        if line.startswith(SERVICE_MARKER):
            service = line[len(SERVICE_MARKER):].strip()
        elif line.startswith(UNIT_MARKER):
            words = line[len(UNIT_MARKER):].split()
            if len(words) >= 2:
                meta = {"kind": words[0], "name": words[1]}
                for word in words[2:]:
                    key, _sep, value = word.partition("=")
                    meta[key] = int(value) if value.isdigit() else value
    return service, meta


def owned(units_dir=UNITS_DIR):
    """{service: {file name: meta}} of the unit files this collection wrote."""
    out = {}
    try:
        entries = sorted(os.listdir(units_dir))
    except OSError:
        return out
    for entry in entries:
        if not entry.startswith("microsvc-") or not entry.endswith((".service", ".timer", ".slice")):
            continue
        service, meta = read_marker(_head(os.path.join(units_dir, entry)))
        if service and re.fullmatch(NAME, service) and entry.startswith(prefix(service)):
            out.setdefault(service, {})[entry] = meta
    return out


def enabled(units_dir, unit):
    kind = "timer" if unit.endswith(".timer") else "service"
    return os.path.lexists(os.path.join(units_dir, WANTS[kind], unit))


def enabled_of(units_dir, service):
    """The service's units that are enabled (instances of workers, timers)."""
    out = set()
    for wants in WANTS.values():
        try:
            entries = os.listdir(os.path.join(units_dir, wants))
        except OSError:
            continue
        out.update(e for e in entries if e.startswith(prefix(service)) and parse_unit(service, e))
    return out


def write_missing(name, content, units_dir=UNITS_DIR):
    """Write a unit file that does not exist yet (a new service's slice, before its vassal starts);
    True when written. The caller reloads systemd. A present file is left to apply()."""
    if not re.fullmatch(r"microsvc-[a-z0-9_\\-]{1,160}\.slice", name) or read_marker(content)[0] is None:
        raise UnitsError("limits", "refused unit file name %r" % name)
    path = os.path.join(units_dir, name)
    if os.path.lexists(path):
        return False
    write_atomic(path, content, 0o644)
    return True


def _children():
    """{ppid: [pid]} of every process now."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, encoding="utf-8", errors="replace") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out.setdefault(ppid, []).append(int(entry))
    return out


def descendants(pid):
    tree, out, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def in_slice(pid, service):
    """Whether process ``pid`` runs in the service's slice (systemd's own hierarchy, v1 or v2)."""
    try:
        with open("/proc/%d/cgroup" % int(pid), encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return False
    return "/%s/" % slice_name(service) in text


def adopt(service, master, timeout=10):
    """Move a running vassal (its master and every process under it) into a scope in the service's
    slice, as microsvc-attach does at a vassal's start: for a vassal that started before it had
    limits (a reload keeps the process, and runs no hook as root). Returns the scope, or None when
    the master is already in the slice."""
    master = int(master)
    if in_slice(master, service):
        return None
    escaped = slice_name(service)[len("microsvc-"):-len(".slice")]
    scope = "microsvc-%s.web-%d.scope" % (escaped, master)
    pids = [master] + descendants(master)
    argv = ["busctl", "call", "--timeout=10", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager", "StartTransientUnit", "ssa(sv)a(sa(sv))", scope, "fail", "5",
            "PIDs", "au", str(len(pids))]
    argv += [str(p) for p in pids]
    argv += ["Slice", "s", slice_name(service), "Description", "s", "microsvc %s: uWSGI vassal (web)" % service,
             "CollectMode", "s", "inactive-or-failed", "OOMPolicy", "s", "continue", "0"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout + 10)
    if proc.returncode != 0:
        raise UnitsError("limits", "service '%s': systemd refused the scope %s: %s"
                         % (service, scope, (proc.stderr or proc.stdout).strip()[-500:]))
    deadline = time.time() + timeout
    while not in_slice(master, service):
        if time.time() > deadline:
            raise UnitsError("limits", "service '%s': its vassal (pid %d) did not move into %s"
                             % (service, master, slice_name(service)))
        time.sleep(0.1)
    # A worker forked meanwhile (a respawn) is in the emperor's cgroup still: attach it too.
    late = [p for p in descendants(master) if not in_slice(p, service)]
    if late:
        subprocess.run(["busctl", "call", "--timeout=10", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                        "org.freedesktop.systemd1.Manager", "AttachProcessesToUnit", "ssau", scope, "/",
                        str(len(late))] + [str(p) for p in late], capture_output=True, check=False, timeout=20)
    return scope


def read_files(units_dir, names):
    return {name: fsutil.read_text(os.path.join(units_dir, name)) for name in names}


class Systemd:
    """systemctl, one call for many units."""

    def __init__(self, timeout=600):
        self.timeout = timeout

    def run(self, args, check=True, timeout=None):
        try:
            proc = subprocess.run(["systemctl"] + list(args), capture_output=True, text=True, check=False,
                                  timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired:
            raise UnitsError("systemd", "systemctl %s did not finish within %ds" % (" ".join(args[:3]),
                                                                                    timeout or self.timeout)) from None
        except OSError as exc:
            raise UnitsError("systemd", "systemctl cannot run: %s" % exc) from None
        if check and proc.returncode != 0:
            raise UnitsError("systemd", "systemctl %s failed: %s" % (" ".join(args[:6]),
                                                                     (proc.stderr or proc.stdout).strip()[-1500:]))
        return proc

    def daemon_reload(self):
        self.run(["daemon-reload"])

    def show(self, units, props):
        """{unit: {prop: value}}, in one call; timestamps as @<unix seconds>."""
        units = list(units)
        if not units:
            return {}
        proc = self.run(["show", "--timestamp=unix", "-p", ",".join(props), "--"] + units, check=False)
        blocks = proc.stdout.split("\n\n")
        out = {}
        for unit, block in zip(units, blocks):
            values = {}
            for line in block.splitlines():
                key, _sep, value = line.partition("=")
                values[key] = value
            out[unit] = values
        return out

    def loaded(self, pattern):
        """{unit: (active state, sub state)} of the loaded units matching a glob."""
        proc = self.run(["list-units", "--all", "--plain", "--no-legend", "--no-pager", "--full", "--", pattern],
                        check=False)
        out = {}
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 4 and fnmatch.fnmatchcase(parts[0], pattern):
                out[parts[0]] = (parts[2], parts[3])
        return out

    def timers(self, units):
        """{timer: {next, last}} (unix seconds or None) of the given timers."""
        units = list(units)
        if not units:
            return {}
        proc = self.run(["list-timers", "--all", "--output=json", "--no-pager", "--"] + units, check=False)
        try:
            rows = json.loads(proc.stdout or "[]")
        except ValueError:
            return {}
        out = {}
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict) and row.get("unit") in units:
                out[row["unit"]] = {k: (row[k] / 1e6 if isinstance(row.get(k), (int, float)) and row[k] else None)
                                    for k in ("next", "last")}
        return out


def stamp(value):
    """Unix seconds of a `systemctl show --timestamp=unix` value (``@1700000000``), or None."""
    match = re.fullmatch(r"@([0-9]+)", (value or "").strip())
    return int(match.group(1)) if match else None


# --- what a deploy changes -------------------------------------------------------------------------

def decide(service, spec, present, loaded, enabled_units, restart_all=False):
    """The changes that make a service's units what ``spec`` says, without doing any.

    spec:      files {name: content}, workers [{name, instances, start_seconds}], timers [names]
    present:   {name: content} of the service's unit files on the host
    loaded:    {unit: (active, sub)} of its loaded units
    enabled_units: its enabled units
    restart_all: the release or the environment changed, so every worker process restarts

    Returns write, remove (file names), stop (units stopped and disabled), enable, restart,
    start (units), check ([unit, worker, seconds]: started processes that must stay up)."""
    files = spec.get("files") or {}
    write = sorted(n for n, content in files.items() if present.get(n) != content)
    remove = sorted(n for n in present if n not in files)
    wanted_instances, timers = set(), set(spec.get("timers") or [])
    for worker in spec.get("workers") or []:
        wanted_instances.update(worker["instances"])
    wanted_schedules = {parse_unit(service, t)[1] for t in timers if parse_unit(service, t)}
    stop = set()
    for unit in set(loaded) | set(enabled_units):
        parsed = parse_unit(service, unit)
        if parsed is None:
            continue
        kind, name, instance = parsed
        gone_worker = kind == "worker" and instance is not None and unit not in wanted_instances
        gone_schedule = kind in ("timer", "tick", "run") and name not in wanted_schedules
        if gone_worker or gone_schedule:
            stop.add(unit)
    enable, restart, start, check = [], [], [], []
    for worker in spec.get("workers") or []:
        changed = restart_all or worker["template"] in write
        for unit in worker["instances"]:
            if unit not in enabled_units:
                enable.append(unit)
            state = (loaded.get(unit) or ("inactive", "dead"))[0]
            if changed:
                restart.append(unit)
            elif state not in RUNNING:
                start.append(unit)
            else:
                continue
            check.append([unit, worker["name"], int(worker.get("start_seconds") or 3)])
    for timer in sorted(timers):
        if timer not in enabled_units:
            enable.append(timer)
        state = (loaded.get(timer) or ("inactive", "dead"))[0]
        if timer in write:
            restart.append(timer)
        elif state not in RUNNING:
            start.append(timer)
    return dict(write=write, remove=remove, stop=sorted(stop), enable=enable, restart=restart, start=start,
                check=check)


def needs(service, spec_sha1, present_sha1, loaded, enabled_units):
    """The probe's reasons to deploy a service for its units (none when they are what the
    list says and running). spec_sha1: files {name: sha1}, instances, timers."""
    out = []
    files = spec_sha1.get("files") or {}
    for name, sha in sorted(files.items()):
        if present_sha1.get(name) != sha:
            out.append("unit %s %s" % (name, "differs" if present_sha1.get(name) else "missing"))
    for name in sorted(present_sha1):
        if name not in files:
            out.append("unit %s no longer wanted" % name)
    wanted = set(spec_sha1.get("instances") or []) | set(spec_sha1.get("timers") or [])
    for unit in sorted(wanted):
        if unit not in enabled_units or (loaded.get(unit) or ("inactive",))[0] not in RUNNING:
            out.append("%s not running" % unit)
    for unit in sorted((set(loaded) | set(enabled_units)) - wanted):
        parsed = parse_unit(service, unit)
        if parsed and parsed[0] in ("worker", "timer") and (unit in enabled_units or loaded[unit][0] in RUNNING):
            out.append("%s no longer wanted" % unit)
    return out


def wait_started(systemd, check, log_dir=None, poll=0.5):
    """Every process in ``check`` ([unit, worker, seconds]) must be active, with the main pid it
    had right after its start and no automatic restart, for its seconds. Returns {unit: pid};
    raises UnitsError naming the worker."""
    if not check:
        return {}
    props = ["ActiveState", "SubState", "MainPID", "NRestarts", "Result", "ExecMainStatus"]
    units = [unit for unit, _w, _s in check]
    started = time.time()
    longest = max(seconds for _u, _w, seconds in check)
    first = states = systemd.show(units, props)
    while True:
        for unit, worker, seconds in check:
            now, base = states.get(unit, {}), first.get(unit, {})
            restarted = now.get("NRestarts", "0") != base.get("NRestarts", "0") or \
                now.get("MainPID") not in (base.get("MainPID"), "0", "", None)
            if now.get("ActiveState") == "active" and now.get("MainPID") == base.get("MainPID") \
                    and base.get("MainPID") not in (None, "", "0") and not restarted:
                continue
            if restarted:
                what = "died and was restarted"
            elif now.get("Result") == "exit-code":
                what = "exited with status %s" % now.get("ExecMainStatus")
            else:
                what = "is %s (%s)" % (now.get("ActiveState"), now.get("SubState"))
            log = os.path.join(log_dir, "worker-%s.log" % worker) if log_dir else ""
            raise UnitsError("worker '%s'" % worker,
                             "worker '%s' did not stay up for %ds after its start: %s %s. End of %s:\n%s"
                             % (worker, seconds, unit, what, log or "its log", fsutil.tail(log, 25) if log else ""))
        if time.time() - started >= longest:
            return {unit: states[unit].get("MainPID") for unit in units}
        time.sleep(poll)
        states = systemd.show(units, props)


def stop_units(service, systemd, names, check=True):
    """Stop (and disable) some of a service's units: timers and their checks first, so that none
    can start a run meanwhile, then the runs and the workers. A run stopped half-way is "failed";
    reset, so that it does not linger in listings once its file is gone."""
    first = [u for u in names if (parse_unit(service, u) or ("",))[0] in ("timer", "tick")]
    rest = [u for u in names if u not in first]
    for batch in (first, rest):
        if batch:
            systemd.run(["disable", "--now", "--"] + batch, check=check)
            systemd.run(["reset-failed", "--"] + batch, check=False)


def apply(service, spec, restart_all=False, units_dir=UNITS_DIR, systemd=None, log_dir=None):
    """Make a service's units what ``spec`` says and wait for the workers that (re)started.

    Returns (result, undo): result lists what was done; undo is what restore() needs to put the
    previous units back. Raises UnitsError (with ``undo`` set on it) when a step or a worker fails."""
    systemd = systemd or Systemd()
    mine = owned(units_dir).get(service, {})
    enabled_units = enabled_of(units_dir, service)
    if not mine and not enabled_units and not spec.get("files"):
        empty = dict(write=[], remove=[], stop=[], enable=[], restart=[], start=[], check=[], changed=False, pids={})
        return empty, dict(files={}, running=[], enabled=[])
    present = read_files(units_dir, mine)
    loaded = systemd.loaded(prefix(service) + "*")
    plan = decide(service, spec, present, loaded, enabled_units, restart_all)
    undo = dict(files={n: present.get(n) for n in set(plan["write"]) | set(plan["remove"])},
                running=sorted(u for u, (state, _sub) in loaded.items() if state in RUNNING and parse_unit(service, u)
                               and parse_unit(service, u)[0] in ("worker", "timer")),
                enabled=sorted(enabled_units))
    result = dict(plan, changed=any(plan[k] for k in ("write", "remove", "stop", "enable", "restart", "start")))
    try:
        if plan["stop"]:
            stop_units(service, systemd, plan["stop"])
        for name in plan["remove"]:
            os.unlink(os.path.join(units_dir, name))
        for name in plan["write"]:
            write_atomic(os.path.join(units_dir, name), spec["files"][name], 0o644)
        if plan["write"] or plan["remove"]:
            systemd.daemon_reload()
        if plan["enable"]:
            systemd.run(["enable", "--"] + plan["enable"])
        if plan["restart"]:
            systemd.run(["restart", "--"] + plan["restart"], check=False)
        if plan["start"]:
            systemd.run(["start", "--"] + plan["start"], check=False)
        result["pids"] = wait_started(systemd, plan["check"], log_dir)
    except UnitsError as exc:
        exc.undo = undo
        raise
    except OSError as exc:
        error = UnitsError("units", "writing the units of service '%s' failed: %s" % (service, exc))
        error.undo = undo
        raise error from None
    return result, undo


def restore(service, undo, units_dir=UNITS_DIR, systemd=None):
    """Put back the units apply() changed and start what ran before, on the release that is
    current now (the caller put the previous one back first). Returns the units started."""
    systemd = systemd or Systemd()
    loaded = systemd.loaded(prefix(service) + "*")
    current = {u for u, (state, _s) in loaded.items() if state in RUNNING} | enabled_of(units_dir, service)
    extra = sorted(u for u in current if parse_unit(service, u) and u not in undo["running"]
                   and u not in undo["enabled"])
    if extra:
        stop_units(service, systemd, extra, check=False)
    for name, content in sorted(undo["files"].items()):
        path = os.path.join(units_dir, name)
        if content is None:
            if os.path.lexists(path):
                os.unlink(path)
        else:
            write_atomic(path, content, 0o644)
    if undo["files"]:
        systemd.daemon_reload()
    if undo["enabled"]:
        systemd.run(["enable", "--"] + undo["enabled"], check=False)
    if undo["running"]:
        systemd.run(["restart", "--"] + undo["running"], check=False)
    return undo["running"]


def workers_of(service, units_dir=UNITS_DIR, systemd=None):
    """[unit, worker, start seconds] of every worker process of a service that is enabled or running."""
    systemd = systemd or Systemd()
    meta = owned(units_dir).get(service, {})
    seconds = {m.get("name"): int(m.get("start_seconds") or 3) for m in meta.values() if m.get("kind") == "worker"}
    loaded = systemd.loaded(prefix(service) + "worker-*")
    units = {u for u, (state, _s) in loaded.items() if state in RUNNING} | enabled_of(units_dir, service)
    out = []
    for unit in sorted(units):
        parsed = parse_unit(service, unit)
        if parsed and parsed[0] == "worker" and parsed[2] is not None and parsed[1] in seconds:
            out.append([unit, parsed[1], seconds[parsed[1]]])
    return out


def restart_workers(service, units_dir=UNITS_DIR, systemd=None, log_dir=None):
    """Restart every worker process of a service (after a rollback moved ``current``) and wait
    until they stay up. Returns the units restarted."""
    systemd = systemd or Systemd()
    check = workers_of(service, units_dir, systemd)
    if check:
        systemd.run(["restart", "--"] + [unit for unit, _w, _s in check], check=False)
        wait_started(systemd, check, log_dir)
    return [unit for unit, _w, _s in check]


def remove_all(service, units_dir=UNITS_DIR, systemd=None, check_mode=False):
    """Stop every unit of a service and remove its files. Returns the file names removed."""
    systemd = systemd or Systemd()
    files = sorted(owned(units_dir).get(service, {}))
    loaded = systemd.loaded(prefix(service) + "*")
    units = sorted(u for u in set(loaded) | enabled_of(units_dir, service) if parse_unit(service, u))
    if check_mode or not (files or units):
        return files
    if units:
        stop_units(service, systemd, units, check=False)
    for name in files:
        os.unlink(os.path.join(units_dir, name))
    if files:
        systemd.daemon_reload()
    # A schedule's check that its timer had queued just before it stopped can still start and
    # fail (its files are gone): stop what is still loaded and forget failed states, so that no
    # unit of the service lingers in listings.
    late = sorted(u for u in systemd.loaded(prefix(service) + "*") if parse_unit(service, u))
    if late:
        systemd.run(["stop", "--"] + late, check=False)
    systemd.run(["reset-failed", "--", prefix(service) + "*"], check=False)
    # A slice stays loaded and active without its file until it is stopped (what still runs in
    # it, a vassal stopped a moment ago included, goes with it).
    systemd.run(["stop", "--", slice_name(service)], check=False)
    return files


def _unix(text):
    try:
        moment = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return None
    return (moment - datetime.datetime(1970, 1, 1)).total_seconds()  # naive UTC; hosts may run Python 3.9


def last_run(runs_log):
    """(start, result) of a schedule's last run, from its runs.log (written by microsvc-run as
    the service's user: only its times and exit statuses are read, never through a symlink).
    result is ok, exit N, signal NAME, or running (a start without an end)."""
    started, result = None, "never ran"
    for line in fsutil.tail(runs_log, 200).splitlines():
        words = line.split()
        if len(words) < 2:
            continue
        fields = dict(w.partition("=")[::2] for w in words[2:] if "=" in w)
        if words[1] == "started" and _unix(words[0]):
            started, result, log = _unix(words[0]), "running", fields.get("log")
        elif words[1] == "finished" and started and fields.get("log") == log:
            if fields.get("exit") == "0":
                result = "ok"
            elif re.fullmatch(r"[0-9]{1,3}", fields.get("exit", "")):
                result = "exit %s" % fields["exit"]
            elif re.fullmatch(r"SIG[A-Z0-9]{1,10}", fields.get("signal", "")):
                result = "killed by %s" % fields["signal"]
            else:
                result = "unknown"
    return started, result


def status(service, units_dir=UNITS_DIR, systemd=None, now=None, log_dir=None):
    """Workers (state, pid, uptime, restarts per process) and schedules (last run, result, next
    run) of a service, as the host has them."""
    systemd = systemd or Systemd()
    now = now or time.time()
    meta = owned(units_dir).get(service, {})
    loaded = systemd.loaded(prefix(service) + "*")
    enabled_units = enabled_of(units_dir, service)
    workers, schedules = [], []
    instances = sorted((u for u in set(loaded) | enabled_units
                        if (parse_unit(service, u) or ("",))[0] == "worker" and parse_unit(service, u)[2]),
                       key=lambda u: (parse_unit(service, u)[1], parse_unit(service, u)[2]))
    shown = systemd.show(instances, ["ActiveState", "SubState", "MainPID", "NRestarts", "ExecMainStartTimestamp"])
    for unit in instances:
        _kind, name, index = parse_unit(service, unit)
        st = shown.get(unit, {})
        started = stamp(st.get("ExecMainStartTimestamp"))
        pid = int(st.get("MainPID") or 0)
        workers.append(dict(worker=name, instance=index, unit=unit, state=st.get("ActiveState") or "unknown",
                            sub=st.get("SubState") or "", pid=pid or None,
                            uptime_s=int(now - started) if started and pid else None,
                            restarts=int(st.get("NRestarts") or 0)))
    timers = sorted(n for n, m in meta.items() if m.get("kind") == "schedule")
    timer_times = systemd.timers(timers)
    runs = {t: schedule_units(service, meta[t]["name"])["run"] for t in timers}
    run_states = systemd.show(runs.values(), ["ActiveState"])
    for timer in timers:
        name = meta[timer]["name"]
        started, result = last_run(os.path.join(log_dir, "schedules", name, "runs.log")) if log_dir else (None, "")
        if (run_states.get(runs[timer]) or {}).get("ActiveState") in ("active", "activating"):
            result = "running"
        elif result == "running":
            result = "did not finish"  # its run unit is gone without an end line (killed hard)
        schedules.append(dict(schedule=name, timer=timer, active=(loaded.get(timer) or ("inactive",))[0] == "active",
                              last_run=started, result=result, next_run=(timer_times.get(timer) or {}).get("next")))
    return dict(workers=workers, schedules=schedules)
