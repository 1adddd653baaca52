# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Build (once) a wheelhouse for a host's Python and platform on the controller.

The host then installs with ``pip --no-index --find-links``: hosts without access to a
package index (or, as in the tests, without a working TLS chain to it) get the same
packages the controller resolved. Only wheels are downloaded (``--only-binary=:all:``), so no
package's build code runs on the controller.

Resolution is uv's (``uv pip compile --python-version X.Y.Z --python-platform ...``): it takes the
host's whole target (full version, machine, glibc) and evaluates every environment marker for it,
where ``pip download --python-version`` evaluates them for the controller's own interpreter (a
dependency only the host needs, such as redis's ``async-timeout; python_full_version < "3.11.3"``,
would never be fetched). pip then downloads exactly the resolved set (``--no-deps``) for the host's
platform tags, less the wheels an earlier download for the same target and index left in the
controller's store (``wheel_store``), and a hash-locked requirements file has every file checked here, before any host
changes; the host checks them again (``--require-hashes``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

from ansible_collections.microsvc.deploy.plugins.plugin_utils.sources import cache_root
from ansible_collections.microsvc.deploy.plugins.plugin_utils.target import describe
from ansible_collections.microsvc.deploy.plugins.plugin_utils.target import key as target_key


class WheelhouseError(Exception):
    pass


HASH_ALGORITHMS = ("sha256", "sha384", "sha512")
HASH = re.compile(r"--hash[= ](sha256|sha384|sha512):([0-9a-fA-F]+)")
NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
# uv's words for a requirement that has no wheel for the target.
NO_WHEEL = (re.compile(r"Wheels are required for `([A-Za-z0-9._-]+)`"),
            re.compile(r"Because ([A-Za-z0-9._-]+)(?:[=<>!~]=?[^ ]*)? has no (?:usable )?wheels"))


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_hashes(requirements):
    """{canonical project name: {(algorithm, digest)}} of a hash-locked requirements file (pip-tools,
    ``uv pip compile --generate-hashes``, ``pip lock`` exported), or {} when it pins no hashes."""
    out = {}
    logical = re.sub(r"\\\n", " ", requirements or "")
    for line in logical.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        hashes = HASH.findall(line)
        if not hashes:
            continue
        name = NAME.match(line)
        if name:
            out.setdefault(canonical(name.group(0)), set()).update((a, d.lower()) for a, d in hashes)
    return out


def wheel_project(filename):
    """The canonical project name of a wheel's (or sdist's) file name."""
    base = os.path.basename(filename)
    if base.endswith(".whl"):
        return canonical(base.split("-", 1)[0])
    return canonical(re.sub(r"-[0-9][^-]*\.(tar\.gz|zip)$", "", base))


def check_hashes(dest, hashes):
    """Refuse a downloaded file whose project the locked file has no hash for, or whose digest
    is none of them. Each problem names the project and the file."""
    problems = []
    for name in sorted(os.listdir(dest)):
        project = wheel_project(name)
        wanted = hashes.get(project)
        if not wanted:
            problems.append("%s (%s) has no --hash in the locked requirements file; --require-hashes needs one "
                            "for every package, dependencies included" % (project, name))
            continue
        with open(os.path.join(dest, name), "rb") as handle:
            data = handle.read()
        got = {(algorithm, hashlib.new(algorithm, data).hexdigest()) for algorithm in HASH_ALGORITHMS}
        if not got & wanted:
            problems.append("%s: the hash of %s (sha256:%s) is not one the locked requirements file gives for %s"
                            % (project, name, hashlib.sha256(data).hexdigest(), project))
    return problems


def no_wheel_message(output, target):
    """What a resolver failure means for the user: the package without a wheel for this host,
    the host's target, and what would work."""
    names = []
    for pattern in NO_WHEEL:
        for found in pattern.findall(output):
            if canonical(found) not in names:
                names.append(canonical(found))
    if not names:
        return None
    return ("%s: no wheel for the host's target (%s), and a wheelhouse never builds from a source distribution. "
            "What would work: a version of %s that publishes a wheel for %s (pin it), a wheel built for that target "
            "in the index the controller uses (index_url), or the host building it from its source distribution "
            "(a line '--no-binary %s' in the requirements file: the wheelhouse carries the sdist; list its build "
            "dependencies in the file too, and install what it compiles with on the host: a C compiler and "
            "python3-dev at least)"
            % (", ".join(names), describe(target), " / ".join(names), target["python_platform"], ",".join(names)))


def pip_download_packed(cache, archive, arcname, commands, describe, check=None):
    """Run ``commands(work, dest)`` (command lines, generated one after the other: a later one may
    read what an earlier one wrote) in a scratch directory of ``cache`` and pack dest as
    ``<arcname>/`` into ``archive`` (atomically, once). ``describe(cmd, output)`` words the error
    of a command that fails; ``check(dest)`` lists what is wrong with the result (an error)."""
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
        problems = check(dest) if check else []
        if problems:
            raise WheelhouseError("; ".join(problems))
        fd, partial = tempfile.mkstemp(prefix=".partial-", dir=cache)
        os.close(fd)
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(dest, arcname=arcname)
        os.replace(partial, archive)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return archive


def uv_command():
    """uv as the controller's Python has it (requirements-dev.txt installs it)."""
    return [sys.executable, "-m", "uv"]


# Options of a requirements file that choose where packages come from and in which form: they go
# with the resolved set to pip download (a --no-binary package's sdist travels in the wheelhouse
# and is built on the host, in its sandbox).
FILE_OPTIONS = re.compile(r"(?:--no-binary|--only-binary|--find-links|-f|--index-url|-i|--extra-index-url|--pre"
                          r"|--prefer-binary)(?:[ =].*)?")


def file_options(requirements):
    """The lines of ``FILE_OPTIONS`` of a requirements file, in their order."""
    return [line.strip() for line in (requirements or "").splitlines() if FILE_OPTIONS.fullmatch(line.strip())]


def resolve_command(requirements_in, resolved, target, cache, index_url=""):
    """``uv pip compile`` of the service's requirements for the host's target: wheels only (no
    build code runs on the controller), the user's uv configuration ignored."""
    cmd = uv_command() + [
        "pip", "compile", "--quiet", "--no-config", "--no-header", "--no-annotate",
        "--cache-dir", os.path.join(cache, "uv-cache"),
        "--python-version", target["python_full_version"], "--python-platform", target["python_platform"],
        "--only-binary", ":all:", "--output-file", resolved, requirements_in]
    return cmd + (["--index-url", index_url] if index_url else [])


def download_command(resolved, dest, target, index_url=""):
    """``pip download`` of exactly the resolved set (``--no-deps``) for the host's platform tags."""
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
           "--requirement", resolved, "--dest", dest, "--only-binary=:all:",
           "--python-version", target["python_full_version"],
           "--implementation", "cp", "--abi", target["abi"], "--abi", "abi3", "--abi", "none"]
    for tag in target["platform_tags"]:
        cmd += ["--platform", tag]
    return cmd + (["--index-url", index_url] if index_url else [])


