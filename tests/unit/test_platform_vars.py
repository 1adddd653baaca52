"""Each role's platform variables are layered as linux-system-roles layer them: vars/default.yml, then
<os_family>, <distribution>, <distribution>_<major> and <distribution>_<version> (each if present), or the
defaults and the family a <role>_platform names. The tests render each role's tasks/set_vars.yml loop and
`when:` as Ansible would, with the facts host_check reports for each platform."""

import os

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ROLES = sorted(r for r in os.listdir(os.path.join(ROOT, "roles"))
               if os.path.exists(os.path.join(ROOT, "roles", r, "tasks", "set_vars.yml")))


def facts(distribution, os_family, version):
    return {"distribution": distribution, "os_family": os_family, "distribution_version": version,
            "distribution_major_version": version.split(".")[0]}


PLATFORMS = {
    "debian-12": facts("Debian", "Debian", "12.7"),
    "debian-13": facts("Debian", "Debian", "13.1"),
    "ubuntu-24.04": facts("Ubuntu", "Debian", "24.04"),
    "rhel-9": facts("RedHat", "RedHat", "9.4"),
    "amazon-linux-2023": facts("Amazon", "RedHat", "2023"),
    "unknown": facts("Slackware", "Slackware", "15.0"),
}
CANDIDATES = {
    "debian-12": ["default.yml", "Debian.yml", "Debian_12.yml", "Debian_12.7.yml"],
    "debian-13": ["default.yml", "Debian.yml", "Debian_13.yml", "Debian_13.1.yml"],
    "ubuntu-24.04": ["default.yml", "Debian.yml", "Ubuntu.yml", "Ubuntu_24.yml", "Ubuntu_24.04.yml"],
    "rhel-9": ["default.yml", "RedHat.yml", "RedHat_9.yml", "RedHat_9.4.yml"],
    "amazon-linux-2023": ["default.yml", "RedHat.yml", "Amazon.yml", "Amazon_2023.yml"],
    "unknown": ["default.yml", "Slackware.yml", "Slackware_15.yml", "Slackware_15.0.yml"],
}
LOADED = {"debian-12": ["default.yml"], "debian-13": ["default.yml"], "ubuntu-24.04": ["default.yml"],
          "rhel-9": ["default.yml", "RedHat.yml"], "amazon-linux-2023": ["default.yml", "RedHat.yml"],
          "unknown": ["default.yml"]}


def load_task(role):
    with open(os.path.join(ROOT, "roles", role, "tasks", "set_vars.yml"), encoding="utf-8") as handle:
        tasks = yaml.safe_load(handle)
    loads = [t for t in tasks if "ansible.builtin.include_vars" in t]
    assert len(loads) == 1, "one task loads the platform variables"
    return loads[0]


def render(expression, variables):
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    templar = Templar(loader=DataLoader(), variables=variables)
    return templar.template(trust_as_template(expression))


def candidates(role, host_facts, platform=""):
    """The files the load task would try for a host, in order, and those it would load."""
    task = load_task(role)
    role_path = os.path.join(ROOT, "roles", role)
    variables = {"ansible_facts": host_facts, "role_path": role_path, "%s_platform" % role: platform}
    names = render(task["loop"], variables)
    loop_var = task["loop_control"]["loop_var"]
    loaded = [n for n in names if render("{{ %s }}" % task["when"], dict(variables, **{loop_var: n}))]
    return list(names), loaded


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_candidate_files_in_increasing_priority(role, platform):
    names, loaded = candidates(role, PLATFORMS[platform])
    assert names == CANDIDATES[platform]
    assert loaded == LOADED[platform]


@pytest.mark.parametrize("role", ROLES)
def test_a_named_platform_is_layered_over_the_defaults_alone(role):
    names, loaded = candidates(role, PLATFORMS["debian-12"], platform="RedHat")
    assert names == ["default.yml", "RedHat.yml"]
    assert loaded == names


@pytest.mark.parametrize("role", ROLES)
def test_the_task_loads_each_candidate_from_the_roles_vars(role):
    task = load_task(role)
    loop_var = task["loop_control"]["loop_var"]
    assert loop_var.startswith("__%s_" % role)
    assert task["ansible.builtin.include_vars"] == "{{ role_path }}/vars/{{ %s }}" % loop_var


@pytest.mark.parametrize("role", ROLES)
def test_platform_files_set_only_the_roles_internal_variables(role):
    folder = os.path.join(ROOT, "roles", role, "vars")
    for name in sorted(os.listdir(folder)):
        if name == "main.yml":
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
        assert values or name != "default.yml", "the defaults of platforms without a file of their own"
        assert all(key.startswith("__%s_" % role) for key in values), name
