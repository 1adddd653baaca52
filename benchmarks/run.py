#!/usr/bin/env python3
"""make bench: measure the gateway and the deploys side by side, inside the project's own test
containers, and write benchmarks/results.md (tables + chart) and the README's performance
section.

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
README = os.path.join(ROOT, "README.md")
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
    settings = {"ansible_become": False, "uwsgi_vassal_pip_source": "wheelhouse"}
    settings.update(extra or {})
    with open(os.path.join(directory, "group_vars", "all", "vars.yml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(dict(settings, microsvc_services=services), handle)
    return directory


def playbook(inventory, args=(), playbook_path="site.yml"):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    started = time.perf_counter()
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", inventory, playbook_path] + list(args),
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
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
            "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": sum(map(int, sock.groups())) if sock else 0}


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
# (d) and (e): ceilings, not setups one would run. (d) is the design we automate (nginx
# uwsgi_pass to a uWSGI unix socket) with no Python at all: uWSGI answers from its internal
# router, so no vassal configuration can be faster. (e) is nginx answering by itself.
server {
    listen 8084;
    access_log off;
    location /api/hello/ {
        uwsgi_pass unix:/tmp/bench-noop/uwsgi.sock;
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


def bench_gateway(image, work, duration, rounds):
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
    dexec(name, "install -d -o nobody /tmp/bench-noop && (setsid runuser -u nobody -- uwsgi "
                "--socket /tmp/bench-noop/uwsgi.sock --chmod-socket=666 --master --processes 2 --thunder-lock "
                "--disable-logging --route-run 'return:200' >/tmp/bench-noop/uwsgi.log 2>&1 &)")
    dexec(name, "cat > /etc/nginx/conf.d/bench.conf <<'EOF'\n%s\nEOF\nnginx -t -q && systemctl reload nginx"
          % GATEWAY_EXTRA)
    time.sleep(2)
    # Explicit ports: wrk resolves "http" through /etc/services, which a minimal host lacks.
    urls = {"ours": "http://127.0.0.1:80/api/hello/", "gunicorn": "http://127.0.0.1:8081/api/hello/",
            "reference": "http://127.0.0.1:8082/api/hello/", "floor": "http://127.0.0.1:8083/api/hello/",
            "ceiling_uwsgi": "http://127.0.0.1:8084/api/hello/", "ceiling_nginx": "http://127.0.0.1:8085/api/hello/"}
    for label, url in urls.items():
        out = dexec(name, "python3 -c \"import urllib.request; r = urllib.request.urlopen('%s'); "
                          "print(r.status, r.read())\"" % url)
        assert out.stdout.startswith("200 ") and ("hello" in out.stdout or label == "ceiling_uwsgi"), (
            label, out.stdout, out.stderr)
    # Warm every setup up, then interleave the setups and keep the median of the rounds, so
    # that a passing disturbance of the machine does not favour one of them.
    for url in urls.values():
        dexec(name, "wrk -t2 -c16 -d2s %s" % url)
    results = {}
    for conns in (1, 16, 64):
        runs = {label: [] for label in urls}
        for _round in range(rounds):
            for label, url in urls.items():
                threads = 1 if conns == 1 else 2
                out = dexec(name, "wrk -t%d -c%d -d%ds --latency %s" % (threads, conns, duration, url)).stdout
                runs[label].append(parse_wrk(out))
        for label, got in runs.items():
            got.sort(key=lambda r: r["rps"])
            best = dict(got[len(got) // 2])
            best["non_2xx"] = sum(r["non_2xx"] for r in got)
            best["socket_errors"] = sum(r["socket_errors"] for r in got)
            best["rounds"] = [round(r["rps"]) for r in got]
            results.setdefault(str(conns), {})[label] = best
            log("gateway: %-9s c=%-2d %8.0f req/s p99 %.2f ms (rounds %s)" % (
                label, conns, best["rps"], best["p99_ms"] or 0, best["rounds"]))
    sh(["docker", "rm", "-f", name], check=False)
    return results


# --- 2-4. deploys, redeploy under load, 50 vassals ----------------------------------------

LOADGEN = os.path.join(ROOT, "tools", "loadgen.py")


def median_run(inv, args, reps):
    times = [playbook(inv, args) for _ in range(reps)]
    assert all(changed == 0 for _t, changed in times) or args, times
    return statistics.median(t for t, _c in times)


def bench_deploys(image, work, reps):
    name = "microsvc-bench-deploy"
    log("deploy: starting %s" % name)
    start_container(name, image)
    src = os.path.join(work, "deploy-src")
    services = [service(src, "svc%02d" % i) for i in range(1, 21)]

    def inv(n, step):
        return write_inventory(os.path.join(work, "inv-%s" % step), name, services[:n])

    res = {"nochange": {}, "one_service": {}}

    log("deploy: converging 1 service")
    playbook(inv(1, "1"))
    res["nochange"]["1"] = median_run(inv(1, "1"), (), reps)
    times = []
    for rep in range(reps):
        hello_source(src, "svc01", "rev-1-%d" % rep)
        times.append(playbook(inv(1, "1"), ["-e", "deploy_services=svc01"])[0])
    res["one_service"]["1"] = statistics.median(times)

    for n in (5, 20):
        log("deploy: converging %d services" % n)
        res.setdefault("first_converge", {})[str(n)] = playbook(inv(n, str(n)))[0]
        res["nochange"][str(n)] = median_run(inv(n, str(n)), (), reps)

    log("deploy: one-service deploys with 20 listed")
    times = []
    for rep in range(reps):
        hello_source(src, "svc01", "rev-20-%d" % rep)
        times.append(playbook(inv(20, "20"), ["-e", "deploy_services=svc01"])[0])
    res["one_service"]["20"] = statistics.median(times)

    log("deploy: redeploys under load")
    with open(LOADGEN, encoding="utf-8") as handle:
        dexec(name, "cat > /tmp/loadgen.py <<'EOF'\n%s\nEOF" % handle.read())
    dexec(name, "rm -f /tmp/load.json /tmp/load.stop; (setsid python3 /tmp/loadgen.py "
                "--url http://127.0.0.1/api/svc01/ --url http://127.0.0.1/api/svc02/ --concurrency 4 "
                "--duration 240 --stop-file /tmp/load.stop --output /tmp/load.json >/dev/null 2>&1 &)")
    time.sleep(2)
    for rep in range(reps):
        hello_source(src, "svc01", "rev-load-%d" % rep)
        playbook(inv(20, "20"), ["-e", "deploy_services=svc01"])
    dexec(name, "touch /tmp/load.stop")
    deadline = time.time() + 60
    while dexec(name, "test -f /tmp/load.json", check=False).returncode != 0:
        assert time.time() < deadline
        time.sleep(0.5)
    load = json.loads(dexec(name, "cat /tmp/load.json").stdout)
    res["under_load"] = {url.rsplit("/", 2)[-2]: {k: v[k] for k in ("requests", "errors", "non_2xx",
                                                                   "stale_retries", "p99_ms", "max_ms")}
                         for url, v in load["urls"].items()}
    res["under_load_redeploys"] = reps
    sh(["docker", "rm", "-f", name], check=False)
    return res


def bench_scale(image, work, count=50):
    name = "microsvc-bench-scale"
    log("scale: starting %s" % name)
    start_container(name, image)
    src = os.path.join(work, "scale-src")
    services = [service(src, "svc%02d" % i) for i in range(1, count + 1)]
    inv = write_inventory(os.path.join(work, "inv-scale"), name, services)
    log("scale: deploying %d services in one run" % count)
    started = time.perf_counter()
    playbook(inv)
    res = scale_figures(name)
    res["first_deploy_s"] = time.perf_counter() - started
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


def report(gw, dep, scale):
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
                  "| connections | setup | requests/s | p50 ms | p99 ms | errors | ours vs this |",
                  "|---|---|---|---|---|---|---|"]
        for conns, by in ((c, b) for c, b in gw.items() if c != "measured_at"):
            for label in [k for k in GATEWAY_SETUPS if k in by]:
                r = by[label]
                ratio = by["ours"]["rps"] / r["rps"] if r["rps"] else 0
                lines.append("| %s | %s | %.0f | %.2f | %.2f | %d | %s |" % (
                    conns, GATEWAY_SETUPS[label], r["rps"], r["p50_ms"] or 0, r["p99_ms"] or 0,
                    r["non_2xx"] + r["socket_errors"], "-" if label == "ours" else "%.2fx" % ratio))
        levels = [(c, b) for c, b in gw.items() if c != "measured_at"]
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
    if dep:
        nc, one = dep["nochange"], dep["one_service"]
        per_service = (nc["20"] - nc["1"]) / 19
        ratio = one["20"] / one["1"]
        lines += ["## 2. Deploy time (docker connection, pipelining, median of repeated runs)", "",
                  "Measured %s." % dep.get("measured_at", "-"), "",
                  "| run | 1 listed | 5 listed | 20 listed |", "|---|---|---|---|",
                  "| no-change `site.yml` | %.1f s | %.1f s | %.1f s |" % (nc["1"], nc["5"], nc["20"]),
                  "| one-service deploy (`-e deploy_services=svc01`, new code) | %.1f s | | %.1f s |" % (
                      one["1"], one["20"]), "",
                  "Targets: one-service deploy with 20 listed within 1.3x of 1 listed — %.2fx, %s; a no-change run "
                  "costs at most 0.5 s per additional service — %.3f s, %s." % (
                      ratio, verdict(ratio <= 1.3), per_service, verdict(per_service <= 0.5)), ""]
        if "first_converge" in dep:
            lines += ["First converge of 4 and then 15 new services: %.0f s and %.0f s." % (
                dep["first_converge"]["5"], dep["first_converge"]["20"]), ""]
        ul = dep["under_load"]
        lines += ["## 3. Redeploy under load", "",
                  "%d redeploys of `svc01` (20 services listed) while 4 connections load `svc01` and `svc02`:" %
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
        summary.append("no-change run: +%.3f s per additional service (target <= 0.5 s: %s)" % (
            per_service, verdict(per_service <= 0.5)))
        summary.append("one-service deploy, 20 listed vs 1: %.2fx (target <= 1.3x: %s)" % (ratio, verdict(ratio <= 1.3)))
        summary.append("redeploy under load: %d failed requests, worst latency %.0f ms (target 0: %s)" % (
            failed, max(v["max_ms"] or 0 for v in ul.values()), verdict(failed == 0)))
    if scale:
        lines += ["## 4. 50 vassals on one host", "", "Measured %s." % scale.get("measured_at", "-"), "",
                  "| figure | value |", "|---|---|",
                  "| vassals | %d |" % scale["vassals"],
                  "| deploying all of them on a fresh host (one run of `site.yml`) | %.0f s |" % scale["first_deploy_s"],
                  "| cold start: `systemctl restart uwsgi-emperor` until every route answers 200 | %.1f s |" % (
                      scale["cold_start_s"]),
                  "| processes per idle vassal (master + workers) | %.0f |" % scale["procs"],
                  "| RSS per idle vassal | %.1f MiB |" % scale["rss_mb"],
                  "| PSS per idle vassal (shared pages divided) | %.1f MiB |" % scale["pss_mb"], "",
                  ("At its own start the emperor starts every vassal it finds without pausing; uWSGI throttles "
                   "(by `emperor-throttle`) only vassals added to a running emperor and vassals that keep dying."),
                  ""]
        summary.append("50 vassals: cold start %.1f s, %.1f MiB RSS / %.1f MiB PSS per idle vassal" % (
            scale["cold_start_s"], scale["rss_mb"], scale["pss_mb"]))
    return "\n".join(lines), summary


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
        conns = [c for c in gw if c != "measured_at"]
        labels = [(k, v) for k, v in (("ours", "this collection"), ("gunicorn", "(a) nginx + gunicorn"),
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
        xs = [1, 5, 20]
        ax.plot(xs, [dep["nochange"][str(x)] for x in xs], marker="o", label="no-change site.yml")
        ax.plot([1, 20], [dep["one_service"]["1"], dep["one_service"]["20"]], marker="s",
                label="one-service deploy")
        ax.set_xlabel("services listed")
        ax.set_ylabel("seconds")
        ax.set_ylim(bottom=0)
        ax.set_title("Run time vs. length of the service list")
        ax.legend()
    fig.tight_layout()
    fig.savefig(CHART, dpi=110)


def update_readme(summary):
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    block = ("<!-- bench:start -->\nLast `make bench` (see [benchmarks/results.md](benchmarks/results.md), with "
             "the chart):\n\n" + "\n".join("- " + s for s in summary) + "\n<!-- bench:end -->")
    text = re.sub(r"<!-- bench:start -->.*?<!-- bench:end -->", lambda _m: block, text, flags=re.DOTALL)
    with open(README, "w", encoding="utf-8") as handle:
        handle.write(text)


PARTS = ("gateway", "deploy", "scale")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=PARTS, help="run one part; the others keep their last measurement")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each timed run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved wrk rounds per setup (median kept)")
    parser.add_argument("--report-only", action="store_true",
                        help="write results.md, the chart and the README summary from the last measurements")
    args = parser.parse_args()
    last_path = os.path.join(RAW, "last.json")
    results = {}
    if os.path.exists(last_path):
        with open(last_path, encoding="utf-8") as handle:
            results = json.load(handle)
    if not args.report_only:
        image = sh([os.path.join(ROOT, "tools", "base-image"), "--suite", "bookworm"]).stdout.strip().splitlines()[-1]
        work = tempfile.mkdtemp(prefix="microsvc-bench-")
        runners = {
            "gateway": lambda: bench_gateway(image, work, args.duration, args.rounds),
            "deploy": lambda: bench_deploys(image, work, args.reps),
            "scale": lambda: bench_scale(image, work),
        }
        try:
            for part in PARTS:
                if args.only in (None, part):
                    # Each part's ratios are between figures of this one invocation.
                    results[part] = runners[part]()
                    results[part]["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        finally:
            shutil.rmtree(work, ignore_errors=True)
        os.makedirs(RAW, exist_ok=True)
        with open(last_path, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1)
    return write_outputs(results.get("gateway"), results.get("deploy"), results.get("scale"))


def write_outputs(gw, dep, scale):
    text, summary = report(gw, dep, scale)
    chart(gw, dep)
    with open(RESULTS_MD, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    update_readme(summary)
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
