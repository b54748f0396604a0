#!/usr/bin/env python3
"""The server side of the browser tests (crates/client-wasm/tests/web.rs).

Runs a real `tidings serve --dev` in a temporary directory and stands next to it:

* a TCP proxy in front of its WebSocket endpoint, so a test can cut every connection
  (the browser sees a dropped connection, 1006, while the server and its history stay up);
* a small HTTP control API with CORS headers, which the test page (another origin) calls:
    POST /publish  {"channel", "event"}  publish through the server's HTTP API (/api/publish)
    POST /drop                            abort every proxied connection
    POST /restart                         SIGTERM the server (it sends `shutdown` and closes
                                          with 1012), then start it again on the same port
                                          with the same dev secrets, so tokens stay valid
* the application's back end for `rpc` calls: the server's `[proxy] rpc` is this API's
  POST /rpc (see Backend).

Prints one JSON line, {"ws", "token", "helper", "api_key"}, once everything listens, then
serves until SIGTERM or SIGINT, and stops the server on the way out.

Usage: browser_helper.py PATH/TO/tidings WORKDIR
"""

import asyncio
import json
import os
import re
import signal
import sys
import urllib.request

# Fast restarts: clients are told to come back within 200 ms, and shutdown waits at most 2 s.
# RPC calls go to the control API (Backend), and wait at most 5 s for it.
CONFIG = (
    "shutdown_reconnect_spread = 200\nshutdown_deadline = 2000\n"
    '[proxy]\nrpc = "{rpc}"\ntimeout = 5000\n'
)


class Backend:
    """The application's back end for clients' `rpc` calls (unsigned JSON POSTs of
    {user_id, method, data, claims}). Methods:
      echo    answers {user_id, data}
      refuse  refuses (4003, "members only")
      hang    answers only after the proxy timeout (a drop or a 4503 comes first)
      calls   how many calls of {method, data} it has seen (to prove none was resent)
    any other method is unknown (4004).
    """

    def __init__(self):
        self.calls = []

    async def answer(self, body):
        request = json.loads(body)
        method, data = request.get("method"), request.get("data")
        self.calls.append([method, data])
        if method == "echo":
            return {"data": {"user_id": request.get("user_id"), "data": data}}
        if method == "refuse":
            return {"error": {"code": "forbidden", "message": "members only"}}
        if method == "hang":
            await asyncio.sleep(10)
            return {"data": "too late"}
        if method == "calls":
            wanted = [data.get("method"), data.get("data")] if isinstance(data, dict) else None
            return {"data": self.calls.count(wanted)}
        return {"error": {"code": "not_found", "message": f"no method {method}"}}


class Server:
    """The tidings process."""

    def __init__(self, binary, workdir, rpc_url):
        self.binary = binary
        self.workdir = workdir
        self.rpc_url = rpc_url
        self.process = None
        self.port = 0
        self.token = None
        self.api_key = None
        self.log = open(os.path.join(workdir, "tidings.log"), "ab")

    async def start(self):
        config = os.path.join(self.workdir, "tidings.toml")
        with open(config, "w") as f:
            f.write(CONFIG.format(rpc=self.rpc_url))
        self.process = await asyncio.create_subprocess_exec(
            self.binary, "serve", "--dev", "--bind", f"127.0.0.1:{self.port}",
            "--config", config,
            cwd=self.workdir, stdout=asyncio.subprocess.PIPE, stderr=self.log,
        )
        banner = ""
        while "HTTP API key:" not in banner:
            line = await asyncio.wait_for(self.process.stdout.readline(), 30)
            if not line:
                raise RuntimeError("tidings exited before printing its banner")
            banner += line.decode()
        self.port = int(re.search(r"dev server on http://127\.0\.0\.1:(\d+)", banner).group(1))
        self.token = re.search(r"/ws\?token=(\S+)", banner).group(1)
        self.api_key = re.search(r"HTTP API key: (\S+)", banner).group(1)
        asyncio.ensure_future(self._drain(self.process))

    async def _drain(self, process):
        while await process.stdout.readline():
            pass

    async def stop(self):
        if self.process and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()

    async def restart(self):
        await self.stop()
        await self.start()

    def publish(self, body):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/publish",
            data=body,
            headers={"Authorization": f"Bearer {self.api_key}",
                     "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


class Proxy:
    """Forwards TCP connections to the server's current port; can abort them all."""

    def __init__(self, server):
        self.server = server
        self.links = set()

    async def handle(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self.links.add(link)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self.links.discard(link)
            writer.transport.abort()
            up_writer.transport.abort()

    async def _pipe(self, reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    def drop(self):
        count = len(self.links)
        for down, up in list(self.links):
            down.transport.abort()
            up.transport.abort()
        return count


CORS = (
    "Access-Control-Allow-Origin: *\r\n"
    "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n"
    "Access-Control-Allow-Headers: Content-Type\r\n"
)


async def control(server, proxy, backend, reader, writer):
    """One HTTP/1.1 request of the control API."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        length = 0
        for line in lines[1:]:
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        body = await reader.readexactly(length) if length else b""
        status, payload = 200, b"{}"
        if method == "OPTIONS":
            status, payload = 204, b""
        elif path == "/publish":
            status, payload = await asyncio.to_thread(server.publish, body)
        elif path == "/drop":
            payload = json.dumps({"dropped": proxy.drop()}).encode()
        elif path == "/restart":
            await server.restart()
            payload = json.dumps({"port": server.port}).encode()
        elif path == "/rpc":
            payload = json.dumps(await backend.answer(body)).encode()
        else:
            status, payload = 404, b'{"error":"not found"}'
    except Exception as error:  # report, so the browser test sees why
        status, payload = 500, json.dumps({"error": repr(error)}).encode()
    response = (
        f"HTTP/1.1 {status} X\r\n{CORS}Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode() + payload
    try:
        writer.write(response)
        await writer.drain()
    except (ConnectionError, OSError):
        pass  # the caller gave up (an rpc answered after the proxy timeout)
    finally:
        writer.close()


async def main(binary, workdir):
    # The control API listens first, since the server's `[proxy] rpc` points at it (its
    # handler finds `server` and `proxy` when the first request comes, after the start).
    backend = Backend()
    control_server = await asyncio.start_server(
        lambda r, w: control(server, proxy, backend, r, w), "127.0.0.1", 0)
    control_port = control_server.sockets[0].getsockname()[1]
    server = Server(binary, workdir, f"http://127.0.0.1:{control_port}/rpc")
    proxy = Proxy(server)
    await server.start()
    proxy_server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    proxy_port = proxy_server.sockets[0].getsockname()[1]
    print(json.dumps({
        "ws": f"ws://127.0.0.1:{proxy_port}/ws",
        "token": server.token,
        "helper": f"http://127.0.0.1:{control_port}",
        "api_key": server.api_key,
    }), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    proxy.drop()
    await server.stop()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    asyncio.run(main(os.path.abspath(sys.argv[1]), sys.argv[2]))
