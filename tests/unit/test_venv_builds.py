"""Who builds a virtualenv: each service's builds run as a uid of their own, in a transient
systemd unit whose sandbox shows them only their own build directories and whose cgroup dies
with them (plugins/module_utils/venvs.py). What reaches systemd-run, on a scratch directory."""

import grp
import os
import pwd
import subprocess
import sys
import types

import pytest
from ansible_collections.microsvc.deploy.plugins.module_utils import venvs

BASE = venvs.BUILD_UID_BASE


def _no_accounts(monkeypatch, taken_uids=(), taken_gids=()):
    def getpwuid(uid):
        if uid in taken_uids:
            return pwd.struct_passwd(("squatter", "x", uid, uid, "", "/", "/bin/sh"))
        raise KeyError(uid)

    def getgrgid(gid):
        if gid in taken_gids:
            return grp.struct_group(("squatters", "x", gid, []))
        raise KeyError(gid)

    monkeypatch.setattr(venvs.pwd, "getpwuid", getpwuid)
    monkeypatch.setattr(venvs.grp, "getgrgid", getgrgid)


# --- the build uid ------------------------------------------------------------------------------

def test_each_service_uid_gets_its_own_build_uid_in_the_reserved_range(monkeypatch):
    _no_accounts(monkeypatch)
    uids = [1, 2, 999, 1000, 65534, 65535, 2 ** 20, venvs.MAX_SERVICE_UID]
    built = [venvs.build_uid(uid) for uid in uids]
    assert len(set(built)) == len(built)
    for service_uid, uid in zip(uids, built):
        assert uid == BASE + service_uid
        # never a service's uid, never an id tools read as negative, below systemd's foreign range
        assert venvs.MAX_SERVICE_UID < BASE < uid <= 0x7FFDFFFF < 2 ** 31


@pytest.mark.parametrize("service_uid", [0, -1, -BASE, venvs.MAX_SERVICE_UID + 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32,
                                         2 ** 64, True, False, "1000", 1000.0, None])
def test_a_uid_without_a_build_uid_of_its_own_is_refused(monkeypatch, service_uid):
    """root (0), negative ids, ids whose build uid would overflow the range (into systemd's
    foreign range, past 2**31 or 2**32), and what is not an integer at all."""
    _no_accounts(monkeypatch)
    with pytest.raises(venvs.VenvError, match="uid must be"):
        venvs.build_uid(service_uid)


def test_a_build_uid_that_an_account_or_a_group_has_is_refused(monkeypatch):
    """Whoever has that id (an account made by hand, a container's range) would share files with
    the build: refused, naming the owner and the range."""
    _no_accounts(monkeypatch, taken_uids={BASE + 1000})
    with pytest.raises(venvs.VenvError, match=r"taken by the account 'squatter'.*%d-%d" % (BASE + 1, 0x7FFDFFFF)):
        venvs.build_uid(1000)
    assert venvs.build_uid(1001) == BASE + 1001
    _no_accounts(monkeypatch, taken_gids={BASE + 1001})
    with pytest.raises(venvs.VenvError, match="taken by the group 'squatters'"):
        venvs.build_uid(1001)


# --- the command line ---------------------------------------------------------------------------

def _argv(**overrides):
    args = dict(uid=BASE + 1000, argv=["/usr/bin/python3", "-m", "venv", "/opt/www/.microsvc/venvs/k1"],
                cwd="/opt/www/.microsvc/venvs/.build-home-x1", env={"HOME": "/opt/www/.microsvc/venvs/.build-home-x1"},
                hidden="/opt/www", writable=["/opt/www/.microsvc/venvs/k1", "/opt/www/.microsvc/venvs/.build-home-x1"],
                readable=["/opt/www/.microsvc/venvs/wheelhouse-k1/wheelhouse"], timeout=1800, network=False)
    args.update(overrides)
    return venvs.systemd_run_argv(**args)


