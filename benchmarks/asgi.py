#!/usr/bin/env python3
"""make bench, ASGI rows: the gateway in front of an ASGI service against the same ASGI server
reached directly, side by side in one run, inside the asgi scenario's container against its own
loopback; writes benchmarks/asgi.md.

1. HTTP: requests/s with wrk at 16 connections (GET of the Starlette sample's health endpoint),
   through the gateway (nginx -> root's link -> the live slot's unix socket -> uvicorn) and
   directly: the same launcher, app and number of processes, started by this script on a
   loopback TCP port (wrk does not speak unix sockets; loopback TCP costs the direct side a
   little more than the unix socket the gateway uses, so the ratio is if anything pessimistic).
   Rounds alternate between the two; the median of each is reported.
   Two more setups show where the gateway's cost goes: the shortest nginx proxy location to the
   same live socket (HTTP/1.1, kept-alive upstream connections, no headers, no log), and nginx
   answering by itself (no upstream at all): on one 2-CPU machine nginx's own work per request
   comes out of the same CPUs as the server's, so these bound what any nginx gateway can reach.
2. WebSockets: echoed messages per second over 16 connections (tools/wsclient.py, rate mode),
   through the gateway and directly on the live slot's unix socket, alternating.

    benchmarks/asgi.py [--container microsvc-asgi] [--seconds 10] [--rounds 3]

Without --container it converges the asgi scenario first (molecule) and destroys it after.
Loads are bounded in time and only target the container's own loopback.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
RESULT_MD = os.path.join(ROOT, "benchmarks", "asgi.md")
WSCLIENT = os.path.join(ROOT, "tools", "wsclient.py")
SERVICE = "service7"
DIRECT_PORT = 18089
VENV_PYTHON = "/opt/www/%s/current/.venv/bin/python" % SERVICE


def log(msg):
    print("bench asgi: " + msg, file=sys.stderr, flush=True)


def dexec(name, command, check=True, stdin=None):
    proc = subprocess.run(["docker", "exec", "-i", name, "sh", "-c", command], input=stdin, text=True,
                          capture_output=True, check=False)
    if check and proc.returncode != 0:
        raise SystemExit("command failed in %s: %s\n%s" % (name, command, proc.stderr[-2000:]))
    return proc


# CPU time (user + system, clock ticks) of the processes that serve a request, by part: nginx's
# workers, the live slot's server processes, the direct server's. Read from /proc in the container.
CPU_SCRIPT = r"""
import json, os
ticks = {"nginx": 0, "server": 0}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open("/proc/%s/stat" % pid).read()
        cgroup = open("/proc/%s/cgroup" % pid).read()
    except OSError:
        continue
    comm, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
    part = "nginx" if comm == "nginx" and "worker" in open("/proc/%s/cmdline" % pid).read() else \
        "server" if (".web@" in cgroup or "microsvc-bench-asgi" in cgroup) and comm.startswith("python") else None
    if part:
        ticks[part] += int(fields[11]) + int(fields[12])