# A line of a resolved set that pins one project: ``name==version`` (with extras, or not).
PIN = re.compile(r"(%s)(?:\[[A-Za-z0-9._, -]*\])?==([A-Za-z0-9.+!_-]+)" % NAME.pattern)


def resolved_pins(text):
    """[(project, version)] of a resolved set whose every line is a plain pin, else None."""
    pins = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.fullmatch(line)
        if not match:
            return None
        pins.append((match.group(1), match.group(2)))
    return pins


def wheel_store(cache, target, index_url=""):
    """The controller's wheels downloaded for one target from one index: pip download's choice of
    file for each pin, kept so that a set resolved again (another service's requirements, written
    differently or sharing most of its packages) downloads only what is new."""
    index = hashlib.sha256(index_url.encode("utf-8")).hexdigest()[:8]
    return os.path.join(cache, "wheels", "%s-%s" % (target_key(target), index))


def stored_wheels(store, pins):
    """({pin: file name in the store}, [pins without exactly one stored wheel]): a pin matches a wheel
    of the same canonical project and the same version (PEP 440 equality: 1.0 and 1.0.0 match)."""
    # packaging comes with ansible-core; imported here, where it is used (the plugin's import check
    # runs without it).
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
    from packaging.version import InvalidVersion, Version

    try:
        names = os.listdir(store)
    except FileNotFoundError:
        names = []
    by_pin = {}
    for name in names:
        try:
            project, version = parse_wheel_filename(name)[:2]
        except InvalidWheelFilename:
            continue
        by_pin.setdefault((project, version), []).append(name)
    found, missing = {}, []
    for project, version in pins:
        try:
            wanted = by_pin.get((canonicalize_name(project), Version(version)), [])
        except InvalidVersion:
            wanted = []
        if len(wanted) == 1:
            found[(project, version)] = wanted[0]
        else:
            missing.append((project, version))
    return found, missing


