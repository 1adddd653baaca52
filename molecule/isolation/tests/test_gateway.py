"""The gateway serves a service's own files only, follows none of its answers' X-Accel-* headers
except one to its own protected files, keeps its per-service logs from every service, and runs
nginx (and its exporter) in a systemd sandbox.

Each attack runs as a service's user (hostile's worker through ``attack``, or a plain shell as
service1, whose Django static files the gateway serves, through ``as_user``); each check is made
outside it: a request through the gateway, a file's mode, systemd's own score of the unit.
"""

import re
import time
import urllib.parse

import pytest
from conftest import HOSTILE, Outside, as_user, attack
from microsvc_checks import http, run_playbook

STATIC = "/opt/www/service1/shared/static"
STATIC_URL = "/api/service1/static/"
LOGS = "/var/log/nginx/microsvc"
PASSWD_LINE = "root:x:0:0"
# A line only the gateway's access logs have: a request id field of the microsvc log format.
LOG_MARK = "rid="
# The units the nginx_gateway role installs or changes in this scenario (metrics are on).
UNITS = ("nginx.service", "prometheus-nginx-exporter.service")
MAX_EXPOSURE = 4.5


def static(host, name):
    return http(host, STATIC_URL + name)


def remove_from_static(host, names):
    for name in names:
        as_user(host, "rm -rf %s/%s" % (STATIC, name), user="service1")


@pytest.fixture
def service1_static(host):
    """Names the attack leaves in service1's static directory, removed afterwards (as service1);
    a test removes them itself before it compares the view from outside (service1's tree is in it)."""
    made = []
    yield made
    remove_from_static(host, made)


# -- symbolic links in a service's static directory ------------------------------------------------

def test_a_plain_file_in_static_is_served_so_the_refusals_below_mean_something(host, service1_static):
    service1_static.append("plain.txt")
    assert as_user(host, "echo plain-static > %s/plain.txt" % STATIC, user="service1").rc == 0
    resp = static(host, "plain.txt")
    assert resp["status"] == 200 and resp["body"] == "plain-static\n", resp


def test_a_symlink_made_after_the_deploy_serves_nothing_outside(host, outside, service1_static):
    """Each link is made now, long after the deploy wrote the configuration: nginx checks at
    every request. Most targets are readable by nginx's workers, so only that check stops them."""
    assert as_user(host, "echo neighbour-secret > /opt/www/service2/shared/static/neighbour.txt",
                   user="service2").rc == 0
    http(host, "/api/service2/health")  # a line in service2's gateway log
    for index, target in enumerate(["/etc/passwd", "/var/log/nginx/access.log",
                                    "/var/log/nginx/microsvc/service2.access.log",
                                    "/opt/www/service2/shared/static/neighbour.txt"]):
        name = "leak%d" % index
        service1_static.append(name)
        assert as_user(host, "ln -s %s %s/%s" % (target, STATIC, name), user="service1").rc == 0
        if not target.startswith(LOGS):  # those are behind a directory nginx's workers cannot enter either
            assert host.run("runuser -u www-data -- head -c1 %s" % target).rc == 0, target
        resp = static(host, name)
        assert resp["status"] in (403, 404), (target, resp)
        for secret in (PASSWD_LINE, LOG_MARK, "neighbour-secret"):
            assert secret not in resp["body"], (target, resp)
    as_user(host, "rm -f /opt/www/service2/shared/static/neighbour.txt", user="service2")
    remove_from_static(host, service1_static)
    outside.assert_unchanged()


def test_a_directory_symlink_in_static_serves_nothing_outside(host, outside, service1_static):
    service1_static.extend(["etc", "api/etc"])
    assert as_user(host, "ln -s /etc %s/etc && ln -s /etc %s/api/etc" % (STATIC, STATIC), user="service1").rc == 0
    for path in ("etc/passwd", "api/etc/passwd", "etc/hostname"):
        resp = static(host, path)
        assert resp["status"] in (403, 404), (path, resp)
        assert PASSWD_LINE not in resp["body"]
    remove_from_static(host, service1_static)
    outside.assert_unchanged()


