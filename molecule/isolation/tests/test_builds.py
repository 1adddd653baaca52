"""Virtualenv builds: a package's build code (an sdist's setup.py, which pip runs on the host)
is as hostile as the service that asks for it. It runs as a uid no other service's build has, in
a sandbox that shows it only its own build directories, and nothing it starts outlives the build.

Two services are added for this module, their virtualenvs built in one batch: ``buildvictim``,
whose package takes its time to build (so that its build is under way while the other's runs),
and ``hostilebuild``, whose package's setup.py, on the host, attacks during the build: it leaves
a process behind that keeps writing, tries to write into the victim's build, the victim's and
a neighbour's directories, and to read their environment files and virtualenvs. It writes what
it managed into its own virtualenv (the only place it may write), where the test reads it; every
check is also made from outside. The packages reach the host the ordinary way: the sources'
requirements files (``--no-binary``, ``--find-links`` of a directory of the source) make the
controller's wheelhouse carry their sdists, which the host builds.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
import uuid

import pytest
import yaml
from conftest import HOSTILE, NEIGHBOURS, ROUTES, Outside
from microsvc_checks import PROJECT, http, run_playbook, write_inventory

VICTIM, ATTACKER = "buildvictim", "hostilebuild"
PYTHON = "/usr/bin/python3"
ROOT = "/opt/www"
CACHE = ROOT + "/.microsvc/venvs"
BUILD_UID_BASE = 0x70000000  # plugins/module_utils/venvs.py
SCENARIO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT = "hostile-build-report.json"
PERSIST = "hostile-build-persist.txt"

APP = '''\
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\\n"]
'''

# The build step of the victim's package: slow on the host (its build is under way while the
# attacker's runs), harmless everywhere. "bdist_wheel": a PEP 517 build; "install": the legacy
# path pip 23.0 (Debian 12) takes for --no-binary.
VICTIM_SETUP = '''\
import os, sys, time
from setuptools import setup
if os.environ.get("HOME", "").startswith("/opt/www/") and {"bdist_wheel", "install"} & set(sys.argv):
    time.sleep(60)
setup(name="victimpkg", version="1.0", py_modules=["victimpkg"])
'''

# The attacker's build step. On the controller (pip download reads its metadata) it does nothing.
ATTACK_SETUP = '''\
import glob, json, os, signal, sys, time
from setuptools import setup

VICTIM_BUILD = %(victim_build)r
TARGETS = %(targets)r
PRIVATE = %(private)r
TOKEN = %(token)r
SECRETS = %(secrets)r


def attempt_write(path):
    try:
        with open(path, "a") as handle:
            handle.write("written by a hostile build\\n")
        return "WROTE"
    except OSError as exc:
        return "refused: %%s" %% exc.strerror


def attempt_read(path):
    try:
        with open(path, "rb") as handle:
            return "READ %%d bytes" %% len(handle.read())
    except OSError as exc:
        return "refused: %%s" %% exc.strerror


def linger(venv):
    """Fork a process that outlives the build: it ignores SIGTERM, keeps a file of its own
    virtualenv open and writes into it, and keeps trying the victim's build."""
    if os.fork():
        return
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open("/dev/null", os.O_RDWR)  # pip waits for the end of the build's output
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    handle = open(os.path.join(venv, %(persist)r), "a")
    for _ in range(1200):
        handle.write("%%f\\n" %% time.time())
        handle.flush()
        attempt_write(os.path.join(VICTIM_BUILD, TOKEN + "-lingering"))
        time.sleep(0.5)
    os._exit(0)


