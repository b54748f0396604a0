#!/usr/bin/env python3
"""End-to-end test of the `tidings` binary as a new user meets it: `serve --dev`, the printed
token, a third-party WebSocket client (python `websockets`), the HTTP API with the printed key,
`tidings token`, and a graceful stop with SIGTERM.

Usage: python3 tests/e2e_binary.py path/to/tidings
"""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

import websockets

BINARY = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/tidings")
results = []


def check(name, condition, detail=""):
    results.append((name, bool(condition)))
    print(("ok    " if condition else "FAIL  ") + name + ("" if condition else f"  -- {detail}"))


def start_server(workdir):
    proc = subprocess.Popen(
        [BINARY, "serve", "--dev", "--bind", "127.0.0.1:0"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    banner = []
    for line in proc.stdout:
        banner.append(line)
        if "dev-secrets.json" in line:
            break
    text = "".join(banner)
    addr = re.search(r"http://(127\.0\.0\.1:\d+)", text).group(1)
    token = re.search(r"token=([\w.-]+)", text).group(1)
    api_key = re.search(r"HTTP API key: (\w+)", text).group(1)
    secret = re.search(r"TIDINGS_JWT_SECRET=(\w+)", text).group(1)
    return proc, addr, token, api_key, secret


def http(method, url, key=None, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("content-type", "application/json")
    if key:
        request.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def recv_json(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def main():
    workdir = tempfile.mkdtemp(prefix="tidings-e2e-")
    proc, addr, token, api_key, secret = start_server(workdir)
    try:
        secrets_file = os.path.join(workdir, "tidings-data", "dev-secrets.json")
        mode = os.stat(secrets_file).st_mode & 0o777
        check("--dev secrets file is private (0600)", mode == 0o600, oct(mode))
        url = f"ws://{addr}/ws?token={token}"
        async with websockets.connect(url, subprotocols=["tidings.v1"]) as ws:
            check("subprotocol tidings.v1 selected", ws.subprotocol == "tidings.v1", ws.subprotocol)
            connected = await recv_json(ws)
            check("first frame is connected", connected["type"] == "connected", connected)
            check("user is dev", connected["data"]["user_id"] == "dev", connected)

            await ws.send(json.dumps({"type": "subscribe", "id": 1, "data": {"channel": "lobby"}}))
            reply = await recv_json(ws)
            check("subscribe reply carries id 1", reply.get("id") == 1 and reply["type"] == "reply", reply)

            status, body = http("POST", f"http://{addr}/api/publish", api_key,
                                {"channel": "lobby", "event": {"type": "notification",
                                                               "data": {"message": "hi", "level": "success"}}})
            check("HTTP publish with the printed key", status == 200, (status, body))
            message = await recv_json(ws)
            check("message arrives with offset 1",
                  message["type"] == "message" and message["data"]["offset"] == 1
                  and message["data"]["event"]["data"]["message"] == "hi", message)

            status, _ = http("GET", f"http://{addr}/api/stats")
            check("HTTP API without key is 401", status == 401, status)

            await ws.send("this is not json")
            error = await recv_json(ws)
            check("garbage gets error 4400", error["type"] == "error" and error["data"]["code"] == 4400, error)
            await ws.send(json.dumps({"type": "ping", "id": 9}))
            pong = await recv_json(ws)
            check("connection still answers ping", pong == {"type": "pong", "id": 9}, pong)

        try:
            async with websockets.connect(f"ws://{addr}/ws?token=nope") as ws:
                await asyncio.wait_for(ws.recv(), 5)
            check("bad token is closed", False, "no close")
        except websockets.ConnectionClosed as closed:
            check("bad token closes 4001", closed.rcvd and closed.rcvd.code == 4001, closed)

        minted = subprocess.run([BINARY, "token", "--sub", "alice", "--ttl", "60"],
                                env={**os.environ, "TIDINGS_JWT_SECRET": secret},
                                capture_output=True, text=True, check=True).stdout.strip()
        async with websockets.connect(f"ws://{addr}/ws?token={minted}") as ws:
            connected = await recv_json(ws)
            check("tidings token mints a working token", connected["data"]["user_id"] == "alice", connected)

            proc.send_signal(signal.SIGTERM)
            shutdown = await recv_json(ws)
            check("SIGTERM sends shutdown", shutdown["type"] == "shutdown", shutdown)
            try:
                await asyncio.wait_for(ws.recv(), 5)
                check("closed after shutdown", False, "no close")
            except websockets.ConnectionClosed as closed:
                check("then closes 1012", closed.rcvd and closed.rcvd.code == 1012, closed)
        code = proc.wait(timeout=15)
        check("the server exits 0", code == 0, code)
    finally:
        if proc.poll() is None:
            proc.kill()


asyncio.run(main())
passed = sum(1 for _, ok in results if ok)
failed = len(results) - passed
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
