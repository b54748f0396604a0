"""What the tests share: the real `tidings` binary on a free port, a webhook receiver it
delivers to, an ASGI app (the back end of `[proxy]`) served by uvicorn in a thread, and
small WebSocket clients (sync and asyncio) speaking docs/protocol.md."""

from __future__ import annotations

import asyncio
import http.server
import itertools
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, Optional, Tuple

from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as sync_connect

from tidings import mint_token

REPO = Path(__file__).resolve().parents[3]
JWT_SECRET = "test-jwt-secret-0123456789"
API_KEY = "test-api-key-0123456789"
WEBHOOK_SECRET = "whsec_test_0123456789"
RECV_TIMEOUT = 5.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary() -> Path:
    path = Path(os.environ.get("TIDINGS_BIN") or REPO / "target" / "debug" / "tidings")
    if not path.is_file():
        raise RuntimeError(
            f"no tidings binary at {path}: run `cargo build -p tidings-server --bin tidings` "
            "or set TIDINGS_BIN (scripts/test-python does both)"
        )
    return path


# ---------------------------------------------------------------- webhook receiver


@dataclass
class ReceivedWebhook:
    headers: Dict[str, str]
    body: bytes
    path: str

    def header(self, name: str) -> Optional[str]:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that answers every POST with 204 and keeps what came."""

    def __init__(self) -> None:
        self.received: List[ReceivedWebhook] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._cond:
                    receiver.received.append(ReceivedWebhook(dict(self.headers.items()), body, self.path))
                    receiver._cond.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(
        self, predicate: Callable[[ReceivedWebhook], bool], timeout: float = 10.0
    ) -> ReceivedWebhook:
        """The first received webhook (past or future) for which ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for hook in self.received[seen:]:
                    try:
                        if predicate(hook):
                            return hook
                    except (ValueError, KeyError, TypeError):
                        pass
                seen = len(self.received)
                left = deadline - time.monotonic()
                if left <= 0:
                    kinds = [h.header("X-Tidings-Event") for h in self.received[-20:]]
                    raise AssertionError(f"no matching webhook within {timeout}s; last kinds: {kinds}")
                self._cond.wait(left)


# ---------------------------------------------------------------- an ASGI back end


class AppServer:
    """An ASGI app (FastAPI) served by uvicorn on 127.0.0.1 in a thread of the tests."""

    def __init__(self, app: Any) -> None:
        import uvicorn  # the `test` extra

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        # Off the main thread uvicorn installs no signal handlers.
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def start(self) -> "AppServer":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


# ---------------------------------------------------------------- the server


@dataclass
class Server:
    base_url: str
    ws_url: str
    api_key: str
    jwt_secret: str
    webhook_secret: str
    receiver: Optional[WebhookReceiver]
    process: subprocess.Popen
    log: Path

    def token(self, user_id: str, **kwargs: Any) -> str:
        return mint_token(self.jwt_secret, user_id, **kwargs)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _config(receiver: Optional[WebhookReceiver]) -> str:
    if receiver is None:
        return ""
    return (
        "[[webhooks]]\n"
        f'url = "{receiver.url}"\n'
        f'secret = "{WEBHOOK_SECRET}"\n'
        "\n"
        "[webhook_delivery]\n"
        'poll_interval = "50ms"\n'
        'retry_min = "100ms"\n'
        'retry_max = "1s"\n'
        'timeout = "5s"\n'
    )


def _environment() -> Dict[str, str]:
    # Settings come from the flags and the file only, not from the caller's TIDINGS_*.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("TIDINGS_") and k != "DATABASE_URL"
    }
    env["RUST_LOG"] = os.environ.get("TIDINGS_TEST_LOG", "warn")
    # GET /api/status is served only when this is set (the route being added).
    env["TIDINGS_STATUS_ROUTE"] = "true"
    return env


