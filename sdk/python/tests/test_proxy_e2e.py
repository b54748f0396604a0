"""`[proxy]` end to end: a FastAPI app with tidings.fastapi.ProxyRouter served by uvicorn,
the real binary configured to ask it, and real WebSocket clients. One server proxies
subscribe, publish and rpc; another only connect."""

import asyncio
import json
import threading
import time
from typing import Dict, Iterator, List

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fastapi import FastAPI, HTTPException  # noqa: E402

from tidings.fastapi import ProxyRouter  # noqa: E402
from tidings.proxy import (  # noqa: E402
    ConnectRequest,
    ProxyRequest,
    PublishRequest,
    Refused,
    RpcRequest,
    SubscribeRequest,
    admit,
    deny,
    replace,
)
from tidings_testkit import (  # noqa: E402
    AppServer,
    Server,
    start_server,
    stop_server,
    unique,
    ws_client,
    ws_open,
)

PROXY_SECRET = "proxy-secret-e2e-0123"
PROXY_TIMEOUT = 1.0  # seconds: `proxy.timeout`
SLOW = PROXY_TIMEOUT + 1.0


class Seen:
    """Every request the app's handlers got (verified by the router), thread-safe."""

    def __init__(self) -> None:
        self.calls: List[ProxyRequest] = []
        self._lock = threading.Lock()

    def add(self, request: ProxyRequest) -> None:
        with self._lock:
            self.calls.append(request)

    def of(self, cls: type) -> List[ProxyRequest]:
        with self._lock:
            return [c for c in self.calls if isinstance(c, cls)]


def build_app(seen: Seen) -> FastAPI:
    router = ProxyRouter(secret=PROXY_SECRET, prefix="/tidings")

    @router.on_subscribe
    def subscribe(request: SubscribeRequest):  # sync: run in the thread pool
        seen.add(request)
        if request.channel.startswith("private-"):
            return deny("not your ticket")
        if request.channel.startswith("closed-"):
            raise Refused("closed ticket")
        return None

    @router.on_publish
    async def publish(request: PublishRequest):  # async
        seen.add(request)
        data = request.event.data if isinstance(request.event.data, dict) else {}
        if "spam" in str(data.get("content", "")):
            raise Refused("no spam here")
        role = request.claims.get("role", "customer")
        return replace(request.event.type, {**data, "sender_role": role})

    @router.rpc("motivation_requested")
    def motivation(request: RpcRequest):
        seen.add(request)
        return {
            "message": f"Keep going, {request.user_id}!",
            "mood": (request.data or {}).get("mood"),
            "role": request.claims.get("role"),
        }

    @router.rpc
    async def slow(request: RpcRequest):
        await asyncio.sleep(SLOW)
        return "too late"

    @router.rpc("admins_only")
    def admins_only(request: RpcRequest):
        raise Refused("admins only")

    app = FastAPI()
    app.include_router(router)
    return app


@pytest.fixture(scope="module")
def seen() -> Seen:
    return Seen()


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory, seen: Seen) -> Iterator[Server]:
    app = AppServer(build_app(seen)).start()
    config = (
        "[proxy]\n"
        f'subscribe = "{app.url}/tidings/subscribe"\n'
        f'publish = "{app.url}/tidings/publish"\n'
        f'rpc = "{app.url}/tidings/rpc"\n'
        f'secret = "{PROXY_SECRET}"\n'
        f'timeout = "{int(PROXY_TIMEOUT * 1000)}ms"\n'
        "retries = 0\n"
    )
    try:
        running = start_server(tmp_path_factory.mktemp("tidings-proxy"), None, extra_config=config)
    except BaseException:
        app.stop()
        raise
    yield running
    stop_server(running.process)
    app.stop()


def error_of(frame):
    assert frame["type"] == "error", frame
    return frame["data"]["code"], frame["data"]["message"]


def test_the_app_decides_who_subscribes(proxied, seen):
    user = unique("alice")
    channel = unique("ticket")
    with ws_client(proxied, user) as ws:
        assert ws.request("subscribe", {"channel": channel})["type"] == "reply"
        assert error_of(ws.request("subscribe", {"channel": unique("private")})) == (4003, "not your ticket")
        assert error_of(ws.request("subscribe", {"channel": unique("closed")})) == (4003, "closed ticket")
        # History asks too, and the connection lives on.
        assert error_of(ws.request("history", {"channel": unique("private")}))[0] == 4003
        assert ws.request("subscribe", {"channel": unique("ticket")})["type"] == "reply"

    asked = [c for c in seen.of(SubscribeRequest) if c.user_id == user]
    assert asked[0].channel == channel
    assert asked[0].claims["sub"] == user and "exp" in asked[0].claims
    # The personal channel is the built-in policy's: never asked.
    assert all(not c.channel.startswith("user:") for c in asked)


