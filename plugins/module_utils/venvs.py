# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Virtualenvs on a host: built once per (interpreter, requirements), copied cheaply per service.

- A virtualenv is built once per key in ``<root>/.microsvc/venvs/<key>`` (the key hashes the
  interpreter and the requirements). Without requirements it is created ``--without-pip``.
- Requirements are installed by a build identity of their own: ``pip install`` may run a
  package's build code (an sdist's setup.py), which must never run as root, never as a service,
  and never as anything another build shares. Both steps (``python -m venv`` or ``uv venv``, then
  the install) run in one transient systemd service unit (``systemd-run --wait --pipe``) as the uid
  ``BUILD_UID_BASE + <the service's uid>``, an id no account has: the unit's cgroup is killed
  when pip exits (nothing the build started survives it), and its sandbox shows it only its own
  build directory, its home and (read-only) its wheelhouse; the services' root is an empty
  read-only tmpfs to it. The tree is then sealed: owned by root, no group/other write, no
  special bits, no hard links, devices or fifos, and no symlink leaving it (but the
  interpreter's own).
- The installer is uv (``uv pip install --python <venv>``) for a wheelhouse of wheels only (no build
  code runs), when the controller sent uv's wheel: root
  takes the one ``uv`` binary out of it into ``<root>/.microsvc/tools/uv-<version>/`` (read-only to
  the builds); each build uid keeps its own uv cache (``.uv-cache-<uid>``, written only by that
  service's builds), so a rebuild of the same service reads its wheels unpacked already. pip is the
  installer wherever a package may be built from source on the host (index mode, a wheelhouse with
  sdists: pip's sandboxed build is the one molecule/isolation proves), where uv is not there (a
  machine uv has no wheel for) or the operator gave pip options (``uwsgi_vassal_pip_extra_args``).
- Each service gets its own directory ``<service>/venvs/<key>``: hard links to the sealed files
  (root-owned and read-only to every service, so sharing them is safe; a plain copy where the
  file systems differ), with the scripts that name the virtualenv's path rewritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import time

from ansible_collections.microsvc.deploy.plugins.module_utils import fsutil, safefs, units
from ansible_collections.microsvc.deploy.plugins.module_utils.atomic import write_atomic
from ansible_collections.microsvc.deploy.plugins.module_utils.paths import VENV_MARKER as MARKER

# The build uid of a service is BUILD_UID_BASE + its uid: in 0x70000000-0x7FFDFFFF, a range
# systemd leaves unused (below it, containers' ranges; at 0x7FFE0000, its "foreign" range; from
# 0x80000000, ids that tools read as negative). No account may have one: build_uid refuses.
BUILD_UID_BASE = 0x70000000
MAX_SERVICE_UID = 0x7FFDFFFF - BUILD_UID_BASE
# The account older versions ran every build as (shared by all builds: retired).
LEGACY_BUILD_USER = "microsvc-build"
LEGACY_BUILD_COMMENT = "microsvc virtualenv builds"
# What a path must look like to go into a unit property (space-separated lists, colon pairs).
UNIT_PATH = re.compile(r"/[A-Za-z0-9._+@-]+(?:/[A-Za-z0-9._+@-]+)*")
# Grace between the unit's own run time limit and the caller's last resort.
STOP_GRACE = 30


class VenvError(Exception):
    pass


UV_MAX_BYTES = 200 * 1024 * 1024


def tools_dir(microsvc_root):
    return os.path.join(microsvc_root, ".microsvc", "tools")


def _root_only(path, kind):
    """Whether ``path`` is (not a link to) a ``kind`` (stat.S_ISDIR or S_ISREG) that root owns and
    no one else may write."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return kind(st.st_mode) and safefs.root_alone(st)


def installed_uv(microsvc_root, version):
    """The path of the uv binary of ``version`` where ensure_uv put it, or None when it is not there,
    or not root's alone (every directory on the way from the tools' parent included: a link or a
    directory someone else may write does not count). Raises VenvError for a malformed version."""
    if not re.fullmatch(r"[0-9]+(?:\.[0-9]+){1,3}", version or ""):
        raise VenvError("%r is not a uv version" % (version,))
    tools = tools_dir(microsvc_root)
    dest = os.path.join(tools, "uv-" + version)
    binary = os.path.join(dest, "uv")
    if all(_root_only(d, stat.S_ISDIR) for d in (os.path.dirname(tools), tools, dest)) \
            and _root_only(binary, stat.S_ISREG):
        return binary
    return None


def ensure_uv(microsvc_root, wheel, version):
    """The path of the uv binary of ``version``, taken (once) out of its wheel (a file object):
    only the member ``uv-<version>.data/scripts/uv``, written by root into a root-owned directory,
    0755. Returns the path."""
    binary = installed_uv(microsvc_root, version)
    if binary:
        return binary
    tools = tools_dir(microsvc_root)
    dest = os.path.join(tools, "uv-" + version)
    binary = os.path.join(dest, "uv")
    for directory in (os.path.dirname(tools), tools, dest):
        if os.path.islink(directory):
            raise VenvError("%s is a symlink: uv is not installed through it" % directory)
        os.makedirs(directory, 0o755, exist_ok=True)
        os.chown(directory, 0, 0)
    os.chmod(tools, 0o755)
    os.chmod(dest, 0o755)
    member = "uv-%s.data/scripts/uv" % version
    import zipfile  # only here: most deploys never unpack a tool
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(member)
            if info.file_size > UV_MAX_BYTES:
                raise VenvError("the uv wheel's %s is larger than %d bytes" % (member, UV_MAX_BYTES))
            with archive.open(info) as handle:
                data = handle.read(UV_MAX_BYTES + 1)
    except (KeyError, zipfile.BadZipFile, OSError) as exc:
        raise VenvError("the uv wheel cannot be used (%s): %s" % (member, exc)) from None
    write_atomic(binary, data, 0o755)
    os.chown(binary, 0, 0)
    return binary


def uv_cache(microsvc_root, uid):
    """The uv cache of one build uid: made by root in the root-owned cache directory, owned by the
    uid, 0700 (no other build sees it)."""
    path = os.path.join(cache_dir(microsvc_root), ".uv-cache-%d" % uid)
    st = None
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(path)
    if st is not None and not (stat.S_ISDIR(st.st_mode) and st.st_uid == uid):
        shutil.rmtree(path) if stat.S_ISDIR(st.st_mode) else os.unlink(path)
        st = None
    if st is None:
        os.mkdir(path, 0o700)
        os.chown(path, uid, uid)
    os.chmod(path, 0o700)
    return path


def wheels_only(wheelhouse):
    """Whether a wheelhouse (the extracted bundle member: ``<dir>/wheelhouse/*``) holds wheels only:
    nothing of it runs build code. uv installs those; a source distribution is built by pip, in the
    build sandbox, as the isolation scenario proves it."""
    files = os.listdir(os.path.join(wheelhouse, "wheelhouse")) if os.path.isdir(os.path.join(wheelhouse, "wheelhouse")) else []
    return bool(files) and all(name.endswith(".whl") for name in files)


def hash_locked(requirements):
    """Whether a requirements file pins hashes (``--hash=sha256:...``): its installs then require them."""
    return bool(re.search(r"(?m)(?:^|\s)--hash[= ]", requirements or ""))


def cache_dir(microsvc_root):
    return os.path.join(microsvc_root, ".microsvc", "venvs")


def present(path, python_version):
    marker = fsutil.read_json(os.path.join(path, MARKER))
    return bool(marker) and marker.get("python_version") == python_version


@contextlib.contextmanager
def _lock(path):
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_uid(service_uid):
    """The uid (and gid) that builds the virtualenvs of the service whose uid is ``service_uid``:
    one per service (a service's builds never run two at once: its deploy lock), shared with no
    account, group or other service."""
    if isinstance(service_uid, bool) or not isinstance(service_uid, int):
        raise VenvError("a service's uid must be an integer, not %r" % (service_uid,))
    if not 1 <= service_uid <= MAX_SERVICE_UID:
        raise VenvError("a service's uid must be between 1 and %d to get a build uid of its own, not %d"
                        % (MAX_SERVICE_UID, service_uid))
    uid = BUILD_UID_BASE + service_uid
    for kind, lookup in (("account", pwd.getpwuid), ("group", grp.getgrgid)):
        try:
            entry = lookup(uid)
        except KeyError:
            continue
        raise VenvError("the build uid %d of the service with uid %d is taken by the %s %r; virtualenv builds "
                        "use %d-%d, which no account or group may use"
                        % (uid, service_uid, kind, entry[0], BUILD_UID_BASE + 1, BUILD_UID_BASE + MAX_SERVICE_UID))
    return uid


def unit_name(uid):
    return "microsvc-venv-build-%d.service" % uid


def _unit_path(path):
    if not UNIT_PATH.fullmatch(path) or "/../" in path + "/" or "/./" in path + "/":
        raise VenvError("%r cannot be given to a build's sandbox (a normalised absolute path of letters, "
                        "digits and ._+@- only)" % path)
    return path


def systemd_run_argv(uid, argv, cwd, env, hidden, writable, readable=(), timeout=1800, network=True,
                     description=None):
    """The command line that runs ``argv`` as ``uid`` in a transient, sandboxed service unit and
    waits for it: its output comes back on our pipes, its exit status is systemd-run's, and when
    its main process exits (or ``timeout`` passes) every process of the unit is killed. The unit's
    description (in the journal) is ``description``, else the command line.

    ``hidden`` (the services' root) is replaced by an empty read-only tmpfs in which only
    ``writable`` and ``readable`` (paths below it) are mounted back, at the same paths."""
    if isinstance(uid, bool) or not isinstance(uid, int) or not BUILD_UID_BASE < uid <= BUILD_UID_BASE + MAX_SERVICE_UID:
        raise VenvError("%r is not a build uid" % (uid,))
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
        raise VenvError("a build's timeout must be a positive number of seconds, not %r" % (timeout,))
    properties = [
        # When the step's main process exits (or its time is up), whatever else runs in the unit
        # is killed at once: SIGKILL, which no process can ignore (one that ignored SIGTERM would
        # fail a build that succeeded, after a wait).
        "KillMode=control-group", "KillSignal=SIGKILL", "RuntimeMaxSec=%d" % timeout,
        # The unit starts as root only to become the build uid (setpriv, below): no capability
        # but those to switch and to empty the bounding set (CAP_SETPCAP: util-linux 2.41's
        # setpriv refuses --bounding-set without it), none at all after the switch, and no way
        # to gain one back.
        "CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_SETPCAP", "UMask=0022", "LimitCORE=0",
        # The collection's sandbox, as every unit it writes has it; then the build's own.
        *units.SANDBOX,
        "PrivateIPC=yes", "TemporaryFileSystem=/dev/shm:mode=1777", "ProtectProc=invisible",
        "TemporaryFileSystem=%s:ro" % _unit_path(hidden),
    ]
    properties += ["BindPaths=%s" % _unit_path(path) for path in writable]
    properties += ["BindReadOnlyPaths=%s" % _unit_path(path) for path in readable]
    properties += ["ReadWritePaths=%s" % path for path in writable]
    if network:
        properties.append("RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6")
    else:
        properties += ["PrivateNetwork=yes", "RestrictAddressFamilies=AF_UNIX"]
    cmd = ["systemd-run", "--quiet", "--wait", "--pipe", "--collect", "--service-type=exec",
           "--unit=%s" % unit_name(uid), "--working-directory=%s" % _unit_path(cwd)]
    if description:
        cmd.append("--description=%s" % " ".join(description.split()))
    for name in sorted(env):
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name) or "\n" in env[name]:
            raise VenvError("%r cannot be given to a build's environment" % name)
        cmd.append("--setenv=%s=%s" % (name, env[name]))
    for prop in properties:
        cmd += ["--property", prop]
    # systemd (252) refuses User= with a uid no account has: setpriv switches to it instead,
    # inside the unit (its cgroup and sandbox are the unit's all the same).
    cmd += ["--", "setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", "--"]
    return cmd + list(argv)


def stop_unit(uid):
    """Stop what is left of a build uid's unit (a deploy killed while it built): the unit and
    every process in it. Returns True when one was loaded."""
    proc = subprocess.run(["systemctl", "stop", unit_name(uid)], capture_output=True, text=True, check=False)
    return proc.returncode == 0


# Runs the command of sys.argv[1] arguments, then, when it succeeded, the rest in its place. In
# Python, not a shell: systemd expands "$" and "%" in a unit's command line, and this holds neither.
THEN = """import os, subprocess, sys
n = int(sys.argv[1])
status = subprocess.call(sys.argv[2:2 + n])
if status:
    sys.exit(status if status > 0 else 128 - status)
os.execv(sys.argv[2 + n], sys.argv[2 + n:])
"""


def then(first, second, python="/usr/bin/python3"):
    """One command line that runs ``first`` and, when it succeeded, ``second`` (whose status it
    returns), with ``python``: each argument passed as it is, never parsed by a shell."""
    return [python, "-c", THEN, str(len(first))] + list(first) + list(second)


def _run_unit(uid, argv, timeout, label=None, description=None, **unit):
    """Run a build as ``uid`` in its transient unit (``description`` in the journal); errors as
    ``_run``'s, naming ``label`` (the command's first words by default)."""
    label = label or " ".join(argv[:4])
    started = time.monotonic()
    cmd = systemd_run_argv(uid, argv, timeout=timeout, description=description, **unit)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout + STOP_GRACE)
    except subprocess.TimeoutExpired:
        stop_unit(uid)
        raise VenvError("%s did not finish within %ds" % (label, timeout)) from None
    if proc.returncode != 0:
        if time.monotonic() - started >= timeout:
            raise VenvError("%s did not finish within %ds" % (label, timeout))
        raise VenvError("%s failed:\n%s" % (label, (proc.stderr or proc.stdout)[-3000:]))
    return proc


def retire_legacy_build_user():
    """Older versions ran every build as one account (``microsvc-build``): whatever such a build
    left running is killed and the account removed (only one the collection created, by its
    comment). Returns the names of what was done, for the report."""
    entry = fsutil.user(LEGACY_BUILD_USER)
    if entry is None or entry.pw_gecos != LEGACY_BUILD_COMMENT:
        return []
    done = []
    for _attempt in range(20):  # again while they fork
        killed = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                if os.stat("/proc/" + pid).st_uid == entry.pw_uid:
                    os.kill(int(pid), 9)
                    killed += 1
            except (FileNotFoundError, ProcessLookupError):
                continue
        if not killed:
            break
        done.append("killed %d processes of %s" % (killed, LEGACY_BUILD_USER))
        time.sleep(0.05)
    proc = subprocess.run(["userdel", LEGACY_BUILD_USER], capture_output=True, text=True, check=False)
    if proc.returncode != 0 and fsutil.user(LEGACY_BUILD_USER) is not None:
        raise VenvError("userdel %s failed: %s" % (LEGACY_BUILD_USER, proc.stderr.strip()))
    done.append("removed the account %s" % LEGACY_BUILD_USER)
    return done


def _run(argv, timeout, **kwargs):
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        raise VenvError("%s did not finish within %ds" % (" ".join(argv[:4]), timeout)) from None
    if proc.returncode != 0:
        raise VenvError("%s failed:\n%s" % (" ".join(argv[:4]), (proc.stderr or proc.stdout)[-3000:]))
    return proc


def seal(path, python):
    """Root owns everything; nobody else may write; no special bits; refuse what a package
    build must never leave behind."""
    real_root = os.path.realpath(path)
    allowed_links = {os.path.realpath(python)}
    problems = []
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                target = os.path.realpath(full)
                if not (target == real_root or target.startswith(real_root + os.sep)) and target not in allowed_links:
                    problems.append("%s is a symlink to %s, outside the virtualenv" % (full, target))
                    continue
                os.lchown(full, 0, 0)
            elif stat.S_ISDIR(st.st_mode):
                os.chown(full, 0, 0)
                os.chmod(full, 0o755)
            elif stat.S_ISREG(st.st_mode):
                if st.st_nlink > 1:
                    problems.append("%s is a hard link" % full)
                    continue
                os.chown(full, 0, 0)
                os.chmod(full, (st.st_mode & 0o755) | 0o644)
            else:
                problems.append("%s is not a file, directory or symlink" % full)
    os.chown(path, 0, 0)
    os.chmod(path, 0o755)
    if problems:
        raise VenvError("the built virtualenv was refused: " + "; ".join(problems[:10]))


def install_argv(final, req, requirements, wheelhouse=None, index_url="", extra_args=(), uv=None, cache=None):
    """The command line that installs ``req`` into the virtualenv ``final``: uv's when ``uv`` is
    given and there are no pip options, else pip's. Same sources and hash checks either way."""
    if uv and not extra_args:
        argv = [uv, "pip", "install", "--no-config", "--python", os.path.join(final, "bin", "python"),
                "--link-mode", "copy", "--compile-bytecode", "--cache-dir", cache, "--requirement", req]
    else:
        argv = [os.path.join(final, "bin", "python"), "-m", "pip", "install", "--requirement", req]
    if hash_locked(requirements):
        # Every file, dependencies included, must match a hash of the file (pip turns this on by
        # itself at the first hash; said here so that it never depends on that).
        argv.append("--require-hashes")
    if wheelhouse:
        argv += ["--no-index", "--find-links", wheelhouse]
    elif index_url:
        argv += ["--index-url", index_url]
    return argv + list(extra_args)


def build(microsvc_root, key, python, python_version, requirements, wheelhouse=None, index_url="",
          extra_args=(), timeout=1800, service_user=None, uv=None):
    """Build the cached virtualenv of ``key`` unless it is complete. Returns True when built.
    With requirements, ``service_user`` (the account of the service it is built for) names the
    build uid that runs the build's steps; ``uv`` (the binary's path, from ensure_uv) installs
    them, else pip. Returns the installer's name ("uv", "pip") when built, else False."""
    cache = cache_dir(microsvc_root)
    # Traversable, not listable (a build sees none of it anyway: its sandbox hides the root).
    os.makedirs(cache, mode=0o711, exist_ok=True)
    for directory in (os.path.dirname(cache), cache):
        os.chown(directory, 0, 0)
        os.chmod(directory, 0o711)
    final = os.path.join(cache, key)
    with _lock(final + ".lock"):
        if present(final, python_version):
            return False
        if os.path.lexists(final):
            shutil.rmtree(final)
        needs_pip = bool(requirements.strip())
        if needs_pip and not service_user:
            raise VenvError("a virtualenv with requirements is built for a service: its account is missing")
        uid = build_uid(fsutil.uid_of(service_user)) if needs_pip else 0
        if needs_pip:
            # Nothing of this uid may run while its directories are made: a unit a killed deploy
            # left behind would otherwise write into them.
            stop_unit(uid)
        os.mkdir(final, 0o755)
        os.chown(final, uid, uid)
        home = tempfile.mkdtemp(prefix=".build-home-", dir=cache)
        os.chown(home, uid, uid)
        try:
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8",
                   "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
            use_uv = bool(needs_pip and uv and not extra_args)
            installer = "uv" if use_uv else "pip" if needs_pip else "venv"
            # uv makes the virtualenv it installs into (without pip of its own: a Python start fewer).
            if use_uv:
                argv = [uv, "venv", "--no-config", "--quiet", "--python", python, final]
            else:
                argv = [python, "-m", "venv"] + ([] if needs_pip else ["--without-pip"]) + [final]
            if not needs_pip:
                # No package code runs: the standard library's venv, as root.
                _run(argv, timeout, env=env)
            else:
                cache = uv_cache(microsvc_root, uid) if use_uv else None
                readable = ([wheelhouse] if wheelhouse else []) + ([os.path.dirname(uv)] if use_uv else [])
                unit = dict(cwd=home, env=dict(env, UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1") if use_uv else env,
                            hidden=os.path.realpath(microsvc_root), writable=[final, home] + ([cache] if cache else []),
                            readable=readable, network=not wheelhouse)
                req = os.path.join(home, "requirements.txt")
                write_atomic(req, requirements, 0o644)
                install = install_argv(final, req, requirements, wheelhouse, index_url, extra_args,
                                       uv=uv if use_uv else None, cache=cache)
                # One sandboxed unit makes the virtualenv, then installs into it.
                _run_unit(uid, then(argv, install, python), timeout, label=" ".join(install[:4]),
                          description="%s && %s" % (" ".join(argv), " ".join(install)), **unit)
            seal(final, python)
            write_atomic(os.path.join(final, MARKER),
                         json.dumps({"python_version": python_version, "key": key}, indent=2) + "\n")
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(home, ignore_errors=True)
    return installer


def _head(path):
    with open(path, "rb") as handle:
        return handle.read(2)


def _rewrite(data, old, new):
    return data.replace(old.encode(), new.encode())


def install(microsvc_root, key, dest):
    """Give a service its own copy of the cached virtualenv at ``dest``. Returns True when made."""
    source = os.path.join(cache_dir(microsvc_root), key)
    marker = fsutil.read_json(os.path.join(source, MARKER))
    if not marker:
        raise VenvError("the virtualenv %s was not built" % key)
    if fsutil.read_json(os.path.join(dest, MARKER)) == marker:
        return False
    if os.path.lexists(dest):
        shutil.rmtree(dest)
    try:
        for dirpath, dirnames, filenames in os.walk(source):
            rel = os.path.relpath(dirpath, source)
            target_dir = dest if rel == "." else os.path.join(dest, rel)
            os.mkdir(target_dir, 0o755)
            for name in sorted(dirnames) + sorted(filenames):
                src = os.path.join(dirpath, name)
                dst = os.path.join(target_dir, name)
                if os.path.islink(src):
                    os.symlink(os.readlink(src), dst)
                    if name in dirnames:
                        dirnames.remove(name)
                    continue
                if name in dirnames or (rel == "." and name == MARKER):
                    continue
                if (rel == "bin" and (_head(src) == b"#!" or name.startswith("activate"))) or (rel == "." and name == "pyvenv.cfg"):
                    with open(src, "rb") as handle:
                        data = _rewrite(handle.read(), source, dest)
                    write_atomic(dst, data, os.stat(src).st_mode & 0o755)
                    continue
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)
        write_atomic(os.path.join(dest, MARKER), json.dumps(marker, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return True