def _healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def start_server(
    workdir: Path,
    receiver: Optional[WebhookReceiver],
    extra_config: str = "",
    attempts: int = 3,
) -> Server:
    """`tidings serve` with an in-memory store, in `workdir`, ready on /healthz; webhooks go
    to `receiver` (none without one); `extra_config` is appended to its TOML file."""
    config = workdir / "tidings.toml"
    config.write_text(_config(receiver) + extra_config)
    last_error = ""
    for attempt in range(attempts):
        port = free_port()
        log = workdir / f"tidings-{attempt}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [
                    str(binary()),
                    "serve",
                    "--bind", f"127.0.0.1:{port}",
                    "--ephemeral",
                    "--jwt-secret", JWT_SECRET,
                    "--api-key", API_KEY,
                    "--config", str(config),
                ],
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_environment(),
            )
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            if _healthy(base_url):
                return Server(
                    base_url=base_url,
                    ws_url=f"ws://127.0.0.1:{port}/ws",
                    api_key=API_KEY,
                    jwt_secret=JWT_SECRET,
                    webhook_secret=WEBHOOK_SECRET,
                    receiver=receiver,
                    process=process,
                    log=log,
                )
            time.sleep(0.05)
        stop_server(process)
        last_error = log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"tidings did not start:\n{last_error}")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


# ---------------------------------------------------------------- WebSocket clients


class _Frames:
    """Frames received but not yet asked for, so that waiting for one kind loses no other."""

    def __init__(self) -> None:
        self.backlog: List[Dict[str, Any]] = []
        self.ids = itertools.count(1)

    def take(self, match: Callable[[Dict[str, Any]], bool]) -> Optional[Dict[str, Any]]:
        for i, frame in enumerate(self.backlog):
            if match(frame):
                return self.backlog.pop(i)
        return None


def _matcher(type_: Optional[str], channel: Optional[str], where: Optional[Callable[[Dict[str, Any]], bool]]):
    def match(frame: Dict[str, Any]) -> bool:
        if type_ is not None and frame.get("type") != type_:
            return False
        if channel is not None and (frame.get("data") or {}).get("channel") != channel:
            return False
        return where is None or bool(where(frame))

    return match


class WsClient:
    """A blocking protocol client (websockets.sync)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames = _Frames()
        self.connected: Dict[str, Any] = {}

    def recv(self, timeout: float = RECV_TIMEOUT) -> Dict[str, Any]:
        return json.loads(self.ws.recv(timeout=timeout))

    def expect(
        self,
        type_: Optional[str] = None,
        *,
        channel: Optional[str] = None,
        where: Optional[Callable[[Dict[str, Any]], bool]] = None,
        timeout: float = RECV_TIMEOUT,
    ) -> Dict[str, Any]:
        match = _matcher(type_, channel, where)
        found = self.frames.take(match)
        deadline = time.monotonic() + timeout
        while found is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {type_} frame (channel {channel}); backlog {self.frames.backlog}")
            frame = self.recv(left)
            if match(frame):
                return frame
            self.frames.backlog.append(frame)
        return found

    def request(self, type_: str, data: Dict[str, Any]) -> Dict[str, Any]:
        request_id = next(self.frames.ids)
        self.ws.send(json.dumps({"type": type_, "id": request_id, "data": data}))
        return self.expect(where=lambda f: f.get("id") == request_id and f.get("type") in ("reply", "error"))

    def subscribe(self, channel: str) -> Dict[str, Any]:
        reply = self.request("subscribe", {"channel": channel})
        assert reply["type"] == "reply", reply
        return reply

    def close_code(self, timeout: float = RECV_TIMEOUT) -> Optional[int]:
        """Reads until the server closes; the close code it sent."""
        return self.closed(timeout)[0]

    def closed(self, timeout: float = RECV_TIMEOUT) -> Tuple[Optional[int], str]:
        """Reads until the server closes; the close code and reason it sent."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the server did not close the connection")
                self.frames.backlog.append(self.recv(left))
        except ConnectionClosed as closed:
            return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")


