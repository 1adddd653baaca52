#!/usr/bin/env python3
"""Virtualenv builds, pip against uv, side by side in one run, inside a Debian 12 container.

Two requirement sets, each resolved for the container's Python (3.11.2, x86_64, glibc 2.36) by the
collection's own wheelhouse code on the controller (plugins/plugin_utils/wheelhouse.py) and copied
into the container with uv's binary, as a deploy pushes them:

- ``django``: Django only (the hidden-Django-like case);
- ``celery``: Django + Celery with its Redis transport (``celery[redis]``, hence ``redis``).

Each is built into a fresh virtualenv, the way the deploy module runs each installer
(plugins/module_utils/venvs.py), timed inside the container (no docker exec in the figures):

- pip: ``python3 -m venv`` (with pip), then ``pip install --no-index --find-links <wheelhouse>``;
- uv:  ``uv venv --python /usr/bin/python3``, then ``uv pip install --python <venv> --link-mode copy
  --compile-bytecode --no-index --find-links <wheelhouse>``;

with a cold cache (an empty cache directory; for pip also no cache at all, as deploys run it today)
and a warm one (the same cache directory after a build of the same set). Both installers compile
bytecode. The build sandbox (systemd-run, about 0.15 s a step, the same for both) is not included.

    python benchmarks/venv_speed.py            # writes benchmarks/venv_speed.md and docs/performance.md's figures
    python benchmarks/venv_speed.py --reps 5

Goal: the warm-cache Django + Celery virtualenv with uv in at most a third of pip's time.
The container is named microsvc-bench-deps; it is started from microsvc-test/debian:bookworm and
removed at the end (python3-venv is installed into it from Debian's archive first).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "collections"))

from ansible_collections.microsvc.deploy.plugins.plugin_utils.target import describe, target_environment
from ansible_collections.microsvc.deploy.plugins.plugin_utils.wheelhouse import (
    UV_VERSION,
    build_wheelhouse,
    uv_wheel,
)

HERE = os.path.join(ROOT, "benchmarks")
RESULTS = os.path.join(HERE, "venv_speed.md")
PERFORMANCE = os.path.join(ROOT, "docs", "performance.md")
CONTAINER = "microsvc-bench-deps"
IMAGE = "microsvc-test/debian:bookworm"
SETS = {
    "django": "Django>=5.2,<5.3\n",
    "celery": "Django>=5.2,<5.3\ncelery[redis]>=5.5,<5.6\n",
}
GOAL = 1 / 3
LOAD = {}

# Runs inside the container: one build, timed; prints JSON.
BUILD = r'''
import json, os, shutil, subprocess, sys, time
installer, name, cache = sys.argv[1:4]
wh, req, venv = "/bench/wh-" + name, "/bench/%s.txt" % name, "/bench/venv"
shutil.rmtree(venv, ignore_errors=True)
env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")
if installer == "pip":
    if cache == "none":
        env["PIP_NO_CACHE_DIR"] = "1"
    else:
        env["PIP_CACHE_DIR"] = cache
    steps = [["python3", "-m", "venv", venv],
             [venv + "/bin/python", "-m", "pip", "install", "--quiet", "--requirement", req,
              "--no-index", "--find-links", wh]]
else:
    steps = [["/bench/uv", "venv", "--quiet", "--no-config", "--python", "/usr/bin/python3", venv],
             ["/bench/uv", "pip", "install", "--quiet", "--no-config", "--python", venv + "/bin/python",
              "--link-mode", "copy", "--compile-bytecode", "--cache-dir", cache, "--requirement", req,
              "--no-index", "--find-links", wh]]
started = time.monotonic()
for step in steps:
    subprocess.run(step, check=True, env=env)
took = time.monotonic() - started
check = subprocess.run([venv + "/bin/python", "-c", "import django, sys; print(django.__version__)"
                        + ("; import celery, redis, kombu" if name == "celery" else "")],
                       capture_output=True, text=True, check=True)
print(json.dumps({"seconds": took, "django": check.stdout.strip()}))
'''


def docker(*args, check=True, capture=True):
    return subprocess.run(["docker", *args], check=check, capture_output=capture, text=True)


def in_container(*argv):
    return docker("exec", CONTAINER, *argv).stdout


def container_target():
    out = in_container("python3", "-c", "import platform, sys; print(sys.implementation.name, '%d.%d.%d' "
                       "% sys.version_info[:3], platform.machine(), *platform.libc_ver())").split()
    return target_environment(dict(zip(("implementation", "version", "machine", "libc", "libc_version"), out)))


def prepare(target, work):
    """The wheelhouses and uv, made on the controller and copied into the container."""
    staging = os.path.join(work, "bench")
    os.makedirs(staging)
    for name, requirements in SETS.items():
        with open(os.path.join(staging, name + ".txt"), "w", encoding="utf-8") as handle:
            handle.write(requirements)
        archive = build_wheelhouse(requirements, target, os.path.join(work, "cache"))
        with tarfile.open(archive) as tar:
            tar.extractall(os.path.join(work, "x-" + name), filter="data")
        shutil.move(os.path.join(work, "x-" + name, "wheelhouse"), os.path.join(staging, "wh-" + name))
    import zipfile

    with zipfile.ZipFile(uv_wheel(target, os.path.join(work, "cache"))) as wheel, \
            open(os.path.join(staging, "uv"), "wb") as out:
        out.write(wheel.read("uv-%s.data/scripts/uv" % UV_VERSION))
    os.chmod(os.path.join(staging, "uv"), 0o755)
    with open(os.path.join(staging, "build.py"), "w", encoding="utf-8") as handle:
        handle.write(BUILD)
    docker("cp", staging, "%s:/bench" % CONTAINER)
    return {name: len(os.listdir(os.path.join(staging, "wh-" + name))) for name in SETS}


def build(installer, name, cache):
    return json.loads(in_container("python3", "/bench/build.py", installer, name, cache))


def measure(reps):
    """{(set, installer, cache): [seconds]}; the variants interleaved, rep by rep."""
    out = {}
    for _rep in range(reps):
        for name in SETS:
            for installer in ("pip", "uv"):
                cold = "/bench/cache-%s-%s" % (installer, name)
                in_container("rm", "-rf", cold)
                out.setdefault((name, installer, "cold"), []).append(build(installer, name, cold)["seconds"])
                # The same cache again: warm.
                result = build(installer, name, cold)
                out.setdefault((name, installer, "warm"), []).append(result["seconds"])
            out.setdefault((name, "pip", "none"), []).append(build("pip", name, "none")["seconds"])
    return out


def report(figures, target, counts, reps):
    med = {key: statistics.median(values) for key, values in figures.items()}
    ratio = med[("celery", "uv", "warm")] / med[("celery", "pip", "warm")]
    lines = [
        "# Virtualenv builds: pip against uv",
        "",
        "`python benchmarks/venv_speed.py` (part of `make bench`), in the container `%s` (%s), target "
        "%s; median of %d builds each, seconds, timed inside the container (virtualenv creation and install; "
        "the build sandbox's ~0.15 s a step, the same for both, not included)." % (CONTAINER, IMAGE, describe(target), reps),
        "",
        "The machine: %d CPUs, load average %s at the start and %s at the end (figures from a loaded machine "
        "are CPU-starved: both installers compile bytecode)." % (os.cpu_count() or 0, LOAD["start"], LOAD["end"]),
        "",
        ("| set | wheels | pip, no cache (deploys until now) | pip, cold cache | pip, warm cache | uv, cold cache "
        "| uv, warm cache | uv warm / pip warm |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in SETS:
        lines.append("| %s | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.3f |" % (
            {"django": "Django only", "celery": "Django + Celery + redis"}[name], counts[name],
            med[(name, "pip", "none")], med[(name, "pip", "cold")], med[(name, "pip", "warm")],
            med[(name, "uv", "cold")], med[(name, "uv", "warm")],
            med[(name, "uv", "warm")] / med[(name, "pip", "warm")]))
    verdict = "met" if ratio <= GOAL else "**not met**"
    spread = figures[("celery", "uv", "warm")], figures[("celery", "pip", "warm")]
    summary = ("warm-cache Django + Celery virtualenv: uv %.2f s, pip %.2f s (medians; single builds %.2f-%.2f and "
               "%.2f-%.2f): %.3fx pip's time (target <= 1/3: %s)"
               % (med[("celery", "uv", "warm")], med[("celery", "pip", "warm")], min(spread[0]), max(spread[0]),
                  min(spread[1]), max(spread[1]), ratio, verdict))
    lines += ["", "Goal: " + summary + ".", "",
              "Raw figures (seconds, in run order):", "", "```"]
    for key in sorted(figures):
        lines.append("%-28s %s" % ("/".join(key), " ".join("%.2f" % v for v in figures[key])))
    lines += ["```", ""]
    with open(RESULTS, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    with open(PERFORMANCE, encoding="utf-8") as handle:
        text = handle.read()
    block = "<!-- venv:start -->\n- %s ([benchmarks/venv_speed.md](../benchmarks/venv_speed.md))\n<!-- venv:end -->" % summary
    text = re.sub(r"<!-- venv:start -->.*?<!-- venv:end -->", lambda _m: block, text, flags=re.DOTALL)
    with open(PERFORMANCE, "w", encoding="utf-8") as handle:
        handle.write(text)
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    docker("rm", "-f", CONTAINER, check=False)
    docker("run", "-d", "--name", CONTAINER, IMAGE, "sleep", "infinity")
    try:
        # The image has no ensurepip (pip's virtualenvs need it): Debian's python3-venv.
        in_container("sh", "-c", "apt-get update -q >/dev/null && apt-get install -y -q python3-venv >/dev/null")
        target = container_target()
        with tempfile.TemporaryDirectory() as work:
            counts = prepare(target, work)
            LOAD["start"] = "%.1f" % os.getloadavg()[0]
            figures = measure(args.reps)
            LOAD["end"] = "%.1f" % os.getloadavg()[0]
        print(report(figures, target, counts, args.reps))
    finally:
        docker("rm", "-f", CONTAINER, check=False)


if __name__ == "__main__":
    main()
