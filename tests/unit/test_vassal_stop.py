"""Removing a vassal waits until nothing listens on its stats socket: a master that is shutting
down may hold the socket without answering, and that is not yet a stopped vassal."""

import pytest
from ansible_collections.microsvc.deploy.plugins.module_utils import vassal
from ansible_collections.microsvc.deploy.plugins.module_utils.uwsgi_stats import Answer, NotRunning, StatsError


def answers(monkeypatch, sequence):
    """Make the stats reads return ``sequence`` in turn (then its last answer), counting reads."""
    reads = []

    def fake_read(path, *args, **kwargs):
        reads.append(path)
        return sequence[min(len(reads), len(sequence)) - 1]

    monkeypatch.setattr(vassal, "read", fake_read)
    monkeypatch.setattr(vassal.time, "sleep", lambda seconds: None)
    return reads


@pytest.fixture
def files(tmp_path):
    ini, sock, stats = tmp_path / "svc.ini", tmp_path / "uwsgi.sock", tmp_path / "stats.sock"
    for path in (ini, sock, stats):
        path.write_text("")
    return ini, sock, stats


def test_a_timed_out_or_answering_socket_is_waited_for_until_nothing_listens(monkeypatch, files):
    ini, sock, stats = files
    reads = answers(monkeypatch, [Answer(error=StatsError("timeout", "no complete answer")),
                                  Answer(stats={"pid": 1}), Answer(error=NotRunning())])
    assert vassal.stop(str(ini), str(stats), [str(sock), str(stats)], timeout=60, name="svc") is True
    assert len(reads) == 3
    assert not ini.exists() and not sock.exists() and not stats.exists()


def test_a_socket_that_never_goes_quiet_fails_the_removal_and_keeps_the_sockets(monkeypatch, files):
    ini, sock, stats = files
    answers(monkeypatch, [Answer(error=StatsError("timeout", "no complete answer"))])
    clock = iter(range(0, 10000, 10))
    monkeypatch.setattr(vassal.time, "time", lambda: next(clock))
    with pytest.raises(vassal.VassalError, match="service 'svc': something still listens"):
        vassal.stop(str(ini), str(stats), [str(sock), str(stats)], timeout=30, name="svc")
    assert not ini.exists() and sock.exists() and stats.exists()


def test_nothing_to_remove_is_no_change(monkeypatch, tmp_path):
    reads = answers(monkeypatch, [Answer(error=NotRunning())])
    assert vassal.stop(str(tmp_path / "gone.ini"), str(tmp_path / "s"), [str(tmp_path / "u")]) is False
    assert reads == []
