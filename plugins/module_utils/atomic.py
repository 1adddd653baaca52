# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Replace a file atomically: readers see the old content or the new one, never a partial file."""

from __future__ import annotations

import os
import tempfile


def write_atomic(path, data, mode=0o644, uid=None, gid=None, makedirs=False, durable=False):
    """Write ``data`` (str or bytes) to ``path`` through a temporary file in the same directory
    that gets its owner and mode before it is renamed over ``path``. The temporary name
    (``.microsvc-*.tmp``) matches none of the globs that nginx, the emperor or the roles read.
    ``durable`` flushes the data to disk before the rename."""
    directory = os.path.dirname(path)
    if makedirs:
        os.makedirs(directory, mode=0o755, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=".microsvc-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            if uid is not None or gid is not None:
                os.fchown(handle.fileno(), -1 if uid is None else uid, -1 if gid is None else gid)
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
