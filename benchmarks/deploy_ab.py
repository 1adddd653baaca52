#!/usr/bin/env python3
"""The deploy part of `benchmarks/run.py`, this tree against an earlier commit, back to back on the
same machine: the evidence for "no slower" when the deploy path changes.

Each tree runs `run.py --only deploy` in a git worktree of its own (the earlier commit and this
tree's HEAD, checked out in a temporary directory and removed after; commit first), one after the
other, with the same image; then the figures of both go side by side into benchmarks/deploy_ab.md.
The tree's own benchmarks/results.md is left alone.

    python benchmarks/deploy_ab.py 94dca96           # about 20 minutes on 2 CPUs
    python benchmarks/deploy_ab.py 94dca96 --report-only OLD_TREE NEW_TREE
                                                     # tabulate two trees' benchmarks/raw/last.json

Run it on a quiet machine: a deploy run is mostly waiting for remote calls, and another load on the
same CPUs shows in every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
RESULTS = os.path.join(ROOT, "benchmarks", "deploy_ab.md")
BIN = os.path.dirname(sys.executable)

ROWS = [
    ("no-change run, 1 listed", lambda d: d["nochange"]["1"]),
    ("no-change run, 10 listed", lambda d: d["nochange"]["10"]),
    ("no-change run, 20 listed", lambda d: d["nochange"]["20"]),
    ("no-change run, 4 listed (after the removal)", lambda d: d["nochange"]["4"]),
    ("one-service deploy, 1 listed", lambda d: d["one_service"]["1"]),
    ("one-service deploy, 20 listed", lambda d: d["one_service"]["20"]),
    ("adding 9 services (10 listed)", lambda d: d["add_9"]),
    ("adding 10 more (20 listed)", lambda d: d["first_converge"]["20"]),
    ("redeploying all 20 under load", lambda d: d["redeploy_all"]["seconds"]),
    ("removing 16 (4 listed)", lambda d: d["remove_16"]),
    ("fresh host, 1 service (packages included)", lambda d: d["fresh_1"]),
]


def deploy_part(tree):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(tree, "ansible.cfg"), PATH=BIN + os.pathsep + os.environ["PATH"])
    subprocess.run([sys.executable, os.path.join(tree, "benchmarks", "run.py"), "--only", "deploy"],
                   cwd=tree, env=env, check=True)


def figures(tree):
    with open(os.path.join(tree, "benchmarks", "raw", "last.json"), encoding="utf-8") as handle:
        return json.load(handle)["deploy"]


def report(rev, old, new):
    lines = ["# Deploy times: this tree against %s" % rev, "",
             "`python benchmarks/deploy_ab.py %s`: the deploy part of `benchmarks/run.py` (medians of its repetitions, "
             "seconds, the whole `ansible-playbook` run), for %s and then for this tree, back to back on the same "
             "machine." % (rev, rev), "",
             "- %s: %s" % (rev, old["measured_at"]), "- this tree: %s" % new["measured_at"], "",
             "| run | %s | this tree | this tree / %s |" % (rev, rev), "|---|---:|---:|---:|"]
    for label, get in ROWS:
        try:
            before, after = get(old), get(new)
        except (KeyError, TypeError):
            continue
        lines.append("| %s | %.1f | %.1f | %.2fx |" % (label, before, after, after / before))
    lines.append("")
    with open(RESULTS, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the earlier commit")
    parser.add_argument("--report-only", nargs=2, metavar=("OLD_TREE", "NEW_TREE"),
                        help="tabulate two trees that already ran the deploy part")
    args = parser.parse_args()
    if args.report_only:
        report(args.rev, figures(args.report_only[0]), figures(args.report_only[1]))
        return
    base = tempfile.mkdtemp(prefix="microsvc-deploy-ab-")
    trees = {"old": os.path.join(base, "old"), "new": os.path.join(base, "new")}
    try:
        for name, rev in (("old", args.rev), ("new", "HEAD")):
            subprocess.run(["git", "worktree", "add", "--detach", trees[name], rev], cwd=ROOT, check=True)
            os.symlink(os.path.join(ROOT, ".venv"), os.path.join(trees[name], ".venv"))
        started = time.monotonic()
        deploy_part(trees["old"])
        deploy_part(trees["new"])
        print("both trees in %.0f s" % (time.monotonic() - started))
        report(args.rev, figures(trees["old"]), figures(trees["new"]))
    finally:
        for tree in trees.values():
            subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=ROOT, check=False)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
