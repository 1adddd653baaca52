"""service7's processes beside its web server: a worker, a schedule's run and a release command.

Each appends one line to $MICROSVC_DATA_DIR/<kind>.log naming the release it runs (its working
directory: microsvc-run starts every process in the service's current release) and its pid; the
worker then waits until it is stopped.

    python -m svc7.jobs worker|tick|release
"""

import datetime
import os
import signal
import sys
import time

KINDS = ("worker", "tick", "release")


def record(kind):
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    path = os.path.join(os.environ.get("MICROSVC_DATA_DIR", "."), "%s.log" % kind)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("%s %s release=%s pid=%d\n" % (now, kind, os.path.basename(os.getcwd()), os.getpid()))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    kind = argv[0] if argv else ""
    if kind not in KINDS:
        print("usage: python -m svc7.jobs %s" % "|".join(KINDS), file=sys.stderr)
        return 2
    record(kind)
    if kind == "worker":
        signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
        print("worker: running", flush=True)
        while True:
            time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
