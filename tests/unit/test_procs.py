"""Workers, schedules and release commands, on the controller and in the host-side
building blocks: cron to systemd calendar events, the quoting of ExecStart= arguments, the
plan's entries, the release commands a deploy runs, the decisions about a service's units
(against a fake systemctl), and the bookkeeping that names a failed worker."""

import os
import pathlib

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.microsvc.deploy.plugins.action.deploy_batch import release_commands
from ansible_collections.microsvc.deploy.plugins.action.vassal_probe import render_units
from ansible_collections.microsvc.deploy.plugins.filter import deploy
from ansible_collections.microsvc.deploy.plugins.filter.quote import systemd_quote, systemd_value
from ansible_collections.microsvc.deploy.plugins.module_utils import units
from ansible_collections.microsvc.deploy.plugins.plugin_utils import cron, service_plan

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
with open(os.path.join(ROOT, "roles/service_plan/meta/argument_specs.yml"), encoding="utf-8") as _f:
    SPEC = service_plan.load_service_spec(yaml.safe_load(_f))
W1, W2 = "microsvc-jobs.worker-w@1.service", "microsvc-jobs.worker-w@2.service"
TIMER = "microsvc-jobs.schedule-s.timer"


# --- cron -> OnCalendar ----------------------------------------------------------------------------

@pytest.mark.parametrize("expression, events", [
    ("*/15 * * * *", ["*-*-* *:0,15,30,45:00"]),
    ("0 3 * * *", ["*-*-* 3:0:00"]),
    ("5 4 * jan,jul sun", ["Sun *-1,7-* 4:5:00"]),
    ("0 0 * * 7", ["Sun *-*-* 0:0:00"]),
    ("1-10/3 * * * *", ["*-*-* *:1,4,7,10:00"]),
    ("7/20 * * * *", ["*-*-* *:7,27,47:00"]),
    ("@hourly", ["*-*-* *:0:00"]),
    ("@weekly", ["Sun *-*-* 0:0:00"]),
    ("* * * * *", ["*-*-* *:*:00"]),
    # a field starting with '*' still restricts, and both day fields must match
    ("0 0 1 * */2", ["Sun,Tue,Thu,Sat *-*-1 0:0:00"]),
])
def test_cron_becomes_calendar_events(expression, events):
    assert cron.on_calendar(expression) == events
    assert cron.check(expression) is None


def test_cron_either_day_rule_needs_two_events():
    """crontab(5): with both day fields restricted, a day matching either runs the job."""
    assert cron.on_calendar("30 2 1,15 * mon-fri") == ["*-*-1,15 2:30:00", "Mon,Tue,Wed,Thu,Fri *-*-* 2:30:00"]


@pytest.mark.parametrize("expression, fragment", [
    ("* * * *", "has 4 fields"),
    ("60 * * * *", "60 is outside 0-59"),
    ("*/0 * * * *", "step 0"),
    ("5-1 * * * *", "goes backwards"),
    ("* * * * 8", "8 is outside 0-7"),
    ("* * * foo *", "'foo' is not a number or a name"),
    ("* * * * *\n", "only letters"),
    ("%n * * * *", "only letters"),
    ("@reboot", "has 1 fields"),
])
def test_cron_refusals_say_why(expression, fragment):
    assert fragment in cron.check(expression)


# --- ExecStart= arguments -------------------------------------------------------------------------

def systemd_words(line):
    """How systemd splits an ExecStart= value whose arguments are double-quoted (C escapes), then
    expands %% and $$ (verified against systemd 252 and 257: tests/unit/test_procs.py's cases
    were run through a real unit once)."""
    words, i = [], 0
    while i < len(line):
        if line[i] == " ":
            i += 1
            continue
        if line[i] == '"':
            i += 1
            word = ""
            while line[i] != '"':
                if line[i] == "\\":
                    i += 1
                word += line[i]
                i += 1
            i += 1
        else:
            end = line.find(" ", i)
            end = len(line) if end < 0 else end
            word, i = line[i:end], end
        assert "%" not in word.replace("%%", ""), word  # a specifier systemd would expand
        assert "$" not in word.replace("$$", ""), word  # a variable systemd would expand
        words.append(word.replace("%%", "%").replace("$$", "$"))
    return words


