# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Action plugin: validate the settings and the service list, fetch and inspect the selected
services' sources, and publish the plan (controller only; no host is contacted)."""

from __future__ import annotations

import os

import yaml
from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.parsing.vault import VaultHelper, is_encrypted_file
from ansible.plugins.action import ActionBase
from ansible_collections.microsvc.deploy.plugins.plugin_utils import gateway_settings, placement
from ansible_collections.microsvc.deploy.plugins.plugin_utils.checks import show
from ansible_collections.microsvc.deploy.plugins.plugin_utils.service_plan import (
    PlanError,
    Planner,
    load_service_spec,
    plain,
)
from ansible_collections.microsvc.deploy.plugins.plugin_utils.settings import (
    INVENTORY_HOST,
    SETTINGS,
    SHARED,
    check_settings,
    removed_settings,
    shared_settings,
)
from ansible_collections.microsvc.deploy.plugins.plugin_utils.sources import prepare_source
from ansible_collections.microsvc.deploy.plugins.plugin_utils.trusted_store import TemplateIndex

SPEC_PATH = os.path.join(
    os.path.dirname(__file__), os.pardir, os.pardir, "roles", "service_plan", "meta", "argument_specs.yml"
)
ROLES_DIR = os.path.realpath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "roles"))
DEFAULT_ROOT = "/opt/www"
DEFAULT_PREFIX = "/api/"

_SPEC_CACHE = {}

try:  # ansible-core >= 2.19 marks values decrypted from vault, and where every value came from
    from ansible._internal._datatag._tags import Origin, TrustedAsTemplate
except ImportError:  # pragma: no cover - other ansible-core versions: inline vault only
    Origin = TrustedAsTemplate = None


_ENCRYPTED_FILES = {}


def from_vault(value):
    """Whether an inventory value came from ansible-vault: an inline !vault value (or a template
    that returned one unchanged), or any value of a vault-encrypted vars file."""
    _encrypted_files = _ENCRYPTED_FILES
    if VaultHelper.get_ciphertext(value, with_tags=False):
        return True
    origin = Origin.get_tag(value) if Origin is not None else None
    path = getattr(origin, "path", None)
    if not path:
        return False
    if path not in _encrypted_files:
        try:
            with open(path, "rb") as handle:
                _encrypted_files[path] = is_encrypted_file(handle)
        except OSError:
            _encrypted_files[path] = False
    return _encrypted_files[path]


def trusted_store(task_vars):
    """The predicate microsvc_require_vault applies: a value from ansible-vault, or one that came
    unchanged from an amazon.aws SSM Parameter Store / Secrets Manager lookup written as a whole
    value in the inventory (see plugin_utils/trusted_store.py)."""
    if Origin is None:  # pragma: no cover - no origins to recognise lookups by
        return from_vault
    index = TemplateIndex(task_vars or {}, Origin.get_tag, TrustedAsTemplate.is_tagged_on)
    return lambda value: from_vault(value) or index.from_lookup(value)


