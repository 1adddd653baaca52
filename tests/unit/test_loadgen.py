"""tools/loadgen.py, the load of the tests and of make bench: --rate bounds the requests sent."""

import http.server
import importlib.util
import json
import os
import threading

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SPEC = importlib.util.spec_from_file_location("loadgen", os.path.join(ROOT, "tools", "loadgen.py"))
loadgen = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(loadgen)


class Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "6")
        self.end_headers()
        self.wfile.write(b"hello\n")

    def log_message(self, *_args):
        pass


def test_rate_bounds_the_requests_of_all_workers_together(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d/" % server.server_address[1]
    out = tmp_path / "load.json"
    try:
        loadgen.main(["--url", url, "--concurrency", "4", "--rate", "40", "--duration", "1", "--output", str(out)])
    finally:
        server.shutdown()
    summary = json.loads(out.read_text())
    got = summary["urls"][url]
    assert summary["rate"] == 40 and got["errors"] == 0 and got["ok"] == got["requests"] > 0
    # Paced: each worker sends one request per 4/40 s, the first within its first interval.
    assert got["requests"] <= 40 * summary["elapsed"] + 4