def _properties(cmd):
    return [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--property"]


def test_a_builds_unit_is_described_in_one_line_of_the_journal():
    cmd = _argv(description="/usr/bin/python3 -m venv /v &&\n/v/bin/python -m pip install -r r")
    assert "--description=/usr/bin/python3 -m venv /v && /v/bin/python -m pip install -r r" in cmd
    assert not any(arg.startswith("--description") for arg in _argv())  # else systemd's: the command line


def test_the_build_step_runs_in_a_waited_for_transient_unit_as_the_build_uid_with_its_output_piped():
    cmd = _argv()
    assert cmd[0] == "systemd-run"
    head = cmd[:cmd.index("--")]
    for flag in ("--wait", "--pipe", "--collect", "--quiet", "--service-type=exec",
                 "--unit=microsvc-venv-build-%d.service" % (BASE + 1000),
                 "--working-directory=/opt/www/.microsvc/venvs/.build-home-x1",
                 "--setenv=HOME=/opt/www/.microsvc/venvs/.build-home-x1"):
        assert flag in head
    # The unit becomes the build uid before it runs anything of the step, and the step's
    # argv follows exactly (never a shell string).
    tail = cmd[cmd.index("--") + 1:]
    assert tail[:tail.index("--")] == ["setpriv", "--reuid=%d" % (BASE + 1000), "--regid=%d" % (BASE + 1000),
                                       "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    assert tail[tail.index("--") + 1:] == ["/usr/bin/python3", "-m", "venv", "/opt/www/.microsvc/venvs/k1"]


def test_nothing_of_the_build_survives_it_and_it_sees_only_its_own_directories():
    props = _properties(_argv())
    for prop in ("KillMode=control-group", "KillSignal=SIGKILL", "RuntimeMaxSec=1800", "NoNewPrivileges=true",
                 "CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_SETPCAP", "ProtectSystem=strict", "ProtectHome=true",
                 "PrivateTmp=true", "PrivateDevices=true", "PrivateIPC=yes", "TemporaryFileSystem=/dev/shm:mode=1777",
                 "ProtectProc=invisible",
                 "TemporaryFileSystem=/opt/www:ro", "BindPaths=/opt/www/.microsvc/venvs/k1",
                 "BindPaths=/opt/www/.microsvc/venvs/.build-home-x1",
                 "BindReadOnlyPaths=/opt/www/.microsvc/venvs/wheelhouse-k1/wheelhouse",
                 "PrivateNetwork=yes", "RestrictAddressFamilies=AF_UNIX"):
        assert prop in props
    # Mounted back read-write: the build's own two directories, nothing else.
    assert sorted(p for p in props if p.startswith(("BindPaths=", "ReadWritePaths="))) == sorted(
        "%s=/opt/www/.microsvc/venvs/%s" % (kind, name)
        for kind in ("BindPaths", "ReadWritePaths") for name in ("k1", ".build-home-x1"))


def test_a_build_from_an_index_has_the_network_and_its_timeout_is_the_units():
    props = _properties(_argv(network=True, readable=[], timeout=60))
    assert "PrivateNetwork=yes" not in props
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" in props
    assert "RuntimeMaxSec=60" in props
    assert not [p for p in props if p.startswith("BindReadOnlyPaths=")]


@pytest.mark.parametrize("field, value", [
    ("hidden", "/opt/my www"),                          # a space splits a property's list
    ("hidden", "/opt/www:rw"),                          # a colon adds mount options
    ("cwd", "relative/dir"),
    ("writable", ["/opt/www/.microsvc/venvs/../../../etc"]),
    ("writable", ["/opt/www/./x"]),
    ("writable", ["/opt/www/k1\n-p User=root"]),
    ("readable", ["-/opt/www/k1"]),                     # systemd's "ignore if missing" prefix
    ("readable", ["/opt/www/k1:/etc"]),                 # a source:destination pair
    ("writable", ["/"]),
    ("writable", ["/opt/www/"]),
])
def test_a_path_that_would_change_the_sandbox_is_refused(field, value):
    with pytest.raises(venvs.VenvError, match="cannot be given to a build's sandbox"):
        _argv(**{field: value})


@pytest.mark.parametrize("env", [{"HOME\nX": "1"}, {"A=B": "1"}, {"lower": "1"}, {"": "1"}, {"HOME": "/x\n/y"}])
def test_an_environment_that_would_change_the_command_line_is_refused(env):
    with pytest.raises(venvs.VenvError, match="environment"):
        _argv(env=env)


@pytest.mark.parametrize("uid", [0, 1000, BASE, BASE + venvs.MAX_SERVICE_UID + 1, 2 ** 32, True, "1879048193"])
def test_only_a_build_uid_may_run_a_build(uid):
    with pytest.raises(venvs.VenvError, match="is not a build uid"):
        _argv(uid=uid)


@pytest.mark.parametrize("timeout", [0, -1, True, 1.5, "60"])
def test_a_timeout_that_is_not_a_positive_number_of_seconds_is_refused(timeout):
    with pytest.raises(venvs.VenvError, match="timeout"):
        _argv(timeout=timeout)


# --- running a step -----------------------------------------------------------------------------

def _unit_args():
    return dict(cwd="/opt/www/.microsvc/venvs/.build-home-x1", env={}, hidden="/opt/www",
                writable=["/opt/www/.microsvc/venvs/k1"])


def test_a_failed_step_reports_pip_s_output(monkeypatch):
    monkeypatch.setattr(venvs.subprocess, "run", lambda cmd, **_kw: types.SimpleNamespace(
        returncode=1, stdout="", stderr="ERROR: No matching distribution found for nosuchpkg\n"))
    with pytest.raises(venvs.VenvError, match="-m pip install failed:\nERROR: No matching distribution"):
        venvs._run_unit(BASE + 5, ["/v/bin/python", "-m", "pip", "install", "--requirement", "r"], 60, **_unit_args())


def test_a_step_that_outlives_its_timeout_is_stopped_and_reported(monkeypatch):
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        if cmd[0] == "systemd-run":
            assert kwargs["timeout"] == 60 + venvs.STOP_GRACE  # the unit's own limit comes first
            raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])
        return types.SimpleNamespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr(venvs.subprocess, "run", run)
    with pytest.raises(venvs.VenvError, match="did not finish within 60s"):
        venvs._run_unit(BASE + 5, ["/v/bin/python", "-m", "pip", "install"], 60, **_unit_args())
    assert calls[-1] == ["systemctl", "stop", "microsvc-venv-build-%d.service" % (BASE + 5)]


