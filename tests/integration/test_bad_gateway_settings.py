"""`ansible-playbook site.yml` with a bad gateway or metrics setting fails before any host is
contacted, naming the variable and what is allowed (the checks run on the controller, in the
roles' first task)."""

import json

import pytest
from test_bad_inventory import GOOD, run_site

CASES = [
    ("metrics-on-a-wildcard", {"microsvc_metrics_enabled": True, "microsvc_metrics_address": "0.0.0.0"},
     "microsvc_metrics_address: '0.0.0.0' is a wildcard"),
    ("metrics-on-a-public-address", {"nginx_gateway_metrics_enabled": True, "nginx_gateway_metrics_address": "8.8.8.8"},
     "nginx_gateway_metrics_address: '8.8.8.8' is a public address"),
    ("acme-without-tls", {"nginx_gateway_acme_enabled": True, "nginx_gateway_server_names": ["api.example.com"]},
     "nginx_gateway_acme_enabled: ACME gives the HTTPS certificate"),
    ("acme-wildcard-name", {"nginx_gateway_acme_enabled": True, "nginx_gateway_tls_enabled": True,
                            "nginx_gateway_acme_names": ["*.example.com"]},
     "nginx_gateway_acme_names: '*.example.com' is not a fully qualified DNS name"),
    ("acme-url-with-a-directive", {"nginx_gateway_acme_directory_url": "https://ca.example/dir;\n"},
     "nginx_gateway_acme_directory_url:"),
    ("compression-of-every-type", {"nginx_gateway_compression_types": ["*/*"]},
     "nginx_gateway_compression_types: '*/*' is not a lowercase MIME type"),
    ("retry-after-of-a-year", {"nginx_gateway_maintenance_retry_after": 31536000},
     "nginx_gateway_maintenance_retry_after: must be between 1 and 86400"),
    ("uwsgi-metrics-every-second", {"uwsgi_emperor_metrics_interval": 1},
     "uwsgi_emperor_metrics_interval: must be between 5 and 3600"),
]


@pytest.mark.parametrize("extra,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_setting_fails_before_any_host_is_touched(tmp_path, extra, expected):
    proc = run_site(tmp_path, [GOOD], ["-e", json.dumps(extra)])
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "settings are invalid; no host was changed." in out, out
    assert expected in out, out
    assert "UNREACHABLE" not in out, out
