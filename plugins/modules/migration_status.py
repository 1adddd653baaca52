#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""What Django migrations a deploy would apply, or a rollback would leave applied (read-only)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: migration_status
short_description: Show the Django migrations a deploy would apply, or a rollback would leave applied
description:
  - I(mode=plan) (check mode of C(site.yml)) runs Django's C(migrate --plan) for each service's new release,
    as the service runs (C(microsvc-run), its user and environment file), and returns the plan. A release
    the host does not have yet is unpacked into a temporary directory (from the bundle the action plugin
    copies) and removed afterwards; its virtualenv must exist already (a release whose requirements changed
    is reported, not planned, as check mode builds no virtualenv). Nothing is applied.
  - I(mode=rollback) (C(playbooks/rollback.yml)) finds, for each service, the release a rollback returns to
    and the migrations applied in the database that this release does not have (less those the current
    release does not have either, such as rows of apps removed long ago). They stay applied after the rollback,
    the database is never migrated back. The finding goes to the service's deploy log. With C(policy=refuse)
    and I(force) false, the call fails naming them, before anything changes.
version_added: 0.2.0
options:
  mode:
    description: C(plan) or C(rollback).
    type: str
    choices: [plan, rollback]
    required: true
  services:
    description:
      - Each with C(name), C(root), C(group), C(manage) (manage.py, relative to the release); for C(plan)
        C(release), C(venv), C(venv_present), and C(archive_member) when the release must come from the
        bundle; for C(rollback) C(release) (the target, empty for the one before the current) and C(policy)
        (C(warn) or C(refuse)).
    type: list
    elements: dict
    required: true
  force:
    description: Roll back even when a C(refuse) policy applies (C(-e rollback_across_migrations=true)).
    type: bool
    default: false
  bundle:
    description: Path on the host of the tar holding the release tarballs (set by the action plugin; a large one).
    type: path
  bundle_data:
    description:
      - The same tar, base64-encoded, sent inside the arguments (a small one); written to the call's private
        temporary directory. Never logged.
    type: str
  root:
    description: Directory holding the services.
    type: path
    required: true
  helper:
    description: The C(microsvc-run) helper.
    type: path
    default: /usr/local/sbin/microsvc-run
  migrate_helper:
    description: The C(microsvc-migrate) helper.
    type: path
    default: /usr/local/lib/microsvc/microsvc-migrate
notes:
  - Why not a builtin - Django's plan is read as each service runs, from a release that may not be unpacked yet; no
    builtin does that.
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
- name: Name the migrations a rollback of billing would leave applied, and refuse by its policy
  microsvc.deploy.migration_status:
    mode: rollback
    root: /opt/www
    services:
      - {name: billing, root: /opt/www/billing, group: billing, manage: manage.py, release: "", policy: refuse}
    force: "{{ rollback_across_migrations | default(false) | bool }}"
"""

RETURN = r"""
services:
  description:
    - Per service name; C(plan) mode C(plan) (Django's text), C(pending) (app.migration names), C(skipped) (why
      no plan was made); C(rollback) mode C(current), C(target), C(stay_applied), C(refused). C(error) when the
      helper failed.
  returned: always
  type: dict
