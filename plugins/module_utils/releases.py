# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Releases of a service on a host: unpacked all or nothing, switched atomically, pruned."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from ansible_collections.microsvc.deploy.plugins.module_utils import fsutil
from ansible_collections.microsvc.deploy.plugins.module_utils.atomic import write_atomic
from ansible_collections.microsvc.deploy.plugins.module_utils.paths import HISTORY
from ansible_collections.microsvc.deploy.plugins.module_utils.paths import RELEASE_MARKER as MARKER
from ansible_collections.microsvc.deploy.plugins.module_utils.release_archive import extract_tar


class ReleaseError(Exception):
    pass


def valid_id(rid):
    return bool(rid) and "/" not in rid and not rid.startswith(".")


def complete(releases, rid):
    return valid_id(rid) and os.path.isfile(os.path.join(releases, rid, MARKER))


def unpack(archive, releases, release, gid, venv, marker):
    """Unpack into a hidden directory with the collection's inspecting extractor, link .venv to
    ../../venvs/<venv>, write the marker, then rename into releases/<release>. Returns False when
    the release was already complete."""
    if not valid_id(release) or not valid_id(venv):
        raise ReleaseError("invalid release id or virtualenv key")
    final = os.path.join(releases, release)
    if complete(releases, release):
        return False
    partial = tempfile.mkdtemp(prefix=".%s.partial-" % release, dir=releases)
    try:
        extract_tar(archive, partial)
        os.symlink(os.path.join("..", "..", "venvs", venv), os.path.join(partial, ".venv"))
        write_atomic(os.path.join(partial, MARKER),
                     json.dumps(dict(marker, release=release, venv=venv), indent=2, sort_keys=True) + "\n")
        os.chown(partial, 0, gid)
        os.chmod(partial, 0o750)
        if os.path.lexists(final):
            shutil.rmtree(final)
        os.rename(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return True


def history(releases):
    data = fsutil.read_json(os.path.join(releases, HISTORY))
    return [str(x) for x in data] if isinstance(data, list) else []


def current(root):
    link = os.path.join(root, "current")
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else None


def _swap(link, target):
    tmp = "%s.microsvc-new" % link
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def plan_switch(root, release=None, rollback=False, keep=0):
    """What switching ``root``'s current release would do (no change): a dict with previous,
    current, history, pruned_releases, pruned_venvs, changed. With ``rollback`` and no release,
    the target is the release that served before the current one."""
    releases = os.path.join(root, "releases")
    old_history = history(releases)
    previous = current(root)
    target = release
    if rollback and not target:
        earlier = [r for r in old_history if r != previous]
        if previous in old_history:
            earlier = [r for r in old_history[: old_history.index(previous)] if r != previous]
        earlier = [r for r in earlier if complete(releases, r)]
        if not earlier:
            raise ReleaseError("no earlier release to roll back to in %s (history: %s)" % (releases, old_history))
        target = earlier[-1]
    if not complete(releases, target):
        available = sorted(r for r in os.listdir(releases) if complete(releases, r)) if os.path.isdir(releases) else []
        raise ReleaseError("release %r is not a complete release in %s (available: %s)"
                           % (target, releases, ", ".join(available) or "none"))
    new_history = [r for r in old_history if r != target] + [target]
    if rollback:
        # A rollback returns to an earlier point: the abandoned release goes to the front of the
        # prune order instead of being remembered as the newest.
        new_history = ([previous] if previous and previous != target else []) + [
            r for r in old_history if r not in (target, previous)] + [target]
    pruned_releases, pruned_venvs = [], []
    if keep > 0 and os.path.isdir(releases):
        keep_set = set(new_history[-keep:]) | {target}
        pruned_releases = [e for e in sorted(os.listdir(releases))
                           if not e.startswith(".") and os.path.isdir(os.path.join(releases, e)) and e not in keep_set]
        used = set()
        for entry in keep_set:
            venv_link = os.path.join(releases, entry, ".venv")
            if os.path.islink(venv_link):
                used.add(os.path.basename(os.readlink(venv_link)))
        venvs = os.path.join(root, "venvs")
        if os.path.isdir(venvs):
            pruned_venvs = [e for e in sorted(os.listdir(venvs))
                            if e not in used and os.path.isdir(os.path.join(venvs, e))]
        new_history = [r for r in new_history if r not in pruned_releases]
    return dict(previous=previous, current=target, history=new_history, pruned_releases=pruned_releases,
                pruned_venvs=pruned_venvs,
                changed=previous != target or new_history != old_history or bool(pruned_releases or pruned_venvs))


def apply_switch(root, plan):
    """Carry out plan_switch's plan: the link swap is atomic; history and pruning follow."""
    if plan["previous"] != plan["current"]:
        _swap(os.path.join(root, "current"), os.path.join("releases", plan["current"]))
    write_atomic(os.path.join(root, "releases", HISTORY), json.dumps(plan["history"]))
    for entry in plan["pruned_releases"]:
        shutil.rmtree(os.path.join(root, "releases", entry), ignore_errors=True)
    for entry in plan["pruned_venvs"]:
        shutil.rmtree(os.path.join(root, "venvs", entry), ignore_errors=True)
