# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Fetch, inspect and repack a service's source on the controller, in the plan phase.

A source (a directory, a git repository or an archive) is written by the service's authors,
not by the operator, so nothing in it is trusted:

- git: only the https, ssh and file transports (``GIT_ALLOW_PROTOCOL``), ``--`` and
  ``--end-of-options`` before every user-given argument, no prompts; the commit is exported
  with ``git archive`` and inspected like an archive;
- archives (and that export): every member inspected before anything is written
  (module_utils/release_archive.py), then written by our own code, never ``extractall``;
- directories: walked without following symlinks; a symlink (the requirements file
  included) must resolve inside the source; special files are refused.

Every release then becomes a normalised tarball (regular files 0644/0755, directories 0755,
in-release symlinks, root-owned, no special bits, sorted, no times), so extraction on a host
never depends on its Python's tar filters. Its content hash is the release's identity: the
same code gives the same release, any change a new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import io
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import zipfile

from ansible_collections.microsvc.deploy.plugins.module_utils.release_archive import (
    ArchiveRefused,
    extract_tar,
    extract_zip,
)

GIT_PROTOCOLS = "file:https:ssh"
MAX_REQUIREMENTS_BYTES = 1 << 20
GIT_TIMEOUT = 600


class SourceError(Exception):
    """A source that cannot be used; ``field`` is the service field it concerns."""

    def __init__(self, message, field=None):
        super().__init__(message)
        self.field = field


def cache_root(path=None):
    if path:
        return os.path.expanduser(path)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "microsvc")


