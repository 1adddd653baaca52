"""Secure defaults, and the failure paths of the gateway and of bad input.

The host was converged with HTTPS (self-signed), HSTS and a rate limit on every route
(group_vars/all/hardening.yml); check mode already ran on the fresh and on the converged host
(molecule's test sequence). These tests look at the result from outside and drive further
runs of site.yml from the controller.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from microsvc_checks import (
    NGINX_GROUP,
    demo_services,
    http,
    recap_changed,
    run_playbook,
    server_pid,
    web_processes,
    write_inventory,
    wsclient_command,
)

HOST = "microsvc-hardening"
HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "..", "group_vars", "all", "hardening.yml"), encoding="utf-8") as _f:
    HARDENING = yaml.safe_load(_f)
SERVICES = demo_services()
NAMES = [s["name"] for s in SERVICES]


def fingerprint(host):
    """Everything this collection writes on a host, with sizes, modes and times, and the PIDs
    of every web server (uWSGI master, ASGI server): if a failed run changed anything, this changes."""
    files = host.check_output(
        "find /etc/nginx /etc/uwsgi /opt/www /etc/systemd/system /etc/logrotate.d "
        "-printf '%p %s %m %u %g %T@\\n' | sort | sha256sum")
    pids = [server_pid(host, n) for n in NAMES]
    assert all(pids), dict(zip(NAMES, pids))
    pids += [host.check_output("systemctl show -p MainPID --value nginx")]
    return files, pids


# --- HTTPS and headers --------------------------------------------------------------------

def test_https_answers_and_http_redirects(host):
    assert http(host, "/api/service2/", scheme="https")["status"] == 200
    plain = http(host, "/api/service2/?x=1")
    assert plain["status"] == 301
    assert plain["headers"]["Location"] == "https://127.0.0.1/api/service2/?x=1"


def test_hsts_and_security_headers_on_every_answer(host):
    for path, status in (("/api/service2/", 200), ("/api/nope/", 404)):
        resp = http(host, path, scheme="https")
        assert resp["status"] == status
        headers = {k.lower(): v for k, v in resp["headers"].items()}
        assert headers["strict-transport-security"] == "max-age=31536000"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "strict-origin-when-cross-origin"
        assert headers["server"] == "nginx"  # server_tokens off: no version


@pytest.mark.parametrize("version,accepted", [("TLSv1_1", False), ("TLSv1_2", True), ("TLSv1_3", True)])
def test_only_modern_tls_versions(host, version, accepted):
    script = (
        "import socket, ssl\n"
        "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n"
        "ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.%s\n"
        "try:\n"
        "    ctx.set_ciphers('ALL:@SECLEVEL=0')\n"
        "    s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', 443), timeout=5)); print('OK', s.version())\n"
        "except (ssl.SSLError, OSError) as exc:\n"
        "    print('REFUSED', exc)\n" % version)
    out = host.check_output("python3 -c %s" % _sh(script))
    assert out.startswith("OK" if accepted else "REFUSED"), out


def test_websocket_echo_through_the_tls_gateway(host):
    """The ASGI sample's WebSocket, upgraded on the HTTPS server (plain HTTP only redirects)."""
    cmd = host.run(wsclient_command("service7", "echo", "wss://127.0.0.1/api/service7/ws", "--insecure"))
    assert cmd.rc == 0, cmd.stderr
    assert json.loads(cmd.stdout)["echo"] == "hello", cmd.stdout


def test_tls_key_is_private(host):
    key = host.file("/etc/nginx/microsvc-tls/gateway.key")
    assert (key.user, key.mode) == ("root", 0o600)
    assert host.file("/etc/nginx/microsvc-tls").mode == 0o700


def test_client_cannot_spoof_forwarded_headers(host):
    resp = http(host, "/api/service3/echo", scheme="https",
                headers={"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6", "X-Forwarded-Proto": "gopher"})
    seen = json.loads(resp["body"])
    assert seen["forwarded_for"] == "127.0.0.1"
    assert seen["real_ip"] == "127.0.0.1"
    assert seen["forwarded_proto"] == "https"


