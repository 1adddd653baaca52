"""The RHEL family's install path, seen on the converged Debian host: uWSGI built from PyPI into
its own virtualenv with Python built in, no distribution uWSGI, no plugin, nginx's workers as
"nginx". (The default scenario's tests run as well, expecting the nginx group on sockets.)"""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from microsvc_checks import NGINX_USER, asgi_processes, demo_services, is_asgi, vassal_processes

UWSGI = "/opt/uwsgi/bin/uwsgi"
WSGI = [s for s in demo_services() if not is_asgi(s)]
ASGI = [s for s in demo_services() if is_asgi(s)]


def test_the_demo_list_has_uwsgi_and_asgi_services():
    """Both classes are checked below: an empty parameter list would skip them silently."""
    assert WSGI and ASGI


def test_platform_is_debian_running_the_redhat_family_variables(host):
    assert host.system_info.distribution == "debian"
    assert NGINX_USER == "nginx"


@pytest.mark.parametrize("package", ["uwsgi-core", "uwsgi-plugin-python3", "uwsgi"])
def test_no_distribution_uwsgi(host, package):
    assert not host.package(package).is_installed


def test_uwsgi_built_from_pypi_at_the_pinned_version(host):
    assert host.check_output("%s --version" % UWSGI).strip() == "2.0.28"
    # The pip metadata says it came from the source distribution, built on this host.
    show = host.check_output("/opt/uwsgi/bin/python -m pip show uwsgi")
    assert "Version: 2.0.28" in show
    assert host.file("/opt/uwsgi/lib/python3.11/site-packages").is_directory
    # The pushed source is gone once built.
    assert not host.file("/opt/uwsgi/sdist").exists


def test_python_is_built_in(host):
    """No --plugin: the binary itself runs Python 3.11 (the distribution's build needs python3)."""
    version = host.check_output("%s --python-version" % UWSGI).strip()
    assert version.startswith("3.11."), version


def test_emperor_runs_the_pypi_binary(host):
    unit = host.file("/etc/systemd/system/uwsgi-emperor.service").content_string
    assert "ExecStart=%s --ini" % UWSGI in unit
    pid = host.check_output("systemctl show -p MainPID --value uwsgi-emperor").strip()
    assert pid != "0"
    assert host.check_output("readlink /proc/%s/exe" % pid).strip() == UWSGI


@pytest.mark.parametrize("svc", WSGI, ids=[s["name"] for s in WSGI])
def test_vassals_load_no_plugin_and_run_the_pypi_build(host, svc):
    ini = host.file("/etc/uwsgi/vassals/%s.ini" % svc["name"]).content_string
    assert "plugins" not in ini
    # The vassal's own stats server reports the uWSGI version it runs: the PyPI pin, not the
    # distribution's (Debian 12 ships 2.0.21).
    stats = host.check_output(
        "python3 -c 'import json, socket; s = socket.socket(socket.AF_UNIX); s.connect(\"%s\"); "
        "data = b\"\".join(iter(lambda: s.recv(65536), b\"\")); print(json.loads(data)[\"version\"])'"
        % ("/opt/www/%s/run/stats.sock" % svc["name"]))
    assert stats.strip() == "2.0.28"
    master = vassal_processes(host, svc["name"])[0]
    emperor = host.check_output("systemctl show -p MainPID --value uwsgi-emperor").strip()
    assert master[2] == int(emperor), "the vassal is a child of the PyPI-built emperor"


@pytest.mark.parametrize("svc", ASGI, ids=[s["name"] for s in ASGI])
def test_asgi_services_run_their_virtualenvs_python_outside_uwsgi(host, svc):
    """An ASGI service needs no uWSGI: no vassal, and its server is its systemd unit's, run by the
    Python of its virtualenv (3.11: test_service_virtualenvs_use_python_3_11), not by the emperor."""
    assert not host.file("/etc/uwsgi/vassals/%s.ini" % svc["name"]).exists
    procs = asgi_processes(host, svc["name"])
    assert procs and "microsvc-asgi" in procs[0][3], procs
    emperor = int(host.check_output("systemctl show -p MainPID --value uwsgi-emperor").strip())
    assert procs[0][2] != emperor
    # microsvc-run resolved `current` once: the release's own link to its virtualenv.
    assert procs[0][3].startswith("/opt/www/%s/releases/" % svc["name"]), procs
    assert "/.venv/bin/python /usr/local/lib/microsvc/microsvc-asgi" in procs[0][3], procs


@pytest.mark.parametrize("svc", demo_services(), ids=[s["name"] for s in demo_services()])
def test_service_virtualenvs_use_python_3_11(host, svc):
    # Whoever made the virtualenv (python -m venv, uv venv), its interpreter says which Python it is.
    out = host.check_output("for python in /opt/www/%s/venvs/*/bin/python; do \"$python\" -c "
                            "'import sys; print(sys.executable, sys.version_info[:2])'; done" % svc["name"])
    lines = out.splitlines()
    assert lines and all(line.endswith("(3, 11)") for line in lines), out


def test_nginx_workers_run_as_nginx(host):
    out = host.check_output("ps -eo user:32,args --no-headers")
    workers = [line.split(None, 1)[0] for line in out.splitlines() if "nginx: worker process" in line]
    assert workers and set(workers) == {NGINX_USER}, workers
    assert 'user "nginx";' in host.file("/etc/nginx/nginx.conf").content_string
