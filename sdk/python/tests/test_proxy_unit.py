"""tidings.proxy without a server: the request and answer models, verify_and_parse, and the
FastAPI ProxyRouter driven in-process (httpx's ASGI transport)."""

import asyncio
import json
import time

import pytest

from tidings.errors import (
    ProxyRequestError,
    SignatureFormatError,
    SignatureMismatchError,
    SignatureTimestampError,
    WebhookSignatureError,
)
from tidings.models import Event
from tidings.proxy import (
    ANSWER_FIELDS,
    PROXY_HEADER,
    PROXY_KINDS,
    SIGNATURE_HEADER,
    ConnectRequest,
    ProxyAnswer,
    PublishRequest,
    Refused,
    RpcRequest,
    SubscribeRequest,
    admit,
    allow,
    deny,
    parse_request,
    replace,
    rpc_error,
    rpc_result,
    sign,
    verify_and_parse,
)

SECRET = "proxy-secret-0123"
NOW = 1_790_000_000
CLAIMS = {"sub": "alice", "exp": NOW + 3600, "role": "agent", "channels": ["ticket:*"]}
SUBSCRIBE = json.dumps({"user_id": "alice", "channel": "ticket:1", "claims": CLAIMS}).encode()
PUBLISH = json.dumps(
    {
        "user_id": "alice",
        "channel": "ticket:1",
        "event": {"type": "chat_message", "data": {"id": "m1", "content": "hi"}},
        "claims": CLAIMS,
    }
).encode()
RPC = json.dumps({"user_id": "alice", "method": "m", "data": {"mood": "tired"}, "claims": CLAIMS}).encode()
# What the server sends for a client with a token, and for one with only a session cookie.
CONNECT = json.dumps(
    {"user_id": "alice", "claims": CLAIMS, "path": "/ws", "headers": {"user-agent": "test"}}
).encode()
CONNECT_COOKIE = json.dumps(
    {
        "user_id": None,
        "claims": None,
        "path": "/ws",
        "headers": {
            "cookie": 'theme=dark; session="bob-session"; theme=light',
            "origin": "https://app.example.com",
            "x-forwarded-for": "203.0.113.7",
        },
    }
).encode()


def headers(kind, body, secret=SECRET, timestamp=NOW):
    return {
        "Content-Type": "application/json",
        PROXY_HEADER: kind,
        SIGNATURE_HEADER: sign(secret, body, timestamp=timestamp),
    }


# ---------------------------------------------------------------- requests


def test_each_kind_parses_into_its_model():
    sub = verify_and_parse(SECRET, headers("subscribe", SUBSCRIBE), SUBSCRIBE, now=NOW)
    assert isinstance(sub, SubscribeRequest) and sub.kind == "subscribe"
    assert (sub.user_id, sub.channel) == ("alice", "ticket:1")
    assert sub.claims["role"] == "agent" and sub.claims["channels"] == ["ticket:*"]

    pub = verify_and_parse(SECRET, headers("publish", PUBLISH), PUBLISH, now=NOW)
    assert isinstance(pub, PublishRequest)
    assert isinstance(pub.event, Event)
    assert (pub.event.type, pub.event.data) == ("chat_message", {"id": "m1", "content": "hi"})

    rpc = verify_and_parse(SECRET, headers("rpc", RPC), RPC, now=NOW)
    assert isinstance(rpc, RpcRequest)
    assert (rpc.method, rpc.data, rpc.user_id) == ("m", {"mood": "tired"}, "alice")

    connect = verify_and_parse(SECRET, headers("connect", CONNECT), CONNECT, kind="connect", now=NOW)
    assert isinstance(connect, ConnectRequest) and connect.kind == "connect"
    assert (connect.user_id, connect.path, connect.has_token) == ("alice", "/ws", True)
    assert connect.claims["role"] == "agent" and connect.headers == {"user-agent": "test"}
    assert PROXY_KINDS == ("connect", "subscribe", "publish", "rpc")


def test_a_connect_without_a_token_has_no_user_and_reads_its_cookies():
    connect = verify_and_parse(SECRET, headers("connect", CONNECT_COOKIE), CONNECT_COOKIE, now=NOW)
    assert isinstance(connect, ConnectRequest)
    assert (connect.user_id, connect.claims, connect.has_token) == (None, None, False)
    # The first of a repeated cookie wins; quotes are removed.
    assert connect.cookies == {"theme": "dark", "session": "bob-session"}
    assert connect.cookie("session") == "bob-session" and connect.cookie("nope") is None
    assert connect.cookie("nope", "x") == "x"
    assert connect.header("Origin") == "https://app.example.com"
    assert connect.header("X-Forwarded-For") == "203.0.113.7"
    assert connect.header("user-agent") is None
    # Fields a newer server adds are kept; headers and path have defaults.
    bare = parse_request("connect", {"user_id": None, "claims": None, "trace": "t1"})
    assert (bare.path, bare.headers, bare.cookies, bare.model_extra) == ("/ws", {}, {}, {"trace": "t1"})
    assert parse_request("connect", {"headers": {"cookie": "junk; =x; a=1"}}).cookies == {"a": "1"}


