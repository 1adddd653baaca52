# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""The bundle of controller files a module call received (plugin_utils/bundle.py sends it).

A small bundle travels inside the module's arguments (``bundle_data``, base64): copying it to the
host apart would cost four more remote commands (a temporary directory, the copy, its mode, its
removal). A large one is copied, and ``bundle`` names it.
"""

from __future__ import annotations

import base64
import os
import tempfile

# The argument_spec entries of a module that takes a bundle.
ARGUMENT_SPEC = dict(bundle=dict(type="path"), bundle_data=dict(type="str", no_log=True))


def bundle_path(module):
    """The bundle's path on this host, or None: a sent bundle is written to a file of this call's
    private temporary directory (removed with it when the module exits)."""
    data = module.params.get("bundle_data")
    if not data:
        return module.params.get("bundle")
    fd, path = tempfile.mkstemp(prefix="microsvc-bundle-", suffix=".tar", dir=module.tmpdir)
    with os.fdopen(fd, "wb") as handle:
        handle.write(base64.b64decode(data))
    return path