"""

import os
import shutil
import tarfile
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.microsvc.deploy.plugins.module_utils import fsutil, migrations, releases
from ansible_collections.microsvc.deploy.plugins.module_utils.bundle import ARGUMENT_SPEC as BUNDLE_SPEC
from ansible_collections.microsvc.deploy.plugins.module_utils.bundle import bundle_path
from ansible_collections.microsvc.deploy.plugins.module_utils.release_archive import extract_tar


def plan_one(p, svc, bundle):
    out = dict(plan="", pending=[], skipped=None, error=None)
    release_dir = None
    releases_dir = os.path.join(svc["root"], "releases")
    if not svc.get("venv_present"):
        out["skipped"] = ("its virtualenv does not exist yet (a first deploy, or new requirements) and check "
                          "mode builds none; the deploy log (%s/%s) will show the plan"
                          % (svc["root"], migrations.LOG_NAME))
        return out
    temp = None
    try:
        if not releases.complete(releases_dir, svc["release"]):
            if not svc.get("archive_member") or bundle is None:
                out["skipped"] = "the release is not on the host"
                return out
            temp = tempfile.mkdtemp(prefix="microsvc-plan-%s-" % svc["name"])
            release_dir = os.path.join(temp, "release")
            os.mkdir(release_dir, 0o750)
            extract_tar(bundle.extractfile(svc["archive_member"]), release_dir)
            os.symlink(os.path.join(svc["root"], "venvs", svc["venv"]), os.path.join(release_dir, ".venv"))
            gid = fsutil.gid_of(svc["group"])
            for path in (temp, release_dir):
                os.chown(path, 0, gid)
                os.chmod(path, 0o750)
        code, result, text = migrations.run(
            p["root"], svc["name"], migrations.helper_argv("plan", svc["name"], svc["manage"], p["migrate_helper"]),
            release=None if release_dir else svc["release"], release_dir=release_dir, timeout=600,
            runner=p["helper"])
        if code != 0:
            out["error"] = migrations.error_of(code, result, text)
        else:
            out.update(plan=(result or {}).get("plan", "").strip(), pending=(result or {}).get("pending") or [])
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    return out


def behind_in(p, svc, release):
    code, result, text = migrations.run(
        p["root"], svc["name"], migrations.helper_argv("behind", svc["name"], svc["manage"], p["migrate_helper"]),
        release=release, timeout=600, runner=p["helper"])
    if code != 0:
        raise RuntimeError("release %s: %s" % (release, migrations.error_of(code, result, text)))
    return (result or {}).get("behind") or []


def rollback_one(module, svc):
    p = module.params
    out = dict(current=None, target=None, stay_applied=[], refused=False, error=None)
    try:
        plan = releases.plan_switch(svc["root"], svc.get("release") or None, rollback=True)
    except releases.ReleaseError as exc:
        out["error"] = str(exc)  # the rollback itself reports it
        return out
    out.update(current=plan["previous"], target=plan["current"])
    if not plan["previous"] or plan["previous"] == plan["current"]:
        return out
    try:
        out["stay_applied"] = migrations.stay_applied(behind_in(p, svc, plan["current"]),
                                                      behind_in(p, svc, plan["previous"]))
    except RuntimeError as exc:
        out["error"] = "cannot tell which migrations the rollback leaves applied: %s" % exc
        out["refused"] = svc.get("policy") == "refuse" and not p["force"]
        return out
    if out["stay_applied"]:
        out["refused"] = svc.get("policy") == "refuse" and not p["force"]
        if not module.check_mode:
            migrations.log(svc["root"], fsutil.gid_of(svc["group"]),
                           "rollback from release %s to %s: %s" % (
                               plan["previous"], plan["current"],
                               "REFUSED by the service's policy" if out["refused"] else
                               ("forced (rollback_across_migrations)" if p["force"] else "allowed")),
                           "migrations that stay applied in the database: %s" % ", ".join(out["stay_applied"]))
    return out


def main():
    module = AnsibleModule(
        argument_spec=dict(
            mode=dict(type="str", choices=["plan", "rollback"], required=True),
            services=dict(type="list", elements="dict", required=True),
            force=dict(type="bool", default=False),
            **BUNDLE_SPEC,
            root=dict(type="path", required=True),
            helper=dict(type="path", default=migrations.RUN),
            migrate_helper=dict(type="path", default=migrations.HELPER),
        ),
        supports_check_mode=True,
    )
    p = module.params
    results = {}
    if p["mode"] == "plan":
        path = bundle_path(module)
        bundle = tarfile.open(path) if path else None  # noqa: SIM115 - closed below
        try:
            for svc in p["services"]:
                results[svc["name"]] = plan_one(p, svc, bundle)
        finally:
            if bundle is not None:
                bundle.close()
        module.exit_json(changed=False, services=results)
    for svc in p["services"]:
        results[svc["name"]] = rollback_one(module, svc)
    refused = sorted(name for name, r in results.items() if r["refused"])
    if refused:
        module.fail_json(
            msg="; ".join(
                "service '%s': rolling back from release %s to %s would leave migrations applied that release %s "
                "does not have: %s. The service's policy (django.rollback_policy: refuse) refuses such a rollback; "
                "nothing was changed. Migrate the database back yourself first, or roll back anyway with "
                "-e rollback_across_migrations=true" % (
                    name, results[name]["current"], results[name]["target"], results[name]["target"],
                    ", ".join(results[name]["stay_applied"]) or "(unknown: %s)" % results[name]["error"])
                for name in refused),
            services=results)
    module.exit_json(changed=False, services=results)


if __name__ == "__main__":
    main()
