"""Make the checkout importable as the collection microsvc.deploy (collections/ links to it), the
way Ansible itself imports it: tests import plugin code, and render templates with this
collection's filters, through Ansible's collection loader."""

import os

from ansible.plugins.loader import init_plugin_loader

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
init_plugin_loader([os.path.join(ROOT, "collections")])