def test_a_hard_link_to_a_file_of_root_cannot_be_made(host):
    """nginx cannot tell a hard link from the file; the kernel refuses to make one to a file the
    service does not own (fs.protected_hardlinks, which the role's README relies on)."""
    assert host.check_output("sysctl -n fs.protected_hardlinks").strip() == "1"
    out = as_user(host, "ln /etc/passwd %s/hard 2>&1; ln /var/log/nginx/access.log %s/hard2 2>&1" % (STATIC, STATIC),
                  user="service1")
    assert not host.file(STATIC + "/hard").exists and not host.file(STATIC + "/hard2").exists, out.stdout
    assert PASSWD_LINE not in static(host, "hard")["body"]


def test_a_deploy_with_the_links_in_place_follows_none_of_them(host, inventory, service1_static):
    """root puts hostile's protected directory back (owner, group, mode) without following what
    hostile made of it or in it, and the gateway still serves none of the links."""
    protected = "/opt/www/hostile/shared/protected"
    try:
        made = as_user(host, "chmod 0777 %s && ln -s /etc/shadow %s/shadow && ln -s /etc %s/etc && "
                             "ln -s /etc/passwd %s/pw" % ((protected,) * 4))
        assert made.rc == 0, made.stderr
        service1_static.append("pw")
        assert as_user(host, "ln -s /etc/passwd %s/pw" % STATIC, user="service1").rc == 0
        outside = Outside(host)
        rc, out = run_playbook(inventory())
        assert rc == 0, out[-3000:]
        # The directory is the service's own: what it did to its mode harms only itself; root
        # changed no owner through it.
        directory = host.file(protected)
        assert (directory.user, directory.group) == (HOSTILE, "www-data")
        assert host.file(protected + "/shadow").is_symlink
        assert static(host, "pw")["status"] in (403, 404)
        resp, _ = respond(host, "X-Accel-Redirect:/_accel/hostile/pw")
        assert resp["status"] in (403, 404) and PASSWD_LINE not in resp["body"], resp
        # A deploy writes the gateway's own configuration again; nothing else may change.
        outside.assert_unchanged(allow_files=("/etc/nginx/microsvc/",))
    finally:
        as_user(host, "rm -f %s/shadow %s/etc %s/pw" % ((protected,) * 3))
        host.run("chmod 2750 %s" % protected)  # hostile cannot set the setgid bit of a group it is not in


# -- X-Accel-* headers of a service's answer -------------------------------------------------------

def respond(host, *headers):
    """hostile answers with the headers it chose; returns the gateway's answer and its duration."""
    query = urllib.parse.urlencode([("h", h) for h in headers])
    start = time.monotonic()
    resp = http(host, "/api/hostile/respond?" + query)
    return resp, time.monotonic() - start


@pytest.fixture
def protected(host):
    """A file in hostile's and in service2's protected directory, each written by its service."""
    assert attack(host, "echo hostile-own-file > /opt/www/hostile/shared/protected/own.txt")["rc"] == 0
    assert as_user(host, "echo service2-protected > /opt/www/service2/shared/protected/secret.txt",
                   user="service2").rc == 0
    yield
    attack(host, "rm -rf /opt/www/hostile/shared/protected/*")
    as_user(host, "rm -f /opt/www/service2/shared/protected/secret.txt", user="service2")


def test_the_protected_directories_are_the_services_and_readable_by_nginx_only(host):
    for name in (HOSTILE, "service2"):
        path = host.file("/opt/www/%s/shared/protected" % name)
        assert path.is_directory and not path.is_symlink
        assert (path.user, path.group, path.mode) == (name, "www-data", 0o2750)
    # A neighbour cannot look in, and hostile cannot swap its own directory for a link.
    assert as_user(host, "ls /opt/www/service2/shared/protected").rc != 0
    assert as_user(host, "mv /opt/www/hostile/shared/protected /opt/www/hostile/shared/p2").rc != 0
    as_user(host, "rm -rf /opt/www/hostile/shared/protected; ln -s /etc /opt/www/hostile/shared/protected")
    assert host.file("/opt/www/hostile/shared/protected").is_directory


