"""The gateway's edge-feature settings (ACME, HTTP/2, compression, logs, metrics, maintenance):
every value is checked against an allow-list, every refusal names the variable and says what
is allowed, and hostile values (wildcards, public addresses, control characters, injected
directives, out-of-range numbers) are refused."""

import os

import pytest
import yaml
from ansible_collections.microsvc.deploy.plugins.plugin_utils import gateway_settings as settings
from ansible_collections.microsvc.deploy.plugins.plugin_utils import settings as global_settings
from ansible_collections.microsvc.deploy.plugins.plugin_utils.checks import Int

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Variables this feature set introduced, per role; every one must have a checker.
NEW_VARIABLES = {
    "nginx_gateway": [
        "nginx_gateway_http2", "nginx_gateway_compression", "nginx_gateway_compression_min_length",
        "nginx_gateway_compression_types", "nginx_gateway_brotli", "nginx_gateway_access_log_format",
        "nginx_gateway_maintenance_retry_after", "nginx_gateway_metrics_enabled", "nginx_gateway_metrics_address",
        "nginx_gateway_metrics_port", "nginx_gateway_stub_status_port", "nginx_gateway_acme_enabled",
        "nginx_gateway_acme_directory_url", "nginx_gateway_acme_staging", "nginx_gateway_acme_email",
        "nginx_gateway_acme_names", "nginx_gateway_acme_ca_bundle",
    ],
    "uwsgi_emperor": [
        "uwsgi_emperor_metrics_enabled", "uwsgi_emperor_metrics_address", "uwsgi_emperor_metrics_port",
        "uwsgi_emperor_metrics_interval",
    ],
    "": ["microsvc_metrics_enabled", "microsvc_metrics_address"],  # collection-wide
}

ADDRESSES = ["microsvc_metrics_address", "nginx_gateway_metrics_address", "uwsgi_emperor_metrics_address"]
PORTS = ["nginx_gateway_metrics_port", "nginx_gateway_stub_status_port", "uwsgi_emperor_metrics_port"]
BOOLS = ["microsvc_metrics_enabled", "nginx_gateway_http2", "nginx_gateway_compression", "nginx_gateway_brotli",
         "nginx_gateway_metrics_enabled", "nginx_gateway_acme_enabled", "nginx_gateway_acme_staging",
         "uwsgi_emperor_metrics_enabled"]

GOOD = [
    ("nginx_gateway_metrics_address", "127.0.0.1"),
    ("nginx_gateway_metrics_address", "10.0.3.17"),
    ("nginx_gateway_metrics_address", "172.31.255.1"),
    ("nginx_gateway_metrics_address", "192.168.1.2"),
    ("nginx_gateway_metrics_address", "::1"),
    ("nginx_gateway_metrics_address", "fd12:3456::7"),
    ("nginx_gateway_metrics_port", 9113),
    ("nginx_gateway_compression_min_length", 1),
    ("nginx_gateway_compression_types", ["application/json", "application/problem+json", "image/svg+xml"]),
    ("nginx_gateway_access_log_format", "json"),
    ("nginx_gateway_maintenance_retry_after", 86400),
    ("nginx_gateway_acme_directory_url", ""),
    ("nginx_gateway_acme_directory_url", "https://acme-v02.api.letsencrypt.org/directory"),
    ("nginx_gateway_acme_directory_url", "https://127.0.0.1:14000/dir"),
    ("nginx_gateway_acme_email", ""),
    ("nginx_gateway_acme_email", "ops+certs@example.co.uk"),
    ("nginx_gateway_acme_names", []),
    ("nginx_gateway_acme_names", ["api.example.com", "www.api.example.com", "xn--bcher-kva.example"]),
    ("nginx_gateway_acme_ca_bundle", ""),
    ("nginx_gateway_acme_ca_bundle", "/etc/pebble/ca.pem"),
    ("uwsgi_emperor_metrics_interval", 5),
]

