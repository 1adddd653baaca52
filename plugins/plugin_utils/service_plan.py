# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Validate and normalize the service list (controller side, no host involved).

The schema of one service is the entry point ``service`` of
``roles/service_plan/meta/argument_specs.yml`` (types, defaults, choices, nested fields);
this module reads each item against it and then applies ``FIELD_CHECKS``, an allow-list
check for every field that reaches a file, a command, a path or a URL, and the checks a
schema cannot say: reserved account names, duplicates, route nesting, paths that must
stay inside the service's root, the uWSGI option allow-list. Every error names the
service and the field and says what is allowed; all errors are reported at once.

Kept free of Ansible's plugin machinery so that unit tests import it directly.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import os
import posixpath
import re
import zlib

from ansible_collections.microsvc.deploy.plugins.module_utils.paths import service_paths
from ansible_collections.microsvc.deploy.plugins.plugin_utils import cron, uwsgi_options
from ansible_collections.microsvc.deploy.plugins.plugin_utils.checks import (
    MODULE_PATTERN,
    NAME_PATTERN,
    AbsPath,
    Anything,
    Argv,
    Check,
    Int,
    ListOf,
    MapOf,
    RelPath,
    Scalar,
    Str,
    dot_segments,
    has_control,
    kind_of,
    no_uwsgi_magic,
    show,
    size_check,
)
from ansible_collections.microsvc.deploy.plugins.plugin_utils.sources import SourceError

# --- allow-lists of the service fields ------------------------------------------------------

SEGMENT = r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*|\.[A-Za-z0-9_~-][A-Za-z0-9._~-]*"


def _no_dot_segments(value):
    bad = dot_segments(value)
    return "%s %s" % (show(value), bad) if bad else None


def _git_path(repo):
    """The path part of a git URL (after the host), or the local path."""
    if "://" in repo:
        rest = repo.split("://", 1)[1]
        return "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    if not repo.startswith("/") and ":" in repo:
        return repo.split(":", 1)[1]
    return repo


# The gateway's internal locations of accel_redirect (/_accel/<name>/): no route below it.
ACCEL_PREFIX = "/_accel/"


def _route_extra(value):
    if value.startswith(ACCEL_PREFIX):
        return "%s is below %s, which the gateway keeps for its internal locations" % (show(value), ACCEL_PREFIX)
    return _no_dot_segments(value)


ROUTE = Str(r"/(?:(?:%s)/)+" % SEGMENT,
            "a URL path that begins and ends with '/', with at least one segment of letters, digits and ._~- "
            "between slashes (no '.' or '..' segments, no '%', not below /_accel/)", 200, extra=_route_extra)
HEALTH_PATH = Str(r"(?:(?:%s)/)*(?:%s)?(?:\?[A-Za-z0-9._~=&-]{0,200})?" % (SEGMENT, SEGMENT),
                  "a relative URL path below the service's route (no leading '/', no '.' or '..' segments, "
                  "no '%'), optionally with a query of letters, digits and ._~=&-", 300, extra=_no_dot_segments)
STATIC_URL = Str(r"(?:(?:%s)/)+" % SEGMENT,
                 "a relative URL path below the route that ends with '/' (no '.' or '..' segments)", 100,
                 extra=_no_dot_segments)
MODULE = Str(r"%s(?::[A-Za-z_][A-Za-z0-9_]*)?" % MODULE_PATTERN,
             "an importable Python module path such as 'project.wsgi' or 'app:application'", 200)
SETTINGS_MODULE = Str(MODULE_PATTERN, "a Python module path such as 'project.settings'", 200)
PYTHON = Str(r"/usr(?:/local)?/bin/python3(?:\.[0-9]{1,2})?",
             "an interpreter installed with the system: /usr/bin/python3[.N] or /usr/local/bin/python3[.N] "
             "(the operator may allow others with microsvc_allowed_pythons)", 100)
REQUIREMENT = Str(
    r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,99})"                      # project name
    r"(?:\[[A-Za-z0-9._-]+(?:, ?[A-Za-z0-9._-]+)*\])?"        # extras
    r"(?: ?(?:===|==|!=|<=|>=|~=|<|>) ?[A-Za-z0-9.*+!_-]+"     # version specifiers
    r"(?: ?, ?(?:===|==|!=|<=|>=|~=|<|>) ?[A-Za-z0-9.*+!_-]+)*)?"
    r"(?: ?; ?[A-Za-z0-9_.<>=!~'\" ()-]{1,200})?",              # environment marker
    "a requirement specifier such as 'Django>=5.2,<5.3' or 'redis[hiredis]==5.0.1' (no pip options, "
    "no URLs, no comments)", 300)
GIT_PATH = r"[A-Za-z0-9._~+][A-Za-z0-9._~+-]*(?:/[A-Za-z0-9._~+][A-Za-z0-9._~+-]*)*"
GIT_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?"
GIT_REPO = Str(
    r"https://%(host)s(?::[0-9]{1,5})?/%(path)s/?"
    r"|ssh://(?:[A-Za-z0-9][A-Za-z0-9._-]*@)?%(host)s(?::[0-9]{1,5})?/%(path)s/?"
    r"|[A-Za-z0-9][A-Za-z0-9._-]*@%(host)s:%(path)s/?"
    r"|file:///%(path)s/?"
    r"|/%(path)s/?" % {"host": GIT_HOST, "path": GIT_PATH},
    "a git URL over https://host/path, ssh://[user@]host/path, user@host:path, or a local repository "
    "(file:///path or /path); no credentials in the URL (use a credential helper or an SSH key)",
    500, extra=lambda v: _no_dot_segments(_git_path(v)))
