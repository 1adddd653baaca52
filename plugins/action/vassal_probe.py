# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Compute each selected service's wanted state on the controller, compare it with the host
in one remote call, and return the services that need work.

Task arguments:
  services:      plan entries of the selected present services
  absent:        plan entries of the absent services
  listed:        every name in the list
  vassals_dir:   the emperor's vassals directory
  ini_template:  template of the vassal ini (rendered with __uwsgi_vassal_svc)
  web_template:  template of an ASGI service's web unit (its counterpart of the ini)
  env_template:  template of the environment file (only its checksum leaves this plugin)
  force:         deploy every selected service even when nothing differs
  plugin_python: the uWSGI plugin's Python version (x.y.z) for the per-service check, when known
  uwsgi:         {binary, plugin} of uWSGI: the probe asks its Python version itself
  default_python: interpreter for services that name none (the platform's)
  root:          directory holding the services (for services no longer listed)
  once_here:     names of the services whose schedules and once-only workers run on this host
                 (one app host per service: the rule of microsvc.deploy.migration_hosts)
  unit_templates: templates of the systemd units: worker, timer, tick, run, slice
  protected:     whether the gateway is local (accel_redirect's shared/protected is then expected)
  logrotate_path: a service's log rotation file, with %s for its name (removed with the service)
  logrotate:     each present service's log rotation file (service, dest, template or content,
                 mode, vars), rendered here: the module writes those whose account exists; the
                 others are returned as ``logrotate_pending`` (with their content) for the deploy
  lock:          the deploy lock to take in the probe's own call (services, timeout, lease, dir,
                 purpose, as the action deploy_lock takes them); its result is ``lock``, as that
                 action returns it (plugins/plugin_utils/deploy_lock.py)
  release_if_idle: with lock, release it in the same call when nothing needs work (``lock_released``)

Returns ``work`` (list of services to deploy, each with its release, archive, venv key,
ini content, systemd units, the reasons, the interpreter's facts and ``uv_present``: whether the host
has the uv this controller installs virtualenvs with), ``remove`` (absent or unlisted services with
leftovers), ``state`` (the host's view of every probed service), and ``stats_errors`` (a warning per
service whose stats answer could not be used).
"""

from __future__ import annotations

import hashlib
import re

from ansible.errors import AnsibleActionFail
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible_collections.microsvc.deploy.plugins.module_utils import units
from ansible_collections.microsvc.deploy.plugins.module_utils.paths import ini_path, service_paths
from ansible_collections.microsvc.deploy.plugins.plugin_utils.checks import NAME_PATTERN
from ansible_collections.microsvc.deploy.plugins.plugin_utils.deploy_lock import POLL, lock_args, take, this_run
from ansible_collections.microsvc.deploy.plugins.plugin_utils.render import Renderer, file_entries
from ansible_collections.microsvc.deploy.plugins.plugin_utils.sources import release_id, venv_key
from ansible_collections.microsvc.deploy.plugins.plugin_utils.wheelhouse import UV_VERSION


def _sha1(text):
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


TEMPLATES = {"worker": "worker.service.j2", "timer": "schedule.timer.j2", "tick": "schedule.service.j2",
             "run": "schedule-run.service.j2", "slice": "slice.j2"}


def render_units(renderer, svc, once_here, templates=None):
    """The systemd units of a service: its slice, its workers (on every app host that runs it; a worker with
    ``once`` only on the one host that runs the schedules) and, on that host, of its schedules:
    {files: {name: content}, workers: [{name, template, instances, start_seconds}], timers:
    [names], log_dir}."""
    templates = dict(TEMPLATES, **(templates or {}))
    slice_ = units.slice_name(svc["name"])
    # The service's slice: its limits, shared by the vassal (moved there at its start), the
    # workers and the schedules. Every app host of the service has one.
    files = {slice_: renderer.render(templates["slice"], extra_vars={"__uwsgi_vassal_svc": svc})}
    workers, timers = [], []
    for proc in svc.get("workers") or []:
        if proc.get("once") and not once_here:
            continue
        template = units.worker_template(svc["name"], proc["name"])
        files[template] = renderer.render(templates["worker"], extra_vars={
            "__uwsgi_vassal_svc": svc, "__uwsgi_vassal_proc": proc, "__uwsgi_vassal_slice": slice_})
        workers.append(dict(name=proc["name"], template=template, start_seconds=proc["start_seconds"],
                            instances=units.worker_instances(svc["name"], proc["name"], proc["count"])))
    for proc in (svc.get("schedules") or []) if once_here else []:
        names = units.schedule_units(svc["name"], proc["name"])
        for kind in ("timer", "tick", "run"):
            files[names[kind]] = renderer.render(templates[kind], extra_vars={
                "__uwsgi_vassal_svc": svc, "__uwsgi_vassal_proc": proc, "__uwsgi_vassal_units": names,
                "__uwsgi_vassal_slice": slice_})
        timers.append(names["timer"])
    return dict(files=files, workers=workers, timers=timers, log_dir=svc["log_dir"])


def unit_digests(rendered):
    """What the probe compares with the host: each unit file's digest, the worker instances, the timers."""
    return dict(files={n: _sha1(c) for n, c in rendered["files"].items()},
                instances=[i for w in rendered["workers"] for i in w["instances"]], timers=rendered["timers"])


