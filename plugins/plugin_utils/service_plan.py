# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Validate and normalize the service list (controller side, no host involved).

The schema of one service is the entry point ``service`` of
``roles/service_plan/meta/argument_specs.yml``; this module checks each item against
it (unknown keys, types, choices, defaults) and then what a schema cannot say:
safe names, duplicates, route syntax and nesting, paths that must stay inside the
service's root. Every error names the service and the field.

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

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
ROUTE_RE = re.compile(r"^/(?:[A-Za-z0-9._~-]+/)*$")
MODULE_RE = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?::[A-Za-z_][A-Za-z0-9_]*)?$"
)
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SIZE_RE = re.compile(r"^[0-9]+[kKmMgG]?$")
RATE_RE = re.compile(r"^[1-9][0-9]*r/[sm]$")
REL_URL_RE = re.compile(r"^(?:[A-Za-z0-9._~-]+/)*[A-Za-z0-9._~-]*$")
UWSGI_OPTION_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")

# Options the vassal template owns; letting uwsgi_options override them would break
# the layout, the privilege drop or the reload mechanism.
RESERVED_UWSGI_OPTIONS = frozenset(
    [
        "socket", "uwsgi-socket", "http-socket", "http", "https", "chmod-socket", "chown-socket", "uid",
        "gid", "chdir", "home", "virtualenv", "venv", "pyhome", "module", "wsgi", "wsgi-file", "file",
        "pythonpath", "python-path", "pp", "master", "processes", "workers", "threads", "enable-threads",
        "lazy-apps", "lazy", "need-app", "die-on-term", "vacuum", "touch-chain-reload", "touch-reload",
        "stats", "stats-server", "logto", "logto2", "daemonize", "plugins", "plugin", "emperor",
        "manage-script-name", "for-readline", "env", "hook-post-fork", "harakiri", "max-requests",
        "buffer-size", "mount", "mountpoint", "strict", "uwsgi", "umask", "procname-prefix-spaced",
        "logfile-chown", "log-reopen",
    ]
)

# Default TCP ports of the split layout: below Linux's ephemeral range (32768-60999).
PORT_BASE, PORT_SPAN = 10000, 20000

# Fields that make no sense as a default shared by all services.
PER_SERVICE_ONLY = ("name", "route", "source")


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


def _strip_descriptions(spec):
    """ArgumentSpecValidator rejects no key, but keep only what it understands."""
    keep = ("type", "elements", "default", "choices", "required", "options", "no_log")
    out = {}
    for key, opt in spec.items():
        entry = {k: copy.deepcopy(v) for k, v in opt.items() if k in keep}
        if "options" in entry:
            entry["options"] = _strip_descriptions(entry["options"])
        out[key] = entry
    return out


def _label(index, item):
    name = item.get("name") if isinstance(item, dict) else None
    if isinstance(name, str) and name:
        return "service '%s'" % name
    return "service #%d (no valid name)" % (index + 1)


def _unknown_keys(item, spec, prefix=""):
    """Yield (field, message) for keys that the spec does not know, with a suggestion."""
    for key in item:
        if key not in spec:
            near = difflib.get_close_matches(str(key), list(spec), n=1)
            hint = " (did you mean '%s'?)" % near[0] if near else ""
            yield prefix + str(key), "unknown field%s; known fields: %s" % (
                hint,
                ", ".join(sorted(spec)),
            )
        elif spec[key].get("options") and isinstance(item[key], dict):
            yield from _unknown_keys(item[key], spec[key]["options"], prefix + key + ".")


def _deep_merge(base, over):
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _parse_selection(selected):
    if selected is None:
        return []
    if isinstance(selected, str):
        return [s.strip() for s in selected.split(",") if s.strip()]
    if isinstance(selected, (list, tuple)):
        return [str(s).strip() for s in selected if str(s).strip()]
    raise PlanError(["deploy_services: expected a list or a comma-separated string, got %s" % type(selected).__name__])


def _inside(path, root):
    path = posixpath.normpath(path)
    root = posixpath.normpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


