"""A release command: records, in $MICROSVC_DATA_DIR/release-commands.log, that it ran for
this release (a deploy runs it once, before the switch).

    python -m jobsvc.release
"""

import os
import sys

from jobsvc import identity


def main():
    who = identity()
    path = os.path.join(os.environ.get("MICROSVC_DATA_DIR", "."), "release-commands.log")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("release=%s version=%s host=%s\n" % (who["release"], who["version"], who["host"]))
    print("release command ran for release %s" % who["release"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
