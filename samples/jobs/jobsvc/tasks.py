"""The jobs the worker runs (imported by RQ's work horse, from the worker's release)."""

import os
import time

from jobsvc import identity

LONGEST = 99.0


def _data_file(prefix, word):
    data = os.environ.get("MICROSVC_DATA_DIR")
    return os.path.join(data, "%s-%s" % (prefix, word)) if data else None


def process(word, seconds=0):
    """Upper-case a word, after waiting ``seconds`` (at most 99), and say who did it (the work
    horse's pid, and the worker process it belongs to: its parent) and when (unix times of its
    start and end).

    A job that waits writes ``started-<word>`` (its worker's pid) into the service's data
    directory, and ends its wait early once ``release-<word>`` appears there: a test holds a job
    in flight exactly until the moment it chooses, however long a deploy takes."""
    started = time.time()
    wait = min(max(float(seconds), 0.0), LONGEST)
    release = _data_file("release", word)
    if wait and release:
        with open(_data_file("started", word), "w", encoding="utf-8") as handle:
            handle.write("%d\n" % os.getppid())
    while time.time() - started < wait:
        if release and os.path.exists(release):
            break
        time.sleep(0.2)
    return dict(identity(), worker_pid=os.getppid(), word=word, result=word.upper(), started=started,
                ended=time.time())
