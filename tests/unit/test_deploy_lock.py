"""The deploy lock of a service (plugins/module_utils/deploy_lock.py and the action plugin's view
of the controller), on a scratch lock directory: who holds it, when it waits, when a gone
holder's lock is broken, and that a lock in use is never broken."""

import json
import os
import stat
import subprocess
import sys
import time
import types

import pytest
from ansible.errors import AnsibleActionFail
from ansible_collections.microsvc.deploy.plugins.module_utils import deploy_lock
from ansible_collections.microsvc.deploy.plugins.plugin_utils import deploy_lock as controller


def holder(run, **over):
    record = dict(run=run, controller="ctl-%s" % run, user="alice", pid=4242, started="2025-01-02T03:04:05Z",
                  playbook="site.yml", purpose="deploy", identity={"boot_id": "b", "pid_ns": "pid:[1]"})
    record.update(over)
    return record


@pytest.fixture()
def lock_dir(tmp_path):
    return str(tmp_path / "locks")


def test_a_lock_names_its_holder_in_a_root_only_record(lock_dir):
    acquired, blocked, broken = deploy_lock.try_acquire(lock_dir, ["billing"], holder("a"), 900, now=1000)
    assert (acquired, blocked, broken) == (["billing"], {}, [])
    path = os.path.join(lock_dir, "billing.lock")
    with open(path, encoding="utf-8") as handle:
        record = json.load(handle)
    assert record["run"] == "a" and record["user"] == "alice" and record["pid"] == 4242
    assert record["acquired"] == record["renewed"] == 1000 and record["lease"] == 900
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(lock_dir).st_mode) == 0o700


def test_the_same_run_renews_and_another_run_is_blocked_with_the_holder(lock_dir):
    deploy_lock.try_acquire(lock_dir, ["billing"], holder("a"), 900, now=1000)
    assert deploy_lock.try_acquire(lock_dir, ["billing"], holder("a"), 900, now=1100)[0] == ["billing"]
    acquired, blocked, broken = deploy_lock.try_acquire(lock_dir, ["billing"], holder("b"), 900, now=1200)
    assert acquired == [] and broken == [] and blocked["billing"]["run"] == "a"
    assert blocked["billing"]["renewed"] == 1100
    text = deploy_lock.describe(blocked["billing"], now=1200)
    for part in ("by alice", "on ctl-a", "PID 4242", "started 2025-01-02T03:04:05Z", "playbook site.yml",
                 "holding it for 200s", "renewed 100s ago"):
        assert part in text, text


def test_runs_that_need_different_services_proceed_together(lock_dir):
    assert deploy_lock.try_acquire(lock_dir, ["billing"], holder("a"), 900)[0] == ["billing"]
    assert deploy_lock.try_acquire(lock_dir, ["search"], holder("b"), 900)[0] == ["search"]


def test_locks_are_taken_in_name_order_and_the_first_blocked_one_stops_the_attempt(lock_dir):
    deploy_lock.try_acquire(lock_dir, ["b"], holder("other"), 900)
    acquired, blocked, _ = deploy_lock.try_acquire(lock_dir, ["c", "b", "a"], holder("me"), 900)
    assert acquired == ["a"] and list(blocked) == ["b"]
    assert not os.path.exists(os.path.join(lock_dir, "c.lock"))


def test_an_expired_lease_is_broken_and_reported(lock_dir):
    deploy_lock.try_acquire(lock_dir, ["billing"], holder("a"), 60, now=1000)
    acquired, blocked, broken = deploy_lock.try_acquire(lock_dir, ["billing"], holder("b"), 900, now=1061)
    assert acquired == ["billing"] and blocked == {}
    assert broken[0]["holder"]["run"] == "a" and "lease of 60s expired" in broken[0]["reason"]
    assert deploy_lock.read(os.path.join(lock_dir, "billing.lock"))["run"] == "b"


def test_a_holder_its_controller_found_gone_is_broken_at_once(lock_dir):
    deploy_lock.try_acquire(lock_dir, ["billing"], holder("a"), 900, now=1000)
    _, blocked, _ = deploy_lock.try_acquire(lock_dir, ["billing"], holder("b"), 900, now=1001)
    assert blocked
    acquired, _, broken = deploy_lock.try_acquire(lock_dir, ["billing"], holder("b"), 900, break_runs=["a"],
                                                  now=1001)
    assert acquired == ["billing"] and "no longer runs on ctl-a" in broken[0]["reason"]


