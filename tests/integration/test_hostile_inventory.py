"""Every hostile input of tests/hostile_cases.py and every hostile source of
tests/hostile_sources.py, through `ansible-playbook site.yml`, in one run: each is refused by
the validation play, naming the service (or the variable) and the field, before any host is
contacted. The hosts point at containers that do not exist, so any attempt to reach one would
show; a canary file on the controller, which hostile archives aim at, must keep its content,
mode, owner and mtime.

One run holds every case: host "target" gets the hostile service list, and every hostile
setting is a host variable of a host of its own. The plan is made once for the run: one report
holds every refusal, each naming its host."""

import os
import re
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import hostile_cases as cases
import hostile_sources as hostile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.dirname(sys.executable)


def _reports(out):
    """host -> the text of its failure (yaml callback: 'fatal: [host]: FAILED! =>' blocks)."""
    reports = {}
    for chunk in out.split("fatal: [")[1:]:
        host, _, text = chunk.partition("]")
        reports[host] = reports.get(host, "") + text.split("\nTASK [")[0].split("\nPLAY ")[0]
    return reports


def test_every_hostile_input_is_refused_before_any_host_is_contacted(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text("def application(e, s):\n    return []\n")
    canary = hostile.make_canary(tmp_path)
    before = hostile.fingerprint(canary)
    built = tmp_path / "built"
    built.mkdir()

    services, expected = [], []
    for index, (case_id, _, overrides, field, fragment) in enumerate(cases.SERVICE_CASES):
        name = "c%03d" % index
        services.append(cases.entry(name, overrides, str(code)))
        expected.append((case_id, "service '%s': field '%s':" % (name, field), fragment))
    for index, (case_id, _, name, fragment) in enumerate(cases.NAME_CASES):
        services.append(cases.entry(name, {}, str(code)))
        label = "service '%s'" % name if name.isprintable() else "(name %r)" % name
        expected.append((case_id, label, "field 'name': ", fragment))
    for case_id, path, fragment in hostile.tar_cases(built, canary) + hostile.zip_cases(built):
        name = "a" + re.sub(r"[^a-z0-9]", "", case_id)[:30]
        services.append({"name": name, "source": {"type": "archive", "path": path}, "module": "app"})
        expected.append((case_id, "service '%s': field 'source.path':" % name, fragment))
    for case_id, path, fragment, field in hostile.dir_cases(tmp_path / "dirs", canary):
        name = "d" + re.sub(r"[^a-z0-9]", "", case_id)[:30]
        services.append({"name": name, "source": path, "module": "app"})
        expected.append((case_id, "service '%s': field '" % name, fragment))
    repo = hostile.git_repo(str(tmp_path / "repo"), {"app.py": "x = 1\n"}, symlinks=[("secret", canary)])
    services.append({"name": "gsymlink", "source": {"type": "git", "repo": "file://" + repo, "version": "v1"},
                     "module": "app"})
    expected.append(("git-symlink-out", "service 'gsymlink': field 'source.repo':", "absolute path"))

    inv = tmp_path / "inventory"
    for sub in ("group_vars/all", "host_vars"):
        (inv / sub).mkdir(parents=True)
    hosts = {"target": {"ansible_connection": "community.docker.docker",
                        "ansible_host": "microsvc-test-no-such-container"}}
    (inv / "group_vars" / "all" / "main.yml").write_text(yaml.safe_dump({
        "microsvc_services": [{"name": "good", "source": str(code), "module": "app"}],
        "microsvc_source_roots": [str(tmp_path)],
        "microsvc_cache_dir": str(tmp_path / "cache"),
    }))
    (inv / "host_vars" / "target.yml").write_text(yaml.safe_dump({"microsvc_services": services}))
    setting_hosts = {}
    for index, (case_id, _, variable, value, fragment) in enumerate(cases.SETTING_CASES):
        host = "s%02d" % index
        hosts[host] = dict(hosts["target"])
        (inv / "host_vars" / (host + ".yml")).write_text(yaml.safe_dump({variable: value}))
        setting_hosts[host] = (case_id, variable, fragment)
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts}}))

    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORKS="50", PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", str(inv), os.path.join(ROOT, "site.yml")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "UNREACHABLE" not in out and "No such container" not in out, out
    assert "PLAY [Check the hosts" not in out and "PLAY [Gateway]" not in out, out
    reports = _reports(out)

    assert len(reports) == 1, out  # the planning host's: every host's refusals
    target = next(iter(reports.values()))
    assert "The service list or a setting is invalid; no host was changed." in target, out
    assert "_Ansible" not in target and "<class" not in target, target
    lines = [line.strip() for line in target.splitlines()]
    missing = []
    for case in expected:
        case_id, fragments = case[0], case[1:]
        if not any(line.startswith("- host target: ") and all(f in line for f in fragments) for line in lines):
            missing.append((case_id, fragments))
    assert not missing, (missing, target)

    for host, (case_id, variable, fragment) in setting_hosts.items():
        assert any(line.startswith("- host %s: " % host) and variable in line and fragment in line
                   for line in lines), (case_id, target)

    assert len(expected) + len(setting_hosts) >= 60
    assert hostile.fingerprint(canary) == before
    assert hostile.CANARY_TEXT not in out
