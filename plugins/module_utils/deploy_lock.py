# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""The deploy lock of each service on a host: one run of a playbook at a time changes a service.

A run (the holder: one ansible-playbook process on a controller) takes the lock of every service
it is going to change on a host before it changes that host, and releases it at the end, also on
failure. A run is many module calls (probe, deploy, health check, settle), so the lock cannot be
a flock held by one process: it is a record per service, ``<dir>/<service>.lock`` (JSON, 0600
root), naming the holder.

- Records are read and written only under a short exclusive flock of ``<dir>/.mutex``: taking,
  renewing, breaking and releasing are atomic on the host. Records are rewritten in place (same
  inode), never renamed over, so that the flock below stays on the file it was taken on.
- While a module call of the holder works under the lock (``Held``), it also holds a flock of the
  record file itself ("in use") and renews the lease from a thread. A lock in use is never broken,
  whatever a controller believes: the work of a run whose controller died may still be going on.
- A lock may be broken (taken over) only when it is not in use and its holder is gone:
  - its lease expired: no call of the holder renewed it for ``lease`` seconds, which works for
    runs from any controller;
  - or the controller asking found the holder's process gone, which only the holder's own
    controller can tell (same host name, boot and PID namespace; the process start time guards
    against a reused PID): the asker passes that run in ``break_runs``.

Kept free of Ansible so that unit tests import it directly; the action plugin deploy_lock uses
``describe`` and ``process_alive`` on the controller.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import threading
import time

DEFAULT_DIR = "/var/lib/microsvc/locks"
SUFFIX = ".lock"
MUTEX = ".mutex"
# The fields a holder record carries (the rest is the host's bookkeeping).
HOLDER_FIELDS = ("run", "controller", "user", "pid", "started", "playbook", "purpose", "identity")


class LockError(Exception):
    """The lock of a service is not (or no longer) held by this run."""


def lock_path(lock_dir, name):
    if not name or "/" in name or name.startswith("."):
        raise LockError("invalid service name %r" % name)
    return os.path.join(lock_dir, name + SUFFIX)


