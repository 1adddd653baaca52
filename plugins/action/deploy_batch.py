# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Deploy every service of a host that needs work, in one remote call.

Task arguments:
  work:        the probe's work list (release, venv, ini, python version, what is present)
  services:    plan entries of the same services (paths, user, Django settings, environment)
  migrate:     names of the services whose once-per-rollout release commands (Django's migrate
               among them) run on this host
  env_template: template of the environment file (rendered here; never in the result)
  root, helper, pip (source, index_url, extra_args), timeout, concurrency, migrate_helper, lock,
  checks, validate_certs: see the module
  cache_dir:   controller cache for wheelhouses
  architecture: the host's (for wheelhouses when the probe could not tell the interpreter's machine)
  protected_group: nginx's group where the gateway is local (accel_redirect's shared/protected)
  logrotate:   the probe's logrotate_pending (log rotation of the services whose account this makes)
  vassals_dir: the emperor's vassal directory; with checks, the module also settles the services
               (its ``settle`` option is made here from the plan entries and the work's units)

The controller bundles, in one tar, the release tarballs the host lacks and the wheelhouses
of the virtualenvs it must build (wheelhouse mode), with uv's wheel where the probe found no uv of
this controller's version on the host, copies it once, and runs the module microsvc.deploy.deploy_batch.
Its result is the module's, with ``sent``: the bundle's members (``releases/<service>.tar.gz``,
``wheelhouses/<key>.tar.gz``, ``tools/<uv wheel>``).
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
import socket

from ansible.errors import AnsibleActionFail
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible_collections.microsvc.deploy.plugins.module_utils import outcome
from ansible_collections.microsvc.deploy.plugins.plugin_utils.bundle import execute_with_bundle
from ansible_collections.microsvc.deploy.plugins.plugin_utils.render import Renderer
from ansible_collections.microsvc.deploy.plugins.plugin_utils.target import TargetError, target_environment
from ansible_collections.microsvc.deploy.plugins.plugin_utils.wheelhouse import (
    UV_VERSION,
    WheelhouseError,
    build_wheelhouse,
    uv_wheel,
)


def django_collectstatic_argv(svc):
    return ["python", svc["django"]["manage"], "collectstatic", "--noinput"]


def release_commands(svc, migrate):
    """The commands a deploy of ``svc`` runs on this host before the switch, in order: Django's
    migrate (once per rollout: only where ``migrate`` names the service) and collectstatic (on
    every host), then the service's own release_commands (those with ``once`` only where
    ``migrate`` names it). Each: name, argv, timeout, step (the name a failure reports) and
    label (what the message calls it)."""
    here = svc["name"] in migrate
    out = []
    django = svc.get("django")
    if django and django.get("migrate") and here:
        # The host builds its command (microsvc-migrate: the PostgreSQL advisory lock, the plan, the
        # pre-migrate command; see django_migrate_argv in the module) from the service's django fields.
        out.append(dict(name="migrate", kind="migrate", argv=[], timeout=7200, step="migrate",
                        label="manage.py migrate"))
    if django and django.get("collectstatic"):
        out.append(dict(name="collectstatic", argv=django_collectstatic_argv(svc), timeout=1800, step="collectstatic",
                        label="manage.py collectstatic"))
    for command in svc.get("release_commands") or []:
        if command["once"] and not here:
            continue
        out.append(dict(name=command["name"], argv=list(command["argv"]), timeout=command["timeout"],
                        step="release command '%s'" % command["name"],
                        label="release command '%s' (%s)" % (command["name"], " ".join(command["argv"])[:200])))
    return out


def slice_file(work):
    """{name, content} of the service's slice among its rendered units, or None."""
    files = (work.get("units") or {}).get("files") or {}
    names = [name for name in files if name.endswith(".slice")]
    return dict(name=names[0], content=files[names[0]]) if names else None


def module_service(work, svc, migrate, protected_group=""):
    """What the module needs to deploy one service (no secrets); ``protected_group``: nginx's group
    where the gateway runs on this host (accel_redirect's protected directory), else empty."""
    django = svc.get("django")
    return dict(
        name=svc["name"], user=svc["user"], group=svc["group"], root=svc["root"], env_file=svc["env_file"],
        release=work["release"], venv=work["venv"], python=work["python"],
        python_version=work.get("python_version") or "", requirements=work.get("requirements") or "",
        ini_path=work["ini_path"], ini_content=work["ini_content"], stats_socket=svc["stats_socket"],
        reload_file=svc["reload_file"], interface=svc.get("interface") or "wsgi",
        # An ASGI server's output: its web log in shared/log, opened by microsvc-run as the service's user.
        log_file=svc["log_dir"] + "/web.log" if svc.get("interface") == "asgi" else svc["uwsgi_log"],
        remove_sockets=[svc["stats_socket"], svc["socket"]],
        keep_releases=svc["keep_releases"], first_deploy=bool(work.get("first_deploy")),
        marker={"service": svc["name"], "source": work.get("source"), "revision": work.get("revision")},
        check={"module": svc.get("module") or "", "wsgi_file": svc.get("wsgi_file") or ""},
        django=None if not django else {
            "manage": django["manage"], "migrate": bool(django["migrate"]) and svc["name"] in migrate,
            "collectstatic": bool(django["collectstatic"]), "pre_migrate": list(django.get("pre_migrate") or []),
            "pre_migrate_timeout": django.get("pre_migrate_timeout")},
        release_commands=[] if work.get("units_only") else release_commands(svc, migrate),
        units_only=bool(work.get("units_only")),
        # The service's slice, written before its vassal first starts (the vassal moves into it).
        slice=slice_file(work),
        attach="\nhook-as-root = " in work["ini_content"],
        protected_group=(protected_group or None) if svc.get("accel_redirect") else None,
        archive_member=None if work.get("release_present") else "releases/%s.tar.gz" % svc["name"],
        wheelhouse_member=None,
    )


def wheelhouse_facts(entry, architecture=""):
    """The probe's facts about the service's interpreter (implementation, version, machine, C
    library), the host's architecture standing in for a machine the probe did not report."""
    facts = dict(entry.get("python_facts") or {})
    facts.setdefault("version", entry.get("python_version") or "")
    if not facts.get("machine"):
        facts["machine"] = architecture or ""
    return facts


def add_uv(pip, files, entry, architecture, cache_dir):
    """Have the host install virtualenvs with uv: where the probe found this controller's uv there
    (``entry['uv_present']``), ``pip['uv_installed']``; else uv's wheel for the host in the bundle
    (``pip['uv_member']``). Where it cannot be had, ``pip['uv_member']`` is None and the host uses
    pip (``pip['uv_problem']`` says why)."""
    pip["uv_member"] = None
    if entry.get("uv_present"):
        # Root's alone on the host: its wheel (18 MB) is not sent again.
        pip.update(uv_version=UV_VERSION, uv_installed=True)
        return
    facts = wheelhouse_facts(entry, architecture)
    try:
        target = target_environment(facts)
        wheel = uv_wheel(target, cache_dir, pip.get("index_url") or "")
    except (TargetError, WheelhouseError) as exc:
        pip["uv_problem"] = str(exc)[-500:]
        return
    member = "tools/%s" % wheel.rsplit("/", 1)[-1]
    files[member] = wheel
    pip.update(uv_member=member, uv_version=UV_VERSION)


def deployed_by():
    """Who deploys, for the service's deploy log (playbooks/releases.yml shows it): the operator's
    account and the controller's host name."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "uid%d" % os.getuid()
    name = "%s@%s" % (user, socket.gethostname())
    return re.sub(r"[^A-Za-z0-9_.@+-]", "?", name)[:120]


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        work = args.get("work") or []
        plan = {svc["name"]: svc for svc in args.get("services") or []}
        migrate = set(args.get("migrate") or [])
        pip = dict(args.get("pip") or {})
        if isinstance(pip.get("extra_args"), str):
            pip["extra_args"] = shlex.split(pip["extra_args"])
        renderer = Renderer(self, task_vars)
        services, env, files, settle = [], {}, {}, []
        deployer = deployed_by()
        for entry in work:
            svc = plan.get(entry["name"])
            if svc is None:
                raise AnsibleActionFail("service %r of the work list is not in the plan" % entry["name"])
            item = module_service(entry, svc, migrate, args.get("protected_group") or "")
            item["deployed_by"] = deployer
            if item["archive_member"]:
                files[item["archive_member"]] = entry["archive"]
            if pip.get("source") == "wheelhouse" and item["requirements"].strip() and not entry.get("venv_present"):
                member = "wheelhouses/%s.tar.gz" % entry["venv"]
                if member not in files:
                    try:
                        target = target_environment(wheelhouse_facts(entry, args.get("architecture")))
                        files[member] = build_wheelhouse(item["requirements"], target, args.get("cache_dir"),
                                                         pip.get("index_url") or "")
                    except (TargetError, WheelhouseError) as exc:
                        item["wheelhouse_error"] = str(exc)
                item["wheelhouse_member"] = member if member in files else None
            if item["wheelhouse_member"] and "uv_member" not in pip:
                add_uv(pip, files, entry, args.get("architecture"), args.get("cache_dir"))
            services.append(item)
            if args.get("checks"):
                settle.append(dict(outcome.vassal_fields(svc, args.get("vassals_dir") or "/etc/uwsgi/vassals"),
                                   units=entry.get("units")))
            env[svc["name"]] = renderer.render(args["env_template"], extra_vars={"__uwsgi_vassal_svc": svc})

        module_args = dict(services=services, env=env, root=args["root"], helper=args.get("helper"),
                           pip=pip, timeout=int(args.get("timeout") or 90), concurrency=int(args.get("concurrency") or 0),
                           migrate_helper=args.get("migrate_helper"), lock=args.get("lock") or None,
                           checks=list(args.get("checks") or []) or None, settle=settle or None,
                           logrotate=list(args.get("logrotate") or []) or None,
                           validate_certs=boolean(args.get("validate_certs") or False))
        module_args = {k: v for k, v in module_args.items() if v is not None}
        result.update(execute_with_bundle(self, files, "microsvc.deploy.deploy_batch", module_args, task_vars))
        result["sent"] = sorted(files)
        return result
