"""tools/molecule-queues: how `make test` spreads the molecule scenarios over parallel queues."""

import importlib.machinery
import importlib.util
import os

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LOADER = importlib.machinery.SourceFileLoader("molecule_queues", os.path.join(ROOT, "tools", "molecule-queues"))
SPEC = importlib.util.spec_from_loader("molecule_queues", LOADER)
queues_tool = importlib.util.module_from_spec(SPEC)
LOADER.exec_module(queues_tool)

SCENARIOS = sorted(name for name in os.listdir(os.path.join(ROOT, "molecule"))
                   if os.path.isfile(os.path.join(ROOT, "molecule", name, "molecule.yml")))


def names(queue):
    return [name for name, _scenario, _env in queue]


def test_every_scenario_has_a_measured_weight():
    assert set(SCENARIOS) <= set(queues_tool.WEIGHTS), set(SCENARIOS) - set(queues_tool.WEIGHTS)


def test_every_run_is_in_exactly_one_queue_and_default_runs_share_one():
    groups = queues_tool.runs_of(SCENARIOS, ["microsvc-test/debian:trixie", "ubuntu:24.04"])
    queues = queues_tool.queues_for(groups, 2)
    runs = [name for queue in queues for name in names(queue)]
    assert sorted(runs) == sorted(SCENARIOS + ["default@trixie", "default@24.04"])
    holding = [queue for queue in queues if "default" in names(queue)]
    assert len(holding) == 1
    order = names(holding[0])
    assert order.index("default") + 1 == order.index("default@trixie")
    env = {name: env for queue in queues for name, _scenario, env in queue}
    assert env["default@24.04"] == {"MICROSVC_IMAGE": "ubuntu:24.04"} and env["default"] == {}


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_the_queues_are_balanced_longest_first(jobs):
    queues = queues_tool.queues_for(queues_tool.runs_of(SCENARIOS, []), jobs)
    assert len(queues) == jobs
    loads = [sum(queues_tool.WEIGHTS[scenario] for _name, scenario, _env in queue) for queue in queues]
    assert max(loads) - min(loads) <= max(queues_tool.WEIGHTS.values())


def test_a_failed_run_stops_its_queue_only(tmp_path, monkeypatch, capsys):
    calls = []

    def run(argv, handle, env):
        calls.append(argv[-1])
        handle.write("fatal: [host]: FAILED! => boom\n" if argv[-1] == "bad" else "ok\n")
        return 2 if argv[-1] == "bad" else 0

    monkeypatch.setattr(queues_tool, "LOGS", str(tmp_path))
    monkeypatch.setattr(queues_tool, "timestamped", run)
    monkeypatch.setattr(queues_tool, "WEIGHTS", {"bad": 9, "after": 1, "good": 8, "next": 1})
    code = queues_tool.main(["--jobs", "2", "bad", "after", "good", "next"])
    out = capsys.readouterr().out
    assert code == 1
    assert sorted(calls) == ["after", "bad", "good"]  # queues: bad, next | good, after
    assert "FAILED! => boom" in out and "not run (an earlier run of its queue failed)" in out


def test_each_line_of_a_run_is_written_after_its_time(tmp_path):
    log = tmp_path / "run.log"
    with open(log, "w", encoding="utf-8") as handle:
        code = queues_tool.timestamped(["sh", "-c", "echo one; echo two >&2; exit 3"], handle, dict(os.environ))
    assert code == 3
    lines = log.read_text().splitlines()
    assert [line[8:] for line in lines] == ["one", "two"] and all(line[:8] == "[00:00] " for line in lines)
