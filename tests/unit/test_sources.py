"""Turning a service's source into a release on the controller: dir, git and archive, and every
kind of hostile content refused before anything is written."""

import os
import subprocess
import sys
import tarfile
import zipfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import hostile_sources as hostile
from ansible_collections.microsvc.deploy.plugins.module_utils import release_archive
from ansible_collections.microsvc.deploy.plugins.plugin_utils import sources

EXCLUDE = [".git", "__pycache__", "*.pyc"]


def svc(name, source, requirements=()):
    return {"name": name, "source": dict({"exclude": EXCLUDE, "version": "HEAD"}, **source),
            "requirements_file": "requirements.txt", "requirements": list(requirements)}


@pytest.fixture()
def tree(tmp_path):
    code = tmp_path / "code"
    (code / "pkg").mkdir(parents=True)
    (code / "app.py").write_text("def application(e, s):\n    return []\n")
    (code / "run.sh").write_text("#!/bin/sh\n")
    (code / "run.sh").chmod(0o700)
    (code / "pkg" / "__init__.py").write_text("")
    (code / "requirements.txt").write_text("Django>=5.2,<5.3\n")
    (code / "__pycache__").mkdir()
    (code / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"junk")
    return code


def members(archive):
    with tarfile.open(archive) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_dir_release_is_content_addressed_normalised_and_excludes_junk(tree, tmp_path):
    cache = str(tmp_path / "cache")
    first = sources.prepare_source(svc("a", {"type": "dir", "path": str(tree)}), cache)
    again = sources.prepare_source(svc("a", {"type": "dir", "path": str(tree)}), cache)
    assert first == again
    found = members(first["archive"])
    assert sorted(found) == ["app.py", "pkg", "pkg/__init__.py", "requirements.txt", "run.sh"]
    assert {(m.uid, m.gid, m.uname, m.mtime) for m in found.values()} == {(0, 0, "root", 0)}
    assert found["run.sh"].mode == 0o755 and found["app.py"].mode == 0o644 and found["pkg"].mode == 0o755
    assert first["requirements"] == "Django>=5.2,<5.3\n"
    (tree / "app.py").write_text("def application(e, s):\n    return [b'new']\n")
    assert sources.prepare_source(svc("a", {"type": "dir", "path": str(tree)}), cache)["digest"] != first["digest"]


def test_release_id_covers_code_interpreter_and_requirements(tree, tmp_path):
    cache = str(tmp_path / "cache")
    base = sources.prepare_source(svc("a", {"type": "dir", "path": str(tree)}), cache)
    extra = sources.prepare_source(svc("a", {"type": "dir", "path": str(tree)}, ["requests==2.32.3"]), cache)
    assert extra["digest"] == base["digest"]  # same code
    assert extra["requirements"].splitlines() == ["Django>=5.2,<5.3", "requests==2.32.3"]
    v_base = sources.venv_key("/usr/bin/python3", base["requirements"])
    v_extra = sources.venv_key("/usr/bin/python3", extra["requirements"])
    v_py = sources.venv_key("/usr/bin/python3.11", base["requirements"])
    assert len({v_base, v_extra, v_py}) == 3
    assert sources.release_id(base["digest"], v_base) != sources.release_id(base["digest"], v_extra)


def test_git_release_at_a_version(tree, tmp_path):
    hostile.git_repo(str(tree), {})
    (tree / "app.py").write_text("def application(e, s):\n    return [b'two']\n")
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "-am", "two"], cwd=tree,
                   check=True)
    cache = str(tmp_path / "cache")
    repo = "file://" + str(tree)
    v1 = sources.prepare_source(svc("g", {"type": "git", "repo": repo, "version": "v1"}), cache)
    head = sources.prepare_source(svc("g", {"type": "git", "repo": repo, "version": "main"}), cache)
    assert v1["digest"] != head["digest"] and len(v1["revision"]) == 40
    with tarfile.open(v1["archive"]) as tar:
        assert b"two" not in tar.extractfile("app.py").read()
    with pytest.raises(sources.SourceError, match="not found") as info:
        sources.prepare_source(svc("g", {"type": "git", "repo": repo, "version": "v9"}), cache)
    assert info.value.field == "source.version"


@pytest.mark.parametrize("repo", [
    "ext::sh -c touch% {marker}",
    "--upload-pack=touch {marker}",
    "-uupload-pack=touch {marker}",
    "fd::17",
])
def test_git_refuses_other_transports_and_option_like_repositories(tmp_path, repo):
    marker = tmp_path / "pwned"
    with pytest.raises(sources.SourceError):
        sources.checkout_git("g", repo.format(marker=marker), "HEAD", str(tmp_path / "cache"))
    assert not marker.exists()


def test_git_release_with_a_symlink_out_of_the_repository_is_refused(tmp_path):
    canary = hostile.make_canary(tmp_path)
    repo = hostile.git_repo(str(tmp_path / "repo"), {"app.py": "x = 1\n"}, symlinks=[("secret", canary)])
    with pytest.raises(sources.SourceError, match="absolute path") as info:
        sources.prepare_source(svc("g", {"type": "git", "repo": "file://" + repo, "version": "v1"}),
                               str(tmp_path / "cache"))
    assert info.value.field == "source.repo"


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_archive_release_unwraps_a_single_top_directory(tree, tmp_path, kind):
    archive = tmp_path / ("code-1.0." + kind)
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for path in sorted(tree.rglob("*")):
                zf.write(path, "code-1.0/" + str(path.relative_to(tree)))
    else:
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(tree, arcname="code-1.0")
    rel = sources.prepare_source(svc("z", {"type": "archive", "path": str(archive)}), str(tmp_path / "cache"))
    names = members(rel["archive"])
    assert "app.py" in names and not any(n.startswith("code-1.0") for n in names)
    direct = sources.prepare_source(svc("z", {"type": "dir", "path": str(tree)}), str(tmp_path / "cache2"))
    assert rel["digest"] == direct["digest"]  # same content, same release