TRICKY = [";", "a;b", "$HOME", "${HOME}", "%n", "%%", "back\\slash", 'dq"x', "sq'x", "\\;", " sp ", "", "x\\",
          "@x", "-x", "ünï", "'", "{}", "#c", "--format=%(message)s", "$(id)", "`id`"]


def test_systemd_quote_keeps_every_argument_as_it_is():
    line = " ".join(systemd_quote(arg) for arg in TRICKY)
    assert systemd_words(line) == TRICKY


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b", "a\u2028b", "a\x85b"])
def test_systemd_quote_and_value_refuse_line_breaks(bad):
    with pytest.raises(AnsibleFilterError):
        systemd_quote(bad)
    with pytest.raises(AnsibleFilterError):
        systemd_value(bad)


def test_systemd_value_doubles_specifiers():
    assert systemd_value("50% of %n") == "50%% of %%n"


# --- the plan's entries -----------------------------------------------------------------------------

@pytest.fixture()
def planner(tmp_path):
    (tmp_path / "code").mkdir()
    return service_plan.Planner(SPEC, root="/opt/www", base_dir=str(tmp_path), source_roots=[str(tmp_path)])


def test_entries_get_their_defaults_and_calendar(planner):
    plan = planner.plan([{"name": "jobs", "source": "code", "module": "app",
                          "workers": [{"name": "default", "argv": ["rq", "worker", 5]}],
                          "schedules": [{"name": "tick", "argv": ["python", "-m", "tick"], "interval": 2},
                                        {"name": "nightly", "argv": ["python", "x.py"], "cron": "@daily"}],
                          "release_commands": [{"name": "record", "argv": ["python", "-m", "record"]}]}])
    svc = plan["services"][0]
    assert svc["workers"] == [{"name": "default", "argv": ["rq", "worker", "5"], "count": 1, "stop_signal": "TERM",
                               "grace": 30, "start_seconds": 3, "once": False}]
    assert svc["schedules"][0]["calendar"] == [] and svc["schedules"][0]["keep_logs"] == 20
    assert svc["schedules"][1]["calendar"] == ["*-*-* 0:0:00"] and svc["schedules"][1]["timeout"] == 3600
    assert svc["release_commands"] == [{"name": "record", "argv": ["python", "-m", "record"], "once": True,
                                        "timeout": 600}]


def test_a_service_without_them_has_empty_lists(planner):
    svc = planner.plan([{"name": "web", "source": "code", "module": "app"}])["services"][0]
    assert svc["workers"] == svc["schedules"] == svc["release_commands"] == []


@pytest.mark.parametrize("argv", [["python", "-m", "x"], ["bin/worker.sh"], ["/usr/bin/env", "x=1"], ["celery"],
                                  ["rq", "--format=%(message)s", "$HOME", ";", ""]])
def test_commands_that_are_allowed(planner, argv):
    planner.plan([{"name": "web", "source": "code", "module": "app", "workers": [{"name": "w", "argv": argv}]}])


def test_errors_name_the_entry_and_all_come_at_once(planner):
    with pytest.raises(service_plan.PlanError) as info:
        planner.plan([{"name": "web", "source": "code", "module": "app",
                       "workers": [{"name": "w", "argv": ["rq"], "count": 0}, {"name": "w", "argv": ["/bin/../sh"]}],
                       "schedules": [{"name": "s", "argv": ["x"], "cron": "61 * * * *"}]}])
    text = "\n".join(info.value.errors)
    assert "service 'web': field 'workers[1].count': must be an integer from 1 to 32, got 0" in text
    assert "service 'web': field 'workers[2].argv': the program '/bin/../sh'" in text
    assert "service 'web': field 'workers[2].name': 'w' is already the name of another entry of workers" in text
    assert "service 'web': field 'schedules[1].cron': '61 * * * *' is not allowed (minute: 61 is outside 0-59)" in text


# --- release commands ---------------------------------------------------------------------------------

def svc_with(**fields):
    base = {"name": "shop", "django": None, "release_commands": []}
    base.update(fields)
    return base


