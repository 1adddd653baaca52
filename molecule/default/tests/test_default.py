"""The converged host: gateway, emperor and the sample services of inventories/demo (four WSGI
services under uWSGI, one ASGI service under uvicorn), seen from outside."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from microsvc_checks import (
    NGINX_GROUP,
    PLATFORM,
    asgi_server,
    demo_services,
    http,
    is_asgi,
    route,
    web_processes,
    wsclient_command,
)

SERVICES = demo_services()
NAMES = [s["name"] for s in SERVICES]


@pytest.mark.parametrize("unit", ["nginx", "uwsgi-emperor"])
def test_units_active_and_enabled(host, unit):
    service = host.service(unit)
    assert service.is_running
    assert service.is_enabled


def test_nginx_configuration_is_valid(host):
    cmd = host.run("nginx -t")
    assert cmd.rc == 0, cmd.stderr


def test_distro_default_site_is_not_served_and_original_kept(host):
    assert host.file("/etc/nginx/nginx.conf.distro").exists
    assert "microsvc" in host.file("/etc/nginx/nginx.conf").content_string
    # The live configuration loads no distribution site (nginx -T prints every file it loads).
    dump = host.run("nginx -T")
    assert dump.rc == 0, dump.stderr
    assert "sites-enabled" not in dump.stdout and "conf.d/default.conf" not in dump.stdout
    if PLATFORM == "Debian":  # the Debian family variables also remove the distribution's link
        assert not host.file("/etc/nginx/sites-enabled/default").exists


@pytest.mark.parametrize("svc", SERVICES, ids=NAMES)
def test_route_answers_with_its_own_service(host, svc):
    resp = http(host, route(svc))
    assert resp["status"] == 200, resp
    assert svc["name"] in resp["body"]
    for other in NAMES:
        if other != svc["name"]:
            assert other not in resp["body"], "%s answered on %s's route" % (other, svc["name"])


@pytest.mark.parametrize("svc", SERVICES, ids=NAMES)
def test_health_endpoint(host, svc):
    resp = http(host, route(svc) + svc["health"]["path"])
    assert resp["status"] == 200, resp


@pytest.mark.parametrize("path", ["/", "/api/", "/api/nope/", "/api/service1x/", "/static/"])
def test_unknown_route_is_404(host, path):
    assert http(host, path)["status"] == 404


def test_route_without_trailing_slash_redirects(host):
    resp = http(host, "/api/service2")
    assert resp["status"] == 301
    assert resp["headers"]["Location"].endswith("/api/service2/")


@pytest.mark.parametrize("svc", SERVICES, ids=NAMES)
def test_socket_mode_owner_and_group(host, svc):
    root = "/opt/www/%s" % svc["name"]
    if is_asgi(svc):
        # The gateway connects through root's link, in the root-owned service directory, to the
        # live slot's socket, which systemd made.
        slot, _pid = asgi_server(host, svc["name"])
        assert slot, "no live ASGI slot"
        link = host.file(root + "/asgi.sock")
        # stat without -L: the link's own owner (testinfra's user follows the link).
        assert link.is_symlink and host.check_output("stat -c %%U %s" % link.path) == "root"
        assert link.linked_to == "%s/asgi-%d.sock" % (root, slot)
        assert host.file(root).user == "root" and not host.file(root).mode & 0o022
        sock = host.file("%s/asgi-%d.sock" % (root, slot))
    else:
        sock = host.file(root + "/uwsgi.sock")
    assert sock.is_socket
    assert sock.mode == 0o660
    assert sock.user == svc["name"]
    assert sock.group == NGINX_GROUP


@pytest.mark.parametrize("svc", SERVICES, ids=NAMES)
def test_web_server_runs_as_its_own_user_never_root(host, svc):
    procs = web_processes(host, svc)
    processes = svc.get("processes", 2)
    if is_asgi(svc):
        # microsvc-asgi serves alone, or forks one uvicorn process per `processes` and waits.
        expected = processes + 1 if processes > 1 else 1
        assert "microsvc-asgi" in procs[0][3], procs
    else:
        expected = processes + 1  # master and workers
    assert len(procs) == expected, procs
    assert {user for user, _pid, _ppid, _args in procs} == {svc["name"]}


@pytest.mark.parametrize("svc", SERVICES, ids=NAMES)
def test_code_is_root_owned_and_environment_private(host, svc):
    root = "/opt/www/%s" % svc["name"]
    assert host.file(root + "/current").is_symlink
    release = host.file(host.check_output("readlink -f %s/current" % root))
    assert release.is_directory
    assert release.user == "root"
    env = host.file(root + "/env")
    assert (env.user, env.group, env.mode) == ("root", svc["name"], 0o640)
    # The service cannot write its code, but can write its data directory.
    assert host.run("runuser -u %s -- touch %s/current/x" % (svc["name"], root)).rc != 0
    assert host.run("runuser -u %s -- touch %s/shared/data/x" % (svc["name"], root)).rc == 0
    host.run("rm -f %s/shared/data/x" % root)


def test_django_reverses_and_redirects_under_its_prefix(host):
    home = http(host, "/api/service1/")
    assert '"/api/service1/health/"' in home["body"]
    go = http(host, "/api/service1/go/")
    assert go["status"] == 302
    assert go["headers"]["Location"] == "/api/service1/"


def test_django_static_files_served_by_nginx(host):
    resp = http(host, "/api/service1/static/api/style.css")
    assert resp["status"] == 200
    assert "service1" in resp["body"]
    assert resp["headers"]["Content-Type"].startswith("text/css")
    assert host.file("/opt/www/service1/shared/static/api/style.css").exists


def test_django_migrations_applied(host):
    resp = http(host, "/api/service1/items/")
    assert resp["status"] == 200, resp
    assert host.file("/opt/www/service1/shared/data/db.sqlite3").exists


def test_websocket_echo_through_the_gateway(host):
    """The Starlette sample's echo endpoint, through the gateway's WebSocket upgrade."""
    cmd = host.run(wsclient_command("service7", "echo", "ws://127.0.0.1/api/service7/ws"))
    assert cmd.rc == 0, cmd.stderr
    assert json.loads(cmd.stdout)["echo"] == "hello", cmd.stdout


def test_asgi_service_sees_its_route_as_root_path(host):
    body = json.loads(http(host, "/api/service7/")["body"])
    assert body["framework"] == "starlette" and body["root_path"] == "/api/service7", body
    assert body["links"]["echo"] == "ws://127.0.0.1/api/service7/ws", body


def test_wsgi_file_service_sees_the_stripped_prefix(host):
    resp = http(host, "/api/service3/echo?x=1")
    assert resp["status"] == 200
    assert '"/api/service3"' in resp["body"]  # SCRIPT_NAME
    assert '"/echo"' in resp["body"]  # PATH_INFO


# service4's requirements.txt is hash-locked and carries markers that differ between the
# controller's Python and the host's: redis needs async-timeout below 3.11.3 (Debian 12 has 3.11.2),
# typing-extensions is asked for on 3.13 (Debian 13). The virtualenv has what the host's Python needs.
DEPS_PROBE = """
import importlib, importlib.metadata as md, json, re, sys
names = sorted({re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower() for d in md.distributions()} - {"pip", "setuptools"})
for module in {"redis": "redis", "async-timeout": "async_timeout", "typing-extensions": "typing_extensions"}.items():
    if module[0] in names:
        importlib.import_module(module[1])
