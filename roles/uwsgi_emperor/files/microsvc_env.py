# Installed by microsvc.deploy.uwsgi_emperor. Do not edit: the next run replaces it.
"""A service's environment, read by each uWSGI worker before it loads the app.

The vassal ini imports this file (``import = <this file>``) and names the service's environment
file in MICROSVC_ENV_FILE. uWSGI runs the import in each worker after the fork (``lazy-apps``),
as the service's user, before the app is loaded: so DJANGO_SETTINGS_MODULE and the rest are set
when the app imports. The file (0640 root:<service>) is read as plain KEY=VALUE lines: no value
is ever expanded (uWSGI's ``$(...)``, ``@(...)``, ``%(...)`` never see it), and the uWSGI master,
which runs as root until it drops its privileges, never reads it. Because the master never holds
the service's environment, a name dropped from the file is gone from the next workers.

A file that cannot be read stops the worker: an app must not serve without its settings.
"""

import os
import sys


def read(path):
    env = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            env[key] = value
    return env


def load():
    path = os.environ.get("MICROSVC_ENV_FILE")
    try:
        if not path:
            raise OSError("MICROSVC_ENV_FILE is not set")
        values = read(path)
    except (OSError, ValueError) as exc:
        sys.stderr.write("microsvc_env: cannot read the service's environment: %s\n" % exc)
        sys.stderr.flush()
        os._exit(1)
    os.environ.update(values)


load()
