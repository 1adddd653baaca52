"""Turning a service's source into a release on the controller: dir, git and archive."""

import importlib.util
import os
import subprocess
import sys
import tarfile
import zipfile

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
spec = importlib.util.spec_from_file_location("sources", os.path.join(ROOT, "plugins/plugin_utils/sources.py"))
sources = importlib.util.module_from_spec(spec)
sys.modules["sources"] = sources
spec.loader.exec_module(sources)

EXCLUDE = [".git", "__pycache__", "*.pyc"]


def svc(name, source, requirements=(), python="/usr/bin/python3"):
    return {"name": name, "source": dict({"exclude": EXCLUDE, "version": "HEAD"}, **source),
            "requirements_file": "requirements.txt", "requirements": list(requirements), "python": python}


@pytest.fixture()
def tree(tmp_path):
    code = tmp_path / "code"
    (code / "pkg").mkdir(parents=True)
    (code / "app.py").write_text("def application(e, s):\n    return []\n")
    (code / "pkg" / "__init__.py").write_text("")
    (code / "requirements.txt").write_text("Django>=5.2,<5.3\n")
    (code / "__pycache__").mkdir()
    (code / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"junk")
    return code


def members(archive):
    with tarfile.open(archive) as tar:
        return sorted(m.name for m in tar.getmembers()), {m.name: (m.uid, m.gid) for m in tar.getmembers()}


def test_dir_release_is_content_addressed_and_excludes_junk(tree, tmp_path):
    cache = str(tmp_path / "cache")
    first = sources.prepare_release(svc("a", {"type": "dir", "path": str(tree)}), cache)
    again = sources.prepare_release(svc("a", {"type": "dir", "path": str(tree)}), cache)
    assert first["release"] == again["release"] and first["archive"] == again["archive"]
    names, owners = members(first["archive"])
    assert names == ["app.py", "pkg", "pkg/__init__.py", "requirements.txt"]
    assert set(owners.values()) == {(0, 0)}
    assert first["requirements"] == "Django>=5.2,<5.3\n"
    (tree / "app.py").write_text("def application(e, s):\n    return [b'new']\n")
    changed = sources.prepare_release(svc("a", {"type": "dir", "path": str(tree)}), cache)
    assert changed["release"] != first["release"]
    assert changed["venv"] == first["venv"]  # code only: same virtualenv


def test_requirements_change_the_virtualenv_and_the_release(tree, tmp_path):
    cache = str(tmp_path / "cache")
    base = sources.prepare_release(svc("a", {"type": "dir", "path": str(tree)}), cache)
    extra = sources.prepare_release(svc("a", {"type": "dir", "path": str(tree)}, ["requests==2.32.3"]), cache)
    assert extra["venv"] != base["venv"] and extra["release"] != base["release"]
    assert extra["requirements"].splitlines() == ["Django>=5.2,<5.3", "requests==2.32.3"]
    other_python = sources.prepare_release(svc("a", {"type": "dir", "path": str(tree)}, python="/usr/bin/python3.11"),
                                           cache)
    assert other_python["venv"] != base["venv"]


def git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"] + list(args), cwd=cwd,
                   check=True, capture_output=True)


def test_git_release_at_a_version(tree, tmp_path):
    git("init", "-q", "-b", "main", cwd=tree)
    git("add", "-A", cwd=tree)
    git("commit", "-q", "-m", "one", cwd=tree)
    git("tag", "v1", cwd=tree)
    (tree / "app.py").write_text("def application(e, s):\n    return [b'two']\n")
    git("commit", "-q", "-am", "two", cwd=tree)
    cache = str(tmp_path / "cache")
    repo = "file://" + str(tree)
    v1 = sources.prepare_release(svc("g", {"type": "git", "repo": repo, "version": "v1"}), cache)
    head = sources.prepare_release(svc("g", {"type": "git", "repo": repo, "version": "main"}), cache)
    assert v1["release"] != head["release"] and len(v1["revision"]) == 40
    with tarfile.open(v1["archive"]) as tar:
        assert b"two" not in tar.extractfile("app.py").read()
    with pytest.raises(sources.SourceError, match="not found"):
        sources.prepare_release(svc("g", {"type": "git", "repo": repo, "version": "v9"}), cache)


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_archive_release_unwraps_a_single_top_directory(tree, tmp_path, kind):
    archive = tmp_path / ("code-1.0." + kind)
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for path in tree.rglob("*"):
                zf.write(path, "code-1.0/" + str(path.relative_to(tree)))
    else:
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(tree, arcname="code-1.0")
    rel = sources.prepare_release(svc("z", {"type": "archive", "path": str(archive)}), str(tmp_path / "cache"))
    names, _ = members(rel["archive"])
    assert "app.py" in names and not any(n.startswith("code-1.0") for n in names)
    direct = sources.prepare_release(svc("z", {"type": "dir", "path": str(tree)}), str(tmp_path / "cache2"))
    assert rel["release"] == direct["release"]  # same content, same release


def test_archive_with_a_member_escaping_is_refused(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    (tmp_path / "x").write_text("x")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "x", arcname="../../escape")
    with pytest.raises(sources.SourceError, match="escapes"):
        sources.prepare_release(svc("e", {"type": "archive", "path": str(archive)}), str(tmp_path / "cache"))