class Planner:
    """Turn the raw service list into the normalized plan, or raise PlanError."""

    def __init__(self, service_spec, root="/opt/www", route_prefix="/api/", base_dir=".",
                 secret_names=(), is_vaulted=None):
        self.spec = service_spec
        self.validator = ArgumentSpecValidator(_strip_descriptions(service_spec))
        self.root = root
        self.route_prefix = route_prefix
        self.base_dir = base_dir
        # With is_vaulted (a predicate on a raw inventory value), env values whose names match
        # secret_names must come from ansible-vault.
        self.secret_names = [str(p) for p in secret_names or ()]
        self.is_vaulted = is_vaulted

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
            errors.append("microsvc_service_defaults: expected a mapping, got %s" % type(defaults).__name__)
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
            errors.append("%s: expected a mapping with at least 'name', got %s" % (label, type(item).__name__))
            return None
        before = len(errors)
        item = dict(item)
        if isinstance(item.get("source"), str):
            item["source"] = {"type": "dir", "path": item["source"]}

        for field, msg in _unknown_keys(item, self.spec):
            errors.append("%s: field '%s': %s" % (label, field, msg))
        known = {k: v for k, v in item.items() if k in self.spec}
        merged = _deep_merge(defaults, known)
        result = self.validator.validate(merged)
        for err in result.errors:
            if type(err).__name__ == "UnsupportedError":
                continue  # reported above with a suggestion
            errors.append("%s: %s" % (label, self._field_message(err)))
        if len(errors) > before:
            return None
        # The validator fills in defaults by reference: a service without "health" would share
        # one dict with every other such service. Each service gets its own copy.
        svc = copy.deepcopy(result.validated_parameters)
        self._check_item(label, svc, errors)
        if len(errors) > before:
            return None
        return self._complete(svc)

    @staticmethod
    def _field_message(err):
        msg = str(err)
        missing = re.match(r"missing required arguments: (.*?)(?: found in (\S+))?$", msg)
        if missing:
            fields = [f.strip() for f in missing.group(1).split(",")]
            prefix = missing.group(2) + "." if missing.group(2) else ""
            return "; ".join("field '%s%s': required" % (prefix, f) for f in fields)
        match = re.search(r"(?:argument|parameter|option) '([^']+)'(?: found in '([^']+)')?", msg)
        if match:
            field = match.group(1) if not match.group(2) else "%s.%s" % (match.group(2), match.group(1))
            return "field '%s': %s" % (field, msg)
        return msg

    def _check_item(self, label, svc, errors):
        def bad(field, msg):
            errors.append("%s: field '%s': %s" % (label, field, msg))

        name = svc["name"]
        if not NAME_RE.match(name):
            bad(
                "name",
                "%r is not a safe identifier: it becomes a path, a user and a file name; "
                "use a lowercase letter then up to 31 of [a-z0-9_-]" % name,
            )
            return
        route = svc.get("route")
        if route is not None and not ROUTE_RE.match(route):
            bad(
                "route",
                "%r must begin and end with '/' and contain only letters, digits and ._~- between slashes" % route,
            )
        for key in ("processes", "threads"):
            if svc[key] < 1:
                bad(key, "must be at least 1, got %d" % svc[key])
        for key in ("harakiri", "max_requests"):
            if svc[key] < 0:
                bad(key, "must be 0 (disabled) or more, got %d" % svc[key])
        if svc["buffer_size"] < 4096 or svc["buffer_size"] > 65535:
            bad("buffer_size", "must be between 4096 and 65535, got %d" % svc["buffer_size"])
        if svc["keep_releases"] < 2:
            bad("keep_releases", "must be at least 2 so that a rollback has a release to return to")
        if svc["client_max_body_size"] is not None and not SIZE_RE.match(svc["client_max_body_size"]):
            bad("client_max_body_size", "%r is not an nginx size such as 75M, 512k or 0" % svc["client_max_body_size"])
        for key in ("read_timeout", "send_timeout"):
            if svc[key] is not None and svc[key] < 1:
                bad(key, "must be at least 1 second, got %d" % svc[key])
        if svc["rate_limit"]:
            if not RATE_RE.match(svc["rate_limit"]["rate"]):
                bad("rate_limit.rate", "%r is not an nginx rate such as 10r/s or 600r/m" % svc["rate_limit"]["rate"])
            if svc["rate_limit"]["burst"] < 0:
                bad("rate_limit.burst", "must be 0 or more")
        health = svc["health"]
        if not REL_URL_RE.match(health["path"]):
            bad("health.path", "%r must be a path below the route, without a leading '/'" % health["path"])
        for code in health["status"]:
            if not 100 <= code <= 599:
                bad("health.status", "%d is not an HTTP status code" % code)
        if not health["status"]:
            bad("health.status", "must list at least one status code")
        if health["body"] is not None:
            try:
                re.compile(health["body"])
            except re.error as exc:
                bad("health.body", "not a valid regular expression: %s" % exc)
        for key in ("timeout", "retries"):
            if health[key] < 1:
                bad("health.%s" % key, "must be at least 1")
        if health["delay"] < 0:
            bad("health.delay", "must be 0 or more")
        for key, value in svc["env"].items():
            if not ENV_NAME_RE.match(str(key)):
                bad("env", "%r is not a valid environment variable name" % key)
            elif isinstance(value, (dict, list)):
                bad("env.%s" % key, "must be a string, number or boolean, got %s" % type(value).__name__)
            elif "\n" in str(value) or "\r" in str(value) or "\0" in str(value):
                bad("env.%s" % key, "must be a single line")
            elif any(seq in str(value) for seq in ("$(", "@(", "%(")):
                bad(
                    "env.%s" % key,
                    "contains $(, @( or %%(, which uWSGI expands when it reads the environment file; "
                    "the service would see another value",
                )
        for key, value in svc["uwsgi_options"].items():
            if not UWSGI_OPTION_RE.match(str(key)):
                bad("uwsgi_options", "%r is not a uWSGI option name" % key)
            elif key in RESERVED_UWSGI_OPTIONS:
                bad("uwsgi_options.%s" % key, "is managed by the collection and cannot be overridden")
            else:
                values = value if isinstance(value, list) else [value]
                for v in values:
                    if isinstance(v, (dict, list)) or "\n" in str(v):
                        bad("uwsgi_options.%s" % key, "values must be single-line scalars")
        django = svc.get("django")
        if django:
            if django["settings"] is not None and not MODULE_RE.match(django["settings"]) or (
                django["settings"] and ":" in django["settings"]
            ):
                bad("django.settings", "%r is not a Python module path" % django["settings"])
            if not self._relative_ok(django["manage"]):
                bad("django.manage", "%r must be a relative path inside the release" % django["manage"])
            if not REL_URL_RE.match(django["static_url"]) or not django["static_url"].endswith("/"):
                bad("django.static_url", "%r must be a relative URL ending with '/'" % django["static_url"])

        if svc["state"] == "absent":
            return
        # A present service needs code and an entry point.
        src = svc.get("source")
        if not src:
            bad("source", "required for a present service (a directory, a git repository or an archive)")
        else:
            kind = src["type"]
            if kind in ("dir", "archive") and not src.get("path"):
                bad("source.path", "required when source.type is %s" % kind)
            if kind == "git" and not src.get("repo"):
                bad("source.repo", "required when source.type is git")
            if kind == "git" and src.get("path"):
                bad("source.path", "not used when source.type is git (use source.repo)")
        if bool(svc.get("module")) == bool(svc.get("wsgi_file")):
            bad("module", "exactly one of 'module' and 'wsgi_file' is required for a present service")
        elif svc.get("module") and not MODULE_RE.match(svc["module"]):
            bad(
                "module",
                "%r is not an importable Python module path such as 'project.wsgi' or 'app:application'" % svc["module"],
            )
        elif svc.get("wsgi_file") and not self._relative_ok(svc["wsgi_file"]):
            bad("wsgi_file", "%r must be a relative path inside the release" % svc["wsgi_file"])
        if not self._relative_ok(svc["requirements_file"]):
            bad("requirements_file", "%r must be a relative path inside the source" % svc["requirements_file"])
        for line in svc["requirements"]:
            if "\n" in line or line.strip().startswith("-"):
                bad("requirements", "%r: give one requirement specifier per item, no pip options" % line)
        if svc.get("port") is not None and not 1024 <= svc["port"] <= 65535:
            bad("port", "must be between 1024 and 65535, got %d" % svc["port"])
        if svc.get("socket") is not None and not svc["socket"].startswith("/"):
            bad("socket", "%r must be an absolute path" % svc["socket"])
        if svc["python"] is not None and not svc["python"].startswith("/"):
            bad("python", "%r must be an absolute path on the host" % svc["python"])

    @staticmethod
    def _relative_ok(path):
        if not path or path.startswith("/"):
            return False
        norm = posixpath.normpath(path)
        return not (norm == ".." or norm.startswith("../"))

    def _complete(self, svc):
        name = svc["name"]
        root = posixpath.join(self.root, name)
        route = svc.get("route") or "%s%s/" % (self.route_prefix, name)
        svc["route"] = route
        svc["script_name"] = route.rstrip("/")
        svc["root"] = root
        svc["user"] = name
        svc["group"] = name
        svc["socket"] = posixpath.normpath(svc.get("socket") or posixpath.join(root, "uwsgi.sock"))
        # The TCP port (used only on app hosts apart from the gateway) is set for the whole
        # list at once, in _assign_ports.
        svc["port_explicit"] = svc.get("port") is not None
        svc["stats_socket"] = posixpath.join(root, "run", "stats.sock")
        svc["env_file"] = posixpath.join(root, "env")
        svc["reload_file"] = posixpath.join(root, "run", "chain-reload")
        svc["shared_dir"] = posixpath.join(root, "shared")
        svc["log_dir"] = posixpath.join(root, "shared", "log")
        svc["data_dir"] = posixpath.join(root, "shared", "data")
        svc["static_dir"] = posixpath.join(root, "shared", "static")
        if svc.get("module") and ":" not in svc["module"]:
            svc["module"] = svc["module"] + ":application"
        src = svc.get("source")
        if src and src.get("path") and not os.path.isabs(src["path"]):
            src["path"] = os.path.normpath(os.path.join(self.base_dir, src["path"]))
        if svc.get("health") is not None:
            svc["health"]["url_path"] = route + svc["health"]["path"]
        svc["env"] = {str(k): _env_value(v) for k, v in svc["env"].items()}
        return svc

    # -- whole list ------------------------------------------------------------
    def plan(self, services, defaults=None, selected=None, check_sources=True):
        errors = []
        if services is None:
            services = []
        if not isinstance(services, list):
            raise PlanError(["microsvc_services: expected a list of services, got %s" % type(services).__name__])
        self._check_secrets(services, defaults or {}, errors)
        shared = self._check_defaults(defaults or {}, errors)
        normalized = []
        for index, item in enumerate(services):
            svc = self._normalize_item(index, item, shared, errors)
            if svc is not None:
                normalized.append(svc)
        self._assign_ports(normalized)
        self._check_across(normalized, errors)
        try:
            wanted = _parse_selection(selected)
        except PlanError as exc:
            errors.extend(exc.errors)
            wanted = []
        names = [s["name"] for s in normalized]
        for name in wanted:
            if name not in names:
                errors.append(
                    "deploy_services: unknown service %r (services in the list: %s)"
                    % (name, ", ".join(names) or "none")
                )
        if check_sources and not errors:
            for svc in normalized:
                if svc["state"] == "present" and (not wanted or svc["name"] in wanted):
                    self._check_source(svc, errors)
        if errors:
            raise PlanError(errors)
        present = [s["name"] for s in normalized if s["state"] == "present"]
        absent = [s["name"] for s in normalized if s["state"] == "absent"]
        selected_names = [n for n in names if not wanted or n in wanted]
        return {
            "root": self.root,
            "services": normalized,
            "names": names,
            "present": present,
            "absent": absent,
            "selected": selected_names,
            "selection_given": bool(wanted),
        }

    @staticmethod
    def _assign_ports(services):
        """A port for every service without one: derived from its name, in 10000-29999 (below
        Linux's ephemeral range), moved to the next free port on a collision. Services are
        taken in name order, so a port depends only on the names in the list, not their order."""
        used = {s["port"] for s in services if s["port_explicit"]}
        for svc in sorted((s for s in services if not s["port_explicit"]), key=lambda s: s["name"]):
            offset = zlib.crc32(svc["name"].encode("utf-8")) % PORT_SPAN
            while PORT_BASE + offset in used:
                offset = (offset + 1) % PORT_SPAN
            svc["port"] = PORT_BASE + offset
            used.add(svc["port"])

    def _check_across(self, services, errors):
        seen = {}
        for key, field in (("name", "name"), ("route", "route"), ("socket", "socket"), ("port", "port")):
            seen = {}
            for svc in services:
                value = svc[key]
                if value in seen:
                    errors.append(
                        "service '%s': field '%s': %r is already used by service '%s'"
                        % (svc["name"], field, value, seen[value])
                    )
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
            if not _inside(svc["socket"], svc["root"]):
                errors.append(
                    "service '%s': field 'socket': %r is outside the service root %r" % (svc["name"], svc["socket"], svc["root"])
                )

    @staticmethod
    def _check_source(svc, errors):
        src = svc["source"]
        if src["type"] == "dir" and not os.path.isdir(src["path"]):
            errors.append(
                "service '%s': field 'source.path': directory %r does not exist on the controller" % (svc["name"], src["path"])
            )
        elif src["type"] == "archive":
            if not os.path.isfile(src["path"]):
                errors.append(
                    "service '%s': field 'source.path': archive %r does not exist on the controller" % (svc["name"], src["path"])
                )
            elif not re.search(r"\.(tar\.gz|tgz|tar|zip)$", src["path"]):
                errors.append(
                    "service '%s': field 'source.path': %r is not a .tar.gz, .tgz, .tar or .zip archive" % (svc["name"], src["path"])
                )


def _env_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