print(json.dumps(dict(ticks, hz=os.sysconf("SC_CLK_TCK"))))
"""


def cpu(name):
    return json.loads(dexec(name, "python3 -", stdin=CPU_SCRIPT).stdout)


def wrk(name, url, seconds):
    """(requests/s, errors, CPU microseconds per request of nginx and of the server)."""
    before = cpu(name)
    out = dexec(name, "wrk -t2 -c16 -d%ds %s" % (seconds, url)).stdout
    after = cpu(name)
    match = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if not match or not total:
        raise SystemExit("no wrk result for %s:\n%s" % (url, out))
    per = {part: (after[part] - before[part]) * 1e6 / after["hz"] / max(1, int(total.group(1)))
           for part in ("nginx", "server")}
    return float(match.group(1)), (errors.group(0) if errors else ""), per


def ws_rate(name, args, seconds):
    out = dexec(name, "%s /tmp/wsclient.py rate %s --seconds %d --connections 16" % (VENV_PYTHON, args, seconds)).stdout
    return json.loads(out)["per_second"]


def live_socket(name):
    target = dexec(name, "readlink /opt/www/%s/asgi.sock" % SERVICE).stdout.strip()
    return "/opt/www/%s/%s" % (SERVICE, target)


def start_direct(name):
    """The same server as the live slot (launcher, app, processes), as the service's user, on a
    loopback TCP port that systemd-socket-activate binds and passes as fd 3."""
    processes = re.search(r"--processes (\d+)", dexec(name, "cat /etc/systemd/system/microsvc-%s.web@.service"
                                                             % SERVICE).stdout).group(1)
    dexec(name, "systemctl stop microsvc-bench-asgi.service 2>/dev/null; systemctl reset-failed "
                "microsvc-bench-asgi.service 2>/dev/null; true", check=False)
    dexec(name, "systemd-run --unit microsvc-bench-asgi --collect systemd-socket-activate -l 127.0.0.1:%d "
                "/usr/local/sbin/microsvc-run --root /opt/www %s -- python /usr/local/lib/microsvc/microsvc-asgi "
                "--app svc7.asgi:application --processes %s --fd 3" % (DIRECT_PORT, SERVICE, processes))
    for _ in range(100):
        if dexec(name, "python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:%d/health', "
                       "timeout=2)\"" % DIRECT_PORT, check=False).returncode == 0:
            return processes
        subprocess.run(["sleep", "0.2"], check=False)
    raise SystemExit("the direct server did not answer")


BARE_PORT, ALONE_PORT = 18090, 18091
BARE_CONF = """# make bench (benchmarks/asgi.py): the shortest nginx proxy to the live slot, and nginx alone.
upstream microsvc_bench_asgi {
    server unix:/opt/www/%(service)s/asgi.sock;
    keepalive 32;
}
server {
    listen 127.0.0.1:%(bare)d;
    access_log off;
    location /health {
        proxy_pass http://microsvc_bench_asgi;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
    }
}
server {
    listen 127.0.0.1:%(alone)d;
    access_log off;
    location /health {
        default_type application/json;
        return 200 '{"status":"ok"}';
    }
}
"""


def add_bare_setups(name):
    dexec(name, "cat > /etc/nginx/conf.d/microsvc-bench-asgi.conf && nginx -t -q && systemctl reload nginx",
          stdin=BARE_CONF % {"service": SERVICE, "bare": BARE_PORT, "alone": ALONE_PORT})
    for _ in range(50):
        if dexec(name, "python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:%d/health', "
                       "timeout=2)\"" % BARE_PORT, check=False).returncode == 0:
            return
        subprocess.run(["sleep", "0.2"], check=False)
    raise SystemExit("the bare nginx proxy did not answer")


def remove_bare_setups(name):
    dexec(name, "rm -f /etc/nginx/conf.d/microsvc-bench-asgi.conf && systemctl reload nginx", check=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--container")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    args.seconds = min(args.seconds, 60)
    name = args.container
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))
    molecule = [os.path.join(os.path.dirname(sys.executable), "molecule")]
    if not name:
        name = "microsvc-asgi"
        log("converging the asgi scenario")
        subprocess.run(molecule + ["converge", "-s", "asgi"], cwd=ROOT, env=env, check=True)
    try:
        return bench(name, args)
    finally:
        dexec(name, "systemctl stop microsvc-bench-asgi.service", check=False)
        remove_bare_setups(name)
        if not args.container:
            subprocess.run(molecule + ["destroy", "-s", "asgi"], cwd=ROOT, env=env, check=False)


LOAD_START = ["?"]


def bench(name, args):
    LOAD_START[0] = "%.1f" % os.getloadavg()[0]
    if dexec(name, "command -v wrk", check=False).returncode != 0:
        log("installing wrk in the container")
        dexec(name, "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null")
    with open(WSCLIENT, encoding="utf-8") as handle:
        dexec(name, "cat > /tmp/wsclient.py", stdin=handle.read())
    processes = start_direct(name)
    add_bare_setups(name)
    urls = {"gateway": "http://127.0.0.1:80/api/%s/health" % SERVICE,
            "direct": "http://127.0.0.1:%d/health" % DIRECT_PORT,
            "bare": "http://127.0.0.1:%d/health" % BARE_PORT,
            "alone": "http://127.0.0.1:%d/health" % ALONE_PORT}
    for url in urls.values():
        wrk(name, url, 2)
    http = {label: [] for label in urls}
    cpu_us = {label: [] for label in urls}
    notes = []
    for index in range(args.rounds):
        for label, url in urls.items():
            rate, errors, per = wrk(name, url, args.seconds)
            http[label].append(rate)
            cpu_us[label].append(per)
            if errors:
                notes.append("%s round %d: %s" % (label, index + 1, errors))
            log("http %s round %d: %.0f req/s" % (label, index + 1, rate))
    sock = live_socket(name)
    ws = {"gateway": [], "direct": []}
    for index in range(args.rounds):
        for label, target in (("gateway", "ws://127.0.0.1/api/%s/ws" % SERVICE),
                              ("direct", "ws://localhost/ws --unix %s" % sock)):
            ws[label].append(ws_rate(name, target, max(3, args.seconds // 2)))
            log("websocket %s round %d: %.0f msg/s" % (label, index + 1, ws[label][-1]))
    med = {k: statistics.median(v) for k, v in http.items()}
    # CPU per request: the median round of each part (the server's and nginx's time add up).
    cpum = {k: {part: statistics.median(r[part] for r in v) for part in ("nginx", "server")} for k, v in cpu_us.items()}
    total_us = {k: v["nginx"] + v["server"] for k, v in cpum.items()}
    cpu_ratio = total_us["direct"] / total_us["gateway"]
    bare_ratio = total_us["direct"] / total_us["bare"]
    wsm = {k: statistics.median(v) for k, v in ws.items()}
    lines = [
        "# ASGI: the gateway against the ASGI server directly",
        "",
        "Written by `benchmarks/asgi.py` (part of `make bench`): container `%s` (the asgi scenario), %s CPUs, "
        "service `%s` (the Starlette sample, uvicorn through `microsvc-asgi`, %s processes). Medians of %d "
        "alternating rounds." % (name, dexec(name, "nproc").stdout.strip(), SERVICE, processes, args.rounds),
        "",
        "| what | through the gateway | directly | gateway / direct |",
        "| --- | ---: | ---: | ---: |",
        "| HTTP GET, requests/s, wrk 16 connections, %d s | %.0f | %.0f | %.2fx |"
        % (args.seconds, med["gateway"], med["direct"], med["gateway"] / med["direct"]),
        "| WebSocket echo, messages/s, 16 connections | %.0f | %.0f | %.2fx |"
        % (wsm["gateway"], wsm["direct"], wsm["gateway"] / wsm["direct"]),
        "",
        "Where the gateway's cost goes (HTTP GET, the same rounds):",
        "",
        "| setup | requests/s | / direct | CPU µs per request: server | nginx | both | direct / both |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    labels = {"direct": "the server directly (loopback TCP)",
              "gateway": "the gateway (our route: forwarded headers, request id, security headers, access log)",
              "bare": "the shortest nginx proxy location to the same socket (kept-alive, no headers, no log)",
              "alone": "nginx answering by itself, no upstream (not a proxy: nginx's own cost)"}
    for key in ("direct", "gateway", "bare", "alone"):
        lines.append("| %s | %.0f | %.2fx | %.1f | %.1f | %.1f | %s |" % (
            labels[key], med[key], med[key] / med["direct"], cpum[key]["server"], cpum[key]["nginx"], total_us[key],
            "%.2fx" % (total_us["direct"] / total_us[key]) if key != "alone" else "-"))
    lines += [
        "",
        "Target: the gateway at least 0.9x direct at 16 connections: throughput %.2fx, %s. On one machine, where "
        "nginx and the server share the CPUs, throughput follows the CPU time a request costs in all: direct / "
        "both is %.2fx for the gateway and %.2fx for the shortest proxy location (nginx answering by itself "
        "costs %.1f µs a request). %s CPU times are steadier than throughput on a shared machine (load average "
        "%s at the start)." % (
            med["gateway"] / med["direct"], "met" if med["gateway"] / med["direct"] >= 0.9 else "**not met**",
            cpu_ratio, bare_ratio, total_us["alone"],
            ("By that measure even the shortest nginx proxy stays below 0.9x here: the limit is nginx's own "
             "proxying (a second HTTP parse and write each way) on the server's CPUs, not our route."
             if bare_ratio < 0.9 else
             "By that measure a bare nginx proxy reaches 0.9x: what our route adds is the difference."),
            LOAD_START[0]),
        "",
        "Directly means: HTTP to the same server started on a loopback TCP port (wrk has no unix "
        "sockets); WebSockets on the live slot's own unix socket. Every round: %s"
        % json.dumps({"http": http, "websocket": ws}),
    ]
    if notes:
        lines += ["", "Errors reported by wrk: " + "; ".join(notes)]
    with open(RESULT_MD, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