def test_a_step_the_unit_stopped_at_its_run_time_limit_is_reported_as_a_timeout(monkeypatch):
    clock = iter([100.0, 161.0])
    monkeypatch.setattr(venvs.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(venvs.subprocess, "run", lambda cmd, **_kw: types.SimpleNamespace(
        returncode=1, stdout="", stderr=""))
    with pytest.raises(venvs.VenvError, match="did not finish within 60s"):
        venvs._run_unit(BASE + 5, ["/v/bin/python", "-m", "pip", "install"], 60, **_unit_args())


def test_a_build_stops_what_its_uid_left_then_runs_both_steps_in_one_unit(tmp_path, monkeypatch):
    """venv then pip, in one unit with the build's directories; the wheelhouse read-only and
    no network; the result sealed root-owned. (The steps are faked: what they would run is
    checked above, and end to end in molecule/isolation/tests/test_builds.py.)"""
    if os.geteuid() != 0:
        pytest.skip("sealing changes owners: run as root (as the tests in CI do)")
    _no_accounts(monkeypatch)
    monkeypatch.setattr(venvs.fsutil, "uid_of", lambda name: {"svc": 1234}[name])
    events = []
    monkeypatch.setattr(venvs, "stop_unit", lambda uid: events.append(("stop", uid)))

    def run_unit(uid, argv, timeout, label=None, description=None, **unit):
        # One unit: the virtualenv's creation, then the install (venvs.then).
        assert argv[:3] == ["/usr/bin/python3", "-c", venvs.THEN], argv
        n = int(argv[3])
        steps = [argv[5:7], argv[5 + n:7 + n]]
        events.append(("run", uid, steps, unit["writable"][0], unit["readable"], unit["network"]))
        final = unit["writable"][0]
        if steps[0] == ["-m", "venv"]:
            for name in ("bin", "lib"):
                os.mkdir(os.path.join(final, name))
                os.chown(os.path.join(final, name), uid, uid)
            with open(os.path.join(final, "pyvenv.cfg"), "w") as handle:
                handle.write("home = /usr/bin\n")
            os.chown(os.path.join(final, "pyvenv.cfg"), uid, uid)
        return types.SimpleNamespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr(venvs, "_run_unit", run_unit)
    root = tmp_path / "www"
    root.mkdir()
    wheelhouse = str(tmp_path / "wh")
    assert venvs.build(str(root), "k1", "/usr/bin/python3", "3.11", "flask==3.0\n", wheelhouse=wheelhouse,
                       service_user="svc")
    final = os.path.join(venvs.cache_dir(str(root)), "k1")
    uid = BASE + 1234
    assert events == [("stop", uid), ("run", uid, [["-m", "venv"], ["-m", "pip"]], final, [wheelhouse], False)]
    for dirpath, dirnames, filenames in os.walk(final):
        for name in dirnames + filenames:
            assert os.lstat(os.path.join(dirpath, name)).st_uid == 0
    # Reused while the requirements do not change: no unit at all.
    events.clear()
    assert not venvs.build(str(root), "k1", "/usr/bin/python3", "3.11", "flask==3.0\n", wheelhouse=wheelhouse,
                           service_user="svc")
    assert events == []


def test_a_build_with_requirements_but_no_service_account_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the cache directory is made root-owned: run as root (as the tests in CI do)")
    with pytest.raises(venvs.VenvError, match="its account is missing"):
        venvs.build(str(tmp_path), "k2", "/usr/bin/python3", "3.11", "flask==3.0\n")


def test_the_legacy_shared_build_account_is_left_alone_unless_the_collection_made_it(monkeypatch):
    calls = []
    monkeypatch.setattr(venvs.subprocess, "run", lambda cmd, **_kw: calls.append(cmd))
    monkeypatch.setattr(venvs.fsutil, "user", lambda name: pwd.struct_passwd(
        (name, "x", 999, 999, "someone else's", "/", "/bin/sh")))
    assert venvs.retire_legacy_build_user() == []
    assert calls == []


# --- the installer: uv when the controller sent it, pip otherwise ----------------------------------

def test_install_argv_is_uvs_with_the_same_sources_and_hash_checks_as_pips():
    locked = "redis==6.4.0 --hash=sha256:" + "0" * 64 + "\n"
    argv = venvs.install_argv("/r/k1", "/h/req.txt", locked, wheelhouse="/w", uv="/t/uv", cache="/c")
    assert argv[:3] == ["/t/uv", "pip", "install"]
    assert argv[argv.index("--python") + 1] == "/r/k1/bin/python"
    assert argv[argv.index("--link-mode") + 1] == "copy"  # never hard links into the cache: the seal refuses them
    assert "--compile-bytecode" in argv and "--no-config" in argv
    assert argv[-4:] == ["--require-hashes", "--no-index", "--find-links", "/w"]
    pip = venvs.install_argv("/r/k1", "/h/req.txt", locked, index_url="https://mirror.example/simple")
    assert pip[:4] == ["/r/k1/bin/python", "-m", "pip", "install"]
    assert pip[-3:] == ["--require-hashes", "--index-url", "https://mirror.example/simple"]
    assert "--require-hashes" not in venvs.install_argv("/r/k1", "/h/r", "redis==6.4.0\n", uv="/t/uv", cache="/c")
    # The operator's pip options are pip's: pip installs then.
    assert venvs.install_argv("/r/k1", "/h/r", "x\n", extra_args=["--no-compile"], uv="/t/uv", cache="/c")[1:3] == \
        ["-m", "pip"]


def _uv_wheel(path, version="0.13.9", body=b"#!uv\n", member=None):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member or "uv-%s.data/scripts/uv" % version, body)
        archive.writestr("uv/__init__.py", "")
    return path


