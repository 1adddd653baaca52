"""A service's live route and its location on the loopback-only check server pass requests to
uWSGI with the same settings, written once (uwsgi-location.j2): a health check through the
check server sees the service as clients do."""

from __future__ import annotations

import os
import re

import pytest
import yaml

from tests.unit.test_render_property import render

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TEMPLATES = "roles/nginx_gateway/templates/"


@pytest.fixture(scope="module")
def templar():
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    return Templar(loader=DataLoader())


def gateway_vars(**item):
    out = {}
    for path in ("roles/nginx_gateway/defaults/main.yml", "roles/nginx_gateway/vars/default.yml"):
        with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
            out.update(yaml.safe_load(handle) or {})
    svc = dict(name="shop", route="/api/shop/", socket="/opt/www/shop/uwsgi.sock", port=8001, maintenance=False,
               accel_redirect=False, client_max_body_size="", read_timeout=None, send_timeout=None,
               rate_limit=None, members=["gw", "app1"], django=None)
    svc.update(item)
    out.update(ansible_managed="Ansible managed", inventory_hostname="gw", __nginx_gateway_owned_dir="microsvc",
               __nginx_gateway_log_format="microsvc", nginx_gateway_uwsgi_params={"HTTP_X_A": "$host"},
               hostvars={"app1": {"microsvc_private_address": "10.0.0.5"}}, item=svc)
    return out


def locations(text):
    """{location's argument: [directive lines]} (comments and nested blocks aside)."""
    out = {}
    for name, body in re.findall(r"^location (\S+) \{\n(.*?)^\}", text, re.MULTILINE | re.DOTALL):
        out[name] = [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith("#")]
    return out


def shared(directives):
    return [d for d in directives if d.startswith(("include uwsgi_params", "uwsgi_param HTTP_X_", "uwsgi_connect",
                                                   "uwsgi_read"))]


@pytest.mark.parametrize("read_timeout", [None, 95])
def test_the_check_server_passes_to_the_service_as_the_live_route_does(templar, read_timeout):
    variables = gateway_vars(read_timeout=read_timeout)
    live = locations(render(templar, TEMPLATES + "routes.conf.j2", variables))['"/api/shop/"']
    check = locations(render(templar, TEMPLATES + "checks.conf.j2", variables))['"/__microsvc/app1/api/shop/"']
    assert shared(live) == shared(check) and len(shared(check)) == 7, (live, check)
    assert "uwsgi_read_timeout %ss;" % (read_timeout or variables["nginx_gateway_read_timeout"]) in check
    # What only the check server does: strip its prefix, and reach the one host it names.
    assert [d for d in check if d not in shared(check)] == [
        'rewrite "^/__microsvc/app1(/.*)$" $1 break;', 'uwsgi_pass "10.0.0.5:8001";']


def test_a_service_in_maintenance_is_still_checked_on_the_gateway_s_own_host(templar):
    variables = gateway_vars(maintenance=True, members=["gw"])
    check = locations(render(templar, TEMPLATES + "checks.conf.j2", variables))['"/__microsvc/gw/api/shop/"']
    assert shared(check) == shared(locations(render(templar, TEMPLATES + "routes.conf.j2", gateway_vars()))[
        '"/api/shop/"'])
    assert check[-1] == 'uwsgi_pass "unix:/opt/www/shop/uwsgi.sock";'


def test_the_settings_toward_the_service_are_written_once():
    for template in ("routes.conf.j2", "checks.conf.j2"):
        with open(os.path.join(ROOT, TEMPLATES, template), encoding="utf-8") as handle:
            text = handle.read()
        assert "import 'uwsgi-location.j2'" in text and "location.uwsgi_settings(item)" in text, template
        for directive in ("include uwsgi_params", "uwsgi_param HTTP_X_", "uwsgi_connect_timeout",
                          "uwsgi_read_timeout"):
            assert directive not in text, (template, directive)
