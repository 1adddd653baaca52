"""Operating a fleet: hosts held out of the upstreams while they join or leave (the plan's
placement), the requests of the fleet playbooks checked on the controller, and what root reads
for the logs and releases playbooks (never through a link a service planted)."""

import json
import os
import time

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.microsvc.deploy.plugins.filter import fleet, topology
from ansible_collections.microsvc.deploy.plugins.modules import service_logs, service_releases
from ansible_collections.microsvc.deploy.plugins.plugin_utils import placement

GATEWAYS, APPS = ["gw"], ["app1", "app2", "app3"]
HOSTS = GATEWAYS + APPS


def present(*names):
    return {"present": list(names)}


# --- placement: held hosts -----------------------------------------------------------------

def test_a_held_host_is_no_upstream_member_but_the_check_server_reaches_it():
    plans = {h: present("a", "b") for h in HOSTS}
    placed = placement.place(plans, GATEWAYS, APPS, HOSTS, {}, held=frozenset({"app3"}))
    assert [(r["name"], r["members"], r["held"]) for r in placed["gw"]["routes"]] == [
        ("a", ["app1", "app2"], ["app3"]), ("b", ["app1", "app2"], ["app3"])]
    services = topology.routed([{"name": "a"}, {"name": "b"}], placed["gw"]["routes"])
    assert [(s["members"], s["held"]) for s in services] == [(["app1", "app2"], ["app3"])] * 2


def test_a_held_host_takes_over_no_migrations_or_schedules():
    plans = {h: present("a") for h in HOSTS}
    held_first = placement.place(plans, GATEWAYS, APPS, HOSTS, {}, held=frozenset({"app1"}))
    assert held_first["app1"]["migrate"] == [] and held_first["app2"]["migrate"] == ["a"]
    assert placement.place(plans, GATEWAYS, APPS, HOSTS, {})["app1"]["migrate"] == ["a"]


def test_a_service_only_on_held_hosts_gets_no_route_yet():
    plans = {"gw": present("a", "new"), "app1": present("a"), "app2": present("a"), "app3": present("a", "new")}
    placed = placement.place(plans, GATEWAYS, APPS, HOSTS, {}, held=frozenset({"app3"}))
    assert [r["name"] for r in placed["gw"]["routes"]] == ["a"]


def test_admitting_the_held_hosts_restores_inventory_order():
    plans = {h: present("a") for h in HOSTS}
    held = placement.place(plans, GATEWAYS, APPS, HOSTS, {}, held=frozenset({"app1"}))["gw"]
    admitted = topology.admit_held(held, APPS)
    assert admitted["routes"] == [{"name": "a", "members": ["app1", "app2", "app3"], "held": []}]
    assert admitted["routes"] == placement.place(plans, GATEWAYS, APPS, HOSTS, {})["gw"]["routes"]


# --- the requests of the fleet playbooks ---------------------------------------------------

PLANS = {"app1": ["svc1", "svc2"], "app2": ["svc1"]}
MIGRATE = {"app1": ["svc1", "svc2"], "app2": []}


def request(**kw):
    return fleet.fleet_request(kw, ["gw", "app1", "app2", "db"], ["app1", "app2"], ["gw"], PLANS, MIGRATE)


def test_run_goes_to_the_host_that_migrates_or_the_named_one():
    ok = request(kind="run", service="svc1", command='["python","manage.py","check"]')
    assert ok["problems"] == [] and ok["hosts"] == ["app1"] and ok["argv"] == ["python", "manage.py", "check"]
    named = request(kind="run", service="svc1", host="app2", command=["python", "-c", "print(1)"])
    assert named["problems"] == [] and named["hosts"] == ["app2"]


@pytest.mark.parametrize("kw,expected", [
    ({"service": "nope", "command": '["true"]'}, "service 'nope' is not present"),
    ({"service": "../x", "command": '["true"]'}, "service must name a service"),
    ({"service": "svc1", "command": '["python","-c","print(1)\\u001b[2J"]'}, "control character"),
    ({"service": "svc1", "command": '["python","a\\nb"]'}, "control character"),
    ({"service": "svc1", "command": "python manage.py check"}, "must be a JSON list"),
    ({"service": "svc1", "command": '["../../bin/sh"]'}, "command the program"),
    ({"service": "svc1", "command": ""}, "command must be given"),
    ({"service": "svc1", "command": '["true"]', "host": "elsewhere"}, "host 'elsewhere' is not in the inventory"),
    ({"service": "svc1", "command": '["true"]', "host": "a b"}, "is not a host name"),
    ({"service": "svc2", "command": '["true"]', "host": "app2"}, "host: app2 does not run service svc2"),
], ids=["unknown-service", "bad-name", "escape-in-argv", "newline-in-argv", "shell-string", "dotdot-program",
        "no-command", "host-not-in-inventory", "bad-host-name", "host-without-the-service"])
def test_run_refuses(kw, expected):
    problems = request(kind="run", **kw)["problems"]
    assert problems and any(expected in p for p in problems), problems