def test_headers_are_read_whatever_their_case_and_text_bodies_work():
    lowered = {k.lower(): v for k, v in headers("rpc", RPC).items()}
    assert verify_and_parse(SECRET, lowered, RPC.decode(), now=NOW).method == "m"


def test_optional_fields_and_fields_a_newer_server_adds():
    rpc = parse_request("rpc", {"user_id": "u", "method": "m", "claims": {}, "trace": "t1"})
    assert rpc.data is None and rpc.model_extra == {"trace": "t1"}
    sub = parse_request("subscribe", {"user_id": "u", "channel": "c"})
    assert sub.claims == {}
    pub = parse_request("publish", {"user_id": "u", "channel": "c", "event": {"type": "x"}})
    assert pub.event.data is None


def test_the_signature_is_checked_first():
    with pytest.raises(SignatureMismatchError):
        verify_and_parse(SECRET, headers("subscribe", SUBSCRIBE, secret="other"), SUBSCRIBE, now=NOW)
    tampered = SUBSCRIBE.replace(b"ticket:1", b"ticket:9")
    with pytest.raises(SignatureMismatchError):
        verify_and_parse(SECRET, headers("subscribe", SUBSCRIBE), tampered, now=NOW)
    with pytest.raises(SignatureTimestampError):
        verify_and_parse(SECRET, headers("subscribe", SUBSCRIBE), SUBSCRIBE, now=NOW + 3600)
    unsigned = {PROXY_HEADER: "subscribe"}
    with pytest.raises(SignatureFormatError):
        verify_and_parse(SECRET, unsigned, SUBSCRIBE, now=NOW)
    # Rotating: either secret verifies; tolerance=None skips the clock.
    assert verify_and_parse(["new", SECRET], headers("subscribe", SUBSCRIBE), SUBSCRIBE, tolerance=None)


def test_without_a_secret_only_when_asked_for():
    plain = {PROXY_HEADER: "subscribe"}
    with pytest.raises(ValueError, match="unsigned=True"):
        verify_and_parse(None, plain, SUBSCRIBE)
    assert verify_and_parse(None, plain, SUBSCRIBE, unsigned=True).channel == "ticket:1"
    # A secret given is always checked.
    with pytest.raises(WebhookSignatureError):
        verify_and_parse(SECRET, plain, SUBSCRIBE, unsigned=True)


def test_the_kind_header_must_be_known_and_match_the_route():
    with pytest.raises(ProxyRequestError, match="subscribe route"):
        verify_and_parse(SECRET, headers("rpc", SUBSCRIBE), SUBSCRIBE, kind="subscribe", now=NOW)
    with pytest.raises(ProxyRequestError, match="connect route"):
        verify_and_parse(SECRET, headers("subscribe", SUBSCRIBE), SUBSCRIBE, kind="connect", now=NOW)
    with pytest.raises(ProxyRequestError, match="invalid connect"):
        verify_and_parse(SECRET, headers("connect", b'{"path": 1}'), b'{"path": 1}', now=NOW)
    missing = {SIGNATURE_HEADER: sign(SECRET, SUBSCRIBE, timestamp=NOW)}
    with pytest.raises(ProxyRequestError):
        verify_and_parse(SECRET, missing, SUBSCRIBE, now=NOW)
    with pytest.raises(ProxyRequestError):
        verify_and_parse(SECRET, headers("presence", SUBSCRIBE), SUBSCRIBE, now=NOW)
    # A body of the wrong kind, or no JSON at all: also a ValueError.
    with pytest.raises(ProxyRequestError, match="invalid rpc"):
        verify_and_parse(SECRET, headers("rpc", SUBSCRIBE), SUBSCRIBE, now=NOW)
    with pytest.raises(ValueError, match="not JSON"):
        verify_and_parse(SECRET, headers("rpc", b"{nope"), b"{nope", now=NOW)


# ---------------------------------------------------------------- answers


