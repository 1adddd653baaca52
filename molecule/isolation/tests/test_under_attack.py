"""The collection keeps managing and reporting the other services while every attack is in place.

The hostile service plants, all at once, what each class of attack plants (links where root used to
write, read or serve, links the gateway might serve, and a server of its own on its stats socket);
then a deploy, a rollback, status.yml and the metrics run. They succeed for the neighbours, name
the hostile service with a reason instead of hanging, and none of them, nor root's periodic jobs,
changes a file outside the service or serves one. Runs last (file name): its attacks stay in place
until its own clean-up.
"""

from __future__ import annotations

import os
import re
import shutil
import time

import pytest
from conftest import HOSTILE, NEIGHBOURS, ROUTES, Outside, as_user
from microsvc_checks import PROJECT, _quote, http, master_pid, run_playbook

PROM = "/var/lib/prometheus/node-exporter/microsvc_uwsgi.prom"

# Each line plants one attack as the hostile service's user; all of them stay in place together.
PLANT = r"""
set -e
cd /opt/www/hostile
ln -sfn /etc/passwd shared/protected/passwd.txt
ln -sfn /opt/www/service1 shared/protected/neighbour
ln -sfn /var/log/nginx/microsvc shared/protected/gatewaylogs
ln -sfn /opt/www/service1/env shared/log/uwsgi.log
ln -sfn /opt/www/service2/env shared/log/worker-loop.log.1
[ ! -d shared/log/schedules ] || mv shared/log/schedules shared/log/schedules.real
ln -s /opt/www/service2/shared/log shared/log/schedules
rm -f run/chain-reload && ln -s /etc/shadow run/chain-reload
"""

UNPLANT = r"""
cd /opt/www/hostile
rm -f shared/protected/passwd.txt shared/protected/neighbour shared/protected/gatewaylogs \
      shared/log/uwsgi.log shared/log/worker-loop.log.1 run/chain-reload
if [ -L shared/log/schedules ]; then rm -f shared/log/schedules; fi
[ ! -d shared/log/schedules.real ] || mv shared/log/schedules.real shared/log/schedules
"""

# A server of the service's own on its stats socket: an endless stream of garbage to everyone.
ROGUE_STATS = r"""
import os, socket, threading
path = "/opt/www/hostile/run/stats.sock"
try:
    os.unlink(path)
except FileNotFoundError:
    pass
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
srv.listen(16)
def serve(conn):
    try:
        while True:
            conn.sendall(b'{"workers": [' * 4096)
    except OSError:
        pass
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def hostile_master(host):
    return master_pid(host, HOSTILE)


def wait_answering(host, name, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if http(host, ROUTES[name])["status"] == 200:
            return
        time.sleep(1)
    pytest.fail("%s did not answer again within %ds" % (name, timeout))


@pytest.fixture(scope="module")
def attacks(host):
    planted = as_user(host, PLANT)
    assert planted.rc == 0, planted.stderr
    rogue = as_user(host, "setsid nohup python3 -c %s >/dev/null 2>&1 &" % _quote(ROGUE_STATS))
    assert rogue.rc == 0, rogue.stderr
    time.sleep(1)
    assert host.run("test -S /opt/www/hostile/run/stats.sock").rc == 0
    yield
    as_user(host, "pkill -u hostile -f 'run/stats.sock' || true")
    as_user(host, UNPLANT)
    # The attacker's server took the stats socket: the master binds it again when it starts.
    as_user(host, "kill -9 %s" % hostile_master(host))
    time.sleep(2)
    wait_answering(host, HOSTILE)


def greeting(host):
    return http(host, "/api/service2/")["body"]


def test_a_deploy_and_a_rollback_of_a_neighbour_work_with_every_attack_in_place(host, attacks, inventory,
                                                                                tmp_path, monkeypatch):
    before = greeting(host)
    masters = {name: master_pid(host, name) for name in NEIGHBOURS}
    # New code for service2 (a copy of the samples, which the scenario's settings then allow as a
    # source; service1's code is unchanged: the same release).
    samples = tmp_path / "samples"
    shutil.copytree(os.path.join(PROJECT, "samples"), samples)
    app = samples / "service2" / "app.py"
    app.write_text(app.read_text().replace("hello from a plain WSGI app", "hello, deployed under attack"))
    inv = inventory()
    monkeypatch.setenv("MICROSVC_SAMPLES_DIR", str(samples))
    rc, out = run_playbook(inv)
    assert rc == 0, out[-4000:]
    assert "hello, deployed under attack" in greeting(host)
    assert "service '%s': its stats cannot be read" % HOSTILE in out, out[-4000:]
    rc, out = run_playbook(inv, "playbooks/rollback.yml", args=["-e", "rollback_service=service2"])
    assert rc == 0, out[-4000:]
    assert greeting(host) == before
    # A code deploy and its rollback chain-reload the workers; the masters stay.
    assert {name: master_pid(host, name) for name in NEIGHBOURS} == masters


def test_status_reports_the_neighbours_and_names_the_hostile_service(host, attacks, inventory):
    started = time.time()
    rc, out = run_playbook(inventory(), "playbooks/status.yml")
    assert time.time() - started < 120, "status.yml took too long with a hostile stats socket"
    assert rc != 0, out[-4000:]
    for name in NEIGHBOURS:
        lines = [ln for ln in out.splitlines() if ln.strip().startswith("- %s " % name)]
        assert len(lines) == 1 and " ok 200 " in lines[0], out[-4000:]
    assert re.search(r"%s is unknown: [^\n]*larger than" % HOSTILE, out), out[-4000:]


def test_the_metrics_keep_every_neighbour_while_the_hostile_stats_stream_garbage(host, attacks):
    host.run("rm -f %s" % PROM)
    started = time.time()
    run = host.run("timeout 150 systemctl start microsvc-uwsgi-metrics.service")
    assert run.rc == 0, run.stderr
    assert time.time() - started < 30
    text = host.file(PROM).content_string
    for name in NEIGHBOURS:
        assert 'microsvc_uwsgi_up{service="%s"} 1' % name in text, text[:3000]
    assert 'microsvc_uwsgi_up{service="%s"} 0' % HOSTILE in text, text[:3000]


def test_root_side_jobs_and_the_gateway_change_and_serve_nothing_outside_the_service(host, attacks):
    outside = Outside(host)
    # The service kills its own master: the emperor starts it again, as root until the drop, with
    # every link in place.
    as_user(host, "kill -9 %s" % hostile_master(host))
    time.sleep(2)
    wait_answering(host, HOSTILE)
    # Root's periodic jobs over the services' files.
    # Root's rotation of the service's own logs (as the service's user: it cannot read where its
    # links point, and says so for its own files only).
    rotate = host.run("logrotate -f -s /root/isolation-logrotate.status /etc/logrotate.d/microsvc-hostile")
    errors = [line for line in rotate.stderr.splitlines() if line.startswith("error:")]
    assert all("/opt/www/hostile/" in line for line in errors), rotate.stderr
    assert host.run("timeout 150 systemctl start microsvc-uwsgi-metrics.service").rc == 0
    # The gateway serves nothing the links name.
    for target in ("passwd.txt", "neighbour/env", "gatewaylogs/service1.access.log"):
        resp = http(host, "/api/hostile/respond?h=X-Accel-Redirect:/_accel/hostile/" + target)
        assert "root:" not in resp["body"] and "SECRET_OF" not in resp["body"] and "GET /" not in resp["body"], resp
    outside.assert_unchanged()