def test_uv_is_taken_out_of_its_wheel_once_root_owned_and_read_only(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the tools directory is made root-owned: run as root (as the tests in CI do)")
    root = tmp_path / "www"
    root.mkdir()
    with open(_uv_wheel(tmp_path / "uv.whl"), "rb") as wheel:
        binary = venvs.ensure_uv(str(root), wheel, "0.13.9")
    assert binary == str(root / ".microsvc" / "tools" / "uv-0.13.9" / "uv")
    st = os.lstat(binary)
    assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o755)
    with open(binary, "rb") as handle:
        assert handle.read() == b"#!uv\n"
    assert sorted(os.listdir(os.path.dirname(binary))) == ["uv"]  # nothing else of the wheel
    # Present: the wheel is not read again.
    assert venvs.ensure_uv(str(root), None, "0.13.9") == binary


@pytest.mark.parametrize("version, member, words", [
    ("0.13.9; rm", None, "not a uv version"),
    ("0.13.9", "uv-0.13.8.data/scripts/uv", "cannot be used"),
])
def test_a_wheel_that_is_not_the_expected_uv_is_refused(tmp_path, version, member, words):
    if os.geteuid() != 0:
        pytest.skip("the tools directory is made root-owned: run as root (as the tests in CI do)")
    with open(_uv_wheel(tmp_path / "uv.whl", member=member), "rb") as wheel, \
            pytest.raises(venvs.VenvError, match=words):
        venvs.ensure_uv(str(tmp_path), wheel, version)


