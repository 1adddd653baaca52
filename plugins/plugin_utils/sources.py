# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Turn a service's source (a directory, a git repository or an archive on the controller)
into a release: a content hash, a reproducible tarball and the requirements text.

Release ids are content-addressed: the same code and requirements give the same id, so
a run with nothing new deploys nothing, and any change gives a new release directory.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile

RELEASE_MARKER = ".microsvc-release"


class SourceError(Exception):
    pass


def cache_root(path=None):
    if path:
        return os.path.expanduser(path)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "microsvc")


def _excluded(rel, patterns):
    parts = rel.split(os.sep)
    return any(fnmatch.fnmatch(part, pat) for part in parts for pat in patterns)


def list_tree(root, exclude):
    """Sorted (relative path, full path) of the directories, files and symlinks under root,
    minus excludes (directories are kept so that empty ones survive)."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        keep = []
        for d in sorted(dirnames):
            rel = os.path.normpath(os.path.join(rel_dir, d))
            full = os.path.join(dirpath, d)
            if _excluded(rel, exclude):
                continue
            entries.append((rel, full))
            if not os.path.islink(full):
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if not _excluded(rel, exclude):
                entries.append((rel, os.path.join(dirpath, name)))
    entries.sort()
    return entries


def tree_digest(root, exclude, extra=b""):
    digest = hashlib.sha256()
    for rel, full in list_tree(root, exclude):
        digest.update(rel.encode("utf-8") + b"\0")
        if os.path.islink(full):
            digest.update(b"L" + os.readlink(full).encode("utf-8") + b"\0")
            continue
        if os.path.isdir(full):
            digest.update(b"D\0")
            continue
        mode = os.stat(full).st_mode
        digest.update(b"X" if mode & 0o111 else b"F")
        with open(full, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 16), b""):
                digest.update(block)
        digest.update(b"\0")
    digest.update(extra)
    return digest.hexdigest()


def write_tarball(root, exclude, dest):
    """A gzip tarball of the tree, root-owned, with normalized permissions."""
    if os.path.exists(dest):
        return dest
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=os.path.dirname(dest))
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz", format=tarfile.PAX_FORMAT) as tar:
            for rel, full in list_tree(root, exclude):
                info = tar.gettarinfo(full, arcname=rel)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                if info.isdir():
                    info.mode = 0o755
                    tar.addfile(info)
                elif info.isreg():
                    info.mode = 0o755 if info.mode & 0o111 else 0o644
                    with open(full, "rb") as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _git(args, cwd=None):
    proc = subprocess.run(["git"] + args, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SourceError("git %s failed: %s" % (" ".join(args), (proc.stderr or proc.stdout).strip()))
    return proc.stdout.strip()


def checkout_git(name, repo, version, cache):
    """Fetch the repository into a controller-side mirror and export the wanted commit."""
    if shutil.which("git") is None:
        raise SourceError("git is not installed on the controller")
    mirror = os.path.join(cache, "git", name + ".git")
    if os.path.isdir(mirror):
        current = _git(["config", "--get", "remote.origin.url"], cwd=mirror)
        if current != repo:
            shutil.rmtree(mirror)
    if not os.path.isdir(mirror):
        os.makedirs(os.path.dirname(mirror), exist_ok=True)
        _git(["clone", "--quiet", "--mirror", repo, mirror])
    else:
        _git(["remote", "update", "--prune"], cwd=mirror)
    try:
        commit = _git(["rev-parse", "--verify", "--quiet", version + "^{commit}"], cwd=mirror)
    except SourceError:
        raise SourceError("version %r not found in %s" % (version, repo)) from None
    export = os.path.join(cache, "git", "%s-%s" % (name, commit[:16]))
    if not os.path.isdir(export):
        tmp = tempfile.mkdtemp(prefix=".partial-", dir=os.path.dirname(export))
        try:
            data = subprocess.run(
                ["git", "archive", "--format=tar", commit], cwd=mirror, capture_output=True, check=True
            ).stdout
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                _safe_extract_tar(tar, tmp)
            os.replace(tmp, export)
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise SourceError("git archive failed: %s" % exc.stderr.decode("utf-8", "replace")) from None
    return export, commit


def _safe_extract_tar(tar, dest):
    for member in tar.getmembers():
        target = os.path.realpath(os.path.join(dest, member.name))
        if not target.startswith(os.path.realpath(dest) + os.sep) and target != os.path.realpath(dest):
            raise SourceError("archive member %r escapes the release directory" % member.name)
        if member.isdev():
            raise SourceError("archive member %r is a device file" % member.name)
    tar.extractall(dest, filter="tar") if hasattr(tarfile, "data_filter") else tar.extractall(dest)


def unpack_archive(name, path, cache):
    """Unpack an archive into the cache (once per archive content) and return the tree root.

    An archive holding a single top-level directory (as GitHub's tarballs do) is unpacked
    from inside that directory.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    dest = os.path.join(cache, "archives", "%s-%s" % (name, digest.hexdigest()[:16]))
    if not os.path.isdir(dest):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".partial-", dir=os.path.dirname(dest))
        try:
            if path.endswith(".zip"):
                with zipfile.ZipFile(path) as archive:
                    for info in archive.infolist():
                        target = os.path.realpath(os.path.join(tmp, info.filename))
                        if not target.startswith(os.path.realpath(tmp) + os.sep):
                            raise SourceError("archive member %r escapes the release directory" % info.filename)
                    archive.extractall(tmp)
            else:
                with tarfile.open(path) as tar:
                    _safe_extract_tar(tar, tmp)
            os.replace(tmp, dest)
        except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise SourceError("cannot unpack %s: %s" % (path, exc)) from None
        except SourceError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    entries = [e for e in os.listdir(dest) if not e.startswith(".")] if os.path.isdir(dest) else []
    if len(entries) == 1 and os.path.isdir(os.path.join(dest, entries[0])):
        return os.path.join(dest, entries[0])
    return dest


