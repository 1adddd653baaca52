"""Removing services (the module vassal, state absent): all at once, each vassal before its units,
each service's files unlinked and never followed, and every failure named."""

import threading
import types

import pytest
from ansible_collections.microsvc.deploy.plugins.modules import vassal as module_vassal


class Exit(Exception):
    pass


def fake_module(services, check_mode=False):
    def exit_json(**kwargs):
        raise Exit(("exit", kwargs))

    def fail_json(**kwargs):
        raise Exit(("fail", kwargs))
    return types.SimpleNamespace(check_mode=check_mode, exit_json=exit_json, fail_json=fail_json,
                                 params=dict(services=services, units_dir="/nonexistent", timeout=5, lock=None))


def entry(tmp_path, name):
    rotate = tmp_path / ("microsvc-%s" % name)
    rotate.write_text("rotate\n")
    return dict(name=name, ini_path=str(tmp_path / (name + ".ini")), stats_socket=str(tmp_path / (name + ".stats")),
                remove_sockets=[], remove_files=[str(rotate)], purge=False, reason="no longer listed")


def run(module):
    with pytest.raises(Exit) as raised:
        module_vassal.remove(module)
    return raised.value.args[0]


def test_services_stop_together_each_vassal_before_its_units(tmp_path, monkeypatch):
    names = ["a", "b", "c", "d"]
    together = threading.Barrier(len(names), timeout=10)
    order = []
    monkeypatch.setattr(module_vassal.vassal, "stop", lambda ini, stats, sockets, timeout, name: (
        together.wait(), order.append(("vassal", name)))[0] is not None)
    monkeypatch.setattr(module_vassal.asgi, "stop", lambda name, path, timeout: False)
    monkeypatch.setattr(module_vassal.units, "remove_all", lambda name, units_dir: order.append(("units", name)) or [])
    kind, result = run(fake_module([entry(tmp_path, n) for n in names]))
    assert kind == "exit" and result["changed"]
    assert sorted(result["removed"]) == names and all(r["action"] == "stop" for r in result["removed"].values())
    for name in names:  # the barrier broke unless all four waited at once
        assert order.index(("vassal", name)) < order.index(("units", name))
    assert not list(tmp_path.glob("microsvc-*"))


def test_a_link_in_a_files_place_is_removed_and_its_target_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(module_vassal.vassal, "stop", lambda *args: False)
    monkeypatch.setattr(module_vassal.asgi, "stop", lambda *args: False)
    monkeypatch.setattr(module_vassal.units, "remove_all", lambda *args: [])
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0\n")
    svc = entry(tmp_path, "a")
    (tmp_path / "microsvc-a").unlink()
    (tmp_path / "microsvc-a").symlink_to(target)
    kind, result = run(fake_module([svc]))
    assert kind == "exit" and result["removed"]["a"]["action"] == "stop"
    assert not (tmp_path / "microsvc-a").is_symlink() and target.read_text() == "root:x:0:0\n"


def test_every_failure_is_named_and_the_others_are_still_removed(tmp_path, monkeypatch):
    def stop(ini, stats, sockets, timeout, name):
        if name == "stuck":
            raise module_vassal.vassal.VassalError("service 'stuck': something still listens")
        return True
    monkeypatch.setattr(module_vassal.vassal, "stop", stop)
    monkeypatch.setattr(module_vassal.asgi, "stop", lambda *args: False)
    monkeypatch.setattr(module_vassal.units, "remove_all", lambda *args: [])
    kind, result = run(fake_module([entry(tmp_path, "stuck"), entry(tmp_path, "fine")]))
    assert kind == "fail" and "service 'stuck'" in result["msg"]
    assert result["removed"]["fine"]["action"] == "stop" and "error" in result["removed"]["stuck"]


def test_check_mode_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(module_vassal.vassal, "stop", lambda *args: pytest.fail("stopped in check mode"))
    monkeypatch.setattr(module_vassal.units, "remove_all", lambda name, units_dir, check_mode=False: ["x.service"])
    kind, result = run(fake_module([entry(tmp_path, "a")], check_mode=True))
    assert kind == "exit" and result["changed"] and (tmp_path / "microsvc-a").exists()
