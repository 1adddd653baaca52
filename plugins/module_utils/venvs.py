# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Virtualenvs on a host: built once per (interpreter, requirements), copied cheaply per service.

- A virtualenv is built once per key in ``<root>/.microsvc/venvs/<key>`` (the key hashes the
  interpreter and the requirements). Without requirements it is created ``--without-pip``.
- Requirements are installed by ``microsvc-build``, an unprivileged system user no service runs
  as: ``pip install`` may run a package's build code, which must never run as root and never as a
  service that could then tamper with another service's packages. The tree is then sealed:
  owned by root, no group/other write, no special bits, no hard links, devices or fifos, and no
  symlink leaving it (but the interpreter's own).
- Each service gets its own directory ``<service>/venvs/<key>``: hard links to the sealed files
  (root-owned and read-only to every service, so sharing them is safe; a plain copy where the
  file systems differ), with the scripts that name the virtualenv's path rewritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import subprocess
import tempfile

from ansible_collections.microsvc.deploy.plugins.module_utils import fsutil
from ansible_collections.microsvc.deploy.plugins.module_utils.atomic import write_atomic
from ansible_collections.microsvc.deploy.plugins.module_utils.paths import VENV_MARKER as MARKER

BUILD_USER = "microsvc-build"


class VenvError(Exception):
    pass


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


def ensure_build_user():
    """The unprivileged user that runs pip (created once, no shell, no home)."""
    if fsutil.user(BUILD_USER) is None:
        proc = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                               "--shell", "/usr/sbin/nologin", "--comment", "microsvc virtualenv builds", BUILD_USER],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0 and fsutil.user(BUILD_USER) is None:
            raise VenvError("useradd %s failed: %s" % (BUILD_USER, proc.stderr.strip()))
    entry = fsutil.user(BUILD_USER)
    return entry.pw_uid, entry.pw_gid


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


def build(microsvc_root, key, python, python_version, requirements, wheelhouse=None, index_url="",
          extra_args=(), timeout=1800):
    """Build the cached virtualenv of ``key`` unless it is complete. Returns True when built."""
    cache = cache_dir(microsvc_root)
    # Traversable (the build user reaches its own directory), not listable.
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
        uid, gid = ensure_build_user() if needs_pip else (0, 0)
        os.mkdir(final, 0o755)
        os.chown(final, uid, gid)
        home = tempfile.mkdtemp(prefix=".build-home-", dir=cache)
        os.chown(home, uid, gid)
        try:
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8",
                   "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
            as_builder = dict(user=uid, group=gid, extra_groups=[], env=env, cwd=home) if needs_pip else dict(env=env)
            _run([python, "-m", "venv"] + ([] if needs_pip else ["--without-pip"]) + [final], timeout, **as_builder)
            if needs_pip:
                req = os.path.join(home, "requirements.txt")
                write_atomic(req, requirements, 0o644)
                argv = [os.path.join(final, "bin", "python"), "-m", "pip", "install", "--requirement", req]
                if wheelhouse:
                    argv += ["--no-index", "--find-links", wheelhouse]
                elif index_url:
                    argv += ["--index-url", index_url]
                _run(argv + list(extra_args), timeout, **as_builder)
            seal(final, python)
            write_atomic(os.path.join(final, MARKER),
                         json.dumps({"python_version": python_version, "key": key}, indent=2) + "\n")
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(home, ignore_errors=True)
    return True


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
                with open(src, "rb") as handle:
                    head = handle.read(2)
                if (rel == "bin" and (head == b"#!" or name.startswith("activate"))) or (rel == "." and name == "pyvenv.cfg"):
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
