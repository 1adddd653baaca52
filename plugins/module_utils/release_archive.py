# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Inspect and extract release archives without trusting them (controller and host).

A release source is written by a service's authors, not by the operator. Its archive
members are inspected before anything is written, and every problem is reported, naming the
member: absolute names, ``..`` segments, control characters in names, hard links, device
files and fifos, setuid/setgid/sticky bits, duplicate members, symlinks that resolve outside
the release (following the archive's own symlinks, as the kernel would) and members that would
be written through a symlink. Extraction then writes each member itself, with
``O_NOFOLLOW|O_EXCL`` and normalised modes, owned by whoever extracts: it never calls
``tarfile.extractall``, so it does not depend on the Python version's extraction filters
(Debian 12's Python 3.11.2 has none).

Used on the controller (plugin_utils/sources.py: archives and ``git archive`` output) and on
hosts (module_utils/releases.py and the deploy's wheelhouse: the normalised archives the controller
built).
"""

from __future__ import annotations

import os
import stat
import tarfile
import unicodedata
import zipfile

MAX_MEMBERS = 100000
MAX_TOTAL_BYTES = 2 << 30
MAX_NAME = 4096
MAX_LINK_DEPTH = 40


class ArchiveRefused(Exception):
    """Raised with every problem found, one per member."""

    def __init__(self, problems):
        self.problems = list(problems)
        shown = self.problems[:20]
        more = len(self.problems) - len(shown)
        super().__init__("; ".join(shown) + ("; and %d more" % more if more > 0 else ""))


class Entry:
    """One member: a normalised relative name, its kind and what it needs to be written."""

    __slots__ = ("kind", "mode", "name", "ref", "size", "target")

    def __init__(self, name, kind, mode=0o644, target=None, size=0, ref=None):
        self.name = name
        self.kind = kind          # file, dir, symlink, hardlink, device, fifo, other
        self.mode = mode
        self.target = target      # symlink or hard link target
        self.size = size
        self.ref = ref            # the archive's own member object


def _control(text):
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text)


def normalise_name(raw):
    """(normalised name, problem). The archive root ('.', './') has the name ''."""
    name = raw
    if _control(name):
        return None, "member %r has a control character in its name" % raw
    if len(name) > MAX_NAME:
        return None, "member %r has a name longer than %d characters" % (raw[:60] + "...", MAX_NAME)
    if name.startswith("/"):
        return None, "member %r has an absolute name" % raw
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    if name in ("", "."):
        return "", None
    parts = name.split("/")
    if ".." in parts:
        return None, "member %r has a '..' segment" % raw
    if any(p in ("", ".") for p in parts):
        return None, "member %r has an empty or '.' segment" % raw
    return name, None


def tar_entries(tar):
    entries = []
    for member in tar.getmembers():
        if member.isreg():
            kind = "file"
        elif member.isdir():
            kind = "dir"
        elif member.issym():
            kind = "symlink"
        elif member.islnk():
            kind = "hardlink"
        elif member.isdev():
            kind = "device"
        elif member.isfifo():
            kind = "fifo"
        else:
            kind = "other"
        entries.append(Entry(member.name, kind, member.mode, member.linkname or None, member.size, member))
    return entries


def zip_entries(archive):
    entries = []
    for info in archive.infolist():
        mode = (info.external_attr >> 16) & 0xFFFF
        if info.filename.endswith("/") or stat.S_ISDIR(mode):
            kind = "dir"
        elif stat.S_ISLNK(mode):
            kind = "symlink"
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = "device"
        elif stat.S_ISFIFO(mode):
            kind = "fifo"
        elif stat.S_ISSOCK(mode):
            kind = "other"
        else:
            kind = "file"
        target = None
        if kind == "symlink":
            if info.file_size > MAX_NAME:
                target = "\0"
            else:
                try:
                    target = archive.read(info).decode("utf-8")
                except (UnicodeDecodeError, zipfile.BadZipFile, RuntimeError):
                    target = "\0"
        entries.append(Entry(info.filename, kind, stat.S_IMODE(mode) if mode else 0o644, target,
                             info.file_size, info))
    return entries


def _resolve(parts, links, depth=0):
    """The parts of a path resolved inside the archive root, following the archive's symlinks
    (``links``: normalised name -> target); None when it leaves the root or loops."""
    out = []
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                return None
            out.pop()
            continue
        out.append(part)
        key = "/".join(out)
        if key in links:
            target = links[key]
            if depth >= MAX_LINK_DEPTH or target.startswith("/"):
                return None
            resolved = _resolve(out[:-1] + target.split("/"), links, depth + 1)
            if resolved is None:
                return None
            out = resolved
    return out


def inspect(entries):
    """Normalise names in place and return the entries to write; raise ArchiveRefused with
    every problem found."""
    problems = []
    if len(entries) > MAX_MEMBERS:
        raise ArchiveRefused(["the archive has %d members; at most %d are allowed" % (len(entries), MAX_MEMBERS)])
    total = sum(e.size for e in entries if e.kind == "file")
    if total > MAX_TOTAL_BYTES:
        raise ArchiveRefused(["the archive unpacks to %d bytes; at most %d are allowed" % (total, MAX_TOTAL_BYTES)])
    kept, seen = [], {}
    for entry in entries:
        raw = entry.name
        name, problem = normalise_name(raw)
        if problem:
            problems.append(problem)
            continue
        if name == "":
            continue  # the archive's root directory
        if entry.kind == "hardlink":
            problems.append("member %r is a hard link (to %r); hard links are refused" % (raw, entry.target))
            continue
        if entry.kind in ("device", "fifo", "other"):
            problems.append("member %r is a %s; only files, directories and symlinks are allowed"
                            % (raw, {"device": "device file", "fifo": "fifo"}.get(entry.kind, "special file")))
            continue
        if entry.mode & 0o7000:
            problems.append("member %r has the setuid, setgid or sticky bit (mode %o); special bits are refused"
                            % (raw, entry.mode & 0o7777))
            continue
        if name in seen:
            if not (entry.kind == "dir" and seen[name].kind == "dir"):
                problems.append("member %r appears twice in the archive" % raw)
            continue
        if entry.kind == "symlink":
            target = entry.target or ""
            if not target or _control(target) or len(target) > MAX_NAME:
                problems.append("symlink %r has an empty or unprintable target" % raw)
                continue
            if target.startswith("/"):
                problems.append("symlink %r points to the absolute path %r; symlinks must stay inside the release"
                                % (raw, target))
                continue
        entry.name = name
        seen[name] = entry
        kept.append(entry)
    links = {e.name: e.target for e in kept if e.kind == "symlink"}
    for entry in kept:
        parts = entry.name.split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix in links:
                problems.append("member %r would be written through the symlink %r" % (entry.name, prefix))
                break
        if entry.kind == "symlink" and _resolve(parts[:-1] + entry.target.split("/"), links) is None:
            problems.append("symlink %r -> %r resolves outside the release" % (entry.name, entry.target))
    if problems:
        raise ArchiveRefused(problems)
    return kept


def extract(entries, dest, read):
    """Write inspected entries below the existing empty directory ``dest``.

    ``read(entry)`` returns a readable binary file object for a file entry. Files get mode
    0755 when any execute bit was set, else 0644; directories 0755; nothing else survives
    (owner is whoever extracts, times are now)."""
    for entry in sorted(entries, key=lambda e: e.name):
        path = os.path.join(dest, entry.name)
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o755)
        if entry.kind == "dir":
            if not os.path.isdir(path):
                os.mkdir(path, 0o755)
            continue
        if entry.kind == "symlink":
            os.symlink(entry.target, path)
            continue
        mode = 0o755 if entry.mode & 0o111 else 0o644
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as out, read(entry) as src:
            while True:
                block = src.read(1 << 16)
                if not block:
                    break
                out.write(block)
        os.chmod(path, mode)
    for dirpath, dirnames, _files in os.walk(dest):
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if not os.path.islink(full):
                os.chmod(full, 0o755)


def extract_tar(path_or_fileobj, dest):
    """Inspect then extract a tar archive (any compression tarfile reads)."""
    kwargs = {"fileobj": path_or_fileobj} if hasattr(path_or_fileobj, "read") else {"name": path_or_fileobj}
    with tarfile.open(**kwargs) as tar:
        entries = inspect(tar_entries(tar))
        extract(entries, dest, lambda e: tar.extractfile(e.ref))


def extract_zip(path, dest):
    with zipfile.ZipFile(path) as archive:
        entries = inspect(zip_entries(archive))
        extract(entries, dest, lambda e: archive.open(e.ref))
