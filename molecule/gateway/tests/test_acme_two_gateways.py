"""Two gateways behind one name get HTTPS from ACME whichever gateway the CA's validation reaches,
and the TLS they serve passes sslyze's check of Mozilla's intermediate configuration.

gateway-host (gateway and app host, Pebble next to it) and gateway-host2 (a gateway only) were
converged together; Pebble's DNS resolved every name to gateway-host2, so the CA validated the
first gateway's order on the second one, which asked its peer for the token (nginx, acme.conf).
The tests read both gateways' access logs, turn Pebble's DNS round to force a renewal of the
second gateway's certificate through the first one under load, and scan both gateways from the
controller with sslyze. This module runs before test_gateway.py (file order) and leaves Pebble's
DNS resolving to the first gateway, as that module expects.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest
import testinfra
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from microsvc_checks import PROJECT, Load, run_playbook, write_inventory

NAME = "gateway.test"
GW1, GW2 = "gateway-host", "gateway-host2"
HERE = os.path.dirname(os.path.abspath(__file__))


def _address(host):
    with open(os.path.join(HERE, "..", "host_vars", host + ".yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)["microsvc_private_address"]


ADDRESS = {GW1: _address(GW1), GW2: _address(GW2)}
ROOT = "/tmp/pebble-root.pem"
LIVE = "/etc/letsencrypt/live/microsvc-gateway"
RENEWAL = "/etc/letsencrypt/renewal/microsvc-gateway.conf"
WEBROOT = "/var/lib/microsvc-acme/.well-known/acme-challenge"
CHALLENGE = "/.well-known/acme-challenge/"
# sslyze pins an older cryptography than the test tools: it has a virtualenv of its own
# (requirements-sslyze.txt, make's .venv-sslyze; MICROSVC_SSLYZE names another executable).
SSLYZE = os.environ.get("MICROSVC_SSLYZE", os.path.join(PROJECT, ".venv-sslyze", "bin", "sslyze"))


@pytest.fixture(scope="module")
def gw1():
    return testinfra.get_host("docker://" + GW1)


@pytest.fixture(scope="module")
def gw2():
    return testinfra.get_host("docker://" + GW2)


def resolve_names_to(gw1, host):
    """Pebble's DNS (pebble-challtestsrv, next to Pebble on the first gateway) answers every name
    with this gateway's address: where the CA's validation goes."""
    gw1.check_output("curl -sf -d '{\"ip\": \"%s\"}' http://127.0.0.1:8055/set-default-ipv4" % ADDRESS[host])


@pytest.fixture(scope="module", autouse=True)
def pebble_root(gw1, gw2, tmp_path_factory):
    """Pebble's root on both gateways (for curl) and on the controller (for sslyze)."""
    pem = gw1.check_output("curl -sf --cacert /etc/pebble/ca.pem https://127.0.0.1:15000/roots/0")
    for gateway in (gw1, gw2):
        gateway.check_output("cat > %s <<'EOF'\n%s\nEOF" % (ROOT, pem))
    local = tmp_path_factory.mktemp("pebble") / "root.pem"
    local.write_text(pem + "\n")
    yield str(local)
    resolve_names_to(gw1, GW1)  # test_gateway.py: the CA validates the gateway that asks


def challenges(gateway):
    """(uri, client address, status) of every ACME challenge request in the gateway's access log
    (JSON lines) of its plain-HTTP server."""
    out = []
    for line in gateway.file("/var/log/nginx/access.log").content_string.splitlines():
        record = json.loads(line)
        if record["uri"].startswith(CHALLENGE):
            out.append((record["uri"], record["remote_addr"], record["status"]))
    return out


def tokens(gateway):
    return set(gateway.check_output("ls -1 %s 2>/dev/null || true" % WEBROOT).split())


def serial(viewer, host):
    """The serial of the certificate `host`'s gateway serves, as seen from `viewer`'s container."""
    out = viewer.check_output("openssl s_client -connect %s:443 -servername %s </dev/null 2>/dev/null "
                              "| openssl x509 -noout -serial" % (ADDRESS[host], NAME))
    return out.strip().split("=", 1)[1]