def test_answers_send_only_what_was_set():
    assert allow().to_dict() == {}
    assert deny("not your ticket").to_dict() == {"allow": False, "message": "not your ticket"}
    assert replace("chat_message", {"id": "m1", "sender_role": "agent"}).to_dict() == {
        "event": {"type": "chat_message", "data": {"id": "m1", "sender_role": "agent"}}
    }
    assert rpc_result(None).to_dict() == {"data": None}
    assert rpc_result([1, "two"]).to_dict() == {"data": [1, "two"]}
    assert rpc_error("not_found", "no such method").to_dict() == {
        "error": {"code": "not_found", "message": "no such method"}
    }
    assert json.loads(deny("x").to_json()) == {"allow": False, "message": "x"}
    assert deny().refused and rpc_error("forbidden").refused and not allow().refused


def test_admit_names_the_user_and_limits_the_channels():
    assert admit().to_dict() == {}
    assert admit("bob").to_dict() == {"user_id": "bob"}
    assert admit(channels=["ticket:9", "team:*"]).to_dict() == {"channels": ["ticket:9", "team:*"]}
    assert admit("bob", ("lobby",)).to_dict() == {"user_id": "bob", "channels": ["lobby"]}
    assert admit(channels=[]).to_dict() == {"channels": []}  # no channel at all
    assert json.loads(admit("bob").to_json()) == {"user_id": "bob"}
    assert not admit("bob").refused
    with pytest.raises(ValueError):
        admit("")
    with pytest.raises(ValueError):
        admit(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        admit(channels="ticket:*")  # type: ignore[arg-type]
    assert ProxyAnswer.model_validate({"user_id": "bob", "channels": ["a*"]}).to_dict() == {
        "user_id": "bob",
        "channels": ["a*"],
    }


def test_an_answer_never_sends_a_field_the_server_does_not_read():
    assert tuple(ProxyAnswer.model_fields) == ANSWER_FIELDS
    everything = ProxyAnswer(
        allow=True,
        message="m",
        event=Event(type="t", data=1, stray="x"),
        data={"any": "json"},
        error={"code": "c", "message": "m", "stray": "x"},
        user_id="u",
        channels=["c"],
    ).to_dict()
    assert list(everything) == list(ANSWER_FIELDS)
    assert everything["event"] == {"type": "t", "data": 1}
    assert everything["error"] == {"code": "c", "message": "m"}
    # Extra fields are refused when built, dropped when constructed unchecked.
    with pytest.raises(ValueError):
        ProxyAnswer(allowed=False)
    assert ProxyAnswer.model_construct(allowed=False, allow=False).to_dict() == {"allow": False}
    # A request's event, extras and all, goes back as {type, data}.
    pub = parse_request("publish", {"user_id": "u", "channel": "c", "event": {"type": "x", "v": 2}})
    assert ProxyAnswer(event=pub.event).to_dict() == {"event": {"type": "x", "data": None}}


def test_rpc_results_dump_pydantic_models():
    assert rpc_result(Event(type="t", data={"n": 1})).to_dict() == {"data": {"type": "t", "data": {"n": 1}}}


def test_an_answer_reads_back_as_the_server_would():
    answer = ProxyAnswer.model_validate({"allow": False, "message": "m"})
    assert answer.refused and answer.to_dict() == {"allow": False, "message": "m"}
    with pytest.raises(ValueError):
        ProxyAnswer.model_validate({"allowed": False})  # a typo is not silently an allow


def test_refused_answers_each_kind():
    assert Refused("no").answer("subscribe").to_dict() == {"allow": False, "message": "no"}
    assert Refused("no").answer("publish").to_dict() == {"allow": False, "message": "no"}
    assert Refused("log in first").answer("connect").to_dict() == {"allow": False, "message": "log in first"}
    assert Refused("no").answer("rpc").to_dict() == {"error": {"code": "forbidden", "message": "no"}}
    assert Refused("later", code="unavailable").answer("rpc").to_dict()["error"]["code"] == "unavailable"


# ---------------------------------------------------------------- the FastAPI router


@pytest.fixture
def router_app():
    pytest.importorskip("fastapi")
    from fastapi import FastAPI

    from tidings.fastapi import ProxyRouter

    router = ProxyRouter(secret=SECRET, prefix="/tidings")

    @router.on_connect
    async def connect(request: ConnectRequest):
        if request.user_id is None:
            session = request.cookie("session")
            if session == "bob-session":
                return "bob"
            if session == "carol-session":
                return admit("carol", channels=["ticket:9"])
            if session == "wrong":
                return rpc_result({"user_id": "x"})  # a field connect does not read: a 500
            raise Refused("log in first")
        if request.user_id == "mallory":
            return False
        return True

    @router.on_subscribe
    def subscribe(request: SubscribeRequest):
        if request.channel == "ticket:2":
            raise Refused("not your ticket")
        if request.channel == "ticket:3":
            return False
        if request.channel == "ticket:4":
            return "yes"  # not an answer: a 500
        if request.channel == "ticket:5":
            return admit("bob")  # a connect answer: a 500
        return None

    @router.on_publish
    async def publish(request: PublishRequest):
        await asyncio.sleep(0)
        return Event(type=request.event.type, data={**request.event.data, "sender_role": request.claims["role"]})

    @router.rpc("m")
    def m(request: RpcRequest):
        return {"echo": request.data, "user": request.user_id}

    @router.rpc
    async def nothing(request: RpcRequest):
        return None

    @router.rpc("typed_error")
    def typed_error(request: RpcRequest):
        return rpc_error("unavailable", "try later")

    app = FastAPI()
    app.include_router(router)
    return app, router


async def post(app, path, kind, body, *, secret=SECRET, timestamp=None, header=None):
    import httpx

    h = headers(kind, body, secret=secret, timestamp=timestamp or int(time.time()))
    if header is not None:
        h[SIGNATURE_HEADER] = header
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        return await http.post(path, content=body, headers=h)


async def test_the_router_answers_each_kind(router_app):
    app, router = router_app
    assert router.rpc_methods == ["m", "nothing", "typed_error"]

    ok = await post(app, "/tidings/subscribe", "subscribe", SUBSCRIBE)
    assert (ok.status_code, ok.json()) == (200, {})
    assert ok.headers["content-type"] == "application/json"
    denied = SUBSCRIBE.replace(b"ticket:1", b"ticket:2")
    assert (await post(app, "/tidings/subscribe", "subscribe", denied)).json() == {
        "allow": False,
        "message": "not your ticket",
    }
    false = SUBSCRIBE.replace(b"ticket:1", b"ticket:3")
    assert (await post(app, "/tidings/subscribe", "subscribe", false)).json()["allow"] is False
    wrong = SUBSCRIBE.replace(b"ticket:1", b"ticket:4")
    assert (await post(app, "/tidings/subscribe", "subscribe", wrong)).status_code == 500
    misplaced = SUBSCRIBE.replace(b"ticket:1", b"ticket:5")
    assert (await post(app, "/tidings/subscribe", "subscribe", misplaced)).status_code == 500

    enriched = await post(app, "/tidings/publish", "publish", PUBLISH)
    assert enriched.json() == {
        "event": {"type": "chat_message", "data": {"id": "m1", "content": "hi", "sender_role": "agent"}}
    }

    assert (await post(app, "/tidings/rpc", "rpc", RPC)).json() == {
        "data": {"echo": {"mood": "tired"}, "user": "alice"}
    }
    nothing = RPC.replace(b'"method": "m"', b'"method": "nothing"')
    assert (await post(app, "/tidings/rpc", "rpc", nothing)).json() == {"data": None}
    typed = RPC.replace(b'"method": "m"', b'"method": "typed_error"')
    assert (await post(app, "/tidings/rpc", "rpc", typed)).json()["error"]["code"] == "unavailable"
    unknown = RPC.replace(b'"method": "m"', b'"method": "nope"')
    answer = (await post(app, "/tidings/rpc", "rpc", unknown)).json()
    assert answer["error"]["code"] == "not_found" and "nope" in answer["error"]["message"]


def connect_body(user_id=None, cookie=None):
    headers = {"user-agent": "test"}
    if cookie is not None:
        headers["cookie"] = cookie
    claims = None if user_id is None else {"sub": user_id, "exp": NOW}
    return json.dumps({"user_id": user_id, "claims": claims, "path": "/ws", "headers": headers}).encode()


async def test_the_router_admits_names_and_refuses_connections(router_app):
    app, _ = router_app

    async def connect(body):
        answer = await post(app, "/tidings/connect", "connect", body)
        return answer.status_code, (answer.json() if answer.status_code == 200 else None)

    # A token: as is (True). No token: the user its session cookie names (a str).
    assert await connect(connect_body("alice")) == (200, {})
    assert await connect(connect_body(cookie="session=bob-session")) == (200, {"user_id": "bob"})
    assert await connect(connect_body(cookie="a=1; session=carol-session")) == (
        200,
        {"user_id": "carol", "channels": ["ticket:9"]},
    )
    # Refused (raised) and False both deny: 4003.
    assert await connect(connect_body()) == (200, {"allow": False, "message": "log in first"})
    assert await connect(connect_body("mallory")) == (200, {"allow": False, "message": "refused by the back end"})
    # An answer with a field connect does not read is the handler's mistake.
    assert (await connect(connect_body(cookie="session=wrong")))[0] == 500
    # The connect route takes connect calls only.
    assert (await post(app, "/tidings/connect", "subscribe", SUBSCRIBE)).status_code == 400
    assert (await post(app, "/tidings/subscribe", "connect", CONNECT)).status_code == 400


async def test_the_router_refuses_what_does_not_verify(router_app):
    app, _ = router_app
    tampered = await post(app, "/tidings/subscribe", "subscribe", SUBSCRIBE, secret="someone-else")
    assert tampered.status_code == 401 and "signature" in tampered.json()["detail"]
    stale = await post(app, "/tidings/subscribe", "subscribe", SUBSCRIBE, timestamp=NOW - 3600)
    assert stale.status_code == 401
    garbled = await post(app, "/tidings/rpc", "rpc", RPC, header="t=1,v1=00")
    assert garbled.status_code == 401
    no_header = await post(app, "/tidings/rpc", "rpc", RPC, header="")
    assert no_header.status_code == 401
    # Signed, but the kind of another route, or not that kind's body.
    assert (await post(app, "/tidings/rpc", "subscribe", SUBSCRIBE)).status_code == 400
    assert (await post(app, "/tidings/rpc", "rpc", SUBSCRIBE)).status_code == 400


async def test_no_handler_allows_and_an_unsigned_router_must_say_so():
    pytest.importorskip("fastapi")
    from fastapi import FastAPI

    from tidings.fastapi import ProxyRouter

    with pytest.raises(ValueError, match="secret"):
        ProxyRouter(secret=None)
    router = ProxyRouter(secret=None, unsigned=True)
    app = FastAPI()
    app.include_router(router)

    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        # Admitted as is: the server closes a client without a token with 4001 then.
        con = await http.post("/connect", content=CONNECT_COOKIE, headers={PROXY_HEADER: "connect"})
        assert (con.status_code, con.json()) == (200, {})
        sub = await http.post("/subscribe", content=SUBSCRIBE, headers={PROXY_HEADER: "subscribe"})
        assert (sub.status_code, sub.json()) == (200, {})
        pub = await http.post("/publish", content=PUBLISH, headers={PROXY_HEADER: "publish"})
        assert pub.json() == {}
        rpc = await http.post("/rpc", content=RPC, headers={PROXY_HEADER: "rpc"})
        assert rpc.json()["error"]["code"] == "not_found"


def test_handlers_are_registered_once():
    pytest.importorskip("fastapi")
    from tidings.fastapi import ProxyRouter

    router = ProxyRouter(secret=SECRET)
    router.on_connect(lambda request: None)
    with pytest.raises(ValueError):
        router.on_connect(lambda request: None)
    router.on_subscribe(lambda request: None)
    with pytest.raises(ValueError):
        router.on_subscribe(lambda request: None)
    router.rpc("a")(lambda request: None)
    with pytest.raises(ValueError):
        router.rpc("a")(lambda request: None)
    with pytest.raises(ValueError):
        router.rpc("")(lambda request: None)


def test_handler_results_become_answers_of_their_kind():
    pytest.importorskip("fastapi")
    from tidings._proxy_router import _normalize

    assert _normalize("connect", None).to_dict() == {}
    assert _normalize("connect", True).to_dict() == {}
    assert _normalize("connect", "42").to_dict() == {"user_id": "42"}
    assert _normalize("connect", False).to_dict()["allow"] is False
    assert _normalize("connect", admit(channels=["a*"])).to_dict() == {"channels": ["a*"]}
    assert _normalize("connect", deny("banned")).to_dict() == {"allow": False, "message": "banned"}
    assert _normalize("publish", Event(type="t", data=1, stray=2)).to_dict() == {"event": {"type": "t", "data": 1}}
    assert _normalize("rpc", deny("no")).refused  # the server reads allow: false on rpc too
    with pytest.raises(ValueError):
        _normalize("connect", "")  # no user id
    for kind, result in [
        ("connect", Event(type="t")),
        ("connect", replace("t")),
        ("subscribe", "42"),
        ("subscribe", admit(channels=["a"])),
        ("subscribe", rpc_result(1)),
        ("publish", admit("bob")),
        ("rpc", replace("t")),
        ("rpc", admit("bob")),
    ]:
        with pytest.raises(TypeError, match=kind):
            _normalize(kind, result)
