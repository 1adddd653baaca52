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