def prepare_release(svc, cache=None, python=None):
    """Return the release description of a present service (computed on the controller).

    ``python`` is the interpreter that builds the virtualenv (the service's own, or the
    platform's default)."""
    python = svc.get("python") or python
    cache = cache_root(cache)
    src = svc["source"]
    revision = None
    if src["type"] == "dir":
        tree = src["path"]
        if not os.path.isdir(tree):
            raise SourceError("directory %s does not exist on the controller" % tree)
    elif src["type"] == "git":
        tree, revision = checkout_git(svc["name"], src["repo"], src["version"], cache)
    else:
        tree = unpack_archive(svc["name"], src["path"], cache)
    exclude = list(src.get("exclude") or [])
    req_path = os.path.join(tree, svc["requirements_file"])
    requirements = ""
    if os.path.isfile(req_path):
        with open(req_path, encoding="utf-8") as handle:
            requirements = handle.read()
    if svc["requirements"]:
        requirements = requirements.rstrip("\n") + ("\n" if requirements.strip() else "")
        requirements += "\n".join(svc["requirements"]) + "\n"
    venv_key = hashlib.sha256(("%s\0%s" % (python, requirements)).encode("utf-8")).hexdigest()[:12]
    # The release id covers the code and the virtualenv it runs with, so a release
    # directory never needs to be relinked to another virtualenv.
    digest = tree_digest(tree, exclude, extra=venv_key.encode("ascii"))
    release = digest[:12]
    archive = os.path.join(cache, "releases", "%s-%s.tar.gz" % (svc["name"], release))
    write_tarball(tree, exclude, archive)
    return {
        "release": release,
        "archive": archive,
        "requirements": requirements,
        "venv": venv_key,
        "revision": revision,
        "source": src.get("repo") or src.get("path"),
    }