@contextlib.contextmanager
def cache_lock(cache, name):
    """Serialise the preparation of one service's source between forks and runs."""
    locks = os.path.join(cache, "locks")
    os.makedirs(locks, exist_ok=True)
    with open(os.path.join(locks, name + ".lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _excluded(rel, patterns):
    return any(fnmatch.fnmatch(part, pat) for part in rel.split(os.sep) for pat in patterns)


def _inside(path, root):
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def scan_tree(root, exclude):
    """Sorted (relative path, kind, full path) of what a release of this tree holds: kind is
    ``dir``, ``file``, ``exec`` or ``symlink``. Symlinks are never followed; each must resolve
    inside the tree. Raises SourceError listing every refused entry."""
    real_root = os.path.realpath(root)
    entries, problems = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        keep = []
        for name in sorted(dirnames) + sorted(filenames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            full = os.path.join(dirpath, name)
            if _excluded(rel, exclude):
                continue
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                target = os.path.realpath(full)
                if not _inside(target, real_root):
                    problems.append("%r is a symlink to %r, outside the source" % (rel, os.readlink(full)))
                    continue
                entries.append((rel, "symlink", full))
            elif stat.S_ISDIR(st.st_mode):
                entries.append((rel, "dir", full))
                keep.append(name)
            elif stat.S_ISREG(st.st_mode):
                if st.st_mode & 0o6000:
                    problems.append("%r has the setuid or setgid bit; special bits are refused" % rel)
                    continue
                entries.append((rel, "exec" if st.st_mode & 0o111 else "file", full))
            else:
                problems.append("%r is not a regular file, directory or symlink" % rel)
        dirnames[:] = [d for d in dirnames if d in keep]
    if problems:
        raise SourceError("; ".join(problems[:20]) + ("; and %d more" % (len(problems) - 20)
                                                      if len(problems) > 20 else ""))
    entries.sort()
    return entries


def _open_nofollow(full):
    return os.fdopen(os.open(full, os.O_RDONLY | os.O_NOFOLLOW), "rb")


def tree_digest(entries):
    digest = hashlib.sha256()
    for rel, kind, full in entries:
        digest.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        if kind == "symlink":
            digest.update(b"L" + os.readlink(full).encode("utf-8", "surrogateescape") + b"\0")
            continue
        if kind == "dir":
            digest.update(b"D\0")
            continue
        digest.update(b"X" if kind == "exec" else b"F")
        with _open_nofollow(full) as handle:
            for block in iter(lambda: handle.read(1 << 16), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def write_tarball(entries, dest):
    """The normalised release tarball: root-owned, modes 0644/0755, no times, sorted."""
    if os.path.exists(dest):
        return dest
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=os.path.dirname(dest))
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz", format=tarfile.PAX_FORMAT) as tar:
            for rel, kind, full in entries:
                info = tarfile.TarInfo(rel)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if kind == "dir":
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                elif kind == "symlink":
                    info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, os.readlink(full)
                    tar.addfile(info)
                else:
                    with _open_nofollow(full) as handle:
                        info.size = os.fstat(handle.fileno()).st_size
                        info.mode = 0o755 if kind == "exec" else 0o644
                        tar.addfile(info, handle)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


# --- git --------------------------------------------------------------------------------

def git_env():
    env = dict(os.environ)
    # Only these transports (ext::, fd::, http:// and the rest are refused by git itself), and
    # never a prompt: a run must not hang on a password question.
    env.update(GIT_ALLOW_PROTOCOL=GIT_PROTOCOLS, GIT_TERMINAL_PROMPT="0")
    return env


def _git(args, cwd=None, binary=False):
    try:
        proc = subprocess.run(["git"] + args, cwd=cwd, capture_output=True, text=not binary, check=False,
                              env=git_env(), timeout=GIT_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SourceError("git %s did not finish within %d seconds" % (args[0], GIT_TIMEOUT),
                          field="source.repo") from None
    if proc.returncode != 0:
        err = proc.stderr if not binary else proc.stderr.decode("utf-8", "replace")
        raise SourceError("git %s failed: %s" % (args[0], err.strip()[-500:] or "exit %d" % proc.returncode),
                          field="source.repo")
    return proc.stdout


def checkout_git(name, repo, version, cache):
    """Fetch the repository into a controller-side mirror and export the wanted commit into a
    fresh directory, inspected like an archive."""
    if shutil.which("git") is None:
        raise SourceError("git is not installed on the controller", field="source.repo")
    mirror = os.path.join(cache, "git", name + ".git")
    if os.path.isdir(mirror):
        current = _git(["config", "--get", "remote.origin.url"], cwd=mirror).strip()
        if current != repo:
            shutil.rmtree(mirror)
    if not os.path.isdir(mirror):
        os.makedirs(os.path.dirname(mirror), exist_ok=True)
        _git(["clone", "--quiet", "--mirror", "--no-hardlinks", "--", repo, mirror])
    else:
        _git(["remote", "update", "--prune"], cwd=mirror)
    try:
        commit = _git(["rev-parse", "--verify", "--quiet", "--end-of-options", version + "^{commit}"],
                      cwd=mirror).strip()
    except SourceError:
        raise SourceError("version %r not found in the repository" % version, field="source.version") from None
    export = os.path.join(cache, "git", "%s-%s" % (name, commit[:16]))
    if not os.path.isdir(export):
        data = _git(["archive", "--format=tar", commit], cwd=mirror, binary=True)
        _unpack_into(export, lambda tmp: extract_tar(io.BytesIO(data), tmp), "the repository at %s" % commit[:12],
                     field="source.repo")
    return export, commit


def _unpack_into(dest, extractor, what, field):
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".partial-", dir=os.path.dirname(dest))
    try:
        extractor(tmp)
        os.replace(tmp, dest)
    except ArchiveRefused as exc:
        raise SourceError("%s was refused: %s" % (what, exc), field=field) from None
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise SourceError("cannot unpack %s: %s" % (what, exc), field=field) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def unpack_archive(name, path, cache):
    """Inspect and unpack an archive into the cache (once per archive content); return the tree.

    An archive holding a single top-level directory (as GitHub's tarballs do) is used from
    inside that directory."""
    digest = hashlib.sha256()
    path = os.path.realpath(path)
    with _open_nofollow(path) as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    dest = os.path.join(cache, "archives", "%s-%s" % (name, digest.hexdigest()[:16]))
    if not os.path.isdir(dest):
        extractor = (lambda tmp: extract_zip(path, tmp)) if path.endswith(".zip") else \
            (lambda tmp: extract_tar(path, tmp))
        _unpack_into(dest, extractor, "archive %s" % os.path.basename(path), field="source.path")
    entries = [e for e in os.listdir(dest) if not e.startswith(".")]
    if len(entries) == 1 and os.path.isdir(os.path.join(dest, entries[0])) \
            and not os.path.islink(os.path.join(dest, entries[0])):
        return os.path.join(dest, entries[0])
    return dest


def read_requirements(tree, relpath):
    """The requirements file's text, when the source has one. A symlink must resolve inside
    the source, like every other symlink of a release."""
    full = os.path.join(tree, relpath)
    if not os.path.lexists(full):
        return ""
    real = os.path.realpath(full)
    if not _inside(real, os.path.realpath(tree)):
        raise SourceError("the requirements file %r resolves outside the source" % relpath,
                          field="requirements_file")
    if not os.path.isfile(real):
        raise SourceError("the requirements file %r is not a regular file" % relpath, field="requirements_file")
    with _open_nofollow(real) as handle:
        data = handle.read(MAX_REQUIREMENTS_BYTES + 1)
    if len(data) > MAX_REQUIREMENTS_BYTES:
        raise SourceError("the requirements file %r is larger than 1 MiB" % relpath, field="requirements_file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError("the requirements file %r is not UTF-8 text" % relpath, field="requirements_file") from None


# What a requirements file in a release source may say: requirement specifiers from the index (with
# --hash options for a locked file) and the options that choose a package's form. Where packages
# come from is the operator's setting (uwsgi_vassal_pip_index_url), never the source's: an index,
# a find-links location, a URL, a path, an editable install or another file (-r, -c) would make
# the controller fetch or read what the source names.
REQUIREMENT_OPTION = re.compile(r"--(?:no-binary|only-binary)(?:=| +)[A-Za-z0-9._,:-]{1,2000}|--pre|--prefer-binary")
HASH_OPTION = re.compile(r"--hash(?:=| +)(?:sha256|sha384|sha512):[0-9a-f]{32,128}")
INCLUDE_OPTION = re.compile(r"(?:-r|--requirement)(?:=| *)([A-Za-z0-9._/-]{1,200})")
FIND_LINKS_OPTION = re.compile(r"(?:-f|--find-links)(?:=| +)([A-Za-z0-9._/-]{1,200})")
ALLOWED_REQUIREMENT_LINES = ("a requirement specifier from the index (e.g. 'Django>=5.2,<5.3', with environment "
                             "markers and --hash=sha256:... options), '--no-binary NAMES', '--only-binary NAMES', "
                             "'--pre', '--prefer-binary' and comments; the index is the operator's setting "
                             "(uwsgi_vassal_pip_index_url), never the source's")


def _logical_lines(text):
    """(first physical line number, logical line) with continuations joined and comments removed."""
    out, buf, start = [], "", None
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(?:^|\s)#.*$", "", raw).rstrip()
        if start is None:
            start = number
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        out.append((start, (buf + line).strip()))
        buf, start = "", None
    if buf.strip():
        out.append((start, buf.strip()))
    return [(n, line) for n, line in out if line]


def check_requirements(text, where):
    """Refuse a requirements text with anything but ALLOWED_REQUIREMENT_LINES (SourceError naming
    the line); ``where`` says which file or field it came from."""
    from packaging.requirements import InvalidRequirement, Requirement

    for number, line in _logical_lines(text):
        if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in line):
            problem = "has a control character"
        elif REQUIREMENT_OPTION.fullmatch(line):
            continue
        elif line.startswith("-"):
            problem = "is the option %r" % line.split()[0].split("=")[0][:40]
        else:
            words = line.split(" --")
            spec, options = words[0].strip(), ["--" + w.strip() for w in words[1:]]
            bad = [o for o in options if not HASH_OPTION.fullmatch(o)]
            try:
                requirement = Requirement(spec)
            except InvalidRequirement:
                requirement = None
            if bad:
                problem = "has the option %r (only --hash=<algorithm>:<hex digest> may follow a requirement)" % \
                    bad[0].split("=")[0][:40]
            elif requirement is None:
                problem = "is not a requirement specifier (%r)" % spec[:80]
            elif requirement.url:
                problem = "names a URL or path (%r)" % spec[:80]
            else:
                continue
        raise SourceError("%s, line %d, %s: allowed are %s" % (where, number, problem, ALLOWED_REQUIREMENT_LINES),
                          field="requirements_file")


def _inside_source(tree, relpath, name, field_path):
    """``name`` (relative to the file ``relpath`` of the source) as a path inside the source, or
    SourceError."""
    target = os.path.normpath(os.path.join(os.path.dirname(relpath), name))
    real = os.path.realpath(os.path.join(tree, target))
    if os.path.isabs(name) or target.split("/")[0] == ".." or not _inside(real, os.path.realpath(tree)):
        raise SourceError("the requirements file %r names %r, outside the source" % (field_path, name),
                          field="requirements_file")
    return target, real


def load_requirements(tree, relpath, _seen=()):
    """The requirements file's text with every ``-r FILE`` replaced by that file's text (a file of the
    same source, relative to the including file, at most 10 deep) and every ``--find-links DIR`` (a
    directory of the source) made absolute for the controller's resolver; each line checked
    (check_requirements)."""
    if len(_seen) >= 10 or relpath in _seen:
        raise SourceError("the requirements file %r is included in a loop or more than 10 deep (%s)"
                          % (relpath, " -> ".join(_seen + (relpath,))), field="requirements_file")
    text = read_requirements(tree, relpath)
    if _seen and not text and not os.path.lexists(os.path.join(tree, relpath)):
        raise SourceError("the requirements file %r includes %r, which the source does not have"
                          % (_seen[-1], relpath), field="requirements_file")
    out, own = [], []
    for line in text.splitlines():
        bare = re.sub(r"(?:^|\s)#.*$", "", line).strip()
        include, links = INCLUDE_OPTION.fullmatch(bare), FIND_LINKS_OPTION.fullmatch(bare)
        if include:
            target, _real = _inside_source(tree, relpath, include.group(1), relpath)
            out.append(load_requirements(tree, target, _seen + (relpath,)).rstrip("\n"))
            own.append("")
        elif links:
            _target, real = _inside_source(tree, relpath, links.group(1), relpath)
            if not os.path.isdir(real):
                raise SourceError("the requirements file %r names %r for --find-links, which is not a directory of "
                                  "the source" % (relpath, links.group(1)), field="requirements_file")
            out.append("--find-links %s" % real)
            own.append("")
        else:
            out.append(line)
            own.append(line)
    # This file's own lines (an include is checked as its file), at their line numbers.
    check_requirements("\n".join(own), "the requirements file %r" % relpath)
    return "\n".join(out) + ("\n" if out else "")


def prepare_source(svc, cache=None):
    """Fetch, inspect and repack the source of a present service (controller only).

    Returns ``digest`` (content hash of the code), ``archive`` (the normalised tarball),
    ``requirements`` (the requirements file's text plus the entry's extra lines),
    ``revision`` (git commit or None) and ``source`` (what it came from)."""
    cache = cache_root(cache)
    src = svc["source"]
    with cache_lock(cache, svc["name"]):
        revision = None
        if src["type"] == "dir":
            tree = src["path"]
            if not os.path.isdir(tree):
                raise SourceError("directory %r does not exist on the controller" % tree, field="source.path")
        elif src["type"] == "git":
            tree, revision = checkout_git(svc["name"], src["repo"], src["version"], cache)
        else:
            tree = unpack_archive(svc["name"], src["path"], cache)
        try:
            entries = scan_tree(tree, list(src.get("exclude") or []))
        except SourceError as exc:
            raise SourceError(str(exc), field="source.repo" if src["type"] == "git" else "source.path") from None
        requirements = load_requirements(tree, svc["requirements_file"])
        if svc["requirements"]:
            requirements = requirements.rstrip("\n") + ("\n" if requirements.strip() else "")
            requirements += "\n".join(svc["requirements"]) + "\n"
        digest = tree_digest(entries)
        archive = os.path.join(cache, "releases", "%s-%s.tar.gz" % (svc["name"], digest[:16]))
        write_tarball(entries, archive)
    return {
        "digest": digest,
        "archive": archive,
        "requirements": requirements,
        "revision": revision,
        "source": src.get("repo") or src.get("path"),
    }


def venv_key(python, requirements):
    """Virtualenvs are keyed by their interpreter and requirements."""
    return hashlib.sha256(("%s\0%s" % (python, requirements)).encode("utf-8")).hexdigest()[:12]


def release_id(digest, venv):
    """The release id covers the code and the virtualenv it runs with, so a release directory
    never needs to be relinked to another virtualenv."""
    return hashlib.sha256(("%s\0%s" % (digest, venv)).encode("ascii")).hexdigest()[:12]
