# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""The host layout, defined once: where each of a service's files lives and what marks them.

The plan computes every listed service's paths with ``service_paths`` (plugin_utils/service_plan.py);
host-side code reads them from there, and uses this module only for what the plan cannot know (a
service that is no longer listed) and for the names inside a release or virtualenv.
"""

from __future__ import annotations

import posixpath

RELEASE_MARKER = ".microsvc-release"   # in releases/<id>/: the release is complete
VENV_MARKER = ".microsvc-venv"         # in venvs/<key>/: the virtualenv is complete
SERVICE_MARKER = ".microsvc-service"   # in <root>/<name>/: the directory is the collection's
HISTORY = ".history"                   # in releases/: the releases that went live, oldest first
INI_MARKER = "; microsvc-service:"     # first lines of a vassal ini the collection wrote
WEB_UNITS_DIR = "/etc/systemd/system"  # an ASGI service's web unit


def service_paths(microsvc_root, name):
    """Every path of one service below ``microsvc_root`` (see docs/operations.md, "Files on a host")."""
    root = posixpath.join(microsvc_root, name)
    shared = posixpath.join(root, "shared")
    run = posixpath.join(root, "run")
    return {
        "root": root,
        "socket": posixpath.join(root, "uwsgi.sock"),
        "stats_socket": posixpath.join(run, "stats.sock"),
        # Beside env, in the root-owned service directory: root touches it, so it must not be in
        # run/, where the service could replace it with a link (uWSGI, as the service, only stats it).
        "reload_file": posixpath.join(root, "chain-reload"),
        "env_file": posixpath.join(root, "env"),
        # uWSGI's own log: opened by the master while it is still root (chown-socket delays the
        # privilege drop past logto2), so in a root-owned directory, never in shared/log.
        "uwsgi_log_dir": posixpath.join(root, "log"),
        "uwsgi_log": posixpath.join(root, "log", "uwsgi.log"),
        "shared_dir": shared,
        "log_dir": posixpath.join(shared, "log"),
        "data_dir": posixpath.join(shared, "data"),
        "static_dir": posixpath.join(shared, "static"),
        "run_dir": run,
        "releases_dir": posixpath.join(root, "releases"),
        "venvs_dir": posixpath.join(root, "venvs"),
        "current": posixpath.join(root, "current"),
        "marker": posixpath.join(root, SERVICE_MARKER),
    }


def ini_path(vassals_dir, name, interface="wsgi"):
    """The vassal ini of a service in the emperor's directory; an ASGI service's counterpart is its
    web unit (module_utils/asgi.py)."""
    if interface == "asgi":
        return posixpath.join(WEB_UNITS_DIR, "microsvc-%s.web@.service" % name)
    return posixpath.join(vassals_dir, name + ".ini")
