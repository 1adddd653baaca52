"""microsvc-uwsgi-metrics (roles/uwsgi_emperor/files): every vassal's uWSGI stats in the textfile
collector's format, read from the stats sockets the vassal files name; a vassal that does not
answer is reported down, files that are not the collection's vassals are ignored. The writer
imports the collection's stats reader (installed on hosts as microsvc_uwsgi_stats): here the very
module of plugins/module_utils, so one implementation is tested against the hostile servers of
test_uwsgi_stats.py, through the writer too."""

import importlib.machinery
import importlib.util
import json
import os
import pwd
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from ansible_collections.microsvc.deploy.plugins.module_utils import uwsgi_stats

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "roles", "uwsgi_emperor", "files", "microsvc-uwsgi-metrics")
AS_ROOT = os.geteuid() == 0
# The services' account: the reader switches to it when the tests run as root.
SERVICE = pwd.getpwnam("nobody") if AS_ROOT else pwd.getpwuid(os.geteuid())


SERVICE_PID = []


def _load():
    sys.modules["microsvc_uwsgi_stats"] = uwsgi_stats
    loader = importlib.machinery.SourceFileLoader("microsvc_uwsgi_metrics", SCRIPT)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


metrics = _load()


def serve_stats(path, document):
    """A uWSGI-like stats server: answers one JSON document per connection, then closes."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    if AS_ROOT:
        os.chown(path, SERVICE.pw_uid, SERVICE.pw_gid)
    server.listen(5)
    payload = document if isinstance(document, bytes) else json.dumps(document).encode()

    def loop():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                if payload:
                    conn.sendall(payload)
                else:  # silence: hold the connection open
                    time.sleep(30)

    threading.Thread(target=loop, daemon=True).start()
    return server


def vassal(directory, name, stats, marker=True):
    lines = ["; Ansible managed"]
    if marker:
        lines.append("; microsvc-service: %s" % name)
    lines += ["[uwsgi]", "master = true", "stats = %s" % stats, "uid = %s" % SERVICE.pw_name]
    (directory / ("%s.ini" % name)).write_text("\n".join(lines) + "\n")


def parse(text):
    series = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP|TYPE) microsvc_(uwsgi|asgi)_[a-z_]+ .+", line), line
            continue
        key, value = line.rsplit(" ", 1)
        assert re.fullmatch(r'microsvc_(uwsgi|asgi)_[a-z_]+(\{service="[a-z0-9_-]+"(,[a-z]+="[a-z0-9_]+")?\})?', key), key
        series[key] = float(value)
    return series


@pytest.fixture()
def host(tmp_path):
    vassals = tmp_path / "vassals"
    vassals.mkdir()
    sockets = []
    # A short socket directory: unix socket paths are limited to about 100 bytes. Owned by the services'
    # account, like a service's run/ directory.
    sock_dir = "/tmp/mx-%d" % os.getpid()
    os.makedirs(sock_dir, exist_ok=True)
    if AS_ROOT:
        os.chown(sock_dir, SERVICE.pw_uid, SERVICE.pw_gid)
    # The service's processes: this test process when it runs as the services' account, else a
    # process started as that account.
    proc = None if not AS_ROOT else subprocess.Popen(["sleep", "60"], user=SERVICE.pw_uid, group=SERVICE.pw_gid,
                                                        extra_groups=[])
    pid = proc.pid if proc else os.getpid()
    SERVICE_PID[:] = [pid]
    stats = {
        "pid": pid,
        "listen_queue": 3,
        "workers": [
            {"id": 1, "pid": pid, "accepting": 1, "requests": 41, "status": "busy", "respawn_count": 3,
             "harakiri_count": 1},
            {"id": 2, "pid": pid, "accepting": 1, "requests": 7, "status": "idle", "respawn_count": 1,
             "harakiri_count": 0},
            {"id": 3, "pid": 0, "accepting": 0, "requests": 0, "status": "cheap", "respawn_count": 1,
             "harakiri_count": 0},
        ],
    }
    sockets.append(serve_stats(sock_dir + "/api.sock", stats))
    vassal(vassals, "api", sock_dir + "/api.sock")
    vassal(vassals, "down", sock_dir + "/nothing-listens.sock")
    vassal(vassals, "foreign", sock_dir + "/api.sock", marker=False)  # not written by this collection
    (vassals / "evil.ini").write_text('; microsvc-service: evil"} 1\nstats = %s/api.sock\n' % sock_dir)
    # Hostile neighbours: garbage, a wrong shape, silence, and a stats answer naming a process of
    # someone else (root's pid 1) to have its memory counted.
    sockets.append(serve_stats(sock_dir + "/garbage.sock", b"<html>no json</html>"))
    vassal(vassals, "garbage", sock_dir + "/garbage.sock")
    sockets.append(serve_stats(sock_dir + "/shape.sock", {"pid": 1, "workers": [{"id": 1, "pid": [], "status": 3}]}))
    vassal(vassals, "shape", sock_dir + "/shape.sock")
    sockets.append(serve_stats(sock_dir + "/silent.sock", b""))
    vassal(vassals, "silent", sock_dir + "/silent.sock")
    sockets.append(serve_stats(sock_dir + "/liar.sock", dict(stats, pid=1, workers=[dict(stats["workers"][0], pid=1)])))
    vassal(vassals, "liar", sock_dir + "/liar.sock")
    yield vassals
    if proc:
        proc.kill()
        proc.wait()
    for sock in sockets:
        sock.close()
    for name in os.listdir(sock_dir):
        os.unlink(os.path.join(sock_dir, name))
    os.rmdir(sock_dir)


def test_every_vassal_of_the_collection_is_reported(host):
    series = parse(metrics.collect(str(host), time_limit=1.0))
    assert series['microsvc_uwsgi_up{service="api"}'] == 1
    assert series['microsvc_uwsgi_up{service="down"}'] == 0
    assert not any("foreign" in k or "evil" in k for k in series), series
    assert series['microsvc_uwsgi_worker_requests_total{service="api",worker="1"}'] == 41
    assert series['microsvc_uwsgi_worker_requests_total{service="api",worker="2"}'] == 7
    assert series['microsvc_uwsgi_workers{service="api",state="busy"}'] == 1
    assert series['microsvc_uwsgi_workers{service="api",state="idle"}'] == 1
    assert series['microsvc_uwsgi_workers{service="api",state="other"}'] == 1
    assert series['microsvc_uwsgi_respawns_total{service="api"}'] == 2  # the first spawn is not a respawn
    assert series['microsvc_uwsgi_harakiri_total{service="api"}'] == 1
    assert series['microsvc_uwsgi_listen_queue{service="api"}'] == 3
    # Master and two live workers (one process of the service stands in for them); the cheap one has no
    # process.
    one = metrics.rss(SERVICE_PID[0], SERVICE.pw_uid)
    assert series['microsvc_uwsgi_rss_bytes{service="api"}'] == 3 * one > 0
    assert not any(k.startswith("microsvc_uwsgi_workers") and "down" in k for k in series)


def test_hostile_answers_fail_only_their_own_service_within_the_time_bound(host):
    began = time.monotonic()
    series = parse(metrics.collect(str(host), time_limit=1.0))
    assert time.monotonic() - began < 4
    for name, reason in (("garbage", "not_json"), ("shape", "wrong_shape"), ("silent", "timeout")):
        assert series['microsvc_uwsgi_up{service="%s"}' % name] == 0
        assert series['microsvc_uwsgi_stats_error{service="%s",reason="%s"}' % (name, reason)] == 1
        assert not any(k.startswith("microsvc_uwsgi_workers{") and name in k for k in series)
    assert series['microsvc_uwsgi_stats_error{service="down",reason="not_running"}'] == 1
    # The others are all there, unchanged.
    assert series['microsvc_uwsgi_up{service="api"}'] == 1
    assert series['microsvc_uwsgi_worker_requests_total{service="api",worker="1"}'] == 41
    assert not any(k.startswith("microsvc_uwsgi_stats_error") and "api" in k for k in series)
    # A well-formed answer that names someone else's processes gets none of their memory.
    assert series['microsvc_uwsgi_up{service="liar"}'] == 1
    assert series['microsvc_uwsgi_rss_bytes{service="liar"}'] == 0


def test_the_writer_logs_why_a_service_is_down(host, capsys):
    metrics.main(["--vassals-dir", str(host), "--output", "-"])
    err = capsys.readouterr().err
    assert "service 'garbage': the stats socket answered garbage (not JSON)" in err
    assert "service 'shape': stats of the wrong shape: workers[0].pid is not an integer" in err
    assert "service 'api'" not in err


def test_the_output_file_is_replaced_whole(host, tmp_path):
    out = tmp_path / "textfile" / "microsvc_uwsgi.prom"
    out.parent.mkdir()
    out.write_text("stale\n")
    assert metrics.main(["--vassals-dir", str(host), "--output", str(out)]) == 0
    text = out.read_text()
    assert "stale" not in text and 'microsvc_uwsgi_up{service="api"} 1' in text
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert os.listdir(out.parent) == ["microsvc_uwsgi.prom"]  # no temporary file left behind


def test_no_vassals_is_not_an_error(tmp_path):
    series = parse(metrics.collect(str(tmp_path)))
    assert list(series) == ["microsvc_uwsgi_metrics_timestamp_seconds"]


# ASGI services: the web unit (root's), root's link in the service's root-owned directory, and the
# kernel's cgroup of each process. A fake /proc stands in for the kernel's.
def web_unit(units, name, root, marker_name=None):
    (units / ("microsvc-%s.web@.service" % name)).write_text(
        "#\n# Ansible managed\n#\n# microsvc-web: %s root=%s group=www-data\n[Unit]\n" % (marker_name or name, root))


def fake_process(proc, pid, cgroup_lines, resident_pages):
    (proc / str(pid)).mkdir()
    (proc / str(pid) / "cgroup").write_text("\n".join(cgroup_lines) + "\n")
    (proc / str(pid) / "statm").write_text("100 %d 10 1 0 50 0\n" % resident_pages)


@pytest.fixture()
def asgi_host(tmp_path):
    units, proc, www = tmp_path / "units", tmp_path / "proc", tmp_path / "www"
    for d in (units, proc, www):
        d.mkdir()
    for name, link in (("svc7", "asgi-2.sock"), ("idle", "asgi-1.sock"), ("loose", "asgi-1.sock"),
                       ("astray", "../../../etc/passwd")):
        root = www / name
        root.mkdir(mode=0o755)
        os.chmod(root, 0o775 if name == "loose" else 0o755)  # loose: a group may change the link
        os.symlink(link, root / "asgi.sock")
        web_unit(units, name, root)
    web_unit(units, "impostor", www / "svc7", marker_name="svc7")  # a marker naming another unit's service
    (units / "microsvc-svc7.worker-x@.service").write_text("# microsvc-web: svc7 root=/ group=x\n")
    # svc7 switching: the new slot 2 (live, two processes: v2 and v1 style), the old slot 1 finishing.
    fake_process(proc, 101, ["0::/microsvc.slice/microsvc-svc7.slice/microsvc-svc7.web@2.service"], 10)
    fake_process(proc, 102, ["12:pids:/microsvc.slice/microsvc-svc7.slice/microsvc-svc7.web@2.service",
                             "1:name=systemd:/microsvc.slice/microsvc-svc7.slice/microsvc-svc7.web@2.service"], 20)
    fake_process(proc, 103, ["0::/microsvc.slice/microsvc-svc7.slice/microsvc-svc7.web@1.service"], 5)
    # Processes of loose and astray run, but their links cannot be trusted or name no slot; a
    # process in a sub-cgroup or another unit of svc7 is not a web process.
    fake_process(proc, 104, ["0::/microsvc.slice/microsvc-loose.slice/microsvc-loose.web@1.service"], 7)
    fake_process(proc, 105, ["0::/microsvc.slice/microsvc-astray.slice/microsvc-astray.web@1.service"], 7)
    fake_process(proc, 106, ["0::/microsvc.slice/microsvc-svc7.slice/microsvc-svc7.web@2.service/x"], 99)
    fake_process(proc, 107, ["0::/microsvc.slice/microsvc-svc7.slice/microsvc-svc7.worker-x@1.service"], 99)
    (proc / "self").mkdir()
    return units, proc


def test_asgi_services_are_reported_from_roots_link_and_the_kernels_cgroups(asgi_host, tmp_path):
    units, proc = asgi_host
    series = parse(metrics.collect(str(tmp_path / "no-vassals"), units_dir=str(units), proc=str(proc)))
    page = metrics.PAGE
    # The live slot (root's link names 2) runs: up, with both slots' processes and memory.
    assert series['microsvc_asgi_up{service="svc7"}'] == (1 if AS_ROOT else 0)  # root's directory only
    assert series['microsvc_asgi_processes{service="svc7",slot="2"}'] == 2
    assert series['microsvc_asgi_processes{service="svc7",slot="1"}'] == 1
    assert series['microsvc_asgi_rss_bytes{service="svc7"}'] == 35 * page
    # A service with no process is down; one whose link a group could change, or whose link names
    # no slot, is down whatever runs.
    assert series['microsvc_asgi_up{service="idle"}'] == 0
    assert series['microsvc_asgi_processes{service="idle",slot="1"}'] == 0
    assert series['microsvc_asgi_up{service="loose"}'] == 0
    assert series['microsvc_asgi_up{service="astray"}'] == 0
    assert series['microsvc_asgi_processes{service="loose",slot="1"}'] == 1
    # Units that are not an ASGI web unit of the service they name are not reported.
    assert not any("impostor" in key for key in series), series
    assert sorted(k for k in series if k.startswith("microsvc_asgi_up")) == [
        'microsvc_asgi_up{service="%s"}' % n for n in ("astray", "idle", "loose", "svc7")]


def test_no_asgi_unit_reads_no_process(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "web_processes", lambda proc: pytest.fail("read /proc with no ASGI service"))
    units = tmp_path / "units"
    units.mkdir()
    series = parse(metrics.collect(str(tmp_path), units_dir=str(units)))
    assert list(series) == ["microsvc_uwsgi_metrics_timestamp_seconds"]
