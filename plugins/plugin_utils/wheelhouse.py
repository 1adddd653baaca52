# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Build (once) a wheelhouse for a host's Python and platform on the controller.

The host then installs with ``pip --no-index --find-links``: hosts without access to a
package index (or, as in the tests, without a working TLS chain to it) get the same
packages the controller resolved. Only wheels are downloaded (``--only-binary=:all:``), so no
package's build code runs on the controller.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

from ansible_collections.microsvc.deploy.plugins.plugin_utils.sources import cache_root


class WheelhouseError(Exception):
    pass


# glibc-based manylinux tags accepted by every supported host (glibc 2.34 and newer).
MANYLINUX_MINORS = range(17, 35)


def platform_tags(arch):
    tags = ["manylinux_2_%d_%s" % (minor, arch) for minor in MANYLINUX_MINORS]
    tags += ["manylinux2014_%s" % arch]
    if arch == "x86_64":
        tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return tags


def pip_download_packed(cache, archive, arcname, commands, describe):
    """Run ``commands(dest)`` (pip download command lines writing into dest) in a scratch
    directory of ``cache`` and pack dest as ``<arcname>/`` into ``archive`` (atomically, once).
    ``describe(cmd, output)`` words the error of a command that fails."""
    if os.path.exists(archive):
        return archive
    os.makedirs(cache, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".partial-", dir=cache)
    try:
        dest = os.path.join(work, arcname)
        for cmd in commands(work, dest):
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise WheelhouseError(describe(cmd, (proc.stderr or proc.stdout)[-3000:]))
        fd, partial = tempfile.mkstemp(prefix=".partial-", dir=cache)
        os.close(fd)
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(dest, arcname=arcname)
        os.replace(partial, archive)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return archive


def build_wheelhouse(requirements, python_version, arch="x86_64", cache_dir=None, index_url=""):
    """The path of a tarball (``wheelhouse/*.whl``) for these requirements, built when missing."""
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)
    parts = str(python_version or "").split(".")
    if len(parts) < 2:
        raise WheelhouseError("python_version %r is not a Python version" % python_version)
    short = "%s%s" % (parts[0], parts[1])
    key = hashlib.sha256(("%s\0%s\0%s" % (short, arch, requirements)).encode("utf-8")).hexdigest()[:16]
    cache = os.path.join(cache_root(cache_dir), "wheelhouse")

    def commands(work, dest):
        req = os.path.join(work, "requirements.txt")
        with open(req, "w", encoding="utf-8") as handle:
            handle.write(requirements)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--requirement", req, "--dest", dest, "--only-binary=:all:",
               "--python-version", "%s.%s" % (parts[0], parts[1]),
               "--implementation", "cp", "--abi", "cp%s" % short, "--abi", "abi3", "--abi", "none"]
        for tag in platform_tags(arch):
            cmd += ["--platform", tag]
        return [cmd + (["--index-url", index_url] if index_url else [])]

    return pip_download_packed(
        cache, os.path.join(cache, "cp%s-%s-%s.tar.gz" % (short, arch, key)), "wheelhouse", commands,
        lambda cmd, out: "pip download for Python %s on %s failed (a requirement without a wheel for that "
                         "platform cannot go through a wheelhouse):\n%s" % (python_version, arch, out))
