"""The task Celery's worker runs (beat sends it every 2 seconds, see shop/celery.py)."""

import json
import os
import socket
import time

from django.conf import settings

from .celery import app


def current_release():
    """The release this process runs (its working directory's name: microsvc-run starts every
    worker in its release)."""
    return os.path.basename(os.getcwd())


@app.task(bind=True)
def record(self, sender="unknown"):
    """Append one JSON line to the tasks' record saying who ran the task: the worker's node name
    (``celery@<host>``), the pool process (pid) and the worker process it belongs to (its
    parent), the release and when (unix time)."""
    entry = {
        "task": self.name,
        "id": self.request.id,
        "sender": sender,
        "hostname": self.request.hostname,
        "host": socket.gethostname(),
        "release": current_release(),
        "pid": os.getpid(),
        "worker_pid": os.getppid(),
        "time": time.time(),
    }
    line = json.dumps(entry, sort_keys=True) + "\n"
    # One write of one short line in append mode: lines of concurrent pool processes do not mix.
    with open(settings.SHOP_TASK_RECORD, "a", encoding="utf-8") as handle:
        handle.write(line)
    return entry
