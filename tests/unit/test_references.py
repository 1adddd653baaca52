"""Every attribute the plugins read from this collection's own modules exists: a guard against a
name moved or renamed in one file and still used through a module in another (the host-side
modules only meet these names on a host, where no unit test imports them)."""

import ast
import glob
import importlib
import os

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PACKAGES = ("ansible_collections.microsvc.deploy.plugins.module_utils",
            "ansible_collections.microsvc.deploy.plugins.plugin_utils")
FILES = sorted(glob.glob(os.path.join(ROOT, "plugins", "**", "*.py"), recursive=True))


def module_references(path):
    """(local name, module path, attribute, line) of every `name.attr` where name is one of our modules."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    modules = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in PACKAGES:
            for alias in node.names:
                modules[alias.asname or alias.name] = "%s.%s" % (node.module, alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            yield node.value.id, modules[node.value.id], node.attr, node.lineno


@pytest.mark.parametrize("path", FILES, ids=[os.path.relpath(p, ROOT) for p in FILES])
def test_attributes_of_our_modules_exist(path):
    missing = []
    for local, module, attr, line in module_references(path):
        if not hasattr(importlib.import_module(module), attr):
            missing.append("%s:%d %s.%s" % (os.path.relpath(path, ROOT), line, local, attr))
    assert not missing, missing