def test_a_lock_in_use_is_never_broken(lock_dir):
    """The work of a run whose controller died may still go on on the host: while a call of the
    holder works under the lock, neither an expired lease nor a gone process breaks it."""
    deploy_lock.try_acquire(lock_dir, ["billing"], holder("a"), 60)
    with deploy_lock.Held({"run": "a", "dir": lock_dir, "lease": 60}, ["billing"]):
        later = time.time() + 3600
        _, blocked, broken = deploy_lock.try_acquire(lock_dir, ["billing"], holder("b"), 900, break_runs=["a"],
                                                     now=later)
        assert blocked and not broken
    assert deploy_lock.try_acquire(lock_dir, ["billing"], holder("b"), 900, break_runs=["a"])[0] == ["billing"]


def test_work_under_a_lock_another_run_holds_is_refused_before_it_starts(lock_dir):
    deploy_lock.try_acquire(lock_dir, ["billing"], holder("a"), 900)
    with pytest.raises(deploy_lock.LockError, match="no longer held by this run .*now held by a run of deploy"), \
            deploy_lock.Held({"run": "b", "dir": lock_dir, "lease": 900}, ["billing"]):
        pytest.fail("worked under another run's lock")
    with pytest.raises(deploy_lock.LockError, match="no lock"), \
            deploy_lock.Held({"run": "b", "dir": lock_dir, "lease": 900}, ["search"]):
        pass
    with deploy_lock.Held(None, ["billing"]):  # no lock given: nothing verified (a module called directly)
        pass
    with pytest.raises(deploy_lock.LockError, match="cannot be read"), \
            deploy_lock.Held({"run": "b", "dir": lock_dir + "-gone", "lease": 900}, ["billing"]):
        pass


def renewed(lock_dir, name):
    """When the lease was last renewed, read as the module reads (under the directory's mutex:
    records are rewritten in place)."""
    with deploy_lock.Mutex(lock_dir):
        return deploy_lock.read(os.path.join(lock_dir, name + ".lock"))["renewed"]


def test_work_under_the_lock_renews_its_lease(lock_dir):
    deploy_lock.try_acquire(lock_dir, ["billing"], holder("a"), 4, now=1000)
    with deploy_lock.Held({"run": "a", "dir": lock_dir, "lease": 4}, ["billing"]):
        first = renewed(lock_dir, "billing")
        assert first > 1000
        deadline = time.time() + 10
        while renewed(lock_dir, "billing") == first:
            assert time.time() < deadline, "the lease was not renewed while the work went on"
            time.sleep(0.2)


def test_release_removes_only_this_runs_locks(lock_dir):
    deploy_lock.try_acquire(lock_dir, ["a", "b"], holder("me"), 900)
    deploy_lock.try_acquire(lock_dir, ["c"], holder("other"), 900)
    assert deploy_lock.release(lock_dir, "me") == ["a", "b"]
    assert sorted(os.listdir(lock_dir)) == [".mutex", "c.lock"]
    assert deploy_lock.release(lock_dir, "me", ["c"]) == []
    assert deploy_lock.release(str(os.path.join(lock_dir, "missing")), "me") == []


def test_check_mode_reports_holders_and_writes_nothing(lock_dir):
    assert deploy_lock.try_acquire(lock_dir, ["a"], holder("me"), 900, check_mode=True)[0] == ["a"]
    assert not os.path.exists(lock_dir)
    deploy_lock.try_acquire(lock_dir, ["a"], holder("other"), 900)
    _, blocked, _ = deploy_lock.try_acquire(lock_dir, ["a"], holder("me"), 900, check_mode=True)
    assert blocked["a"]["run"] == "other"


def test_a_lock_directory_others_can_write_is_refused(lock_dir):
    os.makedirs(lock_dir)
    os.chmod(lock_dir, 0o777)
    with pytest.raises(deploy_lock.LockError, match="writable by it alone"):
        deploy_lock.try_acquire(lock_dir, ["a"], holder("me"), 900)


def test_bad_names_never_become_paths(lock_dir):
    for name in ("../etc/passwd", ".mutex", ""):
        with pytest.raises(deploy_lock.LockError):
            deploy_lock.lock_path(lock_dir, name)


# --- the controller's side (plugin_utils/deploy_lock.py) ----------------------------------

def test_a_run_is_the_playbook_process_that_forked_the_worker():
    me = controller.this_run("rollback")
    assert me["pid"] == os.getppid() and me["purpose"] == "rollback"
    assert me == controller.this_run("rollback")  # every task and host of the run: the same run id
    assert me["identity"]["start_ticks"] == deploy_lock.process_start_ticks(os.getppid())
    assert me["started"].endswith("Z")