GIT_VERSION = Str(r"[A-Za-z0-9_][A-Za-z0-9._/+-]{0,199}",
                  "a branch, tag or commit: letters, digits and ._/+- not starting with '-' or '.'", 200,
                  extra=lambda v: ("%s has '..', '//' or ends with '/', '.' or '.lock'" % show(v)
                                   if ".." in v or "//" in v or v.endswith(("/", ".", ".lock")) else None))
EXCLUDE = Str(r"[A-Za-z0-9._*?\[\]!+-]+(?:/[A-Za-z0-9._*?\[\]!+-]+)*",
              "a file name pattern of letters, digits and ._*?[]!+-", 100)
CONTROLLER_PATH = Str(r"[^\x00]+", "a path on the controller without control characters", 4096)
ENV_NAME = Str(r"[A-Za-z_][A-Za-z0-9_]{0,127}", "an environment variable name ([A-Za-z_][A-Za-z0-9_]*, "
               "at most 128 characters)", 128)
REGEX = Str(r"[^\x00]*", "a regular expression without control characters, at most 500 characters", 500)

PROGRAM = r"python|[A-Za-z0-9_][A-Za-z0-9._+-]{0,99}"
ARGUMENT = Str(r"[^\x00]{0,1000}", "one line of at most 1000 characters", 1000)


class Command(Check):
    """A command run without a shell, as a list of arguments (the first names the program)."""

    def __init__(self, max_items=50):
        self.items = ListOf(ARGUMENT, max_items)
        self.rule = ("a command as a list of at most %d arguments (no shell), each one line of at most 1000 "
                     "characters; the first is 'python', a program name (letters, digits and ._+-), an absolute "
                     "path or a path inside the release, without '.' or '..' segments" % max_items)

    def __call__(self, value):
        msg = self.items(value)
        if msg or not value:
            return msg
        first = value[0]
        if re.fullmatch(PROGRAM, first):
            return None
        check = AbsPath(4096) if first.startswith("/") else RelPath()
        msg = check(first)
        return "item 1 (the program): %s" % msg.replace(check.rule, self.rule) if msg else None


# Environment variable names a service may not set: the dynamic loader's (they would reach
# every process started from the environment), uWSGI's own configuration variables (a
# reload re-reads them as options), and the names the collection sets itself.
RESERVED_ENV = ("LD_*", "UWSGI_*", "MICROSVC_*")

# A service's memory limit (MemoryMax= of its slice): never unlimited, never all of the host.
MEMORY_LIMIT = Str(r"[1-9][0-9]{0,5}[MG]|[1-9][0-9]?%", "a size in M or G such as 512M or 2G (at most 999999), or a "
                   "share of the host's memory from 1% to 99%", 8)

# Workers, schedules and release commands: names become systemd unit names and log directories.
PROC_NAME = Str(NAME_PATTERN, "a lowercase letter then up to 31 of a-z, 0-9, '_' and '-' (it becomes a systemd "
                "unit name and a directory name)", 32)
MAX_PROCS = 20

