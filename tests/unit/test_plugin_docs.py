"""Every module of the collection documents itself in a form ansible-doc can read (the doc is
what `ansible-doc microsvc.deploy.<module>` and the changelog tooling show)."""

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODULES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "plugins", "modules", "*.py")))


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_reads_the_module(module):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-doc"), "--json",
                           "microsvc.deploy." + module], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert '"short_description"' in proc.stdout, proc.stdout[:500]


@pytest.mark.parametrize("module", MODULES)
def test_each_module_says_why_no_builtin_does_its_job(module):
    """A module of our own is kept only for a reason a builtin cannot meet (batching many services
    in one call, safety, an atomic swap): its DOCUMENTATION says which, in one note."""
    import yaml

    with open(os.path.join(ROOT, "plugins", "modules", module + ".py"), encoding="utf-8") as handle:
        text = handle.read()
    doc = yaml.safe_load(text.split('DOCUMENTATION = r"""', 1)[1].split('"""', 1)[0])
    reasons = [note for note in doc.get("notes", []) if note.startswith("Why not a builtin - ")]
    assert len(reasons) == 1 and len(reasons[0]) > 60, doc.get("notes")


def test_the_old_module_names_lead_to_the_new_ones():
    import yaml

    with open(os.path.join(ROOT, "meta", "runtime.yml"), encoding="utf-8") as handle:
        routing = yaml.safe_load(handle)["plugin_routing"]
    renamed = {"host_check": "host_preflight", "vassal_apply": "vassal", "vassal_deploy": "deploy_batch",
               "vassal_settle": "deploy_outcome"}
    for old, new in renamed.items():
        assert routing["modules"][old]["redirect"] == "microsvc.deploy." + new
        assert new in MODULES and old not in MODULES
    assert routing["action"]["vassal_deploy"]["redirect"] == "microsvc.deploy.deploy_batch"