def python_problem(svc, state, plugin_python, default_python):
    """Why a service's interpreter cannot run under this uWSGI, or None."""
    version = state.get("python_version")
    python = svc["python"] or default_python
    if not version:
        return ("service '%s': field 'python': %s does not run on the host, or is not owned by root and "
                "closed to others" % (svc["name"], python))
    if plugin_python and version.split(".")[:2] != plugin_python.split(".")[:2]:
        return ("service '%s': field 'python': %s is Python %s but the uWSGI plugin runs Python %s; the vassal "
                "would die at start" % (svc["name"], python, version, plugin_python))
    return None


def work_entry(wanted, state, force):
    """The deploy's description of one service that differs from the host, or None."""
    reasons = list(state["needs"]) or (["forced"] if force else [])
    # Only the workers' or schedules' units differ: the deploy leaves the release, the import check
    # and the release commands alone.
    units_only = not reasons and bool(state.get("unit_needs"))
    reasons += list(state.get("unit_needs") or [])
    if not reasons:
        return None
    return dict(wanted, reasons=reasons, units_only=units_only, previous=state.get("current"), running=state.get("running"),
                ini_changed=not state.get("ini_match"), first_deploy=not state.get("ini_present"),
                venv_present=state.get("venv_present"), release_present=state.get("release_present"),
                user_present=state.get("user"), history=state.get("history"),
                python_version=state.get("python_version"), python_facts=state.get("python_facts"))


def stats_warnings(states):
    """One line per service whose stats answer could not be used (the probe's C(stats_error))."""
    return ["service '%s': its stats cannot be read, its state is unknown: %s" % (name, state["stats_error"])
            for name, state in sorted(states.items()) if state.get("stats_error")]


