"""meta/runtime.yml keeps every plugin name a release shipped working or failing with a clear message:
each module and action plugin of a released version that is no longer a file is redirected or
tombstoned, and every plugin a routing entry points users to exists."""

import os
import re

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def load(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


ROUTING = load("meta/runtime.yml")["plugin_routing"]
RELEASES = load("changelogs/changelog.yaml")["releases"]
SHIPPED = sorted((version, "modules", module["name"]) for version, release in RELEASES.items()
                 for module in release.get("modules", []))
ROLES = set(os.listdir(os.path.join(ROOT, "roles")))


def plugin_exists(kind, name):
    """A plugin file of this collection, or a name the routing redirects."""
    return (os.path.exists(os.path.join(ROOT, "plugins", kind, name + ".py"))
            or "redirect" in ROUTING.get(kind, {}).get(name, {}))


@pytest.mark.parametrize("version,kind,name", SHIPPED, ids=["%s-%s" % (v, n) for v, _k, n in SHIPPED])
def test_every_shipped_module_still_resolves_or_is_tombstoned(version, kind, name):
    if os.path.exists(os.path.join(ROOT, "plugins", kind, name + ".py")):
        return
    entry = ROUTING.get(kind, {}).get(name)
    assert entry and ("redirect" in entry or "tombstone" in entry), \
        "%s %s shipped in %s is gone: add a redirect or a tombstone to meta/runtime.yml" % (kind, name, version)


ENTRIES = sorted((kind, name) for kind, entries in ROUTING.items() for name in entries)


@pytest.mark.parametrize("kind,name", ENTRIES, ids=["%s-%s" % e for e in ENTRIES])
def test_routing_points_to_what_exists(kind, name):
    entry = ROUTING[kind][name]
    assert not os.path.exists(os.path.join(ROOT, "plugins", kind, name + ".py")), "a routed name is still a file"
    if "redirect" in entry:
        target = entry["redirect"]
        assert target.startswith("microsvc.deploy."), target
        assert os.path.exists(os.path.join(ROOT, "plugins", kind, target.rsplit(".", 1)[1] + ".py")), target
    if "tombstone" in entry:
        text = entry["tombstone"].get("warning_text", "")
        assert text.startswith("Use "), "a tombstone says what to use instead"
        for named in re.findall(r"microsvc\.deploy\.(\w+)", text):
            assert named in ROLES or plugin_exists("modules", named), "%s names microsvc.deploy.%s" % (name, named)
