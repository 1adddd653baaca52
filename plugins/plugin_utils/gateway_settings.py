# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Allow-list checks for the gateway's edge features: ACME, HTTP/2, compression, request
logs, metrics and maintenance (nginx_gateway_*), the uWSGI metrics of the emperor role
(uwsgi_emperor_metrics_*) and the collection-wide microsvc_metrics_* they default to.

Each checker takes a value and returns None or a sentence saying what is allowed. Values
are matched in full (``re.fullmatch``), control characters are refused everywhere, numbers
have stated bounds. ``check()`` runs the table on a dict of settings and adds the checks
that involve several settings; every message names the variable.

Kept free of Ansible's plugin machinery so that unit tests import it directly. The table
``CHECKS`` is meant to join the collection-wide settings table when that lands.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re

CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MIME_RE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}/[a-z0-9][a-z0-9.+-]{0,63}")
# One DNS label: letters, digits, inner hyphens; 1-63 characters.
LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DNS_NAME_RE = re.compile(r"(?:%s\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?" % LABEL)
URL_RE = re.compile(r"https://(?:%s\.)*%s(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%%/-]*)?" % (LABEL, LABEL))
EMAIL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")
PATH_RE = re.compile(r"/[A-Za-z0-9._/-]{1,254}")
LOG_FORMATS = ("text", "json")
# Networks a metrics endpoint may bind to: loopback, RFC 1918 and IPv6 unique local addresses.
PRIVATE_NETS = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")]
MAX_ACME_NAMES = 100  # Let's Encrypt's limit of names per certificate


def _control(value):
    return isinstance(value, str) and CONTROL_RE.search(value)


def boolean(value):
    if not isinstance(value, bool):
        return "must be true or false, got %r" % (value,)
    return None


def integer(low, high):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be a whole number between %d and %d, got %r" % (low, high, value)
        if not low <= value <= high:
            return "must be between %d and %d, got %d" % (low, high, value)
        return None
    check.bounds = (low, high)
    return check


def choice(*allowed):
    def check(value):
        if value not in allowed:
            return "must be one of %s, got %r" % (", ".join(allowed), value)
        return None
    return check


def metrics_address(value):
    """A literal IP address of this host: loopback or private, never a wildcard."""
    if not isinstance(value, str) or _control(value):
        return "must be an IP address written as text, without control characters, got %r" % (value,)
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return ("%r is not an IP address; give the loopback address (127.0.0.1) or a private address of the host "
                "(10/8, 172.16/12, 192.168/16, fc00::/7), never a name or a wildcard" % value)
    if str(addr) != value:
        return "write the address in its normal form, %r, not %r" % (str(addr), value)
    if addr.is_unspecified:
        return "%r is a wildcard: metrics bind to the loopback address or one private address only" % value
    if addr.is_loopback or any(addr in net for net in PRIVATE_NETS):
        return None
    return ("%r is a public address: metrics bind to the loopback address or a private address "
            "(10/8, 172.16/12, 192.168/16, fc00::/7) only" % value)


def mime_types(value):
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of MIME types such as application/json"
    if len(value) > 50:
        return "at most 50 MIME types, got %d" % len(value)
    for item in value:
        if not isinstance(item, str) or not MIME_RE.fullmatch(item):
            return "%r is not a lowercase MIME type such as application/json or text/css" % (item,)
        if item == "text/html":
            return "text/html is always compressed once compression is on; leave it out of the list"
    return None


def dns_names(value):
    if not isinstance(value, list):
        return "must be a list of DNS names"
    if len(value) > MAX_ACME_NAMES:
        return "at most %d names per certificate, got %d" % (MAX_ACME_NAMES, len(value))
    for item in value:
        problem = dns_name(item)
        if problem:
            return problem
    if len(set(value)) != len(value):
        return "lists a name twice"
    return None


def dns_name(value):
    if not isinstance(value, str) or _control(value) or len(value) > 253 or not DNS_NAME_RE.fullmatch(value):
        hint = ""
        if isinstance(value, str) and value.startswith("*."):
            hint = " (wildcards need the DNS-01 challenge; this gateway answers HTTP-01 only)"
        elif isinstance(value, str) and value.lower() != value:
            hint = " (write it in lowercase)"
        return ("%r is not a fully qualified DNS name of lowercase letters, digits, hyphens and dots%s"
                % (value, hint))
    return None


def acme_url(value):
    if value == "":
        return None
    if not isinstance(value, str) or _control(value) or len(value) > 255 or not URL_RE.fullmatch(value):
        return ("%r is not an https:// URL of an ACME directory (a host name, an optional port and a path of "
                "letters, digits and ._~%%/-), at most 255 characters" % (value,))
    port = re.search(r":([0-9]+)(?:/|$)", value[len("https://"):])
    if port and not 1 <= int(port.group(1)) <= 65535:
        return "port %s is out of range (1-65535)" % port.group(1)
    return None


