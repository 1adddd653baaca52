"""systemd's side of the isolation: a compromised service can neither ask systemd (or D-Bus) for
a process outside its sandbox, nor take more than its own limits.

Every unit the collection runs a service's code in keeps systemd's and D-Bus's control sockets
out of reach (InaccessiblePaths=), and scores an exposure of at most 4.5 in `systemd-analyze
security`. Each service's processes (its uWSGI vassal, moved there at its start by
microsvc-attach, its workers and its schedules) share one slice, microsvc-<service>.slice, whose
memory and task limits the hostile service hits here (group_vars: 256M, 128 tasks) while its
neighbours keep answering every request.

The container has cgroup v1 (a hierarchy per controller): the limits are read from the memory
and pids hierarchies; the unit tests check what is rendered for v2.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from conftest import HOSTILE, NEIGHBOURS, ROUTES, attack
from microsvc_checks import Load, _quote, http

SLICE = "microsvc-%s.slice" % HOSTILE
CONTROL_SOCKETS = ("/run/systemd/private", "/run/dbus/system_bus_socket")
# What the hostile service's slice allows (molecule/isolation/group_vars/all/services.yml).
MEMORY_MAX = 256 * 1024 * 1024
TASKS_MAX = 128


def units_of_the_collection(host):
    """Every service unit the collection installed here that runs code (timers aside)."""
    out = host.check_output("systemctl list-units --all --plain --no-legend --full 'microsvc-*.service' "
                            "'uwsgi-emperor.service' | awk '{print $1}'").split()
    names = sorted(set(out) | {"microsvc-hostile.run-tick.service", "microsvc-hostile.schedule-tick.service",
                               "microsvc-attach@probe.service"})
    return [n for n in names if not n.startswith("microsvc-attach@0-")]


def exposure(host, unit):
    out = host.check_output("systemd-analyze security --no-pager -- %s 2>&1 | tail -1" % _quote(unit))
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert match, "%s: %s" % (unit, out)
    return float(match.group(1))


def worker_pid(host):
    pid = host.check_output("systemctl show -p MainPID --value microsvc-hostile.worker-loop@1.service").strip()
    assert pid.isdigit() and pid != "0", pid
    return int(pid)


SANDBOX_KEYS = re.compile(r"(NoNewPrivileges|CapabilityBoundingSet|Protect\w+|ReadWritePaths|Private\w+|Restrict\w+|"
                          r"LockPersonality|SystemCall\w+|InaccessiblePaths|Slice)=")


def in_worker_unit(host, script, unit="microsvc-hostile.worker-loop@1.service"):
    """``script`` as the service's user in a transient unit with the worker unit's own sandbox
    (every sandbox setting of its file, its slice): what code run by a worker can do. (nsenter
    into the worker itself needs CAP_SYS_PTRACE, which the container does not give.)"""
    props = [line.strip() for line in host.check_output("systemctl cat -- %s" % unit).splitlines()
             if SANDBOX_KEYS.match(line.strip())]
    assert any(p.startswith("InaccessiblePaths=") for p in props), props
    args = " ".join("-p %s" % _quote(p) for p in props)
    return host.run("systemd-run --wait --pipe --quiet -p User=%s %s /bin/sh -c %s" % (HOSTILE, args, _quote(script)))


def cgroup_of(host, pid, controller):
    """The cgroup path of ``pid`` in one hierarchy (``name=systemd``, ``memory``, ``pids``, or ``""``: v2)."""
    for line in host.file("/proc/%d/cgroup" % pid).content_string.splitlines():
        _num, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(","):
            return path
    raise AssertionError("pid %d has no %s cgroup" % (pid, controller))


def slice_dir(host, controller):
    master = master_pid(host)
    path = cgroup_of(host, master, controller)
    assert "/%s/" % SLICE in path, path
    return "/sys/fs/cgroup/%s%s" % (controller, path[:path.index("/%s/" % SLICE) + len(SLICE) + 2])


def master_pid(host):
    out = host.check_output("pgrep -f %s" % _quote(r"^\[%s\] uWSGI master" % HOSTILE)).split()
    assert len(out) == 1, out
    return int(out[0])


def wait_healthy(host, name=HOSTILE, timeout=60):
    deadline = time.time() + timeout
    while True:
        status = http(host, ROUTES[name])["status"]
        if status == 200:
            return
        assert time.time() < deadline, "%s does not answer again (%s)" % (name, status)
        time.sleep(1)


# --- defence in depth: no way to ask systemd for a process outside the sandbox --------------------

def test_the_web_worker_cannot_reach_systemd_or_the_bus(host, outside):
    script = r"""