def ensure_dir(lock_dir):
    """The lock directory: created 0700, and refused when it is a symlink or not root's (a record
    there decides who may change a service)."""
    parent = os.path.dirname(lock_dir)
    if not os.path.isdir(parent):
        os.makedirs(parent, 0o755)
    try:
        os.mkdir(lock_dir, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(lock_dir)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise LockError("%s must be a directory of the user running the deploy, writable by it alone" % lock_dir)


class Mutex:
    """The short exclusive flock around every read-modify-write of the records."""

    def __init__(self, lock_dir):
        self.path = os.path.join(lock_dir, MUTEX)
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # closing drops the flock
        self.fd = None


def read(path):
    """The record of a lock file, {} for an unreadable one, None when there is none. Records are
    rewritten in place, so a reader holds the Mutex of the directory (or may see a torn write)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return {}
        raise
    with os.fdopen(fd, "rb") as handle:
        data = handle.read()
    try:
        record = json.loads(data.decode("utf-8"))
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def write(path, record):
    """Write a record in place (same inode: a flock on the file stays valid)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        data = (json.dumps(record, sort_keys=True, indent=1) + "\n").encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def in_use(path):
    """Whether a module call of the holder works under the lock right now."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def gone_reason(record, now, break_runs=()):
    """Why the holder of ``record`` counts as gone, or None while it counts as alive."""
    if not record.get("run"):
        return "its record is unreadable"
    if record["run"] in (break_runs or ()):
        return "its ansible-playbook process (PID %s) no longer runs on %s" % (
            record.get("pid"), record.get("controller"))
    renewed = record.get("renewed")
    lease = record.get("lease")
    if not isinstance(renewed, (int, float)) or not isinstance(lease, (int, float)):
        return "its record has no lease"
    if now - renewed > lease:
        return "its lease of %ds expired (last renewed %ds ago)" % (lease, now - renewed)
    return None


def new_record(name, holder, lease, now):
    record = {key: holder.get(key) for key in HOLDER_FIELDS}
    record.update(service=name, acquired=now, renewed=now, lease=int(lease))
    return record


def try_acquire(lock_dir, names, holder, lease, break_runs=(), now=None, check_mode=False):
    """One attempt at the locks of ``names``, in sorted order; stops at the first one held by
    another run (hold and wait in one global order cannot deadlock). Returns (acquired, blocked,
    broken): names, {name: record} of the first blocking holder, [{service, holder, reason}]."""
    now = time.time() if now is None else now
    acquired, blocked, broken = [], {}, []
    if not check_mode:
        ensure_dir(lock_dir)
    elif not os.path.isdir(lock_dir):
        return sorted(set(names)), {}, []
    with Mutex(lock_dir) if not check_mode else _Nothing():
        for name in sorted(set(names)):
            path = lock_path(lock_dir, name)
            record = read(path)
            if record is not None and record.get("run") == holder["run"]:
                if not check_mode:
                    record.update(renewed=now, lease=int(lease))
                    write(path, record)
                acquired.append(name)
                continue
            if record is not None:
                reason = gone_reason(record, now, break_runs)
                if reason is None or in_use(path):
                    blocked[name] = record
                    break
                broken.append({"service": name, "holder": record, "reason": reason})
            if not check_mode:
                write(path, new_record(name, holder, lease, now))
            acquired.append(name)
    return acquired, blocked, broken


def acquire(lock_dir, names, holder, lease, wait=0, break_runs=(), check_mode=False):
    """Take the locks of ``names`` for ``holder``, waiting up to ``wait`` seconds for other runs:
    what the module deploy_lock returns, and the probe where it takes the locks in its own call
    (acquired, blocked, broken, lock, waited, now). Raises LockError or OSError."""
    run = holder.get("run")
    if not run:
        raise LockError("holder has no run id")
    started = time.time()
    deadline = started + max(0, wait)
    broken = []
    while True:
        acquired, blocked, broken_now = try_acquire(lock_dir, names, holder, lease, break_runs, check_mode=check_mode)
        broken.extend(broken_now)
        if not blocked or check_mode or time.time() >= deadline:
            break
        time.sleep(0.5)
    return dict(acquired=acquired, blocked=blocked, broken=broken, released=[],
                lock={"run": run, "dir": lock_dir, "lease": lease},
                waited=round(time.time() - started, 1), now=time.time())


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def release(lock_dir, run, names=None):
    """Remove the records this run holds (all of them on the host when ``names`` is None); the
    records of other runs stay. Returns the names released."""
    if not os.path.isdir(lock_dir):
        return []
    released = []
    with Mutex(lock_dir):
        if names is None:
            names = sorted(e[: -len(SUFFIX)] for e in os.listdir(lock_dir) if e.endswith(SUFFIX))
        for name in sorted(set(names)):
            path = lock_path(lock_dir, name)
            record = read(path)
            if record is not None and record.get("run") == run:
                os.unlink(path)
                released.append(name)
    return released


class Held:
    """Work under the locks of ``names`` held by the run ``lock["run"]``: verified at the start
    (LockError when another run holds one, or none), marked in use for the duration and renewed
    every quarter lease from a thread. ``lock`` empty or None: no lock (nothing verified)."""

    def __init__(self, lock, names):
        self.lock = lock or {}
        self.names = sorted(set(names or ()))
        self.fds = []
        self.stop = threading.Event()
        self.thread = None

    def __enter__(self):
        if not self.lock.get("run") or not self.names:
            return self
        lock_dir = self.lock.get("dir") or DEFAULT_DIR
        lease = int(self.lock.get("lease") or 900)
        try:
            with Mutex(lock_dir):
                for name in self.names:
                    path = lock_path(lock_dir, name)
                    record = read(path)
                    if record is None or record.get("run") != self.lock["run"]:
                        raise LockError(
                            "service '%s': the deploy lock on this host is no longer held by this run (%s); "
                            "nothing was changed" % (name, "no lock" if record is None else "now held by " +
                                                     describe(record, time.time())))
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                    self.fds.append(fd)
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    record["renewed"] = time.time()
                    write(path, record)
        except OSError as exc:
            self._close()
            raise LockError("the deploy lock of %s cannot be read in %s: %s; nothing was changed"
                            % (", ".join(self.names), lock_dir, exc)) from None
        except BaseException:
            self._close()
            raise
        self.thread = threading.Thread(target=self._renew_loop, args=(lock_dir, max(1.0, lease / 4.0)), daemon=True)
        self.thread.start()
        return self

    def renew(self, lock_dir=None):
        lock_dir = lock_dir or self.lock.get("dir") or DEFAULT_DIR
        with Mutex(lock_dir):
            for name in self.names:
                path = lock_path(lock_dir, name)
                record = read(path)
                if record is not None and record.get("run") == self.lock["run"]:
                    record["renewed"] = time.time()
                    write(path, record)

    def _renew_loop(self, lock_dir, interval):
        while not self.stop.wait(interval):
            try:
                self.renew(lock_dir)
            except OSError:
                pass  # the next turn tries again; the flock keeps the lock from being broken meanwhile

    def _close(self):
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def __exit__(self, *exc):
        if self.thread is not None:
            self.stop.set()
            self.thread.join()
            try:
                self.renew()
            except OSError:
                pass
        self._close()
        return False


def describe(record, now=None):
    """The holder of a lock in words, for a message: who, where, which process, since when."""
    if not record or not record.get("run"):
        return "an unreadable lock record"
    now = time.time() if now is None else now
    text = "a run of %s by %s on %s (PID %s, started %s, playbook %s)" % (
        record.get("purpose") or "a playbook", record.get("user") or "?", record.get("controller") or "?",
        record.get("pid") or "?", record.get("started") or "?", record.get("playbook") or "?")
    if isinstance(record.get("acquired"), (int, float)):
        text += ", holding it for %ds" % max(0, now - record["acquired"])
    if isinstance(record.get("renewed"), (int, float)) and isinstance(record.get("lease"), (int, float)):
        text += ", lease renewed %ds ago (expires after %ds without renewal)" % (max(0, now - record["renewed"]),
                                                                                 record["lease"])
    return text


# --- the controller side: who this run is, and whether a holder from this controller is gone ---

def _read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def process_start_ticks(pid):
    """A process's start time (clock ticks since boot, field 22 of /proc/<pid>/stat), or None."""
    text = _read("/proc/%d/stat" % int(pid))
    if not text or ")" not in text:
        return None
    fields = text.rsplit(")", 1)[1].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def machine_identity():
    """What makes a PID meaningful: the boot and the PID namespace (empty where /proc is absent)."""
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = ""
    return {"boot_id": _read("/proc/sys/kernel/random/boot_id"), "pid_ns": pid_ns}


def same_machine(identity, controller, here_identity, here_controller):
    """Whether a holder's PID can be checked here: the same host name, boot and PID namespace."""
    identity = identity or {}
    return (controller == here_controller and bool(identity.get("boot_id"))
            and identity.get("boot_id") == here_identity.get("boot_id")
            and identity.get("pid_ns") == here_identity.get("pid_ns"))


def process_alive(pid, start_ticks=None):
    """Whether process ``pid`` exists and, when known, started at ``start_ticks``."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except (TypeError, ValueError):
        return False
    if start_ticks is not None:
        ticks = process_start_ticks(pid)
        if ticks is not None and ticks != start_ticks:
            return False  # the PID was reused
    return True