def test_logs_and_releases_reach_every_host_that_runs_the_service():
    assert request(kind="logs", service="svc1")["hosts"] == ["app1", "app2"]
    assert request(kind="releases", service="svc2")["hosts"] == ["app1"]
    logs = request(kind="logs", service="svc1", lines="20", since="2h")
    assert logs["problems"] == [] and logs["lines"] == 20 and logs["since"] == "2h"
    assert request(kind="logs", service="svc1", since="2026-12-07 04:00")["problems"] == []


@pytest.mark.parametrize("kw", [{"lines": "0"}, {"lines": "ten"}, {"lines": "10001"}, {"since": "yesterday"},
                                {"since": "2h; rm -rf /"}, {"since": "1h\n"}, {"host": "nowhere"}])
def test_logs_refuses(kw):
    assert request(kind="logs", service="svc1", **kw)["problems"]


@pytest.mark.parametrize("kind", ["join", "leave"])
def test_join_and_leave_name_app_hosts_of_the_inventory(kind):
    assert request(kind=kind, **{kind: "app2"})["problems"] == []
    assert request(kind=kind, **{kind: "app2"})["hosts"] == ["app2"]
    for bad, expected in (("nowhere", "not in the inventory"), ("gw", "not an app host"), ("db", "not an app host"),
                          ("app1,app2", "every app host"), ("", "must name one or more")):
        problems = request(kind=kind, **{kind: bad})["problems"]
        assert any(expected in p for p in problems), (bad, problems)


def test_unknown_kind_is_a_bug_of_the_playbook():
    with pytest.raises(AnsibleFilterError):
        request(kind="reboot")


# --- logs: what root reads -----------------------------------------------------------------

def test_since_understands_the_logs_own_times():
    assert service_logs.cutoff("2h", now=10000) == 10000 - 7200
    assert service_logs.cutoff("2026-12-07 04:05") == service_logs.cutoff("2026-12-07T04:05:00")
    with pytest.raises(ValueError):
        service_logs.cutoff("tomorrow")
    base = service_logs.cutoff("2026-12-07 04:05:06")
    assert service_logs.line_time('{"time":"2026-12-07T04:05:06+00:00","status":200}') == base
    assert service_logs.line_time('1.2.3.4 - - [07/Dec/2026:04:05:06 +0000] "GET / HTTP/1.1" 200') == base
    assert service_logs.line_time("no time here") is None


def test_since_keeps_continuation_lines_with_their_dated_line():
    lines = ["2026-12-07T04:00:00Z old", "Traceback (old)", "2026-12-07T05:00:00Z new", "Traceback (new)"]
    since = service_logs.cutoff("2026-12-07 04:30")
    assert service_logs.select(lines, 100, since, changed_at=None) == lines[2:]
    assert service_logs.select(lines, 1, None, changed_at=None) == lines[-1:]


def run_logs(capsys, **params):
    from ansible.module_utils.testing import patch_module_args

    with patch_module_args(dict({"host": "app1"}, **params)), pytest.raises(SystemExit):
        service_logs.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture()
def logs(tmp_path):
    """A service's log directory (its user writes there) and a file of root's it must not reach."""
    log_dir = tmp_path / "svc" / "shared" / "log"
    (log_dir / "schedules" / "tick").mkdir(parents=True)
    (log_dir / "worker-mail.log").write_text("sent 1\nsent 2\x1b[2J\n")
    (log_dir / "schedules" / "tick" / "runs.log").write_text("2026-12-07T04:00:00.000Z started\n")
    (log_dir / "schedules" / "tick" / "20261207T040000.000000Z.log").write_text("tick output\n")
    secret = tmp_path / "root-only"
    secret.write_text("SECRET=do-not-show\n")
    return log_dir, secret


def test_logs_are_prefixed_with_host_and_source_and_escaped(capsys, logs):
    log_dir, _secret = logs
    out = run_logs(capsys, log_dir=str(log_dir), workers=["mail"], schedules=["tick"])
    assert out["lines"] == ["app1 worker:mail | sent 1", "app1 worker:mail | sent 2\\x1b[2J",
                            "app1 schedule:tick | 2026-12-07T04:00:00.000Z started",
                            "app1 schedule:tick:run | tick output"]


@pytest.mark.parametrize("planted", ["worker-link", "worker-hardlink", "schedules-dir-link", "log-dir-link"])
def test_logs_never_follow_what_the_service_planted(capsys, logs, planted):
    log_dir, secret = logs
    if planted == "worker-link":
        (log_dir / "worker-mail.log").unlink()
        (log_dir / "worker-mail.log").symlink_to(secret)
    elif planted == "worker-hardlink":
        (log_dir / "worker-mail.log").unlink()
        os.link(secret, log_dir / "worker-mail.log")
    elif planted == "schedules-dir-link":
        elsewhere = secret.parent / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "runs.log").symlink_to(secret)
        os.rename(log_dir / "schedules" / "tick", secret.parent / "old-tick")
        (log_dir / "schedules" / "tick").symlink_to(elsewhere)
    else:
        os.rename(log_dir, secret.parent / "moved-log")
        log_dir.symlink_to(secret.parent)
    out = run_logs(capsys, log_dir=str(log_dir), workers=["mail"], schedules=["tick"],
                   files=[{"source": "web", "path": str(log_dir / "root-only")}])
    assert not any("do-not-show" in line for line in out["lines"]), out["lines"]
    assert any(" error | " in line for line in out["lines"]), out["lines"]