DJANGO = {"manage": "manage.py", "migrate": True, "collectstatic": True, "settings": None, "static_url": "static/"}
OWN = [{"name": "warm", "argv": ["python", "manage.py", "warm_cache"], "once": True, "timeout": 60},
       {"name": "compile", "argv": ["python", "manage.py", "compilemessages"], "once": False, "timeout": 600}]


def test_migrate_is_one_release_command_built_by_one_function():
    first = release_commands(svc_with(django=DJANGO, release_commands=OWN), {"shop"})
    assert [(c["name"], c["step"]) for c in first] == [
        ("migrate", "migrate"), ("collectstatic", "collectstatic"), ("warm", "release command 'warm'"),
        ("compile", "release command 'compile'")]
    # The host runs migrate through microsvc-migrate (django_migrate_argv in the module: the
    # advisory lock, the plan, the pre-migrate command), from the service's django fields.
    assert first[0]["kind"] == "migrate" and all(c.get("kind") != "migrate" for c in first[1:])
    assert first[2]["label"] == "release command 'warm' (python manage.py warm_cache)"
    assert first[2]["timeout"] == 60


def test_once_per_rollout_commands_run_on_the_migration_host_only():
    other = release_commands(svc_with(django=DJANGO, release_commands=OWN), set())
    assert [c["name"] for c in other] == ["collectstatic", "compile"]
    off = release_commands(svc_with(django=dict(DJANGO, migrate=False, collectstatic=False)), {"shop"})
    assert off == []


# --- units: names and markers ---------------------------------------------------------------------------

def test_unit_names_parse_back_and_other_services_do_not_match():
    assert units.worker_template("a-b", "w") == "microsvc-a-b.worker-w@.service"
    assert units.worker_instances("a", "w", 2) == ["microsvc-a.worker-w@1.service", "microsvc-a.worker-w@2.service"]
    names = units.schedule_units("a", "s")
    assert units.parse_unit("a", names["timer"]) == ("timer", "s", None)
    assert units.parse_unit("a", names["tick"]) == ("tick", "s", None)
    assert units.parse_unit("a", names["run"]) == ("run", "s", None)
    assert units.parse_unit("a", "microsvc-a.worker-w@3.service") == ("worker", "w", 3)
    assert units.parse_unit("a", "microsvc-ab.worker-w@3.service") is None
    assert units.parse_unit("a", "microsvc-uwsgi-metrics.service") is None


def unit_file(service, kind, name, extra=""):
    return ("# Ansible managed\n# microsvc-service: %s\n# microsvc-unit: %s %s%s\n[Unit]\nDescription=x\n"
            % (service, kind, name, extra))


def test_owned_reads_the_markers_and_ignores_others(tmp_path):
    (tmp_path / "microsvc-jobs.worker-w@.service").write_text(unit_file("jobs", "worker", "w", " count=2 start_seconds=5"))
    (tmp_path / "microsvc-jobs.schedule-s.timer").write_text(unit_file("jobs", "schedule", "s"))
    (tmp_path / "microsvc-uwsgi-metrics.service").write_text("[Unit]\nDescription=metrics\n")
    (tmp_path / "microsvc-other.worker-w@.service").write_text(unit_file("jobs", "worker", "w"))  # not its name
    os.symlink("/etc/passwd", tmp_path / "microsvc-evil.worker-w@.service")
    assert units.owned(str(tmp_path)) == {"jobs": {
        "microsvc-jobs.worker-w@.service": {"kind": "worker", "name": "w", "count": 2, "start_seconds": 5},
        "microsvc-jobs.schedule-s.timer": {"kind": "schedule", "name": "s"}}}


class Names:
    """A renderer that gives each file the name of its template and of the entry."""

    def render(self, template, extra_vars):
        entry = extra_vars.get("__uwsgi_vassal_proc") or extra_vars["__uwsgi_vassal_svc"]
        return "%s %s" % (template, entry["name"])