print(json.dumps({"version": list(sys.version_info[:3]), "dists": names}))
"""


def test_dependencies_resolved_for_the_hosts_python_and_importable_as_the_service(host):
    python = "/opt/www/service4/current/.venv/bin/python"
    cmd = host.run("runuser -u service4 -- %s -c %s", python, DEPS_PROBE)
    assert cmd.rc == 0, cmd.stderr
    seen = json.loads(cmd.stdout)
    version = tuple(seen["version"])
    expected = {"redis"}
    if version < (3, 11, 3):
        expected.add("async-timeout")
    if version >= (3, 13):
        expected.add("typing-extensions")
    assert set(seen["dists"]) == expected, seen


def test_virtualenvs_from_a_wheels_only_wheelhouse_are_installed_by_uv_from_the_controller(host):
    # The controller pushed uv's wheel with the bundle: root took its one binary out, root-owned.
    uv = host.file("/opt/www/.microsvc/tools/uv-0.13.9/uv")
    assert uv.is_file and uv.user == "root" and uv.mode == 0o755
    # uv installs into a virtualenv without pip of its own; its cache is the build uid's alone.
    python = "/opt/www/service4/current/.venv/bin/python"
    assert host.run("%s -c 'import pip'" % python).rc != 0
    caches = host.check_output("find /opt/www/.microsvc/venvs -maxdepth 1 -name '.uv-cache-*' -printf '%u %m\\n'")
    assert caches and all(line.split()[1] == "700" and line.split()[0] != "root" for line in caches.splitlines())
