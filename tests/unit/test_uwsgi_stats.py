"""The stats reader (plugins/module_utils/uwsgi_stats.py) against hostile stats servers: real unix
sockets answering garbage, a wrong shape, too much, forever, nothing, or closing at once, and links
planted as the socket. Each bad answer is its own service's error, within the time bound, and the
other services' answers are intact. The readers that use it (status, probe, metrics writer) are
checked against the same servers (here and in test_uwsgi_metrics.py).

Reading as the service's user needs root (the reader switches to that user); as another user, the
tests read as that user itself and the root-only cases are skipped with a reason."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import threading
import time

import pytest
from ansible_collections.microsvc.deploy.plugins.module_utils import uwsgi_stats

ROOT = os.geteuid() == 0
# The service's account: "nobody" when the tests run as root (the reader really switches to it),
# else the user running the tests.
SERVICE = pwd.getpwnam("nobody") if ROOT else pwd.getpwuid(os.geteuid())
LIMIT = 1.0   # the time limit the tests give the reader
BOUND = LIMIT + 2.5  # what a read may take at most: the limit, the child's start, a loaded machine
needs_root = pytest.mark.skipif(not ROOT, reason="switching to the service's user needs root")


def good_doc(pid=None, workers=2):
    pid = pid or os.getpid()
    return {"version": "2.0.21", "pid": pid, "listen_queue": 0, "uid": 1, "locks": [{"user 0": 0}],
            "workers": [{"id": i + 1, "pid": pid, "accepting": 1, "requests": 3 * i, "status": "idle",
                         "respawn_count": 1, "harakiri_count": 0, "rss": 0, "last_spawn": 1700000000,
                         "cores": [{"id": 0, "vars": ["A=\x01b"]}]}
                        for i in range(workers)]}


class Server:
    """A unix stream server in a thread; ``handle(conn)`` answers one connection."""

    def __init__(self, path, handle, listen=True):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o660)
        if ROOT:
            os.chown(path, SERVICE.pw_uid, SERVICE.pw_gid)
        self.stop = threading.Event()
        if listen:
            self.sock.listen(16)
            threading.Thread(target=self.loop, args=(handle,), daemon=True).start()

    def loop(self, handle):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(handle, conn), daemon=True).start()

    def serve(self, handle, conn):
        try:
            handle(conn, self.stop)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()


def send(payload):
    return lambda conn, stop: conn.sendall(payload)


def endless(conn, stop):
    chunk = b" " * 65536  # whitespace: valid JSON padding, so only the cap can end it
    while not stop.is_set():
        conn.sendall(chunk)


def silent(conn, stop):
    stop.wait(30)


def drip(conn, stop):
    for byte in json.dumps(good_doc()).encode():
        if stop.wait(0.2):
            return
        conn.sendall(bytes([byte]))


def close_at_once(conn, stop):
    conn.close()


def wrong_pid(conn, stop):
    doc = good_doc(workers=5)
    doc["workers"][3]["pid"] = "1234"
    conn.sendall(json.dumps(doc).encode())


HOSTILE = {
    "garbage": (send(b"\x00\xffthis is no json{"), "not_json", "answered garbage (not JSON)"),
    "wrong_shape": (wrong_pid, "wrong_shape", "workers[3].pid is not an integer"),
    "huge": (send(json.dumps(dict(good_doc(), pad="x" * (uwsgi_stats.ANSWER_LIMIT + 10))).encode()),
             "too_large", "larger than %d bytes" % uwsgi_stats.ANSWER_LIMIT),
    "endless": (endless, "too_large", "larger than"),
    "silent": (silent, "timeout", "no complete answer within 1s"),
    "drip": (drip, "timeout", "no complete answer within 1s"),
    "closes": (close_at_once, "not_json", "garbage"),
    "nan": (send(b'{"pid": NaN, "workers": []}'), "not_json", "garbage"),
    "deep": (send(b"[" * 100000 + b"]" * 100000), "not_json", "garbage"),
    "a_list": (send(b"[1, 2]"), "wrong_shape", "not a JSON object"),
    "bool_pid": (send(json.dumps(dict(good_doc(), pid=True)).encode()), "wrong_shape", "pid is not an integer"),
    "negative": (send(json.dumps(dict(good_doc(), listen_queue=-1)).encode()), "wrong_shape", "listen_queue is out"),
    "many_workers": (send(json.dumps(good_doc(workers=uwsgi_stats.MAX_WORKERS + 1)).encode()),
                     "wrong_shape", "more than %d workers" % uwsgi_stats.MAX_WORKERS),
    "no_workers": (send(json.dumps({"pid": 5}).encode()), "wrong_shape", "workers is missing"),
    "bad_status": (send(json.dumps(dict(good_doc(), workers=[dict(good_doc()["workers"][0], status="x\n" * 40)]))
                        .encode()), "wrong_shape", "workers[0].status is not a short printable string"),
    "accepting_2": (send(json.dumps(dict(good_doc(), workers=[dict(good_doc()["workers"][0], accepting=2)]))
                         .encode()), "wrong_shape", "workers[0].accepting is not 0 or 1"),
}


@pytest.fixture()
def run_dir():
    """A service's run/ directory (owned by the service), short enough for unix socket paths."""
    path = "/tmp/us-%d" % os.getpid()
    os.makedirs(path + "/run")
    os.chmod(path, 0o751)
    if ROOT:
        os.chown(path + "/run", SERVICE.pw_uid, SERVICE.pw_gid)
    servers = []
    yield path + "/run", servers
    for server in servers:
        server.close()
    shutil.rmtree(path)