def test_rate_limit_answers_429_beyond_the_burst(host):
    script = (
        "import concurrent.futures, ssl, urllib.request, urllib.error\n"
        "ctx = ssl._create_unverified_context()\n"
        "def get(_):\n"
        "    try:\n"
        "        return urllib.request.urlopen('https://127.0.0.1/api/service2/', context=ctx, timeout=10).status\n"
        "    except urllib.error.HTTPError as exc:\n"
        "        return exc.code\n"
        "with concurrent.futures.ThreadPoolExecutor(30) as pool:\n"
        "    codes = list(pool.map(get, range(60)))\n"
        "print(codes.count(200), codes.count(429))\n")
    ok, limited = map(int, host.check_output("python3 -c %s" % _sh(script)).split())
    assert ok >= 5 and limited > 0 and ok + limited == 60, (ok, limited)


def test_per_service_logs_and_their_rotation(host):
    http(host, "/api/service4/", scheme="https")
    log = host.file("/var/log/nginx/microsvc/service4.access.log")
    host.run("sleep 2")  # the access log is buffered (flushed every second)
    assert log.exists and "/api/service4/" in log.content_string
    assert re.search(r" rt=[0-9.]+ urt=[0-9.]+", log.content_string), log.content_string[-300:]
    assert host.file("/var/log/nginx/microsvc/service4.error.log").exists
    assert host.file("/opt/www/service4/log/uwsgi.log").exists
    # Force a rotation with the installed configuration, then check that both nginx and
    # uWSGI go on logging into fresh files.
    for conf in ("/etc/logrotate.d/microsvc-nginx", "/etc/logrotate.d/microsvc-uwsgi"):
        run = host.run("logrotate --force --state /tmp/logrotate-test.state %s" % conf)
        assert run.rc == 0, run.stderr
    assert host.file("/var/log/nginx/microsvc/service4.access.log.1").exists
    assert host.file("/opt/www/service4/log/uwsgi.log.1").exists
    http(host, "/api/service4/?after-rotation", scheme="https")
    time_out = 50
    while time_out and "after-rotation" not in host.file("/var/log/nginx/microsvc/service4.access.log").content_string:
        time_out -= 1
        host.run("sleep 0.1")
    assert "after-rotation" in host.file("/var/log/nginx/microsvc/service4.access.log").content_string
    # No service reads another's requests: only root and nginx's workers (who reopen the logs
    # after a rotation) enter the directory, and the rotated-in files are not world-readable.
    log_dir = host.file("/var/log/nginx/microsvc")
    assert (log_dir.user, log_dir.group, log_dir.mode) == ("root", NGINX_GROUP, 0o750)
    assert host.file("/var/log/nginx/microsvc/service4.access.log").mode == 0o640
    # uWSGI logs events, not requests, by default (the gateway logs requests). After the
    # rotation (copytruncate) its next event lands in the fresh file: make one.
    uwsgi_log = "/opt/www/service4/log/uwsgi.log"
    assert "chain reload" not in host.file(uwsgi_log).content_string
    host.run("touch /opt/www/service4/chain-reload")
    time_out = 100
    while time_out and "chain reload" not in host.file(uwsgi_log).content_string:
        time_out -= 1
        host.run("sleep 0.1")
    assert "chain reload" in host.file(uwsgi_log).content_string
    # Let the chain reload finish (one worker after the other) so that no later test sees
    # its log lines appear while it compares the host before and after a run.
    time_out = 300
    while time_out and "chain reloading complete" not in host.file(uwsgi_log).content_string:
        time_out -= 1
        host.run("sleep 0.1")
    assert "chain reloading complete" in host.file(uwsgi_log).content_string


