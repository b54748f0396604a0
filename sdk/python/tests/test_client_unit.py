"""The clients without a server: what they send (httpx.MockTransport) and how they read
answers and errors. The same checks run on the sync and the async client."""

import json
import socket
from typing import Any, Callable, Dict, List

import httpx
import pytest

from tidings import (
    APIError,
    AsyncTidings,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    Tidings,
    TidingsConnectionError,
    TidingsError,
    UnavailableError,
    UnexpectedResponseError,
)

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    def __init__(self, answer: Handler):
        self.requests: List[httpx.Request] = []
        self.answer = answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def ok(body: Any) -> Handler:
    return lambda request: httpx.Response(200, json=body)


def sync_and_async(recorder: Recorder, api_key="k", base_url="http://tidings.test/prefix/"):
    """Runs `call(client)` on both clients and returns both results."""

    def run(call: Callable[[Any], Any]) -> List[Any]:
        transport = httpx.MockTransport(recorder)
        with Tidings(base_url, api_key=api_key, http_client=httpx.Client(transport=transport)) as sync:
            first = call(sync)

        async def use_async():
            http = httpx.AsyncClient(transport=httpx.MockTransport(recorder))
            async with AsyncTidings(base_url, api_key=api_key, http_client=http) as client:
                result = await call(client)
            await http.aclose()
            return result

        import asyncio

        second = asyncio.run(use_async())
        return [first, second]

    return run


PUBLISHED = {"offset": 3, "epoch": "e1", "delivered": 2, "scope": "node"}


def test_publish_body_and_headers():
    recorder = Recorder(ok(PUBLISHED))
    results = sync_and_async(recorder)(lambda c: c.publish("ticket:1", "chat_message", {"id": "m1"}, sender="7"))
    for result in results:
        assert result.offset == 3 and result.epoch == "e1" and result.delivered == 2 and result.scope == "node"
    for request in recorder.requests:
        assert request.method == "POST"
        assert request.url.path == "/prefix/api/publish"
        assert request.headers["authorization"] == "Bearer k"
        assert request.headers["content-type"] == "application/json"
        assert json.loads(request.content) == {
            "channel": "ticket:1",
            "event": {"type": "chat_message", "data": {"id": "m1"}},
            "sender": "7",
        }


def test_unset_fields_are_not_sent_but_null_data_is():
    recorder = Recorder(ok(PUBLISHED))
    sync_and_async(recorder)(lambda c: c.publish("lobby", "ping"))
    assert json.loads(recorder.last.content) == {"channel": "lobby", "event": {"type": "ping", "data": None}}
    recorder = Recorder(ok({"delivered": 1, "scope": "node"}))
    sync_and_async(recorder)(lambda c: c.notify_user("42", "hello"))
    assert json.loads(recorder.last.content) == {"message": "hello"}
    sync_and_async(recorder)(lambda c: c.notify_user("42", "hi", title="T", level="success", data={"a": 1}))
    assert json.loads(recorder.last.content) == {"message": "hi", "title": "T", "level": "success", "data": {"a": 1}}
    sync_and_async(recorder)(lambda c: c.broadcast("maintenance", {"minutes": 5}, sender="ops"))
    assert json.loads(recorder.last.content) == {
        "event": {"type": "maintenance", "data": {"minutes": 5}},
        "sender": "ops",
    }


def test_invalid_arguments_are_refused_before_sending():
    recorder = Recorder(ok(PUBLISHED))
    with Tidings("http://x", api_key="k", http_client=httpx.Client(transport=httpx.MockTransport(recorder))) as c:
        with pytest.raises(ValueError):
            c.publish("lobby", "x", delivery="sometimes")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            c.notify_user("42", "hi", level="loud")  # type: ignore[arg-type]
    assert recorder.requests == []


def test_path_segments_are_percent_encoded():
    recorder = Recorder(ok({"user_id": "a/b", "connected": False, "connections": 0, "scope": "node"}))
    sync_and_async(recorder)(lambda c: c.user_status("a/b c"))
    assert recorder.last.url.raw_path == b"/prefix/api/users/a%2Fb%20c/status"
    recorder = Recorder(ok({"channel": "user:42", "members": [], "scope": "node"}))
    sync_and_async(recorder)(lambda c: c.channel_members("user:42"))
    assert recorder.last.url.raw_path == b"/prefix/api/channels/user%3A42/members"


