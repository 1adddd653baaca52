"""The platform, package and package-index settings, as the validation play checks them
(plugin_utils/settings.py):
hostile values are refused naming the setting and what is allowed; ordinary ones pass."""

import pytest
from ansible_collections.microsvc.deploy.plugins.plugin_utils.settings import SETTINGS, check_settings

GOOD = [
    ("microsvc_platform", ""), ("microsvc_platform", "RedHat"), ("nginx_gateway_platform", "Debian"),
    ("uwsgi_emperor_platform", "RedHat"), ("uwsgi_vassal_platform", ""),
    ("uwsgi_emperor_packages", []),
    ("uwsgi_emperor_packages", ["python3.11-dev", "gcc", "libc6-dev:amd64", "nginx=1.22.1-9", "g++", "python3.11"]),
    ("uwsgi_emperor_pip_source", "index"), ("uwsgi_emperor_pip_source", "sdist"),
    ("uwsgi_emperor_pip_index_url", ""), ("uwsgi_emperor_pip_index_url", "https://mirror.example/pypi/simple"),
    ("uwsgi_emperor_pip_index_url", "http://user:pass@10.0.0.5:8080/simple/"),
    ("uwsgi_emperor_cache_dir", "/var/cache/microsvc"),
]

HOSTILE = [
    ("microsvc_platform", "Gentoo", "must be one of"),
    ("microsvc_platform", "RedHat\n", "must be one of"),
    ("nginx_gateway_platform", "../../../etc/passwd", "must be one of"),
    ("uwsgi_emperor_platform", "redhat", "must be one of"),
    ("uwsgi_vassal_platform", True, "must be one of"),
    ("uwsgi_emperor_packages", "gcc", "list"),
    ("uwsgi_emperor_packages", ["--allow-unauthenticated"], "package name"),
    ("uwsgi_emperor_packages", ["gcc make"], "package name"),
    ("uwsgi_emperor_packages", ["gcc\n"], "control character"),
    ("uwsgi_emperor_packages", ["gcc;reboot"], "package name"),
    ("uwsgi_emperor_packages", ["/tmp/evil.deb"], "package name"),
    ("uwsgi_emperor_packages", ["a" * 129], "at most 128"),
    ("uwsgi_emperor_packages", ["gcc"] * 101, "at most 100"),
    ("uwsgi_emperor_pip_source", "wheelhouse", "must be one of"),
    ("uwsgi_emperor_pip_source", "sdist ", "must be one of"),
    ("uwsgi_emperor_pip_index_url", "file:///etc/passwd", "http(s) URL"),
    ("uwsgi_emperor_pip_index_url", "--trusted-host=evil", "http(s) URL"),
    ("uwsgi_emperor_pip_index_url", "https://mirror.example/simple --trusted-host evil", "http(s) URL"),
    ("uwsgi_emperor_pip_index_url", "https://mirror.example/simple\n", "control character"),
    ("uwsgi_emperor_cache_dir", "relative/cache", "absolute"),
    ("uwsgi_emperor_cache_dir", "/var/cache/../../etc", "absolute"),
]


def test_every_setting_of_issue_15_has_a_check():
    for name in {n for n, _ in GOOD}:
        assert SETTINGS.get(name) is not None, name


@pytest.mark.parametrize("name,value", GOOD, ids=["%s=%r" % g for g in GOOD])
def test_ordinary_values_pass(name, value):
    assert check_settings({name: value}) == []


@pytest.mark.parametrize("name,value,expected", HOSTILE, ids=["%s=%r" % h[:2] for h in HOSTILE])
def test_hostile_values_are_refused_naming_the_setting(name, value, expected):
    errors = check_settings({name: value})
    assert len(errors) == 1, errors
    assert errors[0].startswith("setting '%s': " % name), errors
    assert expected in errors[0], errors