def test_schedules_and_once_workers_are_rendered_on_one_host_only():
    svc = {"name": "jobs", "log_dir": "/opt/www/jobs/shared/log",
           "workers": [{"name": "w", "count": 2, "start_seconds": 3, "once": False},
                       {"name": "beat", "count": 1, "start_seconds": 5, "once": True}],
           "schedules": [{"name": "s"}]}
    here, elsewhere = render_units(Names(), svc, True), render_units(Names(), svc, False)
    assert sorted(here["files"]) == sorted([
        "microsvc-jobs.worker-w@.service", "microsvc-jobs.worker-beat@.service", "microsvc-jobs.schedule-s.timer",
        "microsvc-jobs.schedule-s.service", "microsvc-jobs.run-s.service", "microsvc-jobs.slice"])
    assert here["files"]["microsvc-jobs.run-s.service"] == "schedule-run.service.j2 s"
    assert here["timers"] == ["microsvc-jobs.schedule-s.timer"]
    assert [w["instances"] for w in here["workers"]] == [[W1, W2], ["microsvc-jobs.worker-beat@1.service"]]
    # Every app host of the service has its slice (the web processes run on each).
    assert sorted(elsewhere["files"]) == ["microsvc-jobs.slice", "microsvc-jobs.worker-w@.service"]
    assert elsewhere["timers"] == [] and elsewhere["files"]["microsvc-jobs.slice"] == "slice.j2 jobs"


def test_a_dash_in_a_service_name_does_not_nest_its_slice_in_another_service_s():
    """'a-b.slice' would be a child of 'a.slice' (its processes under a's limits): escaped."""
    assert units.slice_name("jobs") == "microsvc-jobs.slice"
    assert units.slice_name("a-b") == "microsvc-a\\x2db.slice"
    assert units.slice_name("a-b") != units.slice_name("a_b")


# --- units: what a deploy changes -----------------------------------------------------------------------

def spec(workers=(("w", 2, 3),), schedules=("s",), service="jobs", content="v1"):
    files, out, timers = {}, [], []
    for name, count, seconds in workers:
        template = units.worker_template(service, name)
        files[template] = "%s %s" % (template, content)
        out.append(dict(name=name, template=template, start_seconds=seconds,
                        instances=units.worker_instances(service, name, count)))
    for name in schedules:
        for unit in units.schedule_units(service, name).values():
            files[unit] = "%s %s" % (unit, content)
        timers.append(units.schedule_units(service, name)["timer"])
    return dict(files=files, workers=out, timers=timers)




def test_a_new_service_gets_every_unit_written_enabled_started_and_checked():
    plan = units.decide("jobs", spec(), {}, {}, set())
    assert plan["write"] == sorted(spec()["files"]) and plan["remove"] == [] and plan["stop"] == []
    assert plan["enable"] == [W1, W2, TIMER]
    assert plan["restart"] == [W1, W2, TIMER] and plan["start"] == []
    assert plan["check"] == [[W1, "w", 3], [W2, "w", 3]]


def running(*names):
    return {n: ("active", "running") for n in names}


def test_nothing_to_do_when_everything_is_there():
    wanted = spec()
    plan = units.decide("jobs", wanted, dict(wanted["files"]), running(W1, W2, TIMER), {W1, W2, TIMER})
    assert not any(plan[k] for k in ("write", "remove", "stop", "enable", "restart", "start", "check"))


def test_a_new_release_restarts_every_worker_process_but_not_the_timer():
    wanted = spec()
    plan = units.decide("jobs", wanted, dict(wanted["files"]), running(W1, W2, TIMER), {W1, W2, TIMER},
                        restart_all=True)
    assert plan["restart"] == [W1, W2] and plan["check"] == [[W1, "w", 3], [W2, "w", 3]]


def test_a_changed_worker_restarts_only_its_own_processes():
    wanted = spec(workers=(("w", 2, 3), ("x", 1, 2)))
    present = dict(wanted["files"])
    present[units.worker_template("jobs", "x")] = "old"
    x1 = "microsvc-jobs.worker-x@1.service"
    plan = units.decide("jobs", wanted, present, running(W1, W2, x1, TIMER), {W1, W2, x1, TIMER})
    assert plan["write"] == [units.worker_template("jobs", "x")]
    assert plan["restart"] == [x1] and plan["check"] == [[x1, "x", 2]]


def test_a_dead_process_is_started_and_checked():
    wanted = spec()
    plan = units.decide("jobs", wanted, dict(wanted["files"]),
                        dict(running(W1, TIMER), **{W2: ("failed", "failed")}), {W1, W2, TIMER})
    assert plan["start"] == [W2] and plan["check"] == [[W2, "w", 3]] and plan["restart"] == []


