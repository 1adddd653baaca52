#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""The one health check of the collection: many URLs, checked concurrently, each with retries."""

from __future__ import annotations

DOCUMENTATION = r"""
module: health_check
short_description: Check many services' health URLs at once, each with its own criterion and retries
description:
  - For each check, requests its URL (no redirect followed) until the answer has one of the accepted
    statuses and, when set, a body matching the regular expression, or until the retries are used up.
    The checks run concurrently; the call takes about as long as the slowest check.
  - Used after a deploy, after a rollback and by the status playbook, always through the gateway (the
    task runs on the gateway host against its loopback). Changes nothing.
version_added: 0.2.0
options:
  checks:
    description:
      - Each with C(name), C(url), C(status) (accepted codes, default C([200])), C(body) (a regular expression
        or null), C(timeout) (seconds per request, default 5), C(retries) (attempts, default 1) and C(delay)
        (seconds between attempts, default 1).
    type: list
    elements: dict
    required: true
  validate_certs:
    description: Verify the gateway's TLS certificate (it names no loopback address, so off by default).
    type: bool
    default: false
  concurrency:
    description: Checks running at once.
    type: int
    default: 16
notes:
  - Why not a builtin - C(ansible.builtin.uri) with retries checks one URL per call, one after the other; this
    checks all of them concurrently in one call.
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
- name: Check one service through the gateway
  microsvc.deploy.health_check:
    checks:
      - {name: billing, url: "http://127.0.0.1/api/billing/health/", status: [200], body: '"ok"', retries: 10}
"""

RETURN = r"""
checks:
  description: Per check name, C(ok), C(status), C(body) (its first 300 characters), C(error), C(attempts), C(elapsed_ms).
  returned: always
  type: dict
failed_checks:
  description: Names of the checks that did not pass.
  returned: always
  type: list
"""

import concurrent.futures
import re
import time

from ansible.module_utils.basic import AnsibleModule
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


def main():
    module = AnsibleModule(
        argument_spec=dict(
            checks=dict(type="list", elements="dict", required=True),
            validate_certs=dict(type="bool", default=False),
            concurrency=dict(type="int", default=16),
        ),
        supports_check_mode=True,
    )
    checks = module.params["checks"]
    results = {}
    if checks:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, module.params["concurrency"])) as pool:
            futures = {pool.submit(run_check, c, module.params["validate_certs"]): c["name"] for c in checks}
            for future in concurrent.futures.as_completed(futures):
                results[futures[future]] = future.result()
    module.exit_json(changed=False, checks=results, failed_checks=sorted(n for n, r in results.items() if not r["ok"]))


if __name__ == "__main__":
    main()