def start(run, servers, name, handle, listen=True):
    servers.append(Server("%s/%s.sock" % (run, name), handle, listen))
    return servers[-1].path


def test_a_real_answer_is_read_and_checked(run_dir):
    run, servers = run_dir
    path = start(run, servers, "good", send(json.dumps(good_doc()).encode()))
    answer = uwsgi_stats.read(path, SERVICE.pw_name, time_limit=LIMIT)
    assert answer.error is None and answer.running and answer.reason is None
    assert answer.uid == SERVICE.pw_uid
    assert [w["id"] for w in answer.stats["workers"]] == [1, 2]
    assert uwsgi_stats.workers(answer.stats) == [(os.getpid(), True, "idle")] * 2


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_each_hostile_answer_is_its_own_error_in_bounded_time(run_dir, name):
    run, servers = run_dir
    handle, code, words = HOSTILE[name]
    path = start(run, servers, name, handle)
    began = time.monotonic()
    answer = uwsgi_stats.read(path, SERVICE.pw_name, time_limit=LIMIT)
    took = time.monotonic() - began
    assert answer.stats is None and not answer.running
    assert answer.error.code == code, answer.error
    assert words in answer.reason
    assert took < BOUND, "%s took %.1fs" % (name, took)


def test_nothing_listening_is_not_running_not_an_error(run_dir):
    run, servers = run_dir
    bound_only = start(run, servers, "bound", None, listen=False)  # a socket file nobody accepts on
    for path in (bound_only, run + "/missing.sock"):
        answer = uwsgi_stats.read(path, SERVICE.pw_name, time_limit=LIMIT)
        assert isinstance(answer.error, uwsgi_stats.NotRunning), answer.error
        assert answer.reason is None and not answer.running
    assert uwsgi_stats.read_stats(bound_only, SERVICE.pw_name) is None


def test_one_service_bad_answer_leaves_the_others_intact_and_all_finish_together(run_dir):
    run, servers = run_dir
    requests = [("good-%d" % i, start(run, servers, "good-%d" % i, send(json.dumps(good_doc(workers=i + 1)).encode())),
                 SERVICE.pw_name, None) for i in range(3)]
    requests += [(name, start(run, servers, name, handle), SERVICE.pw_name, None)
                 for name, (handle, _c, _w) in sorted(HOSTILE.items())]
    began = time.monotonic()
    answers = uwsgi_stats.read_many(requests, time_limit=LIMIT, parallel=len(requests))
    took = time.monotonic() - began
    for i in range(3):
        assert answers["good-%d" % i].error is None
        assert len(answers["good-%d" % i].stats["workers"]) == i + 1
    for name, (_handle, code, _words) in HOSTILE.items():
        assert answers[name].error.code == code, (name, answers[name].error)
    assert took < BOUND, took


def test_a_small_pool_still_bounds_each_read(run_dir):
    run, servers = run_dir
    requests = [("silent-%d" % i, start(run, servers, "silent-%d" % i, silent), SERVICE.pw_name, None)
                for i in range(4)]
    requests.append(("good", start(run, servers, "good", send(json.dumps(good_doc()).encode())), SERVICE.pw_name, None))
    began = time.monotonic()
    answers = uwsgi_stats.read_many(requests, time_limit=LIMIT, parallel=2)
    took = time.monotonic() - began
    assert answers["good"].error is None
    assert all(answers["silent-%d" % i].error.code == "timeout" for i in range(4))
    assert took < 3 * BOUND, took  # three rounds of two