# --- issuance: the CA reached the gateway that did not start the order ------------------------

def test_the_first_gateways_order_was_validated_through_the_second_gateway(gw1, gw2):
    on_first, on_second = challenges(gw1), challenges(gw2)
    # Pebble resolved the name to the second gateway only: every challenge request the first
    # gateway answered came from the second gateway, which had no such token and asked its peer.
    assert on_first, "the CA never needed the first gateway's token"
    assert {(addr, status) for _uri, addr, status in on_first} == {(ADDRESS[GW2], 200)}, on_first
    asked = {uri for uri, _addr, _status in on_first}
    # ... on behalf of the CA (Pebble, on the first gateway's address), answered 200 to it.
    assert asked <= {uri for uri, addr, status in on_second if addr == ADDRESS[GW1] and status == 200}, on_second
    # The second gateway's own order was validated on itself, never forwarded.
    own = {uri for uri, addr, status in on_second if addr == ADDRESS[GW1] and status == 200} - asked
    assert own, on_second


def test_both_gateways_serve_a_certificate_of_their_own_from_the_acme_ca(gw1, gw2):
    for gateway in (gw1, gw2):
        issuer = gateway.check_output("openssl x509 -in %s/cert.pem -noout -issuer -ext subjectAltName" % LIVE)
        assert "Pebble" in issuer and "DNS:%s" % NAME in issuer, issuer
    # Verified against Pebble's root, by name, across the network: what a load balancer reaches.
    for viewer, target, expected in ((gw2, GW1, 200), (gw1, GW2, 404)):
        status = viewer.check_output("curl -s -o /dev/null -w '%%{http_code}' --cacert %s --resolve %s:443:%s "
                                     "https://%s/api/service2/" % (ROOT, NAME, ADDRESS[target], NAME))
        assert status == str(expected), (target, status)  # the second gateway routes no service
    assert serial(gw1, GW1) != serial(gw1, GW2)


# --- renewal: the second gateway's, validated through the first one ---------------------------

def test_forced_renewal_of_the_second_gateway_is_validated_through_the_first_without_a_failed_request(gw1, gw2):
    resolve_names_to(gw1, GW1)
    before, seen_first = serial(gw2, GW2), set(challenges(gw1))
    # The second gateway routes no service: every answer is its 404 for an unknown path, over
    # HTTPS on kept and on fresh connections. A failure is any other status or an error.
    paths = ["/no-route"]
    with Load(gw2, paths, scheme="https", concurrency=3, duration=60, name="renew2-keepalive") as kept, \
            Load(gw2, paths, scheme="https", concurrency=3, duration=60, name="renew2-fresh",
                 extra_args="--fresh-connections") as fresh:
        gw2.check_output("sed -i '1i renew_before_expiry = 3000 days' %s" % RENEWAL)
        try:
            run = gw2.run("systemctl start certbot.service")
            assert run.rc == 0, gw2.check_output("journalctl -u certbot.service -n 30 --no-pager")
        finally:
            gw2.run("sed -i '/^renew_before_expiry = 3000 days$/d' %s" % RENEWAL)
        deadline = time.time() + 20
        while serial(gw2, GW2) == before:
            assert time.time() < deadline, "nginx still serves the old certificate"
            time.sleep(0.5)
        time.sleep(2)  # requests on the new certificate too
    # The CA reached the first gateway, which never had the second gateway's token, and answered.
    new = [c for c in challenges(gw1) if c not in seen_first]
    assert new and all(addr == ADDRESS[GW1] and status == 200 for _uri, addr, status in new), new
    assert not {uri.rsplit("/", 1)[1] for uri, _a, _s in new} & tokens(gw1)
    assert gw2.check_output("openssl x509 -in %s/cert.pem -noout -serial" % LIVE).endswith(serial(gw2, GW2))
    for load in (kept, fresh):
        for url, stats in load.result()["urls"].items():
            assert stats["requests"] > 20, (url, stats)
            assert stats["errors"] == 0 and set(stats["status"]) == {"404"}, (load.name, url, stats)