def removals(probed, absent, vassals_dir, root, logrotate_path="/etc/logrotate.d/microsvc-%s"):
    """Services to remove: absent ones with leftovers, and vassals of services no longer listed;
    each as the module vassal (state absent) takes it, with its sockets and its log rotation."""
    by_name = {s["name"]: s for s in absent}
    out = []
    for name in probed.get("absent_leftovers", []):
        svc = by_name[name]
        out.append(dict(name=name, purge=svc["purge"], reason="state absent", root=svc["root"], socket=svc["socket"],
                        stats_socket=svc["stats_socket"],
                        ini_path=ini_path(vassals_dir, name, svc.get("interface") or "wsgi")))
    for name in probed.get("unlisted", []):
        if re.fullmatch(NAME_PATTERN, name) and name not in by_name:
            paths = service_paths(root, name)
            out.append(dict(name=name, purge=False, reason="no longer listed", root=paths["root"],
                            socket=paths["socket"], stats_socket=paths["stats_socket"],
                            ini_path=ini_path(vassals_dir, name)))
    for entry in out:
        entry.update(remove_sockets=[entry["socket"], entry["stats_socket"]],
                     remove_files=[logrotate_path % entry["name"]])
    return out


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def wanted(self, svc, renderer, default_python, once_here):
        """The state a service should have on the host, computed on the controller: release id and
        virtualenv key (from the plan's inspected source), rendered vassal ini, environment and the
        units of its workers and schedules (``once_here``: this host runs the service's schedules)."""
        args = self._task.args
        artifact = svc.get("artifact")
        if not artifact:
            raise AnsibleActionFail("service '%s': its source was not prepared by the plan (run site.yml)"
                                    % svc["name"])
        venv = venv_key(svc["python"] or default_python, artifact["requirements"])
        svc_vars = {"__uwsgi_vassal_svc": svc, "__uwsgi_vassal_slice": units.slice_name(svc["name"])}
        # An ASGI service's counterpart of the vassal ini is its web unit (module_utils/asgi.py).
        asgi = svc.get("interface") == "asgi"
        ini = renderer.render(args["web_template"] if asgi else args["ini_template"], extra_vars=svc_vars)
        env = renderer.render(args["env_template"], extra_vars=svc_vars)
        return dict(artifact, venv=venv, release=release_id(artifact["digest"], venv), name=svc["name"],
                    python=svc["python"] or default_python, ini_path=ini_path(args["vassals_dir"], svc["name"], svc.get("interface") or "wsgi"),
                    ini_content=ini, ini_sha1=_sha1(ini), env_sha1=_sha1(env),
                    units=render_units(renderer, svc, once_here, args.get("unit_templates")))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        services = args.get("services") or []
        absent = args.get("absent") or []
        vassals_dir = args["vassals_dir"]
        renderer = Renderer(self, task_vars)
        default_python = args.get("default_python") or "/usr/bin/python3"
        once_here = set(args.get("once_here") or [])
        wanted = {svc["name"]: self.wanted(svc, renderer, default_python, svc["name"] in once_here)
                  for svc in services}
        probe_args = dict(
            vassals_dir=vassals_dir,
            uwsgi=dict(args.get("uwsgi") or {}),
            listed=list(args.get("listed") or []),
            services=[dict(name=s["name"], root=s["root"], user=s["user"], group=s["group"],
                           python=wanted[s["name"]]["python"],
                           release=wanted[s["name"]]["release"], venv=wanted[s["name"]]["venv"],
                           ini_path=wanted[s["name"]]["ini_path"], ini_sha1=wanted[s["name"]]["ini_sha1"],
                           env_file=s["env_file"], env_sha1=wanted[s["name"]]["env_sha1"],
                           stats_socket=s["stats_socket"], units=unit_digests(wanted[s["name"]]["units"]),
                           protected=bool(s.get("accel_redirect")) and boolean(args.get("protected") or False))
                      for s in services],
            absent=[dict(name=s["name"], root=s["root"], user=s["user"], socket=s["socket"], purge=s["purge"],
                         ini_path=ini_path(vassals_dir, s["name"], s.get("interface") or "wsgi")) for s in absent],
            logrotate=file_entries(self, renderer, args.get("logrotate")),
            # Whether the host has the uv the controller would send with a wheelhouse (deploy_batch).
            root=args.get("root") or "/opt/www", uv_version=UV_VERSION,
        )
        if args.get("lock"):
            lock_services, lock_dir, lease, timeout, purpose = lock_args(args["lock"])
            me = this_run(purpose)
            probe_args["lock"] = dict(services=lock_services, holder=me, dir=lock_dir, lease=lease,
                                      wait=int(min(timeout, POLL)))
            probe_args["release_if_idle"] = boolean(args.get("release_if_idle") or False)
        probed = self._execute_module(module_name="microsvc.deploy.vassal_probe", module_args=probe_args,
                                      task_vars=task_vars)
        if args.get("lock") and not probed.get("failed"):
            # Taken in the probe's call; where another run held it, waited for here, then probed again.
            result["lock"] = take(self, task_vars, me, lock_services, lock_dir, lease, timeout, first=probed["lock"])
            if not probed.get("probed", True):
                probe_args.pop("lock")
                probe_args.pop("release_if_idle")
                probed = self._execute_module(module_name="microsvc.deploy.vassal_probe", module_args=probe_args,
                                              task_vars=task_vars)
        if probed.get("failed"):
            result.update(probed)
            return result
        plugin_python = str(probed.get("plugin_python") or args.get("plugin_python") or "")
        problems = [python_problem(svc, probed["services"][svc["name"]], plugin_python, default_python)
                    for svc in services]
        problems = [p for p in problems if p]
        if problems:
            raise AnsibleActionFail("Python versions do not match; no service was changed.\n- " + "\n- ".join(problems))
        work = [work_entry(wanted[svc["name"]], probed["services"][svc["name"]], args.get("force")) for svc in services]
        work = [dict(w, uv_present=bool(probed.get("uv_present"))) for w in work if w]
        remove = removals(probed, absent, vassals_dir, args.get("root") or "/opt/www",
                          args.get("logrotate_path") or "/etc/logrotate.d/microsvc-%s")
        # A service whose stats answer cannot be used is reported, and deployed like the others when
        # it needs work (its own deploy then waits for its workers within the reload timeout).
        unknown = stats_warnings(probed["services"])
        if unknown:
            result["warnings"] = list(result.get("warnings") or []) + unknown
        pending = set(probed.get("logrotate_pending") or [])
        if probed.get("diff"):
            result["diff"] = probed["diff"]
        result.update(changed=bool(probed.get("logrotate_changed")), logrotate_changed=probed.get("logrotate_changed") or [],
                      logrotate_pending=[e for e in probe_args["logrotate"] if e["service"] in pending],
                      lock_released=bool(probed.get("lock_released")),
                      work=work, remove=remove, state=probed["services"], stats_errors=unknown,
                      msg="%d of %d services need a deploy, %d to remove" % (len(work), len(services), len(remove)))
        return result
