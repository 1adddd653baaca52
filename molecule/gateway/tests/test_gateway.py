"""The gateway users expect: HTTPS from ACME with renewal, HTTP/2, compression, request ids,
JSON access logs, metrics, maintenance and JSON error bodies.

The host was converged once with every feature on (group_vars/all/gateway.yml) against Pebble,
an ACME test CA running in the same container (prepare.yml). Everything is observed from
outside nginx: requests with curl inside the container (HTTP/2, compression, TLS verified
against Pebble's root), scrapes of both exporters, the served certificate's serial, PIDs, the
access log files. Later tests drive further runs of site.yml from the controller, as an
operator editing the inventory would; the tests run in file order.
"""

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from microsvc_checks import Load, master_pid, run_playbook, write_inventory

HOST = "gateway-host"
NAME = "gateway.test"
HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "..", "group_vars", "all", "gateway.yml"), encoding="utf-8") as _f:
    GATEWAY = yaml.safe_load(_f)
with open(os.path.join(HERE, "..", "group_vars", "all", "settings.yml"), encoding="utf-8") as _f:
    # The probe's directory is a source root too (the demo settings name the samples only).
    GATEWAY["microsvc_source_roots"] = yaml.safe_load(_f)["microsvc_source_roots"]
with open(os.path.join(HERE, "..", "group_vars", "all", "services.yml"), encoding="utf-8") as _f:
    SERVICES = yaml.safe_load(_f)["microsvc_services"]
LIVE = "/etc/letsencrypt/live/microsvc-gateway"
PEBBLE_ROOT = "/tmp/pebble-root.pem"
HEX32 = re.compile(r"[0-9a-f]{32}")
# Every request id the tests saw, to find them again in the access logs at the end.
SEEN_IDS = set()


# --- helpers --------------------------------------------------------------------------------

