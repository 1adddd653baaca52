"""The multihost scenario's hosts, shared by its test modules (conftest.py turns them into
fixtures): names, private addresses, and the inventory a test's own run of site.yml uses."""

import os
import sys

import testinfra
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from microsvc_checks import write_inventory

GW, APP1, APP2, DB = "microsvc-mh-gw", "microsvc-mh-app1", "microsvc-mh-app2", "microsvc-mh-db"
# The spare app host: not an app host after converge; test_fleet.py joins it, then it leaves.
APP3 = "microsvc-mh-app3"
ADDR = {GW: "172.30.77.10", APP1: "172.30.77.11", APP2: "172.30.77.12", APP3: "172.30.77.13"}
SETTINGS = {"microsvc_gateway_hosts": "gateways", "microsvc_app_hosts": "app_hosts"}
# The scenario's service list: the demo's services, service1 with its database on microsvc-mh-db.
SCENARIO_SERVICES = os.path.join(os.path.dirname(__file__), "..", "group_vars", "all", "services.yml")


def backend(name):
    return testinfra.get_host("docker://" + name)


def inventory(directory, services, apps=(APP1, APP2)):
    """The scenario's inventory for a run from a test: gateway, app hosts and their addresses."""
    inv = write_inventory(directory, GW, services, SETTINGS)
    with open(os.path.join(inv, "hosts.yml"), encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    conn = data["all"]["hosts"][GW]
    data["all"]["hosts"] = {}
    data["all"]["children"] = {
        "gateways": {"hosts": {GW: dict(conn, microsvc_private_address=ADDR[GW])}},
        "app_hosts": {"hosts": {h: dict(conn, microsvc_private_address=ADDR[h]) for h in apps}},
    }
    with open(os.path.join(inv, "hosts.yml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(data, handle)
    return inv
