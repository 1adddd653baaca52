"""What a deploy with new requirements sends and fetches again: the controller's store of the wheels
it downloaded for a target (plugins/plugin_utils/wheelhouse.py), and uv's wheel, sent only to a host
that lacks this controller's uv (the probe's C(uv_present); plugins/module_utils/venvs.py
installed_uv). Without a network: the resolver and the downloader are stand-ins that record what
they are asked."""

import os
import stat
import types

import pytest
from ansible_collections.microsvc.deploy.plugins.action import deploy_batch as deploy_batch_action
from ansible_collections.microsvc.deploy.plugins.module_utils import venvs
from ansible_collections.microsvc.deploy.plugins.modules import deploy_batch
from ansible_collections.microsvc.deploy.plugins.plugin_utils import wheelhouse
from ansible_collections.microsvc.deploy.plugins.plugin_utils.target import target_environment

DEBIAN12 = dict(implementation="cpython", version="3.11.2", machine="x86_64", libc="glibc", libc_version="2.36")
DEBIAN13 = dict(implementation="cpython", version="3.13.5", machine="x86_64", libc="glibc", libc_version="2.41")


def wheel_name(pin):
    name, version = pin.split("==")
    return "%s-%s-py3-none-any.whl" % (name.replace("-", "_"), version)


class Index:
    """Stands in for uv pip compile (each requirement text resolves to the pins given for it) and
    pip download (writes a wheel per pin asked for); records what each download was asked."""

    def __init__(self, resolutions):
        self.resolutions = resolutions
        self.downloads = []

    def run(self, cmd, **_kwargs):
        if "compile" in cmd:
            with open(cmd[cmd.index("--output-file") + 2], encoding="utf-8") as handle:
                text = handle.read()
            with open(cmd[cmd.index("--output-file") + 1], "w", encoding="utf-8") as handle:
                handle.write("".join(pin + "\n" for pin in self.resolutions[text]))
        else:
            with open(cmd[cmd.index("--requirement") + 1], encoding="utf-8") as handle:
                asked = [line.strip() for line in handle if line.strip()]
            self.downloads.append(asked)
            dest = cmd[cmd.index("--dest") + 1]
            os.makedirs(dest, exist_ok=True)
            for pin in asked:
                if "==" in pin:
                    with open(os.path.join(dest, wheel_name(pin)), "w", encoding="utf-8") as handle:
                        handle.write(pin)
        return types.SimpleNamespace(returncode=0, stdout="", stderr="")


def members(archive):
    import tarfile

    with tarfile.open(archive) as tar:
        return sorted(os.path.basename(m.name) for m in tar.getmembers() if m.isfile())


CELERY = ["amqp==5.3.1", "celery==5.5.3", "kombu==5.5.4", "redis==5.2.1", "async-timeout==5.0.1"]


def test_a_set_resolved_again_is_packed_from_the_store_without_a_download(tmp_path, monkeypatch):
    index = Index({"celery[redis]>=5.5,<5.6\n": CELERY, "celery[redis]<5.6,>=5.5\n": CELERY})
    monkeypatch.setattr(wheelhouse.subprocess, "run", index.run)
    target = target_environment(DEBIAN12)
    first = wheelhouse.build_wheelhouse("celery[redis]>=5.5,<5.6\n", target, str(tmp_path))
    second = wheelhouse.build_wheelhouse("celery[redis]<5.6,>=5.5\n", target, str(tmp_path))
    assert first != second  # two wheelhouses (two texts), one download
    assert index.downloads == [CELERY]
    assert members(first) == members(second) == sorted(wheel_name(p) for p in CELERY)


def test_only_the_pins_the_store_lacks_are_downloaded(tmp_path, monkeypatch):
    django = ["django==5.2.8", "asgiref==3.9.1", "sqlparse==0.5.3"]
    index = Index({"celery[redis]\n": CELERY, "celery[redis]\ndjango\n": CELERY + django})
    monkeypatch.setattr(wheelhouse.subprocess, "run", index.run)
    target = target_environment(DEBIAN12)
    wheelhouse.build_wheelhouse("celery[redis]\n", target, str(tmp_path))
    both = wheelhouse.build_wheelhouse("celery[redis]\ndjango\n", target, str(tmp_path))
    assert index.downloads == [CELERY, django]
    assert members(both) == sorted(wheel_name(p) for p in CELERY + django)


@pytest.mark.parametrize("other", [
    dict(target=DEBIAN13),                                # another Python: another choice of files
    dict(index_url="https://mirror.example/simple"),      # another index: its own files
])
def test_the_store_is_per_target_and_per_index(tmp_path, monkeypatch, other):
    index = Index({"celery[redis]\n": CELERY})
    monkeypatch.setattr(wheelhouse.subprocess, "run", index.run)
    wheelhouse.build_wheelhouse("celery[redis]\n", target_environment(DEBIAN12), str(tmp_path))
    wheelhouse.build_wheelhouse("celery[redis]\n", target_environment(other.get("target", DEBIAN12)), str(tmp_path),
                                other.get("index_url", ""))
    assert index.downloads == [CELERY, CELERY]


