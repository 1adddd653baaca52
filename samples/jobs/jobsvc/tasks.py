"""The jobs the worker runs (imported by RQ's work horse, from the worker's release)."""

import os
import time

from jobsvc import identity


def process(word, seconds=0):
    """Upper-case a word, after sleeping ``seconds`` (at most 60), and say who did it (the work
    horse's pid, and the worker process it belongs to: its parent) and when (unix times of its
    start and end)."""
    started = time.time()
    time.sleep(min(max(float(seconds), 0.0), 60.0))
    return dict(identity(), worker_pid=os.getppid(), word=word, result=word.upper(), started=started,
                ended=time.time())
