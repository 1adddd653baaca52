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

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.microsvc.deploy.plugins.module_utils.health import failed, run_checks


def main():
    module = AnsibleModule(
        argument_spec=dict(
            checks=dict(type="list", elements="dict", required=True),
            validate_certs=dict(type="bool", default=False),
            concurrency=dict(type="int", default=16),
        ),
        supports_check_mode=True,
    )
    results = run_checks(module.params["checks"], module.params["validate_certs"], module.params["concurrency"])
    module.exit_json(changed=False, checks=results, failed_checks=failed(results))


if __name__ == "__main__":
    main()
