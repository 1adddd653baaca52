"""The deploy batch (plugins/modules/vassal_deploy.py) reads the bundle of releases and wheelhouses
from several threads at once: every service must get its own member, intact."""

import io
import os
import tarfile
import types

from ansible_collections.microsvc.deploy.plugins.modules import vassal_deploy

SERVICES = 48


def release_tarball(name):
    """A small gzipped release whose content names the service, big enough to take many reads."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        body = ("%s\n" % name).encode() + os.urandom(64 * 1024)
        info = tarfile.TarInfo("app.py")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return data.getvalue()


def test_releases_are_read_from_the_bundle_by_many_threads_each_intact(tmp_path, monkeypatch):
    bundle = tmp_path / "bundle.tar"
    with tarfile.open(bundle, "w") as tar:
        for i in range(SERVICES):
            blob = release_tarball("svc%02d" % i)
            info = tarfile.TarInfo("releases/svc%02d.tar.gz" % i)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    services = [dict(name="svc%02d" % i, release="r%02d" % i, venv="v1", root=str(tmp_path / ("svc%02d" % i)),
                     group="root", archive_member="releases/svc%02d.tar.gz" % i) for i in range(SERVICES)]
    module = types.SimpleNamespace(params=dict(root=str(tmp_path), helper="/bin/false", pip={}, timeout=5,
                                               concurrency=8, env={}, services=services, bundle=str(bundle)))
    seen = {}

    def unpack(archive, releases, release, gid, venv, marker):
        # What releases.unpack does first: open the member as a (gzipped) tar and read it.
        with tarfile.open(fileobj=archive) as tar:
            seen[release] = tar.extractfile("app.py").read().split(b"\n", 1)[0].decode()

    monkeypatch.setattr(vassal_deploy.releases, "unpack", unpack)
    monkeypatch.setattr(vassal_deploy.fsutil, "gid_of", lambda _group: 0)
    deploy = vassal_deploy.Deploy(module)
    deploy.each("release", deploy.step_release, deploy.live(), parallel=True)
    failed = {name: state["msg"] for name, state in deploy.state.items() if not state["ok"]}
    assert failed == {}
    assert seen == {"r%02d" % i: "svc%02d" % i for i in range(SERVICES)}
