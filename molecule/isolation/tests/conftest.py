"""What every isolation test needs: the attacker's shell, and the view from outside.

``attack(host, script)`` runs a shell script the way a compromised service runs it: posted to
the hostile service's own /exec endpoint, so it runs inside that service's uWSGI worker (its
user, its sandbox, its cgroup). ``as_user(host, script)`` runs it from a plain shell as the
service's user, outside any sandbox: a stronger attacker than the service itself.
``Outside`` takes checksums, owners and modes of everything the service must not change, and
the processes that run as root, so that a test can assert that an attack changed none of it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from microsvc_checks import PROJECT, _quote, http

HOSTILE = "hostile"
NEIGHBOURS = ("service1", "service2")
ROUTES = {"service1": "/api/service1/health/", "service2": "/api/service2/health", "hostile": "/api/hostile/health"}

# Everything outside the hostile service's own writable directories that an attack must leave
# as it was: /etc, the gateway's files and logs, every neighbour's tree (code, env, logs, data),
# the emperor's files, and the hostile service's own root-owned files (env, code, virtualenvs).
_FINGERPRINT = r"""
set -e
for p in /etc /usr/local /usr/lib/microsvc /var/log/nginx /var/lib/microsvc /opt/www/service1 \
         /opt/www/service2 /opt/www/hostile/env /opt/www/hostile/releases /opt/www/hostile/venvs; do
  [ -e "$p" ] || continue
  find "$p" -xdev \( -path /etc/ld.so.cache -o -path '/var/log/nginx/*' -o -path '/opt/www/*/shared/log/*' \
       -o -path /etc/machine-id -o -path '/etc/*-' \) -prune -o -printf '%p %u %g %m %y\n'
  find "$p" -xdev -type f ! -path '/var/log/*' ! -path '/opt/www/*/shared/log/*' ! -path /etc/ld.so.cache \
       -print0 | xargs -0r sha256sum
done | sort
find /var/log/nginx /opt/www/service1/shared/log /opt/www/service2/shared/log -printf '%p %u %g %m %y\n' | sort
"""


def attack(host, script, timeout=60):
    """Run ``script`` inside the hostile service's uWSGI worker; returns {rc, out, err, uid}."""
    resp = host.run(
        "python3 -c %s %s %d" % (_quote(_POST), _quote(script), timeout))
    assert resp.rc == 0, resp.stderr
    return json.loads(resp.stdout)


_POST = r"""
import json, sys, urllib.request
script, timeout = sys.argv[1], int(sys.argv[2])
req = urllib.request.Request("http://127.0.0.1/api/hostile/exec", data=script.encode(), method="POST",
                             headers={"X-Timeout": str(timeout)})
print(urllib.request.urlopen(req, timeout=timeout + 30).read().decode())
"""


def as_user(host, script, user=HOSTILE):
    """Run ``script`` from a plain shell as the service's user (no sandbox)."""
    return host.run("runuser -u %s -- /bin/sh -c %s" % (user, _quote(script)))


def root_processes(host):
    """The commands running as root (PIDs left out: a restarted nginx worker is no new root)."""
    out = host.check_output("ps -eo user:32,args --no-headers")
    return sorted({line.split(None, 1)[1] for line in out.splitlines() if line.split(None, 1)[0] == "root"})


# Root's own periodic jobs of the collection, which may be running when the processes are listed.
COLLECTION_JOBS = ("/usr/bin/python3 -I /usr/local/sbin/microsvc-uwsgi-metrics", "/usr/local/sbin/microsvc-uwsgi-metrics",
                   "/usr/bin/python3 /usr/local/sbin/microsvc-uwsgi-metrics", "/usr/sbin/logrotate")


class Outside:
    """The view from outside the service, taken before an attack and compared after it."""

    def __init__(self, host):
        self.host = host
        self.files = self.fingerprint()
        self.root = root_processes(host)

    def fingerprint(self):
        return self.host.check_output("sh -c %s" % _quote(_FINGERPRINT)).splitlines()

    def assert_unchanged(self, allow_root=(), allow_files=()):
        after = self.fingerprint()
        changed = sorted(line for line in set(after) ^ set(self.files)
                         if not any(" " + p in " " + line for p in allow_files))
        allow_root = tuple(allow_root) + COLLECTION_JOBS
        assert not changed, "files outside the service changed:\n" + "\n".join(changed[:40])
        # "(name)": systemd's own child between the fork and the exec of a unit it starts.
        new_root = [p for p in root_processes(self.host) if p not in self.root
                    and not any(p.startswith(a) for a in allow_root)
                    and not (p.startswith("(") and p.endswith(")"))]
        assert not new_root, "new processes run as root: %s" % new_root
        for name in NEIGHBOURS:
            assert http(self.host, ROUTES[name])["status"] == 200, "%s stopped answering" % name


@pytest.fixture
def outside(host):
    return Outside(host)


# uWSGI's own log is in <root>/<service>/log/ (a directory of root's, so that the master, still
# root when it opens it, never follows a link the service planted): its content grows with every
# event a neighbour logs, so only its owner and mode are compared, as for the logs in shared/log.
_FINGERPRINT = _FINGERPRINT.replace(
    "find \"$p\" -xdev -type f ! -path '/var/log/*'",
    "find \"$p\" -xdev -type f ! -path '/var/log/*' ! -path '/opt/www/*/log/uwsgi.log*'")


SCENARIO = os.path.join(PROJECT, "molecule", "isolation")


def container(host):
    """The container's name: testinfra's docker backend calls it name, the ansible one (molecule
    verify) host, its inventory name."""
    return getattr(host.backend, "name", None) or host.backend.host


def scenario_services():
    """The scenario's service list, as group_vars/all/services.yml has it (Jinja paths unresolved)."""
    with open(os.path.join(SCENARIO, "group_vars", "all", "services.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)["microsvc_services"]


@pytest.fixture
def inventory(host, tmp_path, monkeypatch):
    """Makes the scenario's own inventory (its group_vars, this container), as molecule's converge
    sees it, for a run of site.yml, status.yml or rollback.yml from a test: ``inventory()``, or
    ``inventory(services)`` with another service list."""
    monkeypatch.setenv("MICROSVC_HOSTILE_DIR", os.path.join(SCENARIO, "hostile"))
    monkeypatch.setenv("MICROSVC_SAMPLES_DIR", os.path.join(PROJECT, "samples"))
    made = []

    def make(services=None):
        directory = tmp_path / ("inv%d" % len(made))
        made.append(directory)
        shutil.copytree(os.path.join(SCENARIO, "group_vars"), directory / "group_vars")
        (directory / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {container(host): {
            "ansible_connection": "community.docker.docker", "ansible_python_interpreter": "/usr/bin/python3"}}}}))
        if services is not None:
            (directory / "group_vars" / "all" / "services.yml").write_text(
                yaml.safe_dump({"microsvc_services": services}))
        return str(directory)

    return make
