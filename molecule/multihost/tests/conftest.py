"""The multihost scenario's hosts as fixtures, for every test module here."""

import pytest
from multihost_hosts import APP1, APP2, DB, GW, backend


@pytest.fixture(scope="module")
def gw():
    return backend(GW)


@pytest.fixture(scope="module")
def app1():
    return backend(APP1)


@pytest.fixture(scope="module")
def app2():
    return backend(APP2)


@pytest.fixture(scope="module")
def db():
    return backend(DB)
