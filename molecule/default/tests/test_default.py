"""The converged host: gateway, emperor and the four sample services, seen from outside."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from microsvc_checks import NGINX_GROUP, PLATFORM, demo_services, http, route, vassal_processes

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
    sock = host.file("/opt/www/%s/uwsgi.sock" % svc["name"])
    assert sock.is_socket
    assert sock.mode == 0o660
    assert sock.user == svc["name"]
    assert sock.group == NGINX_GROUP


@pytest.mark.parametrize("svc", SERVICES, ids=NAMES)
def test_vassal_runs_as_its_own_user_never_root(host, svc):
    procs = vassal_processes(host, svc["name"])
    expected = svc.get("processes", 2) + 1  # master and workers
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


def test_wsgi_file_service_sees_the_stripped_prefix(host):
    resp = http(host, "/api/service3/echo?x=1")
    assert resp["status"] == 200
    assert '"/api/service3"' in resp["body"]  # SCRIPT_NAME
    assert '"/echo"' in resp["body"]  # PATH_INFO