@needs_root
def test_a_link_to_a_socket_the_service_may_not_use_is_refused(run_dir):
    run, servers = run_dir
    # Someone else's socket: in a directory the service's user cannot enter (a neighbour's run/), and
    # one it can enter but may not connect to (root's own).
    private = os.path.dirname(run) + "/private"
    os.makedirs(private, mode=0o700)
    secret = Server(private + "/stats.sock", send(json.dumps(good_doc(pid=1)).encode()))
    os.chown(secret.path, 0, 0)
    os.chmod(secret.path, 0o600)
    servers.append(secret)
    rootonly = Server(os.path.dirname(run) + "/root.sock", send(json.dumps(good_doc(pid=1)).encode()))
    os.chown(rootonly.path, 0, 0)
    os.chmod(rootonly.path, 0o600)
    servers.append(rootonly)
    os.symlink(secret.path, run + "/neighbour.sock")
    os.symlink(rootonly.path, run + "/root.sock")
    for link in ("neighbour", "root"):
        answer = uwsgi_stats.read(run + "/%s.sock" % link, SERVICE.pw_name, time_limit=LIMIT)
        assert answer.stats is None, "the reader followed the service's link with root's rights"
        assert answer.error.code == "denied", answer.error
        assert "may not connect" in answer.reason
    # Root itself reaches both: only the switch to the service's user keeps them out.
    for target in (secret.path, rootonly.path):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(target)


@needs_root
def test_the_reader_connects_as_the_service_and_never_as_root(run_dir):
    run, servers = run_dir
    seen = []

    def who(conn, stop):
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        seen.append((int.from_bytes(creds[4:8], "little"), int.from_bytes(creds[8:12], "little")))
        conn.sendall(json.dumps(good_doc()).encode())

    path = start(run, servers, "who", who)
    assert uwsgi_stats.read(path, SERVICE.pw_name, time_limit=LIMIT).error is None
    assert uwsgi_stats.read(path, time_limit=LIMIT).error is None  # no user: the run/ directory's owner
    assert seen == [(SERVICE.pw_uid, SERVICE.pw_gid)] * 2


@needs_root
def test_root_is_never_the_identity(run_dir):
    run, servers = run_dir
    root_dir = os.path.dirname(run)  # root-owned
    path = start(run, servers, "x", send(json.dumps(good_doc()).encode()))
    os.symlink(path, root_dir + "/x.sock")
    for user, where in (("root", path), (None, root_dir + "/x.sock")):
        answer = uwsgi_stats.read(where, user, time_limit=LIMIT)
        assert answer.stats is None and "as root" in answer.reason


def test_an_unknown_user_is_an_error_of_that_service_only(run_dir):
    run, servers = run_dir
    path = start(run, servers, "good", send(json.dumps(good_doc()).encode()))
    answers = uwsgi_stats.read_many([("a", path, "no-such-user-xyz", None), ("b", path, SERVICE.pw_name, None)],
                                    time_limit=LIMIT)
    assert "no user" in answers["a"].reason and answers["b"].error is None


def test_pids_count_only_when_they_are_the_service_own():
    me = os.geteuid()
    assert uwsgi_stats.owned_pid(os.getpid(), me)
    assert not uwsgi_stats.owned_pid(os.getpid(), me + 1)
    assert not uwsgi_stats.owned_pid(0, me) and not uwsgi_stats.owned_pid(2 ** 40, me)
    assert not uwsgi_stats.owned_pid(os.getpid(), None)


def test_status_module_reports_the_bad_service_and_the_others(run_dir, capsys):
    from ansible.module_utils.testing import patch_module_args
    from ansible_collections.microsvc.deploy.plugins.modules import vassal_status

    run, servers = run_dir
    good = start(run, servers, "good", send(json.dumps(good_doc()).encode()))
    bad = start(run, servers, "bad", wrong_pid)
    slow = start(run, servers, "slow", silent)
    root = os.path.dirname(run)
    services = [dict(name=n, root=root, stats_socket=p, user=SERVICE.pw_name, group=None)
                for n, p in (("good", good), ("bad", bad), ("slow", slow))]
    began = time.monotonic()
    with patch_module_args(dict(services=services, units_dir=root)), pytest.raises(SystemExit):
        vassal_status.main()
    took = time.monotonic() - began
    out = json.loads(capsys.readouterr().out)
    assert not out.get("failed"), out
    st = out["services"]
    assert st["good"]["running"] and st["good"]["stats_error"] is None and st["good"]["workers"] == 2
    assert st["bad"]["stats_error"].endswith("workers[3].pid is not an integer") and st["bad"]["workers"] == 0
    assert "no complete answer" in st["slow"]["stats_error"]
    # This test process stands in for the service's processes: measured only when it is the service's.
    assert (st["good"]["rss_kb"] > 0) == (SERVICE.pw_uid == os.geteuid())
    assert took < uwsgi_stats.TIME_LIMIT + 2.5, took
