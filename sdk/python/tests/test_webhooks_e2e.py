"""Webhooks the binary really delivers (to the session's receiver, see conftest.py),
verified and parsed with the SDK."""

import time

import pytest

from tidings import SignatureMismatchError, SignatureTimestampError, construct_event, verify_signature
from tidings.webhooks import (
    ChannelJoinedEvent,
    ChannelLeftEvent,
    MessagePublishedEvent,
    UserConnectedEvent,
    UserDisconnectedEvent,
    parse_event,
)
from tidings_testkit import unique, ws_client


def kind_and(kind, **fields):
    def match(hook):
        body = hook.json()
        return body["type"] == kind and all(body["data"].get(k) == v for k, v in fields.items())

    return match


def test_a_publication_arrives_signed_and_verifies(server, client):
    channel = unique("hooked")
    result = client.publish(channel, "chat_message", {"id": "w1", "content": "to the webhook"})
    hook = server.receiver.wait_for(kind_and("message.published", channel=channel))

    header = hook.header("X-Tidings-Signature")
    timestamp = verify_signature(server.webhook_secret, header, hook.body)
    assert abs(timestamp - time.time()) < 60
    event = construct_event(server.webhook_secret, header, hook.body)
    assert isinstance(event, MessagePublishedEvent)
    assert hook.header("X-Tidings-Event") == event.type == "message.published"
    assert hook.header("X-Tidings-Event-Id") == event.id and event.id.startswith("evt_")
    assert hook.header("Content-Type") == "application/json"
    assert event.data.channel == channel
    assert event.data.offset == result.offset and event.data.epoch == result.epoch
    assert event.data.sender is None
    assert event.data.event.type == "chat_message"
    assert event.data.event.data == {"id": "w1", "content": "to the webhook"}
    assert abs(event.created_at / 1000 - time.time()) < 60


def test_a_real_webhook_fails_when_tampered_resigned_elsewhere_or_old(server, client):
    channel = unique("tamper")
    client.publish(channel, "x", {"amount": 10})
    hook = server.receiver.wait_for(kind_and("message.published", channel=channel))
    header = hook.header("X-Tidings-Signature")
    with pytest.raises(SignatureMismatchError):
        verify_signature(server.webhook_secret, header, hook.body.replace(b'"amount":10', b'"amount":99'))
    with pytest.raises(SignatureMismatchError):
        verify_signature("whsec_someone_else", header, hook.body)
    with pytest.raises(SignatureTimestampError):
        verify_signature(server.webhook_secret, header, hook.body, now=time.time() + 3600)


def test_sender_is_in_the_webhook(server, client):
    channel = unique("hooked-sender")
    client.publish(channel, "chat_message", {"id": "w2", "content": "c"}, sender="alice")
    hook = server.receiver.wait_for(kind_and("message.published", channel=channel))
    event = parse_event(hook.body)
    assert event.data.sender == "alice"


def test_connect_join_leave_disconnect_events(server):
    user, channel = unique("hooker"), unique("lobby")
    with ws_client(server, user, channels=(channel,)) as ws:
        session = ws.connected["session_id"]
    receiver, secret = server.receiver, server.webhook_secret

    expected = [
        ("user.connected", UserConnectedEvent, {"user_id": user}),
        ("channel.joined", ChannelJoinedEvent, {"user_id": user, "channel": channel}),
        ("channel.left", ChannelLeftEvent, {"user_id": user, "channel": channel}),
        ("user.disconnected", UserDisconnectedEvent, {"user_id": user}),
    ]
    for kind, model, fields in expected:
        hook = receiver.wait_for(kind_and(kind, **fields))
        event = construct_event(secret, hook.header("X-Tidings-Signature"), hook.body)
        assert isinstance(event, model), event
        for key, value in fields.items():
            assert getattr(event.data, key) == value
        if kind.startswith("user."):
            assert event.data.session_id == session
