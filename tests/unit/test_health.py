"""How a health check decides (plugins/module_utils/health.py), and the deploy batch's own check of
the services that went live where the gateway is the same host."""

import http.server
import threading

import pytest
from ansible_collections.microsvc.deploy.plugins.module_utils import health
from ansible_collections.microsvc.deploy.plugins.modules import deploy_batch


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.seen.append(self.path)
        status, body = {"/ok/": (200, b'{"status": "ok"}'), "/down/": (503, b"maintenance")}.get(
            self.path, (404, b"no such route"))
        self.send_response(status)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        pass


@pytest.fixture
def gateway():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def url(server, path):
    return "http://127.0.0.1:%d%s" % (server.server_address[1], path)


def test_a_check_passes_on_an_accepted_status_and_a_matching_body():
    assert health.passes({"status": [200], "body": '"status": "ok"'}, 200, '{"status": "ok"}')
    assert not health.passes({"status": [200], "body": '"status": "ok"'}, 200, "fine")
    assert not health.passes({}, 503, "")
    assert health.passes({"status": [503]}, 503, "")


def test_checks_run_at_once_each_with_its_retries(gateway):
    results = health.run_checks([
        {"name": "a", "url": url(gateway, "/ok/"), "body": "ok"},
        {"name": "b", "url": url(gateway, "/down/"), "retries": 2, "delay": 0},
    ])
    assert results["a"]["ok"] and results["a"]["attempts"] == 1
    assert not results["b"]["ok"] and results["b"]["status"] == 503 and results["b"]["attempts"] == 2
    assert health.failed(results) == ["b"]


def test_the_batch_checks_only_the_services_that_went_live(gateway):
    checks = [{"name": "live", "url": url(gateway, "/ok/")}, {"name": "failed", "url": url(gateway, "/down/")}]
    out = deploy_batch.live_health(checks, {"live": {"ok": True}, "failed": {"ok": False, "step": "check"}}, False)
    assert list(out["checks"]) == ["live"] and out["failed_checks"] == []
    assert gateway.seen == ["/ok/"]


def fields(name):
    return {"name": name, "root": "/opt/www/" + name, "group": name, "env_file": "/opt/www/%s/shared/env" % name,
            "ini_path": "/etc/uwsgi/vassals/%s.ini" % name, "stats_socket": "s", "reload_file": "r",
            "log_file": "l", "log_dir": "d", "remove_sockets": [], "units": {"workers": ["w"]}}


def test_the_batch_settles_the_healthy_and_returns_the_others_in_its_own_call(gateway, monkeypatch):
    """Where the gateway is this host, the checked services are settled (workers moved) or put
    back in the same call, exactly as the separate settle call would be asked to."""
    settled = []
    monkeypatch.setattr(deploy_batch.outcome, "settle_all",
                        lambda items, timeout: settled.extend(items) or {i["name"]: {"ok": True} for i in items})
    results = {"up": {"ok": True, "previous": "r1", "switched": True, "env_changed": False},
               "down": {"ok": True, "previous": "r2", "switched": True, "env_changed": True},
               "broken": {"ok": False, "step": "check"}}
    params = {"checks": [{"name": "up", "url": url(gateway, "/ok/")}, {"name": "down", "url": url(gateway, "/down/")},
                         {"name": "broken", "url": url(gateway, "/ok/")}],
              "validate_certs": False, "timeout": 5, "settle": [fields("up"), fields("down"), fields("broken")]}
    out = deploy_batch.after_switch(params, results)
    assert out["health"]["failed_checks"] == ["down"] and sorted(out["settled"]) == ["down", "up"]
    by_name = {item["name"]: item for item in settled}
    assert by_name["up"]["outcome"] == "healthy" and by_name["up"]["units"] == {"workers": ["w"]}
    assert by_name["down"]["outcome"] == "unhealthy" and "units" not in by_name["down"]
    assert by_name["down"]["previous"] == "r2" and by_name["down"]["env_changed"] is True
    # Without what settling needs, the checks alone run (the role then settles in a call of its own).
    assert "settled" not in deploy_batch.after_switch(dict(params, settle=[]), results)
