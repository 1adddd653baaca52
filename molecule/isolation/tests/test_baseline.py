"""The attacker's foothold works: without it, every isolation test would pass for nothing."""

from conftest import HOSTILE, NEIGHBOURS, ROUTES, as_user, attack
from microsvc_checks import http


def test_every_route_answers(host):
    for name in (HOSTILE, *NEIGHBOURS):
        assert http(host, ROUTES[name])["status"] == 200, name


def test_the_attacker_runs_commands_as_the_service_inside_its_worker(host):
    result = attack(host, "id -un; cat /proc/self/cgroup")
    assert result["rc"] == 0, result
    assert result["out"].splitlines()[0] == HOSTILE
    assert result["uid"] != 0


def test_the_attacker_has_a_plain_shell_as_the_service_user(host):
    out = as_user(host, "id -un")
    assert out.rc == 0 and out.stdout.strip() == HOSTILE
