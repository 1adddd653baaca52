#!/usr/bin/env python3
"""The validation play's cost as the inventory grows, next to a trivial play over the same hosts.

No host is contacted: the validation play (playbooks/validate.yml) runs on the controller only,
and the trivial play is two set_fact tasks. The hosts get addresses from TEST-NET-1 (192.0.2.0/24)
and no connection plugin is ever loaded for them. 50 services are listed (each with its own
directory source, fetched, inspected and repacked once into the cache, which a first unmeasured
run fills).

    python benchmarks/plan_scale.py            # writes benchmarks/plan_scale.md
    python benchmarks/plan_scale.py --label before --reps 3

Goal: the validation play at 100 hosts takes at most twice the trivial play at 100 hosts.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
HERE = os.path.join(ROOT, "benchmarks")
RESULTS = os.path.join(HERE, "plan_scale.md")
BIN = os.path.dirname(sys.executable)
SERVICES = 50
TRIVIAL = """---
- name: Two tasks per host, nothing contacted
  hosts: all
  gather_facts: false
  tasks:
    - name: Set a fact
      ansible.builtin.set_fact:
        bench_one: 1
    - name: Set another fact
      ansible.builtin.set_fact:
        bench_two: "{{ bench_one + 1 }}"
"""


def write_inventory(work, hosts):
    inv = os.path.join(work, "inv-%d" % hosts)
    os.makedirs(os.path.join(inv, "group_vars", "all"), exist_ok=True)
    with open(os.path.join(inv, "hosts.yml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump({"all": {"hosts": {"h%03d" % i: {"ansible_host": "192.0.2.%d" % (i % 250 + 1)}
                                          for i in range(1, hosts + 1)}}}, handle)
    services = [{"name": "svc%02d" % i, "source": os.path.join(work, "code", "svc%02d" % i), "module": "hello"}
                for i in range(1, SERVICES + 1)]
    with open(os.path.join(inv, "group_vars", "all", "vars.yml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump({"microsvc_services": services, "microsvc_source_roots": [work],
                        "microsvc_cache_dir": os.path.join(work, "cache")}, handle)
    return inv


def write_sources(work):
    with open(os.path.join(HERE, "app", "hello.py"), encoding="utf-8") as handle:
        code = handle.read()
    for i in range(1, SERVICES + 1):
        path = os.path.join(work, "code", "svc%02d" % i)
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "hello.py"), "w", encoding="utf-8") as handle:
            handle.write(code)


def run(inv, playbook):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    started = time.perf_counter()
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", inv, playbook], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-2000:])
        raise SystemExit("plan_scale: %s failed" % playbook)
    return elapsed


def measure(reps, sizes):
    rows = []
    with tempfile.TemporaryDirectory(prefix="microsvc-plan-bench-") as work:
        write_sources(work)
        trivial = os.path.join(work, "trivial.yml")
        with open(trivial, "w", encoding="utf-8") as handle:
            handle.write(TRIVIAL)
        validate = os.path.join(ROOT, "playbooks", "validate.yml")
        for hosts in sizes:
            inv = write_inventory(work, hosts)
            run(inv, validate)  # fills the source cache; not measured
            for name, playbook in (("validation play", validate), ("trivial two-task play", trivial)):
                times = [run(inv, playbook) for _ in range(reps)]
                rows.append((hosts, name, statistics.median(times)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each run (median kept)")
    parser.add_argument("--label", default="this tree", help="name of the measured tree in the results")
    parser.add_argument("--sizes", default="1,100", help="comma-separated numbers of hosts")
    args = parser.parse_args()
    rows = measure(args.reps, [int(s) for s in args.sizes.split(",")])
    by = {(h, n): t for h, n, t in rows}
    lines = ["", "### %s (%s, median of %d)" % (args.label, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                                 args.reps), "",
             "| hosts | play | seconds | vs trivial play |", "|---|---|---|---|"]
    for hosts, name, seconds in rows:
        ratio = seconds / by[(hosts, "trivial two-task play")]
        lines.append("| %d | %s | %.1f | %.2fx |" % (hosts, name, seconds, ratio))
    text = "\n".join(lines) + "\n"
    if not os.path.exists(RESULTS):
        with open(RESULTS, "w", encoding="utf-8") as handle:
            handle.write("# Validation play against inventory size\n\nWritten by `benchmarks/plan_scale.py` "
                         "(part of `make bench`). %d services; hosts never contacted. Goal: the validation "
                         "play at 100 hosts at most 2x the trivial play.\n" % SERVICES)
    with open(RESULTS, "a", encoding="utf-8") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
