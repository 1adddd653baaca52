"""Roles read the plan and their own variables only: no role's files name another role's
variables, playbooks only set role variables (as a role's parameters) and never read them, and
no plugin opens a role's files."""

import glob
import os
import re

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ROLES = ("nginx_gateway", "uwsgi_emperor", "uwsgi_vassal", "service_firewall", "service_plan")
VARIABLE = re.compile(r"\b_{0,2}(%s)_[a-z0-9_]+" % "|".join(ROLES))
# The plan's own role: its schema's descriptions name the settings a service field overrides.
PLAN_ROLE = "service_plan"


def role_files(role):
    for path in glob.glob(os.path.join(ROOT, "roles", role, "**", "*"), recursive=True):
        if os.path.isfile(path) and not path.endswith(".md"):
            yield path


@pytest.mark.parametrize("role", [r for r in ROLES if r != PLAN_ROLE])
def test_a_role_names_only_its_own_variables(role):
    found = []
    for path in role_files(role):
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                found += ["%s:%d: %s" % (os.path.relpath(path, ROOT), number, m.group(0))
                          for m in VARIABLE.finditer(line) if m.group(1) != role]
    assert not found, "\n".join(found)


def test_playbooks_set_role_variables_but_never_read_them():
    found = []
    for path in glob.glob(os.path.join(ROOT, "playbooks", "*.yml")) + [os.path.join(ROOT, "site.yml")]:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                code = line.split("#", 1)[0]
                setting = re.match(r"\s*(?:- )?(%s)\s*:" % VARIABLE.pattern, code)
                value = code[setting.end():] if setting else code
                found += ["%s:%d: %s" % (os.path.relpath(path, ROOT), number, m.group(0))
                          for m in VARIABLE.finditer(value)]
    assert not found, "\n".join(found)


def test_no_plugin_opens_a_role_file_but_the_plans_schema():
    found = []
    for path in glob.glob(os.path.join(ROOT, "plugins", "**", "*.py"), recursive=True):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        for match in re.finditer(r"[\"']roles[\"']\s*,([^)\n]*)", text):
            if '"service_plan", "meta", "argument_specs.yml"' not in match.group(1):
                found.append("%s: %s" % (os.path.relpath(path, ROOT), match.group(0)))
        found += ["%s: %s" % (os.path.relpath(path, ROOT), m.group(0))
                  for m in re.finditer(r"roles/[a-z_]+/(?:defaults|vars|tasks|templates)/", text)]
    assert not found, "\n".join(found)