def _hostile_archives(tmp_path):
    canary = hostile.make_canary(tmp_path)
    built = tmp_path / "built"
    built.mkdir()
    return canary, hostile.tar_cases(built, canary) + hostile.zip_cases(built)


def test_every_hostile_archive_is_refused_naming_the_member_and_the_controller_is_untouched(tmp_path):
    canary, cases = _hostile_archives(tmp_path)
    before = hostile.fingerprint(canary)
    cache = tmp_path / "cache"
    for case_id, path, fragment in cases:
        with pytest.raises(sources.SourceError) as info:
            sources.prepare_source(svc("h", {"type": "archive", "path": path}), str(cache))
        assert fragment in str(info.value), (case_id, str(info.value))
        assert info.value.field == "source.path"
    assert hostile.fingerprint(canary) == before
    # Nothing was unpacked into the cache from any of them.
    assert not (cache / "archives").exists() or not [p for p in (cache / "archives").iterdir()
                                                      if not p.name.startswith(".")]
    assert not (cache / "releases").exists()


def test_every_hostile_directory_is_refused_and_nothing_outside_is_read(tmp_path):
    canary = hostile.make_canary(tmp_path)
    before = hostile.fingerprint(canary)
    for case_id, path, fragment, field in hostile.dir_cases(tmp_path / "dirs", canary):
        with pytest.raises(sources.SourceError) as info:
            sources.prepare_source(svc("d", {"type": "dir", "path": path}), str(tmp_path / "cache"))
        assert fragment in str(info.value) and info.value.field in (field, "requirements_file"), (case_id, info.value)
    assert hostile.fingerprint(canary) == before
    releases = tmp_path / "cache" / "releases"
    for archive in releases.iterdir() if releases.exists() else []:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                assert member.isdir() or hostile.CANARY_TEXT.encode() not in tar.extractfile(member).read()


def test_symlinks_inside_the_source_are_kept(tree, tmp_path):
    os.symlink("pkg", tree / "alias")
    os.symlink("../app.py", tree / "pkg" / "up.py")
    rel = sources.prepare_source(svc("s", {"type": "dir", "path": str(tree)}), str(tmp_path / "cache"))
    found = members(rel["archive"])
    assert found["alias"].issym() and found["alias"].linkname == "pkg"
    assert found["pkg/up.py"].linkname == "../app.py"


def test_host_extraction_of_a_normalised_release(tree, tmp_path):
    """The host unpacks with the same inspecting extractor, never tarfile's extractall."""
    rel = sources.prepare_source(svc("x", {"type": "dir", "path": str(tree)}), str(tmp_path / "cache"))
    dest = tmp_path / "host"
    dest.mkdir()
    release_archive.extract_tar(rel["archive"], str(dest))
    assert (dest / "app.py").read_text().startswith("def application")
    assert oct((dest / "run.sh").stat().st_mode & 0o7777) == oct(0o755)
    assert oct((dest / "app.py").stat().st_mode & 0o7777) == oct(0o644)


def test_requirements_files_may_include_their_siblings_pin_hashes_and_choose_forms(tmp_path):
    """What a real project's requirements say is kept: -r of another file of the source (relative to
    the including file, comments and continuations), hashes, markers, --no-binary and --pre."""
    code = tmp_path / "code"
    (code / "requirements").mkdir(parents=True)
    (code / "app.py").write_text("")
    digest = "a" * 64
    (code / "requirements" / "base.txt").write_text(
        "# shared\nDjango==5.2.1 \\\n    --hash=sha256:%s\nredis==6.4.0 ; python_version >= '3.9'  # cache\n" % digest)
    (code / "requirements" / "prod.txt").write_text(
        "-r base.txt  # the base\n--no-binary=uwsgi\n--pre\n--find-links ../wheels\ncelery[redis]>=5.5\n")
    (code / "wheels").mkdir()
    entry = dict(svc("inc", {"type": "dir", "path": str(code)}), requirements_file="requirements/prod.txt")
    rel = sources.prepare_source(entry, str(tmp_path / "cache"))
    lines = rel["requirements"].splitlines()
    assert "Django==5.2.1 \\" in lines and "    --hash=sha256:%s" % digest in lines, lines
    assert "-r base.txt  # the base" not in lines and "--no-binary=uwsgi" in lines and "celery[redis]>=5.5" in lines
    assert lines.index("# shared") < lines.index("celery[redis]>=5.5")
    # The source's wheel directory, for the controller's resolver: where the source is on the controller.
    assert "--find-links %s" % os.path.realpath(code / "wheels") in lines


def test_a_requirements_refusal_names_the_file_the_line_and_what_is_allowed(tree, tmp_path):
    (tree / "requirements.txt").write_text("Django>=5.2,<5.3\n\n--extra-index-url https://evil.example/simple\n")
    with pytest.raises(sources.SourceError) as info:
        sources.prepare_source(svc("s", {"type": "dir", "path": str(tree)}), str(tmp_path / "cache"))
    message = str(info.value)
    assert "the requirements file 'requirements.txt', line 3, is the option '--extra-index-url'" in message
    assert "allowed are a requirement specifier" in message and "uwsgi_vassal_pip_index_url" in message
    assert info.value.field == "requirements_file"