# --- TLS as documented: Mozilla's intermediate configuration ----------------------------------

def mozilla_findings(host, ca_file):
    """sslyze's check of Mozilla's intermediate configuration against the gateway on `host`, from
    the controller, trusting `ca_file`: {criterion: sslyze's words} (empty when compliant)."""
    assert os.path.exists(SSLYZE), "sslyze: make .venv-sslyze/.stamp (requirements-sslyze.txt)"
    proc = subprocess.run([SSLYZE, "--mozilla_config=intermediate", "--certinfo_ca_file", ca_file,
                           "%s:443{%s}" % (NAME, ADDRESS[host])],
                          capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert "COMPLIANCE AGAINST TLS CONFIGURATION" in out and "\"intermediate\" configuration" in out, out[-3000:]
    findings = dict(re.findall(r"^ {8}\* ([a-z0-9_]+): (.*)$", out, re.MULTILINE))
    # Compliant exactly when sslyze says so (and exits 0): nothing above was missed by the parsing.
    assert (proc.returncode == 0) == (not findings) == ("FAILED - Not compliant" not in out), out[-3000:]
    return findings


def test_acme_gateway_passes_mozillas_intermediate_configuration(gw1, pebble_root):
    findings = mozilla_findings(GW1, pebble_root)
    # Excused, and only this: Pebble, the test CA, signs for 5 years whatever it is asked
    # (Let's Encrypt: 90 days). The curves, protocols, ciphers, key, signature, HSTS and the
    # chain (trusting Pebble's root) are checked and pass.
    assert set(findings) <= {"maximum_certificate_lifespan"}, findings
    if findings:
        days = int(re.search(r"life span is ([0-9]+) days", findings["maximum_certificate_lifespan"]).group(1))
        issuer = gw1.check_output("openssl x509 -in %s/cert.pem -noout -issuer" % LIVE)
        assert days > 1800 and "Pebble" in issuer, (findings, issuer)


def test_self_signed_gateway_passes_mozillas_intermediate_configuration(gw1, gw2, tmp_path):
    """The second gateway, switched to a self-signed certificate (no ACME, no services)."""
    with open(os.path.join(HERE, "..", "group_vars", "all", "gateway.yml"), encoding="utf-8") as handle:
        settings = yaml.safe_load(handle)
    settings.update(nginx_gateway_acme_enabled=False, nginx_gateway_tls_self_signed=True,
                    microsvc_app_hosts="no_app_hosts")
    rc, out = run_playbook(write_inventory(str(tmp_path / "inv"), GW2, [], settings))
    assert rc == 0, out[-3000:]
    cert = "/etc/nginx/microsvc-tls/gateway.crt"
    # Served now, and valid for at most 366 days (sslyze checks it too).
    assert serial(gw2, GW2) == gw2.check_output("openssl x509 -in %s -noout -serial" % cert).split("=", 1)[1]
    assert gw2.run("openssl x509 -in %s -noout -checkend %d" % (cert, 366 * 86400)).rc == 1
    assert gw2.run("openssl x509 -in %s -noout -checkend %d" % (cert, 364 * 86400)).rc == 0
    ca_file = tmp_path / "self-signed.pem"
    ca_file.write_text(gw2.file(cert).content_string)
    findings = mozilla_findings(GW2, str(ca_file))
    # Without ACME the second gateway redirects every plain-HTTP request, challenges too: the first
    # gateway, asked for a token it does not have, answers 404, never the peer's redirect.
    status = gw1.check_output("curl -s -o /dev/null -w '%%{http_code}' http://127.0.0.1%sno-such-token" % CHALLENGE)
    assert status == "404" and (CHALLENGE + "no-such-token", ADDRESS[GW1], 301) in challenges(gw2), status
    # Excused, and only this: nobody trusts a self-signed certificate, even named as the anchor
    # (sslyze's path validation wants a CA certificate that is not the server's own).
    assert set(findings) <= {"certificate_path_validation"}, findings
