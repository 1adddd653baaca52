"""Host-side building blocks of the deploy (plugins/module_utils), on a scratch directory."""

import json
import os
import pathlib
import stat

import pytest
from ansible_collections.microsvc.deploy.plugins.module_utils import envfile, releases, venvs

# --- environment files --------------------------------------------------------------------------

def test_env_file_keeps_the_previous_content_until_settled(tmp_path):
    path = str(tmp_path / "env")
    gid = os.getgid()
    envfile.apply(*envfile.plan(path, "stage", "A=1\nB=2\n")[:2], gid)
    assert not os.path.exists(path + ".previous")
    writes, removes, kept = envfile.plan(path, "stage", "A=1\n")
    envfile.apply(writes, removes, gid)
    assert kept
    assert pathlib.Path(path + ".previous").read_text() == "A=1\nB=2\n" and pathlib.Path(path).read_text() == "A=1\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    # A failed deploy puts the previous content back.
    envfile.apply(*envfile.plan(path, "restore")[:2], gid)
    assert pathlib.Path(path).read_text() == "A=1\nB=2\n"
    assert not os.path.exists(path + ".previous")


def test_env_file_unset_list_of_older_versions_is_removed(tmp_path):
    """Workers read the file themselves (the master never holds the service's environment): the
    list of names to unset that older versions kept is not needed and goes on the next deploy."""
    path = str(tmp_path / "env")
    pathlib.Path(path).write_text("A=1\n")
    pathlib.Path(path + ".unset").write_text("B\n")
    writes, removes, kept = envfile.plan(path, "stage", "A=1\n")
    assert writes == [] and removes == [path + ".unset"] and not kept
    envfile.apply(writes, removes, os.getgid())
    assert not os.path.exists(path + ".unset")


def test_env_file_settled_forgets_the_previous_content(tmp_path):
    path = str(tmp_path / "env")
    envfile.apply(*envfile.plan(path, "stage", "A=1\n")[:2], os.getgid())
    envfile.apply(*envfile.plan(path, "stage", "A=2\n")[:2], os.getgid())
    writes, removes, kept = envfile.plan(path, "forget")
    assert writes == [] and removes == [path + ".previous"] and not kept
    envfile.apply(writes, removes, os.getgid())
    assert pathlib.Path(path).read_text() == "A=2\n"


# --- releases ------------------------------------------------------------------------------------

def make_release(root, rid, venv="v1"):
    path = os.path.join(root, "releases", rid)
    os.makedirs(path)
    with open(os.path.join(path, releases.MARKER), "w") as handle:
        json.dump({"release": rid}, handle)
    os.symlink("../../venvs/" + venv, os.path.join(path, ".venv"))
    os.makedirs(os.path.join(root, "venvs", venv), exist_ok=True)


def test_switch_then_rollback_then_prune(tmp_path):
    root = str(tmp_path)
    for rid, venv in (("r1", "v1"), ("r2", "v1"), ("r3", "v2")):
        make_release(root, rid, venv)
    for rid in ("r1", "r2", "r3"):
        releases.apply_switch(root, releases.plan_switch(root, rid))
    assert releases.current(root) == "r3" and releases.history(os.path.join(root, "releases")) == ["r1", "r2", "r3"]
    back = releases.plan_switch(root, rollback=True)
    assert (back["previous"], back["current"]) == ("r3", "r2")
    releases.apply_switch(root, back)
    # The abandoned release goes to the front of the prune order.
    assert releases.history(os.path.join(root, "releases")) == ["r3", "r1", "r2"]
    pruned = releases.plan_switch(root, "r2", keep=2)
    assert pruned["pruned_releases"] == ["r3"] and pruned["pruned_venvs"] == ["v2"]
    with pytest.raises(releases.ReleaseError, match="not a complete release"):
        releases.plan_switch(root, "../etc")


# --- virtualenvs ---------------------------------------------------------------------------------

def test_a_service_copy_of_a_cached_virtualenv_names_its_own_path(tmp_path):
    root = str(tmp_path / "www")
    cache = os.path.join(venvs.cache_dir(root), "k1")
    os.makedirs(os.path.join(cache, "bin"))
    os.makedirs(os.path.join(cache, "lib", "site-packages", "pkg"))
    with open(os.path.join(cache, "bin", "gunicorn"), "w") as handle:
        handle.write("#!%s/bin/python\nimport sys\n" % cache)
    os.chmod(os.path.join(cache, "bin", "gunicorn"), 0o755)
    with open(os.path.join(cache, "bin", "activate"), "w") as handle:
        handle.write("VIRTUAL_ENV='%s'\n" % cache)
    os.symlink("/usr/bin/python3", os.path.join(cache, "bin", "python"))
    with open(os.path.join(cache, "lib", "site-packages", "pkg", "__init__.py"), "w") as handle:
        handle.write("x = 1\n")
    with open(os.path.join(cache, "pyvenv.cfg"), "w") as handle:
        handle.write("home = /usr/bin\ncommand = /usr/bin/python3 -m venv %s\n" % cache)
    with open(os.path.join(cache, venvs.MARKER), "w") as handle:
        json.dump({"python_version": "3.11.2", "key": "k1"}, handle)
    dest = str(tmp_path / "svc" / "venvs" / "k1")
    os.makedirs(os.path.dirname(dest))
    assert venvs.install(root, "k1", dest) is True
    assert pathlib.Path(dest, "bin", "gunicorn").read_text().startswith("#!%s/bin/python" % dest)
    assert os.stat(os.path.join(dest, "bin", "gunicorn")).st_mode & 0o111
    assert dest in pathlib.Path(dest, "bin", "activate").read_text()
    assert dest in pathlib.Path(dest, "pyvenv.cfg").read_text()
    assert os.readlink(os.path.join(dest, "bin", "python")) == "/usr/bin/python3"
    module = os.path.join("lib", "site-packages", "pkg", "__init__.py")
    assert os.stat(os.path.join(dest, module)).st_ino == os.stat(os.path.join(cache, module)).st_ino  # shared
    assert venvs.present(dest, "3.11.2") and not venvs.present(dest, "3.13.1")
    assert venvs.install(root, "k1", dest) is False


def test_sealing_refuses_links_leaving_the_virtualenv(tmp_path):
    venv = tmp_path / "v"
    (venv / "lib").mkdir(parents=True)
    os.symlink("/etc", venv / "lib" / "etc")
    if os.geteuid() != 0:
        pytest.skip("sealing changes owners: run as root (as the tests in CI do)")
    with pytest.raises(venvs.VenvError, match="outside the virtualenv"):
        venvs.seal(str(venv), "/usr/bin/python3")


def _layout_entries(**extra):
    from ansible_collections.microsvc.deploy.plugins.module_utils import layout
    svc = dict({"root": "/opt/www/svc", "user": "svc"}, **extra)
    return {entry["path"]: entry for entry in layout.service_directories(svc, "/opt/www")}


def test_the_service_layout_gives_it_a_protected_directory_only_with_a_group_for_nginx():
    assert "/opt/www/svc/shared/protected" not in _layout_entries()
    assert "/opt/www/svc/shared/protected" not in _layout_entries(protected_group=None)
    entry = _layout_entries(protected_group="www-data")["/opt/www/svc/shared/protected"]
    assert (entry["owner"], entry["group"], entry["mode"]) == ("svc", "www-data", "2750")


def test_every_directory_the_service_writes_is_inside_a_directory_of_root():
    entries = _layout_entries(protected_group="www-data")
    for path, entry in entries.items():
        if entry["owner"] != "root":
            assert entries[os.path.dirname(path)]["owner"] == "root", path