def test_a_symlinked_tools_directory_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the tools directory is made root-owned: run as root (as the tests in CI do)")
    (tmp_path / ".microsvc").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / ".microsvc" / "tools")
    with open(_uv_wheel(tmp_path / "uv.whl"), "rb") as wheel, pytest.raises(venvs.VenvError, match="is a symlink"):
        venvs.ensure_uv(str(tmp_path), wheel, "0.13.9")
    assert os.listdir(tmp_path / "elsewhere") == []


def test_a_build_with_uv_sees_uv_read_only_and_only_its_own_cache(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("sealing changes owners: run as root (as the tests in CI do)")
    _no_accounts(monkeypatch)
    monkeypatch.setattr(venvs.fsutil, "uid_of", lambda name: {"svc": 1234}[name])
    monkeypatch.setattr(venvs, "stop_unit", lambda uid: None)
    runs, descriptions = [], []

    def run_unit(uid, argv, timeout, label=None, description=None, **unit):
        runs.append((argv, unit))
        descriptions.append(description)
        os.mkdir(os.path.join(unit["writable"][0], "bin"))
        return types.SimpleNamespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr(venvs, "_run_unit", run_unit)
    root = tmp_path / "www"
    root.mkdir()
    uv = str(root / ".microsvc" / "tools" / "uv-0.13.9" / "uv")
    assert venvs.build(str(root), "k1", "/usr/bin/python3", "3.11.2", "flask==3.0\n", wheelhouse="/w",
                       service_user="svc", uv=uv) == "uv"
    ((argv, unit),) = runs
    final = os.path.join(venvs.cache_dir(str(root)), "k1")
    venv_argv = [uv, "venv", "--no-config", "--quiet", "--python", "/usr/bin/python3", final]
    assert argv[4:11] == venv_argv and argv == venvs.then(venv_argv, argv[11:], "/usr/bin/python3")
    install = argv[11:]
    # The journal names both steps (the unit's description), not the runner's script.
    assert descriptions == ["%s && %s" % (" ".join(venv_argv), " ".join(install))]
    assert install[:3] == [uv, "pip", "install"]
    cache = os.path.join(venvs.cache_dir(str(root)), ".uv-cache-%d" % (BASE + 1234))
    assert unit["writable"][2:] == [cache] and install[install.index("--cache-dir") + 1] == cache
    assert unit["readable"] == ["/w", os.path.dirname(uv)]
    st = os.lstat(cache)
    assert (st.st_uid, st.st_mode & 0o777) == (BASE + 1234, 0o700)
    assert unit["env"]["UV_PYTHON_DOWNLOADS"] == "never" and unit["network"] is False


def test_a_build_runs_its_two_steps_in_one_unit_and_stops_at_the_first_failure(tmp_path):
    """venvs.then: the virtualenv's creation, then the install, in one process that parses neither
    command: arguments with quotes, spaces, globs, substitutions and systemd's specifiers reach each
    command as given, and the command line holds no "$" or "%" for systemd to expand."""
    out = tmp_path / "out"
    odd = ["a b", "$(touch %s)" % (tmp_path / "pwned"), "it's", "*", "", "${HOME}", "%n"]
    argv = venvs.then(["/bin/sh", "-c", 'printf "%s|" "$@" > "$0"', str(out)] + odd,
                      ["/bin/sh", "-c", 'printf "[%s]" "$@" >> "$0"; exit 3', str(out), "x  y", ";"], sys.executable)
    assert not any(c in argv[2] for c in "$%")
    proc = subprocess.run(argv, check=False)
    assert proc.returncode == 3  # the second command's status
    assert out.read_text() == "a b|$(touch %s)|it's|*||${HOME}|%%n|[x  y][;]" % (tmp_path / "pwned")
    assert not (tmp_path / "pwned").exists()
    failing = venvs.then(["/bin/sh", "-c", "exit 5"], ["/bin/sh", "-c", 'echo ran > "$0"', str(tmp_path / "second")],
                         sys.executable)
    assert subprocess.run(failing, check=False).returncode == 5 and not (tmp_path / "second").exists()
