"""Shipping controller files to a module call: inline when small, copied when large
(plugins/plugin_utils/bundle.py and plugins/module_utils/bundle.py)."""

import base64
import io
import os
import tarfile
import types

from ansible_collections.microsvc.deploy.plugins.module_utils import bundle as host_bundle
from ansible_collections.microsvc.deploy.plugins.plugin_utils import bundle


class FakeAction:
    """The parts of an ActionBase that execute_with_bundle uses, recording the remote commands."""

    def __init__(self):
        self.calls = []
        self._connection = types.SimpleNamespace(_shell=types.SimpleNamespace(join_path=os.path.join))

    def _make_tmp_path(self):
        self.calls.append("mkdir")
        return "/remote/tmp"

    def _transfer_file(self, local, remote):
        self.calls.append("copy %s" % remote)

    def _fixup_perms2(self, paths):
        self.calls.append("chmod")

    def _remove_tmp_path(self, path):
        self.calls.append("rm %s" % path)

    def _execute_module(self, module_name, module_args, task_vars):
        self.calls.append("module")
        self.args = module_args
        return {"ok": True}


def members_of(data):
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_a_small_bundle_travels_inside_the_arguments_and_no_file_is_copied(tmp_path):
    release = tmp_path / "release.tar.gz"
    release.write_bytes(b"new code")
    action = FakeAction()
    result = bundle.execute_with_bundle(action, {"releases/svc1.tar.gz": str(release)}, "m", {"x": 1}, {})
    assert result == {"ok": True}
    assert action.calls == ["module"]
    assert "bundle" not in action.args and action.args["x"] == 1
    assert members_of(base64.b64decode(action.args["bundle_data"])) == {"releases/svc1.tar.gz": b"new code"}


def test_a_large_bundle_is_copied_to_a_private_directory_and_removed_after(tmp_path, monkeypatch):
    monkeypatch.setattr(bundle, "INLINE_LIMIT", 1024)
    wheels = tmp_path / "wheelhouse.tar"
    wheels.write_bytes(os.urandom(4096))
    action = FakeAction()
    bundle.execute_with_bundle(action, {"wheelhouses/v1.tar": str(wheels)}, "m", {}, {})
    assert action.calls == ["mkdir", "copy /remote/tmp/bundle.tar", "chmod", "module", "rm /remote/tmp"]
    assert action.args["bundle"] == "/remote/tmp/bundle.tar" and "bundle_data" not in action.args


def test_no_files_send_no_bundle():
    action = FakeAction()
    bundle.execute_with_bundle(action, {}, "m", {"x": 1}, {})
    assert action.calls == ["module"] and action.args == {"x": 1}


def test_the_host_writes_a_sent_bundle_into_the_calls_private_directory(tmp_path):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("releases/a.tar.gz")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    module = types.SimpleNamespace(tmpdir=str(tmp_path), params=dict(
        bundle=None, bundle_data=base64.b64encode(data.getvalue()).decode()))
    path = host_bundle.bundle_path(module)
    assert os.path.dirname(path) == str(tmp_path)
    assert os.stat(path).st_mode & 0o077 == 0  # mkstemp: the owner's alone
    with open(path, "rb") as handle:
        assert members_of(handle.read()) == {"releases/a.tar.gz": b"abc"}


def test_the_host_uses_a_copied_bundle_where_it_is_and_none_without_one(tmp_path):
    assert host_bundle.bundle_path(types.SimpleNamespace(params=dict(bundle="/x/bundle.tar", bundle_data=None))) == \
        "/x/bundle.tar"
    assert host_bundle.bundle_path(types.SimpleNamespace(params=dict(bundle=None, bundle_data=None))) is None


def test_the_sent_bundle_is_never_logged():
    assert host_bundle.ARGUMENT_SPEC["bundle_data"]["no_log"] is True