# (variable, hostile value, a word the message must contain)
HOSTILE = (
    [(name, value, word) for name in ADDRESSES for value, word in [
        ("0.0.0.0", "wildcard"), ("::", "wildcard"), ("8.8.8.8", "public"), ("100.64.0.1", "public"),
        ("169.254.169.254", "public"), ("fe80::1", "public"), ("2001:db8::1", "public"),
        ("localhost", "not an IP address"), ("", "not an IP address"), ("10.0.0.1/8", "not an IP address"),
        ("127.0.0.1\n", "control"), ("127.0.0.1 ", "not an IP address"), ("::FFFF:10.0.0.1", "normal form"),
        ("010.0.0.1", "not an IP address"), ("127.0.0.1:9100", "not an IP address"),
        (["127.0.0.1"], "must be a string"), (None, "must be a string")]]
    + [(name, value, "an integer from 1024 to 65535") for name in PORTS
       for value in (80, 0, 70000, -1, "9100", 9100.5, True)]
    + [(name, value, "true or false") for name in BOOLS for value in ("yes", "true", 1, None, "false")]
    + [
        ("nginx_gateway_compression_min_length", 0, "from 1 to 1048576"),
        ("nginx_gateway_compression_min_length", 2 ** 21, "from 1 to 1048576"),
        ("nginx_gateway_compression_min_length", "1k", "an integer"),
        ("nginx_gateway_compression_types", [], "at least 1 item"),
        ("nginx_gateway_compression_types", "application/json", "must be a list"),
        ("nginx_gateway_compression_types", ["text/html"], "always compressed"),
        ("nginx_gateway_compression_types", ["application/json; charset=utf-8"], "not allowed"),
        ("nginx_gateway_compression_types", ["APPLICATION/JSON"], "lowercase MIME type"),
        ("nginx_gateway_compression_types", ["text/css;gzip_types *"], "not allowed"),
        ("nginx_gateway_compression_types", ["text/css\n"], "control"),
        ("nginx_gateway_compression_types", ["text/css", 5], "must be a string"),
        ("nginx_gateway_compression_types", ["a/b%d" % i for i in range(51)], "at most 50"),
        ("nginx_gateway_access_log_format", "combined", "one of 'text', 'json'"),
        ("nginx_gateway_access_log_format", "JSON", "one of 'text', 'json'"),
        ("nginx_gateway_access_log_format", "json\n", "one of 'text', 'json'"),
        ("nginx_gateway_maintenance_retry_after", 0, "from 1 to 86400"),
        ("nginx_gateway_maintenance_retry_after", 86401, "from 1 to 86400"),
        ("nginx_gateway_maintenance_retry_after", "300", "an integer"),
        ("nginx_gateway_acme_directory_url", "http://acme.example/dir", "https:// URL"),
        ("nginx_gateway_acme_directory_url", "ftp://acme.example/dir", "https:// URL"),
        ("nginx_gateway_acme_directory_url", "https://acme.example/dir\n", "control"),
        ("nginx_gateway_acme_directory_url", "https://acme.example/dir;include /etc/shadow", "not allowed"),
        ("nginx_gateway_acme_directory_url", "https://acme.example/dir?x=1", "not allowed"),
        ("nginx_gateway_acme_directory_url", "https://user@acme.example/dir", "not allowed"),
        ("nginx_gateway_acme_directory_url", "https://acme example/dir", "not allowed"),
        ("nginx_gateway_acme_directory_url", "https://acme.example:99999/dir", "out of range"),
        ("nginx_gateway_acme_directory_url", "https://acme.example/" + "d" * 250, "at most 255"),
        ("nginx_gateway_acme_directory_url", ["https://acme.example/dir"], "must be a string"),
        ("nginx_gateway_acme_email", "ops", "e-mail address"),
        ("nginx_gateway_acme_email", "ops@example", "e-mail address"),
        ("nginx_gateway_acme_email", "ops@example.com\n", "control"),
        ("nginx_gateway_acme_email", "ops@example.com --server https://evil", "e-mail address"),
        ("nginx_gateway_acme_email", "<ops@example.com>", "e-mail address"),
        ("nginx_gateway_acme_email", "--agree-tos@example.com", "e-mail address"),
        ("nginx_gateway_acme_names", ["*.example.com"], "wildcards need the DNS-01 challenge"),
        ("nginx_gateway_acme_names", ["Example.com"], "write names in lowercase"),
        ("nginx_gateway_acme_names", ["example"], "fully qualified DNS name"),
        ("nginx_gateway_acme_names", ["exa mple.com"], "fully qualified DNS name"),
        ("nginx_gateway_acme_names", ["example.com\n"], "control"),
        ("nginx_gateway_acme_names", ["-bad.example.com"], "fully qualified DNS name"),
        ("nginx_gateway_acme_names", ["127.0.0.1"], "fully qualified DNS name"),
        ("nginx_gateway_acme_names", ["example.com,evil.com"], "fully qualified DNS name"),
        ("nginx_gateway_acme_names", ["a" * 64 + ".example.com"], "fully qualified DNS name"),
        ("nginx_gateway_acme_names", ["example.com", "example.com"], "twice"),
        ("nginx_gateway_acme_names", ["n%d.example.com" % i for i in range(101)], "at most 100"),
        ("nginx_gateway_acme_names", "example.com", "must be a list"),
        ("nginx_gateway_acme_ca_bundle", "etc/ca.pem", "absolute, normalised path"),
        ("nginx_gateway_acme_ca_bundle", "/etc/../root/ca.pem", "absolute, normalised path"),
        ("nginx_gateway_acme_ca_bundle", "/etc/ssl//ca.pem", "absolute, normalised path"),
        ("nginx_gateway_acme_ca_bundle", "/etc/ssl/", "absolute, normalised path"),
        ("nginx_gateway_acme_ca_bundle", "/etc/ssl/ca.pem\nEnvironment=X=1", "control"),
        ("nginx_gateway_acme_ca_bundle", "/etc/ssl/ca pem", "absolute, normalised path"),
        ("nginx_gateway_acme_ca_bundle", "/" + "a" * 300, "absolute, normalised path"),
        ("nginx_gateway_acme_ca_bundle", "/etc", "absolute, normalised path"),
        ("uwsgi_emperor_metrics_interval", 4, "from 5 to 3600"),
        ("uwsgi_emperor_metrics_interval", 3601, "from 5 to 3600"),
    ]
)