def _link_or_copy(source, dest):
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def keep_wheels(dest, store):
    """Add the wheels of ``dest`` to the store (each file once, atomically)."""
    os.makedirs(store, exist_ok=True)
    for name in os.listdir(dest):
        if name.endswith(".whl") and not os.path.exists(os.path.join(store, name)):
            partial = os.path.join(store, ".partial-%s-%s" % (os.getpid(), name))
            _link_or_copy(os.path.join(dest, name), partial)
            os.replace(partial, os.path.join(store, name))


def build_wheelhouse(requirements, target, cache_dir=None, index_url=""):
    """The path of a tarball (``wheelhouse/*.whl``) of the requirements resolved for ``target``
    (plugin_utils.target.target_environment), built when missing. The wheels of the resolved set
    that an earlier build for the same target and index downloaded are taken from the controller's
    store (wheel_store); pip downloads the others. A hash-locked file, or one with options of its own
    (FILE_OPTIONS), has its whole set downloaded."""
    key = hashlib.sha256(("%s\0%s\0%s" % (target_key(target), index_url, requirements)).encode("utf-8")).hexdigest()[:16]
    cache = os.path.join(cache_root(cache_dir), "wheelhouse")
    hashes = locked_hashes(requirements)
    options = file_options(requirements)
    store = wheel_store(cache, target, index_url)

    def commands(work, dest):
        req = os.path.join(work, "requirements.in")
        resolved = os.path.join(work, "resolved.txt")
        with open(req, "w", encoding="utf-8") as handle:
            handle.write(requirements)
        yield resolve_command(req, resolved, target, cache, index_url)
        with open(resolved, encoding="utf-8") as handle:
            pins = handle.read()
        parsed = None if hashes or options else resolved_pins(pins)
        if parsed is not None:
            found, missing = stored_wheels(store, parsed)
            os.makedirs(dest)
            for name in found.values():
                _link_or_copy(os.path.join(store, name), os.path.join(dest, name))
            pins = "".join("%s==%s\n" % pin for pin in missing)
        with open(resolved, "w", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in options) + pins)
        if parsed is None or pins:
            yield download_command(resolved, dest, target, index_url)
        if parsed is not None:
            keep_wheels(dest, store)

    def explain(cmd, out):
        if "compile" in cmd:
            return (no_wheel_message(out, target) or
                    "the requirements cannot be resolved for the host's target (%s):\n%s" % (describe(target), out))
        return "pip download for the host's target (%s) failed:\n%s" % (describe(target), out)

    return pip_download_packed(
        cache, os.path.join(cache, "%s-%s.tar.gz" % (target_key(target), key)), "wheelhouse", commands, explain,
        check=(lambda dest: check_hashes(dest, hashes)) if hashes else None)


# The uv that installs virtualenvs on hosts: the controller's own version (requirements-dev.txt),
# its wheel for the host's platform downloaded once and pushed with the bundle.
UV_VERSION = "0.13.9"


def uv_wheel(target, cache_dir=None, index_url=""):
    """The path of uv's wheel for ``target`` (downloaded once into the controller's cache)."""
    cache = os.path.join(cache_root(cache_dir), "wheelhouse")
    archive = os.path.join(cache, "uv-%s-%s.whl" % (UV_VERSION, target["python_platform"]))
    if os.path.exists(archive):
        return archive

    def commands(work, dest):
        with open(os.path.join(work, "uv.txt"), "w", encoding="utf-8") as handle:
            handle.write("uv==%s\n" % UV_VERSION)
        yield download_command(os.path.join(work, "uv.txt"), dest, target, index_url)

    packed = pip_download_packed(
        cache, archive + ".tar.gz", "uv", commands,
        lambda cmd, out: "uv %s for %s cannot be downloaded:\n%s" % (UV_VERSION, describe(target), out))
    with tarfile.open(packed) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".whl")]
        if len(members) != 1:
            raise WheelhouseError("uv %s for %s: expected one wheel, got %s"
                                  % (UV_VERSION, describe(target), [m.name for m in members]))
        fd, partial = tempfile.mkstemp(prefix=".partial-", dir=cache)
        with os.fdopen(fd, "wb") as out, tar.extractfile(members[0]) as src:
            shutil.copyfileobj(src, out)
    os.replace(partial, archive)
    os.unlink(packed)
    return archive
