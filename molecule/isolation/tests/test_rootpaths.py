"""Root never follows a path the service controls: links the service plants in what it writes
(shared/log, run/) lead root (uWSGI before its privilege drop, the play, status, logrotate)
nowhere, and nothing uWSGI evaluates as configuration is the service's.

Each attack runs as the service's user (inside its worker, or from a plain shell as its user);
each check is made from outside: checksums, owners and modes of everything the service must not
change (``Outside``), root's processes, the neighbours' routes.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from conftest import (
    HOSTILE,
    NEIGHBOURS,
    ROUTES,
    SCENARIO,
    Outside,
    as_user,
    attack,
    root_processes,
    scenario_services,
)
from microsvc_checks import http, master_pid, run_playbook

HOST = os.environ.get("MICROSVC_ISOLATION_NAME", "microsvc-isolation")
ROOT = "/opt/www/%s" % HOSTILE
LOG = ROOT + "/shared/log"


# --- helpers ----------------------------------------------------------------------------------

def stat_of(host, path):
    """'owner:group mode type size sha256' of one path (never through a link), or 'absent'."""
    out = host.run("stat -c '%%U:%%G %%a %%F %%s' %s && (test -L %s || sha256sum %s | cut -c1-16)"
                   % (path, path, path))
    return " ".join(out.stdout.split()) if out.rc == 0 else "absent"


def restart_own_master(host):
    """The service kills its own master (SIGKILL, as its user): the emperor starts it again, as
    root until the privilege drop. Returns the new master's pid once the route answers."""
    old = master_pid(host, HOSTILE)
    assert old
    killed = as_user(host, "kill -9 %d" % old)
    assert killed.rc == 0, killed.stderr
    deadline = time.time() + 90
    while time.time() < deadline:
        new = master_pid(host, HOSTILE)
        if new and new != old and http(host, ROUTES[HOSTILE])["status"] == 200:
            return new
        time.sleep(1)
    raise AssertionError("the emperor did not start %s again" % HOSTILE)


def env_seen_by_app(host):
    resp = http(host, "/api/%s/env" % HOSTILE)
    assert resp["status"] == 200, resp
    return json.loads(resp["body"])


@pytest.fixture
def clean_links(host):
    """Put back what the attacks of a test planted in the service's own directories."""
    yield
    as_user(host, "cd %s && rm -f uwsgi.log evil*.log shadow.log hard*.log schedules/tick/runs.log.lnk; "
                  "if [ -L schedules ]; then rm -f schedules; fi; "
                  "if [ -d schedules.real ]; then rm -rf schedules && mv schedules.real schedules; fi; "
                  "rm -f %s/run/chain-reload %s/run/uwsgi.sock" % (LOG, ROOT, ROOT))


# --- uWSGI's own log: opened by the master while it is still root ---------------------------

def test_the_uwsgi_log_is_in_a_directory_the_service_cannot_change(host):
    assert stat_of(host, ROOT + "/log").startswith("root:%s 750 directory" % HOSTILE)
    assert stat_of(host, ROOT + "/log/uwsgi.log").startswith("%s:%s 640 regular" % (HOSTILE, HOSTILE))
    ini = host.file("/etc/uwsgi/vassals/%s.ini" % HOSTILE).content_string
    assert "logto2 = %s/log/uwsgi.log" % ROOT in ini and "logfile-chown" not in ini
    # The service can neither replace its uWSGI log with a link nor add anything beside it.
    out = attack(host, "ln -sf ../env %s/log/uwsgi.log; echo rc=$?; ln -s /etc/shadow %s/log/x; echo rc=$?"
                 % (ROOT, ROOT))
    assert out["out"].split() == ["rc=1", "rc=1"], out
    assert stat_of(host, ROOT + "/log/uwsgi.log").startswith("%s:%s 640 regular" % (HOSTILE, HOSTILE))


def test_a_log_link_to_the_own_env_file_then_a_restart_changes_nothing(host, clean_links):
    """The reported crossing: shared/log/uwsgi.log -> ../../env, then the service kills its own
    master; the emperor starts it again as root. The env file keeps root:<svc> 0640 and its
    content, and the next start reads no line of it as uWSGI configuration."""
    outside = Outside(host)
    env_before = stat_of(host, ROOT + "/env")
    assert env_before.startswith("root:%s 640 regular" % HOSTILE)
    out = attack(host, "ln -sf ../../env %s/uwsgi.log && ls -l %s/uwsgi.log" % (LOG, LOG))
    assert out["rc"] == 0, out
    restart_own_master(host)
    assert stat_of(host, ROOT + "/env") == env_before
    assert env_seen_by_app(host)["HOSTILE_MARKER"] == "plain"
    outside.assert_unchanged()


