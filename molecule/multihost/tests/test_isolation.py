"""Split layout: on an app host a service's TCP port belongs to that service alone.

A compromised service (here service3, attacking as its own user from a plain shell on app1)
must not reach another service's uwsgi port (the protocol has no authentication; UWSGI_FILE
would run code as that service), nor receive that service's traffic while its vassal is down.
Each attack is checked from outside: the victim's answers through the gateway, the service
firewall's counters (roles/service_firewall/README.md says why each rule is there), and no
file written as the victim.
"""

import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from microsvc_checks import http
from multihost_hosts import ADDR, APP1, GW, backend

ATTACKER, VICTIM = "service3", "service2"
VICTIM_INI = "/etc/uwsgi/vassals/%s.ini" % VICTIM
PARKED_INI = "/etc/uwsgi/%s.ini.parked" % VICTIM
# What UWSGI_FILE would make the victim's worker run: a file written as the victim.
MARKER = "/opt/www/%s/shared/data/loaded-by-%s" % (VICTIM, ATTACKER)
EVIL = "/opt/www/%s/shared/data/evil.py" % ATTACKER
IMPOSTOR_LOG = "/opt/www/%s/shared/data/impostor.log" % ATTACKER
PINNED = "/__microsvc/%s/api/%s/" % (APP1, VICTIM)  # the gateway's check server: app1 alone
CHECK_PORT = 8099

# Connects to host:port (optionally from a given local address:port) and, when asked, sends
# one raw uwsgi request with the given variables; prints what happened as JSON.
PROBE = r"""
import json, socket, struct, sys
host, port, source, variables = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
s = socket.socket()
s.settimeout(4)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if source:
    addr, sport = source.rsplit(":", 1)
    s.bind((addr, int(sport)))
try:
    s.connect((host, port))
except OSError as exc:
    print(json.dumps({"connected": False, "error": "%s: %s" % (type(exc).__name__, exc)}))
    sys.exit(0)
answer = b""
if variables:
    body = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
                    for k, v in ((k.encode(), v.encode()) for k, v in variables.items()))
    s.sendall(struct.pack("<BHB", 0, len(body), 0) + body)
    try:
        while len(answer) < 65536:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    except OSError:
        pass
print(json.dumps({"connected": True, "answer": answer.decode("latin-1")}))
"""

# Listens on addr:port with a backlog, for a number of seconds, and logs every connection it
# accepts and every byte it receives (the file is the attacker's own).
IMPOSTOR = r"""
import os, socket, sys, time
addr, port, backlog, seconds, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
log = open(out, "w", buffering=1)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((addr, port))
    s.listen(backlog)
except OSError as exc:
    log.write("bind failed %s\n" % exc)
    sys.exit(0)
log.write("listening %d\n" % os.getpid())
s.settimeout(0.5)
end = time.time() + seconds
while time.time() < end:
    try:
        conn, peer = s.accept()
    except socket.timeout:
        continue
    conn.settimeout(2)
    try:
        data = conn.recv(65536)
    except OSError:
        data = b""
    log.write("accepted %s received %d\n" % (peer[0], len(data)))
    try:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nimpostor")
    except OSError:
        pass
    conn.close()
log.write("done\n")
"""

# 40 connections at once to host:port, each sending a few bytes; counts the outcomes.
BURST = r"""
import json, socket, sys, threading
outcomes = []
def one():
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((sys.argv[1], int(sys.argv[2])))
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        outcomes.append("connected")
    except OSError as exc:
        outcomes.append(type(exc).__name__)
threads = [threading.Thread(target=one) for _ in range(40)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({o: outcomes.count(o) for o in set(outcomes)}))
"""

UWSGI_GET = {"REQUEST_METHOD": "GET", "PATH_INFO": "/api/%s/" % VICTIM, "REQUEST_URI": "/api/%s/" % VICTIM,
             "QUERY_STRING": "", "SERVER_NAME": "app", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
             "HTTP_HOST": "app"}
UWSGI_FILE = dict(UWSGI_GET, UWSGI_FILE=EVIL, UWSGI_APPID="evil", SCRIPT_NAME="/evil")


def docker_exec(host, argv, user="root", detach=False, check=True):
    cmd = ["docker", "exec"] + (["-d"] if detach else []) + ["-u", user, host] + argv
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc.stdout


def probe(user, host, port, source="", variables=None, on=APP1):
    out = docker_exec(on, ["python3", "-c", PROBE, host, str(port), source, json.dumps(variables or {})], user=user)
    return json.loads(out)


def port_of(name):
    conf = backend(GW).file("/etc/nginx/microsvc/upstreams/%s.conf" % name).content_string
    return int(conf.split(ADDR[APP1] + ":")[1].split()[0].strip('";'))


