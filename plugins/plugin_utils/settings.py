# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Allow-lists of the global settings: the collection-wide ``microsvc_*`` variables and every
role variable.

The operator owns these (the inventory's group_vars, extra variables); they are trusted to
configure, and still validated, because they reach templates, command lines, paths and URLs.
The validation play checks every setting the inventory or the command line defines, before
any host is contacted, and reports its problems in the same report as the service list's.
Role defaults are not checked here (they are the collection's own values).

``SETTINGS`` maps each variable to its check. A unit test requires an entry for every option
of every role's ``main`` argument spec, so a new role variable cannot skip this. docs/variables.md
shows each rule (tools/gen-docs reads this table).
"""

from __future__ import annotations

import re

from ansible_collections.microsvc.deploy.plugins.plugin_utils.checks import (
    HOSTNAME_PATTERN,
    NAME_PATTERN,
    AbsPath,
    AnyOf,
    Bool,
    Check,
    Choice,
    Int,
    IpAddress,
    ListOf,
    MapOf,
    Scalar,
    Str,
    Url,
    has_control,
    no_uwsgi_magic,
    show,
    size_check,
)
from ansible_collections.microsvc.deploy.plugins.plugin_utils.service_plan import MEMORY_LIMIT, PYTHON, ROUTE


class CommandLine(Check):
    """A setting usually given on the command line: ``-e name=value`` reaches Ansible as text, so the
    text of an integer or of a boolean (true, false, yes, no) is read as one, then checked."""

    def __init__(self, check):
        self.check = check
        self.rule = check.rule

    def __call__(self, value):
        if isinstance(value, str) and not has_control(value):
            if re.fullmatch(r"-?[0-9]{1,12}", value):
                value = int(value)
            elif value.lower() in ("true", "false", "yes", "no"):
                value = value.lower() in ("true", "yes")
        return self.check(value)


PORT = Int(1, 65535)
EMPTY = Str(r"", "empty", 0)
HOST_PATTERN = Str(r"[A-Za-z0-9_.:*!&,\[\]-]{1,500}",
                   "an Ansible host pattern of host and group names (letters, digits and _.:*!&,[]-)", 500)
# The hosts kept out of the gateways' upstreams (playbooks/join.yml, leave.yml): none by default.
HELD_HOSTS = Str(r"[A-Za-z0-9_.:*!&,\[\]-]{0,500}",
                 "an Ansible host pattern of host and group names (letters, digits and _.:*!&,[]-), or empty", 500)
INVENTORY_HOST = Str(r"[A-Za-z0-9_.:-]{1,253}", "an inventory host name (letters, digits and _.:-)", 253)
SERVER_NAME = Str(r"_|(?:\*\.)?%s|%s\.\*" % (HOSTNAME_PATTERN, HOSTNAME_PATTERN),
                  "'_' or a host name (letters, digits, '.' and '-'), optionally with a leading '*.' or a "
                  "trailing '.*'", 253)
PEM_CERT = Str(r"(?:-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----\s*)+",
               "PEM certificates (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)", 65536,
               multiline=True)
PEM_KEY = Str(r"-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n:,-]+"
              r"-----END (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----\s*",
              "one PEM private key (-----BEGIN PRIVATE KEY----- ... -----END PRIVATE KEY-----)", 65536, secret=True,
              multiline=True)


def _tls_protocols(value):
    words = value.split(" ")
    if len(set(words)) != len(words):
        return "%s lists a protocol twice" % show(value)
    return None


# The family whose vars/<family>.yml a role loads instead of the facts'.
PLATFORM = Choice("", "Debian", "RedHat")
# Distribution package names, optionally with a version or architecture (apt name=version,
# name:arch; dnf name-version): they reach apt/dnf as arguments.
PACKAGE = Str(r"[A-Za-z0-9][A-Za-z0-9+._:=~-]{0,127}", "a package name (letters, digits and +._:=~-)", 128)
SECRET_PATTERN = Str(r"[A-Za-z0-9_*?\[\]!-]{1,64}", "a shell-style pattern of letters, digits and _*?[]!-", 64)
UWSGI_OPTION_NAME = Str(r"[a-z0-9][a-z0-9-]{0,63}", "a uWSGI option name", 64)
UWSGI_VALUE = Scalar(500, extra=no_uwsgi_magic)
NGINX_PARAM_NAME = Str(r"[A-Za-z_][A-Za-z0-9_]{0,63}", "a uwsgi parameter name ([A-Za-z_][A-Za-z0-9_]*)", 64)
NGINX_PARAM_VALUE = Str(r"[A-Za-z0-9_$.:/@,=+ -]{0,200}",
                        "nginx text of letters, digits, spaces and _$.:/@,=+- (nginx variables allowed)", 200)
HEADER_NAME = Str(r"[A-Za-z0-9-]{1,64}", "an HTTP header name (letters, digits and '-')", 64)
HEADER_VALUE = Str(r"[ !#%-\[\]-~]{0,500}",
                   "printable ASCII without '\"', '\\\\' or '$' (empty drops the header)", 500)

SETTINGS = {
    # --- collection-wide -------------------------------------------------------------------
    "microsvc_root": AbsPath(60, not_system=True, min_depth=2),
    "microsvc_route_prefix": ROUTE,
    "microsvc_services": None,           # the service list: checked field by field (service_plan)
    "microsvc_service_defaults": None,   # checked with the service fields
    "microsvc_require_vault": Bool(),
    "microsvc_secret_names": ListOf(SECRET_PATTERN, 100),
    "microsvc_source_roots": ListOf(AbsPath(4096, min_depth=1), 50),
    "microsvc_allowed_pythons": ListOf(AbsPath(200, min_depth=2), 20),
    "microsvc_cache_dir": AbsPath(4096, min_depth=1),
    "microsvc_hosts": HOST_PATTERN,
    "microsvc_gateway_hosts": HOST_PATTERN,
    "microsvc_app_hosts": HOST_PATTERN,
    "microsvc_held_hosts": HELD_HOSTS,
    "microsvc_private_address": IpAddress(),
    "private_ip_address": IpAddress(),
    "microsvc_serial": CommandLine(AnyOf(Int(1, 10000),
                                         Str(r"(?:100|[1-9][0-9]?)%", "a percentage from 1% to 100%", 4))),
    "deploy_force": CommandLine(Bool()),
    # playbooks/rollback.yml: roll back across migrations a service's rollback_policy refuses.
    "rollback_across_migrations": CommandLine(Bool()),
    "microsvc_platform": PLATFORM,
    # --- role service_plan (the same values under the role's own names) --------------------
    "service_plan_services": None,
    "service_plan_defaults": None,
    "service_plan_selected": None,       # deploy_services: checked by the plan (names of the list)
    "service_plan_root": AbsPath(60, not_system=True, min_depth=2),
    "service_plan_route_prefix": ROUTE,
    "service_plan_require_vault": Bool(),
    "service_plan_secret_names": ListOf(SECRET_PATTERN, 100),
    "service_plan_source_roots": ListOf(AbsPath(4096, min_depth=1), 50),
    "service_plan_allowed_pythons": ListOf(AbsPath(200, min_depth=2), 20),
    "service_plan_cache_dir": AbsPath(4096, min_depth=1),
    "service_plan_prepare_sources": Bool(),
    "service_plan_gateway_hosts": HOST_PATTERN,
    "service_plan_app_hosts": HOST_PATTERN,
    "service_plan_held_hosts": HELD_HOSTS,
    # --- role nginx_gateway ----------------------------------------------------------------
    "nginx_gateway_max_fails": Int(1, 100),
    "nginx_gateway_fail_timeout": Int(1, 3600),
    "nginx_gateway_connect_timeout": Int(1, 300),
    "nginx_gateway_check_port": Int(1024, 65535),
    "nginx_gateway_listen": PORT,
    "nginx_gateway_listen_ipv6": Bool(),
    "nginx_gateway_server_names": ListOf(SERVER_NAME, 100, min_items=1),
    "nginx_gateway_charset": Str(r"[A-Za-z0-9_-]{1,32}", "a charset name such as utf-8", 32),
    "nginx_gateway_client_max_body_size": size_check(),
    "nginx_gateway_worker_processes": AnyOf(Str(r"auto|[1-9][0-9]{0,3}", "'auto' or 1 to 9999", 4),
                                            Int(1, 9999)),
    "nginx_gateway_worker_connections": Int(16, 1048576),
    "nginx_gateway_error_log_level": Choice("debug", "info", "notice", "warn", "error", "crit", "alert", "emerg"),
    "nginx_gateway_uwsgi_params": MapOf(NGINX_PARAM_NAME, NGINX_PARAM_VALUE, 50),
    "nginx_gateway_unknown_route_status": Int(200, 599),
    "nginx_gateway_security_headers": MapOf(HEADER_NAME, HEADER_VALUE, 50),
    "nginx_gateway_real_ip_from": ListOf(IpAddress(network=True), 200),
    "nginx_gateway_read_timeout": Int(1, 86400),
    "nginx_gateway_send_timeout": Int(1, 86400),
    "nginx_gateway_service_log_dir": AbsPath(200, not_system=True, min_depth=2),
    "nginx_gateway_log_retention_days": Int(1, 3650),
    "nginx_gateway_tls_enabled": Bool(),
    "nginx_gateway_tls_port": PORT,
    "nginx_gateway_tls_certificate": AnyOf(EMPTY, PEM_CERT, rule=PEM_CERT.rule + " or empty"),
    "nginx_gateway_tls_key": AnyOf(EMPTY, PEM_KEY, rule=PEM_KEY.rule + " or empty"),
    "nginx_gateway_tls_self_signed": Bool(),
    "nginx_gateway_tls_redirect": Bool(),
    "nginx_gateway_hsts_max_age": Int(0, 63072000),
    "nginx_gateway_tls_protocols": Str(r"(?:TLSv1\.2|TLSv1\.3)(?: (?:TLSv1\.2|TLSv1\.3))?",
                                       "TLSv1.2 and/or TLSv1.3, separated by a space", 20, extra=_tls_protocols),
    "nginx_gateway_tls_ciphers": ListOf(Str(r"[A-Za-z0-9_-]{1,64}", "an OpenSSL cipher name", 64), 100,
                                        min_items=1),
    "nginx_gateway_platform": PLATFORM,
    # --- role uwsgi_emperor ----------------------------------------------------------------
    "uwsgi_emperor_service_name": Str(r"[a-z][a-z0-9_-]{0,63}", "a systemd unit name of a-z, 0-9, '_' and '-'",
                                      64),
    "uwsgi_emperor_config_dir": AbsPath(200, min_depth=2),
    "uwsgi_emperor_vassals_dir": AbsPath(200, min_depth=2),
    "uwsgi_emperor_scan_interval": Int(1, 60),
    "uwsgi_emperor_throttle_ms": Int(0, 600000),
    "uwsgi_emperor_max_throttle_ms": Int(0, 3600000),
    "uwsgi_emperor_python": AnyOf(EMPTY, PYTHON, rule="empty (the platform's) or " + PYTHON.rule),
    "uwsgi_emperor_options": MapOf(UWSGI_OPTION_NAME, UWSGI_VALUE, 50),
    "uwsgi_emperor_hardening": Bool(),
    "uwsgi_emperor_read_write_paths": ListOf(AbsPath(200, not_system=True, min_depth=2), 50),
    "uwsgi_emperor_allow_privileged_ports": Bool(),
    "uwsgi_emperor_log_retention_days": Int(1, 3650),
    "uwsgi_emperor_platform": PLATFORM,
    "uwsgi_emperor_packages": ListOf(PACKAGE, 100),
    "uwsgi_emperor_pip_source": Choice("index", "sdist"),
    "uwsgi_emperor_pip_index_url": AnyOf(EMPTY, Url(("https", "http"), credentials=True, secret=True),
                                         rule="empty or an http(s) URL of a package index"),
    "uwsgi_emperor_cache_dir": AbsPath(4096, min_depth=1),
    # --- role service_firewall -------------------------------------------------------------
    "service_firewall_enabled": Bool(),
    "service_firewall_gateway_hosts": HOST_PATTERN,
    "service_firewall_allowed_sources": ListOf(IpAddress(network=True), 200),
    # --- role uwsgi_vassal -----------------------------------------------------------------
    "uwsgi_vassal_vassals_dir": AbsPath(200, min_depth=2),
    "uwsgi_vassal_socket_group": AnyOf(EMPTY, Str(NAME_PATTERN, "a group name", 32),
                                       rule="empty (nginx's group) or a group name of a-z, 0-9, '_' and '-'"),
    "uwsgi_vassal_pip_source": Choice("index", "wheelhouse"),
    "uwsgi_vassal_pip_index_url": AnyOf(EMPTY, Url(("https", "http"), credentials=True, secret=True),
                                        rule="empty or an http(s) URL of a package index"),
    "uwsgi_vassal_pip_extra_args": AnyOf(EMPTY, Str(r"[A-Za-z0-9._:/=@+-]{1,200}(?: [A-Za-z0-9._:/=@+-]{1,200}){0,19}",
                                                    "pip arguments of letters, digits and ._:/=@+- separated by "
                                                    "single spaces", 1000)),
    "uwsgi_vassal_cache_dir": AbsPath(4096, min_depth=1),
    "uwsgi_vassal_force": Bool(),
    "uwsgi_vassal_log_requests": Bool(),
    "uwsgi_vassal_log_retention_days": Int(1, 3650),
    "uwsgi_vassal_reload_timeout": Int(5, 3600),
    "uwsgi_vassal_bind_address": IpAddress(),
    "uwsgi_vassal_gateway_host": INVENTORY_HOST,
    "uwsgi_vassal_gateway_url": Url(("http", "https"), max_len=200),
    "uwsgi_vassal_gateway_validate_certs": Bool(),
    "uwsgi_vassal_migrate_host": AnyOf(EMPTY, INVENTORY_HOST),
    "uwsgi_vassal_rollback_service": Str(NAME_PATTERN, "a service name", 32),
    "uwsgi_vassal_platform": PLATFORM,
    "uwsgi_vassal_hardening": Bool(),
    "uwsgi_vassal_read_write_paths": ListOf(AbsPath(200, not_system=True, min_depth=2), 50),
    "uwsgi_vassal_limits": Bool(),
    "uwsgi_vassal_memory_max": MEMORY_LIMIT,
    "uwsgi_vassal_tasks_max": Int(16, 100000),
    "uwsgi_vassal_cpu_weight": Int(1, 10000),
    "uwsgi_vassal_rollback_release": AnyOf(EMPTY, Str(r"[0-9a-f]{12}", "a release id (12 hex digits)", 12)),
    "uwsgi_vassal_rollback_across_migrations": CommandLine(Bool()),
    # The deploy lock: often given with -e for one run.
    "uwsgi_vassal_lock_timeout": CommandLine(Int(0, 86400, " seconds (0: fail at once when another run holds it)")),
    "uwsgi_vassal_lock_lease": CommandLine(Int(60, 86400, " seconds")),
}

# --- gateway features: ACME, HTTP/2, compression, logs, metrics, maintenance ----------------
# Their checks live next to the rules that involve several of them (the gateway role runs
# those before its play changes anything); this table includes them all.
from ansible_collections.microsvc.deploy.plugins.plugin_utils.gateway_settings import CHECKS as _GATEWAY_CHECKS

SETTINGS.update(_GATEWAY_CHECKS)
# --- end of the gateway features' block ----------------------------------------------------


# Settings that several roles (and the plan) need, declared once, with their one default: the
# plan publishes them as microsvc_plan.settings, and every role's default for such a variable
# reads it there, so no role reads another role's variables.
# key in the plan -> (the variable users set, its default; None: [the services' root]).
SHARED = {
    "listen": ("nginx_gateway_listen", 80),
    "tls_enabled": ("nginx_gateway_tls_enabled", False),
    "tls_redirect": ("nginx_gateway_tls_redirect", True),
    "tls_port": ("nginx_gateway_tls_port", 443),
    "check_port": ("nginx_gateway_check_port", 8099),
    "stub_status_port": ("nginx_gateway_stub_status_port", 8098),
    "metrics_port": ("nginx_gateway_metrics_port", 9113),
    # Where the gateway writes each service's access and error logs (playbooks/logs.yml reads them).
    "service_log_dir": ("nginx_gateway_service_log_dir", "/var/log/nginx/microsvc"),
    "emperor_metrics_port": ("uwsgi_emperor_metrics_port", 9100),
    "emperor_service": ("uwsgi_emperor_service_name", "uwsgi-emperor"),
    "vassals_dir": ("uwsgi_emperor_vassals_dir", "/etc/uwsgi/vassals"),
    "hardening": ("uwsgi_emperor_hardening", True),
    "read_write_paths": ("uwsgi_emperor_read_write_paths", None),
    "pip_source": ("uwsgi_vassal_pip_source", "index"),
    "pip_index_url": ("uwsgi_vassal_pip_index_url", ""),
}


def shared_settings(values, root):
    """microsvc_plan.settings: each shared setting from ``values`` (what the inventory or the
    command line sets, already checked), else its default."""
    out = {}
    for key, (name, default) in SHARED.items():
        value = values.get(name, [root] if default is None else default)
        if isinstance(default, bool) and not isinstance(value, bool):
            value = str(value).lower() in ("true", "yes", "1")
        elif isinstance(default, int) and not isinstance(default, bool) and str(value).isdigit():
            value = int(value)
        out[key] = value
    return out


# Role variables that the plan replaced: setting one fails the validation with the way to go.
REMOVED = {
    "nginx_gateway_hosts": "removed: the plan places the routes from microsvc_gateway_hosts "
                           "(service_plan_gateway_hosts); set that instead",
    "nginx_gateway_app_hosts": "removed: the plan places the routes from microsvc_app_hosts "
                               "(service_plan_app_hosts); set that instead",
    "uwsgi_vassal_gateway_hosts": "removed: the plan places the services from microsvc_gateway_hosts "
                                  "(service_plan_gateway_hosts); set that instead",
    "uwsgi_vassal_gateway_check_port": "removed: health checks use the gateway's own check server port, "
                                       "nginx_gateway_check_port; set that instead",
}


def removed_settings(names):
    """Messages for the removed settings among ``names``."""
    return ["setting '%s': %s" % (name, REMOVED[name]) for name in sorted(set(names) & set(REMOVED))]


def check_settings(values):
    """Messages for every setting in ``values`` (name -> value) that its check refuses."""
    errors = []
    for name in sorted(values):
        check = SETTINGS.get(name)
        if check is None:
            continue
        value = values[name]
        msg = check(value)
        if msg:
            errors.append("setting '%s': %s" % (name, msg))
    return errors
