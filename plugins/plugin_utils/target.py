# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""The Python environment a host's virtualenv is built for, from what the probe saw on the host.

The controller resolves a service's requirements for this target, never for its own interpreter:
environment markers (``python_full_version < "3.11.3"``, ``platform_machine == "aarch64"``) are
evaluated as the host's pip would evaluate them, and wheels are chosen for the host's glibc.

Pure functions: the probe reports, for each interpreter a service runs, its implementation, its
full version, the machine and the C library it was linked with (``platform.libc_ver()``).
"""

from __future__ import annotations

import re

# The glibc versions a resolver can be told about (uv 0.13's manylinux targets). A host with a
# newer glibc runs every wheel built for an older one: the target is the newest known at most the
# host's. Older than 2.17 is refused (no supported host has one).
MANYLINUX_MIN = 17
MANYLINUX_MAX = 40
MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
VERSION = re.compile(r"(3)\.([0-9]{1,2})\.([0-9]{1,3})")
GLIBC = re.compile(r"2\.([0-9]{1,3})(?:\.[0-9]+)?")


class TargetError(Exception):
    pass


def describe(target):
    """A short text a message can name the target by: 'CPython 3.11.2 on Linux x86_64, glibc 2.36'."""
    return "CPython %s on Linux %s, glibc %s" % (target["python_full_version"], target["platform_machine"],
                                                 target["glibc"])


def target_environment(facts):
    """The target of a virtualenv build from the probe's facts about one interpreter:
    ``implementation`` (``cpython``), ``version`` (``3.11.2``), ``machine`` (``x86_64``),
    ``libc`` (``glibc``) and ``libc_version`` (``2.36``).

    Returns the PEP 508 marker environment the host's pip evaluates (every marker that can
    differ between Linux hosts), the glibc, the manylinux tag the resolver targets, and the
    tags pip download accepts for it."""
    facts = facts or {}
    implementation = str(facts.get("implementation") or "")
    version = str(facts.get("version") or "")
    machine = str(facts.get("machine") or "")
    libc, libc_version = str(facts.get("libc") or ""), str(facts.get("libc_version") or "")
    if implementation != "cpython":
        raise TargetError("the interpreter is %s, not CPython: requirements are resolved for CPython hosts only"
                          % (implementation or "of an unknown implementation"))
    match = VERSION.fullmatch(version)
    if not match:
        raise TargetError("the interpreter's version %r is not a Python 3 version such as 3.11.2" % version)
    if machine not in MACHINES:
        raise TargetError("the machine %r is not one requirements are resolved for (x86_64 or aarch64)" % machine)
    machine = MACHINES[machine]
    glibc = GLIBC.fullmatch(libc_version)
    if libc != "glibc" or not glibc:
        raise TargetError("the interpreter is linked with %s %s, not glibc: manylinux wheels do not run on it"
                          % (libc or "an unknown C library", libc_version))
    minor = int(glibc.group(1))
    if minor < MANYLINUX_MIN:
        raise TargetError("glibc 2.%d is older than 2.%d, the oldest manylinux wheels need" % (minor, MANYLINUX_MIN))
    manylinux = min(minor, MANYLINUX_MAX)
    major_minor = "%s.%s" % (match.group(1), match.group(2))
    short = "%s%s" % (match.group(1), match.group(2))
    tags = ["manylinux_2_%d_%s" % (m, machine) for m in range(manylinux, MANYLINUX_MIN - 1, -1)]
    tags += ["manylinux2014_%s" % machine]
    if machine == "x86_64":
        tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return {
        # PEP 508 markers, as the host's interpreter reports them.
        "python_full_version": version,
        "python_version": major_minor,
        "implementation_name": "cpython",
        "implementation_version": version,
        "platform_python_implementation": "CPython",
        "platform_machine": machine,
        "platform_system": "Linux",
        "sys_platform": "linux",
        "os_name": "posix",
        "glibc": "2.%d" % minor,
        # What the resolver (uv pip compile) and the downloader (pip download) are told.
        "python_platform": "%s-manylinux_2_%d" % (machine, manylinux),
        "abi": "cp%s" % short,
        "platform_tags": tags,
    }


def key(target):
    """What a wheelhouse depends on, as one string (the cache key's part of the target)."""
    return "%s-%s-%s" % (target["python_full_version"], target["platform_machine"], target["python_platform"])