def test_the_app_enriches_a_publication_another_subscriber_receives(proxied, seen):
    channel = unique("ticket")
    writer, reader = unique("alice"), unique("bob")
    token = proxied.token(writer, claims={"role": "agent"})
    with ws_client(proxied, reader, channels=(channel,)) as bob, ws_client(
        proxied, writer, channels=(channel,), token=token
    ) as alice:
        event = {"type": "chat_message", "data": {"id": "m1", "content": "hello"}}
        reply = alice.request("publish", {"channel": channel, "event": event})
        assert reply["type"] == "reply", reply

        got = bob.expect("message", channel=channel)["data"]
        assert got["sender"] == writer
        assert got["event"]["type"] == "chat_message"
        assert got["event"]["data"] == {"id": "m1", "content": "hello", "sender_role": "agent"}

        spam = {"type": "chat_message", "data": {"id": "m2", "content": "buy spam"}}
        assert error_of(alice.request("publish", {"channel": channel, "event": spam})) == (4003, "no spam here")
        # Nothing of it reaches the subscriber: the next one to arrive is the next allowed.
        after = {"type": "chat_message", "data": {"id": "m3", "content": "after"}}
        assert alice.request("publish", {"channel": channel, "event": after})["type"] == "reply"
        assert bob.expect("message", channel=channel)["data"]["event"]["data"]["id"] == "m3"

    published = [c for c in seen.of(PublishRequest) if c.user_id == writer]
    assert [c.event.data["id"] for c in published] == ["m1", "m2", "m3"]
    assert published[0].channel == channel and published[0].claims["role"] == "agent"


def test_the_back_ends_own_publications_are_not_proxied(proxied, seen):
    from tidings import Tidings

    channel = unique("ticket")
    with Tidings(proxied.base_url, api_key=proxied.api_key, timeout=5) as api:
        api.publish(channel, "chat_message", {"id": "b1", "content": "spam from the back end"})
    assert all(c.channel != channel for c in seen.of(PublishRequest))


def test_rpc_is_answered_by_its_handler(proxied):
    user = unique("alice")
    with ws_client(proxied, user, token=proxied.token(user, claims={"role": "customer"})) as ws:
        reply = ws.request("rpc", {"method": "motivation_requested", "data": {"mood": "tired"}})
        assert reply["type"] == "reply", reply
        assert reply["data"] == {
            "kind": "rpc",
            "data": {"message": f"Keep going, {user}!", "mood": "tired", "role": "customer"},
        }
        # No `data` in the frame: the handler gets None.
        bare = ws.request("rpc", {"method": "motivation_requested"})
        assert bare["data"]["data"]["mood"] is None


def test_unknown_methods_and_refusals_are_typed(proxied):
    with ws_client(proxied, unique("alice")) as ws:
        code, message = error_of(ws.request("rpc", {"method": "no_such_method"}))
        assert code == 4004 and "no_such_method" in message
        assert error_of(ws.request("rpc", {"method": "admins_only"})) == (4003, "admins only")


def test_a_handler_slower_than_the_proxy_timeout_is_a_retryable_4503(proxied):
    with ws_client(proxied, unique("alice")) as ws:
        started = time.monotonic()
        slow_id = next(ws.frames.ids)
        ws.ws.send(json.dumps({"type": "rpc", "id": slow_id, "data": {"method": "slow"}}))
        # The connection reads on meanwhile: a fast call is answered first.
        fast = ws.request("rpc", {"method": "motivation_requested", "data": {"mood": "ok"}})
        assert fast["type"] == "reply"
        late = ws.expect(where=lambda f: f.get("id") == slow_id, timeout=SLOW + 3)
        elapsed = time.monotonic() - started
        assert error_of(late)[0] == 4503
        assert PROXY_TIMEOUT - 0.1 <= elapsed < SLOW, elapsed
        assert ws.request("rpc", {"method": "admins_only"})["type"] == "error"  # still open


# ---------------------------------------------------------------- connect


class Sessions:
    """The app's session store (cookie value -> user id) and the connect calls it got."""

    def __init__(self) -> None:
        self.users: Dict[str, str] = {}
        self.seen = Seen()

    def login(self, user_id: str) -> str:
        session = unique("session")
        self.users[session] = user_id
        return session

    def calls(self, where) -> List[ConnectRequest]:
        return [c for c in self.seen.of(ConnectRequest) if where(c)]


def build_connect_app(sessions: Sessions) -> FastAPI:
    router = ProxyRouter(secret=PROXY_SECRET, prefix="/tidings")

    @router.on_connect
    async def connect(request: ConnectRequest):
        sessions.seen.add(request)
        if request.user_id is None:  # no token: who is it by its session cookie?
            session = request.cookie("session")
            if session is None:
                raise Refused("log in first")
            if session.startswith("broken"):
                raise RuntimeError("the session store is down")  # a 500: 4500
            user = sessions.users.get(session)
            if user is None:
                raise HTTPException(status_code=403, detail="session expired")
            if user.startswith("dave"):
                return admit(user, channels=["ticket:*"])
            return user
        if request.user_id.startswith("mallory"):
            return deny("banned")
        if request.user_id.startswith("carol"):
            return admit(channels=["ticket:9", "team:*"])
        return None  # admitted as the token says

    app = FastAPI()
    app.include_router(router)
    return app


