#!/usr/bin/python
# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Read the last lines of a service's logs on a host (for playbooks/logs.yml)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: service_logs
short_description: The last lines, or those since a time, of a service's log files and journal on a host
description:
  - Reads the end of each log file given (the web process's uWSGI log, the workers' logs, each schedule's
    C(runs.log) and its newest run's log, the gateway's access and error logs of the service) and the
    journal of the service's units, and returns each line prefixed with the host and its source,
    C(<host> <source> | <line>), so that what follows the first C( | ) is the line as written (a JSON
    access line stays parseable). Changes nothing.
  - Log files are written by the service's user (or nginx's); each is opened without following a link and
    checked on its descriptor (a regular file with one hard link), so a service cannot make root read
    another file through its logs; a refused file is reported as one line of source C(error). At most
    I(max_bytes) of each file are read. Control characters in lines are shown escaped (C(\\x1b)), so a
    log cannot drive the operator's terminal.
version_added: 0.3.0
options:
  host:
    description: The name the lines are prefixed with (the inventory host name).
    type: str
    required: true
  files:
    description: Log files, each C(source) (the prefix, e.g. C(web), C(worker:mail)) and C(path).
    type: list
    elements: dict
    default: []
  log_dir:
    description: The service's log directory (C(<root>/<service>/shared/log)), which I(workers) and
      I(schedules) write to; the service's user writes there.
    type: path
  workers:
    description: Names of the service's workers; C(<log_dir>/worker-<name>.log) is read as source C(worker:<name>).
    type: list
    elements: str
    default: []
  schedules:
    description: Names of the service's schedules; C(<log_dir>/schedules/<name>/runs.log) and the newest run's
      log there are read as sources C(schedule:<name>) and C(schedule:<name>:run).
    type: list
    elements: str
    default: []
  journal_units:
    description: A unit name pattern for C(journalctl -u) (the service's workers and schedules), or empty.
    type: str
    default: ""
  lines:
    description: The last lines of each source.
    type: int
    default: 100
  since:
    description: Only lines since then, a UTC time C(YYYY-MM-DD[ HH:MM[:SS]]) or a time ago (C(90m), C(2h),
      C(1d)). A file's line without a time of its own takes the time of the line before it; lines before the
      first dated one count when the file changed since then.
    type: str
    default: ""
  max_bytes:
    description: At most this many bytes are read from the end of each file.
    type: int
    default: 4194304
notes:
  - Why not a builtin - slurp follows links and returns whole files; this reads the end of every log of a
    service in one call, never through a link the service planted, and filters by time.
author:
  - microsvc maintainers (@microsvc)
"""

EXAMPLES = r"""
- name: Read the last 50 lines of service1's logs on this host
  microsvc.deploy.service_logs:
    host: "{{ inventory_hostname }}"
    files: [{source: web, path: /opt/www/service1/log/uwsgi.log}]
    journal_units: microsvc-service1.*
    lines: 50
"""

RETURN = r"""
lines:
  description: C(<host> <source> | <line>), per source in the order given, oldest first.
  returned: always
  type: list
  elements: str
"""

import calendar
import os
import re
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.microsvc.deploy.plugins.module_utils import safefs

SINCE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[ T]([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?)?|([1-9][0-9]{0,4})([smhd])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MONTHS = {m: i + 1 for i, m in enumerate(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])}
# The times the logs write: ISO 8601 (JSON access lines, microsvc-run, journal short-iso), nginx's
# error log (2026/12/07 04:05:06), the combined format ([07/Dec/2026:04:05:06 +0000]), uWSGI's ctime.
ISO = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?(Z|[+-][0-9]{2}:?[0-9]{2})?")
NGINX_ERROR = re.compile(r"^([0-9]{4})/([0-9]{2})/([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})")
COMBINED = re.compile(r"\[([0-9]{2})/([A-Z][a-z]{2})/([0-9]{4}):([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-][0-9]{4})\]")
CTIME = re.compile(r"[A-Z][a-z]{2} ([A-Z][a-z]{2}) +([0-9]{1,2}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([0-9]{4})")
# Shown escaped: control characters (a log must not drive the operator's terminal) and what YAML
# cannot print as is (the output stays one line per line, the JSON of an access line intact).
CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")
NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
SOURCE = re.compile(r"[a-z][a-z0-9_:.-]{0,80}")


def cutoff(since, now=None):
    """The time ``since`` names, in unix seconds (None: no cutoff)."""
    if not since:
        return None
    match = SINCE.fullmatch(since)
    if not match:
        raise ValueError("since %r is not a UTC time YYYY-MM-DD[ HH:MM[:SS]] or a time ago (90m, 2h, 1d)" % since)
    if match.group(7):
        return (time.time() if now is None else now) - int(match.group(7)) * UNITS[match.group(8)]
    y, mo, d, h, mi, s = (int(g or 0) for g in match.groups()[:6])
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))


def _offset(text):
    if not text or text == "Z":
        return 0
    text = text.replace(":", "")
    sign = -1 if text[0] == "-" else 1
    return sign * (int(text[1:3]) * 3600 + int(text[3:5]) * 60)


def line_time(line):
    """The time a log line carries (unix seconds), or None."""
    match = ISO.search(line[:200])
    if match:
        y, mo, d, h, mi, s = (int(g) for g in match.groups()[:6])
        stamp = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
        return stamp - _offset(match.group(7)) if match.group(7) else time.mktime((y, mo, d, h, mi, s, 0, 0, -1))
    match = NGINX_ERROR.match(line)
    if match:
        y, mo, d, h, mi, s = (int(g) for g in match.groups())
        return time.mktime((y, mo, d, h, mi, s, 0, 0, -1))
    match = COMBINED.search(line[:400])
    if match and match.group(2) in MONTHS:
        d, y, h, mi, s = (int(match.group(i)) for i in (1, 3, 4, 5, 6))
        return calendar.timegm((y, MONTHS[match.group(2)], d, h, mi, s, 0, 0, 0)) - _offset(match.group(7))
    match = CTIME.search(line)
    if match and match.group(1) in MONTHS:
        d, h, mi, s, y = (int(match.group(i)) for i in (2, 3, 4, 5, 6))
        return time.mktime((y, MONTHS[match.group(1)], d, h, mi, s, 0, 0, -1))
    return None


def shown(line):
    """The line as printed: trailing white space dropped, control characters escaped."""
    return CONTROL.sub(lambda m: "\\x%02x" % ord(m.group(0)) if ord(m.group(0)) < 256 else "\\u%04x" % ord(m.group(0)),
                       line.rstrip())


def select(lines, count, since, changed_at):
    """The last ``count`` of ``lines`` at or after ``since`` (see the option)."""
    if since is not None:
        kept, current = [], changed_at
        for line in lines:
            current = line_time(line) or current
            if current is not None and current >= since:
                kept.append(line)
        lines = kept
    return lines[-count:] if count else lines


def read_file(path, max_bytes):
    """(lines, mtime) of the end of a log file, never through a link; (None, None) when absent."""
    try:
        fd = safefs.open_file(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        handle.seek(max(0, st.st_size - max_bytes))
        data = handle.read(max_bytes)
    text = data.decode("utf-8", "replace")
    lines = text.splitlines()
    if st.st_size > max_bytes and lines:
        lines = lines[1:]  # the first line was cut
    return lines, st.st_mtime


def newest_run_log(directory):
    try:
        names = safefs.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return None
    runs = sorted(n for n in names if n.endswith(".log") and n != "runs.log" and re.fullmatch(r"[0-9T.Z]+\.log", n))
    return os.path.join(directory, runs[-1]) if runs else None


def journal(pattern, count, since):
    cmd = ["journalctl", "--no-pager", "-q", "-o", "short-iso", "-u", pattern, "-n", str(count)]
    if since is not None:
        cmd += ["--since", "@%d" % int(since)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, str(exc)
    if proc.returncode != 0:
        return None, (proc.stderr or "journalctl exited with status %d" % proc.returncode).strip()[-300:]
    return proc.stdout.splitlines(), None


def main():
    module = AnsibleModule(argument_spec={
        "host": {"type": "str", "required": True},
        "files": {"type": "list", "elements": "dict", "default": []},
        "log_dir": {"type": "path"},
        "workers": {"type": "list", "elements": "str", "default": []},
        "schedules": {"type": "list", "elements": "str", "default": []},
        "journal_units": {"type": "str", "default": ""},
        "lines": {"type": "int", "default": 100},
        "since": {"type": "str", "default": ""},
        "max_bytes": {"type": "int", "default": 4 << 20},
    }, supports_check_mode=True)
    p = module.params
    if not 1 <= p["lines"] <= 10000:
        module.fail_json(msg="lines must be from 1 to 10000")
    try:
        since = cutoff(p["since"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    host = shown(p["host"])
    out = []

    def emit(source, lines):
        out.extend("%s %s | %s" % (host, source, shown(line)) for line in lines)

    sources = [(f.get("source"), f.get("path")) for f in p["files"]]
    for name in p["workers"] + p["schedules"]:
        if not NAME.fullmatch(name) or not p["log_dir"]:
            module.fail_json(msg="invalid worker or schedule name %r, or no log_dir" % name)
    for name in p["workers"]:
        sources.append(("worker:" + name, os.path.join(p["log_dir"], "worker-%s.log" % name)))
    for name in p["schedules"]:
        directory = os.path.join(p["log_dir"], "schedules", name)
        sources.append(("schedule:" + name, os.path.join(directory, "runs.log")))
        try:
            run_log = newest_run_log(directory)
        except OSError as exc:
            emit("error", ["schedule:%s: %s" % (name, exc)])
            run_log = None
        if run_log:
            sources.append(("schedule:%s:run" % name, run_log))
    for source, path in sources:
        if not isinstance(source, str) or not SOURCE.fullmatch(source) or not isinstance(path, str) \
                or not os.path.isabs(path):
            module.fail_json(msg="invalid log source %r at %r" % (source, path))
        try:
            lines, mtime = read_file(path, p["max_bytes"])
        except OSError as exc:
            emit("error", ["%s: %s" % (source, exc)])
            continue
        if lines is not None:
            emit(source, select(lines, p["lines"], since, mtime))
    if p["journal_units"]:
        if not re.fullmatch(r"[A-Za-z0-9_.@*:-]{1,200}", p["journal_units"]):
            module.fail_json(msg="invalid unit pattern %r" % p["journal_units"])
        lines, error = journal(p["journal_units"], p["lines"], since)
        if error is None:
            emit("journal", lines or [])
        else:
            emit("error", ["journal: %s" % error])
    module.exit_json(changed=False, lines=out)


if __name__ == "__main__":
    main()