def test_a_service_with_accel_redirect_reaches_its_own_protected_files(host, protected):
    resp, _ = respond(host, "X-Accel-Redirect:/_accel/hostile/own.txt")
    assert resp["status"] == 200 and resp["body"] == "hostile-own-file\n", resp
    assert not any(h.lower().startswith("x-accel") for h in resp["headers"]), resp["headers"]
    # A client cannot reach the internal location itself.
    assert http(host, "/_accel/hostile/own.txt")["status"] == 404


def test_an_x_accel_redirect_reaches_nothing_but_its_own_files(host, protected, outside):
    for target in [
        "/_accel/service2/secret.txt",                       # another service's internal location
        "/_accel/hostile/../service2/secret.txt",            # ... through dot segments
        "/_accel/hostile/%2e%2e/service2/secret.txt",        # ... percent-encoded
        "/_accel/hostile//../../service2/secret.txt",
        "/etc/passwd",
        "/_accel/hostile/../../../../etc/passwd",
        "/.well-known/acme-challenge/../../etc/passwd",      # the ACME location
        "/__microsvc/localhost/api/service2/health",         # the check server's locations
    ]:
        resp, _ = respond(host, "X-Accel-Redirect:" + target)
        assert resp["status"] != 200 or resp["body"] == "responded\n", (target, resp)
        for secret in ("service2-protected", PASSWD_LINE, "ok"):
            assert secret not in resp["body"], (target, resp)
    outside.assert_unchanged()


def test_a_symlink_in_the_protected_directory_serves_nothing_outside(host, protected, outside):
    assert attack(host, "cd /opt/www/hostile/shared/protected && ln -s /etc/passwd pw && ln -s /etc etc && "
                        "ln -s /opt/www/service2/shared/protected/secret.txt s2")["rc"] == 0
    for name in ("pw", "etc/passwd", "s2"):
        resp, _ = respond(host, "X-Accel-Redirect:/_accel/hostile/" + name)
        assert resp["status"] in (403, 404), (name, resp)
        assert PASSWD_LINE not in resp["body"] and "service2-protected" not in resp["body"]
    outside.assert_unchanged()


def test_the_other_x_accel_headers_are_ignored_and_never_reach_the_client(host, outside):
    resp, took = respond(host, "X-Accel-Limit-Rate:1", "X-Accel-Buffering:no", "X-Accel-Charset:koi8-r",
                         "X-Accel-Expires:86400")
    assert resp["status"] == 200 and resp["body"] == "responded\n", resp
    # Ten bytes at one byte a second would take ten seconds.
    assert took < 5, took
    assert not any(h.lower().startswith("x-accel") for h in resp["headers"]), resp["headers"]
    assert "koi8-r" not in resp["headers"].get("Content-Type", "")
    outside.assert_unchanged()


def test_every_route_ignores_x_accel_headers_unless_its_service_allows_them(host):
    """service1 has no accel_redirect: the http-level ignore list reaches its route unchanged."""
    gateway = host.file("/etc/nginx/microsvc/gateway.conf").content_string
    assert re.search(r"^uwsgi_ignore_headers X-Accel-Redirect X-Accel-Expires X-Accel-Limit-Rate "
                     r"X-Accel-Buffering X-Accel-Charset;$", gateway, re.MULTILINE), gateway
    service1 = host.file("/etc/nginx/microsvc/routes/service1.conf").content_string
    assert "uwsgi_ignore_headers" not in service1 and "_accel" not in service1
    hostile = host.file("/etc/nginx/microsvc/routes/hostile.conf").content_string
    ignored = re.findall(r"uwsgi_ignore_headers ([^;]*);", hostile)
    assert ignored == ["X-Accel-Expires X-Accel-Limit-Rate X-Accel-Buffering X-Accel-Charset"], ignored


# -- the gateway's per-service logs ------------------------------------------------------------------

