"""Make the checkout importable as the collection microsvc.deploy (collections/ links to it), so
tests import plugin code the way Ansible does."""

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
COLLECTIONS = os.path.join(ROOT, "collections")
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
