# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Allow-list checks for the gateway's edge features: ACME, HTTP/2, compression, request
logs, metrics and maintenance (nginx_gateway_*), the uWSGI metrics of the emperor role
(uwsgi_emperor_metrics_*) and the collection-wide microsvc_metrics_* they default to.

``CHECKS`` maps each of these variables to a check of plugins/plugin_utils/checks.py (full-string
patterns, no control characters, bounded numbers, a ``rule`` for the docs); the collection-wide
table ``settings.SETTINGS`` includes it, so the validation play checks what the inventory sets
before any host is contacted. ``check()`` runs the same checks on the values a role is about to
use (its defaults included) and adds the rules that involve several settings; the gateway role
calls it (action microsvc.deploy.gateway_settings) before its play changes anything.

Kept free of Ansible's plugin machinery so that unit tests import it directly.
"""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.microsvc.deploy.plugins.plugin_utils.checks import (
    AbsPath,
    AnyOf,
    Bool,
    Check,
    Choice,
    Int,
    ListOf,
    Str,
    has_control,
    kind_of,
    show,
)

# Networks a metrics endpoint may bind to, besides loopback: RFC 1918 and IPv6 unique local.
PRIVATE_NETS = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")]
MAX_ACME_NAMES = 100  # Let's Encrypt's limit of names per certificate
LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"


class MetricsAddress(Check):
    """A literal IP address the host has: loopback or private, never a wildcard or public."""

    rule = ("the loopback address or a private address of the host (10/8, 172.16/12, 192.168/16, fc00::/7) in "
            "its normal form, never a wildcard or a public address")

    def __call__(self, value):
        if not isinstance(value, str):
            return "must be a string (%s), got %s" % (self.rule, kind_of(value))
        if has_control(value):
            return "%s contains a control character or line break; must be %s" % (show(value), self.rule)
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            return "%s is not an IP address; must be %s" % (show(value), self.rule)
        if addr.is_unspecified:
            return "%s is a wildcard address; must be %s" % (show(value), self.rule)
        if str(addr) != value:
            return "%s is not in its normal form (%r); must be %s" % (show(value), str(addr), self.rule)
        if addr.is_loopback or any(addr in net for net in PRIVATE_NETS):
            return None
        return "%s is a public address; must be %s" % (show(value), self.rule)


class DnsNames(ListOf):
    """Certificate names: fully qualified lowercase DNS names, no wildcards, no repeats."""

    def __init__(self):
        name = Str(r"(?=.{1,253}$)(?:%s\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?" % LABEL,
                   "a fully qualified DNS name of lowercase letters, digits, '-' and '.' (no wildcard: this "
                   "gateway answers the HTTP-01 challenge, which cannot prove one)", 253)
        super().__init__(name, MAX_ACME_NAMES)

    def __call__(self, value):
        msg = super().__call__(value)
        if msg and isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, str) and item.startswith("*."):
                    return msg + " (wildcards need the DNS-01 challenge)"
                if isinstance(item, str) and item.lower() != item:
                    return msg + " (write names in lowercase)"
        if msg:
            return msg
        if len(set(value)) != len(value):
            return "lists a name twice"
        return None


def _not_html(value):
    if value == "text/html":
        return "text/html is always compressed once compression is on; leave it out of the list"
    return None


def _port_in_range(value):
    port = re.search(r"^https://[^/:]+:([0-9]+)", value)
    if port and not 1 <= int(port.group(1)) <= 65535:
        return "%s: port %s is out of range (1-65535)" % (show(value), port.group(1))
    return None


PORT = Int(1024, 65535)
METRICS_ADDRESS = MetricsAddress()
MIME_TYPES = ListOf(Str(r"[a-z0-9][a-z0-9.+-]{0,63}/[a-z0-9][a-z0-9.+-]{0,63}",
                        "a lowercase MIME type such as application/json (not text/html, always compressed)", 129,
                        extra=_not_html), 50, min_items=1)
ACME_URL = Str(r"|https://(?:%s\.)*%s(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%%/-]*)?" % (LABEL, LABEL),
               "empty (Let's Encrypt) or the https:// URL of an ACME directory: a host name, an optional port and "
               "a path of letters, digits and ._~%/-", 255, extra=_port_in_range)
EMAIL = Str(r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}",
            "empty or an e-mail address such as ops@example.com", 254, empty=True)
CA_BUNDLE = AnyOf(Str(r"", "empty", 0), AbsPath(255, min_depth=2),
                  rule="empty, or (tests only) " + AbsPath(255, min_depth=2).rule)

# variable -> check. The emperor's metrics variables are here too: they are one feature.
CHECKS = {
    "microsvc_metrics_enabled": Bool(),
    "microsvc_metrics_address": METRICS_ADDRESS,
    "nginx_gateway_http2": Bool(),
    "nginx_gateway_compression": Bool(),
    "nginx_gateway_compression_min_length": Int(1, 1048576),
    "nginx_gateway_compression_types": MIME_TYPES,
    "nginx_gateway_brotli": Bool(),
    "nginx_gateway_access_log_format": Choice("text", "json"),
    "nginx_gateway_maintenance_retry_after": Int(1, 86400),
    "nginx_gateway_metrics_enabled": Bool(),
    "nginx_gateway_metrics_address": METRICS_ADDRESS,
    "nginx_gateway_metrics_port": PORT,
    "nginx_gateway_stub_status_port": PORT,
    "nginx_gateway_acme_enabled": Bool(),
    "nginx_gateway_acme_directory_url": ACME_URL,
    "nginx_gateway_acme_staging": Bool(),
    "nginx_gateway_acme_email": EMAIL,
    "nginx_gateway_acme_names": DnsNames(),
    "nginx_gateway_acme_ca_bundle": CA_BUNDLE,
    "uwsgi_emperor_metrics_enabled": Bool(),
    "uwsgi_emperor_metrics_address": METRICS_ADDRESS,
    "uwsgi_emperor_metrics_port": PORT,
    "uwsgi_emperor_metrics_interval": Int(5, 3600),
}


def acme_names(settings):
    """The names the certificate is for: nginx_gateway_acme_names, else the server names but '_'."""
    names = settings.get("nginx_gateway_acme_names") or []
    if names:
        return list(names)
    return [n for n in settings.get("nginx_gateway_server_names") or [] if n != "_"]


def check(settings):
    """Errors (one sentence each, naming the variable) for the given settings: each variable of
    ``CHECKS`` that is given, then the rules that involve several settings."""
    errors = []
    for name in sorted(settings):
        checker = CHECKS.get(name)
        problem = checker(settings[name]) if checker else None
        if problem:
            errors.append("setting '%s': %s" % (name, problem))
    if errors:
        return errors
    return across(settings)


def across(settings):
    """The rules that involve several settings (give every setting the role uses, defaults included)."""
    out = []
    get = settings.get
    if get("nginx_gateway_acme_enabled"):
        if not get("nginx_gateway_tls_enabled"):
            out.append("setting 'nginx_gateway_acme_enabled': ACME gives the HTTPS certificate; set "
                       "nginx_gateway_tls_enabled: true as well")
        if get("nginx_gateway_tls_certificate") or get("nginx_gateway_tls_key") or get("nginx_gateway_tls_self_signed"):
            out.append("setting 'nginx_gateway_acme_enabled': the certificate comes from ACME; leave "
                       "nginx_gateway_tls_certificate, nginx_gateway_tls_key and nginx_gateway_tls_self_signed unset")
        if get("nginx_gateway_acme_staging") and get("nginx_gateway_acme_directory_url"):
            out.append("setting 'nginx_gateway_acme_staging': Let's Encrypt's staging directory or "
                       "nginx_gateway_acme_directory_url, not both")
        names = acme_names(settings)
        if not names:
            out.append("setting 'nginx_gateway_acme_names': no name to request a certificate for; list the "
                       "gateway's public DNS names here or in nginx_gateway_server_names")
        elif not get("nginx_gateway_acme_names"):
            problem = CHECKS["nginx_gateway_acme_names"](names)
            if problem:
                out.append("setting 'nginx_gateway_server_names' (the certificate's names when "
                           "nginx_gateway_acme_names is empty): %s" % problem)
    if get("nginx_gateway_metrics_enabled"):
        seen = {}
        for name in ("nginx_gateway_listen", "nginx_gateway_tls_port", "nginx_gateway_check_port",
                     "nginx_gateway_stub_status_port", "nginx_gateway_metrics_port"):
            port = get(name)
            if port is None or (name == "nginx_gateway_tls_port" and not get("nginx_gateway_tls_enabled")):
                continue
            if port in seen:
                out.append("setting '%s': port %s is already used by %s" % (name, port, seen[port]))
            seen.setdefault(port, name)
    return out
