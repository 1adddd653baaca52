# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""How a health check decides, and how many run at once: the health_check module's checks (through
the gateway, on the gateway host) and deploy_batch's where the gateway is the same host."""

from __future__ import annotations

import concurrent.futures
import re
import time

from ansible.module_utils.six.moves.urllib.error import HTTPError
from ansible.module_utils.urls import open_url


def passes(check, status, body):
    return status in (check.get("status") or [200]) and (
        not check.get("body") or re.search(check["body"], body or "") is not None)


def request(url, timeout, validate_certs):
    try:
        resp = open_url(url, timeout=timeout, validate_certs=validate_certs, follow_redirects="none",
                        http_agent="microsvc-health-check")
        return resp.status, resp.read(65536).decode("utf-8", "replace"), None
    except HTTPError as exc:
        try:
            body = exc.read(65536).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - an error page we cannot read is an empty body
            body = ""
        return exc.code, body, None
    except Exception as exc:  # noqa: BLE001 - a refused or timed out connection is a failed attempt
        return None, "", "%s: %s" % (type(exc).__name__, exc)


def run_check(check, validate_certs):
    started = time.time()
    retries = max(1, int(check.get("retries") or 1))
    status, body, error = None, "", None
    for attempt in range(1, retries + 1):
        status, body, error = request(check["url"], int(check.get("timeout") or 5), validate_certs)
        if passes(check, status, body):
            break
        if attempt < retries:
            time.sleep(float(check.get("delay") if check.get("delay") is not None else 1))
    return dict(ok=passes(check, status, body), status=status, body=(body or "")[:300], error=error,
                attempts=attempt, elapsed_ms=int((time.time() - started) * 1000))


def run_checks(checks, validate_certs=False, concurrency=16):
    """Every check at once (at most ``concurrency``): {name: result}."""
    results = {}
    if checks:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            futures = {pool.submit(run_check, c, validate_certs): c["name"] for c in checks}
            for future in concurrent.futures.as_completed(futures):
                results[futures[future]] = future.result()
    return results


def failed(results):
    """The names of the checks that did not pass."""
    return sorted(name for name, result in results.items() if not result["ok"])
