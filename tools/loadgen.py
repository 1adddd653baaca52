#!/usr/bin/env python3
"""A small, bounded HTTP load generator (stdlib only) used by the tests and benchmarks.

It runs inside a test container against that container's own loopback (or between the
project's own test containers), for a fixed maximum duration:

    python3 loadgen.py --url http://127.0.0.1/api/service2/ --url http://127.0.0.1/api/service4/ \
        --concurrency 8 --duration 30 --stop-file /tmp/load.stop --output /tmp/load.json

Each worker thread keeps one request in flight over a keep-alive connection, cycling over
the URLs (with --fresh-connections, a new connection, and for https a new TLS handshake, for
every request); with --rate, the workers together send at most that many requests per second,
evenly spaced, instead of as many as the server answers. It stops after --duration seconds or as
soon as --stop-file exists. https
URLs are verified against --cafile when given, otherwise not verified (a test talks to its
gateway by address, which its certificate does not name).

Like browsers and HTTP libraries (RFC 9112, 9.3.1), a request that fails on a *reused*
keep-alive connection before any response byte arrived is retried once on a new connection:
a server may close an idle keep-alive connection at any time (nginx does on every reload).
Those retries are counted apart ("stale_retries"); any failure on a fresh connection, or a
second failure, is an error. The JSON summary counts, per URL,
responses by status, socket-level errors (refused, reset, timeout) and latency percentiles,
and keeps the distinct bodies seen (bounded), so a test can tell which release answered.
"""

import argparse
import http.client
import json
import os
import ssl
import threading
import time
import urllib.parse


def percentile(values, pct):
    if not values:
        return None
    values = sorted(values)
    index = min(len(values) - 1, max(0, round(pct / 100.0 * len(values) + 0.5) - 1))
    return values[index]


class Stats:
    def __init__(self, urls):
        self.lock = threading.Lock()
        self.per_url = {
            url: {"requests": 0, "status": {}, "errors": {}, "latencies": [], "bodies": {}, "last_body": None,
                  "stale_retries": 0}
            for url in urls
        }

    def record(self, url, status, latency, body=None, error=None):
        with self.lock:
            entry = self.per_url[url]
            entry["requests"] += 1
            if error:
                entry["errors"][error] = entry["errors"].get(error, 0) + 1
                return
            entry["status"][str(status)] = entry["status"].get(str(status), 0) + 1
            entry["latencies"].append(latency)
            if body is not None:
                key = body[:200]
                if key in entry["bodies"] or len(entry["bodies"]) < 20:
                    entry["bodies"][key] = entry["bodies"].get(key, 0) + 1
                entry["last_body"] = key


STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def connect(parts, timeout, tls):
    if parts.scheme == "https":
        return http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=timeout, context=tls)
    return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)


def worker(urls, stats, deadline, stop_file, timeout, offset, tls=None, fresh=False, interval=0.0, first=0.0):
    conns = {}
    i = offset
    due = time.time() + first
    while time.time() < deadline and not (stop_file and os.path.exists(stop_file)):
        if interval:
            # Paced: one request per interval; after a slow answer the next one goes at once,
            # without a burst to catch up.
            if due > time.time():
                time.sleep(due - time.time())
            due = max(due, time.time()) + interval
        url = urls[i % len(urls)]
        i += 1
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.hostname, parts.port)
        path = parts.path + ("?" + parts.query if parts.query else "")
        started = time.perf_counter()
        for attempt in (1, 2):
            conn = conns.get(key)
            reused = conn is not None
            try:
                if conn is None:
                    conn = connect(parts, timeout, tls)
                    conns[key] = conn
                conn.request("GET", path, headers={"Connection": "close" if fresh else "keep-alive"})
                resp = conn.getresponse()
                body = resp.read().decode("utf-8", "replace")
                stats.record(url, resp.status, time.perf_counter() - started, body=body)
                if fresh or resp.getheader("Connection", "").lower() == "close":
                    conns.pop(key).close()
                break
            except (OSError, http.client.HTTPException) as exc:
                conns.pop(key, conn).close()
                if attempt == 1 and reused and isinstance(exc, STALE):
                    with stats.lock:
                        stats.per_url[url]["stale_retries"] += 1
                    continue
                stats.record(url, None, time.perf_counter() - started, error=type(exc).__name__)
                break
    for conn in conns.values():
        conn.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", action="append", required=True)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0, help="hard upper bound, seconds (max 300)")
    parser.add_argument("--stop-file")
    parser.add_argument("--ready-file", help="created once the load has started")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--output")
    parser.add_argument("--cafile", help="verify https URLs against this CA bundle")
    parser.add_argument("--fresh-connections", action="store_true", help="a new connection for every request")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="at most this many requests per second, all workers together (0: no limit)")
    args = parser.parse_args(argv)
    duration = min(args.duration, 300.0)
    interval = args.concurrency / args.rate if args.rate > 0 else 0.0
    for url in args.url:
        host = urllib.parse.urlsplit(url).hostname or ""
        if not (host.startswith(("127.", "microsvc-")) or host == "localhost"):
            parser.error("refusing to load %s: only loopback or the project's own test containers" % url)
    if args.cafile:
        tls = ssl.create_default_context(cafile=args.cafile)
    else:
        tls = ssl._create_unverified_context()  # not verified on purpose: see the docstring
    stats = Stats(args.url)
    started = time.time()
    deadline = started + duration
    threads = [
        threading.Thread(target=worker, daemon=True,
                         args=(args.url, stats, deadline, args.stop_file, args.timeout, n, tls, args.fresh_connections,
                               interval, interval * n / args.concurrency))
        for n in range(args.concurrency)
    ]
    for thread in threads:
        thread.start()
    if args.ready_file:
        with open(args.ready_file, "w", encoding="utf-8") as handle:
            handle.write("%f\n" % started)
    for thread in threads:
        thread.join()
    elapsed = time.time() - started
    summary = {"elapsed": elapsed, "concurrency": args.concurrency, "fresh_connections": args.fresh_connections,
               "rate": args.rate, "urls": {}}
    for url, entry in stats.per_url.items():
        lat = entry["latencies"]
        ok = sum(n for code, n in entry["status"].items() if code.startswith("2"))
        summary["urls"][url] = {
            "requests": entry["requests"],
            "ok": ok,
            "non_2xx": sum(n for code, n in entry["status"].items() if not code.startswith("2")),
            "errors": sum(entry["errors"].values()),
            "status": entry["status"],
            "error_kinds": entry["errors"],
            "rps": entry["requests"] / elapsed if elapsed else 0,
            "p50_ms": percentile(lat, 50) * 1000 if lat else None,
            "p99_ms": percentile(lat, 99) * 1000 if lat else None,
            "max_ms": max(lat) * 1000 if lat else None,
            "stale_retries": entry["stale_retries"],
            "bodies": entry["bodies"],
            "last_body": entry["last_body"],
        }
    text = json.dumps(summary, indent=1, sort_keys=True)
    if args.output:
        tmp = args.output + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, args.output)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
