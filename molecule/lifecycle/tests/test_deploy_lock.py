"""The deploy lock on one host: two runs that need the same service, a rollback started
during a deploy, a run whose ansible-playbook process died, a lock left by another controller's run.

These tests run before test_lifecycle.py (file order) and leave the host as the converge made it:
their own service, "locked", is purged at the end.

A run is paused at a known point: once the host's lock record names its ansible-playbook process,
SIGSTOP to that process lets the task that took the lock finish (in its worker) and starts no
other, so the run holds the lock for as long as the test needs. No sleep decides who wins.
"""

import getpass
import itertools
import json
import os
import signal
import socket
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from microsvc_checks import Playbook, demo_services, http, write_inventory

HOST = "microsvc-lifecycle"
LOCK = "/var/lib/microsvc/locks/locked.lock"
_RUNS = itertools.count()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("deploy-lock")


def source(workdir, text):
    """The service 'locked', answering 'locked: <text>': one directory per version, so runs that
    overlap each read their own source."""
    path = workdir / ("locked-" + text)
    if not path.exists():
        path.mkdir()
        (path / "app.py").write_text(
            "def application(environ, start_response):\n"
            "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
            "    return [b'locked: %s\\n']\n" % text)
    return path


def services(workdir, text, **fields):
    locked = dict({"name": "locked", "source": str(source(workdir, text)), "module": "app", "health": {"path": ""}},
                  **fields)
    return demo_services() + [locked]


def run(workdir, service_list, args=(), playbook="playbooks/site.yml"):
    inventory = write_inventory(str(workdir / ("inv-%02d" % next(_RUNS))), HOST, service_list)
    return Playbook(inventory, playbook, args)


def deploy(workdir, text, *args):
    return run(workdir, services(workdir, text), ["-e", "deploy_services=locked", *args])


def lock_record(host):
    lock = host.file(LOCK)
    return json.loads(lock.content_string) if lock.exists else None


def pause_once_locked(host, playbook):
    """SIGSTOP the run as soon as the host's lock record of 'locked' names it."""
    deadline = time.time() + 300
    while (lock_record(host) or {}).get("pid") != playbook.pid:
        assert playbook.proc.poll() is None, "the run ended without taking the lock:\n" + playbook.output()
        assert time.time() < deadline, "the run did not take the lock:\n" + playbook.output()
        time.sleep(0.3)
    os.kill(playbook.pid, signal.SIGSTOP)


def current(host):
    return host.check_output("readlink /opt/www/locked/current").split("/")[-1]


def releases(host):
    return sorted(host.check_output("ls -A /opt/www/locked/releases").split())


def text_of(output):
    return " ".join(output.split())


def test_a_second_deploy_of_the_same_service_fails_naming_the_holder_and_leaves_nothing(host, workdir):
    first = deploy(workdir, "v1")
    pause_once_locked(host, first)
    try:
        rc_second, out_second = deploy(workdir, "v2", "-e", '{"uwsgi_vassal_lock_timeout": 5}').wait()
    finally:
        os.kill(first.pid, signal.SIGCONT)
    rc_first, out_first = first.wait()
    assert rc_first == 0, out_first
    assert rc_second != 0, out_second
    message = text_of(out_second)
    assert ("service 'locked': the deploy lock on %s is held by a run of deploy by %s on %s (PID %d, started "
            % (HOST, getpass.getuser(), socket.gethostname(), first.pid)) in message, out_second
    assert "playbook site.yml" in message and "(uwsgi_vassal_lock_timeout is 5)" in message, out_second
    assert "Deploy the services that need it, as one batch" not in out_second
    # One consistent service: the first run's release, one vassal ini, one route; nothing of the second.
    assert releases(host) == sorted([".history", current(host)])
    assert "locked: v1" in http(host, "/api/locked/")["body"]
    assert host.check_output("ls /etc/uwsgi/vassals").split().count("locked.ini") == 1
    assert [r for r in host.check_output("ls /etc/nginx/microsvc/routes").split() if "locked" in r] == ["locked.conf"]
    assert host.run("find /root/.ansible -name bundle.tar").stdout == ""  # no transfer of the second run either
    assert lock_record(host) is None


def test_a_rollback_started_during_a_deploy_of_the_service_waits_for_it(host, workdir):
    before = current(host)
    new_deploy = deploy(workdir, "v3")
    pause_once_locked(host, new_deploy)
    try:
        rollback = run(workdir, services(workdir, "v3"), ["-e", "service=locked"], "playbooks/rollback.yml")
        rollback.wait_for_output("Take the deploy lock of locked")
    finally:
        os.kill(new_deploy.pid, signal.SIGCONT)
    rc, out = new_deploy.wait()
    assert rc == 0, out
    rc, out = rollback.wait()
    assert rc == 0, out
    # The rollback went back from the release the deploy had switched to: it ran after the deploy.
    deployed = [r for r in releases(host) if r not in (".history", before)]
    assert len(deployed) == 1, releases(host)
    assert "release %s is current (was %s)" % (before, deployed[0]) in text_of(out), out
    assert current(host) == before and "locked: v1" in http(host, "/api/locked/")["body"]
    assert lock_record(host) is None


def test_locks_whose_holders_are_gone_are_broken_by_the_next_run(host, workdir):
    """A run killed while it held the lock of 'locked' (its controller, this one, sees its process
    gone), and a lock of service4 left by a run of another controller whose lease expired: the next
    run breaks both, names them, and does its work. Here that run purges this test's service (a
    removal takes the same lock)."""
    dead = deploy(workdir, "v4")
    pause_once_locked(host, dead)
    os.kill(dead.pid, signal.SIGKILL)
    dead.wait()
    assert lock_record(host)["pid"] == dead.pid  # left behind: nothing released it
    now = float(host.check_output("date +%s"))
    foreign = {"service": "service4", "run": "0123456789abcdef0123", "controller": "ci-runner-7",
               "user": "deployer", "pid": 4711, "started": "2025-06-01T10:00:00Z", "playbook": "site.yml",
               "purpose": "deploy", "identity": {"boot_id": "another-machine", "pid_ns": "pid:[4026531836]"},
               "acquired": now - 1200, "renewed": now - 1000, "lease": 900}
    put = host.run("umask 077; cat > %s <<'EOF'\n%s\nEOF" % (LOCK.replace("locked.lock", "service4.lock"),
                                                           json.dumps(foreign)))
    assert put.rc == 0, put.stderr
    gone = dict(services(workdir, "v4")[-1], state="absent", purge=True)
    rc, out = run(workdir, demo_services() + [gone]).wait()
    assert rc == 0, out
    message = text_of(out)
    assert "service 'locked' on %s: broke the deploy lock of a run of deploy by %s on %s (PID %d" % (
        HOST, getpass.getuser(), socket.gethostname(), dead.pid) in message, out
    assert "its ansible-playbook process (PID %d) no longer runs on %s" % (dead.pid, socket.gethostname()) in message
    assert ("service 'service4' on %s: broke the deploy lock of a run of deploy by deployer on ci-runner-7 (PID 4711, "
            "started 2025-06-01T10:00:00Z, playbook site.yml)" % HOST) in message, out
    assert "its lease of 900s expired" in message
    assert http(host, "/api/locked/")["status"] == 404
    assert not host.file("/opt/www/locked").exists and not host.user("locked").exists
    assert host.check_output("ls -A /var/lib/microsvc/locks") == ".mutex"
