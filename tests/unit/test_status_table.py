"""The status table (roles/uwsgi_vassal/templates/status.txt.j2), rendered as status.yml renders it."""

import os

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TEMPLATE = os.path.join(ROOT, "roles", "uwsgi_vassal", "templates", "status.txt.j2")


@pytest.fixture(scope="module")
def templar():
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    return Templar(loader=DataLoader())


def render(templar, schedules, now=1000):
    status = {"now": now, "services": {"jobs": {
        "release": "r1", "stats_error": "", "accepting": 2, "workers": 2, "rss_kb": 2048, "uptime_s": 60,
        "processes": [], "schedules": schedules}}}
    templar.available_variables = {
        "__uwsgi_vassal_status": status,
        "__uwsgi_vassal_selected": [{"name": "jobs", "route": "/api/jobs/"}],
        "__uwsgi_vassal_health_all": {"checks": {"jobs": {"ok": True, "status": 200, "error": ""}}},
    }
    from ansible.template import trust_as_template

    with open(TEMPLATE, encoding="utf-8") as handle:
        return templar.template(trust_as_template(handle.read()))


def line_of(out, schedule):
    return next(line for line in out.splitlines() if line.split()[:3] == ["-", "jobs", schedule]
                or line.split()[:2] == ["jobs", schedule])


@pytest.mark.parametrize(("last", "shown"), [(940, "1m00s ago"), (1000, "0m00s ago"), (1001, "0m00s ago"),
                                             (None, "-")])
def test_a_last_run_is_always_in_the_past(templar, last, shown):
    out = render(templar, [{"schedule": "tick", "last_run": last, "result": "ok", "active": True, "next_run": 1002}])
    line = line_of(out, "tick")
    assert shown in line and "in 0m02s" in line, out


def test_a_next_run_is_in_the_future_or_due_now(templar):
    out = render(templar, [{"schedule": "tick", "last_run": 990, "result": "ok", "active": True, "next_run": None},
                           {"schedule": "slow", "last_run": 990, "result": "ok", "active": False, "next_run": 1005}])
    assert "due now" in line_of(out, "tick") and "timer not active" in line_of(out, "slow"), out
