#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Deploy every service of a host that needs work, as one batch: one call for all of them."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deploy_batch
short_description: Deploy many services of a host in one call, each isolated from the others
description:
  - For each service given, in steps that each run for all services before the next begins, the
    account and directory layout; release unpacked (from the bundle the action plugin copied);
    virtualenv (built once per interpreter and requirements, by an unprivileged build uid of the
    service's own in a sandboxed transient unit, then copied to the service); environment file
    written (the previous one kept); the application imported from the new release as the
    service's user; the release commands (Django's migrate, where this host runs it, through
    C(microsvc-migrate) under the service's PostgreSQL advisory lock, and collectstatic among
    them), in order, as the service's user; then
    C(current) switched and the vassal started or reloaded, and the call waits for its new workers.
  - The slow independent parts (virtualenv builds, imports, release commands, reload waits) run
    concurrently, bounded by I(concurrency) (default the host's CPU count); vassal starts and
    reloads by four times as many, since they mostly wait (see I(concurrency)).
  - A service whose step fails is returned to its previous state alone (its environment file put
    back; after a switch, its previous release and environment reloaded) and reported in
    C(results) with the step and the reason; the others go on. The module itself fails only when
    its input is wrong.
  - The health check through the gateway (module C(microsvc.deploy.health_check)) and the
    settling or rolling back that follows (C(microsvc.deploy.deploy_outcome)) are the next calls.
    Where the gateway is this host, I(checks) makes the health check of the services that went live
    part of this call (the same checks, through the same gateway), one remote call fewer.
  - The action plugin of the same name copies the release tarballs and wheelhouses the host lacks,
    as one bundle, and sets I(bundle).
version_added: 0.2.0
options:
  services:
    description:
      - The services to deploy, as the probe described them (C(name), C(user), C(group), C(root),
        C(release), C(venv), C(python), C(python_version), C(requirements), C(ini_path),
        C(ini_content), C(stats_socket), C(reload_file), C(log_file), C(keep_releases), C(marker),
        C(check), C(release_commands) (each C(name), C(argv), C(timeout), C(step), C(label)),
        C(units_only) (only its workers' or schedules' units differ, so no import check and no release commands),
        C(slice) (C(name), C(content) of the service's systemd slice, written before the switch when missing),
        C(attach) (its vassal moves into that slice; one that runs outside it is moved after the switch),
        C(archive_member), C(wheelhouse_member)).
    type: list
    elements: dict
    required: true
  env:
    description: Each service's environment file content (secrets included; never logged).
    type: dict
    default: {}
  bundle:
    description: Path on the host of the tar holding the release tarballs and wheelhouses (a large one).
    type: path
  bundle_data:
    description:
      - The same tar, base64-encoded, sent inside the arguments (a small one); written to the call's private
        temporary directory. Never logged.
    type: str
  root:
    description: Directory holding the services (C(microsvc_root)).
    type: path
    required: true
  helper:
    description: The C(microsvc-run) helper that runs a command as a service runs.
    type: path
    default: /usr/local/sbin/microsvc-run
  pip:
    description:
      - C(source) (index or wheelhouse), C(index_url), C(extra_args) (a list of pip options).
      - C(uv_member) and C(uv_version) - the bundle member holding the wheel of uv for this host and its version;
        virtualenvs are installed with uv then (pip where it is missing or C(extra_args) are given).
      - C(uv_installed) (with C(uv_version) and no C(uv_member)) - the probe found that uv on the host; it is
        used where it still is root's alone, else pip installs (the result's C(installer_note) says why).
    type: dict
    default: {}
  timeout:
    description: Seconds to wait for a vassal's workers after a start or reload.
    type: int
    default: 90
  concurrency:
    description:
      - Parallel slow steps; 0 means the host's CPU count.
      - Vassal starts and reloads (the switch step) run four times as many at once. Each mostly
        waits for uWSGI, which acts on a change once per second (the emperor's scan for a new
        ini, a master's check of its chain-reload file), and a chain reload imports the app in one
        worker at a time, so four per CPU keep the CPUs busy without piling imports up.
    type: int
    default: 0
  migrate_helper:
    description:
      - The C(microsvc-migrate) helper that runs Django's migrate under a PostgreSQL advisory lock keyed by the
        service, after its plan and the service's pre-migrate command (see C(roles/uwsgi_emperor/files/microsvc-migrate)).
    type: path
    default: /usr/local/lib/microsvc/microsvc-migrate
  lock:
    description:
      - The deploy lock this run holds (C(run), C(dir), C(lease)), as returned by C(microsvc.deploy.deploy_lock).
        The call fails before any change when another run holds the lock of one of the services, marks the
        locks in use while it works and renews their lease.
    type: dict
  checks:
    description:
      - Health checks (as the module C(microsvc.deploy.health_check) takes them) of the services, to run through
        the gateway on this host once the batch is done; only those of the services that went live run.
    type: list
    elements: dict
    default: []
  validate_certs:
    description: Verify the gateway's TLS certificate in I(checks).
    type: bool
    default: false
  logrotate:
    description:
      - Log rotation files (C(service), C(dest), C(content), C(mode)) of services whose account did not exist
        when the probe ran; written at the end of the call for those whose account exists then (the deploy made it).
    type: list
    elements: dict
    default: []
  settle:
    description:
      - With I(checks), what settling each service needs (as the module C(microsvc.deploy.deploy_outcome) takes
        it, without C(outcome) and the deploy's results; C(units) when it has workers or schedules). After the
        checks, in the same call, the healthy services are settled (their workers and schedules move to the new
        release) and the others go back to what served before, as deploy_outcome does (C(settled)).
    type: list
    elements: dict
    default: []
notes:
  - Why not a builtin - one call for every service of a host, with the slow steps concurrent and each service rolled
    back alone (a loop of builtins costs one call per service and step).
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
# Written by the role microsvc.deploy.uwsgi_vassal (tasks/deploy.yml) from the probe's work list.
- name: Deploy the services that need it
  microsvc.deploy.deploy_batch:
    services: "{{ work }}"
    env: "{{ env_files }}"
    root: /opt/www
  no_log: false
"""

RETURN = r"""
services:
  description:
    - Per service name, C(ok), C(step) (the step that failed, or C(switched)), C(msg), C(release),
      C(previous) (the release that served before), C(switched) (whether current moved),
      C(env_changed), C(env_previous) (whether the previous environment is kept for a rollback),
      C(action) (what the vassal did), C(master_pid), C(first_deploy), and for a failed service what
      its recovery did (C(env_restored), C(rolled_back), C(stopped), C(recovery_error)); for a service
      that migrated here, C(migrations) (C(pending), C(applied), C(lock), C(plan)); for a service whose
      virtualenv this batch built or copied, C(installer) (C(uv), C(pip), C(venv) without requirements, or
      C(reused) when another build had made it).
  returned: always
  type: dict
health:
  description: With I(checks), what the module C(microsvc.deploy.health_check) returns for them (C(checks), C(failed_checks)).
  returned: when I(checks) is given
  type: dict
logrotate_changed:
  description: Paths of I(logrotate) written.
  returned: when I(logrotate) is given
  type: list
settled:
  description: With I(checks) and I(settle), what the module C(microsvc.deploy.deploy_outcome) returns as C(services)
    for the services that went live.
  returned: when I(checks) and I(settle) are given
  type: dict
installer_note:
  description: Why this batch installed virtualenvs with pip rather than uv (no uv wheel, or it could not be unpacked).
  returned: when virtualenvs were built with pip for such a reason
  type: str
timings:
  description: Seconds spent in each step, for all services together.
  returned: always
  type: dict
"""

import concurrent.futures
import contextlib
import os
import shutil
import subprocess
import tarfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.microsvc.deploy.plugins.module_utils import (
    deploy_lock,
    envfile,
    fsutil,
    health,
    layout,
    migrations,
    outcome,
    paths,
    releases,
    units,
    vassal,
    venvs,
)
from ansible_collections.microsvc.deploy.plugins.module_utils.bundle import ARGUMENT_SPEC as BUNDLE_SPEC
from ansible_collections.microsvc.deploy.plugins.module_utils.bundle import bundle_path
from ansible_collections.microsvc.deploy.plugins.module_utils.managed import ensure_for_accounts
from ansible_collections.microsvc.deploy.plugins.module_utils.release_archive import extract_tar

IMPORT_CHECK = """
import importlib, runpy, sys
module, file = sys.argv[1], sys.argv[2]
if module:
    name, _, attr = module.partition(":")
    app = getattr(importlib.import_module(name), attr or "application", None)
else:
    app = runpy.run_path(file).get("application")
if not callable(app):
    raise SystemExit("no callable application in %s" % (module or file))
"""


def django_migrate_argv(svc, helper=migrations.HELPER):
    """The command (run as the service runs) of a deploy's migrate step: the helper takes the
    PostgreSQL advisory lock of the service, records the plan, runs the pre-migrate command when
    there is something to migrate, then Django's migrate."""
    django = svc.get("django") or {}
    return migrations.helper_argv("migrate", svc["name"], django["manage"], helper,
                                  pre_migrate=django.get("pre_migrate"),
                                  pre_migrate_timeout=django.get("pre_migrate_timeout"))


class StepError(Exception):
    def __init__(self, step, msg):
        super().__init__(msg)
        self.step = step


def log_live(svc):
    """Record in the service's deploy log which release went live, when and by whom (releases.yml
    reads it). Never fails the deploy: a log that cannot be written is only a missing line."""
    try:
        gid = fsutil.gid_of(svc["group"])
    except (KeyError, OSError):
        return
    marker = svc.get("marker") or {}
    migrations.log(svc["root"], gid, "release %s live: deployed by %s" % (svc["release"], svc.get("deployed_by") or "unknown"),
                   "source: %s\nrevision: %s" % (marker.get("source") or "-", marker.get("revision") or "-"))


class Deploy:
    """One batch: every service goes through the steps; a failure stops only that service."""

    def __init__(self, module):
        self.module = module
        p = module.params
        self.root = p["root"]
        self.helper = p["helper"]
        self.migrate_helper = p["migrate_helper"]
        self.pip = p["pip"] or {}
        self.timeout = p["timeout"]
        self.workers = p["concurrency"] or os.cpu_count() or 2
        self.env = p["env"] or {}
        self.services = {s["name"]: s for s in p["services"]}
        self.state = {name: {"ok": True, "step": None, "msg": "", "previous": None, "switched": False,
                             "env_previous": False, "env_changed": False, "action": "none", "master_pid": None,
                             "env_restored": False, "rolled_back": False, "stopped": False, "recovery_error": None,
                             "first_deploy": bool(svc.get("first_deploy")), "release": svc["release"]}
                      for name, svc in self.services.items()}
        self.timings = {}
        self.bundle = bundle_path(module)
        # Why the virtualenvs of this batch were installed with pip rather than uv, when they were.
        self.uv_note = None

    # -- helpers -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def member(self, name):
        """One member of the bundle, through a TarFile of its own: the release and virtualenv
        steps read members from several threads at once, and threads sharing one TarFile share
        its file position (members came out truncated or another's: "not a gzip file")."""
        with tarfile.open(self.bundle) as bundle:
            yield bundle.extractfile(name)

    def live(self):
        return [s for name, s in self.services.items() if self.state[name]["ok"]]

    def fail(self, name, step, msg):
        self.state[name].update(ok=False, step=step, msg=str(msg).strip()[-3000:])

    def each(self, step, func, services, parallel, workers=None):
        """Run func(svc) for every live service; a raised error marks only that service."""
        started = time.time()
        if parallel and len(services) > 1:
            with concurrent.futures.ThreadPoolExecutor(max_workers=workers or self.workers) as pool:
                futures = {pool.submit(func, svc): svc["name"] for svc in services}
                for future in concurrent.futures.as_completed(futures):
                    self._record(step, futures[future], future)
        else:
            for svc in services:
                future = concurrent.futures.Future()
                try:
                    future.set_result(func(svc))
                except Exception as exc:  # noqa: BLE001 - any failure of one service is reported as its own
                    future.set_exception(exc)
                self._record(step, svc["name"], future)
        self.timings[step] = round(self.timings.get(step, 0) + time.time() - started, 3)

    def _record(self, step, name, future):
        exc = future.exception()
        if exc is not None:
            self.fail(name, getattr(exc, "step", step), exc)

    def run_as_service(self, svc, args, timeout=600, step="check"):
        argv = [self.helper, "--root", self.root, "--release", svc["release"], svc["name"], "--"] + args
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise StepError(step, "%s did not finish within %ds" % (" ".join(args[:3]), timeout)) from None
        return proc

    # -- the steps -----------------------------------------------------------------------------
    def step_layout(self, svc):
        layout.ensure_account(svc["user"], svc["root"], svc["group"], comment="microsvc service %s" % svc["name"])
        layout.ensure_tree(layout.service_directories(svc, self.root), svc["group"])
        layout.ensure_marker(os.path.join(svc["root"], paths.SERVICE_MARKER), svc["name"])
        if svc.get("interface") != "asgi":  # an ASGI server's log is the service's own (shared/log)
            layout.ensure_uwsgi_log(svc.get("log_file"), svc["user"])

    def step_release(self, svc):
        if not svc.get("archive_member"):
            return
        with self.member(svc["archive_member"]) as member:
            releases.unpack(member, os.path.join(svc["root"], "releases"), svc["release"],
                            fsutil.gid_of(svc["group"]), svc["venv"], svc.get("marker") or {})

    def step_venvs(self, services):
        """One build per virtualenv key (concurrently), each as the build uid of the first service
        that needs it, then each service's own copy."""
        by_key = {}
        for svc in services:
            by_key.setdefault(svc["venv"], []).append(svc)
        if by_key:
            try:
                venvs.retire_legacy_build_user()
            except venvs.VenvError as exc:
                for key in list(by_key):
                    for svc in by_key.pop(key):
                        self.fail(svc["name"], "virtualenv", exc)

        def build(key):
            svc = by_key[key][0]
            wheelhouse = None
            if svc.get("wheelhouse_member"):
                wheelhouse = os.path.join(venvs.cache_dir(self.root), "wheelhouse-" + key)
                if not os.path.isdir(wheelhouse):
                    os.makedirs(wheelhouse, 0o755)
                    with self.member(svc["wheelhouse_member"]) as member:
                        extract_tar(member, wheelhouse)
            try:
                installer = venvs.build(
                    self.root, key, svc["python"], svc["python_version"], svc["requirements"],
                    wheelhouse=os.path.join(wheelhouse, "wheelhouse") if wheelhouse else None,
                    index_url=self.pip.get("index_url") or "", extra_args=self.pip.get("extra_args") or [],
                    service_user=svc.get("user"), uv=uv if wheelhouse and venvs.wheels_only(wheelhouse) else None)
                for each in by_key[key]:
                    self.state[each["name"]]["installer"] = installer or "reused"
            finally:
                if wheelhouse:
                    shutil.rmtree(wheelhouse, ignore_errors=True)
            for each in by_key[key]:
                venvs.install(self.root, key, os.path.join(each["root"], "venvs", key))

        started = time.time()
        uv = self.uv() if any(svc.get("wheelhouse_member") for each in by_key.values() for svc in each) else None
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = {pool.submit(build, key): key for key in by_key}
            for future in concurrent.futures.as_completed(futures):
                exc = future.exception()
                if exc is not None:
                    for svc in by_key[futures[future]]:
                        self.fail(svc["name"], "virtualenv", exc)
        self.timings["virtualenv"] = round(time.time() - started, 3)

    def uv(self):
        """The uv binary the virtualenvs of this batch are installed with (taken once out of the
        wheel the controller sent), or None: pip installs them then, and the report says why."""
        member, version = self.pip.get("uv_member"), self.pip.get("uv_version")
        if not member and self.pip.get("uv_installed"):
            try:
                binary = venvs.installed_uv(self.root, version)
            except venvs.VenvError as exc:
                binary, self.uv_note = None, "pip: %s" % exc
            if binary is None and not self.uv_note:
                self.uv_note = "pip: uv %s, which the probe found on this host, is no longer there" % version
            return binary
        if not member:
            self.uv_note = "pip: the controller sent no uv wheel for this host%s" % (
                ": " + self.pip["uv_problem"] if self.pip.get("uv_problem") else "")
            return None
        try:
            with self.member(member) as wheel:
                return venvs.ensure_uv(self.root, wheel, version)
        except (venvs.VenvError, OSError, KeyError, tarfile.TarError) as exc:
            self.uv_note = "pip: uv could not be installed: %s" % exc
            return None

    def step_env(self, svc):
        writes, removes, kept = envfile.plan(svc["env_file"], "stage", self.env.get(svc["name"], ""))[:3]
        envfile.apply(writes, removes, fsutil.gid_of(svc["group"]))
        self.state[svc["name"]].update(env_previous=kept, env_changed=bool(writes))

    def step_check(self, svc):
        check = svc.get("check") or {}
        proc = self.run_as_service(svc, ["python", "-c", IMPORT_CHECK, check.get("module") or "",
                                         check.get("wsgi_file") or ""])
        if proc.returncode != 0:
            raise StepError("check", "the new release does not import: %s" % (proc.stderr or proc.stdout)[-1500:])

    def step_migrate(self, svc):
        """migrate through the helper; its plan and output go to the service's deploy log."""
        django = svc["django"]
        # The helper waits up to an hour for the migration lock, then migrates (up to an hour, as before).
        timeout = 7200 + int(django.get("pre_migrate_timeout") or 0)
        code, result, text = migrations.run(self.root, svc["name"], django_migrate_argv(svc, self.migrate_helper),
                                            release=svc["release"], timeout=timeout, runner=self.helper)
        result = result or {}
        self.state[svc["name"]]["migrations"] = dict(
            pending=result.get("pending") or [], applied=result.get("applied") or [], lock=result.get("lock"),
            plan=(result.get("plan") or "").strip(), pre_migrate=result.get("pre_migrate"))
        if code != 0:
            text += "\nFAILED: %s" % migrations.error_of(code, result, text)
        migrations.log(svc["root"], fsutil.gid_of(svc["group"]),
                       "deploy of release %s: migrate%s" % (svc["release"], "" if code == 0 else " FAILED"), text)
        if code != 0:
            raise StepError("migrate", "migrate failed: %s" % migrations.error_of(code, result, text))

    def step_release_commands(self, svc):
        """The service's release commands, in order, in the new release as the service's user;
        the first that fails stops the deploy of this service, naming the command."""
        for command in svc.get("release_commands") or []:
            if command.get("kind") == "migrate":
                self.step_migrate(svc)
                continue
            proc = self.run_as_service(svc, list(command["argv"]), timeout=command["timeout"], step=command["step"])
            if proc.returncode != 0:
                raise StepError(command["step"], "%s failed (exit status %d): %s" % (
                    command["label"], proc.returncode, (proc.stderr or proc.stdout)[-1500:]))

    def step_slices(self, services):
        """Write the slice of each service that has none yet (a first deploy), so that its vassal
        moves into it with its limits from its very start; one daemon-reload for all. A slice
        that only changed is written with the service's other units after the health check."""
        written = []
        for svc in services:
            spec = svc.get("slice")
            if not spec:
                continue
            try:
                if units.write_missing(spec["name"], spec["content"]):
                    written.append(svc["name"])
            except (OSError, units.UnitsError) as exc:
                self.fail(svc["name"], "limits", "writing the slice of service '%s' failed: %s" % (svc["name"], exc))
        if written:
            proc = units.Systemd().run(["daemon-reload"], check=False)
            if proc.returncode != 0:
                for name in written:
                    self.fail(name, "limits", "systemctl daemon-reload failed: %s" % (proc.stderr or "")[-500:])

    def step_switch(self, svc):
        name, state = svc["name"], self.state[svc["name"]]
        plan = releases.plan_switch(svc["root"], svc["release"], keep=svc.get("keep_releases") or 0)
        state["previous"] = plan["previous"]
        if plan["changed"]:
            releases.apply_switch(svc["root"], plan)
        state["switched"] = plan["previous"] != plan["current"]
        if state["switched"]:
            log_live(svc)
        try:
            result = vassal.apply(name, svc["ini_path"], svc["ini_content"], svc["stats_socket"], svc["reload_file"],
                                  code_changed=state["switched"], config_changed=state["env_changed"],
                                  timeout=self.timeout, log_file=svc.get("log_file"))
        except vassal.VassalError as exc:
            state["action"] = "failed"
            raise StepError("reload", str(exc)) from None
        state.update(action=result["action"], master_pid=result["master_pid"])
        # A vassal that started without limits (before this collection gave it a slice) only
        # reloaded: move it, its workers included, into its slice now.
        if svc.get("attach") and result["master_pid"]:
            try:
                units.adopt(name, result["master_pid"])
            except (OSError, subprocess.SubprocessError, units.UnitsError) as exc:
                raise StepError("limits", str(exc)) from None

    # -- recovery of a failed service ----------------------------------------------------------
    def recover(self, svc):
        """Put one failed service back as it was, alone: its previous environment file; when its
        vassal already saw the new release or environment, its previous release reloaded; a first
        release that could not start is stopped (it never went live)."""
        state = self.state[svc["name"]]
        reached_vassal = state["step"] in ("switch", "reload")
        try:
            if state["env_changed"]:
                writes, removes = envfile.plan(svc["env_file"], "restore")[:2]
                envfile.apply(writes, removes, fsutil.gid_of(svc["group"]))
                state["env_restored"] = True
            if state["switched"] and state["previous"]:
                releases.apply_switch(svc["root"], releases.plan_switch(svc["root"], state["previous"], rollback=True))
                state["rolled_back"] = True
            if reached_vassal and state["previous"]:
                vassal.apply(svc["name"], svc["ini_path"], None, svc["stats_socket"], svc["reload_file"],
                             code_changed=state["switched"], config_changed=state["env_changed"],
                             timeout=self.timeout, log_file=svc.get("log_file"))
            elif reached_vassal:
                vassal.stop(svc["ini_path"], svc["stats_socket"], svc.get("remove_sockets") or [], self.timeout,
                            svc["name"])
                state["stopped"] = True
        except Exception as exc:  # noqa: BLE001 - report it; the other services go on
            state["recovery_error"] = str(exc)[-1500:]

    # -- the whole batch -----------------------------------------------------------------------
    def run(self):
        # What the controller could not get for a service's virtualenv (no wheel for the host, a
        # hash that does not match) fails that service before anything of it changes on the host.
        for svc in self.live():
            if svc.get("wheelhouse_error"):
                self.fail(svc["name"], "virtualenv", svc["wheelhouse_error"])
        self.each("layout", self.step_layout, self.live(), parallel=False)
        self.each("release", self.step_release, self.live(), parallel=True)
        self.step_venvs([s for s in self.live()
                         if not venvs.present(os.path.join(s["root"], "venvs", s["venv"]), s["python_version"])])
        self.each("environment", self.step_env, self.live(), parallel=False)
        # A service whose workers' or schedules' units alone differ keeps its release: nothing
        # to import or to run before a switch (deploy_outcome makes the units what they should be).
        self.each("check", self.step_check, [s for s in self.live() if not s.get("units_only")], parallel=True)
        self.each("release commands", self.step_release_commands,
                  [s for s in self.live() if s.get("release_commands")], parallel=True)
        self.step_slices(self.live())
        self.each("switch", self.step_switch, self.live(), parallel=True, workers=4 * self.workers)
        for name, state in self.state.items():
            if not state["ok"]:
                self.recover(self.services[name])
        for state in self.state.values():
            if state["ok"]:
                state["step"] = "switched"
        return self.state


def main():
    module = AnsibleModule(
        argument_spec=dict(
            services=dict(type="list", elements="dict", required=True),
            env=dict(type="dict", default={}, no_log=True),
            root=dict(type="path", required=True),
            helper=dict(type="path", default="/usr/local/sbin/microsvc-run"),
            pip=dict(type="dict", default={}),
            timeout=dict(type="int", default=90),
            concurrency=dict(type="int", default=0),
            migrate_helper=dict(type="path", default=migrations.HELPER),
            lock=dict(type="dict"),
            checks=dict(type="list", elements="dict", default=[]),
            validate_certs=dict(type="bool", default=False),
            settle=dict(type="list", elements="dict", default=[]),
            logrotate=dict(type="list", elements="dict", default=[]),
            **BUNDLE_SPEC,
        ),
        supports_check_mode=False,
    )
    # Work under this run's deploy lock of the services (verified first, renewed while working).
    held = contextlib.ExitStack()
    try:
        held.enter_context(deploy_lock.Held(module.params["lock"], [s["name"] for s in module.params["services"]]))
    except deploy_lock.LockError as exc:
        module.fail_json(msg=str(exc))
    with held:
        deploy = Deploy(module)
        results = deploy.run()
        extra = after_switch(module.params, results)
        if module.params["logrotate"]:
            # As the probe does: only where the service's account exists (logrotate switches to it).
            extra["logrotate_changed"] = ensure_for_accounts(module, module.params["logrotate"])[0]
    if deploy.uv_note:
        extra["installer_note"] = deploy.uv_note
    module.exit_json(changed=bool(results), services=results, timings=deploy.timings, **extra)


def after_switch(params, results):
    """With ``checks``: the health checks of the services that went live; with ``settle`` too, the
    healthy ones settled and the others returned to what served before (as deploy_outcome would in
    a call of its own), under the deploy lock still held."""
    extra = {}
    if params["checks"]:
        extra["health"] = live_health(params["checks"], results, params["validate_certs"])
        if params["settle"]:
            fields = {entry["name"]: entry for entry in params["settle"]}
            items = outcome.settle_items(results, extra["health"]["checks"], fields)
            extra["settled"] = outcome.settle_all(items, params["timeout"])
    return extra


def live_health(checks, results, validate_certs):
    """The health checks of the services that went live (the others serve what they served)."""
    live = [c for c in checks if (results.get(c["name"]) or {}).get("ok")]
    checked = health.run_checks(live, validate_certs)
    return dict(checks=checked, failed_checks=health.failed(checked))


if __name__ == "__main__":
    main()