# --- releases: what root reads -------------------------------------------------------------

def make_release(root, rid, source="/src/svc", revision=None):
    path = root / "releases" / rid
    path.mkdir(parents=True)
    (path / ".microsvc-release").write_text(json.dumps({"release": rid, "source": source, "revision": revision}))
    return path


@pytest.fixture()
def service_root(tmp_path):
    root = tmp_path / "www" / "svc"
    for rid in ("aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"):
        make_release(root, rid, revision="f" * 40 if rid == "cccccccccccc" else None)
    (root / "releases" / "dddddddddddd").mkdir()  # an unpack that never completed
    (root / "releases" / ".history").write_text(json.dumps(["aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"]))
    (root / "current").symlink_to("releases/cccccccccccc")
    (root / "deploy.log").write_text(
        "=== 2026-12-01T10:00:00Z release bbbbbbbbbbbb live: deployed by alice@laptop\nsource: /src/svc\n"
        "=== 2026-12-02T10:00:00Z migrate\nok\n"
        "=== 2026-12-03T10:00:00Z release cccccccccccc live: deployed by bob@ci\n")
    os.chmod(root, 0o755)
    return root


def test_releases_mark_the_live_one_and_the_rollback_targets(service_root):
    out = service_releases.releases_of(str(service_root))
    assert out["errors"] == [] and out["current"] == "cccccccccccc" and out["rollback_default"] == "bbbbbbbbbbbb"
    rows = {r["id"]: r for r in out["releases"]}
    assert [r["id"] for r in out["releases"]][:3] == ["cccccccccccc", "bbbbbbbbbbbb", "aaaaaaaaaaaa"]
    assert rows["cccccccccccc"]["live"] and not rows["cccccccccccc"]["rollback_target"]
    assert rows["cccccccccccc"]["deployed_by"] == "bob@ci" and rows["cccccccccccc"]["revision"] == "f" * 40
    assert rows["bbbbbbbbbbbb"]["rollback_target"] and rows["bbbbbbbbbbbb"]["live_at"] == "2026-12-01T10:00:00Z"
    assert rows["aaaaaaaaaaaa"]["rollback_target"] and rows["aaaaaaaaaaaa"]["deployed_by"] is None
    assert not rows["dddddddddddd"]["complete"] and not rows["dddddddddddd"]["rollback_target"]


@pytest.mark.parametrize("planted", ["deploy-log-link", "marker-link", "history-link", "releases-dir-link"])
def test_releases_never_follow_links(service_root, tmp_path, planted):
    forged = tmp_path / "forged"
    forged.write_text("=== 2026-12-09T00:00:00Z release aaaaaaaaaaaa live: deployed by mallory@x\n")
    if planted == "deploy-log-link":
        (service_root / "deploy.log").unlink()
        (service_root / "deploy.log").symlink_to(forged)
    elif planted == "marker-link":
        marker = service_root / "releases" / "aaaaaaaaaaaa" / ".microsvc-release"
        forged.write_text(json.dumps({"release": "aaaaaaaaaaaa", "source": "forged"}))
        marker.unlink()
        marker.symlink_to(forged)
    elif planted == "history-link":
        forged.write_text(json.dumps(["cccccccccccc", "aaaaaaaaaaaa"]))
        (service_root / "releases" / ".history").unlink()
        (service_root / "releases" / ".history").symlink_to(forged)
    else:
        os.rename(service_root / "releases", tmp_path / "real-releases")
        (service_root / "releases").symlink_to(tmp_path / "real-releases")
    out = service_releases.releases_of(str(service_root))
    assert out["errors"], out
    text = json.dumps(out)
    assert "mallory" not in text and "forged" not in text


def test_a_fresh_host_has_no_releases(tmp_path):
    out = service_releases.releases_of(str(tmp_path / "absent"))
    assert out == {"current": None, "rollback_default": None, "releases": [], "errors": []}


def test_release_times_are_utc():
    assert service_releases.utc(0) == "1970-01-01T00:00:00Z"
    assert service_releases.utc(time.time()).endswith("Z")


def test_a_deploys_switch_is_what_releases_reads_back(tmp_path):
    from ansible_collections.microsvc.deploy.plugins.modules import deploy_batch

    root = tmp_path / "www" / "svc"
    make_release(root, "abcdefabcdef")
    os.chmod(root, 0o755)
    deploy_batch.log_live({"group": "root", "root": str(root), "release": "abcdefabcdef", "deployed_by": "carol@ops",
                           "marker": {"source": "/src/svc", "revision": None}})
    rows = service_releases.releases_of(str(root))["releases"]
    assert rows[0]["deployed_by"] == "carol@ops" and rows[0]["live_at"].endswith("Z")
    # A service without its group yet (never the case in a deploy) costs the line, not the deploy.
    deploy_batch.log_live({"group": "no-such-group-here", "root": str(root), "release": "abcdefabcdef"})