@contextmanager
def ws_client(server: Server, user_id: str, channels: tuple = (), token: Optional[str] = None) -> Iterator[WsClient]:
    url = f"{server.ws_url}?token={token or server.token(user_id)}"
    with sync_connect(url, subprotocols=["tidings.v1"], open_timeout=RECV_TIMEOUT) as ws:
        client = WsClient(ws)
        client.connected = client.expect("connected")["data"]
        for channel in channels:
            client.subscribe(channel)
        yield client


@contextmanager
def ws_open(
    server: Server, *, token: Optional[str] = None, headers: Optional[Dict[str, str]] = None
) -> Iterator[WsClient]:
    """A WebSocket to ``/ws`` with the token (none by default) and request headers given,
    its frames not yet read: admitted, its first frame is ``connected``; refused, the
    server closes it (:meth:`WsClient.closed`)."""
    url = server.ws_url if token is None else f"{server.ws_url}?token={token}"
    with sync_connect(
        url,
        subprotocols=["tidings.v1"],
        additional_headers=headers or {},
        open_timeout=RECV_TIMEOUT,
    ) as ws:
        yield WsClient(ws)


class AsyncWsClient:
    """An asyncio protocol client (websockets.asyncio)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames = _Frames()
        self.connected: Dict[str, Any] = {}

    async def recv(self, timeout: float = RECV_TIMEOUT) -> Dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def expect(
        self,
        type_: Optional[str] = None,
        *,
        channel: Optional[str] = None,
        where: Optional[Callable[[Dict[str, Any]], bool]] = None,
        timeout: float = RECV_TIMEOUT,
    ) -> Dict[str, Any]:
        match = _matcher(type_, channel, where)
        found = self.frames.take(match)
        deadline = time.monotonic() + timeout
        while found is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {type_} frame (channel {channel}); backlog {self.frames.backlog}")
            frame = await self.recv(left)
            if match(frame):
                return frame
            self.frames.backlog.append(frame)
        return found

    async def request(self, type_: str, data: Dict[str, Any]) -> Dict[str, Any]:
        request_id = next(self.frames.ids)
        await self.ws.send(json.dumps({"type": type_, "id": request_id, "data": data}))
        return await self.expect(where=lambda f: f.get("id") == request_id and f.get("type") in ("reply", "error"))

    async def subscribe(self, channel: str) -> Dict[str, Any]:
        reply = await self.request("subscribe", {"channel": channel})
        assert reply["type"] == "reply", reply
        return reply

    async def close_code(self, timeout: float = RECV_TIMEOUT) -> Optional[int]:
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the server did not close the connection")
                self.frames.backlog.append(await self.recv(left))
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


@asynccontextmanager
async def async_ws_client(
    server: Server, user_id: str, channels: tuple = (), token: Optional[str] = None
) -> AsyncIterator[AsyncWsClient]:
    url = f"{server.ws_url}?token={token or server.token(user_id)}"
    async with async_connect(url, subprotocols=["tidings.v1"], open_timeout=RECV_TIMEOUT) as ws:
        client = AsyncWsClient(ws)
        client.connected = (await client.expect("connected"))["data"]
        for channel in channels:
            await client.subscribe(channel)
        yield client


def eventually(check: Callable[[], bool], timeout: float = 5.0, interval: float = 0.05) -> bool:
    """Polls ``check`` until it holds (for state the server updates after a close)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


async def async_eventually(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(interval)
    return bool(await check())


__all__ = [
    "REPO",
    "Server",
    "WebhookReceiver",
    "ReceivedWebhook",
    "AppServer",
    "WsClient",
    "AsyncWsClient",
    "ws_client",
    "ws_open",
    "async_ws_client",
    "start_server",
    "stop_server",
    "unique",
    "free_port",
    "eventually",
    "async_eventually",
]
