#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Stage, test and install the gateway's nginx configuration in one call."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nginx_config
short_description: Stage, test with nginx -t, then install a set of nginx configuration files
description:
  - Makes the gateway's I(directories) and I(system_files) outside the configuration directory first (as
    C(microsvc.deploy.managed_files) does), then compares the wanted files with the live configuration.
    When nothing differs it changes nothing more.
  - Otherwise it copies the live configuration directory to a staging directory, writes the wanted
    files there, removes files of the owned directories that are no longer wanted, and runs
    C(nginx -t) on the complete staged tree. Only when that test passes are the files installed into
    the live directory (each atomically) and stale files removed. When the test fails, the live
    configuration is left exactly as it was and the module fails with nginx's own error.
  - With I(reload), a configuration it installed is made live in the same call where nginx runs;
    C(nginx -t) once more on the live tree (files installed apart, such as certificates, are part of
    it), then a reload of the service (connections are kept). C(reloaded) says whether it did; where it
    did not (nginx not running, a restart needed, check mode) the caller reloads or starts nginx.
  - Relative C(include) and C(ssl_certificate) paths resolve inside the staged copy, so the test sees
    exactly the tree that will be live. Per-file C(validate) cannot do this.
  - The action plugin of the same name renders the role's templates on the controller and calls this
    module; the module can also be given plain contents.
  - Supports check mode (the staged test still runs when nginx is installed) and diff mode.
version_added: 0.1.0
options:
  conf_dir:
    description: The nginx configuration directory.
    type: path
    default: /etc/nginx
  main_file:
    description: The main configuration file, relative to I(conf_dir); it is tested with C(nginx -t -c).
    type: str
    default: nginx.conf
  owned_dirs:
    description:
      - Directories (relative to I(conf_dir)) owned by this module; files in them that are not in
        I(files) or I(secret_files) are removed.
    type: list
    elements: str
    default: []
  files:
    description: Wanted files, relative path to content. Installed mode 0644, owner root.
    type: dict
    default: {}
  secret_files:
    description: Wanted files holding secrets (TLS keys). Installed mode 0600; contents never logged or diffed.
    type: dict
    default: {}
  absent_files:
    description: Files (relative to I(conf_dir)) to remove, such as the distribution's default site.
    type: list
    elements: str
    default: []
  nginx_binary:
    description: The nginx executable used for the test.
    type: str
    default: nginx
  staging_parent:
    description: Directory in which the staging copy is made (and removed again).
    type: path
    default: /var/lib/microsvc
  backup_suffix:
    description:
      - The first time the main file is replaced, the distribution's original is kept next to it
        with this suffix. Empty disables the backup.
    type: str
    default: .distro
  directories:
    description:
      - The gateway's directories outside I(conf_dir) (its per-service log directory, a drop-in's directory),
        each with C(path), C(owner), C(group), C(mode); made first, as the test opens the logs.
    type: list
    elements: dict
    default: []
  system_files:
    description:
      - The gateway's files outside I(conf_dir) (log rotation, nginx's systemd drop-in), each with C(dest),
        C(content), C(owner), C(group), C(mode), as the module C(microsvc.deploy.managed_files) writes them,
        in the same call; the ones that changed are in C(system_changed).
    type: list
    elements: dict
    default: []
  reload:
    description:
      - C(service), the systemd unit of nginx, reloaded after an installed change when it is active;
        C(unless_changed), paths of I(system_files) whose change needs a restart instead (nginx's
        drop-in), so that the module does not reload when one of them changed. Empty, nginx is not touched.
    type: dict
    default: {}
notes:
  - Why not a builtin - the template module's C(validate) tests one file, not the whole tree with its relative
    includes; this stages, tests the complete tree and swaps it in atomically.
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
- name: Install the gateway configuration
  microsvc.deploy.nginx_config:
    conf_dir: /etc/nginx
    owned_dirs: [microsvc]
    files:
      nginx.conf: "{{ lookup('template', 'nginx.conf.j2') }}"
      microsvc/gateway.conf: "{{ lookup('template', 'gateway.conf.j2') }}"
"""

RETURN = r"""
changed_files:
  description: Files written (relative to conf_dir).
  returned: always
  type: list
  elements: str
removed_files:
  description: Files removed (relative to conf_dir).
  returned: always
  type: list
  elements: str
tested:
  description: Whether nginx -t ran on the staged tree.
  returned: always
  type: bool
system_changed:
  description: Paths of I(directories) and I(system_files) created or changed.
  returned: always
  type: list
  elements: str