def test_history_params_and_user_token():
    page = {"channel": "c", "epoch": "e", "offset": 0, "publications": []}
    recorder = Recorder(ok(page))
    sync_and_async(recorder)(lambda c: c.history("c", since=0, limit=5))
    assert dict(recorder.last.url.params) == {"since": "0", "limit": "5"}
    assert recorder.last.headers["authorization"] == "Bearer k"
    sync_and_async(recorder)(lambda c: c.history("c", before=9, token="user.jwt"))
    assert dict(recorder.last.url.params) == {"before": "9"}
    assert recorder.last.headers["authorization"] == "Bearer user.jwt"


def test_open_routes_send_no_api_key():
    recorder = Recorder(lambda r: httpx.Response(200, text="ok"))
    results = sync_and_async(recorder)(lambda c: c.healthz())
    assert all(r.ok and r.status == "ok" for r in results)
    assert all("authorization" not in r.headers for r in recorder.requests)
    recorder = Recorder(ok({"status": "degraded", "connections": 1, "users": 1}))
    results = sync_and_async(recorder)(lambda c: c.status())
    assert all(r.status == "degraded" for r in results)
    assert all("authorization" not in r.headers for r in recorder.requests)


def test_degraded_health_text():
    text = "degraded: the broker is disconnected; other nodes catch up once it is back"
    recorder = Recorder(lambda r: httpx.Response(200, text=text))
    health = sync_and_async(recorder)(lambda c: c.healthz())[0]
    assert not health.ok and health.status == "degraded" and health.detail.startswith("the broker")


def test_iter_users_follows_next():
    pages: Dict[Any, Dict[str, Any]] = {
        None: {"users": ["a", "b"], "next": "b", "scope": "node"},
        "b": {"users": ["c", "d"], "next": "d", "scope": "node"},
        "d": {"users": ["e"], "next": None, "scope": "node"},
    }
    recorder = Recorder(lambda r: httpx.Response(200, json=pages[r.url.params.get("after")]))

    def collect_sync(c):
        return list(c.iter_users(page_size=2))

    transport = httpx.MockTransport(recorder)
    with Tidings("http://x", api_key="k", http_client=httpx.Client(transport=transport)) as c:
        assert collect_sync(c) == ["a", "b", "c", "d", "e"]
    assert [r.url.params.get("after") for r in recorder.requests] == [None, "b", "d"]
    assert all(r.url.params["limit"] == "2" for r in recorder.requests)

    async def collect_async():
        async with AsyncTidings("http://x", api_key="k", http_client=httpx.AsyncClient(transport=transport)) as c:
            return [u async for u in c.iter_users(page_size=2)]

    import asyncio

    assert asyncio.run(collect_async()) == ["a", "b", "c", "d", "e"]


def test_iter_users_stops_on_a_next_that_does_not_move():
    recorder = Recorder(ok({"users": ["a"], "next": "a", "scope": "node"}))
    transport = httpx.MockTransport(recorder)
    with Tidings("http://x", api_key="k", http_client=httpx.Client(transport=transport)) as c:
        assert list(c.iter_users(after="a")) == ["a"]
    assert len(recorder.requests) == 1


def test_iter_history_pages_forward_until_the_latest_offset():
    def pub(offset):
        return {"channel": "c", "offset": offset, "epoch": "e", "ts": 1, "event": {"type": "t", "data": offset}}

    def answer(request):
        since = int(request.url.params["since"])
        offsets = [o for o in range(since + 1, 6)][:2]
        return httpx.Response(200, json={"channel": "c", "epoch": "e", "offset": 5, "publications": [pub(o) for o in offsets]})

    recorder = Recorder(answer)
    transport = httpx.MockTransport(recorder)
    with Tidings("http://x", api_key="k", http_client=httpx.Client(transport=transport)) as c:
        assert [p.event.data for p in c.iter_history("c", page_size=2)] == [1, 2, 3, 4, 5]
    assert [r.url.params["since"] for r in recorder.requests] == ["0", "2", "4"]


