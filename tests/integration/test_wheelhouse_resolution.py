"""The controller's wheelhouse against the real package index (PyPI): requirements resolved for
the host's target, not for the controller's Python (3.11.7 here), hash-locked files checked before
any host changes, and a requirement without a wheel for the host refused by name.

These need PyPI; without it they are skipped, with the reason printed (pytest -rs)."""

from __future__ import annotations

import os
import socket
import tarfile

import pytest
from ansible_collections.microsvc.deploy.plugins.plugin_utils.target import target_environment
from ansible_collections.microsvc.deploy.plugins.plugin_utils.wheelhouse import WheelhouseError, build_wheelhouse

DEBIAN12 = dict(implementation="cpython", version="3.11.2", machine="x86_64", libc="glibc", libc_version="2.36")
DEBIAN13 = dict(implementation="cpython", version="3.13.5", machine="x86_64", libc="glibc", libc_version="2.41")
ARM = dict(DEBIAN12, machine="aarch64")
REQUIREMENTS = 'redis==6.4.0\ntyping-extensions==4.15.0; python_version >= "3.13"\n'
LOCKED = """\
async-timeout==5.0.1 ; python_full_version < '3.11.3' \\
    --hash=sha256:39e3809566ff85354557ec2398b55e096c8364bacac9405a7a1fa429e77fe76c \\
    --hash=sha256:d9321a7a3d5a6a5e187e824d2fa0793ce379a202935782d555d6e9d2735677d3
    # via redis
redis==6.4.0 \\
    --hash=sha256:b01bc7282b8444e28ec36b261df5375183bb47a07eb9c603f284e89cbc5ef010 \\
    --hash=sha256:f0544fa9604264e9464cdf4814e7d4830f74b165d52f2a330a760a88dd248b7f
"""


@pytest.fixture(scope="module", autouse=True)
def pypi():
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
    except OSError as exc:
        pytest.skip("PyPI cannot be reached from here: %s" % exc)


def wheels(archive):
    with tarfile.open(archive) as tar:
        return sorted(os.path.basename(m.name).split("-")[0].lower() for m in tar.getmembers() if m.name.endswith(".whl"))


def test_debian12_gets_redis_dependency_its_patch_version_needs(tmp_path):
    archive = build_wheelhouse(REQUIREMENTS, target_environment(DEBIAN12), str(tmp_path))
    # async-timeout: python_full_version < "3.11.3" holds on 3.11.2, not on the controller's 3.11.7.
    assert wheels(archive) == ["async_timeout", "redis"]


def test_debian13_gets_what_python_313_markers_select(tmp_path):
    archive = build_wheelhouse(REQUIREMENTS, target_environment(DEBIAN13), str(tmp_path))
    assert wheels(archive) == ["redis", "typing_extensions"]


def test_aarch64_gets_aarch64_wheels_of_a_binary_package(tmp_path):
    archive = build_wheelhouse("PyYAML==6.0.3\n", target_environment(ARM), str(tmp_path))
    with tarfile.open(archive) as tar:
        names = [m.name for m in tar.getmembers() if m.name.endswith(".whl")]
    assert len(names) == 1 and "aarch64" in names[0] and "cp311" in names[0], names


def test_a_hash_locked_file_is_downloaded_and_checked(tmp_path):
    archive = build_wheelhouse(LOCKED, target_environment(DEBIAN12), str(tmp_path))
    assert wheels(archive) == ["async_timeout", "redis"]


def test_one_altered_hash_fails_naming_the_package_and_builds_nothing(tmp_path):
    altered = LOCKED.replace("b01bc7282b8444e28ec36b261df5375183bb47a07eb9c603f284e89cbc5ef010", "0" * 64)
    altered = altered.replace("f0544fa9604264e9464cdf4814e7d4830f74b165d52f2a330a760a88dd248b7f", "1" * 64)
    with pytest.raises(WheelhouseError, match=r"^redis: the hash of redis-6\.4\.0-py3-none-any\.whl"):
        build_wheelhouse(altered, target_environment(DEBIAN12), str(tmp_path))
    assert not [n for n in os.listdir(tmp_path / "wheelhouse") if n.endswith(".tar.gz")]


def test_a_dependency_missing_from_the_locked_file_is_named(tmp_path):
    partial = LOCKED.split("    # via redis\n", 1)[1]  # redis only: its async-timeout has no hash
    with pytest.raises(WheelhouseError, match=r"^async-timeout \(async_timeout-5\.0\.1-.*has no --hash"):
        build_wheelhouse(partial, target_environment(DEBIAN12), str(tmp_path))


def test_a_requirement_without_a_wheel_for_the_host_is_refused_by_name(tmp_path):
    # numpy 1.26.4 has no wheel for CPython 3.13 (its sdist would need a compiler on the host).
    with pytest.raises(WheelhouseError) as exc:
        build_wheelhouse("numpy==1.26.4\n", target_environment(DEBIAN13), str(tmp_path))
    message = str(exc.value)
    assert message.startswith("numpy: no wheel for the host's target (CPython 3.13.5 on Linux x86_64, glibc 2.41)")
    assert "pin it" in message and "build dependencies" in message


def test_a_set_resolved_again_takes_its_wheels_from_the_controllers_store(tmp_path, monkeypatch):
    from ansible_collections.microsvc.deploy.plugins.plugin_utils import wheelhouse

    calls = []
    real = wheelhouse.subprocess.run

    def spy(cmd, **kwargs):
        calls.append(cmd)
        return real(cmd, **kwargs)

    monkeypatch.setattr(wheelhouse.subprocess, "run", spy)
    first = build_wheelhouse(REQUIREMENTS, target_environment(DEBIAN12), str(tmp_path))
    # Another text, the same set on Python 3.11.2 (redis and the async-timeout it needs there).
    second = build_wheelhouse("redis>=6.4.0,<=6.4.0\n", target_environment(DEBIAN12), str(tmp_path))
    assert first != second
    assert wheels(first) == wheels(second) == ["async_timeout", "redis"]
    assert [cmd for cmd in calls if "download" in cmd] == [calls[1]]  # the first build's only