def test_fewer_processes_a_removed_worker_and_a_removed_schedule_stop():
    wanted = spec(workers=(("w", 1, 3),), schedules=())
    before = spec(workers=(("w", 2, 3), ("gone", 1, 3)))
    gone = "microsvc-jobs.worker-gone@1.service"
    names = units.schedule_units("jobs", "s")
    loaded = running(W1, W2, gone, TIMER, names["run"])
    plan = units.decide("jobs", wanted, dict(before["files"]), loaded, {W1, W2, gone, TIMER})
    assert plan["stop"] == sorted([W2, gone, TIMER, names["run"]])
    assert plan["remove"] == sorted([units.worker_template("jobs", "gone"), names["timer"], names["tick"], names["run"]])
    assert plan["write"] == [] and plan["restart"] == [] and plan["check"] == []


def test_the_probe_names_what_differs():
    wanted = spec()
    sha = {n: "sha-" + n for n in wanted["files"]}
    spec_sha = dict(files=sha, instances=[W1, W2], timers=[TIMER])
    present = dict(sha)
    assert units.needs("jobs", spec_sha, present, running(W1, W2, TIMER), {W1, W2, TIMER}) == []
    present[units.worker_template("jobs", "w")] = "other"
    present["microsvc-jobs.worker-old@.service"] = "x"
    needs = units.needs("jobs", spec_sha, present, dict(running(W1, TIMER), **{"microsvc-jobs.worker-old@1.service":
                                                                                ("active", "running")}),
                        {W1, TIMER, "microsvc-jobs.worker-old@1.service"})
    assert needs == ["unit microsvc-jobs.worker-w@.service differs", "unit microsvc-jobs.worker-old@.service no longer wanted",
                     "%s not running" % W2, "microsvc-jobs.worker-old@1.service no longer wanted"]


# --- units: waiting for workers, against a fake systemctl --------------------------------------------------

class FakeSystemd:
    """Answers `systemctl show` from a list of snapshots (one per call, the last repeats) and
    records every other call."""

    def __init__(self, snapshots):
        self.snapshots, self.calls = list(snapshots), []

    def show(self, names, props):
        snap = self.snapshots.pop(0) if len(self.snapshots) > 1 else self.snapshots[0]
        return {n: dict(snap.get(n, {})) for n in names}

    def run(self, args, check=True, timeout=None):
        self.calls.append(list(args))

    def daemon_reload(self):
        self.calls.append(["daemon-reload"])

    def loaded(self, pattern):
        return {}

    def timers(self, names):
        return {}


def up(pid, restarts="0"):
    return {"ActiveState": "active", "SubState": "running", "MainPID": str(pid), "NRestarts": restarts}


def test_workers_that_stay_up_are_started():
    fake = FakeSystemd([{W1: up(10), W2: up(11)}])
    assert units.wait_started(fake, [[W1, "w", 1], [W2, "w", 1]], poll=0.05) == {W1: "10", W2: "11"}


@pytest.mark.parametrize("later, fragment", [
    (up(12), "died and was restarted"),  # a new main pid: it died and came back between two looks
    (up(10, "1"), "died and was restarted"),
    ({"ActiveState": "activating", "SubState": "auto-restart", "MainPID": "0", "NRestarts": "0",
      "Result": "exit-code", "ExecMainStatus": "1"}, "exited with status 1"),
])
def test_a_worker_that_does_not_stay_up_fails_naming_it(tmp_path, later, fragment):
    (tmp_path / "worker-w.log").write_text("Traceback\nRuntimeError: cannot start\n")
    fake = FakeSystemd([{W1: up(10)}, {W1: later}])
    with pytest.raises(units.UnitsError) as info:
        units.wait_started(fake, [[W1, "w", 5]], log_dir=str(tmp_path), poll=0.05)
    assert info.value.step == "worker 'w'"
    assert "worker 'w' did not stay up for 5s" in str(info.value) and fragment in str(info.value)
    assert "RuntimeError: cannot start" in str(info.value)


