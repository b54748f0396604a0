"""The blocking client against the real binary, with a real WebSocket client
(websockets.sync) on the other end."""

import pytest

from tidings import (
    APIError,
    AuthenticationError,
    BadRequestError,
    PayloadTooLargeError,
    PermissionDeniedError,
    Tidings,
    TidingsError,
)
from tidings_testkit import eventually, unique, ws_client

# Every route the SDK has a method for; the server's OpenAPI document may list no other.
SDK_PATHS = {
    "/api/publish",
    "/api/notify/user/{id}",
    "/api/broadcast",
    "/api/stats",
    "/api/status",
    "/api/users",
    "/api/users/{id}/status",
    "/api/users/{id}/disconnect",
    "/api/channels/{name}/members",
    "/api/channels/{name}/history",
}


def test_healthz(client):
    health = client.healthz()
    assert health.ok and health.status == "ok" and health.text == "ok"


def test_publish_reaches_a_subscriber(server, client):
    channel = unique("ticket")
    with ws_client(server, unique("alice"), channels=(channel,)) as ws:
        result = client.publish(channel, "chat_message", {"id": "m1", "content": "Hello"})
        assert result.offset == 1 and result.delivered == 1 and result.scope == "node"
        message = ws.expect("message", channel=channel)["data"]
    assert message["event"] == {"type": "chat_message", "data": {"id": "m1", "content": "Hello"}}
    assert message["offset"] == result.offset and message["epoch"] == result.epoch
    assert "sender" not in message  # a back end's publication names no user


def test_application_events_keep_their_data_as_published(server, client):
    channel = unique("board")
    data = {"nested": {"list": [1, 2.5, None, True]}, "text": "é ✓", "big": 2**53 + 1}
    with ws_client(server, unique("viewer"), channels=(channel,)) as ws:
        client.publish(channel, "card_moved", data)
        assert ws.expect("message", channel=channel)["data"]["event"]["data"] == data


def test_publish_with_sender_names_the_user(server, client):
    channel = unique("chat")
    with ws_client(server, unique("bob"), channels=(channel,)) as ws:
        client.publish(channel, "chat_message", {"id": "m2", "content": "checked"}, sender="alice")
        message = ws.expect("message", channel=channel)["data"]
    assert message.get("sender") == "alice", message
    assert client.history(channel).publications[-1].sender == "alice"


def test_ephemeral_publication_has_no_offset(server, client):
    channel = unique("upload")
    with ws_client(server, unique("uploader"), channels=(channel,)) as ws:
        result = client.publish(channel, "progress", {"id": "u1", "pct": 42}, delivery="ephemeral")
        message = ws.expect("message", channel=channel)["data"]
    assert result.offset is None and "offset" not in message
    assert client.history(channel).publications == []


def test_notify_reaches_the_user(server, client):
    user = unique("carol")
    with ws_client(server, user) as ws:
        delivered = client.notify_user(user, "Your report is ready", title="Done", level="success", data={"id": 9})
        assert delivered.delivered == 1
        message = ws.expect("message", channel=f"user:{user}")["data"]
    assert message["event"]["type"] == "notification"
    assert message["event"]["data"] == {
        "title": "Done",
        "message": "Your report is ready",
        "level": "success",
        "data": {"id": 9},
    }


def test_notify_with_sender(server, client):
    user = unique("dave")
    with ws_client(server, user) as ws:
        client.notify_user(user, "ping from a colleague", sender="erin")
        message = ws.expect("message", channel=f"user:{user}")["data"]
    assert message.get("sender") == "erin", message


def test_notify_is_kept_for_an_offline_user(server, client):
    user = unique("offline")
    assert client.notify_user(user, "while you were away").delivered == 0
    with ws_client(server, user) as ws:
        message = ws.expect("message", channel=f"user:{user}")["data"]
    assert message["event"]["data"]["message"] == "while you were away"


def test_broadcast_reaches_everyone(server, client):
    with ws_client(server, unique("b1")) as first, ws_client(server, unique("b2")) as second:
        marker = unique("maintenance")
        delivered = client.broadcast("maintenance", {"marker": marker, "minutes": 15})
        assert delivered.delivered >= 2
        for ws in (first, second):
            message = ws.expect("message", channel="broadcast", where=lambda f: f["data"]["event"]["data"].get("marker") == marker)
            assert message["data"]["event"]["type"] == "maintenance"
            assert "offset" not in message["data"] and message["data"]["epoch"] == ""


def test_broadcast_with_sender(server, client):
    with ws_client(server, unique("b3")) as ws:
        marker = unique("announce")
        client.broadcast("announcement", {"marker": marker}, sender="ops")
        message = ws.expect("message", channel="broadcast", where=lambda f: f["data"]["event"]["data"].get("marker") == marker)
    assert message["data"].get("sender") == "ops", message


def test_history_returns_what_was_published_and_pages(client):
    channel = unique("log")
    results = [client.publish(channel, "line", {"n": n}) for n in range(1, 6)]
    assert [r.offset for r in results] == [1, 2, 3, 4, 5]

    newest = client.history(channel, limit=2)
    assert newest.channel == channel and newest.offset == 5 and newest.epoch == results[0].epoch
    assert [p.offset for p in newest.publications] == [4, 5]
    assert [p.event.data for p in newest.publications] == [{"n": 4}, {"n": 5}]
    assert all(p.sender is None and p.ts > 0 for p in newest.publications)

    assert [p.offset for p in client.history(channel, since=0, limit=2).publications] == [1, 2]
    assert [p.offset for p in client.history(channel, since=3).publications] == [4, 5]
    assert [p.offset for p in client.history(channel, before=4, limit=2).publications] == [2, 3]
    assert [p.event.data["n"] for p in client.iter_history(channel, page_size=2)] == [1, 2, 3, 4, 5]
    assert [p.offset for p in client.iter_history(channel, since=3)] == [4, 5]

    empty = client.history(unique("nothing"))
    assert empty.offset == 0 and empty.publications == []


