"""Stand-in for get-pip.py, which ansible-test downloads from ci-files.testing.ansible.com, a host
outside the package registries: pip from the interpreter's own ensurepip, then pip installs what
get-pip.py would, from the package index. `make sanity` puts it where ansible-test looks for its cache.

The pip that ensurepip bundles ignores pip's configured certificate bundle here (a TLS proxy signs
the index), so the system's bundle is named on its command line."""

import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
bundle = "/etc/ssl/certs/ca-certificates.crt"
if os.path.exists(bundle):
    args = ["--cert", bundle] + args
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args))
