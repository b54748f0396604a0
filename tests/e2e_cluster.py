#!/usr/bin/env python3
"""scripts/cluster as a user runs it: three nodes behind nginx on PostgreSQL and a broker.

Readers on nginx and on two nodes directly; acknowledged publishes through nginx and
through each node's HTTP API; every reader gets every publication once, in order.
Usage: python3 tests/e2e_cluster.py [--nats]   (expects target/release/tidings built)
"""
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET, KEY = "cluster-demo-secret", "cluster-demo-key"


def token(user):
    env = dict(os.environ, TIDINGS_JWT_SECRET=SECRET)
    out = subprocess.run([f"{ROOT}/target/release/tidings", "token", "--sub", user],
                         env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def publish(port, channel, i):
    body = json.dumps({"channel": channel,
                       "event": {"type": "notification", "data": {"message": f"m{i}"}}})
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/publish", data=body.encode(),
        headers={"Authorization": f"Bearer {KEY}", "content-type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=10).read())["offset"]


async def check(channel):
    # A user of this run only: the cluster's database outlives runs (and `--dashboard`
    # sessions), and an old user's offline inbox would arrive first.
    t = token(f"reader-{channel}")
    readers = []
    for port in (8100, 8101, 8103):
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws?token={t}")
        assert json.loads(await ws.recv())["type"] == "connected"
        await ws.send(json.dumps({"type": "subscribe", "id": 1, "data": {"channel": channel}}))
        reply = json.loads(await ws.recv())
        while reply.get("id") != 1:  # pushes (none expected) before the answer
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply["type"] == "reply", reply
        readers.append((port, ws))
    await asyncio.sleep(0.5)  # the nodes' broker subscriptions start
    ports = [8100, 8102, 8101, 8103] * 5
    acked = [publish(port, channel, i) for i, port in enumerate(ports)]
    assert acked == list(range(1, len(ports) + 1)), acked
    for port, ws in readers:
        got = []
        while len(got) < len(acked):
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if frame["type"] == "message" and frame["data"]["channel"] == channel:
                got.append(frame["data"]["offset"])
        assert got == acked, (port, got)
        print(f"  reader on {port}: {len(got)} publications once, in order")
        await ws.close()


def main():
    args = sys.argv[1:]
    env = dict(os.environ, TIDINGS_CLUSTER_NO_BUILD="1", RUST_LOG="warn")
    cluster = subprocess.Popen([f"{ROOT}/scripts/cluster", *args], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    output = []
    try:
        deadline = time.time() + 120
        for line in cluster.stdout:
            output.append(line)
            if "Ctrl-C stops" in line:
                break
            if time.time() > deadline:
                raise SystemExit("scripts/cluster did not come up:\n" + "".join(output))
        else:
            raise SystemExit("scripts/cluster exited:\n" + "".join(output))
        channel = f"e2e-cluster-{os.getpid()}-{int(time.time())}"
        asyncio.run(check(channel))
        with urllib.request.urlopen("http://127.0.0.1:8100/healthz", timeout=5) as answer:
            assert answer.read() == b"ok"
    finally:
        os.killpg(cluster.pid, signal.SIGTERM)
        cluster.wait(timeout=30)
    print("scripts/cluster: ok" + (" (NATS)" if args else " (Redis)"))


if __name__ == "__main__":
    main()
