# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Read uWSGI stats sockets (a unix socket that answers one JSON document and closes) as what
they are: answers of an untrusted service.

A stats socket lives in the service's own run/ directory and the service can replace it with a
server of its own, or with a symlink to someone else's socket. So every read here:

- connects as the service's user, never as root: a short-lived child process switches to the
  service's uid and gid (no supplementary groups) before it connects, so the kernel checks the
  path, and any symlink planted in it, with the service's rights only;
- is bounded: one time limit for the whole answer (connect and every byte), a size cap, and the
  reader (root) enforces both again on the child's output, killing it past the deadline;
- is strict: the answer must be one JSON document, then only the fields the callers use are
  checked (types, ranges, list lengths); anything else is a per-service ``StatsError`` with a
  reason, and never stops the reading of the other services (``read_many``).

Standard library only: the metrics writer of the uwsgi_emperor role installs this file on hosts
(/usr/local/lib/microsvc/microsvc_uwsgi_stats.py) and imports it, so there is one implementation.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import selectors
import signal
import stat
import subprocess
import sys
import time

TIME_LIMIT = 3.0          # seconds for connect + the whole answer
ANSWER_LIMIT = 4 << 20    # bytes; a real answer of 256 workers with 16 threads each is about 2 MiB
MAX_WORKERS = 1024        # the plan allows at most 256 processes
MAX_STATUS = 64           # characters of a worker's status ("idle", "busy", "cheap", "sig 9", ...)
MAX_INT = (1 << 63) - 1
PARALLEL = 16             # children reading at once
_STARTUP = 2.0            # what the reader adds to the child's own limit (interpreter start)

# Runs as the service's user. It reports with one leading byte: D (the complete answer follows),
# N (nothing listens), T (no complete answer in time), B (the answer is over the cap), E (an
# errno name follows). It may be killed or traced by the service (same uid): the reader trusts
# nothing of what it writes beyond that first byte and bounds the rest again.
_CHILD = r"""
import errno, os, socket, sys, time
path, limit, budget = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + budget
def done(code, data=b""):
    view = memoryview(code + data)
    while view:
        view = view[os.write(1, view):]
    os._exit(0)
def failed(exc):
    if isinstance(exc, socket.timeout):
        done(b"T")
    if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
        done(b"N")
    done(b"E", errno.errorcode.get(exc.errno, "EIO").encode())
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(budget)
try:
    sock.connect(path)
except OSError as exc:
    failed(exc)
chunks, size = [], 0
while True:
    left = deadline - time.monotonic()
    if left <= 0:
        done(b"T")
    sock.settimeout(left)
    try:
        data = sock.recv(65536)
    except OSError as exc:
        failed(exc)
    if not data:
        break
    size += len(data)
    if size > limit:
        done(b"B")
    chunks.append(data)
done(b"D", b"".join(chunks))
"""

# Why a connection failed, in words (errno names the child reports).
_ERRNO_WORDS = {
    "EACCES": "the service's user may not connect to it (a link to someone else's socket?)",
    "EPERM": "the service's user may not connect to it (a link to someone else's socket?)",
    "ELOOP": "it is a loop of symbolic links",
    "ENOTDIR": "a part of its path is not a directory",
    "ENOTSOCK": "it is not a socket",
    "EPROTOTYPE": "it is not a stream socket",
    "ECONNRESET": "the connection was reset",
    "EAGAIN": "its listen queue is full",
}