python3 - <<'EOF'
import socket
for path in ("/run/systemd/private", "/run/dbus/system_bus_socket"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        print("connected", path)
    except OSError as exc:
        print("refused", path, exc.errno)
EOF
busctl --system list >/dev/null 2>&1 && echo "busctl works"
systemctl list-units >/dev/null 2>&1 && echo "systemctl works"
systemd-run --unit=microsvc-escape /bin/true >/dev/null 2>&1 && echo "systemd-run works"
exit 0
"""
    result = attack(host, script)
    assert result["rc"] == 0, result
    out = result["out"]
    assert "refused /run/systemd/private" in out and "refused /run/dbus/system_bus_socket" in out, out
    for leak in ("connected", "busctl works", "systemctl works", "systemd-run works"):
        assert leak not in out, out
    assert not host.run("systemctl cat microsvc-escape.service").succeeded
    outside.assert_unchanged()


CONNECT = r"""
import socket
for path in ("/run/systemd/private", "/run/dbus/system_bus_socket", "/run/systemd/notify"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM if path.endswith("notify") else socket.SOCK_STREAM)
    try:
        s.connect(path)
        print("connected", path)
    except OSError as exc:
        print("refused", path, exc.errno)
"""


def test_root_inside_the_emperor_cannot_reach_systemd_or_the_bus(host, outside):
    """Root with every capability the emperor keeps (a vassal before it drops privileges) sees
    systemd's and D-Bus's sockets replaced by dead ones; systemd's notify socket still works."""
    emperor = host.check_output("systemctl show -p MainPID --value uwsgi-emperor.service").strip()
    result = host.run("nsenter -t %s -m -- python3 -c %s" % (emperor, _quote(CONNECT)))
    assert result.rc == 0, result.stderr
    assert "refused /run/systemd/private" in result.stdout, result.stdout
    assert "refused /run/dbus/system_bus_socket" in result.stdout, result.stdout
    assert "connected /run/systemd/notify" in result.stdout, result.stdout
    outside.assert_unchanged()


def test_the_worker_unit_cannot_reach_systemd_or_the_bus(host, outside):
    script = r"""
python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.connect("/run/systemd/private")' 2>/dev/null \
  && echo "connected"
busctl --system call org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager \
  StartTransientUnit 'ssa(sv)a(sa(sv))' microsvc-escape.service fail 1 ExecStart 'a(sasb)' 1 /bin/sh 2 /bin/sh -c 'id > /tmp/escape' false 0 \
  >/dev/null 2>&1 && echo "unit started"
dbus-send --system --print-reply --dest=org.freedesktop.DBus / org.freedesktop.DBus.ListNames >/dev/null 2>&1 \
  && echo "dbus-send works"
echo done
"""
    result = in_worker_unit(host, script)
    assert result.rc == 0 and "done" in result.stdout, result.stderr
    for leak in ("connected", "unit started", "dbus-send works"):
        assert leak not in result.stdout, result.stdout
    assert not host.run("systemctl cat microsvc-escape.service").succeeded
    outside.assert_unchanged()


def test_a_schedule_run_cannot_reach_systemd_or_the_bus(host, outside):
    """A schedule's run executes the service's command: its unit hides the control sockets too
    (only the tick, which runs no service code, keeps systemd's, to start the run)."""
    show = host.check_output("systemctl show -p InaccessiblePaths microsvc-hostile.run-tick.service")
    for path in ("/run/systemd/private", "/run/dbus"):
        assert path in show, show
    # The run, started as systemd starts it, looks for the sockets itself.
    probe = ("python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.connect(\"/run/systemd/private\")' "
             "2>/dev/null && echo connected; echo probed")
    result = host.run("systemd-run --wait --pipe --quiet -p User=%s -p Slice=%s "
                      "-p InaccessiblePaths=-/run/systemd/private -p InaccessiblePaths=-/run/dbus "
                      "/bin/sh -c %s" % (HOSTILE, SLICE, _quote(probe)))
    assert result.rc == 0 and "probed" in result.stdout and "connected" not in result.stdout, result.stdout
    # And the real run of the schedule still runs (its command logs "tick").
    before = host.run("cat /opt/www/%s/shared/log/schedules/tick/runs.log" % HOSTILE).stdout.count("finished")
    host.check_output("systemctl start microsvc-hostile.schedule-tick.service")
    deadline = time.time() + 60
    while host.run("cat /opt/www/%s/shared/log/schedules/tick/runs.log" % HOSTILE).stdout.count("finished") <= before:
        assert time.time() < deadline, "the schedule's run did not finish"
        time.sleep(1)
    assert "exit=0" in host.check_output("tail -1 /opt/www/%s/shared/log/schedules/tick/runs.log" % HOSTILE)
    outside.assert_unchanged()


def test_only_root_may_ask_to_be_moved_between_slices(host, outside):
    """microsvc-attach's socket is root's: the service cannot use it to move anything."""
    result = attack(host, "python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); "
                          "s.connect(\"/run/microsvc/attach.sock\"); s.sendall(b\"service1\\n\"); "
                          "print(s.recv(100))' 2>&1; echo rc=$?")
    assert "Permission denied" in result["out"] or "rc=1" in result["out"], result
    assert "ok pid" not in result["out"], result
    outside.assert_unchanged()


@pytest.mark.parametrize("limit", [4.5])
def test_every_unit_of_the_collection_is_exposed_at_most_4_5(host, limit):
    scores = {unit: exposure(host, unit) for unit in units_of_the_collection(host)}
    assert "uwsgi-emperor.service" in scores and "microsvc-hostile.worker-loop@1.service" in scores, scores
    assert "microsvc-attach@probe.service" in scores, scores
    high = {unit: score for unit, score in scores.items() if score > limit}
    assert not high, "exposure above %.1f: %s (all: %s)" % (limit, high, scores)


def test_the_emperor_keeps_its_notify_and_journal_sockets(host):
    """The emperor is Type=notify and logs to the journal: hiding systemd's control socket must
    not take these; it is active and its vassals serve."""
    show = host.check_output("systemctl show -p InaccessiblePaths,ActiveState,Type uwsgi-emperor.service")
    assert "ActiveState=active" in show and "Type=notify" in show, show
    assert "/run/systemd/private" in show and "/run/systemd/notify" not in show and "journal" not in show, show
    for name in (HOSTILE, *NEIGHBOURS):
        assert http(host, ROUTES[name])["status"] == 200


# --- resources: one slice per service, with its limits --------------------------------------------

def test_every_process_of_the_service_is_in_its_slice(host):
    master = master_pid(host)
    workers = [int(p) for p in host.check_output("pgrep -P %d" % master).split()]
    assert workers, "the vassal has no workers"
    for pid in [master, *workers, worker_pid(host)]:
        for controller in ("name=systemd", "memory", "pids"):
            assert "/%s/" % SLICE in cgroup_of(host, pid, controller), (pid, controller)
    for unit in ("microsvc-hostile.worker-loop@1.service", "microsvc-hostile.schedule-tick.service",
                 "microsvc-hostile.run-tick.service"):
        assert host.check_output("systemctl show -p Slice --value %s" % unit).strip() == SLICE, unit
    # A neighbour is in its own slice, not in the hostile one.
    for name in NEIGHBOURS:
        pid = int(host.check_output("pgrep -f %s" % _quote(r"^\[%s\] uWSGI master" % name)).split()[0])
        path = cgroup_of(host, pid, "memory")
        assert "/microsvc-%s.slice/" % name in path and SLICE not in path, path


def test_the_limits_of_the_service_are_in_force(host):
    assert int(host.file(slice_dir(host, "memory") + "memory.limit_in_bytes").content_string) == MEMORY_MAX
    assert host.file(slice_dir(host, "pids") + "pids.max").content_string.strip() == str(TASKS_MAX)
    show = host.check_output("systemctl show -p MemoryMax,TasksMax,CPUWeight %s" % SLICE)
    assert "MemoryMax=%d" % MEMORY_MAX in show and "TasksMax=%d" % TASKS_MAX in show, show
    assert "CPUWeight=100" in show, show


def test_the_service_cannot_move_itself_out_of_its_slice(host, outside):
    """cgroup files are read-only in the sandbox and root's outside it."""
    script = r"""
for f in $(grep -E ':(name=systemd|memory|pids):' /proc/self/cgroup | cut -d: -f2,3); do
  ctrl=${f%%:*}; [ "$ctrl" = name=systemd ] && ctrl=systemd
  for target in /sys/fs/cgroup/$ctrl/cgroup.procs /sys/fs/cgroup/$ctrl/system.slice/cgroup.procs; do
    echo $$ > "$target" 2>/dev/null && echo "moved into $target"
  done
done
grep -q microsvc-hostile.slice /proc/self/cgroup && echo still-in-slice
"""
    result = attack(host, script)
    assert "moved" not in result["out"] and "still-in-slice" in result["out"], result
    outside.assert_unchanged()


FORK_LOOP = r"""
import os, signal, sys, time
children, error, started = [], None, time.time()
while time.time() - started < 15 and len(children) < 2000:
    try:
        pid = os.fork()
    except OSError as exc:
        error = exc.errno
        break
    if pid == 0:
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        time.sleep(60)
        os._exit(0)
    children.append(pid)
time.sleep(3)
for pid in children:
    os.kill(pid, signal.SIGKILL)
for pid in children:
    os.waitpid(pid, 0)
print("forked=%d errno=%s" % (len(children), error))
"""


def test_a_fork_loop_stays_inside_the_service(host, outside):
    with Load(host, [ROUTES[n] for n in NEIGHBOURS], concurrency=4, duration=60, name="fork-loop") as load:
        result = attack(host, "python3 -c %s" % _quote(FORK_LOOP), timeout=25)
        time.sleep(2)
    stats = load.result()
    match = re.search(r"forked=(\d+) errno=(\S+)", result["out"])
    assert match, result
    forked, errno = int(match.group(1)), match.group(2)
    assert errno == "11" and forked < TASKS_MAX, result  # EAGAIN: the slice's pids.max, far below the host's
    for name in NEIGHBOURS:
        url = stats["urls"]["http://127.0.0.1" + ROUTES[name]]
        assert url["requests"] > 20 and url["errors"] == 0 and url["non_2xx"] == 0, (name, url)
    wait_healthy(host)
    assert int(host.file(slice_dir(host, "pids") + "pids.current").content_string) < TASKS_MAX // 2
    outside.assert_unchanged()


MEMORY_HOG = r"""
import time
chunks = []
for _ in range(80):  # 800 MiB, far past the service's 256 MiB
    chunks.append(bytearray(10 * 1024 * 1024))
    for i in range(0, len(chunks[-1]), 4096):
        chunks[-1][i] = 1
print("still alive with", len(chunks) * 10, "MiB")
"""


def oom_kills(host):
    """OOM kills in the slice (cgroup v1 counts them in the cgroup of the killed process: the
    slice's own and every one below it, the web scope included)."""
    out = host.check_output("find %s -name memory.oom_control -exec grep -h ^oom_kill' ' {} +"
                            % slice_dir(host, "memory"))
    return sum(int(line.split()[1]) for line in out.splitlines())


def test_a_memory_hog_is_killed_inside_the_service(host, outside):
    kills = oom_kills(host)
    with Load(host, [ROUTES[n] for n in NEIGHBOURS], concurrency=4, duration=45, name="memory-hog") as load:
        result = attack(host, "python3 -c %s; echo rc=$?" % _quote(MEMORY_HOG), timeout=25)
        time.sleep(2)
    stats = load.result()
    assert "still alive" not in result["out"] and "rc=137" in result["out"], result  # SIGKILL by the OOM killer
    assert oom_kills(host) > kills
    for name in NEIGHBOURS:
        url = stats["urls"]["http://127.0.0.1" + ROUTES[name]]
        assert url["requests"] > 20 and url["errors"] == 0 and url["non_2xx"] == 0, (name, url)
    wait_healthy(host)
    outside.assert_unchanged()


def test_a_vassal_restarted_by_the_attacker_is_back_in_its_slice(host, outside):
    """The service may kill its own master; the emperor starts a new one (as root), which moves
    itself into the slice again before its workers fork."""
    before = master_pid(host)
    attack(host, "kill -9 %d; echo sent" % before)
    deadline = time.time() + 60
    while True:
        pids = host.run("pgrep -f %s" % _quote(r"^\[%s\] uWSGI master" % HOSTILE)).stdout.split()
        if pids and int(pids[0]) != before:
            break
        assert time.time() < deadline, "no new master"
        time.sleep(1)
    wait_healthy(host)
    master = master_pid(host)
    for pid in [master, *[int(p) for p in host.check_output("pgrep -P %d" % master).split()]]:
        assert "/%s/" % SLICE in cgroup_of(host, pid, "memory"), pid
    scopes = json.loads(host.check_output("systemctl list-units --all --output=json 'microsvc-hostile.web-*'"))
    assert [s["unit"] for s in scopes if s["active"] == "active"] == ["microsvc-hostile.web-%d.scope" % master]
    outside.assert_unchanged(allow_root=("/usr/bin/python3 /usr/local/sbin/microsvc-attach",))