reloaded:
  description: Whether this call reloaded nginx (see I(reload)).
  returned: always
  type: bool
"""

import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.microsvc.deploy.plugins.module_utils import fsutil
from ansible_collections.microsvc.deploy.plugins.module_utils.atomic import write_atomic
from ansible_collections.microsvc.deploy.plugins.module_utils.managed import ensure

MARKER = "microsvc"


def _rel_ok(path):
    if not path or os.path.isabs(path):
        return False
    norm = os.path.normpath(path)
    return norm != ".." and not norm.startswith("../") and norm != "."


def _walk_files(root, rel_dir):
    base = os.path.join(root, rel_dir)
    found = []
    for dirpath, _dirs, names in os.walk(base):
        for name in names:
            found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def wanted_files(module):
    """relative path -> (content bytes, mode, secret), every path checked to stay inside the
    configuration directory, in the main file or an owned directory."""
    p = module.params
    wanted = {rel: (str(content).encode("utf-8"), 0o644, False) for rel, content in p["files"].items()}
    wanted.update({rel: (str(content).encode("utf-8"), 0o600, True) for rel, content in p["secret_files"].items()})
    for rel in list(wanted) + list(p["owned_dirs"]) + list(p["absent_files"]) + [p["main_file"]]:
        if not _rel_ok(rel):
            module.fail_json(msg="%r must be a relative path inside %s" % (rel, p["conf_dir"]))
    owned = [os.path.normpath(d) for d in p["owned_dirs"]]
    for rel in wanted:
        inside = any(os.path.normpath(rel).startswith(d + "/") for d in owned)
        if os.path.normpath(rel) != os.path.normpath(p["main_file"]) and not inside:
            module.fail_json(msg="%r is neither the main file nor inside an owned directory %s" % (rel, owned))
    return wanted, owned


def differences(module, conf_dir, wanted):
    """(files whose content or mode differs, their diffs; secrets are never shown)."""
    changed, diffs = [], []
    for rel in sorted(wanted):
        data, mode, secret = wanted[rel]
        live_path = os.path.join(conf_dir, rel)
        live = fsutil.read_bytes(live_path)
        if live == data and fsutil.mode_of(live_path) == mode:
            continue
        changed.append(rel)
        if not module._diff:
            continue
        if secret:
            diffs.append(dict(before_header=live_path, after_header=live_path,
                              before="(secret content hidden)\n" if live is not None else "",
                              after="(secret content hidden, changed)\n"))
        else:
            diffs.append(dict(before_header=live_path if live is not None else "%s (absent)" % live_path,
                              after_header=live_path, before=(live or b"").decode("utf-8", "replace"),
                              after=data.decode("utf-8", "replace")))
    return changed, diffs


def stale_files(module, conf_dir, owned, wanted):
    """Files of the owned directories that no longer are wanted, and the absent_files still there
    (with their diffs)."""
    stale = [rel for rel_dir in owned for rel in _walk_files(conf_dir, rel_dir) if rel not in wanted]
    stale += [rel for rel in module.params["absent_files"] if os.path.lexists(os.path.join(conf_dir, rel))]
    stale = sorted(set(stale))
    diffs = []
    if module._diff:
        for rel in stale:
            live_path = os.path.join(conf_dir, rel)
            before = fsutil.read_bytes(live_path) if not os.path.islink(live_path) else b"(symlink)\n"
            diffs.append(dict(before_header=live_path, after_header="%s (removed)" % live_path,
                              before=(before or b"").decode("utf-8", "replace"), after=""))
    return stale, diffs


def test_staged(module, conf_dir, wanted, stale, result):
    """Copy the live tree, apply the change to the copy and run nginx -t on it; fail with nginx's
    error, leaving the live tree alone, when it does not pass."""
    p = module.params
    nginx = module.get_bin_path(p["nginx_binary"]) if not os.path.isabs(p["nginx_binary"]) else p["nginx_binary"]
    if not (nginx and os.path.exists(nginx) and os.path.isdir(conf_dir)):
        module.warn("nginx is not installed yet: the new configuration could not be tested")
        return
    os.makedirs(p["staging_parent"], mode=0o700, exist_ok=True)
    stage_root = tempfile.mkdtemp(prefix="nginx-staging-", dir=p["staging_parent"])
    staged = os.path.join(stage_root, os.path.basename(conf_dir.rstrip("/")) or "conf")
    try:
        shutil.copytree(conf_dir, staged, symlinks=True)
        for rel in stale:
            if os.path.lexists(os.path.join(staged, rel)):
                os.unlink(os.path.join(staged, rel))
        for rel, (data, mode, _secret) in wanted.items():
            write_atomic(os.path.join(staged, rel), data, mode, makedirs=True)
        rc, out, err = module.run_command([nginx, "-t", "-q", "-c", os.path.join(staged, p["main_file"])])
        result["tested"] = True
        if rc != 0:
            text = (err or out).replace(staged, conf_dir)
            module.fail_json(msg="nginx -t rejected the new configuration; the live configuration was not changed."
                             "\n%s" % text.strip(), rc=rc, stderr=text,
                             **{k: v for k, v in result.items() if k != "changed"})
    finally:
        shutil.rmtree(stage_root, ignore_errors=True)


def install(module, conf_dir, wanted, changed, stale, result):
    """Every changed file atomically (the distribution's main file kept once), then the stale ones go."""
    p = module.params
    main_live = os.path.join(conf_dir, p["main_file"])
    if p["backup_suffix"] and p["main_file"] in changed:
        current = fsutil.read_bytes(main_live)
        backup = main_live + p["backup_suffix"]
        if current is not None and MARKER.encode() not in current and not os.path.exists(backup):
            shutil.copy2(main_live, backup)
            result["backup_file"] = backup
    for rel in changed:
        data, mode, _secret = wanted[rel]
        write_atomic(os.path.join(conf_dir, rel), data, mode, makedirs=True)
    for rel in stale:
        if os.path.lexists(os.path.join(conf_dir, rel)):
            os.unlink(os.path.join(conf_dir, rel))


def reload_live(module, conf_dir, result):
    """After an install: nginx -t on the live tree, then a reload of the service, where I(reload)
    asks for it, nginx is active and no file that needs a restart changed."""
    p = module.params
    service = (p["reload"] or {}).get("service") or ""
    restart = set((p["reload"] or {}).get("unless_changed") or []) & set(result["system_changed"])
    systemctl = module.get_bin_path("systemctl")
    if not service or restart or not systemctl:
        return
    if module.run_command([systemctl, "is-active", "--quiet", service])[0] != 0:
        return
    nginx = module.get_bin_path(p["nginx_binary"]) if not os.path.isabs(p["nginx_binary"]) else p["nginx_binary"]
    rc, out, err = module.run_command([nginx, "-t", "-q", "-c", os.path.join(conf_dir, p["main_file"])])
    if rc != 0:
        module.fail_json(msg="nginx -t rejected the live configuration (installed after its staged test passed); "
                         "nginx was not reloaded and serves what it served before.\n%s" % (err or out).strip(),
                         **{k: v for k, v in result.items() if k != "changed"})
    rc, out, err = module.run_command([systemctl, "reload", service])
    if rc != 0:
        module.fail_json(msg="systemctl reload %s failed:\n%s" % (service, (err or out).strip()),
                         **{k: v for k, v in result.items() if k != "changed"})
    result["reloaded"] = True


def main():
    module = AnsibleModule(
        argument_spec=dict(
            conf_dir=dict(type="path", default="/etc/nginx"),
            main_file=dict(type="str", default="nginx.conf"),
            owned_dirs=dict(type="list", elements="str", default=[]),
            files=dict(type="dict", default={}),
            secret_files=dict(type="dict", default={}, no_log=True),
            absent_files=dict(type="list", elements="str", default=[]),
            nginx_binary=dict(type="str", default="nginx"),
            staging_parent=dict(type="path", default="/var/lib/microsvc"),
            backup_suffix=dict(type="str", default=".distro"),
            directories=dict(type="list", elements="dict", default=[]),
            system_files=dict(type="list", elements="dict", default=[]),
            reload=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    conf_dir = module.params["conf_dir"]
    system, system_diffs = ensure(module, module.params["directories"], module.params["system_files"])
    wanted, owned = wanted_files(module)
    changed, diffs = differences(module, conf_dir, wanted)
    stale, stale_diffs = stale_files(module, conf_dir, owned, wanted)
    result = dict(changed=bool(changed or stale or system), changed_files=changed, removed_files=stale, tested=False,
                  system_changed=system, reloaded=False)
    if module._diff and (system_diffs or changed or stale):
        result["diff"] = system_diffs + diffs + stale_diffs
    if not (changed or stale):
        module.exit_json(**result)
    test_staged(module, conf_dir, wanted, stale, result)
    if not module.check_mode:
        install(module, conf_dir, wanted, changed, stale, result)
        reload_live(module, conf_dir, result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