ERRORS = [
    (400, "bad_frame", BadRequestError),
    (400, "bad_request", BadRequestError),
    (401, "unauthorized", AuthenticationError),
    (403, "forbidden", PermissionDeniedError),
    (404, "not_found", NotFoundError),
    (413, "frame_too_large", PayloadTooLargeError),
    (422, "bad_request", BadRequestError),
    (429, "rate_limited", RateLimitedError),
    (503, "unavailable", UnavailableError),
    (500, "internal_error", ServerError),
    (418, "teapot", APIError),
]


@pytest.mark.parametrize("status,code,cls", ERRORS)
def test_typed_error_bodies_map_to_exceptions(status, code, cls):
    body = {"error": {"code": code, "message": "why it failed"}}
    recorder = Recorder(lambda r: httpx.Response(status, json=body))
    transport = httpx.MockTransport(recorder)
    with Tidings("http://x", api_key="k", http_client=httpx.Client(transport=transport)) as c:
        with pytest.raises(cls) as raised:
            c.stats()
    error = raised.value
    assert type(error) is cls and isinstance(error, APIError) and isinstance(error, TidingsError)
    assert (error.status, error.code, error.message) == (status, code, "why it failed")
    assert error.body == body and error.method == "GET" and error.url == "http://x/api/stats"
    assert f"{status} {code}: why it failed" == str(error)


def test_untyped_error_bodies_get_an_http_code():
    recorder = Recorder(lambda r: httpx.Response(404, text=""))
    transport = httpx.MockTransport(recorder)
    with Tidings("http://x", api_key="k", http_client=httpx.Client(transport=transport)) as c:
        with pytest.raises(NotFoundError) as raised:
            c.status()
    assert raised.value.code == "http_404" and raised.value.message == "Not Found"
    recorder.answer = lambda r: httpx.Response(502, text="<html>bad gateway</html>")
    with Tidings("http://x", api_key="k", http_client=httpx.Client(transport=transport)) as c:
        with pytest.raises(ServerError) as raised:
            c.stats()
    assert raised.value.code == "http_502" and "bad gateway" in raised.value.message
    assert issubclass(UnavailableError, ServerError)


def test_unreadable_success_is_an_unexpected_response():
    recorder = Recorder(lambda r: httpx.Response(200, text="<html>login</html>"))
    transport = httpx.MockTransport(recorder)
    with Tidings("http://x", api_key="k", http_client=httpx.Client(transport=transport)) as c:
        with pytest.raises(UnexpectedResponseError):
            c.stats()
        recorder.answer = ok({"unexpected": True})
        with pytest.raises(UnexpectedResponseError, match="PublishResult"):
            c.publish("c", "t")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_a_connection_error():
    url = f"http://127.0.0.1:{closed_port()}"
    with Tidings(url, api_key="k", timeout=2) as c:
        with pytest.raises(TidingsConnectionError):
            c.healthz()


async def test_unreachable_server_is_a_connection_error_async():
    url = f"http://127.0.0.1:{closed_port()}"
    async with AsyncTidings(url, api_key="k", timeout=2) as c:
        with pytest.raises(TidingsConnectionError):
            await c.stats()


def test_defaults_from_the_environment(monkeypatch):
    monkeypatch.setenv("TIDINGS_URL", "http://env.test:9/")
    monkeypatch.setenv("TIDINGS_API_KEY", "env-key")
    with Tidings() as c:
        assert c.base_url == "http://env.test:9" and c.api_key == "env-key"
        assert "env-key" not in repr(c)
    monkeypatch.delenv("TIDINGS_URL")
    with Tidings(api_key="explicit") as c:
        assert c.base_url == "http://127.0.0.1:8000" and c.api_key == "explicit"


def test_a_passed_http_client_is_not_closed():
    http = httpx.Client(transport=httpx.MockTransport(ok(PUBLISHED)))
    with Tidings("http://x", http_client=http):
        pass
    assert not http.is_closed
    http.close()
