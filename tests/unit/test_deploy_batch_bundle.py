"""The deploy batch (plugins/modules/deploy_batch.py): what its threads do at once."""

import io
import os
import tarfile
import threading
import types

from ansible_collections.microsvc.deploy.plugins.modules import deploy_batch

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
    """Several threads read the bundle of releases and wheelhouses at once: every service gets
    its own member, intact."""
    bundle = tmp_path / "bundle.tar"
    with tarfile.open(bundle, "w") as tar:
        for i in range(SERVICES):
            blob = release_tarball("svc%02d" % i)
            info = tarfile.TarInfo("releases/svc%02d.tar.gz" % i)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    services = [dict(name="svc%02d" % i, release="r%02d" % i, venv="v1", root=str(tmp_path / ("svc%02d" % i)),
                     group="root", archive_member="releases/svc%02d.tar.gz" % i) for i in range(SERVICES)]
    module = types.SimpleNamespace(params=dict(root=str(tmp_path), helper="/bin/false", migrate_helper="/bin/false", pip={}, timeout=5,
                                               concurrency=8, env={}, services=services, bundle=str(bundle)))
    seen = {}

    def unpack(archive, releases, release, gid, venv, marker):
        # What releases.unpack does first: open the member as a (gzipped) tar and read it.
        with tarfile.open(fileobj=archive) as tar:
            seen[release] = tar.extractfile("app.py").read().split(b"\n", 1)[0].decode()

    monkeypatch.setattr(deploy_batch.releases, "unpack", unpack)
    monkeypatch.setattr(deploy_batch.fsutil, "gid_of", lambda _group: 0)
    deploy = deploy_batch.Deploy(module)
    deploy.each("release", deploy.step_release, deploy.live(), parallel=True)
    failed = {name: state["msg"] for name, state in deploy.state.items() if not state["ok"]}
    assert failed == {}
    assert seen == {"r%02d" % i: "svc%02d" % i for i in range(SERVICES)}


def test_vassal_starts_and_reloads_run_four_per_cpu_at_once(tmp_path, monkeypatch):
    """They mostly wait for uWSGI (its checks run once a second): with concurrency 1, four wait
    together, and never more."""
    services = [dict(name="svc%02d" % i, release="r%02d" % i, venv="v1", python_version="3.11", root=str(tmp_path),
                     ini_path="", ini_content="", stats_socket="", reload_file="") for i in range(12)]
    module = types.SimpleNamespace(params=dict(root=str(tmp_path), helper="/bin/false", migrate_helper="/bin/false", pip={}, timeout=5,
                                               concurrency=1, env={}, services=services, bundle=None))
    together = threading.Barrier(4, timeout=10)
    lock, running, most = threading.Lock(), [0], [0]

    def apply(name, *_args, **_kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        together.wait()  # raises BrokenBarrierError when fewer than four are ever in flight
        with lock:
            running[0] -= 1
        return dict(action="chain-reload", master_pid=1)

    monkeypatch.setattr(deploy_batch.releases, "plan_switch",
                        lambda root, release, keep=0: dict(previous="r0", current=release, changed=False))
    monkeypatch.setattr(deploy_batch.vassal, "apply", apply)
    monkeypatch.setattr(deploy_batch.venvs, "present", lambda *_args: True)
    deploy = deploy_batch.Deploy(module)
    for step in ("step_layout", "step_release", "step_env", "step_check"):
        setattr(deploy, step, lambda _svc: None)
    state = deploy.run()
    assert {name: s["msg"] for name, s in state.items() if not s["ok"]} == {}
    assert most[0] == 4


def test_a_service_without_its_wheelhouse_fails_before_any_step_touches_the_host(tmp_path, monkeypatch):
    """What the controller could not fetch (no wheel for the host, a hash that does not match) fails
    that service at the virtualenv step before its account, release or anything else is made; the
    other services of the batch go on."""
    services = [dict(name=name, release="r1", venv="v1", python_version="3.11.2", root=str(tmp_path / name),
                     ini_path="", ini_content="", stats_socket="", reload_file="") for name in ("good", "locked")]
    services[1]["wheelhouse_error"] = "redis: the hash of redis-6.4.0-py3-none-any.whl (sha256:ab) is not one ..."
    module = types.SimpleNamespace(params=dict(root=str(tmp_path), helper="/bin/false", migrate_helper="/bin/false", pip={},
                                               timeout=5, concurrency=1, env={}, services=services, bundle=None))
    touched = []
    monkeypatch.setattr(deploy_batch.releases, "plan_switch",
                        lambda root, release, keep=0: dict(previous="r0", current=release, changed=False))
    monkeypatch.setattr(deploy_batch.vassal, "apply", lambda name, *_a, **_k: dict(action="chain-reload", master_pid=1))
    monkeypatch.setattr(deploy_batch.venvs, "present", lambda *_args: True)
    deploy = deploy_batch.Deploy(module)
    for step in ("step_layout", "step_release", "step_env", "step_check"):
        setattr(deploy, step, lambda svc, step=step: touched.append((step, svc["name"])))
    state = deploy.run()
    assert state["good"]["ok"] and not state["locked"]["ok"]
    assert state["locked"]["step"] == "virtualenv"
    assert state["locked"]["msg"].startswith("redis: the hash of redis-6.4.0")
    assert not state["locked"]["switched"] and not state["locked"]["env_changed"]
    assert [name for _step, name in touched] and all(name == "good" for _step, name in touched)