def test_history_with_a_user_token(server, client):
    channel = unique("room")
    client.publish(channel, "line", {"n": 1})
    user = unique("reader")
    page = client.history(channel, token=server.token(user))
    assert [p.event.data for p in page.publications] == [{"n": 1}]
    with pytest.raises(PermissionDeniedError) as refused:
        client.history(channel, token=server.token(user, channels=["elsewhere:*"]))
    assert refused.value.status == 403 and refused.value.code == "forbidden"
    with pytest.raises(AuthenticationError) as bad:
        client.history(channel, token="not-a-jwt")
    assert bad.value.code == "unauthorized"
    with Tidings(server.base_url, api_key=None) as anonymous:
        with pytest.raises(AuthenticationError):
            anonymous.history(channel)


def test_status_and_members_reflect_a_connected_client(server, client):
    user, channel = unique("frank"), unique("ticket")
    assert not client.is_user_connected(user)
    before = client.user_status(user)
    assert (before.user_id, before.connected, before.connections) == (user, False, 0)
    with ws_client(server, user, channels=(channel,)):
        status = client.user_status(user)
        assert status.connected and status.connections == 1 and status.scope == "node"
        members = client.channel_members(channel)
        assert members.channel == channel and members.user_ids == [user]
        assert members.members[0].connections == 1
        with ws_client(server, user, channels=(channel,)):
            assert client.user_status(user).connections == 2
            assert client.channel_members(channel).members[0].connections == 2
    assert eventually(lambda: not client.is_user_connected(user))
    assert eventually(lambda: client.channel_members(channel).members == [])


def test_stats_count_connections_and_publications(server, client):
    before = client.stats()
    with ws_client(server, unique("grace")):
        client.publish(unique("stats"), "x", {})
        during = client.stats()
    assert during.connections >= 1 and during.users >= 1
    assert during.publications > before.publications
    assert during.cluster is None  # a single node


def test_users_lists_connected_users_and_pages(server, client):
    prefix = unique("lister")
    names = [f"{prefix}-{i}" for i in range(3)]
    with ws_client(server, names[0]), ws_client(server, names[1]), ws_client(server, names[2]):
        page = client.users(limit=1)
        assert len(page.users) == 1 and page.next == page.users[0] and page.scope in ("node", "cluster")
        everyone = list(client.iter_users(page_size=1))
        assert everyone == sorted(everyone) and len(everyone) == len(set(everyone))
        assert set(names) <= set(everyone)
        after = client.users(after=names[0], limit=1000)
        assert names[0] not in after.users and names[1] in after.users and after.next is None
    assert eventually(lambda: not set(names) & set(client.iter_users(page_size=50)))


def test_status_route(client):
    status = client.status()
    assert status.status == "ok" and status.connections >= 0 and status.users >= 0


def test_disconnect_closes_the_clients_socket(server, client):
    user = unique("heidi")
    with ws_client(server, user) as ws:
        result = client.disconnect_user(user)
        assert result.disconnected == 1 and result.scope == "node"
        assert ws.close_code() == 4006
    assert client.disconnect_user(user).disconnected == 0


def test_wrong_api_key_raises_the_auth_error(server):
    with Tidings(server.base_url, api_key="wrong-key") as wrong:
        with pytest.raises(AuthenticationError) as raised:
            wrong.stats()
        with pytest.raises(AuthenticationError):
            wrong.publish("lobby", "x")
    error = raised.value
    assert isinstance(error, APIError) and isinstance(error, TidingsError)
    assert error.status == 401 and error.code == "unauthorized" and "API key" in error.message


@pytest.mark.parametrize("channel", ["", "bad\x01name", "x" * 256])
def test_bad_channel_name_raises_the_servers_code(client, channel):
    with pytest.raises(BadRequestError) as raised:
        client.publish(channel, "x", {})
    assert raised.value.status == 400 and raised.value.code == "bad_frame"
    assert "channel" in raised.value.message


def test_bad_channel_name_on_reads(client):
    with pytest.raises(BadRequestError) as raised:
        client.history("bad\x01name")
    assert raised.value.code == "bad_frame"
    with pytest.raises(BadRequestError):
        client.channel_members("x" * 256)


def test_reserved_channel_is_forbidden(client):
    with pytest.raises(PermissionDeniedError) as raised:
        client.publish("broadcast", "x", {})
    assert raised.value.status == 403 and raised.value.code == "forbidden"


def test_invalid_standard_event_is_refused(client):
    with pytest.raises(BadRequestError) as raised:
        client.publish(unique("c"), "notification", {"title": "no message"})
    assert raised.value.code == "bad_frame"


def test_too_large_event_is_refused(client):
    with pytest.raises(PayloadTooLargeError) as raised:
        client.publish(unique("c"), "blob", {"text": "x" * 70_000})
    assert raised.value.status == 413 and raised.value.code == "frame_too_large"


def test_channel_names_with_slashes_and_colons_round_trip(server, client):
    channel = unique("team:a/b c")
    with ws_client(server, unique("ivan"), channels=(channel,)) as ws:
        client.publish(channel, "x", {"ok": True})
        assert ws.expect("message", channel=channel)["data"]["event"]["data"] == {"ok": True}
        assert len(client.channel_members(channel).members) == 1
    assert client.history(channel).channel == channel


def test_the_sdk_covers_every_documented_route(client):
    documented = set(client.openapi()["paths"])
    assert documented, "empty OpenAPI document"
    assert documented <= SDK_PATHS, f"routes without an SDK method: {sorted(documented - SDK_PATHS)}"