# field (dotted) -> check. Booleans and fields with choices are fully checked by the schema.
# A field below a list of entries (workers.argv) is checked in every entry.
# A unit test requires an entry for every other field of the schema.
FIELD_CHECKS = {
    "name": Str(NAME_PATTERN, "a lowercase letter then up to 31 of a-z, 0-9, '_' and '-' (it becomes a "
                "path, a user, a file name and an nginx upstream name)", 32),
    "route": ROUTE,
    "source.path": CONTROLLER_PATH,
    "source.repo": GIT_REPO,
    "source.version": GIT_VERSION,
    "source.exclude": ListOf(EXCLUDE, 100),
    "socket": AbsPath(107),
    "port": None,  # the Planner's ServicePort: it knows the ports the hosts use
    "module": MODULE,
    "wsgi_file": RelPath((".py", ".wsgi")),
    "requirements": ListOf(REQUIREMENT, 500),
    "requirements_file": RelPath(),
    "python": PYTHON,
    "processes": Int(1, 256),
    "threads": Int(1, 256),
    "harakiri": Int(0, 86400, " (0 disables)"),
    "max_requests": Int(0, 10000000, " (0 disables)"),
    "buffer_size": Int(4096, 65535),
    "env": MapOf(ENV_NAME, Scalar(8192, secret=True), 500),
    "health.path": HEALTH_PATH,
    "health.status": ListOf(Int(100, 599), 20, min_items=1),
    "health.body": REGEX,
    "health.timeout": Int(1, 300),
    "health.retries": Int(1, 100),
    "health.delay": Int(0, 60),
    "client_max_body_size": size_check(),
    "read_timeout": Int(1, 86400),
    "websocket_timeout": Int(1, 86400),
    "websocket_grace": Int(1, 3600),
    "send_timeout": Int(1, 86400),
    "rate_limit.rate": Str(r"[1-9][0-9]{0,5}r/[sm]", "an nginx rate such as 10r/s or 600r/m (at most 999999)",
                           12),
    "rate_limit.burst": Int(0, 100000),
    "limits.memory": MEMORY_LIMIT,
    "limits.tasks": Int(16, 100000),
    "limits.cpu_weight": Int(1, 10000),
    "keep_releases": Int(2, 100),
    "django.settings": SETTINGS_MODULE,
    "django.manage": RelPath((".py",)),
    "django.static_url": STATIC_URL,
    "django.pre_migrate": Command(50),
    "django.pre_migrate_timeout": Int(1, 86400),
    "uwsgi_options": MapOf(Str(r"[a-z0-9][a-z0-9-]{0,63}", "a uWSGI option name", 64), Anything(), 100),
    # -- the service's other processes: workers, schedules, release commands ----------------
    "workers": ListOf(Anything(), MAX_PROCS),
    "workers.name": PROC_NAME,
    "workers.argv": Argv(),
    "workers.count": Int(1, 32),
    "workers.grace": Int(1, 3600),
    "workers.start_seconds": Int(1, 120),
    "schedules": ListOf(Anything(), MAX_PROCS),
    "schedules.name": PROC_NAME,
    "schedules.argv": Argv(),
    "schedules.cron": Str(r"[0-9A-Za-z*/,@ -]{1,200}", cron.RULE, 200, extra=cron.check),
    "schedules.interval": Int(1, 30 * 86400, " seconds (30 days; use cron for longer periods)"),
    "schedules.timeout": Int(1, 86400),
    "schedules.keep_logs": Int(1, 1000),
    "release_commands": ListOf(Anything(), MAX_PROCS),
    "release_commands.name": PROC_NAME,
    "release_commands.argv": Argv(),
    "release_commands.timeout": Int(1, 86400),
}
# The fields above that are lists of named entries.
PROC_LISTS = ("workers", "schedules", "release_commands")

# Account names a service may never take: the system's, the distributions' service
# accounts, cloud images' login users, and groups with special powers. A name not in this
# list that exists on a host as an account the collection did not create is refused on that
# host before it changes (microsvc.deploy.host_preflight).
RESERVED_ACCOUNTS = frozenset("""
root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc gnats nobody nogroup
_apt messagebus sshd polkitd avahi postfix ntp ntpsec chrony tss uuidd tcpdump dnsmasq usbmux rtkit
pulse colord geoclue statd rpc rpcuser nscd nslcd sssd dhcpcd landscape pollinate fwupd-refresh
syslog ftp halt shutdown operator adm tty disk kmem dialout fax voice cdrom floppy tape sudo audio dip
src shadow utmp video sasl plugdev staff users wheel input sgx kvm render netdev crontab ssl-cert docker
lxd admin ubuntu ec2-user centos rocky almalinux fedora cloud-user debian opc azureuser core bitnami
nginx uwsgi apache httpd postgres mysql redis memcache memcached rabbitmq mongodb elasticsearch
microsvc www www-admin git gitlab-runner jenkins ansible vagrant
""".split())  # noqa: SIM905 - a word list reads best as words
RESERVED_ACCOUNT_PREFIXES = ("systemd-", "_")

# Longest path of a unix socket (sun_path holds 108 bytes with the final NUL).
UNIX_PATH_MAX = 107

# Default TCP ports of the split layout: below Linux's ephemeral range (32768-60999).
PORT_BASE, PORT_SPAN = 10000, 20000

# A service's TCP port on an app host (the split layout) may not be one the host itself uses:
# Linux's ephemeral range (the local ports of outgoing connections: the service firewall would
# drop replies to a connection whose local port became a service port), and the ports of the
# collection's own listeners and the usual host agents. Ports below 1024 need privileges.
EPHEMERAL_PORTS = (32768, 60999)
RESERVED_PORTS = {
    22: "SSH",
    80: "the gateway's HTTP listener (nginx_gateway_listen)",
    443: "the gateway's HTTPS listener (nginx_gateway_tls_port)",
    8098: "nginx's stub_status (nginx_gateway_stub_status_port)",
    8099: "the gateway's check server (nginx_gateway_check_port)",
    9100: "the node exporter (uwsgi_emperor_metrics_port)",
    9113: "the nginx exporter (nginx_gateway_metrics_port)",
}


class ServicePort(Check):
    """A service's TCP port: 1024-65535, outside the ephemeral range and the reserved ports."""

    def __init__(self, reserved=None):
        self.reserved = dict(RESERVED_PORTS if reserved is None else reserved)
        listed = ", ".join("%d (%s)" % item for item in sorted(self.reserved.items()) if item[0] >= 1024)
        self.rule = ("an integer from 1024 to 65535, outside the Linux ephemeral range %d-%d (the local ports of "
                     "outgoing connections) and not a port the hosts use: %s"
                     % (EPHEMERAL_PORTS + (listed or "none",)))

    def __call__(self, value):
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be %s, got %s" % (self.rule, kind_of(value))
        if not 1024 <= value <= 65535:
            return "must be %s, got %d" % (self.rule, value)
        if EPHEMERAL_PORTS[0] <= value <= EPHEMERAL_PORTS[1]:
            return "%d is in the Linux ephemeral range %d-%d; must be %s" % ((value,) + EPHEMERAL_PORTS + (self.rule,))
        if value in self.reserved:
            return "%d is the port of %s; must be %s" % (value, self.reserved[value], self.rule)
        return None