def test_a_log_link_to_a_neighbours_env_file_then_a_restart_changes_nothing(host, clean_links):
    outside = Outside(host)
    for neighbour in ("service1", "service2"):
        out = attack(host, "ln -sf /opt/www/%s/env %s/uwsgi.log" % (neighbour, LOG))
        assert out["rc"] == 0, out
        restart_own_master(host)
    assert stat_of(host, "/opt/www/service2/env").startswith("root:service2 640 regular")
    outside.assert_unchanged()


def test_a_log_link_to_a_root_file_then_a_restart_changes_nothing(host, clean_links):
    outside = Outside(host)
    out = attack(host, "ln -sf /etc/passwd %s/uwsgi.log && ln -sf /etc/shadow %s/worker-loop.log.lnk"
                 % (LOG, LOG))
    assert out["rc"] == 0, out
    restart_own_master(host)
    assert stat_of(host, "/etc/passwd").startswith("root:root 644 regular")
    outside.assert_unchanged()
    as_user(host, "rm -f %s/worker-loop.log.lnk" % LOG)


# --- the environment file is never uWSGI configuration ---------------------------------------

def test_only_the_env_files_path_reaches_uwsgi(host):
    """The workers read the file themselves, as the service, with a loader of root's."""
    ini = host.file("/etc/uwsgi/vassals/%s.ini" % HOSTILE).content_string
    assert "for-readline" not in ini and "%(_)" not in ini
    assert "env = MICROSVC_ENV_FILE=%s/env" % ROOT in ini
    seen = env_seen_by_app(host)
    assert seen["HOSTILE_MARKER"] == "plain" and seen["MICROSVC_ENV_FILE"] == ROOT + "/env", seen
    loader = "/usr/local/lib/microsvc/microsvc_env.py"
    assert stat_of(host, loader).startswith("root:root 644 regular")
    assert stat_of(host, "/usr/local/lib/microsvc").startswith("root:root 755 directory")


def test_the_service_cannot_write_what_uwsgi_or_the_loader_reads(host):
    outside = Outside(host)
    script = ("for f in %s/env /usr/local/lib/microsvc/microsvc_env.py /etc/uwsgi/vassals/%s.ini; do "
              "(echo 'env = X=@(exec://id)' >> $f) 2>/dev/null; echo rc=$?; done; "
              "mkdir -p /usr/local/lib/microsvc/x 2>/dev/null; echo rc=$?" % (ROOT, HOSTILE))
    for words in (attack(host, script)["out"].split(), as_user(host, script).stdout.split()):
        assert len(words) == 4 and "rc=0" not in words, words
    outside.assert_unchanged()


def test_a_changed_env_reaches_the_app_and_a_dropped_name_leaves_it(host, inventory):
    services = scenario_services()
    hostile = next(s for s in services if s["name"] == HOSTILE)
    changed = [dict(s, env={"HOSTILE_NEW": "two"}) if s is hostile else s for s in services]
    try:
        rc, out = run_playbook(inventory(changed), args=["-e", "deploy_services=%s" % HOSTILE])
        assert rc == 0, out[-3000:]
        seen = env_seen_by_app(host)
        assert seen.get("HOSTILE_NEW") == "two" and "HOSTILE_MARKER" not in seen, seen
    finally:
        rc, out = run_playbook(inventory(), args=["-e", "deploy_services=%s" % HOSTILE])
        assert rc == 0, out[-3000:]
    seen = env_seen_by_app(host)
    assert seen.get("HOSTILE_MARKER") == "plain" and "HOSTILE_NEW" not in seen, seen
    assert not host.file(ROOT + "/env.unset").exists


# --- the chain-reload file is root's ----------------------------------------------------------

def test_the_chain_reload_file_is_beside_env_and_the_service_cannot_replace_it(host):
    ini = host.file("/etc/uwsgi/vassals/%s.ini" % HOSTILE).content_string
    assert "touch-chain-reload = %s/chain-reload" % ROOT in ini
    out = attack(host, "ln -sf /etc/hostname %s/chain-reload; echo rc=$?; touch %s/chain-reload; echo rc=$?"
                 % (ROOT, ROOT))
    assert out["out"].split() == ["rc=1", "rc=1"], out


