#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Check many URLs in one call (health of every service through the gateway)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: http_check
short_description: Request many URLs in one call and report status, time and whether each passed
description:
  - Requests each URL once (redirects are not followed) and compares the status with the accepted
    ones and, when given, the body with a regular expression. Changes nothing.
  - Used by C(playbooks/status.yml) on the gateway host, so one call checks every service.
version_added: 0.1.0
options:
  checks:
    description: Checks, each with C(name), C(url), C(status) (list of accepted codes), optional C(body).
    type: list
    elements: dict
    required: true
  timeout:
    description: Seconds for each request.
    type: int
    default: 5
  validate_certs:
    description: Verify TLS certificates.
    type: bool
    default: false
author:
  - microsvc maintainers
"""

RETURN = r"""
checks:
  description: Per check name, C(status), C(ok), C(elapsed_ms) and C(error).
  returned: always
  type: dict
"""

import re
import ssl
import time
import urllib.error
import urllib.request

from ansible.module_utils.basic import AnsibleModule


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            checks=dict(type="list", elements="dict", required=True),
            timeout=dict(type="int", default=5),
            validate_certs=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    context = ssl.create_default_context()
    if not module.params["validate_certs"]:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=context))
    results = {}
    for check in module.params["checks"]:
        started = time.time()
        status, body, error = None, "", None
        try:
            resp = opener.open(check["url"], timeout=module.params["timeout"])
            status, body = resp.status, resp.read(65536).decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read(65536).decode("utf-8", "replace")
        except (OSError, ValueError) as exc:
            error = "%s: %s" % (type(exc).__name__, exc)
        ok = status in check.get("status", [200]) and (
            not check.get("body") or re.search(check["body"], body) is not None
        )
        results[check["name"]] = dict(status=status, ok=ok, error=error,
                                      elapsed_ms=int((time.time() - started) * 1000))
    module.exit_json(changed=False, checks=results)


if __name__ == "__main__":
    main()