FIELD_CHECKS["port"] = ServicePort()

# Fields that make no sense as a default shared by all services.
PER_SERVICE_ONLY = ("name", "route", "source")

# Fields that only one interface uses: given in a service's own entry for the other, they are
# refused (from microsvc_service_defaults they apply only to the services of their interface).
ASGI_ONLY = ("websocket_timeout", "websocket_grace")
WSGI_ONLY = ("wsgi_file", "socket", "threads", "harakiri", "max_requests", "buffer_size", "uwsgi_options",
             "accel_redirect")
# The ASGI server the plan adds to an ASGI service's requirements (its virtualenv, built from the
# wheelhouse like the rest): uvicorn, with httptools for HTTP and websockets for WebSockets.
# Why uvicorn: roles/uwsgi_vassal/README.md, "ASGI services".
ASGI_SERVER_REQUIREMENTS = ("uvicorn==0.55.0", "httptools==0.9.0", "websockets==17.4")

_MISSING = object()


class PlanError(Exception):
    """Raised with every validation error found, one per line."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


def load_service_spec(argument_specs):
    """Return the ``service`` entry point's options as an argument spec dict."""
    try:
        return argument_specs["argument_specs"]["service"]["options"]
    except (KeyError, TypeError) as exc:
        raise ValueError("argument_specs has no entry point 'service'") from exc


def spec_leaves(spec, prefix=""):
    """(dotted field, option) of every field of the schema, nested ones included."""
    for key, opt in spec.items():
        if opt.get("options"):
            yield from spec_leaves(opt["options"], prefix + key + ".")
        else:
            yield prefix + key, opt


def _label(index, item):
    name = item.get("name") if isinstance(item, dict) else None
    if isinstance(name, str) and name and not has_control(name) and len(name) <= 64:
        return "service '%s'" % name
    if isinstance(name, str) and name:
        return "service #%d (name %s)" % (index + 1, show(name))
    return "service #%d (no valid name)" % (index + 1)


def _interface_fields(interface, item):
    """(field, message) for each field of a service's own entry that its interface does not use."""
    if interface == "asgi":
        msg = ("not used by an ASGI service (interface: asgi): it is a setting of uWSGI, which does not run it; "
               "remove it, or set interface: wsgi")
        return [(key, msg) for key in WSGI_ONLY if key in item]
    return [(key, "only for an ASGI service (interface: asgi); this service is WSGI (interface: %s)" % interface)
            for key in ASGI_ONLY if key in item]


def _unknown_keys(item, spec, prefix=""):
    """Yield (field, message) for keys that the spec does not know, with a suggestion."""
    for key in item:
        if key not in spec:
            shown = str(key) if isinstance(key, str) and not has_control(key) else show(key)
            near = difflib.get_close_matches(str(key), list(spec), n=1)
            hint = " (did you mean '%s'?)" % near[0] if near else ""
            yield prefix + shown[:64], "unknown field%s; known fields: %s" % (hint, ", ".join(sorted(spec)))
        elif spec[key].get("options") and isinstance(item[key], dict):
            yield from _unknown_keys(item[key], spec[key]["options"], prefix + key + ".")
        elif spec[key].get("options") and isinstance(item[key], list):
            for index, entry in enumerate(item[key]):
                if isinstance(entry, dict):
                    yield from _unknown_keys(entry, spec[key]["options"], "%s%s[%d]." % (prefix, key, index + 1))


def _deep_merge(base, over):
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --- reading an item against the schema ---------------------------------------------------

TYPE_WORDS = {"str": "a string", "path": "a string", "int": "an integer", "bool": "true or false",
              "list": "a list", "dict": "a mapping"}


