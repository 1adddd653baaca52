"""The sdist action plugin (uWSGI's source for offline hosts) accepts only pinned requirements."""

import os
import sys

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "collections"))

from ansible.errors import AnsibleActionFail
from ansible_collections.microsvc.deploy.plugins.action.sdist import pinned


@pytest.mark.parametrize("value", ["uwsgi==2.0.28", "setuptools==78.1.1", "zope.interface==7.2", "a_b-c==1.0rc1"])
def test_pinned_requirements_pass(value):
    assert pinned([value], "package") == [value]


@pytest.mark.parametrize("value", [
    "uwsgi", "uwsgi>=2.0", "uwsgi==2.0.28\n", "uwsgi==2.0.28 --index-url http://evil/", "-e git+https://x/y",
    "uwsgi==2.0.28; python_version>'3'", "../x==1", "uwsgi==", "==2.0", "uwsgi==2.0.28\x00", "", None, 3,
    "http://evil/uwsgi-2.0.28.tar.gz", "uwsgi @ https://evil/x.tar.gz", "a" * 101 + "==1",
])
def test_anything_but_a_pin_is_refused_naming_the_field(value):
    with pytest.raises(AnsibleActionFail, match="build_requirements: .* is not a pinned requirement"):
        pinned(["wheel==0.45.1", value], "build_requirements")


# --- the platform and pip source choices, as the roles' argument specs validate them at run time ----

def validator(role, option):
    with open(os.path.join(ROOT, "roles", role, "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        spec = yaml.safe_load(handle)["argument_specs"]["main"]["options"][option]
    spec = {k: v for k, v in spec.items() if k not in ("description", "default")}
    return ArgumentSpecValidator({option: spec})


PLATFORM_OPTIONS = [("nginx_gateway", "nginx_gateway_platform"), ("uwsgi_emperor", "uwsgi_emperor_platform"),
                    ("uwsgi_vassal", "uwsgi_vassal_platform")]


@pytest.mark.parametrize("role,option", PLATFORM_OPTIONS)
@pytest.mark.parametrize("value", ["", "Debian", "RedHat"])
def test_platform_names_a_vars_file_of_the_role(role, option, value):
    assert not validator(role, option).validate({option: value}).error_messages
    # Debian's values are the defaults (vars/default.yml, which every platform loads first).
    assert value in ("", "Debian") or os.path.exists(os.path.join(ROOT, "roles", role, "vars", value + ".yml"))
    with open(os.path.join(ROOT, "roles", role, "vars", "default.yml"), encoding="utf-8") as handle:
        assert "Debian family" in handle.read()


@pytest.mark.parametrize("role,option", PLATFORM_OPTIONS)
@pytest.mark.parametrize("value", ["Gentoo", "RedHat\n", "../../../etc/passwd", "debian", "main", "RedHat.yml", 1])
def test_platform_outside_the_allow_list_is_refused(role, option, value):
    errors = validator(role, option).validate({option: value}).error_messages
    assert errors and option in str(errors[0]), errors


@pytest.mark.parametrize("value", ["wheel", "sdist\n", "git", "file:///x", ""])
def test_emperor_pip_source_outside_the_allow_list_is_refused(value):
    errors = validator("uwsgi_emperor", "uwsgi_emperor_pip_source").validate({"uwsgi_emperor_pip_source": value}).error_messages
    assert errors and "uwsgi_emperor_pip_source" in str(errors[0]), errors