def test_a_holder_from_this_controller_is_gone_when_its_process_is():
    me = controller.this_run()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    ticks = deploy_lock.process_start_ticks(child.pid)
    record = dict(me, run="x", pid=child.pid, identity=dict(me["identity"], start_ticks=ticks))
    assert not controller.gone_here(record, me)  # still there (a zombie until waited for)
    child.wait()
    assert controller.gone_here(record, me)
    # The same PID, started at another time, is another process.
    assert controller.gone_here(dict(record, pid=os.getpid(), identity=dict(record["identity"], start_ticks=1)), me)
    # A holder from another controller, boot or PID namespace is never judged here.
    assert not controller.gone_here(dict(record, controller="elsewhere"), me)
    assert not controller.gone_here(dict(record, identity=dict(record["identity"], pid_ns="pid:[0]")), me)
    assert not controller.gone_here(dict(record, identity=dict(record["identity"], boot_id="")), me)


class Action:
    """An action plugin whose module calls run module_utils/deploy_lock.acquire, as the module does."""

    def __init__(self):
        self.calls, self.warnings = [], []
        self._play_context = types.SimpleNamespace(check_mode=False)
        self._display = types.SimpleNamespace(warning=self.warnings.append)

    def _execute_module(self, module_name, module_args, task_vars):
        self.calls.append(module_args)
        a = module_args
        return deploy_lock.acquire(a["dir"], a["services"], a["holder"], a["lease"], a["wait"], a["break_runs"])


def test_a_lock_taken_in_the_probes_call_costs_no_call_of_its_own(lock_dir):
    me = controller.this_run()
    first = deploy_lock.acquire(lock_dir, ["billing"], me, 900)
    action = Action()
    out = controller.take(action, {}, me, ["billing"], lock_dir, 900, 60, first=first)
    assert action.calls == [] and out["acquired"] == ["billing"] and out["blocked"] == {}
    assert out["lock"] == {"run": me["run"], "dir": lock_dir, "lease": 900}


def test_a_lock_the_probe_found_held_by_a_gone_run_of_this_controller_is_broken_then_taken(lock_dir):
    me = controller.this_run()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    ticks = deploy_lock.process_start_ticks(child.pid)
    child.wait()
    dead = dict(me, run="dead-run", pid=child.pid, identity=dict(me["identity"], start_ticks=ticks))
    deploy_lock.try_acquire(lock_dir, ["billing"], dead, 900)
    first = deploy_lock.acquire(lock_dir, ["billing"], me, 900)
    assert first["blocked"]["billing"]["run"] == "dead-run"
    action = Action()
    out = controller.take(action, {"inventory_hostname": "web1"}, me, ["billing"], lock_dir, 900, 60, first=first)
    assert [c["break_runs"] for c in action.calls] == [["dead-run"]]
    assert out["acquired"] == ["billing"] and out["broken"][0]["holder"]["run"] == "dead-run"
    assert action.warnings and "service 'billing' on web1: broke the deploy lock of" in action.warnings[0]


def test_a_lock_the_probe_found_held_by_a_live_run_fails_naming_it_once_the_time_is_up(lock_dir):
    deploy_lock.try_acquire(lock_dir, ["billing"], holder("other"), 900)
    me = controller.this_run()
    first = deploy_lock.acquire(lock_dir, ["billing"], me, 900)
    first["waited"] = 5  # the probe's call waited already: it counts against the timeout
    with pytest.raises(AnsibleActionFail, match="service 'billing': the deploy lock on web1 is held by .*alice"):
        controller.take(Action(), {"inventory_hostname": "web1"}, me, ["billing"], lock_dir, 900, 5, first=first)
    assert deploy_lock.read(os.path.join(lock_dir, "billing.lock"))["run"] == "other"


def test_the_probe_releases_its_locks_only_when_nothing_needs_work():
    from ansible_collections.microsvc.deploy.plugins.modules import vassal_probe

    same = {"billing": {"needs": [], "unit_needs": []}, "search": {"needs": []}}
    assert vassal_probe.idle(same, [], [])
    assert not vassal_probe.idle(dict(same, search={"needs": ["release differs"]}), [], [])
    assert not vassal_probe.idle(dict(same, search={"needs": [], "unit_needs": ["worker 'mail' differs"]}), [], [])
    assert not vassal_probe.idle(same, ["gone"], [])  # a service no longer listed is removed under the lock
    assert not vassal_probe.idle(same, [], ["old"])  # so is an absent one with leftovers