def counter(name, on=APP1):
    out = docker_exec(on, ["nft", "-j", "list", "counter", "inet", "microsvc", name])
    for entry in json.loads(out)["nftables"]:
        if "counter" in entry:
            return entry["counter"]["packets"]
    raise AssertionError("no counter %s: %s" % (name, out))


def listening(app, port):
    return "%s:%d " % (ADDR[APP1], port) in app.check_output("ss -Hltn") + " "


def wait_for(predicate, what, timeout=90):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, what
        time.sleep(1)


def victim_page(gw):
    resp = http(gw, "/api/%s/" % VICTIM)
    assert resp["status"] == 200, resp
    return resp["body"]


@pytest.fixture(scope="module")
def ports():
    return {name: port_of(name) for name in (ATTACKER, VICTIM)}


@pytest.fixture(scope="module")
def evil_code(app1):
    """The attacker's code UWSGI_FILE would load: it writes the marker as whoever runs it."""
    docker_exec(APP1, ["sh", "-c", "umask 022; printf '%s' \"$0\" > " + EVIL,
                       "open(%r, 'w').write('loaded')\ndef application(e, s):\n"
                       "    s('200 OK', [])\n    return [b'evil']\n" % MARKER], user=ATTACKER)
    yield EVIL
    docker_exec(APP1, ["rm", "-f", EVIL, MARKER])


# --- the rules as loaded, and what they rest on -------------------------------------------------

def test_the_output_rules_name_each_port_with_root_and_its_own_user_only(app1, ports):
    users = json.loads(docker_exec(APP1, ["nft", "-j", "list", "set", "inet", "microsvc", "service_users"]))
    elements = next(e["set"] for e in users["nftables"] if "set" in e)["elem"]
    pairs = {tuple(e["concat"]) for e in elements}
    for name, port in ports.items():
        uid = int(app1.check_output("id -u %s" % name))
        assert {(p, u) for p, u in pairs if p == port} == {(port, 0), (port, uid)}


def test_the_uwsgi_listener_belongs_to_its_service(app1, gw, ports):
    # What the output rules rest on: uWSGI's master drops privileges before it binds, so its
    # listening socket is the service user's (and its workers' connections too), never another's.
    uid = int(app1.check_output("id -u %s" % VICTIM))
    line = [x for x in app1.check_output("ss -Hltne").splitlines() if "%s:%d " % (ADDR[APP1], ports[VICTIM]) in x]
    assert len(line) == 1 and " uid:%d " % uid in line[0], line
    assert http(gw, PINNED, port=CHECK_PORT)["status"] == 200


# --- a service reaches only its own port --------------------------------------------------------

def test_a_root_probe_of_the_victims_port_answers(ports):
    # The probe can succeed: root (Ansible, uWSGI's master) may talk to any service port.
    result = probe("root", ADDR[APP1], ports[VICTIM], variables=UWSGI_GET)
    assert result["connected"] and VICTIM in result["answer"], result
    own = probe(ATTACKER, ADDR[APP1], ports[ATTACKER], variables=dict(UWSGI_GET, PATH_INFO="/api/service3/"))
    assert own["connected"] and own["answer"].startswith("HTTP/1.1 "), own


@pytest.mark.parametrize("target", ["127.0.0.1", ADDR[APP1]], ids=["loopback", "private-address"])
def test_a_service_cannot_connect_to_another_services_port(gw, ports, target):
    before_page, before = victim_page(gw), counter("foreign_client")
    result = probe(ATTACKER, target, ports[VICTIM])
    assert not result["connected"], result
    if target != "127.0.0.1":  # nothing listens on the loopback: the kernel would refuse anyway
        assert counter("foreign_client") > before
    assert victim_page(gw) == before_page


def test_uwsgi_file_sent_to_another_services_port_loads_nothing(app1, gw, ports, evil_code):
    before_page, before = victim_page(gw), counter("foreign_client")
    result = probe(ATTACKER, ADDR[APP1], ports[VICTIM], variables=UWSGI_FILE)
    assert not result["connected"], result
    assert counter("foreign_client") > before
    assert not app1.file(MARKER).exists
    assert victim_page(gw) == before_page


def test_connecting_from_its_own_port_does_not_open_another(app1, gw, ports, evil_code):
    # The attacker's packets then carry its own port as source: still a new connection to
    # another service's port, from a user that port does not belong to.
    before = counter("foreign_client")
    result = probe(ATTACKER, ADDR[APP1], ports[VICTIM], source="127.0.0.1:%d" % ports[ATTACKER],
                   variables=UWSGI_FILE)
    assert not result["connected"], result
    assert counter("foreign_client") > before
    assert not app1.file(MARKER).exists


