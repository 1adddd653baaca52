"""jobs: a web process that enqueues jobs into Redis, an RQ worker that runs them, schedules.

VERSION is what a code deploy changes in the tests; the release is the directory the process
runs in (microsvc-run and uWSGI's post-fork chdir put every process in its release).
"""

import os
import socket

VERSION = "1"


def current_release():
    """The release this process runs (its working directory's name)."""
    return os.path.basename(os.getcwd())


def identity():
    return {"version": VERSION, "release": current_release(), "host": socket.gethostname(), "pid": os.getpid()}