def test_a_hash_locked_file_or_one_with_options_of_its_own_is_downloaded_whole(tmp_path, monkeypatch):
    locked = "redis==5.2.1 --hash=sha256:%s\n" % ("0" * 64)
    options = "--prefer-binary\nredis\n"
    index = Index({"redis\n": ["redis==5.2.1"], locked: ["redis==5.2.1"], options: ["redis==5.2.1"]})
    monkeypatch.setattr(wheelhouse.subprocess, "run", index.run)
    monkeypatch.setattr(wheelhouse, "check_hashes", lambda _dest, _hashes: [])
    target = target_environment(DEBIAN12)
    wheelhouse.build_wheelhouse("redis\n", target, str(tmp_path))
    wheelhouse.build_wheelhouse(locked, target, str(tmp_path))
    wheelhouse.build_wheelhouse(options, target, str(tmp_path))
    # The locked file's own hashes are checked against what pip downloads; the options go with the set.
    assert index.downloads == [["redis==5.2.1"], ["redis==5.2.1"], ["--prefer-binary", "redis==5.2.1"]]


def test_resolved_pins_are_plain_pins_or_nothing():
    assert wheelhouse.resolved_pins("Django==5.2.8\ncelery[redis]==5.5.3\n\n# a comment\n") == \
        [("Django", "5.2.8"), ("celery", "5.5.3")]
    for text in ("redis==5.2.1 ; python_version < '3.12'\n", "pkg @ https://example.com/pkg.whl\n",
                 "-e ./local\n", "redis>=5\n", "redis==5.2.1\x00\n"):
        assert wheelhouse.resolved_pins(text) is None, text


def test_a_stored_wheel_matches_its_pin_by_canonical_name_and_equal_version(tmp_path):
    for name in ("Django-5.2.8-py3-none-any.whl", "zope.interface-7.0-cp311-cp311-manylinux_2_17_x86_64.whl",
                 "twice-1.0-py3-none-any.whl", "twice-1.0-1-py3-none-any.whl", "not-a-wheel.txt", "bad.whl"):
        (tmp_path / name).write_text("x")
    found, missing = wheelhouse.stored_wheels(str(tmp_path), [
        ("django", "5.2.8"), ("Zope-Interface", "7.0.0"), ("twice", "1.0"), ("absent", "1.0"), ("django", "5.2.9")])
    assert found == {("django", "5.2.8"): "Django-5.2.8-py3-none-any.whl",
                     ("Zope-Interface", "7.0.0"): "zope.interface-7.0-cp311-cp311-manylinux_2_17_x86_64.whl"}
    # Two files for one pin: which one pip would take is pip's call, so it downloads.
    assert missing == [("twice", "1.0"), ("absent", "1.0"), ("django", "5.2.9")]
    assert wheelhouse.stored_wheels(str(tmp_path / "none"), [("django", "5.2.8")]) == ({}, [("django", "5.2.8")])


def test_a_failed_download_adds_nothing_to_the_store(tmp_path, monkeypatch):
    index = Index({"redis\n": ["redis==5.2.1"]})

    def failing(cmd, **kwargs):
        if "compile" in cmd:
            return index.run(cmd, **kwargs)
        return types.SimpleNamespace(returncode=1, stdout="", stderr="connection refused")

    monkeypatch.setattr(wheelhouse.subprocess, "run", failing)
    target = target_environment(DEBIAN12)
    with pytest.raises(wheelhouse.WheelhouseError, match="connection refused"):
        wheelhouse.build_wheelhouse("redis\n", target, str(tmp_path))
    store = wheelhouse.wheel_store(os.path.join(str(tmp_path), "wheelhouse"), target)
    assert not os.path.exists(store) or os.listdir(store) == []


# --- uv: its wheel goes only to a host without it ------------------------------------------------

def test_uv_wheel_is_not_sent_where_the_probe_found_uv(tmp_path, monkeypatch):
    monkeypatch.setattr(deploy_batch_action, "uv_wheel", lambda *_a: pytest.fail("uv's wheel was fetched"))
    pip, files = {}, {}
    deploy_batch_action.add_uv(pip, files, dict(uv_present=True, python_facts=DEBIAN12), "x86_64", str(tmp_path))
    assert files == {}
    assert pip == dict(uv_member=None, uv_version=wheelhouse.UV_VERSION, uv_installed=True)


def test_uv_wheel_is_sent_where_the_probe_found_none(tmp_path, monkeypatch):
    wheel = tmp_path / "uv-x.whl"
    wheel.write_text("")
    monkeypatch.setattr(deploy_batch_action, "uv_wheel", lambda *_a: str(wheel))
    pip, files = {}, {}
    deploy_batch_action.add_uv(pip, files, dict(uv_present=False, python_facts=DEBIAN12), "x86_64", str(tmp_path))
    assert files == {"tools/uv-x.whl": str(wheel)}
    assert pip == dict(uv_member="tools/uv-x.whl", uv_version=wheelhouse.UV_VERSION)