def test_gixy_finds_nothing_in_the_rendered_configuration(tmp_path):
    gixy = shutil.which("gixy", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    assert gixy, "gixy-ng is part of requirements-dev.txt"
    subprocess.run(["docker", "cp", "%s:/etc/nginx" % HOST, str(tmp_path / "nginx")], check=True)
    # Absolute includes point at the host's paths; the copy must see its own files.
    proc = subprocess.run([gixy, "--format", "json", str(tmp_path / "nginx" / "nginx.conf")],
                          capture_output=True, text=True, check=False, cwd=str(tmp_path / "nginx"))
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], json.dumps(findings, indent=1)
    assert proc.returncode == 0, proc.stderr


# --- the services' side -------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_service_user_has_no_shell_and_cannot_touch_code_or_virtualenv(host, name):
    user = host.user(name)
    assert user.shell in ("/usr/sbin/nologin", "/sbin/nologin")
    root = "/opt/www/%s" % name
    for path in ("current/", "current/.venv/", "current/.venv/bin/", "env-is-not-writable"):
        target = root + "/" + path + "probe" if not path.startswith("env") else root + "/env"
        assert host.run("runuser -u %s -- sh -c %s" % (name, _sh("echo x >> %s" % target))).rc != 0, target
    assert host.run("runuser -u %s -- cat %s/env" % (name, root)).rc == 0  # readable by the service
    assert host.run("runuser -u nobody -- cat %s/env" % root).rc != 0  # not by others


def test_no_service_listens_on_a_network_address(host):
    out = host.check_output("ss -Hltunp")
    assert "uwsgi" not in out.lower() and "uWSGI" not in out, out
    # Nor does any web server process (an ASGI server is a Python process).
    for svc in SERVICES:
        procs = web_processes(host, svc)
        assert procs, svc["name"]
        for _user, pid, _ppid, _args in procs:
            assert "pid=%d," % pid not in out, (svc["name"], out)


@pytest.mark.parametrize("svc", SERVICES, ids=NAMES)
def test_web_servers_run_sandboxed(host, svc):
    procs = web_processes(host, svc)
    assert procs
    for _user, pid, _ppid, _args in procs:
        status = host.file("/proc/%d/status" % pid).content_string
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.MULTILINE), status
        assert re.search(r"^CapEff:\s+0+$", status, re.MULTILINE), status  # no capability left after the drop
        # ProtectSystem=strict: the root file system is read-only, the services' tree is not.
        mounts = {line.split()[4]: line.split()[5] for line in
                  host.file("/proc/%d/mountinfo" % pid).content_string.splitlines()}
        assert mounts["/"].split(",")[0] == "ro", mounts
        assert mounts["/opt/www"].split(",")[0] == "rw", mounts


def test_emperor_unit_is_hardened(host):
    props = host.check_output(
        "systemctl show uwsgi-emperor -p NoNewPrivileges -p ProtectSystem -p ProtectHome -p PrivateTmp "
        "-p RestrictSUIDSGID -p CapabilityBoundingSet -p Restart")
    assert "NoNewPrivileges=yes" in props
    assert "ProtectSystem=strict" in props
    assert "ProtectHome=yes" in props
    assert "PrivateTmp=yes" in props
    assert "Restart=always" in props
    assert "cap_sys_admin" not in props.lower() and "cap_setuid" in props.lower()


# --- failure paths ------------------------------------------------------------------------

def test_broken_gateway_change_never_reaches_the_live_configuration(host, tmp_path):
    before = fingerprint(host)
    # Valid by every allow-list (a parameter may name an nginx variable), but no such variable
    # exists: only nginx -t can tell.
    inv = write_inventory(str(tmp_path / "inv"), HOST, SERVICES,
                          dict(HARDENING, nginx_gateway_uwsgi_params={"HTTP_X_BROKEN": "$no_such_variable"}))
    rc, out = run_playbook(inv)
    assert rc != 0
    assert "nginx -t rejected the new configuration; the live configuration was not changed" in out, out
    assert 'unknown "no_such_variable" variable' in out, out
    assert fingerprint(host) == before
    assert host.run("nginx -t").rc == 0
    for name in NAMES:
        assert http(host, "/api/%s/" % name, scheme="https")["status"] == 200