def test_no_service_reads_the_gateways_per_service_logs(host, outside):
    http(host, "/api/service1/health/")
    inside = attack(host, "cat %s/service1.access.log; ls %s; cat %s/*.log" % (LOGS, LOGS, LOGS))
    assert inside["rc"] != 0 and LOG_MARK not in inside["out"], inside
    for user in (HOSTILE, "service1", "service2"):
        shell = as_user(host, "cat %s/service1.access.log %s/%s.access.log; ls %s" % (LOGS, LOGS, user, LOGS),
                        user=user)
        assert shell.rc != 0 and LOG_MARK not in shell.stdout, (user, shell.stdout)
    directory = host.file(LOGS)
    assert (directory.user, directory.group, directory.mode) == ("root", "www-data", 0o750)
    outside.assert_unchanged()


def test_the_logs_logrotate_creates_are_not_world_readable_and_no_new_log_is_readable(host):
    """logrotate's new files are 0640 (create); a file nginx opens anew itself is 0644 (nginx
    resets its umask when it daemonizes) but lies behind the 0750 directory."""
    http(host, "/api/service2/health")
    time.sleep(2)  # buffered access log
    rotate = host.run("logrotate --force --state /tmp/gateway-test-logrotate.state /etc/logrotate.d/microsvc-nginx")
    assert rotate.rc == 0, rotate.stderr
    log = host.file(LOGS + "/service2.access.log")
    assert (log.user, log.group, log.mode) == ("www-data", "adm", 0o640)
    host.run("rm -f %s/service2.error.log" % LOGS)
    pid = host.check_output("systemctl show -p MainPID --value nginx.service").strip()
    assert host.run("kill -USR1 %s" % pid).rc == 0
    http(host, "/api/service2/health")
    time.sleep(2)
    assert LOG_MARK in log.content_string
    assert host.file(LOGS + "/service2.error.log").exists
    for user in (HOSTILE, "service2"):
        for name in ("service2.access.log", "service2.error.log"):
            assert as_user(host, "cat %s/%s" % (LOGS, name), user=user).rc != 0, (user, name)


# -- nginx's sandbox ----------------------------------------------------------------------------------

@pytest.mark.parametrize("unit", UNITS)
def test_each_unit_of_the_gateway_scores_a_low_exposure(host, unit):
    assert "microsvc.conf" in host.check_output("systemctl show -p DropInPaths --value %s" % unit)
    out = host.check_output("systemd-analyze security %s" % unit)
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))
    assert score <= MAX_EXPOSURE, out[-2000:]


def test_the_exporter_still_reads_nginx_from_its_sandbox(host):
    resp = http(host, "/metrics", port=9113)
    assert resp["status"] == 200 and re.search(r"^nginx_up 1$", resp["body"], re.MULTILINE), resp["body"][-500:]


def test_nginx_runs_in_its_sandbox_and_still_reloads_and_reopens_its_logs(host):
    pid = host.check_output("systemctl show -p MainPID --value nginx.service").strip()
    status = host.check_output("cat /proc/%s/status" % pid)
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.MULTILINE), status
    # Only the listed capabilities: no CAP_SYS_ADMIN (bit 21), CAP_SYS_PTRACE (19), CAP_DAC_READ_SEARCH (2).
    bounding = int(re.search(r"^CapBnd:\s+([0-9a-f]+)$", status, re.MULTILINE).group(1), 16)
    assert not bounding & (1 << 21 | 1 << 19 | 1 << 2), hex(bounding)
    # /home and /root are out of its sight, /etc is read-only.
    assert host.run("nsenter -t %s -m -- sh -c 'touch /etc/nginx/sandbox-test'" % pid).rc != 0
    assert not host.file("/etc/nginx/sandbox-test").exists
    assert host.run("systemctl reload nginx.service").rc == 0
    assert host.check_output("systemctl show -p MainPID --value nginx.service").strip() == pid
    assert host.run("kill -USR1 %s" % pid).rc == 0
    time.sleep(1)
    for path in ("/api/service1/health/", "/api/service2/health", "/api/hostile/health"):
        assert http(host, path)["status"] == 200, path
