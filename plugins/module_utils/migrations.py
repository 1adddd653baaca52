# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Django migrations on a host: running the microsvc-migrate helper as a service runs, reading
its result, and the service's deploy log.

The helper (roles/uwsgi_emperor/files/microsvc-migrate) runs through microsvc-run, so as the
service's user, in a release, with its virtualenv and environment file. Its last output line is
``MICROSVC-RESULT <json>``.

The deploy log, ``<root>/<service>/deploy.log`` (root:<service> 0640, in the root-owned service
directory, so the service cannot point it elsewhere), records each migration plan, the
pre-migrate command's outcome, Django's output, and the rollbacks that leave migrations applied.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

HELPER = "/usr/local/lib/microsvc/microsvc-migrate"
RUN = "/usr/local/sbin/microsvc-run"
RESULT = "MICROSVC-RESULT "
LOG_NAME = "deploy.log"
LOG_MAX = 1 << 20  # bytes; the log is rotated once to deploy.log.1 beyond this


def helper_argv(action, service, manage, helper=HELPER, pre_migrate=None, pre_migrate_timeout=None,
                lock_timeout=None):
    """The command (for microsvc-run) that runs the helper's ``action`` (migrate, plan, behind)."""
    argv = ["python", helper, "--service", service, "--manage", manage]
    if pre_migrate:
        argv += ["--pre-migrate", json.dumps(list(pre_migrate))]
        if pre_migrate_timeout:
            argv += ["--pre-migrate-timeout", str(int(pre_migrate_timeout))]
    if lock_timeout:
        argv += ["--lock-timeout", str(int(lock_timeout))]
    return argv + [action]


def run(root, service, argv, release=None, release_dir=None, timeout=3600, runner=RUN):
    """Run ``argv`` as the service runs; returns (returncode, result dict or None, text output)."""
    cmd = [runner, "--root", root]
    if release_dir:
        cmd += ["--release-dir", release_dir]
    elif release:
        cmd += ["--release", release]
    cmd += [service] + list(argv)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode("utf-8", "replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return 124, None, out + "\n(did not finish within %ds)" % timeout
    result, text = parse(proc.stdout)
    text = (text + ("\n" + proc.stderr if proc.stderr.strip() else "")).strip()
    return proc.returncode, result, text


def parse(stdout):
    """(result, the output without the result line)."""
    result, lines = None, []
    for line in (stdout or "").splitlines():
        if line.startswith(RESULT):
            try:
                result = json.loads(line[len(RESULT):])
            except ValueError:
                result = None
        else:
            lines.append(line)
    return result, "\n".join(lines)


def error_of(returncode, result, text):
    """One line saying why the helper failed (its own reason when it gave one)."""
    if result and result.get("error"):
        return result["error"]
    return "exit status %s: %s" % (returncode, text[-1500:])


def log(service_root, group_id, title, text=""):
    """Append an entry to the service's deploy log: opened without following links, created 0640
    root:<service group>, rotated once beyond LOG_MAX. Never fails the caller."""
    path = os.path.join(service_root, LOG_NAME)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    entry = "=== %s %s\n%s" % (stamp, title, (text.rstrip() + "\n") if text.strip() else "")
    try:
        if os.path.isfile(path) and not os.path.islink(path) and os.path.getsize(path) > LOG_MAX:
            os.replace(path, path + ".1")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
        try:
            st = os.fstat(fd)
            if st.st_uid != 0 or st.st_gid != group_id:
                os.fchown(fd, 0, group_id)
            os.fchmod(fd, 0o640)
            os.write(fd, entry.encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except OSError:
        return False
    return True


def stay_applied(target_behind, current_behind):
    """The migrations a rollback leaves applied: applied in the database and unknown to the target
    release, less those the current release does not know either (stale rows of removed apps)."""
    return sorted(set(target_behind or ()) - set(current_behind or ()))
