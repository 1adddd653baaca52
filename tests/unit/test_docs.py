"""Reference documentation stays in sync with the argument specs, and every role documents itself."""

import glob
import os
import subprocess
import sys

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_variables_reference_is_up_to_date():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen-docs"), "--check"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_every_default_is_declared_in_argument_specs():
    for defaults in glob.glob(os.path.join(ROOT, "roles", "*", "defaults", "main.yml")):
        role_dir = os.path.dirname(os.path.dirname(defaults))
        with open(defaults, encoding="utf-8") as handle:
            names = set((yaml.safe_load(handle) or {}).keys())
        with open(os.path.join(role_dir, "meta", "argument_specs.yml"), encoding="utf-8") as handle:
            declared = set(yaml.safe_load(handle)["argument_specs"]["main"]["options"])
        assert names == declared, (role_dir, names ^ declared)


def test_every_role_readme_mentions_each_variable():
    for spec in glob.glob(os.path.join(ROOT, "roles", "*", "meta", "argument_specs.yml")):
        role_dir = os.path.dirname(os.path.dirname(spec))
        with open(spec, encoding="utf-8") as handle:
            declared = yaml.safe_load(handle)["argument_specs"]["main"]["options"]
        with open(os.path.join(role_dir, "README.md"), encoding="utf-8") as handle:
            readme = handle.read()
        missing = [name for name in declared if name not in readme]
        assert not missing, (role_dir, missing)
