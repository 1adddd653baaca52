#!/usr/bin/env python3
"""make bench: measure the gateway and the deploys side by side, inside the project's own test
containers, and write benchmarks/results.md (tables + chart) and the summary on the
performance page (docs/performance.md).

1. Gateway: requests/s and p50/p99 latency with wrk (inside the container, against its own
   loopback) for a trivial service through our gateway, against (a) nginx in front of gunicorn
   (proxy_pass, same number of worker processes) and (b) the reference article's literal
   configuration, same app, same container, at 1, 16 and 64 connections. Three more rows show
   where the time goes: (c) a bare nginx location to the same vassal, (d) nginx to a uWSGI that
   answers without Python (no configuration of this design can beat it) and (e) nginx alone.
2. Deploy time: a no-change run of site.yml with 1, 5 and 20 services listed, and a one-service
   deploy (-e deploy_services=...) with 1 and with 20 listed.
3. Redeploy under load: failed requests and the worst latency while one service is redeployed.
4. Scale on one host: 50 vassals, cold start until all answer, memory per idle vassal.

Every figure is also given as a ratio against its baseline measured in the same invocation.
Loads are bounded in time and only target the containers' own loopback.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
HERE = os.path.join(ROOT, "benchmarks")
RESULTS_MD = os.path.join(HERE, "results.md")
CHART = os.path.join(HERE, "results.png")
RAW = os.path.join(HERE, "raw")
PERFORMANCE_MD = os.path.join(ROOT, "docs", "performance.md")
BIN = os.path.dirname(sys.executable)
RUN_OPTS = ["--cap-add", "SYS_ADMIN", "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--tmpfs", "/run", "--tmpfs", "/run/lock"]


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def sh(cmd, check=True):
    return subprocess.run(cmd, check=check, text=True, capture_output=True)


def dexec(name, command, check=True):
    return sh(["docker", "exec", name, "sh", "-c", command], check=check)


def start_container(name, image):
    sh(["docker", "rm", "-f", name], check=False)
    sh(["docker", "run", "-d", "--name", name, "--hostname", name] + RUN_OPTS + [image, "/lib/systemd/systemd"])
    deadline = time.time() + 60
    while time.time() < deadline:
        state = dexec(name, "systemctl is-system-running", check=False).stdout.strip()
        if state in ("running", "degraded"):
            return
        time.sleep(0.5)
    raise SystemExit("bench: systemd did not come up in %s" % name)


def write_inventory(directory, host, services, extra=None):
    os.makedirs(os.path.join(directory, "group_vars", "all"), exist_ok=True)
    with open(os.path.join(directory, "hosts.yml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump({"all": {"hosts": {host: {"ansible_connection": "community.docker.docker",
                                                 "ansible_python_interpreter": "/usr/bin/python3"}}}}, handle)
    # The sources of the bench's services are written next to its inventories (in one temporary
    # directory): that directory is the only one they may come from.
    settings = {"ansible_become": False, "uwsgi_vassal_pip_source": "wheelhouse",
                "microsvc_source_roots": [os.path.dirname(os.path.abspath(directory))]}
    settings.update(extra or {})
    with open(os.path.join(directory, "group_vars", "all", "vars.yml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(dict(settings, microsvc_services=services), handle)
    return directory


# The last run's profile (benchmarks/callback_plugins/bench_timings.py): every task's duration
# and the per-step timings of deploy_batch.
LAST_PROFILE = {}


def playbook(inventory, args=(), playbook_path="site.yml"):
    with tempfile.NamedTemporaryFile(prefix="microsvc-bench-profile-", suffix=".json", delete=False) as handle:
        profile_path = handle.name
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""),
               ANSIBLE_CALLBACK_PLUGINS=os.path.join(HERE, "callback_plugins"),
               ANSIBLE_CALLBACKS_ENABLED="bench_timings", MICROSVC_BENCH_TIMINGS=profile_path)
    started = time.perf_counter()
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", inventory, playbook_path] + list(args),
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    try:
        with open(profile_path, encoding="utf-8") as handle:
            LAST_PROFILE.clear()
            LAST_PROFILE.update(json.load(handle))
    except (OSError, ValueError):
        LAST_PROFILE.clear()
    finally:
        os.unlink(profile_path)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-6000:] + proc.stderr[-3000:])
        raise SystemExit("bench: ansible-playbook failed")
    changed = re.search(r"changed=(\d+)", proc.stdout.split("PLAY RECAP")[-1])
    return elapsed, int(changed.group(1)) if changed else None


def hello_source(base, name, marker=""):
    path = os.path.join(base, name)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(HERE, "app", "hello.py"), encoding="utf-8") as handle:
        code = handle.read()
    with open(os.path.join(path, "hello.py"), "w", encoding="utf-8") as handle:
        handle.write(code.replace('b"hello\\n"', 'b"hello from %s %s\\n"' % (name, marker)))
    return path


def service(base, name, marker=""):
    return {"name": name, "source": hello_source(base, name, marker), "module": "hello"}


# --- 1. the gateway -------------------------------------------------------------------------

WRK_RE = re.compile(r"Requests/sec:\s+([\d.]+)")
LAT_RE = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)


def parse_wrk(out):
    rps = float(WRK_RE.search(out).group(1))
    lat = {}
    for pct, value, unit in LAT_RE.findall(out):
        lat[pct] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": rps, "p50_ms": lat.get("50"), "p99_ms": lat.get("99"),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": sum(map(int, sock.groups())) if sock else 0}


# CPU time (clock ticks) of every process that serves the requests: nginx, uWSGI (vassals and
# the standalone ones) and gunicorn; wrk is not counted. Read before and after each wrk run, it
# gives the CPU each request costs, which other work on a shared machine disturbs much less
# than it disturbs requests per second.
CPU_TICKS = r"""
import os
total = 0
for pid in os.listdir('/proc'):
    if not pid.isdigit():
        continue
    try:
        # By the command line (/proc/<pid>/exe of another user's process needs CAP_SYS_PTRACE):
        # nginx's processes, uWSGI's (named '[<service>] uWSGI ...' or 'uwsgi ...') and gunicorn's.
        argv = open('/proc/%s/cmdline' % pid, 'rb').read().split(b'\0')
        if not (argv[0].startswith(b'nginx') or b'uwsgi' in argv[0].lower() or b'gunicorn' in b' '.join(argv[:2])):
            continue
        fields = open('/proc/%s/stat' % pid).read().rsplit(')', 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    except (OSError, IndexError):
        pass
print(total, os.sysconf('SC_CLK_TCK'))
"""


def cpu_ticks(name):
    ticks, hz = dexec(name, "python3 -c \"%s\"" % CPU_TICKS.replace('"', '\\"')).stdout.split()
    return int(ticks), int(hz)


GATEWAY_EXTRA = """
# Benchmark only (benchmarks/run.py): the two setups our gateway is compared with.
# (a) nginx in front of gunicorn, same worker count, HTTP proxy.
server {
    listen 8081;
    location /api/hello/ {
        proxy_pass http://127.0.0.1:8001;
    }
}
# (c) the floor: the shortest nginx location to our own vassal (no headers, no log), to show
# what the gateway's features cost per request.
server {
    listen 8083;
    access_log off;
    location /api/hello/ {
        uwsgi_pass unix:/opt/www/hello/uwsgi.sock;
        include /etc/nginx/uwsgi_params;
    }
}
# The hand-tuned baseline: the same bare location (access log off) to a vassal
# with only socket, module and processes (BASELINE_VASSAL), the same process count as ours.
server {
    listen 8086;
    access_log off;
    location /api/hello/ {
        uwsgi_pass unix:/opt/www/hello/bench-baseline.sock;
        include /etc/nginx/uwsgi_params;
    }
}
# (d) and (e): ceilings, not setups one would run. (d) is the design we automate (nginx
# uwsgi_pass to a uWSGI unix socket) with no Python at all: uWSGI answers from its internal
# router, so no vassal configuration can be faster. (e) is nginx answering by itself.
server {
    listen 8084;
    access_log off;
    location /api/hello/ {
        uwsgi_pass unix:/run/bench-noop/uwsgi.sock;
        include /etc/nginx/uwsgi_params;
    }
}
server {
    listen 8085;
    access_log off;
    location /api/hello/ {
        return 200 "hello\n";
    }
}
# (b) the reference article's configuration, literally, but for the defects that stop it from
# working at all: the server block is closed (and the uWSGI command line is fixed, below).
upstream django1 {
    server unix:///opt/www/ref/uwsgi.sock; # for a file socket
}
server {
    # the port your site will be served on
    listen      8082;
    # the domain name it will serve for
    server_name localhost;
    charset     utf-8;

    # max upload size
    client_max_body_size 75M;   # adjust to taste

    location /api/hello/ {
        uwsgi_pass  django1;
        include     /etc/nginx/uwsgi_params;
    }
}
"""


# The hand-tuned baseline's vassal: socket, module and processes, and only what running it here
# needs besides: Debian's Python plugin, a master (which the emperor manages vassals through; it
# does not touch requests), the directory holding the module, the socket's owner and mode so
# nginx may connect, an unprivileged user, and no line logged per request (uWSGI logs one by
# default; the baseline's nginx logs none either).
BASELINE_VASSAL = """[uwsgi]
plugins = python3
master = true
socket = /opt/www/hello/bench-baseline.sock
chmod-socket = 660
chown-socket = hello:www-data
uid = hello
gid = hello
chdir = /opt/www/hello/current
module = hello
processes = 2
disable-logging = true
"""


def bench_gateway(image, work, args, parts):
    """The gateway's container, then the comparison of setups ("gateway") and the cost of each
    feature ("features"), whichever parts are asked for."""
    name = "microsvc-bench-gateway"
    log("gateway: starting %s" % name)
    start_container(name, image)
    inv = write_inventory(os.path.join(work, "inv-gateway"), name, [service(work, "hello")])
    playbook(inv)
    log("gateway: installing wrk and gunicorn (from a wheelhouse) in the container")
    dexec(name, "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null")
    wheels = os.path.join(work, "gunicorn-wheels")
    pyver = dexec(name, "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'").stdout.strip()
    sh([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--python-version", pyver,
        "--dest", wheels, "gunicorn==23.0.0"])
    sh(["docker", "cp", wheels, "%s:/opt/gunicorn-wheels" % name])
    dexec(name, "python3 -m venv /opt/gunicorn && /opt/gunicorn/bin/pip install -q --no-index "
                "--find-links /opt/gunicorn-wheels gunicorn")
    # Same code, same worker count as our service (2), each run as an unprivileged user.
    dexec(name, "mkdir -p /opt/www/ref && cp /opt/www/hello/current/hello.py /opt/www/ref/ && "
                "chown -R nobody /opt/www/ref")
    dexec(name, "cd /opt/www/ref && (setsid runuser -u nobody -- /opt/gunicorn/bin/gunicorn -w 2 -b 127.0.0.1:8001 "
                "--env SCRIPT_NAME=/api/hello hello:application >/tmp/gunicorn.log 2>&1 &)")
    # The article's command line (one process per service, no supervisor), but --plugin because
    # Debian's uWSGI loads Python as a plugin, --chmod-socket so nginx may connect, and
    # --master instead of --master=true, which uWSGI refuses ("doesn't allow an argument").
    dexec(name, "(setsid uwsgi --plugin python3 --socket=/opt/www/ref/uwsgi.sock --module=hello --master "
                "--chdir=/opt/www/ref --chmod-socket=666 >/tmp/ref-uwsgi.log 2>&1 &)")
    # (d): the same number of processes as our vassal, unprivileged, answering 200 by itself.
    dexec(name, "install -d -o nobody /run/bench-noop && (setsid runuser -u nobody -- uwsgi "
                "--socket /run/bench-noop/uwsgi.sock --chmod-socket=666 --master --processes 2 --thunder-lock "
                "--disable-logging --route-run 'return:200' >/run/bench-noop/uwsgi.log 2>&1 &)")
    dexec(name, "cat > /etc/uwsgi/vassals/bench-baseline.ini <<'EOF'\n%s\nEOF" % BASELINE_VASSAL)
    dexec(name, "cat > /etc/nginx/conf.d/bench.conf <<'EOF'\n%s\nEOF\nnginx -t -q && systemctl reload nginx"
          % GATEWAY_EXTRA)
    # Explicit ports: wrk resolves "http" through /etc/services, which a minimal host lacks.
    urls = {"ours": "http://127.0.0.1:80/api/hello/", "baseline": "http://127.0.0.1:8086/api/hello/",
            "gunicorn": "http://127.0.0.1:8081/api/hello/",
            "reference": "http://127.0.0.1:8082/api/hello/", "floor": "http://127.0.0.1:8083/api/hello/",
            "ceiling_uwsgi": "http://127.0.0.1:8084/api/hello/", "ceiling_nginx": "http://127.0.0.1:8085/api/hello/"}
    wait_answering(name, urls)
    out = {}
    if "gateway" in parts:
        out["gateway"] = compare_setups(name, urls, args.duration, args.rounds)
    if "features" in parts:
        out["features"] = bench_features(name, urls, args.feature_duration, args.feature_rounds)
    sh(["docker", "rm", "-f", name], check=False)
    return out


def compare_setups(name, urls, duration, rounds):
    # Warm every setup up, then interleave the setups and keep the median of the rounds, so
    # that a passing disturbance of the machine does not favour one of them.
    for url in urls.values():
        dexec(name, "wrk -t2 -c16 -d2s %s" % url)
    results = {}
    for conns in (1, 16, 64):
        results[str(conns)] = wrk_rounds(name, urls, conns, duration, rounds)
        for label, best in results[str(conns)].items():
            log("gateway: %-9s c=%-2d %8.0f req/s p99 %.2f ms (rounds %s)" % (
                label, conns, best["rps"], best["p99_ms"] or 0, best["rounds"]))
    return results


def wait_answering(name, urls, timeout=60):
    """Until every URL answers 200 with the service's body (the ceiling (d) answers an empty one)."""
    deadline = time.time() + timeout
    for label, url in urls.items():
        while True:
            out = dexec(name, "python3 -c \"import urllib.request; r = urllib.request.urlopen('%s'); "
                              "print(r.status, r.read())\"" % url, check=False)
            if out.stdout.startswith("200 ") and ("hello" in out.stdout or label == "ceiling_uwsgi"):
                break
            assert time.time() < deadline, (label, out.stdout, out.stderr)
            time.sleep(0.5)


def wrk_rounds(name, urls, conns, duration, rounds):
    """Interleave the setups round after round and keep each one's median round."""
    runs = {label: [] for label in urls}
    for _round in range(rounds):
        for label, url in urls.items():
            threads = 1 if conns == 1 else 2
            before, hz = cpu_ticks(name)
            out = dexec(name, "wrk -t%d -c%d -d%ds --latency %s" % (threads, conns, duration, url)).stdout
            got = parse_wrk(out)
            got["cpu_us"] = (cpu_ticks(name)[0] - before) * 1e6 / hz / max(1, got["requests"])
            runs[label].append(got)
    results = {}
    for label, got in runs.items():
        cpu = sorted(r["cpu_us"] for r in got)
        got.sort(key=lambda r: r["rps"])
        best = dict(got[len(got) // 2])
        best["cpu_us"] = cpu[len(cpu) // 2]
        best["cpu_rounds"] = [round(c, 1) for c in cpu]
        best["non_2xx"] = sum(r["non_2xx"] for r in got)
        best["socket_errors"] = sum(r["socket_errors"] for r in got)
        best["rounds"] = [round(r["rps"]) for r in got]
        results[label] = best
    return results


# --- 1b. what each of the gateway's features costs ------------------------------------------
#
# Each variant is our gateway with one feature switched off, everything else as the role
# rendered it: nginx variants copy our server block and this service's route file (read back
# from the host) to a port of their own, to our vassal; uWSGI variants copy our vassal's ini to
# a vassal of its own, reached through the bare location of (c). Every edit must match, so a
# change of the templates cannot silently turn a variant into a copy of ours.

FEATURE_PORT = 8090
NGINX_FEATURES = (
    ("copy", "nothing switched off: our server and route copied to another port (control)", ()),
    ("access_log", "the per-service access log (buffer=64k flush=1s)",
     (("route", r"^(\s*)access_log [^;]*;$", r"\1access_log off;"),)),
    ("forwarded", "the forwarded-client params (X-Forwarded-For, X-Real-IP, X-Forwarded-Proto)",
     (("route", r"^\s*uwsgi_param HTTP_X_(FORWARDED_FOR|REAL_IP|FORWARDED_PROTO) [^;]*;\n", ""),)),
    ("security_headers", "the security response headers (X-Content-Type-Options, X-Frame-Options, Referrer-Policy)",
     (("server", r"^(\s*)include [^;]*headers\.conf;$", r"\1include /etc/nginx/bench/request-id.headers;"),)),
    ("request_id", "the request id (the param to the service, the response header, the log field)",
     (("route", r"^\s*uwsgi_param HTTP_X_REQUEST_ID [^;]*;\n", ""),
      ("route", r"^\s*uwsgi_hide_header X-Request-ID;\n", ""),
      ("route", r"(access_log [^;]*) microsvc( |;)", r"\1 bench_norid\2"),
      ("server", r"^(\s*)include [^;]*headers\.conf;$", r"\1include /etc/nginx/bench/security.headers;"))),
    ("charset", "charset utf-8 (the charset filter; adds '; charset=utf-8' to text types)",
     (("server", r"^(\s*)charset [^;]*;$", r"\1charset off;"),)),
)
UWSGI_FEATURES = (
    ("mount", "`mount` + `manage-script-name` (replaced by `module`, as in the baseline)",
     ((r"^mount = [^=\n]*=(.*)\nmanage-script-name = true$", r"module = \1"),)),
    ("thunder_lock", "`thunder-lock`", ((r"^thunder-lock = true\n", ""),)),
    ("stats", "the stats socket (`stats`)", ((r"^stats = .*\n", ""),)),
    ("harakiri", "`harakiri` (30 s)", ((r"^harakiri = \d+$", "harakiri = 0"),)),
    # Off by default: this variant switches it on, and its cost is against (c) the other way round.
    ("log_requests", "SWITCHED ON: uWSGI's own line per request (`uwsgi_vassal_log_requests: true`)",
     ((r"^disable-logging = true\n", ""),)),
)

# What each feature gives a user, next to its cost in results.md.
FEATURE_GIVES = {
    "access_log": "a line per request in the service's own log, with the request and upstream times and the "
                  "request id",
    "forwarded": "the service sees the client's address and scheme, whatever the client sent",
    "security_headers": "browsers' protections on every answer, errors included",
    "request_id": "one id across the client, the gateway's log and the service",
    "charset": "text answers say they are UTF-8",
    "mount": "`strip_route`: the app sees SCRIPT_NAME = its route and builds its URLs with it",
    "thunder_lock": "one worker at a time in accept(): no thundering herd (matters with many processes)",
    "stats": "what `status.yml`, the deploy's reload waits and the metrics read",
    "harakiri": "a request stuck for 30 s is killed and its worker replaced",
    "log_requests": "(off by default) uWSGI's own line per request",
}


def edit(text, pattern, repl, what):
    new, count = re.subn(pattern, repl, text, flags=re.MULTILINE)
    assert count, "bench: %s: %r matches nothing in the rendered configuration" % (what, pattern)
    return new


def server_block(conf, marker):
    """The `server { ... }` block of an nginx file that contains marker (braces inside quoted
    strings are skipped)."""
    for match in re.finditer(r"^server \{$", conf, flags=re.MULTILINE):
        depth, quoted, i = 0, False, match.start()
        while i < len(conf):
            char = conf[i]
            if quoted and char == "\\":
                i += 1
            elif char == '"':
                quoted = not quoted
            elif not quoted and char in "{}":
                depth += 1 if char == "{" else -1
                if depth == 0:
                    break
            i += 1
        block = conf[match.start():i + 1]
        if marker in block:
            return block
    raise AssertionError("bench: no server block with %r" % marker)


def bench_features(name, urls, duration, rounds, conns=16):
    log("gateway: features, one switched off at a time (%d connections)" % conns)
    gateway = dexec(name, "cat /etc/nginx/microsvc/gateway.conf").stdout
    route = dexec(name, "cat /etc/nginx/microsvc/routes/hello.conf").stdout
    headers = dexec(name, "cat /etc/nginx/microsvc/headers.conf").stdout
    main_conf = dexec(name, "cat /etc/nginx/nginx.conf").stdout
    ini = dexec(name, "cat /etc/uwsgi/vassals/hello.ini").stdout
    server = server_block(gateway, "routes/*.conf")
    log_format = re.search(r"^\s*log_format microsvc (.*?);$", main_conf, flags=re.MULTILINE | re.DOTALL).group(1)
    files = {
        "/etc/nginx/bench/request-id.headers": "\n".join(
            line for line in headers.splitlines() if line.startswith("add_header X-Request-ID")),
        "/etc/nginx/bench/security.headers": "\n".join(
            line for line in headers.splitlines() if line.startswith("add_header") and "X-Request-ID" not in line),
    }
    assert all(files.values()), files
    conf = ["# Benchmark only (benchmarks/run.py): our gateway with one feature off per server.",
            "log_format bench_norid %s;" % edit(log_format, r"\s*rid=\$microsvc_request_id", "", "log format")]
    variants = {}
    port = FEATURE_PORT
    for key, _what, edits in NGINX_FEATURES:
        srv, rte = server, route
        for where, pattern, repl in edits:
            if where == "server":
                srv = edit(srv, pattern, repl, key)
            else:
                rte = edit(rte, pattern, repl, key)
        srv = edit(srv, r"^\s*listen [^;]*;\n", "", key)
        srv = srv.replace("server {", "server {\n    listen %d;" % port, 1)
        srv = edit(srv, r"^\s*include [^;]*routes/\*\.conf;$", lambda _m, r=rte: r, key)
        conf.append(srv)
        variants["nginx_" + key] = "http://127.0.0.1:%d/api/hello/" % port
        port += 1
    port = FEATURE_PORT + 20
    for key, _what, edits in UWSGI_FEATURES:
        text = ini
        for pattern, repl in edits:
            text = edit(text, pattern, repl, key)
        sock = "/opt/www/hello/bench-%s.sock" % key.replace("_", "-")
        text = edit(text, r"^socket = .*$", "socket = " + sock, key)
        text = re.sub(r"^stats = .*$", "stats = /opt/www/hello/run/bench-%s.stats.sock" % key.replace("_", "-"),
                      text, flags=re.MULTILINE)
        text = edit(text, r"^procname-prefix-spaced = .*$", "procname-prefix-spaced = [hello-%s]" % key, key)
        files["/etc/uwsgi/vassals/bench-%s.ini" % key.replace("_", "-")] = text
        conf.append("server {\n    listen %d;\n    access_log off;\n    location /api/hello/ {\n"
                    "        uwsgi_pass unix:%s;\n        include /etc/nginx/uwsgi_params;\n    }\n}" % (port, sock))
        variants["uwsgi_" + key] = "http://127.0.0.1:%d/api/hello/" % port
        port += 1
    files["/etc/nginx/conf.d/bench-features.conf"] = "\n".join(conf)
    dexec(name, "mkdir -p /etc/nginx/bench")
    for path, text in files.items():
        dexec(name, "cat > %s <<'EOF'\n%s\nEOF" % (path, text))
    dexec(name, "nginx -t -q && systemctl reload nginx")
    setups = {"ours": urls["ours"], "baseline": urls["baseline"], "floor": urls["floor"]}
    setups.update(variants)
    wait_answering(name, setups)
    for url in setups.values():
        dexec(name, "wrk -t2 -c%d -d2s %s" % (conns, url))
    results = wrk_rounds(name, setups, conns, duration, rounds)
    for label, best in results.items():
        log("gateway: %-24s c=%-2d %8.0f req/s (rounds %s)" % (label, conns, best["rps"], best["rounds"]))
    results["connections"] = conns
    return results


# --- 2-4. deploys, redeploy under load, 50 vassals ----------------------------------------

LOADGEN = os.path.join(ROOT, "tools", "loadgen.py")


def median_run(inv, args, reps):
    times = [playbook(inv, args) for _ in range(reps)]
    assert all(changed == 0 for _t, changed in times) or args, times
    return statistics.median(t for t, _c in times)


def profile_summary():
    """The last run's time by part (plan, gateway, emperor, the vassal role's probe, its deploy
    batch, health checks and settling, handlers) and the batch's own steps."""
    groups = {}
    for task in LAST_PROFILE.get("tasks", []):
        groups[task_group(task["name"])] = groups.get(task_group(task["name"]), 0) + task["seconds"]
    steps = {}
    for entry in LAST_PROFILE.get("deploy_timings", []):
        for step, seconds in entry["timings"].items():
            steps[step] = steps.get(step, 0) + seconds
    top = sorted(LAST_PROFILE.get("tasks", []), key=lambda t: -t["seconds"])[:5]
    # Installing nginx and uWSGI from the distribution's mirror: network time, the same work
    # whatever the number of services.
    packages = sum(t["seconds"] for t in LAST_PROFILE.get("tasks", [])
                   if t["results"] and re.search(r"\| Install (nginx|uWSGI)", t["name"]))
    return {"total": LAST_PROFILE.get("total"), "packages": round(packages, 2),
            "groups": {k: round(v, 2) for k, v in groups.items()},
            "steps": {k: round(v, 2) for k, v in steps.items()},
            "top": [[t["name"], t["seconds"]] for t in top]}


PROFILE_GROUPS = ("plan", "gateway", "emperor", "probe", "batch", "health", "handlers", "other")


def task_group(name):
    if name.startswith("handler:"):
        return "handlers"
    if "deploy_batch" in name or "as one batch" in name:
        return "batch"
    if "uwsgi_vassal" in name and re.search(r"health|Settle|Record what failed", name):
        return "health"
    if "uwsgi_vassal" in name:
        return "probe"
    if "nginx_gateway" in name:
        return "gateway"
    if "uwsgi_emperor" in name or "service_firewall" in name:
        return "emperor"
    if "service_plan" in name or " : " not in name:
        return "plan"
    return "other"


MASTERS = r"""
import json, os
out = {}
for pid in os.listdir('/proc'):
    try:
        cmd = open('/proc/%s/cmdline' % pid, 'rb').read().split(b'\0')[0].decode()
    except OSError:
        continue
    if cmd.startswith('[') and cmd.endswith('] uWSGI master'):
        out[cmd[1:cmd.index(']')]] = int(pid)
print(json.dumps(out))
"""


def masters(name):
    """Service name -> PID of its uWSGI master, read from the container's /proc."""
    return json.loads(dexec(name, "python3 -c \"%s\"" % MASTERS.replace('"', '\\"')).stdout)


def under_load(name, urls, run, concurrency=4, rate=0):
    """Run run() while tools/loadgen.py keeps `concurrency` requests in flight against urls
    (inside the container, against its loopback), at most `rate` a second when given; returns
    (run's result, loadgen's summary)."""
    with open(LOADGEN, encoding="utf-8") as handle:
        dexec(name, "cat > /tmp/loadgen.py <<'EOF'\n%s\nEOF" % handle.read())
    dexec(name, "rm -f /tmp/load.json /tmp/load.stop /tmp/load.ready; (setsid python3 /tmp/loadgen.py %s "
                "--concurrency %d --rate %d --duration 300 --stop-file /tmp/load.stop --ready-file /tmp/load.ready "
                "--output /tmp/load.json >/dev/null 2>&1 &)" % (" ".join("--url " + u for u in urls), concurrency, rate))
    wait_for_file(name, "/tmp/load.ready")
    time.sleep(1)
    try:
        result = run()
    finally:
        dexec(name, "touch /tmp/load.stop")
        wait_for_file(name, "/tmp/load.json")
    load = json.loads(dexec(name, "cat /tmp/load.json").stdout)
    assert load["elapsed"] < 299, "the load ended (300 s bound) before the run did"
    return result, load


def wait_for_file(name, path, timeout=60):
    deadline = time.time() + timeout
    while dexec(name, "test -f %s" % path, check=False).returncode != 0:
        assert time.time() < deadline, path
        time.sleep(0.3)


def merge_load(loads):
    """Per service: requests, failures, stale retries, the worst p99 and the worst latency over
    several load runs, and the body last seen."""
    out = {}
    for load in loads:
        for url, v in load["urls"].items():
            svc = url.rsplit("/", 2)[-2]
            entry = out.setdefault(svc, {"requests": 0, "errors": 0, "non_2xx": 0, "stale_retries": 0,
                                         "p99_ms": 0, "max_ms": 0})
            for key in ("requests", "errors", "non_2xx", "stale_retries"):
                entry[key] += v[key]
            for key in ("p99_ms", "max_ms"):
                entry[key] = max(entry[key], v[key] or 0)
            entry["last_body"] = v["last_body"]
    return out


# The load while every service is redeployed: steady, bounded traffic (20 requests a second per
# route), not a closed loop that keeps the container's two CPUs busy by itself (the one-service
# redeploys above use that one).
REDEPLOY_ALL_RATE = 400


def bench_deploys(image, work, reps):
    """One container, the list growing 1 -> 10 -> 20, then shrinking to 4: fresh host, no-change
    runs, one-service deploys, adding 9 services in one run, redeploying one and then all 20
    under load, removing 16."""
    name = "microsvc-bench-deploy"
    log("deploy: starting %s" % name)
    start_container(name, image)
    src = os.path.join(work, "deploy-src")
    services = [service(src, "svc%02d" % i) for i in range(1, 21)]

    def inv(n):
        return write_inventory(os.path.join(work, "inv-%d" % n), name, services[:n])

    res = {"nochange": {}, "one_service": {}, "profiles": {}}

    log("deploy: 1 service on a fresh host (packages included)")
    res["fresh_1"] = playbook(inv(1))[0]
    res["profiles"]["fresh host, 1 service (part 2)"] = profile_summary()
    res["nochange"]["1"] = median_run(inv(1), (), reps)
    times = []
    for rep in range(reps):
        hello_source(src, "svc01", "rev-1-%d" % rep)
        times.append(playbook(inv(1), ["-e", "deploy_services=svc01"])[0])
    res["one_service"]["1"] = statistics.median(times)

    log("deploy: adding 9 services in one run (10 listed)")
    res["add_9"] = playbook(inv(10))[0]
    res["profiles"]["adding 9 services (10 listed)"] = profile_summary()
    res["nochange"]["10"] = median_run(inv(10), (), reps)
    res["profiles"]["no-change run, 10 listed"] = profile_summary()

    log("deploy: adding 10 more services (20 listed)")
    res.setdefault("first_converge", {})["20"] = playbook(inv(20))[0]
    res["nochange"]["20"] = median_run(inv(20), (), reps)

    log("deploy: one-service deploys with 20 listed")
    times = []
    for rep in range(reps):
        hello_source(src, "svc01", "rev-20-%d" % rep)
        times.append(playbook(inv(20), ["-e", "deploy_services=svc01"])[0])
    res["one_service"]["20"] = statistics.median(times)

    log("deploy: one-service redeploys under load")
    loads = []
    for rep in range(reps):
        hello_source(src, "svc01", "rev-load-%d" % rep)
        loads.append(under_load(name, ["http://127.0.0.1/api/svc01/", "http://127.0.0.1/api/svc02/"],
                                lambda: playbook(inv(20), ["-e", "deploy_services=svc01"]))[1])
    res["under_load"] = merge_load(loads)
    res["under_load_redeploys"] = reps

    log("deploy: redeploying all 20 services with new code in one run, under load")
    urls = ["http://127.0.0.1/api/%s/" % s["name"] for s in services]
    before = masters(name)
    loads, times = [], []
    for rep in range(reps):
        marker = "rev-all-%d" % rep
        for svc in services:
            hello_source(src, svc["name"], marker)
        elapsed, load = under_load(name, urls, lambda: playbook(inv(20))[0], rate=REDEPLOY_ALL_RATE)
        times.append(elapsed)
        loads.append(load)
    res["profiles"]["redeploying all 20 services"] = profile_summary()
    after = masters(name)
    merged = merge_load(loads)
    res["redeploy_all"] = {
        "seconds": statistics.median(times), "runs": [round(t, 1) for t in times], "services": len(services),
        "rate": REDEPLOY_ALL_RATE,
        "load": merged,
        # Every service answered with its newest code by the end of the last run (the body the
        # load saw last), and no uWSGI master was replaced (chain reloads only).
        "serving_new": sum(marker in (v.get("last_body") or "") for v in merged.values()),
        "masters_replaced": sorted(n for n in before if after.get(n) != before[n]),
    }

    log("deploy: removing 16 services (4 listed)")
    res["remove_16"] = playbook(inv(4))[0]
    res["nochange"]["4"] = median_run(inv(4), (), reps)
    sh(["docker", "rm", "-f", name], check=False)
    return res


def bench_scale(image, work, count=50):
    """1 and then `count` services on a fresh host, back to back: the cost of each service beyond
    the first; then the memory and the cold start of `count` vassals."""
    src = os.path.join(work, "scale-src")
    services = [service(src, "svc%02d" % i) for i in range(1, count + 1)]
    name = "microsvc-bench-scale1"
    log("scale: 1 service on a fresh host (%s)" % name)
    start_container(name, image)
    one = playbook(write_inventory(os.path.join(work, "inv-scale1"), name, services[:1]))[0]
    one_profile = profile_summary()
    sh(["docker", "rm", "-f", name], check=False)
    name = "microsvc-bench-scale"
    log("scale: %d services on a fresh host in one run, packages included (%s)" % (count, name))
    start_container(name, image)
    first_deploy = playbook(write_inventory(os.path.join(work, "inv-scale"), name, services))[0]
    profile = profile_summary()
    res = scale_figures(name)
    res.update(first_deploy_s=first_deploy, profile=profile, fresh_1=one, fresh_1_profile=one_profile)
    sh(["docker", "rm", "-f", name], check=False)
    return res


MEMORY = r"""
import json, os
out = {}
for pid in os.listdir('/proc'):
    if not pid.isdigit():
        continue
    try:
        cmd = open('/proc/%s/cmdline' % pid, 'rb').read().split(b'\0')[0].decode()
        roll = open('/proc/%s/smaps_rollup' % pid).read()
    except OSError:
        continue
    if not cmd.startswith('[svc'):
        continue
    name = cmd.split(']')[0][1:]
    vals = {l.split(':')[0]: int(l.split()[1]) for l in roll.splitlines()[1:] if l.split()[-1] == 'kB'}
    entry = out.setdefault(name, {'rss_kb': 0, 'pss_kb': 0, 'procs': 0})
    entry['rss_kb'] += vals.get('Rss', 0); entry['pss_kb'] += vals.get('Pss', 0); entry['procs'] += 1
print(json.dumps(out))
"""

ALL_ANSWER = r"""
import subprocess, sys, time, urllib.request
names = sys.argv[1].split(',')
started = time.time()
# The clock starts before the restart: systemctl returns only once the emperor is ready.
subprocess.run(['systemctl', 'restart', 'uwsgi-emperor'], check=True)
pending = set(names)
while pending and time.time() - started < 300:
    for n in list(pending):
        try:
            if urllib.request.urlopen('http://127.0.0.1/api/%s/' % n, timeout=2).status == 200:
                pending.discard(n)
        except OSError:
            pass
    time.sleep(0.05)
print('%.2f %d' % (time.time() - started, len(pending)))
"""


def scale_figures(name):
    mem = json.loads(dexec(name, "python3 -c \"%s\"" % MEMORY.replace('"', '\\"')).stdout)
    names = sorted(mem)
    per = {"rss_mb": statistics.mean(v["rss_kb"] for v in mem.values()) / 1024,
           "pss_mb": statistics.mean(v["pss_kb"] for v in mem.values()) / 1024,
           "procs": statistics.mean(v["procs"] for v in mem.values()), "vassals": len(names)}
    dexec(name, "cat > /tmp/all_answer.py <<'EOF'\n%s\nEOF" % ALL_ANSWER)
    log("scale: restarting the emperor with %d vassals" % len(names))
    took, missing = dexec(name, "python3 /tmp/all_answer.py %s" % ",".join(names)).stdout.split()
    per["cold_start_s"] = float(took)
    per["cold_start_missing"] = int(missing)
    return per


# --- report ---------------------------------------------------------------------------------

GATEWAY_SETUPS = {
    "ours": "this collection",
    "baseline": "hand-tuned baseline: bare location, no log, vassal with socket, module, processes",
    "gunicorn": "(a) nginx + gunicorn (proxy_pass)",
    "reference": "(b) the reference article's config",
    "floor": "(c) bare nginx location to the same vassal",
    "ceiling_uwsgi": "(d) nginx to a uWSGI without Python (ceiling)",
    "ceiling_nginx": "(e) nginx alone, no upstream (ceiling)",
}


def plural_conns(levels):
    levels = list(levels)
    return "%s connection%s" % (" and ".join(levels), "" if levels == ["1"] else "s")


def verdict(ok):
    return "met" if ok else "**not met**"


def report(gw, feat, dep, scale):
    lines = ["# Benchmarks", "",
             ("Written by `make bench` (`benchmarks/run.py`); 2 cores, everything inside the project's own containers "
             "(wrk and the load generator run in the container, against its own loopback). Ratios compare figures "
             "measured in the same invocation."), "",
             "![results](results.png)", ""]
    summary = []
    if gw:
        lines += ["## 1. Gateway throughput (trivial service, 2 worker processes)", "",
                  "Measured %s." % gw.get("measured_at", "-"), "",
                  ("wrk in the container against its loopback; the setups are interleaved and each figure is the "
                   "median of the rounds."), "",
                  "| connections | setup | requests/s | p50 ms | p99 ms | errors | CPU µs/request | ours vs this |",
                  "|---|---|---|---|---|---|---|---|"]
        levels = [(c, b) for c, b in gw.items() if c.isdigit()]
        for conns, by in levels:
            for label in [k for k in GATEWAY_SETUPS if k in by]:
                r = by[label]
                ratio = by["ours"]["rps"] / r["rps"] if r["rps"] else 0
                lines.append("| %s | %s | %.0f | %.2f | %.2f | %d | %s | %s |" % (
                    conns, GATEWAY_SETUPS[label], r["rps"], r["p50_ms"] or 0, r["p99_ms"] or 0,
                    r["non_2xx"] + r["socket_errors"], "%.1f" % r["cpu_us"] if "cpu_us" in r else "-",
                    "-" if label == "ours" else "%.2fx" % ratio))
        worst_a = min(by["ours"]["rps"] / by["gunicorn"]["rps"] for _c, by in levels)
        worst_b = min(by["ours"]["rps"] / by["reference"]["rps"] for _c, by in levels)
        lines += ["", "Targets: at least 3x (a) — lowest ratio %.2fx, %s; at least (b) — lowest ratio %.2fx, %s." % (
            worst_a, verdict(worst_a >= 3), worst_b, verdict(worst_b >= 1)), ""]
        lines += [("(c), (d) and (e) are not targets: they show where the time goes. (c) is the shortest nginx "
                  "location to the same vassal, without the gateway's headers and logs; (d) is the design this "
                  "collection automates (nginx `uwsgi_pass` to a uWSGI unix socket, 2 processes) with no Python "
                  "at all, so no vassal configuration can beat it; (e) is nginx answering by itself."), ""]
        missed = [(c, by) for c, by in levels if by["ours"]["rps"] < 3 * by["gunicorn"]["rps"]]
        bounded = [(c, by["ceiling_uwsgi"]["rps"] / by["gunicorn"]["rps"]) for c, by in missed
                   if "ceiling_uwsgi" in by and by["ceiling_uwsgi"]["rps"] < 3 * by["gunicorn"]["rps"]]
        if bounded:
            lines += [("Out of reach for this design on this machine: at %s (d) itself reaches only %s (a). "
                      "What bounds it is the round trip each request makes from nginx to a uWSGI process and back "
                      "(a new connection per request: nginx keeps no uwsgi connection alive), not the "
                      "service's Python or its configuration." % (
                          plural_conns(c for c, _r in bounded),
                          " and ".join("%.2fx" % r for _c, r in bounded))), ""]
        summary.append("gateway vs nginx+gunicorn: %.2fx to %.2fx (target 3x: %s%s)" % (
            worst_a, max(by["ours"]["rps"] / by["gunicorn"]["rps"] for _c, by in levels), verdict(worst_a >= 3),
            "; out of reach for this design at %s: nginx to a uWSGI without Python reaches only %s there" % (
                plural_conns(c for c, _r in bounded), " and ".join("%.2fx" % r for _c, r in bounded))
            if bounded else ""))
        summary.append("gateway vs the reference configuration: %.2fx to %.2fx (target 1x: %s)" % (
            worst_b, max(by["ours"]["rps"] / by["reference"]["rps"] for _c, by in levels), verdict(worst_b >= 1)))
        if all("baseline" in by for _c, by in levels):
            ratios = [(c, by["ours"]["rps"] / by["baseline"]["rps"]) for c, by in levels]
            worst = min(r for _c, r in ratios)
            lines += [("Target: within 5%% of the hand-tuned baseline (same process count) — %s; %s." % (
                ", ".join("%.3fx at %s" % (r, plural_conns([c])) for c, r in ratios), verdict(worst >= 0.95)))]
            if all(by["ours"].get("cpu_us", 0) > 0 and by["baseline"].get("cpu_us", 0) > 0 for _c, by in levels):
                lines += [("CPU time per request, ours against the baseline (steadier than throughput on a shared "
                           "machine): %s." % ", ".join("%.1f against %.1f µs (+%.0f%%) at %s" % (
                               by["ours"]["cpu_us"], by["baseline"]["cpu_us"],
                               100 * (by["ours"]["cpu_us"] / by["baseline"]["cpu_us"] - 1), plural_conns([c]))
                               for c, by in levels))]
            lines += [""]
            summary.append("gateway vs a hand-tuned nginx-to-uWSGI baseline: %.2fx to %.2fx (target >= 0.95x: %s)" % (
                worst, max(r for _c, r in ratios), verdict(worst >= 0.95)))
    if feat:
        lines += report_features(feat)
    if dep:
        lines += report_deploys(dep, summary)
    if scale:
        lines += report_scale(scale, summary)
    lines += report_profiles(dep, scale)
    return "\n".join(lines), summary


def report_features(feat):
    ours, floor, base = feat["ours"], feat["floor"], feat["baseline"]

    def cost(with_it, without):
        """Throughput and CPU per request a feature costs, as shares of the setup that has it."""
        rps = 1 - with_it["rps"] / without["rps"]
        if not (with_it.get("cpu_us", 0) > 0 and without.get("cpu_us", 0) > 0):
            return "%.1f%%" % (100 * rps), ""
        extra = with_it["cpu_us"] - without["cpu_us"]
        return "%.1f%%" % (100 * rps), "%+.1f µs (%.1f%%)" % (extra, 100 * extra / with_it["cpu_us"])

    def cpu(r):
        return "%.1f" % r["cpu_us"] if "cpu_us" in r else "-"

    lines = ["## 1b. Where the gateway's difference to the baseline goes (%d connections)" % feat["connections"], "",
             "Measured %s." % feat.get("measured_at", "-"), "",
             ("Our gateway with one feature switched off at a time, everything else as rendered (nginx features: "
              "our server block and route copied to a port of their own, to our vassal; uWSGI features: a copy of "
              "our vassal's ini, behind the bare location of (c)). A feature's cost is what the setup with it loses "
              "against the same setup without it — against ours for nginx features, against (c) for uWSGI ones: "
              "requests per second, and CPU time per request of nginx and uWSGI together (read from /proc around "
              "each wrk run; other work on a shared machine disturbs it much less than it disturbs throughput). "
              "Medians of %d interleaved rounds; compare the control row with ours for the noise." %
              len(ours["rounds"])), "",
             ("| setup | feature switched off | requests/s | rounds | CPU µs/request | cost: throughput | "
             "cost: CPU per request | what it gives |"), "|---|---|---|---|---|---|---|---|",
             "| this collection | - | %.0f | %s | %s | | | |" % (ours["rps"], ours["rounds"], cpu(ours)),
             "| hand-tuned baseline | all of them (nginx and uWSGI) | %.0f | %s | %s | %s | %s | |" % (
                 (base["rps"], base["rounds"], cpu(base)) + cost(ours, base)),
             "| (c) bare location to our vassal | every nginx feature | %.0f | %s | %s | %s | %s | |" % (
                 (floor["rps"], floor["rounds"], cpu(floor)) + cost(ours, floor)),
             "| baseline vs (c) | every uWSGI feature | | | | %s | %s | |" % cost(floor, base)]
    for key, what, _edits in NGINX_FEATURES:
        r = feat.get("nginx_" + key)
        if not r:
            continue
        if key == "copy":
            lines.append("| nginx | %s | %.0f | %s | %s | %.3fx ours | | |" % (
                what, r["rps"], r["rounds"], cpu(r), r["rps"] / ours["rps"]))
        else:
            lines.append("| nginx | %s | %.0f | %s | %s | %s | %s | %s |" % (
                (what, r["rps"], r["rounds"], cpu(r)) + cost(ours, r) + (FEATURE_GIVES.get(key, ""),)))
    for key, what, _edits in UWSGI_FEATURES:
        r = feat.get("uwsgi_" + key)
        if not r:
            continue
        # A feature that is off by default is switched on in its variant.
        costs = cost(r, floor) if what.startswith("SWITCHED ON") else cost(floor, r)
        lines.append("| uWSGI, behind (c) | %s | %.0f | %s | %s | %s | %s | %s |" % (
            (what, r["rps"], r["rounds"], cpu(r)) + costs + (FEATURE_GIVES.get(key, ""),)))
    return lines + [""]


def seconds(value):
    return "%.1f s" % value if value is not None else ""


def report_deploys(dep, summary):
    nc, one = dep["nochange"], dep["one_service"]
    per_service = (nc["20"] - nc["1"]) / 19
    ratio = one["20"] / one["1"]
    cols = [c for c in ("1", "4", "5", "10", "20") if c in nc]
    row = "| %s | " + " | ".join("%s" for _c in cols) + " |"
    lines = ["## 2. Deploy time (docker connection, pipelining, median of repeated runs)", "",
             "Measured %s; trivial services (no requirements), one container, the list growing from 1 to 20 "
             "services and then shrinking to 4." % dep.get("measured_at", "-"), "",
             "| run | " + " | ".join("%s listed" % c for c in cols) + " |", "|---|" + "---|" * len(cols),
             row % (("no-change `site.yml`",) + tuple(seconds(nc.get(c)) for c in cols)),
             row % (("one-service deploy (`-e deploy_services=svc01`, new code)",)
                    + tuple(seconds(one.get(c)) for c in cols))]
    if "fresh_1" in dep:
        grow = {"1": dep["fresh_1"], "10": dep["add_9"], "20": dep["first_converge"]["20"]}
        lines += [row % (("services added in one run: 1 on a fresh host (packages included), then 9, then 10",)
                         + tuple(seconds(grow.get(c)) for c in cols)),
                  row % (("every listed service redeployed with new code in one run, under load",)
                         + tuple(seconds(dep["redeploy_all"]["seconds"] if c == "20" else None) for c in cols)),
                  row % (("16 services removed in one run (20 listed before)",)
                         + tuple(seconds(dep["remove_16"] if c == "4" else None) for c in cols))]
    lines += ["", "Targets (kept from earlier issues): one-service deploy with 20 listed within 1.3x of 1 listed — "
              "%.2fx, %s; a no-change run costs at most 0.5 s per additional service — %.3f s, %s." % (
                  ratio, verdict(ratio <= 1.3), per_service, verdict(per_service <= 0.5)), ""]
    summary.append("no-change run: +%.3f s per additional service (target <= 0.5 s: %s)" % (
        per_service, verdict(per_service <= 0.5)))
    summary.append("one-service deploy, 20 listed vs 1: %.2fx (target <= 1.3x: %s)" % (ratio, verdict(ratio <= 1.3)))
    if "fresh_1" in dep:
        add = dep["add_9"] / nc["10"]
        ra = dep["redeploy_all"]
        redeploy = ra["seconds"] / nc["20"]
        failed_all = sum(v["errors"] + v["non_2xx"] for v in ra["load"].values())
        lines += [("Targets: adding 9 services in one run at most 2x the no-change run of the same 10 "
                   "— %.2fx, %s; redeploying all 20 with new code under load at most 3x the no-change run of the "
                   "same 20 — %.2fx (runs: %s s), %s; the no-change run of 4 services at most 6 s — %.1f s, %s." % (
                       add, verdict(add <= 2), redeploy, ", ".join("%.1f" % t for t in ra["runs"]),
                       verdict(redeploy <= 3), nc["4"], verdict(nc["4"] <= 6))), ""]
        summary.append("adding 9 services in one run (10 listed): %.2fx the no-change run (target <= 2x: %s)" % (
            add, verdict(add <= 2)))
        summary.append("redeploying 20 services with new code under load: %.2fx the no-change run, %d failed "
                       "requests (target <= 3x and 0: %s)" % (redeploy, failed_all,
                                                               verdict(redeploy <= 3 and failed_all == 0)))
        summary.append("no-change run of 4 services: %.1f s (target <= 6 s: %s)" % (nc["4"], verdict(nc["4"] <= 6)))
    ul = dep["under_load"]
    lines += ["## 3. Redeploys under load", "",
              "%d redeploys of `svc01` alone (20 services listed) while 4 connections load `svc01` and `svc02`:" %
              dep["under_load_redeploys"], "",
              "| service | requests | failed (non-2xx + socket errors) | p99 ms | worst ms |",
              "|---|---|---|---|---|"]
    failed = 0
    for svc, v in sorted(ul.items()):
        failed += v["errors"] + v["non_2xx"]
        lines.append("| %s%s | %d | %d | %.1f | %.1f |" % (svc, " (redeployed)" if svc == "svc01" else "",
                                                          v["requests"], v["errors"] + v["non_2xx"],
                                                          v["p99_ms"] or 0, v["max_ms"] or 0))
    lines += ["", "Target: 0 failed requests — %d, %s." % (failed, verdict(failed == 0)), ""]
    summary.append("one-service redeploy under load: %d failed requests, worst latency %.0f ms (target 0: %s)" % (
        failed, max(v["max_ms"] or 0 for v in ul.values()), verdict(failed == 0)))
    if "redeploy_all" in dep:
        ra = dep["redeploy_all"]
        load = ra["load"].values()
        failed_all = sum(v["errors"] + v["non_2xx"] for v in load)
        lines += [("%d runs of `site.yml` that each redeploy all %d services with new code, each under a load of %d "
                   "requests a second over 4 connections, cycling over the %d routes (`tools/loadgen.py --rate` in "
                   "the container):" % (len(ra["runs"]), ra["services"], ra.get("rate", 0), ra["services"])), "",
                  "| figure | value |", "|---|---|",
                  "| requests | %d |" % sum(v["requests"] for v in load),
                  "| failed (non-2xx + socket errors) | %d |" % failed_all,
                  "| retried on a fresh connection after an idle keep-alive one was closed | %d |" % sum(
                      v["stale_retries"] for v in load),
                  "| worst p99 of a route, ms | %.1f |" % max(v["p99_ms"] for v in load),
                  "| worst latency, ms | %.1f |" % max(v["max_ms"] for v in load),
                  "| uWSGI masters replaced (chain reloads only: should be none) | %s |" % (
                      ", ".join(ra["masters_replaced"]) or "none"),
                  "| routes answering with the newest code at the end | %d of %d |" % (ra["serving_new"],
                                                                                     ra["services"]), "",
                  "Target: 0 failed requests — %d, %s." % (failed_all, verdict(failed_all == 0)), ""]
    return lines


def report_scale(scale, summary):
    lines = ["## 4. 50 vassals on one host", "", "Measured %s." % scale.get("measured_at", "-"), "",
             "| figure | value |", "|---|---|",
             "| vassals | %d |" % scale["vassals"],
             "| deploying all of them on a fresh host, packages included (one run of `site.yml`) | %.0f s |" % (
                 scale["first_deploy_s"])]
    fresh_1 = scale.get("fresh_1")
    per = None
    if fresh_1:
        per = (scale["first_deploy_s"] - fresh_1) / (scale["vassals"] - 1)
        lines.append("| each service beyond the first (against 1 service on another fresh host just before, %.0f s) | "
                     "%.2f s |" % (fresh_1, per))
        pk50 = scale["profile"].get("packages")
        pk1 = scale["fresh_1_profile"].get("packages")
        if pk50 is not None and pk1 is not None:
            # Installing the packages is the same work in both runs, but its time is the mirror's.
            per = ((scale["first_deploy_s"] - pk50) - (fresh_1 - pk1)) / (scale["vassals"] - 1)
            lines.append("| the same, without installing the packages (%.0f s and %.0f s of the two runs) | %.2f s |" % (
                pk50, pk1, per))
    lines += ["| cold start: `systemctl restart uwsgi-emperor` until every route answers 200 | %.1f s |" % (
                  scale["cold_start_s"]),
              "| processes per idle vassal (master + workers) | %.0f |" % scale["procs"],
              "| RSS per idle vassal | %.1f MiB |" % scale["rss_mb"],
              "| PSS per idle vassal (shared pages divided) | %.1f MiB |" % scale["pss_mb"], "",
              "Targets: 50 services on a fresh host in at most 120 s — %.0f s, %s; at most 12 MiB PSS per idle "
              "vassal — %.1f MiB, %s." % (scale["first_deploy_s"], verdict(scale["first_deploy_s"] <= 120),
                                          scale["pss_mb"], verdict(scale["pss_mb"] <= 12)), "",
              ("uWSGI 2.0 (Debian's, and PyPI's) starts a vassal as soon as a scan of the vassals directory "
               "(every `uwsgi_emperor_scan_interval` seconds) finds its ini, without pausing between vassals: the "
               "pause after each new vassal that `emperor-throttle` describes is commented out in 2.0's "
               "`core/emperor.c` (it exists in the unreleased 2.1). `emperor-throttle` paces only vassals that "
               "keep dying."), ""]
    summary.append("50 services on a fresh host: %.0f s%s (target <= 120 s: %s)" % (
        scale["first_deploy_s"], ", %.2f s per service beyond the first" % per if per is not None else "",
        verdict(scale["first_deploy_s"] <= 120)))
    summary.append("50 vassals: cold start %.1f s, %.1f MiB RSS / %.1f MiB PSS per idle vassal (target <= 12 MiB "
                   "PSS: %s)" % (scale["cold_start_s"], scale["rss_mb"], scale["pss_mb"],
                                 verdict(scale["pss_mb"] <= 12)))
    return lines


GROUP_TITLES = {"plan": "plan (validate, host check, facts)", "gateway": "gateway role", "emperor": "emperor role",
                "probe": "vassal role: probe and the rest", "batch": "deploy batch (`deploy_batch`)",
                "health": "health checks, settle", "handlers": "handlers (nginx reload)", "other": "other"}


def report_profiles(dep, scale):
    profiles = dict((dep or {}).get("profiles", {}))
    if scale and "profile" in scale:
        if "fresh_1_profile" in scale:
            profiles["fresh host, 1 service (part 4)"] = scale["fresh_1_profile"]
        profiles["fresh host, %d services" % scale["vassals"]] = scale["profile"]
    if not profiles:
        return []
    groups = [g for g in PROFILE_GROUPS if any(p["groups"].get(g) for p in profiles.values())]
    steps = []
    for prof in profiles.values():
        steps += [st for st in prof["steps"] if st not in steps]
    lines = ["## 5. Where a run's time goes", "",
             ("Seconds per part of one run (`benchmarks/callback_plugins/bench_timings.py`: each task lasts until "
              "the next one starts, so the parts add up to the run), then the deploy batch's own steps "
              "(`timings` returned by `deploy_batch`; slow steps run concurrently on the host)."), "",
             "| run | total | " + " | ".join(GROUP_TITLES[g] for g in groups) + " | of which installing packages |",
             "|---|---|" + "---|" * (len(groups) + 1)]
    for label, prof in profiles.items():
        lines.append("| %s | %.1f | %s | %s |" % (label, prof["total"] or 0,
                                                  " | ".join("%.1f" % prof["groups"].get(g, 0) for g in groups),
                                                  "%.1f" % prof["packages"] if prof.get("packages") else ""))
    lines += ["", "| run | " + " | ".join(steps) + " |", "|---|" + "---|" * len(steps)]
    for label, prof in profiles.items():
        if prof["steps"]:
            lines.append("| %s | %s |" % (label, " | ".join("%.2f" % prof["steps"].get(st, 0) for st in steps)))
    lines.append("")
    return lines


def chart(gw, dep):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in (gw, dep) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4))
    axes = axes if len(panels) > 1 else [axes]
    i = 0
    if gw:
        ax = axes[i]
        i += 1
        conns = [c for c in gw if c.isdigit()]
        labels = [(k, v) for k, v in (("ours", "this collection"), ("baseline", "hand-tuned baseline"),
                                      ("gunicorn", "(a) nginx + gunicorn"),
                                      ("reference", "(b) reference config"),
                                      ("ceiling_uwsgi", "(d) nginx to uWSGI, no Python"))
                  if all(k in gw[c] for c in conns)]
        width = 0.8 / len(labels)
        for k, (key, label) in enumerate(labels):
            ax.bar([x + (k - (len(labels) - 1) / 2) * width for x in range(len(conns))],
                   [gw[c][key]["rps"] for c in conns], width, label=label)
        # The target as a mark over each group: three times (a).
        ax.hlines([3 * gw[c]["gunicorn"]["rps"] for c in conns], [x - 0.45 for x in range(len(conns))],
                  [x + 0.45 for x in range(len(conns))], colors="black", linestyles="dashed", label="target: 3x (a)")
        ax.set_xticks(range(len(conns)), ["%s conn." % c for c in conns])
        ax.set_ylabel("requests/s")
        ax.set_title("Gateway throughput, trivial service")
        ax.set_ylim(top=1.45 * max(gw[c][key]["rps"] for c in conns for key, _l in labels))
        ax.legend(loc="upper left", fontsize="small")
    if dep:
        ax = axes[i]
        xs = sorted(int(x) for x in dep["nochange"])
        ax.plot(xs, [dep["nochange"][str(x)] for x in xs], marker="o", label="no-change site.yml")
        ax.plot([1, 20], [dep["one_service"]["1"], dep["one_service"]["20"]], marker="s",
                label="one-service deploy")
        if "add_9" in dep:
            ax.plot([10], [dep["add_9"]], marker="^", linestyle="none", label="adding 9 services (10 listed)")
            ax.plot([20], [dep["redeploy_all"]["seconds"]], marker="v", linestyle="none",
                    label="redeploying all 20, under load")
        ax.set_xlabel("services listed")
        ax.set_ylabel("seconds")
        ax.set_ylim(bottom=0)
        ax.set_title("Run time vs. length of the service list")
        ax.legend()
    fig.tight_layout()
    fig.savefig(CHART, dpi=110)


def update_performance_page(summary):
    with open(PERFORMANCE_MD, encoding="utf-8") as handle:
        text = handle.read()
    block = ("<!-- bench:start -->\nLast `make bench` (see [benchmarks/results.md](../benchmarks/results.md), with "
             "the chart):\n\n" + "\n".join("- " + s for s in summary) + "\n<!-- bench:end -->")
    text = re.sub(r"<!-- bench:start -->.*?<!-- bench:end -->", lambda _m: block, text, flags=re.DOTALL)
    with open(PERFORMANCE_MD, "w", encoding="utf-8") as handle:
        handle.write(text)


PARTS = ("gateway", "features", "deploy", "scale")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated parts to run, of %s; the others keep their last "
                                       "measurement" % ", ".join(PARTS))
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each timed run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved wrk rounds per setup (median kept)")
    parser.add_argument("--feature-duration", type=int, default=6, help="seconds per wrk run of the features part")
    parser.add_argument("--feature-rounds", type=int, default=5, help="interleaved rounds of the features part")
    parser.add_argument("--report-only", action="store_true",
                        help="write results.md, the chart and the performance page's summary from the last measurements")
    args = parser.parse_args()
    parts = args.only.split(",") if args.only else list(PARTS)
    if not set(parts) <= set(PARTS):
        parser.error("--only: parts are %s" % ", ".join(PARTS))
    last_path = os.path.join(RAW, "last.json")
    results = {}
    if os.path.exists(last_path):
        with open(last_path, encoding="utf-8") as handle:
            results = json.load(handle)
    if not args.report_only:
        image = sh([os.path.join(ROOT, "tools", "base-image"), "--suite", "bookworm"]).stdout.strip().splitlines()[-1]
        work = tempfile.mkdtemp(prefix="microsvc-bench-")
        runners = [
            (("gateway", "features"), lambda: bench_gateway(image, work, args, parts)),
            (("deploy",), lambda: {"deploy": bench_deploys(image, work, args.reps)}),
            (("scale",), lambda: {"scale": bench_scale(image, work)}),
        ]
        try:
            for names, runner in runners:
                if set(names) & set(parts):
                    # Each part's ratios are between figures of this one invocation.
                    load_before = os.getloadavg()[0]
                    for part, got in runner().items():
                        got["measured_at"] = "%s, load average %.1f before and %.1f after" % (
                            time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), load_before, os.getloadavg()[0])
                        results[part] = got
                    os.makedirs(RAW, exist_ok=True)
                    with open(last_path, "w", encoding="utf-8") as handle:
                        json.dump(results, handle, indent=1)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return write_outputs(results)


def write_outputs(results):
    gw, dep = results.get("gateway"), results.get("deploy")
    text, summary = report(gw, results.get("features"), dep, results.get("scale"))
    chart(gw, dep)
    with open(RESULTS_MD, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    update_performance_page(summary)
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