@pytest.mark.parametrize("name,value", GOOD, ids=["%s=%r" % c for c in GOOD])
def test_good_values_pass(name, value):
    assert settings.check({name: value}) == []


@pytest.mark.parametrize("name,value,word", HOSTILE, ids=["%s=%r" % c[:2] for c in HOSTILE])
def test_hostile_values_are_refused_naming_the_variable(name, value, word):
    errors = settings.check({name: value})
    assert len(errors) == 1, errors
    assert errors[0].startswith("setting '%s': " % name) and word in errors[0], errors
    # The validation play, which checks what the inventory sets, refuses it in the same words.
    assert global_settings.check_settings({name: value}) == errors


def test_number_messages_state_their_bounds():
    numbers = [(name, check) for name, check in settings.CHECKS.items() if isinstance(check, Int)]
    assert len(numbers) >= 6
    for name, check in numbers:
        (error,) = settings.check({name: check.high + 1})
        assert "from %d to %d" % (check.low, check.high) in error, error


def test_every_check_documents_its_rule():
    for name, check in settings.CHECKS.items():
        assert check.rule and "\n" not in check.rule, name


def test_every_new_variable_has_a_checker_and_is_declared():
    specs = {}
    for role in ("nginx_gateway", "uwsgi_emperor"):
        with open(os.path.join(ROOT, "roles", role, "meta", "argument_specs.yml"), encoding="utf-8") as handle:
            specs[role] = yaml.safe_load(handle)["argument_specs"]["main"]["options"]
    for role, names in NEW_VARIABLES.items():
        for name in names:
            assert name in settings.CHECKS, name
            assert global_settings.SETTINGS[name] is settings.CHECKS[name], name
            if role:
                assert name in specs[role], name
    assert set(settings.CHECKS) == {n for names in NEW_VARIABLES.values() for n in names}


