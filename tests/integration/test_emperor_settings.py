"""uwsgi_emperor's package list and package index reach apt/dnf and pip as arguments: hostile values
fail in the role's first task, naming the variables, before anything is installed. Runs the role's
install.yml on the controller in check mode (the hostile cases stop before any package query)."""

import json
import os
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.dirname(sys.executable)


def run_install(tmp_path, packages, index_url=""):
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [
        {"name": "Run the role's install tasks", "ansible.builtin.include_role": {
            "name": "microsvc.deploy.uwsgi_emperor", "tasks_from": "install.yml"}}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    (tmp_path / "vars.json").write_text(json.dumps({
        "uwsgi_emperor_packages": packages, "uwsgi_emperor_pip_index_url": index_url,
        # The platform's variables, as set_vars.yml would load them (not run here).
        "__uwsgi_emperor_packages": [], "__uwsgi_emperor_from_pypi": False,
        "__uwsgi_emperor_package_query": ["true"]}))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "--check",
                           str(tmp_path / "play.yml"), "-e", "@%s" % (tmp_path / "vars.json")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, proc.stdout + proc.stderr


HOSTILE = [
    ("option", ["--allow-unauthenticated"], ""),
    ("option-o", ["-oDebug::pkgProblemResolver=1"], ""),
    ("space", ["gcc make"], ""),
    ("newline", ["gcc\n"], ""),
    ("shell", ["gcc;reboot"], ""),
    ("path", ["/tmp/evil.deb"], ""),
    ("too-long", ["a" * 129], ""),
    ("empty-name", [""], ""),
    ("index-scheme", ["gcc"], "file:///etc/passwd"),
    ("index-option", ["gcc"], "--trusted-host=evil"),
    ("index-space", ["gcc"], "https://mirror.example/simple --trusted-host evil"),
    ("index-newline", ["gcc"], "https://mirror.example/simple\n"),
    ("index-too-long", ["gcc"], "https://" + "a" * 2001),
]


@pytest.mark.parametrize("packages,index_url", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_package_settings_are_refused(tmp_path, packages, index_url):
    rc, out = run_install(tmp_path, packages, index_url)
    assert rc != 0, out
    assert "Emperor | Check the package list and the package index" in out, out
    assert "uwsgi_emperor_packages must be package names" in out, out
    assert "uwsgi_emperor_pip_index_url empty or an http(s) URL" in out, out


def test_package_names_with_versions_and_a_mirror_pass(tmp_path):
    """The control case: the same run gets past the check with ordinary values."""
    rc, out = run_install(tmp_path, ["python3.11-dev", "gcc", "libc6-dev:amd64", "nginx=1.22.1-9", "g++"],
                          "https://mirror.example/pypi/simple")
    assert "must be package names" not in out, out
    assert rc == 0, out


@pytest.mark.parametrize("name,value", [("microsvc_platform", "Gentoo"), ("uwsgi_emperor_pip_source", "git"),
                                        ("uwsgi_emperor_packages", ["--force-yes"])])
def test_hostile_settings_fail_the_validation_play_before_any_host(tmp_path, name, value):
    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (tmp_path / "code").mkdir()
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"target": {
        "ansible_connection": "community.docker.docker", "ansible_host": "microsvc-test-no-such-container"}}}}))
    (inv / "group_vars" / "all" / "settings.yml").write_text(yaml.safe_dump({
        name: value, "microsvc_source_roots": [str(tmp_path)],
        "microsvc_services": [{"name": "good", "source": "../code", "module": "app"}]}))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", str(inv), os.path.join(ROOT, "site.yml")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "The service list or a setting is invalid; no host was changed." in out, out
    assert "setting '%s': " % name in out, out
    assert "UNREACHABLE" not in out and "PLAY [Gateway]" not in out, out