def curl(host, url, *args, record=True):
    """One request with curl inside the container: (status, http version, headers, body bytes).
    Header names are lowercased, each with the list of its values. The request id returned is
    remembered (record) to be found in the access logs later."""
    cmd = host.run("curl -s -o /tmp/curl.body -D /tmp/curl.headers -w '%%{http_code} %%{http_version}' %s '%s'"
                   % (" ".join(args), url))
    assert cmd.rc == 0, (url, cmd.rc, cmd.stderr)
    status, version = cmd.stdout.split()
    headers = {}
    for line in host.file("/tmp/curl.headers").content_string.splitlines()[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers.setdefault(key.strip().lower(), []).append(value.strip())
    body = host.file("/tmp/curl.body").content
    request_id = (headers.get("x-request-id") or [None])[0]
    if request_id and record:
        SEEN_IDS.add(request_id)
    return int(status), version, headers, body


def https(host, path, *args):
    """Through the gateway's HTTPS listener by its name, verified against Pebble's root."""
    return curl(host, "https://%s%s" % (NAME, path), "--cacert", PEBBLE_ROOT,
                "--resolve", "%s:443:127.0.0.1" % NAME, *args)


def served_serial(host):
    out = host.check_output("openssl s_client -connect 127.0.0.1:443 -servername %s </dev/null 2>/dev/null "
                            "| openssl x509 -noout -serial" % NAME)
    return out.strip().split("=", 1)[1]


def scrape(host, port):
    """{'name{labels}': value} of a Prometheus endpoint on the container's loopback."""
    text = host.check_output("curl -sf http://127.0.0.1:%d/metrics" % port)
    series = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            series[key] = float(value)
    return series


def per_service(series, metric, service):
    return sum(v for k, v in series.items() if k.startswith(metric + "{") and 'service="%s"' % service in k)


def nginx_files(host):
    return host.check_output("find /etc/nginx -type f -printf '%p %s %m %T@\\n' | sort | sha256sum")


def inventory(tmp_path, services=None, **overrides):
    return write_inventory(str(tmp_path / "inv"), HOST, services or SERVICES, dict(GATEWAY, **overrides))


def gixy_findings(tmp_path):
    gixy = shutil.which("gixy", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    assert gixy, "gixy-ng is part of requirements-dev.txt"
    target = tmp_path / "nginx"
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(["docker", "cp", "%s:/etc/nginx" % HOST, str(target)], check=True)
    proc = subprocess.run([gixy, "--format", "json", str(target / "nginx.conf")],
                          capture_output=True, text=True, check=False, cwd=str(target))
    return json.loads(proc.stdout or "[]"), proc


@pytest.fixture(scope="module", autouse=True)
def pebble_root(host):
    """Pebble's root CA (regenerated at each Pebble start), from its management interface."""
    host.check_output("curl -sf --cacert /etc/pebble/ca.pem -o %s https://127.0.0.1:15000/roots/0" % PEBBLE_ROOT)


# --- HTTPS from ACME ------------------------------------------------------------------------

def test_gateway_serves_a_certificate_issued_by_the_acme_ca(host):
    status, _version, _headers, body = https(host, "/api/service2/")
    assert status == 200 and body.startswith(b"service2:"), body  # curl verified the chain
    issuer = host.check_output("openssl x509 -in %s/cert.pem -noout -issuer -ext subjectAltName" % LIVE)
    assert "Pebble" in issuer and "DNS:%s" % NAME in issuer, issuer
    assert host.file(LIVE + "/privkey.pem").exists
    assert host.file("/etc/letsencrypt/renewal/microsvc-gateway.conf").contains("authenticator = webroot")


def test_plain_http_redirects_but_answers_the_challenge_first(host):
    status, _version, headers, _body = curl(host, "http://127.0.0.1/api/service2/?x=1", "-H 'Host: %s'" % NAME)
    assert status == 301 and headers["location"] == ["https://%s/api/service2/?x=1" % NAME]
    token_dir = "/var/lib/microsvc-acme/.well-known/acme-challenge"
    host.check_output("mkdir -p %s && echo token-body > %s/probe-token" % (token_dir, token_dir))
    try:
        status, _version, _headers, body = curl(host, "http://127.0.0.1/.well-known/acme-challenge/probe-token")
        assert (status, body) == (200, b"token-body\n")
        assert curl(host, "http://127.0.0.1/.well-known/acme-challenge/nothing")[0] == 404
    finally:
        host.run("rm -f %s/probe-token" % token_dir)


def test_renewal_runs_from_the_package_timer_with_a_deploy_hook(host):
    assert host.service("certbot.timer").is_enabled and host.service("certbot.timer").is_running
    env = host.check_output("systemctl show certbot.service -p Environment")
    assert "REQUESTS_CA_BUNDLE=/etc/pebble/ca.pem" in env  # the test-only setting reaches the timer's runs
    hook = host.file("/etc/letsencrypt/renewal-hooks/deploy/microsvc-nginx")
    assert hook.mode == 0o755 and "nginx -t" in hook.content_string and "systemctl reload nginx" in hook.content_string


def test_certbot_renews_in_a_sandbox_exposed_at_most_4_5(host):
    out = host.check_output("systemd-analyze security --no-pager certbot.service")
    score = float(re.search(r"Overall exposure level for certbot.service: ([0-9.]+)", out).group(1))
    assert score <= 4.5, out[-2000:]
    props = host.check_output("systemctl show certbot.service -p ProtectSystem -p NoNewPrivileges")
    assert "ProtectSystem=strict" in props and "NoNewPrivileges=yes" in props


def test_forced_renewal_serves_a_new_serial_without_a_failed_request(host):
    before = served_serial(host)
    conf = "/etc/letsencrypt/renewal/microsvc-gateway.conf"
    paths = ["/api/service2/", "/api/probe/echo"]
    with Load(host, paths, scheme="https", concurrency=3, duration=90, name="renew-keepalive") as kept, \
            Load(host, paths, scheme="https", concurrency=3, duration=90, name="renew-fresh",
                 extra_args="--fresh-connections") as fresh:
        # Force it: the certificate counts as due, and the timer's own unit renews it.
        host.check_output("sed -i '1i renew_before_expiry = 3000 days' %s" % conf)
        try:
            run = host.run("systemctl start certbot.service")
            assert run.rc == 0, host.check_output("journalctl -u certbot.service -n 30 --no-pager")
        finally:
            host.run("sed -i '/^renew_before_expiry = 3000 days$/d' %s" % conf)
        deadline = time.time() + 20
        while served_serial(host) == before:
            assert time.time() < deadline, "nginx still serves the old certificate"
            time.sleep(0.5)
        time.sleep(2)  # requests on the new certificate too
    after = served_serial(host)
    assert after != before
    assert host.check_output("openssl x509 -in %s/cert.pem -noout -serial" % LIVE).endswith(after)
    for load in (kept, fresh):
        result = load.result()
        for url, stats in result["urls"].items():
            assert stats["requests"] > 20, (url, stats)
            assert stats["errors"] == 0 and stats["non_2xx"] == 0, (load.name, url, stats)


# --- protocol and payload -------------------------------------------------------------------

def test_https_speaks_http2(host):
    status, version, _headers, _body = https(host, "/api/service2/", "--http2")
    assert (status, version) == (200, "2")
    nginx = host.check_output("nginx -v 2>&1")
    conf = host.file("/etc/nginx/microsvc/gateway.conf").content_string
    legacy = tuple(int(x) for x in re.search(r"nginx/([0-9.]+)", nginx).group(1).split(".")) < (1, 25, 1)
    assert ("listen 443 ssl http2 default_server;" in conf) is legacy, nginx
    assert ("http2 on;" in conf) is not legacy, nginx


@pytest.mark.parametrize("kind,ctype", [("json", "application/json"), ("text", "text/plain; charset=utf-8"),
                                        ("css", "text/css"), ("js", "application/javascript; charset=utf-8")])
def test_text_bodies_are_compressed_above_the_threshold(host, kind, ctype):
    path = "/api/probe/big?kind=%s" % kind
    _status, _v, plain_headers, plain = https(host, path)
    assert "content-encoding" not in plain_headers and len(plain) > 4000
    # What went over the wire: gzip, much smaller, the same bytes once decompressed.
    status, _v, headers, raw = https(host, path, "-H 'Accept-Encoding: gzip'")
    assert status == 200 and headers["content-encoding"] == ["gzip"], headers
    assert headers["content-type"] == [ctype]
    assert "Accept-Encoding" in ",".join(headers.get("vary", []))
    assert len(raw) < len(plain) // 2 and gzip.decompress(raw) == plain
    # And what a client asking for any compression it knows gets.
    status, _v, headers, body = https(host, path, "--compressed")
    assert status == 200 and headers["content-encoding"][0] in ("br", "gzip") and body == plain


def test_brotli_where_the_distribution_ships_the_module(host):
    assert host.file("/usr/share/nginx/modules/ngx_http_brotli_filter_module.so").exists
    status, _v, headers, _body = https(host, "/api/probe/big", "-H 'Accept-Encoding: br'")
    assert status == 200 and headers["content-encoding"] == ["br"], headers


def test_small_bodies_and_clients_without_accept_encoding_get_no_compression(host):
    _s, _v, headers, body = https(host, "/api/probe/small", "-H 'Accept-Encoding: gzip, br'")
    assert "content-encoding" not in headers and json.loads(body)["size"] == "small"
    _s, _v, headers, _body = https(host, "/api/probe/big")
    assert "content-encoding" not in headers


# --- request ids ----------------------------------------------------------------------------

def test_gateway_generates_a_request_id_passes_it_on_and_returns_it(host):
    _s, _v, headers, body = https(host, "/api/probe/echo")
    assert len(headers["x-request-id"]) == 1  # the service's own X-Request-ID is hidden
    rid = headers["x-request-id"][0]
    assert HEX32.fullmatch(rid) and json.loads(body)["request_id"] == rid


def test_a_client_cannot_choose_its_request_id(host):
    _s, _v, headers, body = https(host, "/api/probe/echo", "-H 'X-Request-ID: chosen-by-client'")
    rid = headers["x-request-id"][0]
    assert HEX32.fullmatch(rid) and json.loads(body)["request_id"] == rid


def test_a_trusted_load_balancer_keeps_its_request_id(host):
    # 127.0.0.2 is in nginx_gateway_real_ip_from: a load balancer in front of the gateway.
    _s, _v, headers, body = https(host, "/api/probe/echo", "--interface 127.0.0.2",
                                  "-H 'X-Request-ID: lb-7f3a.2026_11'", "-H 'X-Forwarded-For: 203.0.113.9'")
    assert headers["x-request-id"] == ["lb-7f3a.2026_11"]
    seen = json.loads(body)
    assert seen["request_id"] == "lb-7f3a.2026_11" and seen["forwarded_for"] == "203.0.113.9"
    for bad in ("two words", "x" * 129, "semi;colon"):
        _s, _v, headers, body = https(host, "/api/probe/echo", "--interface 127.0.0.2", "-H 'X-Request-ID: %s'" % bad)
        rid = headers["x-request-id"][0]
        assert HEX32.fullmatch(rid) and json.loads(body)["request_id"] == rid, bad


# --- errors made by the gateway -------------------------------------------------------------

def _json_error(headers, body, status, error):
    assert headers["content-type"] == ["application/json"], headers
    seen = json.loads(body)
    assert seen == {"error": error, "status": status, "service": "probe", "request_id": headers["x-request-id"][0]}
    assert headers["x-content-type-options"] == ["nosniff"]  # the security headers are there too


def test_504_when_the_service_is_slower_than_its_read_timeout(host):
    status, _v, headers, body = https(host, "/api/probe/sleep?seconds=3")  # read_timeout: 2
    assert status == 504
    _json_error(headers, body, 504, "gateway_timeout")


def test_502_when_the_service_cannot_be_reached(host):
    sock = "/opt/www/probe/uwsgi.sock"
    host.check_output("mv %s %s.away" % (sock, sock))  # the vassal keeps listening on the moved socket
    try:
        status, _v, headers, body = https(host, "/api/probe/echo")
    finally:
        host.check_output("mv %s.away %s" % (sock, sock))
    assert status == 502
    _json_error(headers, body, 502, "bad_gateway")
    assert https(host, "/api/probe/echo")[0] == 200


def test_a_services_own_error_passes_through_unchanged(host):
    status, _v, headers, body = https(host, "/api/probe/status/503")
    assert status == 503 and json.loads(body) == {"service": "probe", "own": "unavailable"}
    assert HEX32.fullmatch(headers["x-request-id"][0])


# --- metrics --------------------------------------------------------------------------------

def test_metrics_listen_on_loopback_only(host):
    listeners = host.check_output("ss -Hltn")
    for port in (9100, 9113, 8098):
        bound = [line.split()[3] for line in listeners.splitlines() if line.split()[3].endswith(":%d" % port)]
        assert bound == ["127.0.0.1:%d" % port], (port, listeners)


def test_nginx_metrics_move_after_requests(host):
    before = scrape(host, 9113)
    assert before["nginx_up"] == 1
    for _ in range(10):
        https(host, "/api/service2/")
    after = scrape(host, 9113)
    assert after["nginx_http_requests_total"] >= before["nginx_http_requests_total"] + 10
    assert after["nginx_connections_accepted"] >= before["nginx_connections_accepted"] + 10


def test_uwsgi_metrics_per_service_move_after_requests(host):
    requests = "microsvc_uwsgi_worker_requests_total"
    before = scrape(host, 9100)
    for service in ("probe", "service2"):
        assert before['microsvc_uwsgi_up{service="%s"}' % service] == 1
        assert per_service(before, "microsvc_uwsgi_workers", service) == 2  # processes
        assert before['microsvc_uwsgi_rss_bytes{service="%s"}' % service] > 10 * 2 ** 20
    host.check_output("for i in $(seq 25); do curl -sk -o /dev/null https://127.0.0.1/api/probe/small; done")
    deadline = time.time() + 20  # the writer runs every 5 s (uwsgi_emperor_metrics_interval)
    while per_service(scrape(host, 9100), requests, "probe") < per_service(before, requests, "probe") + 25:
        assert time.time() < deadline, "probe's request counters did not move"
        time.sleep(1)
    after = scrape(host, 9100)
    assert per_service(after, requests, "service2") < per_service(before, requests, "service2") + 25
    # A worker killed and respawned by uWSGI shows as a respawn of that service only.
    worker = host.check_output("pgrep -f '^\\[probe\\] uWSGI worker 1'").split()[0]
    host.check_output("kill -9 %s" % worker)
    deadline = time.time() + 20
    while scrape(host, 9100)['microsvc_uwsgi_respawns_total{service="probe"}'] < 1:
        assert time.time() < deadline, "the respawn did not show"
        time.sleep(1)
    assert scrape(host, 9100)['microsvc_uwsgi_respawns_total{service="service2"}'] == 0


def test_gixy_finds_nothing_in_the_configuration(tmp_path):
    findings, proc = gixy_findings(tmp_path)
    assert findings == [], json.dumps(findings, indent=1)
    assert proc.returncode == 0, proc.stderr


# --- maintenance ----------------------------------------------------------------------------

def test_maintenance_answers_503_and_leaves_the_vassal_and_other_routes_alone(host, tmp_path):
    pid = master_pid(host, "probe")
    certs = host.check_output("ls /etc/letsencrypt/archive/microsvc-gateway/")
    services = [dict(s, maintenance=True) if s["name"] == "probe" else s for s in SERVICES]
    rc, out = run_playbook(inventory(tmp_path, services))
    assert rc == 0, out[-3000:]

    status, _v, headers, body = https(host, "/api/probe/echo")
    assert status == 503 and headers["retry-after"] == ["300"]
    assert headers["content-type"] == ["application/json"]
    assert json.loads(body) == {"error": "maintenance", "status": 503, "service": "probe", "retry_after": 300,
                                "request_id": headers["x-request-id"][0]}
    assert headers["x-frame-options"] == ["DENY"]  # its own header did not drop the gateway's
    assert https(host, "/api/service2/")[0] == 200
    # The vassal still runs, untouched, and the deploy's health check path reaches it.
    assert master_pid(host, "probe") == pid
    check = curl(host, "http://127.0.0.1:8099/__microsvc/%s/api/probe/health" % HOST, record=False)
    assert check[0] == 200 and json.loads(check[3]) == {"status": "ok"}
    # No certificate was requested by a run that had nothing to ask for.
    assert host.check_output("ls /etc/letsencrypt/archive/microsvc-gateway/") == certs
    findings, _proc = gixy_findings(tmp_path)
    assert findings == [], json.dumps(findings, indent=1)

    rc, out = run_playbook(inventory(tmp_path))
    assert rc == 0, out[-3000:]
    status, _v, _headers, body = https(host, "/api/probe/echo")
    assert status == 200 and json.loads(body)["service"] == "probe"
    assert master_pid(host, "probe") == pid


# --- failed issuance ------------------------------------------------------------------------

def _name_does_not_resolve(host, name):
    # Pebble's DNS answers SERVFAIL for it: the CA cannot reach the gateway under that name.
    host.check_output("curl -sf -d '{\"host\": \"%s\"}' http://127.0.0.1:8055/set-servfail" % name)


def test_failed_issuance_keeps_the_previous_certificate_and_says_why(host, tmp_path):
    _name_does_not_resolve(host, "unreachable.test")
    serial, files = served_serial(host), nginx_files(host)
    rc, out = run_playbook(inventory(tmp_path, nginx_gateway_acme_names=[NAME, "unreachable.test"]))
    assert rc != 0
    assert "certbot could not obtain a certificate for %s, unreachable.test" % NAME in out, out[-3000:]
    assert "keeps serving the previous certificate (%s, serial %s" % (NAME, serial) in out, out[-3000:]
    assert "Domain: unreachable.test" in out and "could not resolve" in out  # certbot's reason
    assert served_serial(host) == serial and nginx_files(host) == files
    assert https(host, "/api/service2/")[0] == 200


def test_failed_first_issuance_keeps_serving_plain_http(host, tmp_path):
    # A host that never had a certificate (the lineage deleted), and a name the CA cannot check.
    host.check_output("certbot delete --non-interactive --cert-name microsvc-gateway")
    rc, out = run_playbook(inventory(tmp_path, nginx_gateway_acme_names=["unreachable.test"]))
    assert rc != 0
    assert "The gateway keeps serving plain HTTP only (no certificate yet)" in out, out[-3000:]
    assert "Domain: unreachable.test" in out
    assert host.run("nginx -t").rc == 0
    status, _v, _headers, body = curl(host, "http://127.0.0.1/api/service2/")
    assert status == 200 and body.startswith(b"service2:")  # routes served, no redirect to nothing
    assert host.run("curl -sk https://127.0.0.1/api/service2/").rc != 0  # no HTTPS listener
    # The next run with names the CA can check issues a certificate and serves HTTPS again.
    rc, out = run_playbook(inventory(tmp_path))
    assert rc == 0, out[-3000:]
    assert https(host, "/api/service2/")[0] == 200
    assert curl(host, "http://127.0.0.1/api/service2/")[0] == 301


# --- access logs (last: every line the scenario wrote) ---------------------------------------

LOG_FIELDS = {"time": str, "request_id": str, "service": str, "route": str, "remote_addr": str, "method": str,
              "uri": str, "protocol": str, "status": int, "bytes": int, "request_time": (int, float),
              "upstream_time": str, "user_agent": str, "referer": str}


def test_every_access_log_line_of_the_scenario_is_json(host):
    time.sleep(1.5)  # per-service logs are flushed every second
    logs = host.check_output("ls /var/log/nginx/microsvc/*.access.log /var/log/nginx/access.log").split()
    records = {}
    for path in logs:
        lines = host.file(path).content_string.splitlines()
        for line in lines:
            record = json.loads(line)  # fails on any line that is not JSON
            assert set(record) == set(LOG_FIELDS), line
            for field, kind in LOG_FIELDS.items():
                assert isinstance(record[field], kind), (field, line)
            assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}[+-][0-9:]{5}", record["time"]), line
            assert HEX32.fullmatch(record["request_id"]) or record["request_id"] == "lb-7f3a.2026_11", line
            records.setdefault(os.path.basename(path), []).append(record)
    probe = records["probe.access.log"]
    assert {r["service"] for r in probe} == {"probe"} and {r["route"] for r in probe} == {"/api/probe/"}
    assert {r["service"] for r in records["service2.access.log"]} == {"service2"}
    statuses = {r["status"] for r in probe}
    assert {200, 502, 503, 504} <= statuses, statuses  # the gateway's own errors are logged per service
    slow = [r for r in probe if r["status"] == 504]
    assert slow and all(r["request_time"] >= 2 for r in slow), slow
    assert any(r["upstream_time"] not in ("", "-") for r in probe)
    # The ids the clients got back are the ids in the logs.
    logged = {r["request_id"] for recs in records.values() for r in recs}
    missing = SEEN_IDS - logged
    assert not missing, sorted(missing)[:5]
