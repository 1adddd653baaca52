"""The vassal_env module: run as Ansible runs it (a script reading its arguments from a file)."""

import grp
import json
import os
import stat
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODULE = os.path.join(ROOT, "plugins", "modules", "vassal_env.py")
# The module imports this collection's module_utils, as Ansible ships them with it.
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "collections"))
GROUP = grp.getgrgid(os.getgid()).gr_name


def run(tmp_path, check_mode=False, **args):
    args.setdefault("group", GROUP)
    args["_ansible_check_mode"] = check_mode
    argfile = tmp_path / "args.json"
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    proc = subprocess.run([sys.executable, MODULE, str(argfile)], capture_output=True, text=True, check=False,
                          env=ENV)
    if args.get("content"):
        assert json.dumps(args["content"]) not in proc.stdout, "the content is secret: never in the result"
    return json.loads(proc.stdout)


def files(directory):
    return {p.name: p.read_text() for p in directory.iterdir() if p.name.startswith("env")}


def test_first_write_creates_a_private_file_and_an_empty_unset_list(tmp_path):
    env = tmp_path / "env"
    result = run(tmp_path, path=str(env), content="A=1\nB=2\n")
    assert result["changed"] and not result.get("failed"), result
    assert result["previous"] is False and result["unset"] == []
    assert files(tmp_path) == {"env": "A=1\nB=2\n", "env.unset": ""}
    assert stat.S_IMODE(env.stat().st_mode) == 0o640
    assert (env.stat().st_uid, env.stat().st_gid) == (0, os.getgid())
    again = run(tmp_path, path=str(env), content="A=1\nB=2\n")
    assert again["changed"] is False and again["previous"] is False


def test_change_keeps_the_previous_content_and_lists_dropped_names(tmp_path):
    env = tmp_path / "env"
    run(tmp_path, path=str(env), content="A=1\nB=2\n")
    result = run(tmp_path, path=str(env), content="A=3\nC=4\n")
    assert result["changed"] and result["previous"] is True and result["unset"] == ["B"]
    assert files(tmp_path) == {"env": "A=3\nC=4\n", "env.previous": "A=1\nB=2\n", "env.unset": "B\n"}
    assert stat.S_IMODE((tmp_path / "env.previous").stat().st_mode) == 0o640
    settled = run(tmp_path, path=str(env), state="settled")
    assert settled["changed"] and settled["previous"] is False
    assert files(tmp_path) == {"env": "A=3\nC=4\n", "env.unset": "B\n"}
    # A name that comes back leaves the unset list; one dropped later joins it.
    result = run(tmp_path, path=str(env), content="B=5\n")
    assert result["unset"] == ["A", "C"]
    assert files(tmp_path)["env.unset"] == "A\nC\n"


def test_restore_puts_the_previous_content_back_and_unsets_the_failed_names(tmp_path):
    env = tmp_path / "env"
    run(tmp_path, path=str(env), content="A=1\nB=2\n")
    run(tmp_path, path=str(env), content="A=1\nNEW=x\n")
    result = run(tmp_path, path=str(env), state="restored")
    assert result["changed"] and result["previous"] is False and result["unset"] == ["NEW"]
    assert files(tmp_path) == {"env": "A=1\nB=2\n", "env.unset": "NEW\n"}
    nothing_kept = run(tmp_path, path=str(env), state="restored")
    assert nothing_kept["changed"] is False
    assert files(tmp_path) == {"env": "A=1\nB=2\n", "env.unset": "NEW\n"}


def test_check_mode_reports_and_writes_nothing(tmp_path):
    env = tmp_path / "env"
    run(tmp_path, path=str(env), content="A=1\n")
    result = run(tmp_path, check_mode=True, path=str(env), content="A=2\n")
    assert result["changed"] is True
    assert files(tmp_path) == {"env": "A=1\n", "env.unset": ""}


def test_unknown_group_fails_clearly(tmp_path):
    result = run(tmp_path, path=str(tmp_path / "env"), content="A=1\n", group="no-such-group-here")
    assert result["failed"] and "group no-such-group-here does not exist" in result["msg"]
    assert files(tmp_path) == {}
