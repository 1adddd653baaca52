# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""The uWSGI options a service entry may pass through ``uwsgi_options``: an allow-list.

Every other option is refused, naming it. An option is here only when it tunes the
service's own workers and cannot change who the vassal runs as, what it listens on, which
files it reads or writes, or which code runs as root. Each entry says why it is safe and
what its value may be; values are typed (an integer within bounds, a boolean, one of a few
words, or a header line), so no value can carry uWSGI's readers and expansions
(``@(file)``, ``$(ENV)``, ``%(magic)``, ``=(...)``, ``{{ }}``) or a line break.

docs/variables.md lists this table (tools/gen-docs reads it).
"""

from __future__ import annotations

from ansible_collections.microsvc.deploy.plugins.plugin_utils.checks import (
    Bool,
    Choice,
    Int,
    ListOf,
    Str,
    no_uwsgi_magic,
)

DAY = 86400
MIB = 1 << 20

# option: (check of the value, why it is safe to pass through)
ALLOWED = {
    # Worker recycling: bounds on a worker's life and memory; the master replaces it.
    "max-worker-lifetime": (Int(0, 30 * DAY), "recycle a worker after this many seconds"),
    "max-worker-lifetime-delta": (Int(0, DAY), "spread worker recycling by up to this many seconds"),
    "min-worker-lifetime": (Int(0, DAY), "a worker lives at least this many seconds before recycling"),
    "max-requests-delta": (Int(0, 1000000), "spread max-requests recycling across workers"),
    "reload-on-rss": (Int(0, 1 << 20), "recycle a worker above this RSS, in MiB"),
    "reload-on-as": (Int(0, 1 << 20), "recycle a worker above this address space, in MiB"),
    "evil-reload-on-rss": (Int(0, 1 << 20), "the master kills a worker above this RSS, in MiB"),
    "evil-reload-on-as": (Int(0, 1 << 20), "the master kills a worker above this address space, in MiB"),
    "worker-reload-mercy": (Int(1, 3600), "seconds a worker may take to stop during a reload"),
    "reload-mercy": (Int(1, 3600), "seconds the whole instance may take to reload"),
    "reload-on-exception": (Bool(), "recycle a worker after an unhandled exception"),
    # Request handling limits.
    "listen": (Int(1, 65535), "socket backlog (bounded by the kernel's somaxconn)"),
    "post-buffering": (Int(0, 64 * MIB), "buffer request bodies above this size, in bytes"),
    "post-buffering-bufsize": (Int(4096, 64 * MIB), "buffer size for post-buffering, in bytes"),
    "limit-post": (Int(0, 1 << 40), "largest request body the app accepts, in bytes"),
    "body-read-warning": (Int(1, 1 << 20), "warn when a request body above this many MiB is read"),
    "socket-timeout": (Int(1, 3600), "seconds for socket operations with the gateway"),
    "chunked-input-limit": (Int(0, 1 << 30), "largest chunk of a chunked request body, in bytes"),
    "chunked-input-timeout": (Int(1, 3600), "seconds to wait for a chunk of a chunked request body"),
    "harakiri-verbose": (Bool(), "log more about requests that harakiri killed"),
    # The cheaper subsystem: how many of the configured processes run when idle.
    "cheaper": (Int(0, 256), "workers kept when idle (below processes)"),
    "cheaper-initial": (Int(1, 256), "workers started at first"),
    "cheaper-step": (Int(1, 256), "workers added at once under load"),
    "cheaper-algo": (Choice("spare", "spare2", "backlog", "busyness", "manual"), "how workers are added"),
    "cheaper-overload": (Int(1, 3600), "seconds between cheaper decisions"),
    "cheaper-rss-limit-soft": (Int(0, 1 << 40), "add no worker above this total RSS, in bytes"),
    "cheaper-rss-limit-hard": (Int(0, 1 << 40), "stop a worker above this total RSS, in bytes"),
    "cheaper-busyness-min": (Int(0, 100), "busyness (%) below which workers are stopped"),
    "cheaper-busyness-max": (Int(0, 100), "busyness (%) above which workers are added"),
    "cheaper-busyness-multiplier": (Int(1, 1000), "cycles before an idle worker stops"),
    "cheaper-busyness-penalty": (Int(0, 1000), "extra cycles after a worker was stopped too early"),
    "cheaper-busyness-verbose": (Bool(), "log busyness decisions"),
    "cheaper-busyness-backlog-alert": (Int(0, 65535), "backlog that adds workers at once"),
    "cheaper-busyness-backlog-step": (Int(1, 256), "workers added on a backlog alert"),
    "cheaper-busyness-backlog-multiplier": (Int(1, 1000), "cycles with a backlog before workers are added"),
    "cheaper-busyness-backlog-nonzero": (Int(0, 3600), "seconds with a backlog before workers are added"),
    "idle": (Int(1, 30 * DAY), "cheap mode after this many idle seconds"),
    # Behaviour of the Python application inside its own workers.
    "single-interpreter": (Bool(), "one Python interpreter per worker"),
    "py-call-osafterfork": (Bool(), "run Python's os.register_at_fork hooks in workers"),
    "wsgi-env-behaviour": (Choice("holy", "cheat"), "how the WSGI environ is built"),
    "thread-stacksize": (Int(64, 65536), "stack size of threads, in KiB"),
    "offload-threads": (Int(0, 64), "threads that send responses for the workers"),
    "ignore-sigpipe": (Bool(), "do not log SIGPIPE"),
    "ignore-write-errors": (Bool(), "do not log write errors (clients that went away)"),
    "disable-write-exception": (Bool(), "no Python exception on write errors"),
    "skip-atexit": (Bool(), "skip Python's atexit hooks at shutdown"),
    "close-on-exec": (Bool(), "sockets are not inherited by processes the app starts"),
    "auto-procname": (Bool(), "name processes by their role (master, worker N)"),
    # Logging into the service's own log.
    "memory-report": (Bool(), "log each request's memory use"),
    "log-slow": (Int(1, 3600 * 1000), "log requests slower than this many milliseconds"),
    "log-big": (Int(1, 1 << 40), "log responses bigger than this many bytes"),
    "log-4xx": (Bool(), "log requests answered 4xx"),
    "log-5xx": (Bool(), "log requests answered 5xx"),
    "log-micros": (Bool(), "response times in microseconds"),
    "log-x-forwarded-for": (Bool(), "log the gateway's X-Forwarded-For as the client address"),
    # Response headers added by uWSGI (repeatable).
    "add-header": (ListOf(Str(r"[A-Za-z0-9-]{1,64}: [ !#-~]{0,200}",
                              "a header line 'Name: value' of printable ASCII without '\"'", 270,
                              extra=no_uwsgi_magic), 20),
                   "response header line(s) added by uWSGI"),
}

# Options that may be given as a list (repeated in the ini).
REPEATABLE = frozenset(["add-header"])


def check_option(name, value):
    """None when ``name: value`` may be passed through, else a message (without the field)."""
    entry = ALLOWED.get(name)
    if entry is None:
        return None, "is not an option that may be passed through; allowed: %s (see docs/variables.md)" % (
            ", ".join(sorted(ALLOWED)))
    check = entry[0]
    if name in REPEATABLE and not isinstance(value, list):
        value = [value]
    if name not in REPEATABLE and isinstance(value, list):
        return None, "takes one value, not a list"
    msg = check(value)
    if msg:
        return None, msg
    return render(value), None


def render(value):
    """The value(s) as the ini gets them: booleans as true/false, numbers as digits."""
    if isinstance(value, list):
        return [render(v) for v in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
