"""tidings.webhooks without a server: signatures and event parsing."""

import json

import pytest

from tidings import WebhookSignatureError
from tidings.errors import SignatureFormatError, SignatureMismatchError, SignatureTimestampError
from tidings.webhooks import (
    ChannelJoinedEvent,
    ChannelLeftEvent,
    MessagePublishedEvent,
    UnknownWebhookEvent,
    UserConnectedEvent,
    UserDisconnectedEvent,
    construct_event,
    parse_event,
    sign,
    verify_signature,
)

SECRET = "whsec_unit"
NOW = 1_700_000_000
BODY = (
    b'{"id":"evt_0123456789abcdef0123456789abcdef","type":"message.published","created_at":1700000000123,'
    b'"data":{"channel":"ticket:1","offset":3,"epoch":"e1","ts":1700000000100,"sender":null,'
    b'"event":{"type":"chat_message","data":{"id":"m1","content":"hi"}}}}'
)


def test_signature_matches_the_servers_reference_value():
    # The value crates/server/src/webhooks/delivery.rs checks (computed with openssl).
    assert sign("key", "{}", timestamp=1_700_000_000) == (
        "t=1700000000,v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
    )
    verify_signature("key", sign("key", "{}", timestamp=NOW), b"{}", now=NOW)


def test_valid_signature_returns_its_timestamp():
    header = sign(SECRET, BODY, timestamp=NOW)
    assert verify_signature(SECRET, header, BODY, now=NOW + 10) == NOW
    assert verify_signature(SECRET, header, BODY.decode(), now=NOW) == NOW  # text body too
    assert verify_signature(SECRET, header, bytearray(BODY), now=NOW) == NOW


def test_tampered_body_fails():
    header = sign(SECRET, BODY, timestamp=NOW)
    with pytest.raises(SignatureMismatchError):
        verify_signature(SECRET, header, BODY.replace(b'"hi"', b'"ho"'), now=NOW)
    # Re-encoding the JSON changes the bytes: verification needs the raw body.
    with pytest.raises(SignatureMismatchError):
        verify_signature(SECRET, header, json.dumps(json.loads(BODY)), now=NOW)


def test_wrong_secret_fails_and_a_list_allows_rotation():
    header = sign(SECRET, BODY, timestamp=NOW)
    with pytest.raises(SignatureMismatchError):
        verify_signature("whsec_other", header, BODY, now=NOW)
    assert verify_signature(["whsec_other", SECRET], header, BODY, now=NOW) == NOW


def test_old_and_future_timestamps_fail():
    header = sign(SECRET, BODY, timestamp=NOW)
    assert verify_signature(SECRET, header, BODY, now=NOW + 300) == NOW
    with pytest.raises(SignatureTimestampError, match="too old") as old:
        verify_signature(SECRET, header, BODY, now=NOW + 301)
    assert (old.value.timestamp, old.value.now) == (NOW, NOW + 301)
    with pytest.raises(SignatureTimestampError, match="future"):
        verify_signature(SECRET, header, BODY, now=NOW - 301)
    with pytest.raises(SignatureTimestampError):
        verify_signature(SECRET, header, BODY, tolerance=5, now=NOW + 6)
    assert verify_signature(SECRET, header, BODY, tolerance=None, now=NOW + 10**6) == NOW


def test_a_mismatch_is_reported_before_the_age():
    # A forged request learns nothing about timing windows.
    header = sign("whsec_other", BODY, timestamp=NOW)
    with pytest.raises(SignatureMismatchError):
        verify_signature(SECRET, header, BODY, now=NOW + 10_000)


@pytest.mark.parametrize(
    "header",
    [None, "", "garbage", "t=abc,v1=00", "v1=00", "t=1700000000", "t=1700000000;v1=00", "t=-5,v1=00"],
)
def test_malformed_headers_fail(header):
    with pytest.raises(SignatureFormatError):
        verify_signature(SECRET, header, BODY, now=NOW)


def test_several_v1_and_unknown_schemes_are_accepted():
    good = sign(SECRET, BODY, timestamp=NOW).split("v1=")[1]
    header = f"t={NOW},v0=zzz,v1={'0' * 64},v1={good.upper()}"
    assert verify_signature(SECRET, header, BODY, now=NOW) == NOW


def test_every_signature_error_is_a_webhook_signature_error():
    for cls in (SignatureFormatError, SignatureMismatchError, SignatureTimestampError):
        assert issubclass(cls, WebhookSignatureError)


def event(kind, data):
    return {"id": "evt_" + "0" * 32, "type": kind, "created_at": NOW * 1000, "data": data}


def test_each_kind_parses_to_its_model():
    published = parse_event(BODY)
    assert isinstance(published, MessagePublishedEvent)
    assert published.data.channel == "ticket:1" and published.data.offset == 3
    assert published.data.sender is None
    assert published.data.event.type == "chat_message"
    assert published.data.event.data == {"id": "m1", "content": "hi"}

    session = {"user_id": "42", "session_id": "s_1"}
    assert isinstance(parse_event(event("user.connected", session)), UserConnectedEvent)
    gone = parse_event(json.dumps(event("user.disconnected", session)))
    assert isinstance(gone, UserDisconnectedEvent) and gone.data.session_id == "s_1"
    membership = {"channel": "lobby", "user_id": "42"}
    joined = parse_event(event("channel.joined", membership))
    assert isinstance(joined, ChannelJoinedEvent) and joined.data.channel == "lobby"
    assert isinstance(parse_event(event("channel.left", membership)), ChannelLeftEvent)


def test_unknown_kinds_are_kept_and_bad_bodies_refused():
    future = parse_event(event("user.renamed", {"from": "a", "to": "b"}))
    assert isinstance(future, UnknownWebhookEvent)
    assert future.type == "user.renamed" and future.data == {"from": "a", "to": "b"}
    for bad in (b"not json", b"[]", b'{"type": 1}', json.dumps(event("channel.joined", {"user_id": "1"}))):
        with pytest.raises(ValueError):
            parse_event(bad)


def test_construct_event_verifies_then_parses():
    header = sign(SECRET, BODY, timestamp=NOW)
    assert isinstance(construct_event(SECRET, header, BODY, now=NOW), MessagePublishedEvent)
    with pytest.raises(SignatureMismatchError):
        construct_event(SECRET, header, BODY + b" ", now=NOW)


async def test_fastapi_dependency():
    pytest.importorskip("fastapi")
    import httpx
    from fastapi import Depends, FastAPI

    from tidings.fastapi import webhook_event

    app = FastAPI()

    @app.post("/hooks")
    async def receive(event=Depends(webhook_event(SECRET))):
        return {"type": event.type, "channel": event.data.channel}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:

        async def post(body, header):
            headers = {"X-Tidings-Signature": header} if header else {}
            return await http.post("/hooks", content=body, headers=headers)

        ok = await post(BODY, sign(SECRET, BODY))
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"type": "message.published", "channel": "ticket:1"}
        assert (await post(BODY, sign("x", BODY))).status_code == 400
        assert (await post(BODY, None)).status_code == 400
        assert (await post(BODY, sign(SECRET, BODY, timestamp=NOW))).status_code == 400  # stale
        junk = b'{"nope": true}'
        assert (await post(junk, sign(SECRET, junk))).status_code == 422
