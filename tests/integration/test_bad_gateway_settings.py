"""`ansible-playbook site.yml` with a bad gateway or metrics setting fails before any host is
contacted, naming the variable and what is allowed: a value the inventory sets is checked by
the validation play, and the rules between several settings by the gateway role's first task."""

import json

import pytest
from test_bad_inventory import GOOD, run_site

CASES = [
    ("metrics-on-a-wildcard", {"microsvc_metrics_enabled": True, "microsvc_metrics_address": "0.0.0.0"},
     "setting 'microsvc_metrics_address': '0.0.0.0' is a wildcard address"),
    ("metrics-on-a-public-address", {"nginx_gateway_metrics_enabled": True, "nginx_gateway_metrics_address": "8.8.8.8"},
     "setting 'nginx_gateway_metrics_address': '8.8.8.8' is a public address"),
    # Between several settings: the gateway role's first task, on the controller. (The host is a
    # gateway only here: site.yml's read-only check of app hosts would contact it first.)
    ("acme-without-tls", {"nginx_gateway_acme_enabled": True, "nginx_gateway_server_names": ["api.example.com"],
                          "microsvc_app_hosts": "no_app_host"},
     "setting 'nginx_gateway_acme_enabled': ACME gives the HTTPS certificate"),
    ("acme-wildcard-name", {"nginx_gateway_acme_enabled": True, "nginx_gateway_tls_enabled": True,
                            "nginx_gateway_acme_names": ["*.example.com"]},
     "setting 'nginx_gateway_acme_names': item 1: '*.example.com' is not allowed"),
    ("acme-url-with-a-directive", {"nginx_gateway_acme_directory_url": "https://ca.example/dir;\n"},
     "setting 'nginx_gateway_acme_directory_url': 'https://ca.example/dir;\\n' contains a control character"),
    ("compression-of-every-type", {"nginx_gateway_compression_types": ["*/*"]},
     "setting 'nginx_gateway_compression_types': item 1: '*/*' is not allowed"),
    ("retry-after-of-a-year", {"nginx_gateway_maintenance_retry_after": 31536000},
     "setting 'nginx_gateway_maintenance_retry_after': must be an integer from 1 to 86400"),
    ("uwsgi-metrics-every-second", {"uwsgi_emperor_metrics_interval": 1},
     "setting 'uwsgi_emperor_metrics_interval': must be an integer from 5 to 3600"),
]


@pytest.mark.parametrize("extra,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_setting_fails_before_any_host_is_touched(tmp_path, extra, expected):
    proc = run_site(tmp_path, [GOOD], ["-e", json.dumps(extra)])
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "invalid; no host was changed." in out, out
    assert expected in out, out
    assert "UNREACHABLE" not in out, out


def test_a_bad_setting_of_one_host_fails_naming_that_host(tmp_path):
    """The plan is made once for the run; a setting that one host's own inventory gives is still
    checked, and the refusal names the host."""
    inv = tmp_path / "inventory"
    (inv / "host_vars").mkdir(parents=True)
    (inv / "host_vars" / "second.yml").write_text("nginx_gateway_maintenance_retry_after: 31536000\n")
    (inv / "host_vars" / "third.yml").write_text("nginx_gateway_maintenance_retry_after: 120\n")
    (inv / "host_vars" / "fourth.yml").write_text("nginx_gateway_maintenance_retry_after: 0\n")
    proc = run_site(tmp_path, [GOOD], hosts=["target", "second", "third", "fourth"])
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "invalid; no host was changed." in out, out
    assert "host second: setting 'nginx_gateway_maintenance_retry_after': must be an integer from 1 to 86400" in out
    assert "host fourth: setting 'nginx_gateway_maintenance_retry_after': must be an integer from 1 to 86400" in out
    assert "host third" not in out and "host target" not in out, out
    assert "UNREACHABLE" not in out, out
