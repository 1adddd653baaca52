# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""The collection's systemd sandbox, as lines of a unit file."""

from __future__ import annotations

DOCUMENTATION = r"""
name: systemd_sandbox
version_added: 0.2.0
short_description: The systemd sandbox every unit of the collection starts from
description:
  - Returns the settings (one C(Key=value) line each) that every unit the collection writes runs with
    (C(NoNewPrivileges=), C(ProtectSystem=strict), C(ProtectHome=), C(PrivateTmp=), C(PrivateDevices=), the
    C(Protect*) kernel, clock and hostname settings, C(Restrict*) SUID, realtime and namespaces,
    C(LockPersonality=), C(SystemCallArchitectures=native)), so that they are written in one place
    (C(SANDBOX) in C(plugins/module_utils/units.py)).
  - A unit adds only what is its own after it - capabilities, writable paths, address families, hidden paths.
options: {}
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
# In a unit template, below [Service]:
#   {{ lookup('microsvc.deploy.systemd_sandbox') }}
#   CapabilityBoundingSet=CAP_SETUID CAP_SETGID
"""

RETURN = r"""
_raw:
  description: One string, the settings' lines joined by line breaks (no trailing one).
  type: list
  elements: str
"""

from ansible.plugins.lookup import LookupBase
from ansible_collections.microsvc.deploy.plugins.module_utils.units import SANDBOX


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        return ["\n".join(SANDBOX)]