class StatsError(Exception):
    """An unusable stats answer: ``code`` is a short fixed word (metrics label), the message says why."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class NotRunning(StatsError):
    """Nothing listens on the socket (no file, or connection refused): the vassal is not running."""

    def __init__(self, message="nothing listens on the stats socket"):
        super().__init__("not_running", message)


class Answer:
    """One service's read: ``stats`` (a checked document) or ``error`` (a StatsError); ``uid`` is the
    account the socket was read as (the only owner whose processes the answer may name)."""

    __slots__ = ("error", "stats", "uid")

    def __init__(self, stats=None, error=None, uid=None):
        self.stats, self.error, self.uid = stats, error, uid

    @property
    def running(self):
        return self.stats is not None

    @property
    def reason(self):
        """The error in words, or None (also None when the vassal simply is not running)."""
        if self.error is None or isinstance(self.error, NotRunning):
            return None
        return str(self.error)


# --- who reads -------------------------------------------------------------------------------

def identity(path, user=None, group=None):
    """(uid, gid) to read ``path`` as: the named user (and group, or the user's primary group), or
    else the owner of the directory that holds the socket (a real directory, not a link: the
    service's run/ directory, whose entry in the root-owned service root the service cannot
    change). Root is refused: root never connects to a path a service can change."""
    if user is not None:
        try:
            entry = pwd.getpwnam(user) if isinstance(user, str) else pwd.getpwuid(int(user))
        except (KeyError, ValueError, OverflowError):
            raise StatsError("error", "no user %r to read the stats socket as" % (user,)) from None
        uid, gid = entry.pw_uid, entry.pw_gid
        if group is not None:
            try:
                gid = grp.getgrnam(group).gr_gid if isinstance(group, str) else int(group)
            except (KeyError, ValueError, OverflowError):
                raise StatsError("error", "no group %r to read the stats socket as" % (group,)) from None
    else:
        try:
            st = os.lstat(os.path.dirname(path) or ".")
        except OSError:
            raise NotRunning("the directory of the stats socket is missing") from None
        if not stat.S_ISDIR(st.st_mode):
            raise StatsError("error", "the directory of the stats socket is not a directory")
        uid, gid = st.st_uid, st.st_gid
    if uid == 0 or gid == 0:
        raise StatsError("error", "refusing to read a stats socket as root")
    return uid, gid


# --- the bounded read --------------------------------------------------------------------------

def _child_python():
    """The system's interpreter (root-owned, runnable by every account), else the running one."""
    for candidate in ("/usr/bin/python3", sys.executable):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise StatsError("error", "no Python interpreter to read the stats socket with")


class _Child:
    def __init__(self, key, path, uid, gid, time_limit, limit):
        self.key, self.uid, self.limit, self.time_limit = key, uid, limit, time_limit
        self.buf = bytearray()
        self.error = None
        switch = {}
        if os.geteuid() == 0:
            switch = dict(user=uid, group=gid, extra_groups=[])
        elif os.geteuid() != uid:
            raise StatsError("error", "cannot read as uid %d: the reader does not run as root" % uid)
        python = _child_python()
        self.proc = subprocess.Popen(
            [python, "-I", "-S", "-c", _CHILD, path, str(limit), repr(float(time_limit))],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={}, cwd="/",
            close_fds=True, start_new_session=True, **switch)
        self.deadline = time.monotonic() + time_limit + _STARTUP
        os.set_blocking(self.proc.stdout.fileno(), False)

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            try:
                self.proc.kill()
            except OSError:
                pass

    def finish(self):
        self.proc.stdout.close()
        try:
            self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()


def _outcome(raw, limit, time_limit):
    """The child's report -> the answer's bytes, or a StatsError."""
    code, data = bytes(raw[:1]), bytes(raw[1:])
    if code == b"D":
        return data
    if code == b"N":
        return NotRunning()
    if code == b"T":
        return StatsError("timeout", "the stats socket gave no complete answer within %gs" % time_limit)
    if code == b"B":
        return StatsError("too_large", "the stats socket's answer is larger than %d bytes" % limit)
    if code == b"E":
        name = data.decode("ascii", "replace")[:20]
        return StatsError("denied" if name in ("EACCES", "EPERM") else "error",
                          "cannot read the stats socket: %s" % _ERRNO_WORDS.get(name, name or "unknown error"))
    return StatsError("error", "the stats reader ended without an answer")


def fetch_many(requests, time_limit=TIME_LIMIT, limit=ANSWER_LIMIT, parallel=PARALLEL):
    """Read raw answers. ``requests``: [(key, path, uid, gid)]. Returns {key: bytes or StatsError}.
    Every read is bounded by ``time_limit`` (plus the child's start) and ``limit`` bytes; up to
    ``parallel`` run at once."""
    out = {}
    pending = list(requests)
    running = {}
    sel = selectors.DefaultSelector()
    try:
        while pending or running:
            while pending and len(running) < parallel:
                key, path, uid, gid = pending.pop(0)
                try:
                    child = _Child(key, path, uid, gid, time_limit, limit)
                except StatsError as exc:
                    out[key] = exc
                    continue
                except OSError as exc:
                    out[key] = StatsError("error", "cannot start the stats reader as uid %d: %s" % (uid, exc.strerror))
                    continue
                running[child.proc.stdout.fileno()] = child
                sel.register(child.proc.stdout, selectors.EVENT_READ, child)
            if not running:
                break
            now = time.monotonic()
            wait = max(0.0, min(c.deadline for c in running.values()) - now)
            for selkey, _ev in sel.select(timeout=wait):
                child = selkey.data
                done = False
                try:
                    data = os.read(child.proc.stdout.fileno(), 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    child.buf += data
                    if len(child.buf) > limit + 1:
                        child.error = StatsError("too_large", "the stats socket's answer is larger than %d bytes" % limit)
                        child.kill()
                        done = True
                else:
                    done = True
                if done:
                    sel.unregister(child.proc.stdout)
                    del running[child.proc.stdout.fileno()]
                    child.finish()
                    out[child.key] = child.error or _outcome(child.buf, limit, time_limit)
            now = time.monotonic()
            for fd, child in list(running.items()):
                if now >= child.deadline:
                    child.kill()
                    sel.unregister(child.proc.stdout)
                    del running[fd]
                    child.finish()
                    out[child.key] = StatsError(
                        "timeout", "the stats socket gave no complete answer within %gs" % time_limit)
    finally:
        for child in running.values():
            child.kill()
            child.finish()
        sel.close()
    return out


# --- what an answer must look like ---------------------------------------------------------------

def _int(doc, key, where, low=0, required=True):
    if key not in doc:
        if required:
            raise StatsError("wrong_shape", "stats of the wrong shape: %s%s is missing" % (where, key))
        return
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise StatsError("wrong_shape", "stats of the wrong shape: %s%s is not an integer" % (where, key))
    if not low <= value <= MAX_INT:
        raise StatsError("wrong_shape", "stats of the wrong shape: %s%s is out of range" % (where, key))


def check(doc):
    """``doc`` when it has the shape the readers rely on, else StatsError naming the first bad field.
    Only what the callers read is checked; other fields are left alone and never used."""
    if not isinstance(doc, dict):
        raise StatsError("wrong_shape", "stats of the wrong shape: the answer is not a JSON object")
    _int(doc, "pid", "", low=1)
    _int(doc, "listen_queue", "", required=False)
    workers = doc.get("workers")
    if not isinstance(workers, list):
        raise StatsError("wrong_shape", "stats of the wrong shape: workers is %s"
                         % ("missing" if workers is None else "not a list"))
    if len(workers) > MAX_WORKERS:
        raise StatsError("wrong_shape", "stats of the wrong shape: more than %d workers" % MAX_WORKERS)
    for i, worker in enumerate(workers):
        where = "workers[%d]." % i
        if not isinstance(worker, dict):
            raise StatsError("wrong_shape", "stats of the wrong shape: workers[%d] is not an object" % i)
        for key in ("id", "pid", "requests"):
            _int(worker, key, where)
        _int(worker, "accepting", where)
        if worker["accepting"] > 1:
            raise StatsError("wrong_shape", "stats of the wrong shape: %saccepting is not 0 or 1" % where)
        for key in ("respawn_count", "harakiri_count", "rss", "last_spawn"):
            _int(worker, key, where, required=False)
        status = worker.get("status")
        if not isinstance(status, str) or len(status) > MAX_STATUS or not status.isprintable():
            raise StatsError("wrong_shape", "stats of the wrong shape: %sstatus is not a short printable string"
                             % where)
    return doc


def _no_constant(name):
    raise ValueError("%s is not JSON" % name)


def parse(raw):
    """The checked document in ``raw`` (bytes), or StatsError."""
    try:
        # strict=False: uWSGI copies request variables of busy cores into its answer unescaped; those
        # strings are never used. NaN and Infinity are refused.
        doc = json.loads(raw.decode("utf-8", "replace"), strict=False, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise StatsError("not_json", "the stats socket answered garbage (not JSON)") from None
    return check(doc)


# --- what the callers use -------------------------------------------------------------------------

def read_many(services, time_limit=TIME_LIMIT, limit=ANSWER_LIMIT, parallel=PARALLEL):
    """{key: Answer} for ``services``: [(key, path, user, group)] (user and group may be None: then the
    owner of the socket's directory). One service's failure is only its own Answer's error."""
    out, requests = {}, []
    for key, path, user, group in services:
        try:
            uid, gid = identity(path, user, group)
        except StatsError as exc:
            out[key] = Answer(error=exc)
            continue
        out[key] = Answer(uid=uid)
        requests.append((key, path, uid, gid))
    for key, raw in fetch_many(requests, time_limit, limit, parallel).items():
        try:
            if isinstance(raw, StatsError):
                raise raw
            out[key].stats = parse(raw)
        except StatsError as exc:
            out[key].error = exc
    return out


def read(path, user=None, group=None, time_limit=TIME_LIMIT, limit=ANSWER_LIMIT):
    """One service's Answer."""
    return read_many([(path, path, user, group)], time_limit, limit)[path]


def read_stats(path, user=None, timeout=TIME_LIMIT):
    """The checked stats document, or None when nothing usable answers on ``path``."""
    return read(path, user, time_limit=timeout).stats


def owned_pid(pid, uid):
    """Whether ``pid`` (from an answer) is a process of ``uid``: an answer may only name its own
    processes (a service could name a neighbour's, to have its memory or uptime reported)."""
    if not isinstance(pid, int) or pid <= 0 or uid is None:
        return False
    try:
        return os.stat("/proc/%d" % pid).st_uid == uid
    except OSError:
        return False


def workers(stats):
    """Return [(pid, accepting, status)] for the workers in a checked stats document."""
    if not stats:
        return []
    return [(w["pid"], bool(w["accepting"]), w["status"]) for w in stats["workers"]]


def summary(stats):
    """A small, JSON-friendly view of a checked stats document."""
    if not stats:
        return {"running": False}
    return {
        "running": True,
        "master_pid": stats["pid"],
        "workers": [
            {
                "pid": w["pid"],
                "accepting": bool(w["accepting"]),
                "status": w["status"],
                "requests": w["requests"],
                "rss": w.get("rss"),
                "respawn_count": w.get("respawn_count"),
                "last_spawn": w.get("last_spawn"),
            }
            for w in stats["workers"]
        ],
    }
