# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Read a uWSGI stats socket (a unix socket that answers one JSON document and closes)."""

from __future__ import annotations

import json
import os
import socket


def read_stats(path, timeout=2.0):
    """Return the stats document, or None when nothing answers on ``path``."""
    if not os.path.exists(path):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except OSError:
        return None
    finally:
        sock.close()
    try:
        return json.loads(b"".join(chunks).decode("utf-8", "replace"))
    except ValueError:
        return None


def workers(stats):
    """Return [(pid, accepting, status)] for the workers in a stats document."""
    if not stats:
        return []
    out = []
    for worker in stats.get("workers", []):
        out.append((worker.get("pid", 0), bool(worker.get("accepting", 0)), worker.get("status", "")))
    return out


def summary(stats):
    """A small, JSON-friendly view of a stats document."""
    if not stats:
        return {"running": False}
    ws = stats.get("workers", [])
    return {
        "running": True,
        "master_pid": stats.get("pid"),
        "workers": [
            {
                "pid": w.get("pid"),
                "accepting": bool(w.get("accepting", 0)),
                "status": w.get("status"),
                "requests": w.get("requests"),
                "rss": w.get("rss"),
                "respawn_count": w.get("respawn_count"),
                "last_spawn": w.get("last_spawn"),
            }
            for w in ws
        ],
    }