def test_role_defaults_pass_their_own_checks():
    values = {}
    for role in ("nginx_gateway", "uwsgi_emperor"):
        with open(os.path.join(ROOT, "roles", role, "defaults", "main.yml"), encoding="utf-8") as handle:
            values.update(yaml.safe_load(handle))
    plain = {k: v for k, v in values.items() if k in settings.CHECKS and not (isinstance(v, str) and "{{" in v)}
    assert len(plain) > 10
    assert settings.check(plain) == []
    # The templated ones default to the collection-wide values, whose own defaults are these.
    assert settings.check({"microsvc_metrics_enabled": False, "microsvc_metrics_address": "127.0.0.1"}) == []


ACME = {"nginx_gateway_acme_enabled": True, "nginx_gateway_tls_enabled": True,
        "nginx_gateway_server_names": ["api.example.com"], "nginx_gateway_acme_names": []}


@pytest.mark.parametrize("overrides,expected", [
    ({"nginx_gateway_tls_enabled": False}, "setting 'nginx_gateway_acme_enabled': ACME gives the HTTPS certificate"),
    ({"nginx_gateway_tls_self_signed": True}, "setting 'nginx_gateway_acme_enabled': the certificate comes from ACME"),
    ({"nginx_gateway_tls_certificate": True}, "setting 'nginx_gateway_acme_enabled': the certificate comes from ACME"),
    ({"nginx_gateway_acme_staging": True, "nginx_gateway_acme_directory_url": "https://ca.example/dir"},
     "setting 'nginx_gateway_acme_staging': Let's Encrypt's staging directory or nginx_gateway_acme_directory_url"),
    ({"nginx_gateway_server_names": ["_"]},
     "setting 'nginx_gateway_acme_names': no name to request a certificate for"),
    ({"nginx_gateway_server_names": ["_", "*.example.com"]},
     "setting 'nginx_gateway_server_names' (the certificate's names when nginx_gateway_acme_names is empty)"),
], ids=["acme-without-tls", "acme-and-self-signed", "acme-and-certificate", "staging-and-url", "no-names",
        "wildcard-server-name"])
def test_acme_settings_that_do_not_go_together(overrides, expected):
    errors = settings.check(dict(ACME, **overrides))
    assert any(e.startswith(expected) for e in errors), errors


def test_acme_names_default_to_the_server_names():
    assert settings.check(ACME) == []
    assert settings.acme_names(ACME) == ["api.example.com"]
    assert settings.acme_names(dict(ACME, nginx_gateway_acme_names=["b.example.com"])) == ["b.example.com"]


@pytest.mark.parametrize("port_name,port", [("nginx_gateway_metrics_port", 8099), ("nginx_gateway_stub_status_port", 80),
                                            ("nginx_gateway_metrics_port", 8098)])
def test_metrics_ports_do_not_collide_with_the_gateways(port_name, port):
    values = {"nginx_gateway_metrics_enabled": True, "nginx_gateway_listen": 80, "nginx_gateway_check_port": 8099,
              "nginx_gateway_stub_status_port": 8098, "nginx_gateway_metrics_port": 9113, port_name: port}
    errors = settings.check(values)
    if port < 1024:
        assert errors and errors[0].startswith("setting '%s'" % port_name), errors
    else:
        assert any("port %d is already used" % port in e for e in errors), errors
