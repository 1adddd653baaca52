#!/usr/bin/env python3
"""WebSocket test client (needs the `websockets` package; in the scenarios it runs with an ASGI
service's virtualenv Python inside the container, against the gateway on its loopback).

    wsclient.py echo URL [--insecure]          one round trip; prints {"echo": ..., "seconds": ...}
                                               (--insecure: a wss:// URL's certificate is not checked,
                                               for a gateway's self-signed one on its loopback)
    wsclient.py hold URL --count N --stop-file F --output O [--ready-file R]
        opens N connections, one round trip each, then keeps them open until F exists, writing
        for each how it ended: "open" (still open at the end), or the close code it received
        (1001 for a server going away), or the error when it was cut without a close frame.
    wsclient.py rate URL --seconds S [--connections C]
        messages per second echoed over C connections for S seconds (benchmarks/asgi.py).
"""

import argparse
import asyncio
import json
import os
import ssl
import sys
import time

from websockets.asyncio.client import connect, unix_connect
from websockets.exceptions import ConnectionClosed


def opener(args):
    if args.unix:
        return lambda: unix_connect(args.unix, args.url, open_timeout=10, max_size=2 ** 20)
    tls = {}
    if args.url.startswith("wss://") and args.insecure:
        tls["ssl"] = ssl._create_unverified_context()  # the test's own self-signed gateway
    return lambda: connect(args.url, open_timeout=10, max_size=2 ** 20, **tls)


async def echo(args):
    started = time.time()
    async with opener(args)() as ws:
        await ws.send("hello")
        answer = await asyncio.wait_for(ws.recv(), 10)
    return {"echo": answer, "seconds": round(time.time() - started, 3)}


async def hold_one(args, index, results):
    entry = results[index] = {"echo": None, "end": None}
    try:
        async with opener(args)() as ws:
            await ws.send("hello %d" % index)
            entry["echo"] = await asyncio.wait_for(ws.recv(), 10)
            while not os.path.exists(args.stop_file):
                try:
                    await asyncio.wait_for(ws.recv(), 0.3)
                except TimeoutError:
                    continue
            entry["end"] = "open"
    except ConnectionClosed as exc:
        entry["end"] = exc.rcvd.code if exc.rcvd is not None else "cut: %s" % type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - recorded as this connection's end
        entry["end"] = "error: %r" % exc


async def hold(args):
    results = {}
    tasks = [asyncio.create_task(hold_one(args, i, results)) for i in range(args.count)]
    while len([r for r in results.values() if r["echo"] or r["end"]]) < args.count:
        await asyncio.sleep(0.1)
    if args.ready_file:
        os.close(os.open(args.ready_file, os.O_WRONLY | os.O_CREAT, 0o644))
    await asyncio.gather(*tasks)
    return {"connections": [results[i] for i in range(args.count)]}


async def rate(args):
    deadline = time.time() + args.seconds
    counts = []

    async def one():
        done = 0
        async with opener(args)() as ws:
            while time.time() < deadline:
                await ws.send("x" * 64)
                await ws.recv()
                done += 1
        counts.append(done)

    await asyncio.gather(*(one() for _ in range(args.connections)))
    return {"messages": sum(counts), "seconds": args.seconds, "per_second": round(sum(counts) / args.seconds, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("echo", "hold", "rate"))
    parser.add_argument("url")
    parser.add_argument("--unix", help="connect to this unix socket instead of the URL's host")
    parser.add_argument("--insecure", action="store_true", help="do not check a wss:// URL's certificate")
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--stop-file")
    parser.add_argument("--ready-file")
    parser.add_argument("--output")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    args.seconds = min(args.seconds, 120.0)
    result = asyncio.run({"echo": echo, "hold": hold, "rate": rate}[args.mode](args))
    text = json.dumps(result)
    if args.output:
        with open(args.output + ".tmp", "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(args.output + ".tmp", args.output)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
