"""The gateway's configuration made live in the call that installs it (nginx_config's reload):
only where nginx runs, never when a restart is due, and never past a failing nginx -t."""

import types

import pytest
from ansible_collections.microsvc.deploy.plugins.modules import nginx_config


class Failed(Exception):
    pass


def fake(reload, answers=None):
    """A module whose commands are recorded; ``answers`` maps a command's second word to its rc."""
    calls = []

    def run_command(argv):
        calls.append(argv)
        return (answers or {}).get(argv[1], 0), "", "nginx: [emerg] broken" if argv[1] == "-t" else ""

    def fail_json(**kwargs):
        raise Failed(kwargs["msg"])

    module = types.SimpleNamespace(params={"reload": reload, "nginx_binary": "/usr/sbin/nginx", "main_file": "nginx.conf"},
                                   run_command=run_command, fail_json=fail_json,
                                   get_bin_path=lambda name: "/usr/bin/" + name)
    return module, calls


def result(system_changed=()):
    return {"changed": True, "system_changed": list(system_changed), "reloaded": False}


def test_an_active_nginx_is_tested_on_the_live_tree_then_reloaded():
    module, calls = fake({"service": "nginx"})
    out = result()
    nginx_config.reload_live(module, "/etc/nginx", out)
    assert calls == [["/usr/bin/systemctl", "is-active", "--quiet", "nginx"],
                     ["/usr/sbin/nginx", "-t", "-q", "-c", "/etc/nginx/nginx.conf"],
                     ["/usr/bin/systemctl", "reload", "nginx"]]
    assert out["reloaded"] is True


def test_without_a_service_nginx_is_not_touched():
    module, calls = fake({})
    out = result()
    nginx_config.reload_live(module, "/etc/nginx", out)
    assert calls == [] and out["reloaded"] is False


def test_a_changed_drop_in_leaves_the_restart_to_the_caller():
    module, calls = fake({"service": "nginx", "unless_changed": ["/etc/systemd/system/nginx.service.d/x.conf"]})
    out = result(["/var/log/nginx/microsvc", "/etc/systemd/system/nginx.service.d/x.conf"])
    nginx_config.reload_live(module, "/etc/nginx", out)
    assert calls == [] and out["reloaded"] is False


def test_a_stopped_nginx_is_left_for_the_caller_to_start():
    module, calls = fake({"service": "nginx"}, {"is-active": 3})
    out = result()
    nginx_config.reload_live(module, "/etc/nginx", out)
    assert [c[1] for c in calls] == ["is-active"] and out["reloaded"] is False


def test_a_live_tree_that_fails_nginx_t_is_never_reloaded():
    module, calls = fake({"service": "nginx"}, {"-t": 1})
    with pytest.raises(Failed, match="not reloaded.*\n.*broken"):
        nginx_config.reload_live(module, "/etc/nginx", result())
    assert "reload" not in [c[1] for c in calls]


def test_a_failed_reload_fails_the_call():
    module, _ = fake({"service": "nginx"}, {"reload": 1})
    with pytest.raises(Failed, match="systemctl reload nginx failed"):
        nginx_config.reload_live(module, "/etc/nginx", result())