def test_the_log_quoted_on_failure_is_never_read_through_a_symlink(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root:hash\n")
    os.symlink(secret, tmp_path / "worker-w.log")
    fake = FakeSystemd([{W1: up(10)}, {W1: up(11)}])
    with pytest.raises(units.UnitsError) as info:
        units.wait_started(fake, [[W1, "w", 5]], log_dir=str(tmp_path), poll=0.05)
    assert "root:hash" not in str(info.value)


def test_apply_writes_stops_and_restores(tmp_path, monkeypatch):
    units_dir = tmp_path / "units"
    (units_dir / "multi-user.target.wants").mkdir(parents=True)
    old = units.worker_template("jobs", "gone")
    (units_dir / old).write_text(unit_file("jobs", "worker", "gone"))
    wanted = spec(workers=(("w", 1, 1),), schedules=())
    wanted["files"] = {n: unit_file("jobs", "worker", "w") for n in wanted["files"]}
    fake = FakeSystemd([{W1: up(10)}])
    monkeypatch.setattr(fake, "loaded", lambda pattern: {"microsvc-jobs.worker-gone@1.service": ("active", "running")})
    result, undo = units.apply("jobs", wanted, units_dir=str(units_dir), systemd=fake)
    assert result["remove"] == [old] and not (units_dir / old).exists()
    assert (units_dir / units.worker_template("jobs", "w")).read_text() == unit_file("jobs", "worker", "w")
    assert fake.calls[0] == ["disable", "--now", "--", "microsvc-jobs.worker-gone@1.service"]
    assert fake.calls[1] == ["reset-failed", "--", "microsvc-jobs.worker-gone@1.service"]
    assert ["daemon-reload"] in fake.calls and ["enable", "--", W1] in fake.calls and ["restart", "--", W1] in fake.calls
    # Put back: the old worker's file returns, the new one goes, what ran before runs again.
    fake.calls.clear()
    monkeypatch.setattr(fake, "loaded", lambda pattern: {W1: ("active", "running")})
    assert units.restore("jobs", undo, units_dir=str(units_dir), systemd=fake) == ["microsvc-jobs.worker-gone@1.service"]
    assert (units_dir / old).exists() and not (units_dir / units.worker_template("jobs", "w")).exists()
    assert fake.calls[0] == ["disable", "--now", "--", W1]
    assert ["restart", "--", "microsvc-jobs.worker-gone@1.service"] in fake.calls


def test_timers_and_their_checks_stop_before_the_runs():
    """A check already under way could otherwise start a run of a schedule being removed."""
    fake = FakeSystemd([{}])
    names = units.schedule_units("jobs", "s")
    units.stop_units("jobs", fake, [names["run"], W1, names["tick"], names["timer"]])
    assert fake.calls == [["disable", "--now", "--", names["tick"], names["timer"]],
                          ["reset-failed", "--", names["tick"], names["timer"]],
                          ["disable", "--now", "--", names["run"], W1], ["reset-failed", "--", names["run"], W1]]


# --- status: the last run of a schedule ----------------------------------------------------------------

def test_last_run_reads_the_runs_log(tmp_path):
    log = tmp_path / "runs.log"
    log.write_text(
        "2026-01-01T00:00:00.000Z started pid=1 command_pid=2 release=r log=a.log\n"
        "2026-01-01T00:00:01.500Z finished exit=0 seconds=1.5 log=a.log\n"
        "2026-01-01T00:00:02.000Z started pid=3 command_pid=4 release=r log=b.log\n"
        "2026-01-01T00:00:03.000Z skipped: the run that started at 2026-01-01T00:00:02.000Z (pid 3) is still going\n"
        "2026-01-01T00:00:04.000Z finished exit=3 seconds=2.0 log=b.log\n")
    assert units.last_run(str(log)) == (1767225602.0, "exit 3")
    with log.open("a") as handle:
        handle.write("2026-01-01T00:00:05.000Z started pid=5 command_pid=6 release=r log=c.log\n")
    assert units.last_run(str(log)) == (1767225605.0, "running")
    with log.open("a") as handle:
        handle.write("2026-01-01T00:00:06.000Z finished signal=SIGTERM seconds=1.0 log=c.log\n")
    assert units.last_run(str(log))[1] == "killed by SIGTERM"
    assert units.last_run(str(tmp_path / "missing")) == (None, "never ran")


# --- the deploy's bookkeeping ----------------------------------------------------------------------------

def test_a_worker_that_fails_after_a_healthy_switch_is_reported_and_rolled_back():
    deployed = {"jobs": {"ok": True, "step": "switched", "release": "r2", "previous": "r1", "switched": True}}
    health = {"jobs": {"ok": True, "status": 200}}
    settled = {"jobs": {"ok": False, "step": "worker 'w'", "msg": "worker 'w' did not stay up for 3s after its start",
                        "action": "rolled back (chain-reload)", "env_restored": False}}
    rehealth = {"jobs": {"ok": True}}
    (message,) = deploy.deploy_report(deployed, health, settled, rehealth)
    assert message.startswith("service 'jobs': deploy of release r2 failed at worker 'w': worker 'w' did not stay up")
    assert "Rolled back to release r1, its workers included, which is healthy again." in message
    assert deploy.returned(deployed, settled) == ["jobs"]
    assert deploy.never_live(deployed, health, settled) == []


def test_a_first_release_whose_worker_fails_never_goes_live():
    deployed = {"jobs": {"ok": True, "step": "switched", "release": "r1", "previous": None, "first_deploy": True}}
    settled = {"jobs": {"ok": False, "step": "worker 'w'", "msg": "no", "stopped": True, "action": "stopped"}}
    (message,) = deploy.deploy_report(deployed, {"jobs": {"ok": True}}, settled)
    assert "first release; it was stopped, never went live and has no route" in message
    assert deploy.never_live(deployed, {"jobs": {"ok": True}}, settled) == ["jobs"]


def test_settle_plan_carries_the_units_of_healthy_services_only():
    svc = {"name": "jobs", "root": "/opt/www/jobs", "group": "jobs", "env_file": "/opt/www/jobs/env",
           "stats_socket": "/opt/www/jobs/run/stats.sock", "reload_file": "/opt/www/jobs/chain-reload",
           "log_dir": "/opt/www/jobs/shared/log", "uwsgi_log": "/opt/www/jobs/log/uwsgi.log",
           "socket": "/opt/www/jobs/uwsgi.sock"}
    deployed = {"jobs": {"ok": True, "previous": "r1", "switched": True}}
    work = [{"name": "jobs", "units": spec()}]
    (healthy,) = deploy.settle_plan(deployed, {"jobs": {"ok": True}}, [svc], work=work)
    assert healthy["units"] == spec() and healthy["log_dir"] == "/opt/www/jobs/shared/log"
    (unhealthy,) = deploy.settle_plan(deployed, {"jobs": {"ok": False}}, [svc], work=work)
    assert "units" not in unhealthy and unhealthy["outcome"] == "unhealthy"


def test_a_worker_failure_after_an_environment_change_puts_the_previous_environment_back(tmp_path, monkeypatch):
    """The way back after a settle failed: the environment file the previous release served with returns
    (the staged one is dropped), then the release and the vassal follow."""
    from ansible_collections.microsvc.deploy.plugins.module_utils import outcome

    env = tmp_path / "env"
    env.write_text("A=new\nB=2\n")
    (tmp_path / "env.previous").write_text("A=old\n")
    (tmp_path / "env.unset").write_text("")
    calls = []
    monkeypatch.setattr(outcome.fsutil, "gid_of", lambda group: os.getgid())
    monkeypatch.setattr(outcome.envfile, "write_atomic",
                        lambda target, text, *a, **k: pathlib.Path(target).write_text(text, encoding="utf-8"))
    monkeypatch.setattr(outcome.vassal, "apply", lambda *a, **k: calls.append(k) or {"action": "reload"})
    svc = {"name": "jobs", "group": "jobs", "env_file": str(env), "env_changed": True, "previous": "r1",
           "switched": False, "ini_path": "x.ini", "stats_socket": "s", "reload_file": "r"}
    out = outcome.back(svc, {"env_restored": False}, 5, str(tmp_path), None)
    assert out.get("recovery_error") is None, out
    assert out["env_restored"] and env.read_text() == "A=old\n" and not (tmp_path / "env.previous").exists()
    assert calls == [dict(code_changed=False, config_changed=True, timeout=5, log_file=None)]