def email(value):
    if value == "":
        return None
    if not isinstance(value, str) or _control(value) or len(value) > 254 or not EMAIL_RE.fullmatch(value):
        return "%r is not an e-mail address such as ops@example.com" % (value,)
    return None


def host_path(value):
    """An absolute, normalised path on the host, or empty."""
    if value == "":
        return None
    if not isinstance(value, str) or _control(value) or not PATH_RE.fullmatch(value):
        return "%r must be an absolute path of letters, digits and ._/- (at most 255 characters)" % (value,)
    if posixpath.normpath(value) != value or "/../" in value + "/" or value.endswith("/.."):
        return "%r must be normalised (no '.', '..', '//' or trailing '/'), e.g. %r" % (value, posixpath.normpath(value))
    return None


PORT = integer(1024, 65535)

# variable -> checker. The emperor's metrics variables are here too: they are one feature.
CHECKS = {
    "microsvc_metrics_enabled": boolean,
    "microsvc_metrics_address": metrics_address,
    "nginx_gateway_http2": boolean,
    "nginx_gateway_compression": boolean,
    "nginx_gateway_compression_min_length": integer(1, 1048576),
    "nginx_gateway_compression_types": mime_types,
    "nginx_gateway_brotli": boolean,
    "nginx_gateway_access_log_format": choice(*LOG_FORMATS),
    "nginx_gateway_maintenance_retry_after": integer(1, 86400),
    "nginx_gateway_metrics_enabled": boolean,
    "nginx_gateway_metrics_address": metrics_address,
    "nginx_gateway_metrics_port": PORT,
    "nginx_gateway_stub_status_port": PORT,
    "nginx_gateway_acme_enabled": boolean,
    "nginx_gateway_acme_directory_url": acme_url,
    "nginx_gateway_acme_staging": boolean,
    "nginx_gateway_acme_email": email,
    "nginx_gateway_acme_names": dns_names,
    "nginx_gateway_acme_ca_bundle": host_path,
    "uwsgi_emperor_metrics_enabled": boolean,
    "uwsgi_emperor_metrics_address": metrics_address,
    "uwsgi_emperor_metrics_port": PORT,
    "uwsgi_emperor_metrics_interval": integer(5, 3600),
}


def acme_names(settings):
    """The names the certificate is for: nginx_gateway_acme_names, else the server names but '_'."""
    names = settings.get("nginx_gateway_acme_names") or []
    if names:
        return list(names)
    return [n for n in settings.get("nginx_gateway_server_names") or [] if n != "_"]


def check(settings):
    """Errors (one sentence each, naming the variable) for the given settings; only the
    variables present in ``settings`` are checked."""
    errors = []
    for name, value in settings.items():
        checker = CHECKS.get(name)
        problem = checker(value) if checker else None
        if problem:
            errors.append("%s: %s" % (name, problem))
    if errors:
        return errors
    errors.extend(_across(settings))
    return errors


def _across(settings):
    out = []
    get = settings.get
    if get("nginx_gateway_acme_enabled"):
        if not get("nginx_gateway_tls_enabled"):
            out.append("nginx_gateway_acme_enabled: ACME gives the HTTPS certificate; set nginx_gateway_tls_enabled: "
                       "true as well")
        if get("nginx_gateway_tls_certificate") or get("nginx_gateway_tls_key") or get("nginx_gateway_tls_self_signed"):
            out.append("nginx_gateway_acme_enabled: the certificate comes from ACME; leave nginx_gateway_tls_certificate, "
                       "nginx_gateway_tls_key and nginx_gateway_tls_self_signed unset")
        if get("nginx_gateway_acme_staging") and get("nginx_gateway_acme_directory_url"):
            out.append("nginx_gateway_acme_staging: Let's Encrypt's staging directory or "
                       "nginx_gateway_acme_directory_url, not both")
        names = acme_names(settings)
        if not names:
            out.append("nginx_gateway_acme_names: no name to request a certificate for; list the gateway's public DNS "
                       "names here or in nginx_gateway_server_names")
        elif not get("nginx_gateway_acme_names"):
            problem = dns_names(names)
            if problem:
                out.append("nginx_gateway_server_names (the certificate's names when nginx_gateway_acme_names is "
                           "empty): %s" % problem)
    if get("nginx_gateway_metrics_enabled"):
        ports = [(n, get(n)) for n in ("nginx_gateway_listen", "nginx_gateway_tls_port", "nginx_gateway_check_port",
                                        "nginx_gateway_stub_status_port", "nginx_gateway_metrics_port")
                 if get(n) is not None]
        seen = {}
        for name, port in ports:
            if name == "nginx_gateway_tls_port" and not get("nginx_gateway_tls_enabled"):
                continue
            if port in seen:
                out.append("%s: port %s is already used by %s" % (name, port, seen[port]))
            seen.setdefault(port, name)
    return out