GOOD = {"name": "good", "source": "{{ microsvc_samples_dir }}/service2", "module": "app"}
BAD_INVENTORIES = [
    ("dotdot-name", [dict(GOOD, name="../x")], "service '../x': field 'name'"),
    ("space-name", [dict(GOOD, name="a b")], "service 'a b': field 'name'"),
    ("duplicate-name", [GOOD, dict(GOOD, route="/other/")], "service 'good': field 'name'"),
    ("duplicate-route", [GOOD, dict(GOOD, name="twin", route="/api/good/")], "service 'twin': field 'route'"),
    ("nested-route", [dict(GOOD, route="/api/"), dict(GOOD, name="inner", route="/api/inner/")],
     "service 'inner': field 'route'"),
    ("route-slashes", [dict(GOOD, route="/api/good")], "service 'good': field 'route'"),
    ("socket-outside-root", [dict(GOOD, socket="/tmp/good.sock")], "service 'good': field 'socket'"),
    ("processes-zero", [dict(GOOD, processes=0)], "service 'good': field 'processes'"),
    ("unknown-key", [dict(GOOD, colour="blue")], "service 'good': field 'colour'"),
    ("wrong-type", [dict(GOOD, env=["A=1"])], "service 'good': field 'env'"),
    ("hyphen-module", [dict(GOOD, module="micro-service.wsgi")], "service 'good': field 'module'"),
    ("missing-source", [dict(GOOD, source="/nonexistent/code")], "service 'good': field 'source.path'"),
    ("managed-uwsgi-option", [dict(GOOD, uwsgi_options={"uid": "root"})], "service 'good': field 'uwsgi_options.uid'"),
    ("bad-health-status", [dict(GOOD, health={"status": [999]})], "service 'good': field 'health.status'"),
    ("uwsgi-set", [dict(GOOD, uwsgi_options={"set": "uid=0"})], "service 'good': field 'uwsgi_options.set'"),
    ("newline-in-wsgi-file", [{"name": "good", "source": GOOD["source"], "wsgi_file": "app.py\nuid = 0"}],
     "service 'good': field 'wsgi_file'"),
    ("login-user-name", [dict(GOOD, name="admin")], "service 'admin': field 'name'"),
]


@pytest.mark.parametrize("services,expected", [c[1:] for c in BAD_INVENTORIES], ids=[c[0] for c in BAD_INVENTORIES])
def test_bad_inventory_changes_nothing_on_the_host(host, tmp_path, services, expected):
    before = fingerprint(host)
    rc, out = run_playbook(write_inventory(str(tmp_path / "inv"), HOST, SERVICES + services, HARDENING))
    assert rc != 0
    assert "The service list or a setting is invalid; no host was changed." in out, out
    assert expected in out, out
    assert fingerprint(host) == before


def test_secret_in_clear_changes_nothing_when_vault_is_required(host, tmp_path):
    before = fingerprint(host)
    services = SERVICES + [dict(GOOD, env={"DB_PASSWORD": "hunter2", "LOG_LEVEL": "info"})]
    rc, out = run_playbook(write_inventory(str(tmp_path / "inv"), HOST, services,
                                           dict(HARDENING, microsvc_require_vault=True)))
    assert rc != 0
    assert "The service list or a setting is invalid; no host was changed." in out, out
    assert "service 'good': field 'env.DB_PASSWORD': the name matches the secret pattern '*PASSWORD*'" in out, out
    assert "hunter2" not in out, out
    assert fingerprint(host) == before


def test_bad_setting_changes_nothing_on_the_host(host, tmp_path):
    before = fingerprint(host)
    rc, out = run_playbook(write_inventory(str(tmp_path / "inv"), HOST, SERVICES,
                                           dict(HARDENING, microsvc_root="/", microsvc_route_prefix="/api/\n")))
    assert rc != 0
    assert "setting 'microsvc_root': '/' is not allowed" in out, out
    assert "setting 'microsvc_route_prefix'" in out, out
    assert fingerprint(host) == before