@pytest.fixture(scope="module")
def sessions() -> Sessions:
    return Sessions()


@pytest.fixture(scope="module")
def connect_proxied(tmp_path_factory: pytest.TempPathFactory, sessions: Sessions) -> Iterator[Server]:
    app = AppServer(build_connect_app(sessions)).start()
    config = (
        "[proxy]\n"
        f'connect = "{app.url}/tidings/connect"\n'
        f'secret = "{PROXY_SECRET}"\n'
        f'timeout = "{int(PROXY_TIMEOUT * 1000)}ms"\n'
        "retries = 2\n"  # for a down app: a 500 is never tried again
    )
    try:
        running = start_server(tmp_path_factory.mktemp("tidings-connect"), None, extra_config=config)
    except BaseException:
        app.stop()
        raise
    yield running
    stop_server(running.process)
    app.stop()


def test_a_session_cookie_admits_a_client_without_a_token(connect_proxied, sessions):
    from tidings import Tidings

    user = unique("bob")
    session = sessions.login(user)
    headers = {"Cookie": f"theme=dark; session={session}", "Origin": "https://app.example.com"}
    with ws_open(connect_proxied, headers=headers) as ws:
        connected = ws.expect("connected")["data"]
        assert connected["user_id"] == user
        # The connection is that user's: its personal channel, and the HTTP API sees it.
        ws.subscribe(f"user:{user}")
        assert ws.request("subscribe", {"channel": unique("lobby")})["type"] == "reply"
        with Tidings(connect_proxied.base_url, api_key=connect_proxied.api_key, timeout=5) as api:
            assert api.is_user_connected(user)

    [call] = sessions.calls(lambda c: c.cookie("session") == session)
    assert (call.user_id, call.claims, call.has_token, call.path) == (None, None, False, "/ws")
    assert call.header("origin") == "https://app.example.com"
    assert call.header("user-agent")  # websockets sends one


def test_a_client_with_a_token_is_admitted_as_the_token_says(connect_proxied, sessions):
    user = unique("alice")
    token = connect_proxied.token(user, claims={"role": "agent"})
    with ws_client(connect_proxied, user, token=token) as ws:
        assert ws.connected["user_id"] == user
    [call] = sessions.calls(lambda c: c.user_id == user)
    assert call.has_token and call.claims["sub"] == user and call.claims["role"] == "agent"
    assert call.cookies == {}


def test_refused_connections_close_with_4003_and_the_reason(connect_proxied, sessions):
    # No token and no session; a banned user's token; a session the app no longer knows
    # (FastAPI's HTTPException(403): its detail is the reason).
    with ws_open(connect_proxied) as ws:
        assert ws.closed() == (4003, "log in first")
    with ws_open(connect_proxied, token=connect_proxied.token(unique("mallory"))) as ws:
        assert ws.closed() == (4003, "banned")
    with ws_open(connect_proxied, headers={"Cookie": f"session={unique('gone')}"}) as ws:
        assert ws.closed() == (4003, "session expired")
    # Nothing was admitted: no frame came before the close.
    assert ws.frames.backlog == []


def test_granted_channels_limit_what_a_connection_may_use(connect_proxied, sessions):
    # A token without a channels claim, limited by the connect answer.
    carol = unique("carol")
    with ws_client(connect_proxied, carol) as ws:
        ws.subscribe("ticket:9")
        ws.subscribe(unique("team:"))
        assert error_of(ws.request("subscribe", {"channel": "ticket:10"}))[0] == 4003
        assert error_of(ws.request("subscribe", {"channel": unique("lobby")}))[0] == 4003
        # The connection lives on after a refusal.
        ws.subscribe("ticket:9")
    # A session user, named and limited by the same answer.
    dave = unique("dave")
    with ws_open(connect_proxied, headers={"Cookie": f"session={sessions.login(dave)}"}) as ws:
        assert ws.expect("connected")["data"]["user_id"] == dave
        ws.subscribe(unique("ticket:"))
        assert error_of(ws.request("subscribe", {"channel": unique("lobby")}))[0] == 4003


def test_a_failing_connect_handler_closes_with_4500_and_is_not_retried(connect_proxied, sessions):
    session = unique("broken")
    with ws_open(connect_proxied, headers={"Cookie": f"session={session}"}) as ws:
        assert ws.close_code() == 4500
    # retries = 2 tries a down app again; a 500 (the handler raised) only once.
    assert len(sessions.calls(lambda c: c.cookie("session") == session)) == 1