def test_a_deploy_with_links_planted_in_run_and_log_changes_nothing_outside(host, inventory, clean_links,
                                                                            tmp_path, monkeypatch):
    """Links where the chain-reload file and uWSGI's log used to be, and a socket name in run/,
    then a deploy of new code of the hostile service (its vassal chain-reloads): root touches only
    its own file, and the targets stay as they were."""
    code = tmp_path / "hostile-v2"
    shutil.copytree(os.path.join(SCENARIO, "hostile"), code)
    with open(code / "hostile.py", "a", encoding="utf-8") as handle:
        handle.write("\n# a new release: the deploy chain-reloads the vassal\n")
    outside = Outside(host)
    before = len(host.file(ROOT + "/log/uwsgi.log").content_string)
    out = attack(host, "ln -sf /etc/hostname %s/run/chain-reload && ln -sf /etc/hosts %s/run/uwsgi.sock && "
                       "ln -sf /opt/www/service1/env %s/uwsgi.log" % (ROOT, ROOT, LOG))
    assert out["rc"] == 0, out
    inv = inventory()
    monkeypatch.setenv("MICROSVC_HOSTILE_DIR", str(code))
    rc, out = run_playbook(inv, args=["-e", "deploy_services=%s" % HOSTILE])
    assert rc == 0, out[-3000:]
    # uWSGI, as the service, saw root's touch of <root>/chain-reload and replaced its workers.
    assert "chain reload" in host.file(ROOT + "/log/uwsgi.log").content_string[before:]
    assert stat_of(host, ROOT + "/chain-reload").startswith("root:root 644 regular")
    assert_unchanged_but_own_release(host, outside)
    # Back to the scenario's own code, so that the next tests find the release they converged.
    monkeypatch.setenv("MICROSVC_HOSTILE_DIR", os.path.join(SCENARIO, "hostile"))
    rc, out = run_playbook(inventory(), args=["-e", "deploy_services=%s" % HOSTILE])
    assert rc == 0, out[-3000:]


def assert_unchanged_but_own_release(host, outside):
    """Outside.assert_unchanged, except for the hostile service's new release and virtualenv."""
    own = (ROOT + "/releases", ROOT + "/venvs")
    changed = [line for line in set(outside.fingerprint()) ^ set(outside.files)
               if not any(line.startswith(p) or "  " + p in line for p in own)]
    assert not changed, "files outside the service changed:\n" + "\n".join(sorted(changed)[:40])
    new_root = [p for p in root_processes(host) if p not in outside.root]
    assert not new_root, "new processes run as root: %s" % new_root
    for name in NEIGHBOURS:
        assert http(host, ROUTES[name])["status"] == 200, "%s stopped answering" % name


# --- status, schedules and logrotate over what the service writes ----------------------------

def test_status_and_a_schedule_run_with_the_schedules_directory_swapped_for_a_link(host, inventory, clean_links):
    """schedules/ swapped for a link to a neighbour's directory that holds a tick/runs.log: status
    must not report the neighbour's run as the service's (root never follows the link), and the
    service's own run, as its user, cannot write there."""
    decoy = "/opt/www/service2/shared/log/decoy"
    line = "2020-01-02T03:04:05.000Z %s pid=1 command_pid=2 release=x log=NEIGHBOUR.log"
    made = as_user(host, "mkdir -p %s/tick && printf '%%s\\n' '%s' '%s' > %s/tick/runs.log"
                   % (decoy, line % "started", (line % "finished").replace("pid=1 command_pid=2 release=x",
                                                                            "exit=42 seconds=1.0"), decoy),
                   "service2")
    assert made.rc == 0, made.stderr
    try:
        outside = Outside(host)
        out = as_user(host, "cd %s && mkdir -p schedules/tick && mv schedules schedules.real && ln -s %s schedules"
                      % (LOG, decoy))
        assert out.rc == 0, out.stderr
        _rc, text = run_playbook(inventory(), playbook="playbooks/status.yml")
        assert "exit 42" not in text, text[-3000:]
        run = host.run("systemctl start microsvc-%s.run-tick.service" % HOSTILE)
        assert "exit 42" not in run.stdout + run.stderr
        assert host.file(decoy + "/tick/runs.log").content_string.count("\n") == 2
        outside.assert_unchanged()
    finally:
        as_user(host, "rm -rf %s" % decoy, "service2")


