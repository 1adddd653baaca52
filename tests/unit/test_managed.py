"""Directories and files made so in one call (plugins/module_utils/managed.py): the module
managed_files, and nginx_config for the gateway's files outside nginx's directory."""

import os
import types

from ansible_collections.microsvc.deploy.plugins.module_utils.managed import ensure


def module(check_mode=False):
    def fail_json(**kwargs):
        raise AssertionError(kwargs["msg"])
    return types.SimpleNamespace(check_mode=check_mode, fail_json=fail_json)


def test_directories_then_files_are_made_and_reported_once(tmp_path):
    logs = tmp_path / "logs"
    files = [{"dest": str(logs / "rotate"), "content": "daily\n", "mode": "0640"}]
    changed, diffs = ensure(module(), [{"path": str(logs), "mode": "0750"}], files)
    assert changed == [str(logs), str(logs / "rotate")] and len(diffs) == 2
    assert oct(os.stat(logs).st_mode & 0o7777) == "0o750"
    assert (logs / "rotate").read_text() == "daily\n" and oct(os.stat(logs / "rotate").st_mode & 0o777) == "0o640"
    assert ensure(module(), [{"path": str(logs), "mode": "0750"}], files) == ([], [])


def test_check_mode_reports_and_changes_nothing(tmp_path):
    changed, _ = ensure(module(check_mode=True), [{"path": str(tmp_path / "d")}],
                        [{"dest": str(tmp_path / "f"), "content": "x"}])
    assert changed == [str(tmp_path / "d"), str(tmp_path / "f")]
    assert not (tmp_path / "d").exists() and not (tmp_path / "f").exists()


def test_a_link_at_a_files_place_is_replaced_never_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    dest = tmp_path / "nginx.conf"
    dest.symlink_to(target)
    changed, _ = ensure(module(), [], [{"dest": str(dest), "content": "ours\n"}])
    assert changed == [str(dest)]
    assert not dest.is_symlink() and dest.read_text() == "ours\n"
    assert target.read_text() == "keep\n"


def test_a_changed_mode_alone_is_a_change(tmp_path):
    dest = tmp_path / "f"
    dest.write_text("x")
    os.chmod(dest, 0o600)
    assert ensure(module(), [], [{"dest": str(dest), "content": "x", "mode": "0644"}])[0] == [str(dest)]
    assert oct(os.stat(dest).st_mode & 0o777) == "0o644"


def test_a_services_log_rotation_waits_for_its_account(tmp_path, monkeypatch):
    """logrotate switches to the service's account (su): its file is written only once the account
    exists; the others are named as pending, for the deploy that makes the account."""
    from ansible_collections.microsvc.deploy.plugins.module_utils import managed

    monkeypatch.setattr(managed.fsutil, "user_exists", lambda name: name == "billing")
    files = [{"service": name, "dest": str(tmp_path / ("microsvc-" + name)), "content": "su %s %s\n" % (name, name),
              "mode": "0644"} for name in ("billing", "search")]
    monkeypatch.setattr(managed, "ids", lambda module, entry: (os.getuid(), os.getgid()))
    changed, _, pending = managed.ensure_for_accounts(module(), files)
    assert changed == [str(tmp_path / "microsvc-billing")] and pending == ["search"]
    assert (tmp_path / "microsvc-billing").read_text() == "su billing billing\n"
    assert not (tmp_path / "microsvc-search").exists()
    # Unchanged the next time; a link planted at its place is replaced, never followed.
    assert managed.ensure_for_accounts(module(), files)[0] == []
    (tmp_path / "microsvc-billing").unlink()
    (tmp_path / "target").write_text("keep\n")
    (tmp_path / "microsvc-billing").symlink_to(tmp_path / "target")
    assert managed.ensure_for_accounts(module(), files)[0] == [str(tmp_path / "microsvc-billing")]
    assert not (tmp_path / "microsvc-billing").is_symlink() and (tmp_path / "target").read_text() == "keep\n"