def service_spec():
    if "spec" not in _SPEC_CACHE:
        with open(SPEC_PATH, encoding="utf-8") as handle:
            _SPEC_CACHE["spec"] = load_service_spec(yaml.safe_load(handle))
    return _SPEC_CACHE["spec"]


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("services", "defaults", "selected", "root", "route_prefix", "check_sources", "base_dir",
                             "require_vault", "secret_names", "source_roots", "allowed_pythons", "cache_dir",
                             "prepare_sources", "gateway_hosts", "app_hosts", "held_hosts"))

    # The inventory variables a host's own plan is made of: hosts whose raw values equal the
    # planning host's share its plan; others get theirs (a service on a subset of hosts).
    HOST_INPUTS = (("service_plan_services", "microsvc_services"),
                   ("service_plan_defaults", "microsvc_service_defaults"),
                   ("service_plan_selected", "deploy_services"))

    @staticmethod
    def _role_default(value):
        """Whether a variable's value comes from one of this collection's role defaults (the
        collection's own values, not the operator's)."""
        origin = Origin.get_tag(value) if Origin is not None else None
        path = os.path.realpath(getattr(origin, "path", None) or "")
        return path.startswith(ROLES_DIR + os.sep) and os.sep + "defaults" + os.sep in path

    def _settings(self, task_vars):
        """The settings the inventory or the command line defines, templated. The service_plan
        role's own variables are checked through the arguments below (they only forward the
        collection-wide ones)."""
        values = {}
        for name in SETTINGS:
            if SETTINGS[name] is None or name.startswith("service_plan_") or name not in task_vars \
                    or self._role_default(task_vars[name]):
                continue
            try:
                values[name] = plain(self._templar.template(task_vars[name]))
            except AnsibleError:
                continue  # depends on something only a host can tell (a fact); checked where used
        return values

    @staticmethod
    def _gateway_across(values, shared):
        """The settings the gateway's rules between settings read: what the inventory sets, the
        shared settings' defaults, the collection-wide metrics switch."""
        merged = {name: shared[key] for key, (name, _default) in SHARED.items() if name.startswith("nginx_gateway_")}
        merged["nginx_gateway_metrics_enabled"] = values.get("microsvc_metrics_enabled", False)
        merged.update({k: v for k, v in values.items() if k.startswith(("nginx_gateway_", "microsvc_metrics_"))})
        for secret in ("nginx_gateway_tls_certificate", "nginx_gateway_tls_key"):
            merged[secret] = bool(merged.get(secret))
        return merged

    # The collection's listeners on its hosts: a service's port may not take one of them.
    PORT_SETTINGS = (
        ("listen", "the gateway's HTTP listener (nginx_gateway_listen)"),
        ("tls_port", "the gateway's HTTPS listener (nginx_gateway_tls_port)"),
        ("check_port", "the gateway's check server (nginx_gateway_check_port)"),
        ("stub_status_port", "nginx's stub_status (nginx_gateway_stub_status_port)"),
        ("metrics_port", "the nginx exporter (nginx_gateway_metrics_port)"),
        ("emperor_metrics_port", "the node exporter (uwsgi_emperor_metrics_port)"),
    )

    @classmethod
    def _reserved_ports(cls, shared):
        """port -> what listens there, for the ports this run configures."""
        return {shared[key]: what for key, what in cls.PORT_SETTINGS if isinstance(shared[key], int)}

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        argument_settings = {
            "microsvc_root": args.get("root") or DEFAULT_ROOT,
            "microsvc_route_prefix": args.get("route_prefix") or DEFAULT_PREFIX,
            "microsvc_secret_names": args.get("secret_names") or [],
        }
        for key, name in (("source_roots", "microsvc_source_roots"), ("allowed_pythons", "microsvc_allowed_pythons"),
                          ("cache_dir", "microsvc_cache_dir")):
            if args.get(key) not in (None, ""):
                argument_settings[name] = args[key]
        values = self._settings(task_vars)
        errors = check_settings(values) + removed_settings(task_vars or {})
        errors += [e for e in check_settings(plain(argument_settings)) if e not in errors]
        bad = {e.split("'")[1] for e in errors}
        root = DEFAULT_ROOT if "microsvc_root" in bad else argument_settings["microsvc_root"]
        shared = shared_settings({k: v for k, v in values.items() if k not in bad}, root)
        if not errors:
            errors += gateway_settings.across(self._gateway_across(values, shared))
            bad = {e.split("'")[1] for e in errors}
        prefix = DEFAULT_PREFIX if "microsvc_route_prefix" in bad else argument_settings["microsvc_route_prefix"]
        roots = args.get("source_roots")
        if "microsvc_source_roots" in bad or not roots:
            roots = [os.getcwd()]
        cache_dir = None if "microsvc_cache_dir" in bad else args.get("cache_dir")
        prepare = args.get("prepare_sources", True) and "microsvc_cache_dir" not in bad
        planner = Planner(
            service_spec(),
            root=root,
            route_prefix=prefix,
            base_dir=args.get("base_dir") or self._loader.get_basedir(),
            secret_names=args.get("secret_names") or (),
            is_vaulted=trusted_store(task_vars) if args.get("require_vault") else None,
            source_roots=roots,
            allowed_pythons=[] if "microsvc_allowed_pythons" in bad else (args.get("allowed_pythons") or []),
            prepare_source=(lambda svc: prepare_source(svc, cache_dir)) if prepare else None,
            reserved_ports=self._reserved_ports(shared),
        )
        this = (task_vars or {}).get("inventory_hostname")
        refused = []
        try:
            plan = planner.plan(
                args.get("services"),
                defaults=args.get("defaults"),
                selected=args.get("selected"),
                check_sources=args.get("check_sources", True),
                errors=self._with_other_hosts(errors, task_vars or {}),
            )
        except PlanError as exc:
            plan, refused = None, list(exc.errors)
        # Every host's own list is checked even when the planning host's is refused: one report.
        plans, of_host, others, lists_differ = self._host_plans(planner, plan, args, task_vars or {})
        if lists_differ:  # hosts list different services: each refusal names its host
            refused = [e if e.startswith("host ") else "host %s: %s" % (this, e) for e in refused]
        refused += others
        # Host names reach the gateway's files and other hosts' settings: a dynamic inventory
        # names hosts from tags anyone who launches an instance writes.
        refused += self._host_name_refusals(self._play_hosts(task_vars or {}))
        if refused:
            raise AnsibleActionFail(
                "The service list or a setting is invalid; no host was changed.\n- " + "\n- ".join(refused)
            ) from None
        hosts = self._play_hosts(task_vars or {})
        for one in plans:
            one["settings"] = shared
        plan = plans[0]
        placed = placement.place({h: plans[of_host[h]] for h in hosts}, list(args.get("gateway_hosts") or hosts),
                                 list(args.get("app_hosts") or hosts), hosts, shared,
                                 held=frozenset(args.get("held_hosts") or ()))
        for host in hosts:
            placed[host]["plan"] = of_host[host]
        result["changed"] = False
        # Computed once for the run (the task runs once): every host of the play gets these facts
        # as they are, with no per-host templating (which costs about as much as the validation):
        # the planning host's plan, the placement of every host, and the other plans, which the
        # hosts whose inventory lists other services take (the service_plan role's next task).
        result["ansible_facts"] = {"microsvc_plan": plan, "microsvc_placements": placed, "microsvc_plans": plans}
        # The plan holds every service's environment, secrets included (from vault or AWS): a
        # verbose run must not print it. Refusals (above) name fields, never values.
        if any(svc.get("env") for one in plans for svc in one["services"]):
            result["_ansible_no_log"] = True
        result["msg"] = "%d services (%d selected), %d hosts" % (
            len(plan["names"]), len(plan["selected"]), len(hosts))
        return result

    @staticmethod
    def _host_name_refusals(hosts):
        """One refusal per host whose inventory name is not a plain name (letters, digits, _.:-)."""
        return ["host %s: its name %s (for an EC2 instance: change its Name tag)" % (show(host), problem)
                for host, problem in zip(hosts, map(INVENTORY_HOST, hosts)) if problem]

    @staticmethod
    def _play_hosts(task_vars):
        hosts = task_vars.get("ansible_play_hosts")
        if hosts is None:
            hosts = [task_vars.get("inventory_hostname", "localhost")]
        return list(hosts)

    def _with_other_hosts(self, errors, task_vars):
        """The planning host's refusals of settings, then the other hosts'; when hosts set settings
        differently, each refusal names its host."""
        others, differ = self._other_hosts_settings(task_vars)
        if differ:
            errors = ["host %s: %s" % (task_vars.get("inventory_hostname"), e) for e in errors]
        return errors + others

    def _other_hosts_settings(self, task_vars):
        """Refusals of the settings that a host's own inventory gives otherwise than the planning
        host's, naming the host: the plan is made once, yet every host's settings are checked.
        Hosts with the same raw values as a host already checked cost one comparison. Returns
        (refusals, whether any host's settings differ from the planning host's)."""
        this = task_vars.get("inventory_hostname")
        hostvars = task_vars.get("hostvars")
        hosts = self._play_hosts(task_vars)
        if hostvars is None or len(hosts) < 2:
            return [], False
        names = [n for n in SETTINGS if SETTINGS[n] is not None and not n.startswith("service_plan_")]

        def raw_of(host):
            raw = hostvars.raw_get(host)
            return [raw.get(name) for name in names]

        seen, errors = [raw_of(this)], []
        for host in hosts:
            if host == this:
                continue
            raw = raw_of(host)
            if raw in seen:
                continue
            seen.append(raw)
            own, values = hostvars[host], {}
            for name, value in zip(names, raw):
                if value is None:
                    continue
                try:
                    values[name] = plain(own[name])  # templated in that host's context
                except AnsibleError:
                    continue  # depends on something only the host can tell (a fact); checked where used
            errors += ["host %s: %s" % (host, e) for e in check_settings(values)]
        return errors, len(seen) > 1

    def _raw_inputs(self, raw):
        return [raw[own] if own in raw else raw.get(shared) for own, shared in self.HOST_INPUTS]

    def _host_plans(self, planner, plan, args, task_vars):
        """The plans of the play's hosts: the planning host's, and one more for each other list of
        services a host's inventory gives. Returns (plans, host -> index in plans, the refusals of
        the other hosts' lists, naming each host, whether any host's list differs)."""
        this = task_vars.get("inventory_hostname")
        hosts = self._play_hosts(task_vars)
        hostvars = task_vars.get("hostvars")
        plans, inputs, of_host = [plan], [None], {this: 0}
        if hostvars is None or len(hosts) < 2:
            return plans, {h: 0 for h in hosts}, [], False
        inputs[0] = self._raw_inputs(hostvars.raw_get(this))
        errors = []
        for host in hosts:
            if host == this:
                continue
            own_raw = hostvars.raw_get(host)
            raw = self._raw_inputs(own_raw)
            if raw in inputs:
                of_host[host] = inputs.index(raw)
                continue
            own = hostvars[host]  # templated in that host's context
            values = [own[name] if name in own_raw else own.get(shared) for name, shared in self.HOST_INPUTS]
            try:
                plans.append(planner.plan(plain(values[0]), defaults=plain(values[1]), selected=plain(values[2]) or "",
                                          check_sources=args.get("check_sources", True)))
            except PlanError as exc:
                errors.extend("host %s: %s" % (host, e) for e in exc.errors)
                continue
            inputs.append(raw)
            of_host[host] = len(plans) - 1
        return plans, of_host, errors, bool(errors) or len(inputs) > 1