def test_status_with_the_runs_log_replaced_by_a_link_to_a_neighbours_env(host, inventory, clean_links):
    outside = Outside(host)
    out = as_user(host, "mkdir -p %s/schedules/tick && cd %s/schedules/tick && "
                        "(test -e runs.log && mv runs.log runs.log.real || true) && "
                        "ln -s /opt/www/service2/env runs.log" % (LOG, LOG))
    assert out.rc == 0, out.stderr
    _rc, text = run_playbook(inventory(), playbook="playbooks/status.yml")
    assert "only-service2" not in text and "SECRET_OF_SERVICE2" not in text
    as_user(host, "cd %s/schedules/tick && rm -f runs.log && (test -e runs.log.real && mv runs.log.real runs.log "
                  "|| true)" % LOG)
    outside.assert_unchanged()


def test_a_hard_link_to_a_root_file_is_refused_by_the_kernel(host):
    assert host.file("/proc/sys/fs/protected_hardlinks").content_string.strip() == "1"
    # Root's files on the same file system as shared/log (/etc may be another one): the service
    # may read the first, not write either, so the kernel refuses the link.
    out = attack(host, "ln %s/env %s/hard1.log; echo rc=$?; ln %s/.microsvc-service %s/hard2.log; echo rc=$?"
                 % (ROOT, LOG, ROOT, LOG))
    assert out["out"].split() == ["rc=1", "rc=1"], out
    assert out["err"].count("Operation not permitted") == 2, out


def test_logrotate_forced_as_root_with_links_in_shared_log_changes_nothing_outside(host, clean_links):
    """The service's logrotate file rotates as the service's user: symlinks to a neighbour's env
    and to /etc/shadow, and a hard link to a file of its own, lead nowhere it could not go."""
    rotation = host.file("/etc/logrotate.d/microsvc-%s" % HOSTILE).content_string
    assert "su %s %s" % (HOSTILE, HOSTILE) in rotation
    # A neighbour's schedule log, for the swapped schedules/ directory to lead to: root would
    # rotate (truncate) it; the service's user cannot even reach it.
    decoy = "/opt/www/service2/shared/log/decoy"
    assert as_user(host, "mkdir -p %s && echo neighbour-run > %s/runs.log" % (decoy, decoy), "service2").rc == 0
    try:
        rotate_with_links(host, decoy)
    finally:
        as_user(host, "rm -f %s/../data/own %s/*.log.1 %s/*.gz; rm -rf %s/schedules" % (LOG, LOG, LOG, LOG))
        as_user(host, "rm -rf %s" % decoy, "service2")


def rotate_with_links(host, decoy):
    outside = Outside(host)
    out = attack(host, "cd %s && echo x > ../data/own && ln -sf /opt/www/service2/env evil.log && "
                       "ln -sf /etc/shadow shadow.log && ln -f ../data/own hard-own.log && "
                       "mkdir -p schedules && mv schedules schedules.real && mkdir schedules && "
                       "ln -s %s schedules/decoy && ln -s /opt/www/service2/shared/log schedules/all" % (LOG, decoy))
    assert out["rc"] == 0, out
    for _ in range(2):  # twice: the second turns the first copies into compressed ones
        run = host.run("logrotate --force --state /tmp/rootpaths-logrotate.state /etc/logrotate.d/microsvc-%s"
                       % HOSTILE)
        assert "only-service2" not in run.stdout + run.stderr
    for path in ("/opt/www/service2/env.1", "/opt/www/service2/env.1.gz", "/etc/shadow.1", "/etc/shadow.1.gz"):
        assert not host.file(path).exists, path
    assert stat_of(host, "/etc/shadow").startswith("root:shadow 640 regular")
    assert host.file(decoy + "/runs.log").content_string == "neighbour-run\n"
    assert not host.file(decoy + "/runs.log.1").exists
    outside.assert_unchanged()


def test_the_emperors_rotation_covers_only_root_owned_directories(host):
    rotation = host.file("/etc/logrotate.d/microsvc-uwsgi").content_string
    globs = [line for line in rotation.splitlines() if line.endswith("{")]
    assert globs == ["/opt/www/*/log/uwsgi.log {"], rotation