def root_only_uv(root, version="0.13.9"):
    binary = root / ".microsvc" / "tools" / ("uv-" + version) / "uv"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!uv\n")
    for path in (root / ".microsvc", root / ".microsvc" / "tools", binary.parent):
        os.chown(path, 0, 0)
        os.chmod(path, 0o755)
    os.chown(binary, 0, 0)
    os.chmod(binary, 0o755)
    return binary


@pytest.fixture
def as_root():
    if os.geteuid() != 0:
        pytest.skip("the tools directory is root-owned: run as root (as the tests in CI do)")


def test_installed_uv_is_the_binary_only_where_it_is_roots_alone(tmp_path, as_root):
    binary = root_only_uv(tmp_path)
    assert venvs.installed_uv(str(tmp_path), "0.13.9") == str(binary)
    assert venvs.installed_uv(str(tmp_path), "0.13.8") is None
    with pytest.raises(venvs.VenvError, match="not a uv version"):
        venvs.installed_uv(str(tmp_path), "../0.13.9")
    os.chmod(binary, 0o775)
    assert venvs.installed_uv(str(tmp_path), "0.13.9") is None
    os.chmod(binary, 0o755)
    os.chown(binary, 1234, 1234)
    assert venvs.installed_uv(str(tmp_path), "0.13.9") is None


@pytest.mark.parametrize("planted", ["tools", "uv-0.13.9", "uv"])
def test_installed_uv_never_counts_a_link_in_its_place(tmp_path, as_root, planted):
    binary = root_only_uv(tmp_path / "real")
    (tmp_path / "www" / ".microsvc" / "tools" / "uv-0.13.9").mkdir(parents=True)
    for path in (tmp_path / "www" / ".microsvc", tmp_path / "www" / ".microsvc" / "tools",
                 tmp_path / "www" / ".microsvc" / "tools" / "uv-0.13.9"):
        os.chown(path, 0, 0)
        os.chmod(path, 0o755)
    place = {"tools": tmp_path / "www" / ".microsvc" / "tools",
             "uv-0.13.9": tmp_path / "www" / ".microsvc" / "tools" / "uv-0.13.9",
             "uv": tmp_path / "www" / ".microsvc" / "tools" / "uv-0.13.9" / "uv"}[planted]
    target = {"tools": binary.parent.parent, "uv-0.13.9": binary.parent, "uv": binary}[planted]
    if place.is_dir():
        import shutil

        shutil.rmtree(place)
    os.symlink(target, place)
    assert venvs.installed_uv(str(tmp_path / "www"), "0.13.9") is None


def test_installed_uv_refuses_a_directory_others_may_write(tmp_path, as_root):
    binary = root_only_uv(tmp_path)
    os.chmod(binary.parent, 0o777)
    assert venvs.installed_uv(str(tmp_path), "0.13.9") is None
    assert stat.S_IMODE(os.stat(binary).st_mode) == 0o755


def deploy_with(tmp_path, pip):
    module = types.SimpleNamespace(params=dict(root=str(tmp_path), helper="/bin/false", migrate_helper="/bin/false",
                                               pip=pip, timeout=5, concurrency=1, env={}, services=[], bundle=None))
    return deploy_batch.Deploy(module)


def test_the_deploy_uses_the_uv_the_probe_found(tmp_path, as_root):
    binary = root_only_uv(tmp_path)
    deploy = deploy_with(tmp_path, dict(uv_member=None, uv_version="0.13.9", uv_installed=True))
    assert deploy.uv() == str(binary) and deploy.uv_note is None


def test_the_deploy_falls_back_to_pip_when_that_uv_is_gone_or_not_roots(tmp_path, as_root):
    deploy = deploy_with(tmp_path, dict(uv_member=None, uv_version="0.13.9", uv_installed=True))
    assert deploy.uv() is None
    assert deploy.uv_note == "pip: uv 0.13.9, which the probe found on this host, is no longer there"
    binary = root_only_uv(tmp_path)
    os.chown(binary, 1234, 1234)
    deploy = deploy_with(tmp_path, dict(uv_member=None, uv_version="0.13.9", uv_installed=True))
    assert deploy.uv() is None and "no longer there" in deploy.uv_note


def test_the_probe_reports_whether_this_controllers_uv_is_there(tmp_path, as_root):
    from ansible_collections.microsvc.deploy.plugins.action import vassal_probe as probe_action

    assert probe_action.UV_VERSION == wheelhouse.UV_VERSION == deploy_batch_action.UV_VERSION
    assert venvs.installed_uv(str(tmp_path), wheelhouse.UV_VERSION) is None
    root_only_uv(tmp_path, wheelhouse.UV_VERSION)
    assert venvs.installed_uv(str(tmp_path), wheelhouse.UV_VERSION) is not None
