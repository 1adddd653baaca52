"""The fleet playbooks (run, logs, releases, join, leave) refuse a bad request on the controller,
naming what is wrong, before any host is contacted. No container is needed: every host points at
a container that does not exist, so any attempt to reach one would show as UNREACHABLE instead."""

import os
import re
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.dirname(sys.executable)
GOOD = {"name": "good", "source": "../code", "module": "app"}
NOT_CONTACTED = "The request is invalid; no host was contacted."


def run(tmp_path, playbook, args):
    """``playbook`` on a split layout: gateway gw, app hosts app1 and app2, and db (no role)."""
    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True, exist_ok=True)
    (tmp_path / "code").mkdir(exist_ok=True)
    conn = {"ansible_connection": "community.docker.docker", "ansible_host": "microsvc-test-no-such-container"}
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "hosts": {"db": conn},
        "children": {
            "gateways": {"hosts": {"gw": dict(conn, microsvc_private_address="10.0.0.10")}},
            "apps": {"hosts": {h: dict(conn, microsvc_private_address=a)
                               for h, a in (("app1", "10.0.0.11"), ("app2", "10.0.0.12"))}},
        }}}))
    (inv / "group_vars" / "all" / "settings.yml").write_text(yaml.safe_dump({
        "microsvc_services": [GOOD], "microsvc_source_roots": [str(tmp_path)],
        "microsvc_gateway_hosts": "gateways", "microsvc_app_hosts": "apps"}))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", str(inv), os.path.join(ROOT, "playbooks", playbook)] + args
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)
    return proc.returncode, proc.stdout + proc.stderr


CASES = [
    ("run-unknown-service", "run.yml", ["-e", "service=ghost", "-e", 'command=["python","-V"]'],
     "service 'ghost' is not present on any app host"),
    ("run-control-character", "run.yml", ["-e", "service=good", "-e", 'command=["python","-c","print(1)\\u001b[2J"]'],
     "control character"),
    ("run-line-break", "run.yml", ["-e", "service=good", "-e", 'command=["python","-c","1\n2"]'],
     "contains a control character or line break"),
    ("run-shell-string", "run.yml", ["-e", "service=good", "-e", "command=python -V"], "must be a JSON list"),
    ("run-host-not-in-inventory", "run.yml", ["-e", "service=good", "-e", "host=app9", "-e", 'command=["true"]'],
     "host: host 'app9' is not in the inventory"),
    ("logs-unknown-service", "logs.yml", ["-e", "service=ghost"], "service 'ghost' is not present"),
    ("logs-host-not-in-inventory", "logs.yml", ["-e", "service=good", "-e", "host=app9"],
     "host 'app9' is not in the inventory"),
    ("logs-bad-since", "logs.yml", ["-e", "service=good", "-e", "since=$(reboot)"], "since must be a UTC time"),
    ("logs-bad-lines", "logs.yml", ["-e", "service=good", "-e", "lines=-1"], "lines must be an integer"),
    ("releases-unknown-service", "releases.yml", ["-e", "service=ghost"], "service 'ghost' is not present"),
    ("releases-host-not-in-inventory", "releases.yml", ["-e", "service=good", "-e", "host=app9"],
     "host 'app9' is not in the inventory"),
    ("join-host-not-in-inventory", "join.yml", ["-e", "join=app9"], "join: host 'app9' is not in the inventory"),
    ("join-a-gateway", "join.yml", ["-e", "join=gw"], "join: host gw is not an app host"),
    ("leave-every-app-host", "leave.yml", ["-e", "leave=app1,app2"], "every app host would be held out"),
    ("leave-not-an-app-host", "leave.yml", ["-e", "leave=db"], "leave: host db is not an app host"),
]


@pytest.mark.parametrize("playbook,args,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request_is_refused_before_any_host_is_contacted(tmp_path, playbook, args, expected):
    rc, out = run(tmp_path, playbook, args)
    assert rc != 0, out
    assert NOT_CONTACTED in out and expected in out, out
    assert "UNREACHABLE" not in out and "unreachable=1" not in out, out
    # The run ended in the check: no later play (the first that would contact a host) started.
    assert re.findall(r"PLAY \[(.*?)\]", out)[-1].startswith("Check the request on the controller"), out


@pytest.mark.parametrize("playbook,args", [
    ("run.yml", ["-e", "service=good", "-e", 'command=["python","manage.py","check"]']),
    ("logs.yml", ["-e", "service=good", "-e", "since=2h"]),
    ("releases.yml", ["-e", "service=good", "-e", "host=app2"]),
    ("join.yml", ["-e", "join=app2"]),
], ids=["run", "logs", "releases", "join"])
def test_a_good_request_passes_the_checks_then_needs_the_hosts(tmp_path, playbook, args):
    """The control case: the same inventory with a valid request gets past the checks and only
    then tries to reach a host."""
    rc, out = run(tmp_path, playbook, args)
    assert NOT_CONTACTED not in out and "is invalid" not in out, out
    assert rc != 0 and ("UNREACHABLE" in out or "unreachable=1" in out or "FAILED" in out), out
    assert not re.findall(r"PLAY \[(.*?)\]", out)[-1].startswith("Check the request"), out
