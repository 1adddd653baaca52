"""`ansible-playbook site.yml` with a bad service list fails in the validation play, naming the
service and the field, before any host is contacted. No container is needed: the only host
points at a container that does not exist, so any attempt to reach it would show as
UNREACHABLE instead of the validation message."""

import os
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PLAYBOOK = os.path.join(ROOT, "site.yml")
BIN = os.path.dirname(sys.executable)


def run_site(tmp_path, services, extra=None, hosts=("target",)):
    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True, exist_ok=True)
    (tmp_path / "code").mkdir(exist_ok=True)
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {host: {
        "ansible_connection": "community.docker.docker",
        "ansible_host": "microsvc-test-no-such-container",
    } for host in hosts}}}))
    (inv / "group_vars" / "all" / "services.yml").write_text(yaml.safe_dump({"microsvc_services": services}))
    (inv / "group_vars" / "all" / "sources.yml").write_text(yaml.safe_dump({"microsvc_source_roots": [str(tmp_path)]}))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", str(inv), PLAYBOOK] + (extra or [])
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


GOOD = {"name": "good", "source": "../code", "module": "app"}

CASES = [
    ("unsafe-name", [dict(GOOD, name="../evil")], "service '../evil': field 'name'"),
    ("space-in-name", [dict(GOOD, name="a b")], "service 'a b': field 'name'"),
    ("duplicate-name", [GOOD, dict(GOOD, route="/other/")], "service 'good': field 'name'"),
    ("duplicate-route", [GOOD, dict(GOOD, name="twin", route="/api/good/")], "service 'twin': field 'route'"),
    ("route-slashes", [dict(GOOD, route="api/good")], "service 'good': field 'route'"),
    ("unknown-key", [dict(GOOD, colour="blue")], "service 'good': field 'colour'"),
    ("wrong-type", [dict(GOOD, processes="lots")], "service 'good': field 'processes'"),
]


@pytest.mark.parametrize("services,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_list_fails_before_any_host_is_touched(tmp_path, services, expected):
    proc = run_site(tmp_path, services)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "The service list or a setting is invalid; no host was changed." in out, out
    assert expected in out, out
    assert "UNREACHABLE" not in out and "PLAY [Check the hosts" not in out, out


def test_good_list_passes_validation_then_needs_the_host(tmp_path):
    """The control case: the same setup with a valid list gets past validation and then
    (only then) tries to reach the host."""
    proc = run_site(tmp_path, [GOOD])
    out = proc.stdout + proc.stderr
    assert "The service list or a setting is invalid" not in out, out
    assert "PLAY [Check the hosts" in out, out
    assert proc.returncode != 0 and ("UNREACHABLE" in out or "unreachable=1" in out or "FAILED" in out), out


def test_unknown_selected_service(tmp_path):
    proc = run_site(tmp_path, [GOOD], ["-e", "deploy_services=good,ghost"])
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "deploy_services: unknown service 'ghost'" in out, out


# --- secrets only from vault (microsvc_require_vault) ----------------------------------------

def vault(tmp_path, *args):
    """Run ansible-vault with a password file of this test; returns its stdout."""
    password = tmp_path / "vault-pass"
    password.write_text("test-only-password\n")
    proc = subprocess.run([os.path.join(BIN, "ansible-vault")] + list(args) + ["--vault-password-file", str(password)],
                          capture_output=True, text=True, check=True, cwd=str(tmp_path))
    return proc.stdout


def secret_site(tmp_path, env, require=True, vault_file=None):
    """site.yml with one service whose env is `env` (YAML text, may hold !vault values)."""
    inv = tmp_path / "inventory" / "group_vars" / "all"
    inv.mkdir(parents=True)
    (inv / "settings.yml").write_text("microsvc_require_vault: %s\n" % ("true" if require else "false"))
    (inv / "app.yml").write_text("microsvc_app_env:\n" + "".join("  " + line + "\n" for line in env.splitlines()))
    if vault_file:
        (inv / "vault.yml").write_text(vault_file)
        vault(tmp_path, "encrypt", str(inv / "vault.yml"))
    service = dict(GOOD, name="billing", env="{{ microsvc_app_env }}")
    return run_site(tmp_path, [service], ["--vault-password-file", str(tmp_path / "vault-pass")])


def test_secret_in_clear_is_refused_when_vault_is_required(tmp_path):
    vault(tmp_path, "--version")
    proc = secret_site(tmp_path, "DB_PASSWORD: hunter2\nLOG_LEVEL: info\n")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "The service list or a setting is invalid; no host was changed." in out, out
    assert "service 'billing': field 'env.DB_PASSWORD': the name matches the secret pattern '*PASSWORD*'" in out, out
    assert "LOG_LEVEL" not in out.split("no host was changed.")[-1], out
    assert "hunter2" not in out, out
    assert "UNREACHABLE" not in out and "PLAY [Check the hosts" not in out, out


def test_inline_vault_and_vault_file_values_pass_when_vault_is_required(tmp_path):
    inline = vault(tmp_path, "encrypt_string", "hunter2", "--name", "DB_PASSWORD")
    proc = secret_site(tmp_path, inline + "API_TOKEN: \"{{ vault_api_token }}\"\nLOG_LEVEL: info\n",
                       vault_file="vault_api_token: s3cret-from-a-vault-file\n")
    out = proc.stdout + proc.stderr
    assert "The service list or a setting is invalid" not in out, out
    assert "PLAY [Check the hosts" in out, out


def test_secret_in_clear_is_accepted_unless_vault_is_required(tmp_path):
    vault(tmp_path, "--version")
    proc = secret_site(tmp_path, "DB_PASSWORD: hunter2\n", require=False)
    out = proc.stdout + proc.stderr
    assert "The service list or a setting is invalid" not in out, out
    assert "PLAY [Check the hosts" in out, out
