"""microsvc-uwsgi-metrics (roles/uwsgi_emperor/files): every vassal's uWSGI stats in the textfile
collector's format, read from the stats sockets the vassal files name; a vassal that does not
answer is reported down, files that are not the collection's vassals are ignored."""

import importlib.machinery
import importlib.util
import json
import os
import re
import socket
import threading

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "roles", "uwsgi_emperor", "files", "microsvc-uwsgi-metrics")


def _load():
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
    server.listen(5)

    def loop():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(json.dumps(document).encode())

    threading.Thread(target=loop, daemon=True).start()
    return server


def vassal(directory, name, stats, marker=True):
    lines = ["; Ansible managed"]
    if marker:
        lines.append("; microsvc-service: %s" % name)
    lines += ["[uwsgi]", "master = true", "stats = %s" % stats, "uid = %s" % name]
    (directory / ("%s.ini" % name)).write_text("\n".join(lines) + "\n")


def parse(text):
    series = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP|TYPE) microsvc_uwsgi_[a-z_]+ .+", line), line
            continue
        key, value = line.rsplit(" ", 1)
        assert re.fullmatch(r'microsvc_uwsgi_[a-z_]+(\{service="[a-z0-9_-]+"(,[a-z]+="[a-z0-9]+")?\})?', key), key
        series[key] = float(value)
    return series


@pytest.fixture()
def host(tmp_path):
    vassals = tmp_path / "vassals"
    vassals.mkdir()
    sockets = []
    # A short socket directory: unix socket paths are limited to about 100 bytes.
    sock_dir = "/tmp/mx-%d" % os.getpid()
    os.makedirs(sock_dir, exist_ok=True)
    stats = {
        "pid": os.getpid(),
        "listen_queue": 3,
        "workers": [
            {"id": 1, "pid": os.getpid(), "requests": 41, "status": "busy", "respawn_count": 3, "harakiri_count": 1},
            {"id": 2, "pid": os.getpid(), "requests": 7, "status": "idle", "respawn_count": 1, "harakiri_count": 0},
            {"id": 3, "pid": 0, "requests": 0, "status": "cheap", "respawn_count": 1, "harakiri_count": 0},
        ],
    }
    sockets.append(serve_stats(sock_dir + "/api.sock", stats))
    vassal(vassals, "api", sock_dir + "/api.sock")
    vassal(vassals, "down", sock_dir + "/nothing-listens.sock")
    vassal(vassals, "foreign", sock_dir + "/api.sock", marker=False)  # not written by this collection
    (vassals / "evil.ini").write_text('; microsvc-service: evil"} 1\nstats = %s/api.sock\n' % sock_dir)
    yield vassals
    for sock in sockets:
        sock.close()
    for name in os.listdir(sock_dir):
        os.unlink(os.path.join(sock_dir, name))
    os.rmdir(sock_dir)


def test_every_vassal_of_the_collection_is_reported(host):
    series = parse(metrics.collect(str(host)))
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
    # Master and two live workers (this test process stands in for them); the cheap one has no process.
    assert series['microsvc_uwsgi_rss_bytes{service="api"}'] == 3 * metrics.rss(os.getpid()) > 0
    assert not any(k.startswith("microsvc_uwsgi_workers") and "down" in k for k in series)


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