def test_a_service_named_like_an_account_of_the_host_is_refused_before_it_changes(host, tmp_path):
    """'legacy' is no well-known name, so the controller lets it pass; the host knows it is not ours."""
    before = fingerprint(host)
    account = host.user("legacy")
    shell, home, uid = account.shell, account.home, account.uid
    rc, out = run_playbook(write_inventory(str(tmp_path / "inv"), HOST, SERVICES + [dict(GOOD, name="legacy")],
                                           HARDENING))
    assert rc != 0
    assert "A service is named like an account on this host; the host was not changed." in out, out
    assert "service 'legacy': field 'name': there is already a user 'legacy' (uid %d" % uid in out, out
    assert "PLAY [Gateway]" not in out, out
    assert fingerprint(host) == before
    after = host.user("legacy")
    assert (after.shell, after.home, after.uid) == (shell, home, uid)


def test_every_web_server_runs_as_its_own_unprivileged_user(host):
    for svc in SERVICES:
        name = svc["name"]
        procs = web_processes(host, svc)
        assert procs and {user for user, _pid, _ppid, _args in procs} == {name}, procs
        assert host.user(name).uid != 0 and host.user(name).uid not in (host.user("admin").uid,)


def test_nothing_but_the_gateway_listens_on_a_wildcard_address(host):
    """Listening sockets on 0.0.0.0 or [::] belong to nginx on the gateway's own ports; every
    service listens on a unix socket."""
    wildcard = []
    for line in host.check_output("ss -Hltunp").splitlines():
        fields = line.split()
        local = fields[4]
        address, _, port = local.rpartition(":")
        if address in ("0.0.0.0", "*", "[::]", "::"):
            wildcard.append((port, line))
    assert wildcard, "the gateway listens"
    for port, line in wildcard:
        assert port in ("80", "443") and '"nginx"' in line, line


def test_check_mode_on_the_converged_host_shows_the_gateway_diff_and_changes_nothing(host, tmp_path):
    before = fingerprint(host)
    services = [dict(s, route="/v2/service2/") if s["name"] == "service2" else s for s in SERVICES]
    rc, out = run_playbook(write_inventory(str(tmp_path / "inv"), HOST, services, HARDENING), args=["--check", "--diff"])
    assert rc == 0, out
    assert '-location "/api/service2/" {' in out and '+location "/v2/service2/" {' in out, out
    assert fingerprint(host) == before
    # And without the change, check mode reports nothing to do.
    rc, out = run_playbook(write_inventory(str(tmp_path / "same"), HOST, SERVICES, HARDENING), args=["--check"])
    assert rc == 0 and recap_changed(out) == 0, out


def _sh(text):
    return "'" + text.replace("'", "'\"'\"'") + "'"


# --- last: purging every service (the host's state after this is not the converged one) ---

def test_purging_every_service_removes_only_what_the_collection_made(host, tmp_path):
    """A host whose image has a login user keeps it after every service is purged; a directory
    under the services' root that the collection did not make stays too."""
    admin = host.user("admin")
    admin_before = (admin.uid, admin.shell, admin.home)
    host.run("mkdir -p /opt/www/notours && echo keep > /opt/www/notours/data")
    purged = [{"name": s["name"], "state": "absent", "purge": True} for s in SERVICES]
    purged.append({"name": "notours", "state": "absent", "purge": True})
    rc, out = run_playbook(write_inventory(str(tmp_path / "inv"), HOST, purged, HARDENING))
    assert rc == 0, out
    for name in NAMES:
        assert not host.user(name).exists and not host.group(name).exists, name
        assert not host.file("/opt/www/%s" % name).exists, name
    after = host.user("admin")
    assert after.exists and (after.uid, after.shell, after.home) == admin_before
    assert host.group("admin").exists and host.user("legacy").exists
    assert host.file("/opt/www/notours/data").content_string == "keep\n"
    assert host.file("/var/lib/microsvc/accounts").exists
    assert host.run("ls /var/lib/microsvc/accounts").stdout.strip() == ""
