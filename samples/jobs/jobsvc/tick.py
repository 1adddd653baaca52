"""A schedule's command: one line at its start and one at its end in
$MICROSVC_DATA_DIR/ticks-<name>.log, with an optional sleep between them.

    python -m jobsvc.tick NAME [SECONDS]
"""

import datetime
import os
import sys
import time

from jobsvc import identity


def line(event, name):
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    who = identity()
    return "%s %s %s host=%s release=%s version=%s pid=%d\n" % (
        now, name, event, who["host"], who["release"], who["version"], who["pid"])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    name = argv[0] if argv else "tick"
    seconds = min(max(float(argv[1]), 0.0), 600.0) if len(argv) > 1 else 0.0
    path = os.path.join(os.environ.get("MICROSVC_DATA_DIR", "."), "ticks-%s.log" % name)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line("start", name))
    print("%s: started, sleeping %.1fs" % (name, seconds), flush=True)
    time.sleep(seconds)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line("end", name))
    print("%s: done" % name, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