# --- traffic for a service reaches only that service, even while its vassal is down ------------

@pytest.fixture()
def victim_down(app1, gw, ports):
    """service2's vassal stopped on app1 (its ini parked by root, as if it crashed for good);
    restored, and answering on app1 again, afterwards."""
    docker_exec(APP1, ["mv", VICTIM_INI, PARKED_INI])
    try:
        wait_for(lambda: not listening(app1, ports[VICTIM]), "service2's vassal did not stop on app1")
        yield
    finally:
        stop_impostor(app1)
        docker_exec(APP1, ["mv", PARKED_INI, VICTIM_INI])
        wait_for(lambda: listening(app1, ports[VICTIM]), "service2's vassal did not come back on app1")
        wait_for(lambda: http(gw, PINNED, port=CHECK_PORT)["status"] == 200,
                 "service2 does not answer on app1 again")
        docker_exec(APP1, ["rm", "-f", IMPOSTOR_LOG])


def start_impostor(app1, address, port, backlog, seconds=25):
    docker_exec(APP1, ["python3", "-c", IMPOSTOR, address, str(port), str(backlog), str(seconds), IMPOSTOR_LOG],
                user=ATTACKER, detach=True)
    wait_for(lambda: app1.file(IMPOSTOR_LOG).exists and app1.file(IMPOSTOR_LOG).content_string,
             "the impostor did not start", timeout=20)
    log = app1.file(IMPOSTOR_LOG).content_string
    assert log.startswith("listening"), log


def stop_impostor(app1):
    """Kill the impostor this test started, by the pid it logged."""
    log = app1.file(IMPOSTOR_LOG)
    first = log.content_string.split("\n", 1)[0] if log.exists else ""
    if first.startswith("listening "):
        docker_exec(APP1, ["kill", first.split()[1]], check=False)


def impostor_log(app1):
    return app1.file(IMPOSTOR_LOG).content_string


@pytest.mark.parametrize("address", [ADDR[APP1], "0.0.0.0"], ids=["private-address", "wildcard"])
def test_an_impostor_on_a_stopped_services_port_receives_nothing(app1, gw, ports, victim_down, address):
    before = counter("foreign_answer")
    start_impostor(app1, address, ports[VICTIM], 16)
    # Through the gateway, pinned to app1: no answer from the impostor, an error instead.
    pinned = http(gw, PINNED, port=CHECK_PORT)
    assert pinned["status"] in (502, 504), pinned
    assert "impostor" not in pinned["body"]
    # The public route fails over to app2, with the victim's own content.
    for _ in range(4):
        resp = http(gw, "/api/%s/" % VICTIM)
        assert resp["status"] == 200 and "impostor" not in resp["body"] and VICTIM in resp["body"], resp
    # The gateway's own connection to the port never completes.
    direct = probe("root", ADDR[APP1], ports[VICTIM], on=GW)
    assert not direct["connected"], direct
    assert "accepted" not in impostor_log(app1), impostor_log(app1)
    assert counter("foreign_answer") > before


def test_an_impostor_gets_no_connection_through_syn_cookies(app1, ports, victim_down):
    # A listener with a backlog of 0 is always full: the kernel answers further SYNs with SYN
    # cookies, SYN-ACKs that belong to no socket (so no owner to match), and accepts the
    # connection when the cookie comes back. A burst of connections from the gateway.
    before = counter("ownerless_synack")
    start_impostor(app1, ADDR[APP1], ports[VICTIM], 0)
    out = json.loads(docker_exec(GW, ["python3", "-c", BURST, ADDR[APP1], str(ports[VICTIM])]))
    assert out == {"TimeoutError": 40}, out
    assert counter("ownerless_synack") > before
    time.sleep(2)
    assert "accepted" not in impostor_log(app1), impostor_log(app1)


def test_the_impostor_gets_no_local_traffic_either(app1, ports, victim_down):
    start_impostor(app1, ADDR[APP1], ports[VICTIM], 16)
    # Root on the host (an Ansible check, say) connects to the port: the impostor's SYN-ACK is dropped.
    result = probe("root", ADDR[APP1], ports[VICTIM], variables=UWSGI_GET)
    assert not result["connected"], result
    assert "accepted" not in impostor_log(app1), impostor_log(app1)


def test_replies_to_a_connection_from_a_service_port_still_arrive(app1, ports, victim_down):
    # The ephemeral-port case: a connection whose local port is a service port (here root's,
    # while the port is free) gets its replies from a host that is not a gateway: the input
    # chain accepts established connections before it drops.
    result = probe("root", "172.30.77.20", 5432, source="%s:%d" % (ADDR[APP1], ports[VICTIM]))
    assert result["connected"], result
