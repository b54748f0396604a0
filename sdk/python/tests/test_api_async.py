"""The asyncio client against the real binary, with an asyncio WebSocket client
(websockets.asyncio) on the other end."""

import asyncio

import pytest

from tidings import AsyncTidings, AuthenticationError, BadRequestError, PermissionDeniedError
from tidings_testkit import async_eventually, async_ws_client, unique


async def test_healthz_and_stats(aclient):
    assert (await aclient.healthz()).ok
    stats = await aclient.stats()
    assert stats.connections >= 0 and stats.publications >= 0


async def test_publish_reaches_a_subscriber(server, aclient):
    channel = unique("ticket")
    async with async_ws_client(server, unique("alice"), channels=(channel,)) as ws:
        result = await aclient.publish(channel, "chat_message", {"id": "m1", "content": "Hello"})
        message = (await ws.expect("message", channel=channel))["data"]
    assert result.offset == 1 and result.delivered == 1
    assert message["event"] == {"type": "chat_message", "data": {"id": "m1", "content": "Hello"}}
    assert message["offset"] == 1 and "sender" not in message


async def test_publish_with_sender(server, aclient):
    channel = unique("chat")
    async with async_ws_client(server, unique("bob"), channels=(channel,)) as ws:
        await aclient.publish(channel, "chat_message", {"id": "m1", "content": "hi"}, sender="alice")
        message = (await ws.expect("message", channel=channel))["data"]
    assert message.get("sender") == "alice", message


async def test_concurrent_publishes_all_arrive(server, aclient):
    channel = unique("burst")
    async with async_ws_client(server, unique("reader"), channels=(channel,)) as ws:
        results = await asyncio.gather(*(aclient.publish(channel, "n", {"n": n}) for n in range(20)))
        assert sorted(r.offset for r in results) == list(range(1, 21))
        received = [(await ws.expect("message", channel=channel))["data"] for _ in range(20)]
    assert [m["offset"] for m in received] == list(range(1, 21))  # in offset order
    assert sorted(m["event"]["data"]["n"] for m in received) == list(range(20))


async def test_notify_reaches_the_user(server, aclient):
    user = unique("carol")
    async with async_ws_client(server, user) as ws:
        delivered = await aclient.notify_user(user, "Build finished", level="warning")
        message = (await ws.expect("message", channel=f"user:{user}"))["data"]
    assert delivered.delivered == 1
    assert message["event"]["type"] == "notification"
    assert message["event"]["data"]["message"] == "Build finished"
    assert message["event"]["data"]["level"] == "warning"


async def test_broadcast_reaches_everyone(server, aclient):
    async with async_ws_client(server, unique("x1")) as first, async_ws_client(server, unique("x2")) as second:
        marker = unique("m")
        delivered = await aclient.broadcast("maintenance", {"marker": marker})
        assert delivered.delivered >= 2
        for ws in (first, second):
            frame = await ws.expect(
                "message", channel="broadcast", where=lambda f: f["data"]["event"]["data"].get("marker") == marker
            )
            assert frame["data"]["event"]["type"] == "maintenance"


async def test_history_and_async_paging(aclient):
    channel = unique("log")
    for n in range(1, 8):
        await aclient.publish(channel, "line", {"n": n})
    page = await aclient.history(channel, before=7, limit=3)
    assert [p.offset for p in page.publications] == [4, 5, 6] and page.offset == 7
    collected = [p.event.data["n"] async for p in aclient.iter_history(channel, page_size=3)]
    assert collected == list(range(1, 8))


async def test_users_status_members_and_disconnect(server, aclient):
    user, channel = unique("judy"), unique("room")
    async with async_ws_client(server, user, channels=(channel,)) as ws:
        assert await aclient.is_user_connected(user)
        assert (await aclient.user_status(user)).connections == 1
        assert (await aclient.channel_members(channel)).user_ids == [user]
        assert (await aclient.disconnect_user(user)).disconnected == 1
        assert await ws.close_code() == 4006

    async def gone():
        return not await aclient.is_user_connected(user)

    assert await async_eventually(gone)


async def test_users_pages(server, aclient):
    kim, lee = unique("kim"), unique("lee")
    async with async_ws_client(server, kim), async_ws_client(server, lee):
        page = await aclient.users(limit=1)
        assert len(page.users) == 1 and page.next == page.users[0]
        listed = [u async for u in aclient.iter_users(page_size=1)]
        assert {kim, lee} <= set(listed) and listed == sorted(listed)


async def test_status_route(aclient):
    status = await aclient.status()
    assert status.status in ("ok", "degraded")


async def test_errors_are_typed(server, aclient):
    async with AsyncTidings(server.base_url, api_key="wrong") as wrong:
        with pytest.raises(AuthenticationError) as raised:
            await wrong.broadcast("x")
    assert raised.value.status == 401 and raised.value.code == "unauthorized"
    with pytest.raises(BadRequestError) as bad:
        await aclient.publish("", "x")
    assert bad.value.code == "bad_frame"
    with pytest.raises(PermissionDeniedError):
        await aclient.publish("broadcast", "x")
