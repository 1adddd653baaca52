# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Documentation for the gateway_settings action plugin (it runs on the controller only)."""

DOCUMENTATION = r"""
module: gateway_settings
short_description: Check the settings of the gateway's edge features before any host changes
description:
  - Checks each given variable against an allow-list (full-string patterns, no control characters, bounded
    numbers) - ACME (directory URL, e-mail, names, CA bundle), HTTP/2, compression, the access log format,
    maintenance answers and the metrics endpoints (loopback or a private address only, never a wildcard).
  - Then checks what involves several settings (ACME needs TLS and no other certificate source; metrics
    ports must not collide with the gateway's).
  - Fails with one line per problem, each naming the variable. Runs on the controller only.
version_added: 0.1.0
options:
  settings:
    description: Variable names and their values; only the variables given are checked.
    type: dict
    required: true
notes:
  - Why not a builtin - C(ansible.builtin.assert) has no allow-lists; this checks every setting on the controller
    and names each problem, before any host changes.
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
- name: Check the gateway's settings
  microsvc.deploy.gateway_settings:
    settings:
      nginx_gateway_metrics_address: "{{ nginx_gateway_metrics_address }}"
"""

RETURN = r"""
msg:
  description: How many settings were checked.
  returned: success
  type: str
"""