if os.environ.get("HOME", "").startswith("/opt/www/") and {"bdist_wheel", "install"} & set(sys.argv):
    venv = os.path.dirname(os.path.dirname(sys.executable))  # pip runs the backend with the venv's python
    report = {"uid": os.getuid(), "venv": venv}
    # The victim's build is under way (its package sleeps): keep trying its directory for a
    # while, as an attacker would, until a write goes through.
    report["first_attempt"] = time.time()
    report["victim_build_seen"] = False
    while True:
        report["victim_build_seen"] = report["victim_build_seen"] or os.path.exists(VICTIM_BUILD)
        if attempt_write(os.path.join(VICTIM_BUILD, TOKEN + "-early")) == "WROTE":
            report["early_write"] = "WROTE"
            break
        if time.time() > report["first_attempt"] + 30:
            break
        time.sleep(0.5)
    report["last_attempt"] = time.time()
    mine = venv.encode()
    seen = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%%s/cmdline" %% pid, "rb") as handle:
                    cmdline = handle.read()
                if b"/.microsvc/venvs/" in cmdline and mine not in cmdline:
                    seen.append(cmdline.replace(b"\\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    report["others_builds_seen_in_proc"] = seen
    report["writes"] = {path: attempt_write(path) for path in TARGETS}
    report["private_writes"] = {path: attempt_write(path) for path in PRIVATE}
    report["mkdirs"] = {}
    for path in (os.path.join(VICTIM_BUILD, "lib", TOKEN + "-dir"), "/opt/www/service2/" + TOKEN + "-dir"):
        try:
            os.mkdir(path)
            report["mkdirs"][path] = "MADE"
        except OSError as exc:
            report["mkdirs"][path] = "refused: %%s" %% exc.strerror
    reads = {}
    for pattern in SECRETS:
        for path in glob.glob(pattern) or [pattern]:
            reads[path] = attempt_read(path)
    report["reads"] = reads
    with open(os.path.join(venv, %(report)r), "w") as handle:
        json.dump(report, handle, indent=1, sort_keys=True)
    linger(venv)
setup(name="hostilebuildpkg", version="1.0", py_modules=["hostilebuildpkg"])
'''


def _sdist(directory, name, setup_py):
    """A source distribution (name-1.0.tar.gz) whose setup.py is ``setup_py``."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "%s-1.0.tar.gz" % name)
    with tarfile.open(path, "w:gz") as tar:
        for member, text in (("setup.py", setup_py), ("%s.py" % name, "VALUE = 1\n")):
            data = text.encode()
            info = tarfile.TarInfo("%s-1.0/%s" % (name, member))
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def _source(directory, requirements=""):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "app.py"), "w", encoding="utf-8") as handle:
        handle.write(APP)
    with open(os.path.join(directory, "requirements.txt"), "w", encoding="utf-8") as handle:
        handle.write(requirements)
    return directory


def _requirements(package):
    # The package's sdist is a file of the source (its directory sdists/); setuptools and wheel travel
    # in the wheelhouse: the host's isolated build needs them offline.
    return "--no-binary %s\n--find-links sdists\n%s==1.0\nsetuptools\nwheel\n" % (package, package)


def _prepared(requirements, source):
    """The requirements text as the controller prepares it (sources.load_requirements): the source's
    --find-links directory made absolute."""
    return requirements.replace("--find-links sdists", "--find-links %s/sdists" % os.path.realpath(source))


def _venv_key(requirements):
    """As plugins/plugin_utils/sources.py keys a virtualenv (interpreter, requirements)."""
    return hashlib.sha256(("%s\0%s" % (PYTHON, requirements)).encode("utf-8")).hexdigest()[:12]


def _services(victim_src, attacker_src, state="present"):
    with open(os.path.join(SCENARIO, "group_vars", "all", "services.yml"), encoding="utf-8") as handle:
        services = yaml.safe_load(handle)["microsvc_services"]
    for name, src in ((VICTIM, victim_src), (ATTACKER, attacker_src)):
        entry = dict(name=name, source=src, module="app", python=PYTHON, health=dict(path="health"),
                     env={"SECRET_OF_%s" % name.upper(): "only-%s-may-read-this" % name})
        if state == "absent":
            entry.update(state="absent", purge=True)
        services.append(entry)
    return services


def _deploy(host, inventory, services, tmp):
    # The container the tests run against (several checkouts run this scenario side by side).
    write_inventory(inventory, host.backend.get_hostname(), services, extra_vars={
        "microsvc_hostile_dir": os.path.join(SCENARIO, "hostile"),
        "microsvc_source_roots": [os.path.join(PROJECT, "samples"), os.path.join(SCENARIO, "hostile"),
                                  os.path.dirname(tmp)],
    })
    return run_playbook(inventory)


def _build_processes(host, build_uid):
    """uid, pid and command of every process that runs as the build's uid or any build uid."""
    out = host.check_output("ps -eo uid=,pid=,args=")
    return [line for line in out.splitlines()
            if int(line.split()[0]) == build_uid or BUILD_UID_BASE <= int(line.split()[0]) < 2 ** 31]


@pytest.fixture(scope="module")
def hostile_build(host, tmp_path_factory):
    """Deploy the two services plainly (accounts, directories), take the view from outside, then
    deploy them again with the packages above, both built in one batch. Removed at the end."""
    tmp = str(tmp_path_factory.mktemp("builds"))
    victim_dir, attacker_dir = os.path.join(tmp, "victim"), os.path.join(tmp, "attacker")
    victim_req, attacker_req = _requirements("victimpkg"), _requirements("hostilebuildpkg")
    victim_build = "%s/%s" % (CACHE, _venv_key(_prepared(victim_req, victim_dir)))
    token = "evil-" + uuid.uuid4().hex[:12]  # what the attacker names its files: none may appear outside
    _sdist(os.path.join(victim_dir, "sdists"), "victimpkg", VICTIM_SETUP)
    _sdist(os.path.join(attacker_dir, "sdists"), "hostilebuildpkg", ATTACK_SETUP % dict(
        victim_build=victim_build, report=REPORT, persist=PERSIST,
        token=token,
        targets=[victim_build + "/" + token, victim_build + "/pyvenv.cfg", victim_build + "/bin/python3." + token,
                 "%s/%s/venvs/%s" % (ROOT, VICTIM, token), "%s/%s/%s" % (ROOT, VICTIM, token),
                 "%s/service2/%s" % (ROOT, token), "%s/service2/shared/data/%s" % (ROOT, token),
                 "%s/%s" % (CACHE, token), "%s/%s/shared/data/%s" % (ROOT, HOSTILE, token), "/etc/" + token,
                 "/usr/local/" + token],
        private=["/tmp/" + token, "/var/tmp/" + token, "/dev/shm/" + token],
        secrets=["%s/%s/env" % (ROOT, VICTIM), "%s/service2/env" % ROOT, "%s/service1/env" % ROOT,
                 "%s/service1/venvs/*/pyvenv.cfg" % ROOT, "%s/service2/venvs/*/pyvenv.cfg" % ROOT,
                 victim_build + "/pyvenv.cfg", "%s/%s/venvs/*/pyvenv.cfg" % (ROOT, VICTIM)]))
    inventory = os.path.join(tmp, "inventory")
    plain_victim = _source(os.path.join(tmp, "victim-plain"))
    plain_attacker = _source(os.path.join(tmp, "attacker-plain"))
    rc, out = _deploy(host, inventory, _services(plain_victim, plain_attacker), tmp)
    assert rc == 0, out[-4000:]
    before = Outside(host)
    victim_src = _source(victim_dir, victim_req)
    attacker_src = _source(attacker_dir, attacker_req)
    started = time.time()
    rc, out = _deploy(host, inventory, _services(victim_src, attacker_src), tmp)
    result = dict(rc=rc, out=out, started=started, token=token, outside=before, victim_build=victim_build,
                  attacker_key=_venv_key(_prepared(attacker_req, attacker_dir)))
    yield result
    rc, out = _deploy(host, inventory, _services(plain_victim, plain_attacker, state="absent"), tmp)
    assert rc == 0, out[-4000:]


def _report(host, hostile_build):
    path = "%s/%s/venvs/%s/%s" % (ROOT, ATTACKER, hostile_build["attacker_key"], REPORT)
    assert host.file(path).exists, "the hostile build step did not run:\n" + hostile_build["out"][-3000:]
    return json.loads(host.file(path).content_string)


def test_both_builds_succeed_and_the_hostile_one_ran_as_its_own_build_uid(host, hostile_build):
    assert hostile_build["rc"] == 0, hostile_build["out"][-4000:]
    report = _report(host, hostile_build)
    attacker_uid = host.user(ATTACKER).uid
    assert report["uid"] == BUILD_UID_BASE + attacker_uid
    assert report["uid"] != BUILD_UID_BASE + host.user(VICTIM).uid
    for path in ("/api/%s/health" % VICTIM, "/api/%s/health" % ATTACKER, *(ROUTES[n] for n in NEIGHBOURS)):
        assert http(host, path)["status"] == 200, path


def test_a_process_left_by_a_build_step_does_not_survive_the_build(host, hostile_build):
    """(a) The package's setup.py forked a daemon that ignores SIGTERM and keeps writing into a
    file of its virtualenv through a descriptor it keeps open: after the deploy, no process runs
    as any build uid, the file stopped changing, and the virtualenv is root-owned."""
    assert hostile_build["rc"] == 0, hostile_build["out"][-4000:]
    assert _build_processes(host, _report(host, hostile_build)["uid"]) == []
    persist = "%s/%s/venvs/%s/%s" % (ROOT, ATTACKER, hostile_build["attacker_key"], PERSIST)
    assert host.file(persist).exists  # the daemon did start
    first = host.file(persist).sha256sum
    time.sleep(2)
    assert host.file(persist).sha256sum == first, "a process of the build still writes into its virtualenv"
    not_root = host.check_output("find %s/%s %s/%s/venvs ! -uid 0 -printf '%%p %%u\\n'" % (
        CACHE, hostile_build["attacker_key"], ROOT, ATTACKER))
    assert not_root == ""
    # The build's unit is gone (collected), whatever its result.
    units = host.check_output("systemctl list-units --all --plain --no-legend 'microsvc-venv-build-*'")
    assert units.strip() == ""


def test_a_build_step_cannot_write_into_another_build_or_another_service(host, hostile_build):
    """(b) The victim's build was under way while the attacker's ran (its package sleeps); the
    attacker knew its path. Writes into it, into the victim's and a neighbour's directories and
    virtualenvs, into the build cache and into shared directories: all refused, checked from
    outside too."""
    assert hostile_build["rc"] == 0, hostile_build["out"][-4000:]
    report = _report(host, hostile_build)
    assert report["writes"] and report["mkdirs"]
    wrote = {path: what for path, what in {**report["writes"], **report["mkdirs"]}.items()
             if not what.startswith("refused")}
    assert wrote == {} and "early_write" not in report, report
    # Its own /tmp, /var/tmp and /dev/shm took the writes, and went with the build (below).
    assert set(report["private_writes"].values()) == {"WROTE"}
    # The sandbox hides the other build altogether, and the other builds' processes.
    assert report["victim_build_seen"] is False, report
    assert report["others_builds_seen_in_proc"] == [], report
    found = host.check_output("find %s /opt/www /tmp /var/tmp /dev/shm /etc /usr/local -xdev -name '*%s*' -print "
                              "2>/dev/null || true" % (CACHE, hostile_build["token"]))
    assert found.strip() == ""
    _assert_victim_built_meanwhile(host, hostile_build, report)
    hostile_build["outside"].assert_unchanged()


def test_a_build_step_cannot_read_another_service_s_secrets_or_virtualenv(host, hostile_build):
    """(c) The victim's and the neighbours' environment files, their virtualenvs (world-readable
    on the host) and the victim's build under way: none can be read from a build step."""
    assert hostile_build["rc"] == 0, hostile_build["out"][-4000:]
    report = _report(host, hostile_build)
    assert len(report["reads"]) >= 6
    read = {path: what for path, what in report["reads"].items() if not what.startswith("refused")}
    assert read == {}, report
    # From outside: the files exist (the refusals are not for want of a file), their owners and
    # modes are the deploy's, and the victim's build was under way when the attacker tried.
    for name in (VICTIM, "service1", "service2"):
        env = host.file("%s/%s/env" % (ROOT, name))
        assert env.exists and env.user == "root" and env.group == name and env.mode == 0o640
    _assert_victim_built_meanwhile(host, hostile_build, report)
    assert host.check_output("find %s/%s/venvs ! -uid 0" % (ROOT, VICTIM)) == ""


def _pip_unit_runs(host, uid, since):
    """(start, end) of each ``pip install`` run of a build uid's unit, from systemd's journal."""
    out = host.check_output("journalctl -o short-unix --no-pager --since @%d -u microsvc-venv-build-%d.service"
                            % (int(since), uid))
    runs, start = [], None
    for line in out.splitlines():
        stamp = line.split(None, 1)[0]
        if "Started microsvc-venv-build-" in line and " -m pip install " in line:
            start = float(stamp)
        elif start is not None and ("Deactivated successfully" in line or "Failed with result" in line):
            runs.append((start, float(stamp)))
            start = None
    return runs


def _assert_victim_built_meanwhile(host, hostile_build, report):
    runs = _pip_unit_runs(host, BUILD_UID_BASE + host.user(VICTIM).uid, hostile_build["started"])
    assert any(start < report["last_attempt"] and report["first_attempt"] < end for start, end in runs), (
        "the victim's build was not under way during the attack (%r, %r-%r): the refusals prove nothing"
        % (runs, report["first_attempt"], report["last_attempt"]))