def plain(value):
    """The value with Ansible's tagged types replaced by plain Python ones."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _coerce(kind, value):
    """(converted value, None) or (None, message) for one scalar or container of a type."""
    if kind in ("str", "path"):
        if isinstance(value, str):
            return str(value), None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value), None
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value), None
        if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,12}", value):
            return int(value), None
    elif kind == "bool":
        if isinstance(value, bool):
            return bool(value), None
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes"), None
    elif kind == "list":
        if isinstance(value, (list, tuple)):
            return list(value), None
    elif kind == "dict":
        if isinstance(value, dict):
            return dict(value), None
    else:  # raw
        return plain(value), None
    return None, "must be %s, got %s" % (TYPE_WORDS.get(kind, kind), kind_of(value))


def read_schema(spec, item, prefix=""):
    """Fill defaults, convert types and check choices/required fields of one mapping.

    Returns (values, [(field, message)]). Unknown keys are ignored here (reported apart)."""
    out, problems = {}, []
    for key, opt in spec.items():
        field = prefix + key
        value = item.get(key, _MISSING) if isinstance(item, dict) else _MISSING
        if value is None or value is _MISSING:
            if opt.get("required"):
                problems.append((field, "required"))
                continue
            default = copy.deepcopy(opt.get("default"))
            if opt.get("options") and isinstance(default, dict):
                default, sub = read_schema(opt["options"], default, field + ".")
                problems.extend(sub)
            out[key] = plain(default)
            continue
        kind = opt.get("type", "str")
        converted, msg = _coerce(kind, value)
        if msg:
            problems.append((field, msg))
            continue
        if kind == "list" and opt.get("elements"):
            items = []
            for index, element in enumerate(converted):
                conv, msg = _coerce(opt["elements"], element)
                if msg:
                    problems.append((field, "item %d %s" % (index + 1, msg)))
                    break
                if opt.get("options") and opt["elements"] == "dict":
                    # A list of entries (workers): each entry is read against the options.
                    conv, sub = read_schema(opt["options"], conv, "%s[%d]." % (field, index + 1))
                    problems.extend(sub)
                items.append(conv)
            converted = items
        elif opt.get("options"):
            converted, sub = read_schema(opt["options"], converted, field + ".")
            problems.extend(sub)
        if opt.get("choices") and converted not in opt["choices"]:
            problems.append((field, "%s is not allowed: must be one of %s" % (
                show(converted), ", ".join(repr(c) for c in opt["choices"]))))
            continue
        out[key] = plain(converted)
    return out, problems


def _parse_selection(selected):
    if selected is None:
        return [], []
    if isinstance(selected, str):
        names = [s.strip() for s in selected.split(",") if s.strip()]
    elif isinstance(selected, (list, tuple)):
        names = [s.strip() if isinstance(s, str) else s for s in selected]
    else:
        return [], ["deploy_services: must be a list of names or a comma-separated string, got %s"
                    % kind_of(selected)]
    bad = [n for n in names if not isinstance(n, str) or not re.fullmatch(NAME_PATTERN, n)]
    if bad:
        return [], ["deploy_services: %s is not a service name (%s)" % (show(bad[0]), FIELD_CHECKS["name"].rule)]
    return names, []


def _inside(path, root):
    path = posixpath.normpath(path)
    root = posixpath.normpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def reserved_account(name):
    return name in RESERVED_ACCOUNTS or name.startswith(RESERVED_ACCOUNT_PREFIXES)


def _get(svc, dotted):
    value = svc
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _field_values(svc, dotted):
    """(label, value) of a dotted field; a field below a list of entries yields one per entry
    (``workers[2].argv``). Missing values are left out."""
    found = [("", svc)]
    for part in dotted.split("."):
        following = []
        for label, value in found:
            if isinstance(value, list) and label:
                value = [(label + "[%d]" % (i + 1), entry) for i, entry in enumerate(value)]
            else:
                value = [(label, value)]
            for sub_label, entry in value:
                if isinstance(entry, dict) and entry.get(part) is not None:
                    following.append(((sub_label + "." if sub_label else "") + part, entry[part]))
        found = following
    return found


class Planner:
    """Turn the raw service list into the normalized plan, or raise PlanError."""

    def __init__(self, service_spec, root="/opt/www", route_prefix="/api/", base_dir=".",
                 secret_names=(), is_vaulted=None, source_roots=None, allowed_pythons=(),
                 prepare_source=None, reserved_ports=None):
        self.spec = service_spec
        # Ports the hosts use (port -> what listens there), refused as a service's port and
        # skipped by the default ports: the built-in table, with the values this run configures.
        reserved = dict(RESERVED_PORTS)
        reserved.update({int(k): str(v) for k, v in (reserved_ports or {}).items()})
        self.port_check = ServicePort(reserved)
        self.root = root
        self.route_prefix = route_prefix
        self.base_dir = base_dir
        # With is_vaulted (a predicate on a raw inventory value), env values whose names match
        # secret_names must come from ansible-vault.
        self.secret_names = [str(p) for p in secret_names or ()]
        self.is_vaulted = is_vaulted
        # Controller directories that local sources must be inside (None: anywhere).
        self.source_roots = None if source_roots is None else [os.path.realpath(r) for r in source_roots]
        self.allowed_pythons = list(allowed_pythons or ())
        # A callable svc -> release description (raises SourceError): fetches, inspects and
        # repacks the source on the controller (plugin_utils.sources.prepare_source).
        self.prepare_source = prepare_source

    def _check_secrets(self, services, defaults, errors):
        """Refuse secrets given in clear. Runs on the raw items: only they still carry the marks
        that say a value came from ansible-vault."""
        if self.is_vaulted is None:
            return
        sources = [("microsvc_service_defaults", defaults)]
        sources += [(_label(i, item), item) for i, item in enumerate(services)]
        for label, item in sources:
            env = item.get("env") if isinstance(item, dict) else None
            if not isinstance(env, dict):
                continue  # reported by the schema check
            for key, value in env.items():
                pattern = next((p for p in self.secret_names if fnmatch.fnmatchcase(str(key).upper(), p.upper())),
                               None)
                if pattern is not None and not self.is_vaulted(value):
                    errors.append(
                        "%s: field 'env.%s': the name matches the secret pattern %r but the value is not from "
                        "ansible-vault (microsvc_require_vault is on): encrypt it with ansible-vault "
                        "encrypt_string, or move it into a vault-encrypted vars file, or read it whole with "
                        "lookup('amazon.aws.ssm_parameter', ...) or lookup('amazon.aws.secretsmanager_secret', "
                        "...) and literal arguments" % (label, key, pattern))

    # -- per item --------------------------------------------------------------
    def _check_defaults(self, defaults, errors):
        if not isinstance(defaults, dict):
            errors.append("microsvc_service_defaults: must be a mapping of service fields, got %s"
                          % kind_of(defaults))
            return {}
        for key in PER_SERVICE_ONLY:
            if key in defaults:
                errors.append(
                    "microsvc_service_defaults: field '%s': cannot be shared by all services; set it per service" % key
                )
        for field, msg in _unknown_keys(defaults, self.spec):
            errors.append("microsvc_service_defaults: field '%s': %s" % (field, msg))
        return {k: v for k, v in defaults.items() if k in self.spec and k not in PER_SERVICE_ONLY}

    def _normalize_item(self, index, item, defaults, errors):
        label = _label(index, item)
        if not isinstance(item, dict):
            errors.append("%s: must be a mapping with at least 'name', got %s" % (label, kind_of(item)))
            return None
        before = len(errors)
        item = dict(item)
        if isinstance(item.get("source"), str):
            item["source"] = {"type": "dir", "path": item["source"]}

        for field, msg in _unknown_keys(item, self.spec):
            errors.append("%s: field '%s': %s" % (label, field, msg))
        known = {k: v for k, v in item.items() if k in self.spec}
        merged = _deep_merge(defaults, known)
        svc, problems = read_schema(self.spec, merged)
        for field, msg in problems:
            errors.append("%s: field '%s': %s" % (label, field, msg))
        if len(errors) > before:
            return None
        for field, msg in _interface_fields(svc["interface"], known):
            errors.append("%s: field '%s': %s" % (label, field, msg))
        if len(errors) > before:
            return None
        self._check_item(label, svc, errors)
        if len(errors) > before:
            return None
        return self._complete(svc)

    def _check_item(self, label, svc, errors):
        def bad(field, msg):
            errors.append("%s: field '%s': %s" % (label, field, msg))

        for field, check in FIELD_CHECKS.items():
            for where, value in _field_values(svc, field):
                if field == "python" and value in self.allowed_pythons:
                    continue
                if field == "port":
                    check = self.port_check
                if isinstance(check, MapOf) and isinstance(value, dict):
                    # One message per entry, naming it: field 'env.DB_HOST'.
                    if len(value) > check.max_items:
                        bad(where, "has %d entries; at most %d are allowed" % (len(value), check.max_items))
                    for key, entry in value.items():
                        msg = check.key(key)
                        if msg:
                            bad(where, "name %s" % msg)
                        elif check.value(entry):
                            bad("%s.%s" % (where, key), check.value(entry))
                    continue
                msg = check(value)
                if msg:
                    bad(where, msg)
        if any(("%s: field 'name'" % label) in e for e in errors):
            return
        if reserved_account(svc["name"]):
            bad("name", "%r is a system, service or cloud login account name; a service gets its own new "
                "account, so pick another name" % svc["name"])
        self._check_env(svc, bad)
        self._check_procs(svc, bad)
        self._check_uwsgi_options(svc, bad)
        self._check_health(svc, bad)
        if svc["state"] == "present":
            self._check_present(svc, bad)

    @staticmethod
    def _check_env(svc, bad):
        for key, value in svc["env"].items():
            if not isinstance(key, str) or FIELD_CHECKS["env"].key(key):
                continue  # reported by the table
            reserved = next((p for p in RESERVED_ENV if fnmatch.fnmatchcase(key, p)), None)
            if reserved:
                bad("env.%s" % key, "names matching %s are reserved (%s)" % (reserved, ", ".join(RESERVED_ENV)))
            elif key == "DJANGO_SETTINGS_MODULE" and (svc.get("django") or {}).get("settings"):
                bad("env.%s" % key, "is set from django.settings; set it in one place")
            elif FIELD_CHECKS["env"].value(value):
                continue  # reported by the table
            elif no_uwsgi_magic(str(value)):
                # uWSGI no longer reads the environment file (each worker does, without expansions),
                # but the refusal stays: no env value can ever become uWSGI configuration.
                bad("env.%s" % key, "the value %s, also in env values, so that none can ever be expanded"
                    % no_uwsgi_magic(str(value)))

    @staticmethod
    def _check_procs(svc, bad):
        """Workers, schedules and release commands: unique names; a schedule has exactly one of
        cron and interval."""
        for kind in PROC_LISTS:
            seen = set()
            for index, entry in enumerate(svc[kind]):
                name = entry.get("name")
                if not isinstance(name, str) or FIELD_CHECKS[kind + ".name"](name):
                    continue  # reported by the table
                if name in seen:
                    bad("%s[%d].name" % (kind, index + 1), "%r is already the name of another entry of %s; names "
                        "must be unique" % (name, kind))
                seen.add(name)
        for index, entry in enumerate(svc["schedules"]):
            if (entry.get("cron") is None) == (entry.get("interval") is None):
                bad("schedules[%d]" % (index + 1), "exactly one of 'cron' and 'interval' is required")

    @staticmethod
    def _check_uwsgi_options(svc, bad):
        rendered = {}
        for key, value in svc["uwsgi_options"].items():
            if FIELD_CHECKS["uwsgi_options"].key(key):
                continue  # reported by the table
            out, msg = uwsgi_options.check_option(key, value)
            if msg:
                bad("uwsgi_options.%s" % key, msg)
            else:
                rendered[key] = out
        svc["uwsgi_options"] = rendered

    @staticmethod
    def _check_health(svc, bad):
        body = svc["health"].get("body")
        if body is not None and not FIELD_CHECKS["health.body"](body):
            try:
                re.compile(body)
            except re.error as exc:
                bad("health.body", "not a valid regular expression: %s" % exc)

    def _check_present(self, svc, bad):
        """A present service needs code and an entry point."""
        src = svc.get("source")
        if not src:
            bad("source", "required for a present service (a directory, a git repository or an archive)")
        else:
            kind = src["type"]
            if kind in ("dir", "archive") and not src.get("path"):
                bad("source.path", "required when source.type is %s" % kind)
            if kind in ("dir", "archive") and src.get("repo"):
                bad("source.repo", "only used when source.type is git")
            if kind == "git" and not src.get("repo"):
                bad("source.repo", "required when source.type is git")
            if kind == "git" and src.get("path"):
                bad("source.path", "not used when source.type is git (use source.repo)")
            if kind == "archive" and src.get("path") and not re.search(r"\.(tar\.gz|tgz|tar|zip)\Z",
                                                                       src["path"]):
                bad("source.path", "%s is not a .tar.gz, .tgz, .tar or .zip archive" % show(src["path"]))
        if svc["interface"] == "asgi" and not svc.get("module"):
            bad("module", "required for an ASGI service (interface: asgi): the application as "
                "'package.module:attribute', e.g. 'myproject.asgi:application'")
        elif bool(svc.get("module")) == bool(svc.get("wsgi_file")):
            bad("module", "exactly one of 'module' and 'wsgi_file' is required for a present service")

    def _complete(self, svc):
        name = svc["name"]
        if svc["interface"] == "asgi":
            # The ASGI server goes into the service's virtualenv with its own requirements.
            svc["requirements"] = list(svc["requirements"]) + list(ASGI_SERVER_REQUIREMENTS)
            svc["websocket_timeout"] = svc.get("websocket_timeout") or svc.get("read_timeout") or 3600
        route = svc.get("route") or "%s%s/" % (self.route_prefix, name)
        svc["route"] = route
        svc["script_name"] = route.rstrip("/")
        svc["user"] = name
        svc["group"] = name
        # Every path of the service, from the host layout's one definition (module_utils/paths.py).
        paths = service_paths(self.root, name)
        paths["socket"] = svc.get("socket") or paths["socket"]
        if svc["interface"] == "asgi":
            # The gateway's address of an ASGI service: root's link to its live slot's socket
            # (module_utils/asgi.py), in the root-owned service directory.
            paths["socket"] = paths["root"] + "/asgi.sock"
        svc.update(paths)
        # The TCP port (used only on app hosts apart from the gateway) is set for the whole
        # list at once, in _assign_ports.
        svc["port_explicit"] = svc.get("port") is not None
        if svc.get("module") and ":" not in svc["module"]:
            svc["module"] = svc["module"] + ":application"
        src = svc.get("source")
        if src and src.get("path"):
            src["path"] = os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(src["path"])))
        if svc.get("health") is not None:
            svc["health"]["url_path"] = route + svc["health"]["path"]
        svc["env"] = {str(k): _env_value(v) for k, v in svc["env"].items()}
        for entry in svc["schedules"]:
            # The timer's OnCalendar= lines (cron's either-day rule may need two).
            entry["calendar"] = cron.on_calendar(entry["cron"]) if entry.get("cron") else []
        return svc

    # -- whole list ------------------------------------------------------------
    def plan(self, services, defaults=None, selected=None, check_sources=True, errors=None):
        errors = [] if errors is None else list(errors)
        if services is None:
            services = []
        if not isinstance(services, list):
            raise PlanError(errors + ["microsvc_services: must be a list of services (each a mapping with at least "
                                      "'name'), got %s" % kind_of(services)])
        if len(services) > 1000:
            raise PlanError(errors + ["microsvc_services: %d services; at most 1000 are allowed" % len(services)])
        self._check_secrets(services, defaults or {}, errors)
        shared = self._check_defaults(defaults if defaults is not None else {}, errors)
        normalized = []
        for index, item in enumerate(services):
            svc = self._normalize_item(index, item, shared, errors)
            if svc is not None:
                normalized.append(svc)
        self._assign_ports(normalized, self.port_check.reserved)
        self._check_across(normalized, errors)
        wanted, selection_errors = _parse_selection(selected)
        errors.extend(selection_errors)
        names = [s["name"] for s in normalized]
        for name in wanted:
            if name not in names:
                errors.append(
                    "deploy_services: unknown service %r (services in the list: %s)"
                    % (name, ", ".join(names) or "none")
                )
        if check_sources:
            for svc in normalized:
                if svc["state"] == "present" and (not wanted or svc["name"] in wanted):
                    self._check_source(svc, errors)
        if errors:
            raise PlanError(errors)
        present = [s["name"] for s in normalized if s["state"] == "present"]
        absent = [s["name"] for s in normalized if s["state"] == "absent"]
        selected_names = [n for n in names if not wanted or n in wanted]
        # Accounts the hosts must check before they change: every present service's, and those a
        # purge would remove.
        accounts = [{"name": s["name"], "root": s["root"]} for s in normalized
                    if s["state"] == "present" or s["purge"]]
        return {
            "accounts": accounts,
            "root": self.root,
            "services": normalized,
            "names": names,
            "present": present,
            "absent": absent,
            "selected": selected_names,
            "selection_given": bool(wanted),
        }

    @staticmethod
    def _assign_ports(services, reserved=()):
        """A port for every service without one: derived from its name, in 10000-29999 (below
        Linux's ephemeral range), moved to the next free port on a collision or a port the hosts
        use. Services are taken in name order, so a port depends only on the names in the list
        (and the reserved ports), not their order."""
        used = {s["port"] for s in services if s["port_explicit"]} | set(reserved)
        for svc in sorted((s for s in services if not s["port_explicit"]), key=lambda s: s["name"]):
            offset = zlib.crc32(svc["name"].encode("utf-8")) % PORT_SPAN
            while PORT_BASE + offset in used:
                offset = (offset + 1) % PORT_SPAN
            svc["port"] = PORT_BASE + offset
            used.add(svc["port"])

    def _check_across(self, services, errors):
        for key in ("name", "route", "socket", "port"):
            seen = {}
            for svc in services:
                value = svc[key]
                if value in seen:
                    errors.append("service '%s': field '%s': %r is already used by service '%s'"
                                  % (svc["name"], key, value, seen[value]))
                else:
                    seen[value] = svc["name"]
        routes = sorted(
            ((s["route"], s["name"]) for s in services if s["state"] == "present"), key=lambda r: len(r[0])
        )
        for i, (outer, outer_name) in enumerate(routes):
            for inner, inner_name in routes[i + 1:]:
                if inner != outer and inner.startswith(outer):
                    errors.append(
                        "service '%s': field 'route': %r is nested inside route %r of service '%s'; "
                        "routes may not nest" % (inner_name, inner, outer, outer_name)
                    )
        for svc in services:
            directory, base = posixpath.split(svc["socket"])
            # Only the root-owned service directory: uWSGI binds the socket as root and then
            # chowns and chmods it by path, so in run/ (the service's own directory) the service
            # could swap the socket for a link to any file between the bind and the chown.
            if directory != svc["root"] \
                    or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}\.sock", base) or svc["socket"] == svc["stats_socket"]:
                errors.append(
                    "service '%s': field 'socket': %r is not allowed: must be %s/<name>.sock "
                    "(letters, digits, '_' and '-'; not in run/, which the service can write)"
                    % (svc["name"], svc["socket"], svc["root"]))
            longest = max(svc["socket"], svc["stats_socket"], key=len)
            if len(longest) > UNIX_PATH_MAX:
                errors.append(
                    "service '%s': field 'name': the socket path %r is %d characters long; unix sockets allow "
                    "at most %d: use a shorter name or microsvc_root"
                    % (svc["name"], longest, len(longest), UNIX_PATH_MAX))

    def _check_source(self, svc, errors):
        """Where the source is on the controller, then (when a preparer is set) fetch, inspect and
        repack it: its problems join the same report."""
        src = svc["source"]
        label = "service '%s'" % svc["name"]
        local = src.get("path")
        field = "source.path"
        if src["type"] == "git":
            repo = src["repo"]
            local = repo[len("file://"):] if repo.startswith("file://") else (repo if repo.startswith("/") else None)
            if local and not os.path.isabs(local):
                local = None
            field = "source.repo"
        if local is not None and self.source_roots is not None:
            real = os.path.realpath(local)
            if not any(real == r or real.startswith(r.rstrip("/") + "/") for r in self.source_roots):
                errors.append("%s: field '%s': %s is outside the directories that sources may come from on "
                              "the controller (microsvc_source_roots: %s)"
                              % (label, field, show(local), ", ".join(self.source_roots) or "none"))
                return
        if src["type"] == "dir" and not os.path.isdir(src["path"]):
            errors.append("%s: field 'source.path': directory %s does not exist on the controller"
                          % (label, show(src["path"])))
            return
        if src["type"] == "archive" and not os.path.isfile(src["path"]):
            errors.append("%s: field 'source.path': archive %s does not exist on the controller"
                          % (label, show(src["path"])))
            return
        if self.prepare_source is None:
            return
        try:
            svc["artifact"] = self.prepare_source(svc)
        except SourceError as exc:
            errors.append("%s: field '%s': %s" % (label, getattr(exc, "field", None) or field, exc))


def _env_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
