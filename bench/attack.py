#!/usr/bin/env python3
"""Memory and descriptors of paragon-edge under connection attacks (loopback only).

    cargo build --release -p paragon-edge
    python3 bench/attack.py [--edge target/release/paragon-edge] [--quick]

Starts the edge on its embedded simulator, then, one scenario at a time, opens attacking
connections and reads the process's resident memory (VmRSS, VmHWM) and open descriptors
from /proc. Prints one JSON object per scenario:

- slowloris: connections sending a head one byte a second (server.header_read_timeout
  closes them);
- big_heads: connections sending 400 KB of one unfinished header (431 at 64 KiB);
- idle: keep-alive connections that send nothing (server.idle_timeout closes them).

Each scenario is bounded in count and time and ends by itself.
"""

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time


def proc_status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])  # kB
    raise RuntimeError(f"no {field}")


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def get(port, path="/v1/users/u1"):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
    await w.drain()
    data = await asyncio.wait_for(r.read(), 10)
    w.close()
    return data.split(b" ", 2)[1].decode() if data else "closed"


async def hold(port, n, send, seconds):
    """Opens n connections, runs send(writer) on each for `seconds`; returns peak figures."""
    conns = []
    for _ in range(n):
        try:
            conns.append(await asyncio.open_connection("127.0.0.1", port))
        except OSError:
            break
    tasks = [asyncio.create_task(send(w)) for _, w in conns]
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return conns


async def scenario(pid, port, name, n, send, seconds, settle):
    base_rss = proc_status(pid, "VmRSS:")
    conns_task = asyncio.create_task(hold(port, n, send, seconds))
    await asyncio.sleep(seconds * 0.8)
    rss = proc_status(pid, "VmRSS:")
    open_fds = fds(pid)
    conns = await conns_task
    # Let the edge's timeouts close what is left, then look again.
    await asyncio.sleep(settle)
    after = proc_status(pid, "VmRSS:")
    after_fds = fds(pid)
    status = await get(port)
    for _, w in conns:
        w.close()
    print(json.dumps({
        "scenario": name,
        "connections": len(conns),
        "rss_before_kb": base_rss,
        "rss_under_attack_kb": rss,
        "rss_per_connection_bytes": round((rss - base_rss) * 1024 / max(len(conns), 1)),
        "fds_under_attack": open_fds,
        "rss_after_kb": after,
        "fds_after": after_fds,
        "peak_rss_kb": proc_status(pid, "VmHWM:"),
        "user_request_after": status,
    }), flush=True)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--edge", default="target/release/paragon-edge")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, hard), hard))
    port = free_port()
    env = dict(os.environ,
               RUST_LOG="warn",
               PARAGON_EDGE__SERVER__LISTEN=f"127.0.0.1:{port}",
               PARAGON_EDGE__SERVER__HEADER_READ_TIMEOUT="3s",
               PARAGON_EDGE__SERVER__IDLE_TIMEOUT="4s")
    edge = subprocess.Popen(["bash", "-c", f"ulimit -n 65536; exec {args.edge}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                if await get(port) == "200":
                    break
            except OSError:
                await asyncio.sleep(0.1)
        pid = edge.pid
        scale = 4 if args.quick else 1

        async def slow(w):
            w.write(b"GET /v1/users/u1 HTTP/1.1\r\nhost: x\r\nx-slow: ")
            while True:
                w.write(b"a")
                await w.drain()
                await asyncio.sleep(1)

        async def big(w):
            w.write(b"GET /v1/users/u1 HTTP/1.1\r\nhost: x\r\nx-big: ")
            chunk = b"a" * 16384
            for _ in range(25):
                w.write(chunk)
                await w.drain()
            await asyncio.sleep(3600)

        async def idle(w):
            await asyncio.sleep(3600)

        await scenario(pid, port, "slowloris", 2000 // scale, slow, 2.5, 4)
        await scenario(pid, port, "big_heads", 300, big, 2.5, 4)
        await scenario(pid, port, "idle", 5000 // scale, idle, 3, 5)
    finally:
        edge.terminate()
        edge.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
