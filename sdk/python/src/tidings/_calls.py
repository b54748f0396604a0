"""What each API method sends and how its answer is read, written once for both clients.

A method of :class:`~tidings.Tidings` or :class:`~tidings.AsyncTidings` builds a
:class:`Call` here and hands it to its transport (``httpx.Client`` or
``httpx.AsyncClient``); :func:`prepare` turns a call into request arguments and
:func:`finish` turns the response into the typed answer or the typed error. The clients
therefore differ only in ``await``.
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Generic, Optional, Type, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from .errors import APIError, UnexpectedResponseError, error_class_for
from .models import (
    BroadcastRequest,
    ChannelMembers,
    Delivered,
    Delivery,
    Disconnected,
    Event,
    Health,
    HistoryPage,
    Level,
    NotifyRequest,
    PublishRequest,
    PublishResult,
    ServerStatus,
    Stats,
    UsersPage,
    UserStatus,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP request of the API and the reader of its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Dict[str, Any] = field(default_factory=dict)
    json: Optional[Any] = None
    auth: bool = True
    """Send the API key (``Authorization: Bearer <api key>``)."""
    token: Optional[str] = None
    """Send this bearer token instead of the API key (a user's JWT, for history)."""


def segment(value: str) -> str:
    """A path segment, percent-encoded (``user:42`` -> ``user%3A42``, ``a/b`` -> ``a%2Fb``)."""
    if not isinstance(value, str):
        value = str(value)
    return quote(value, safe="")


def _model(cls: Type[M]) -> Callable[[httpx.Response], M]:
    def parse(response: httpx.Response) -> M:
        try:
            return cls.model_validate(response.json())
        except (ValueError, ValidationError) as error:
            raise UnexpectedResponseError(
                f"{response.request.method} {response.request.url}: cannot read the answer as "
                f"{cls.__name__}: {error}",
                status=response.status_code,
                body=response.text,
            ) from error

    return parse


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as error:
        raise UnexpectedResponseError(
            f"{response.request.method} {response.request.url}: the answer is not JSON",
            status=response.status_code,
            body=response.text,
        ) from error


def _params(**values: Any) -> Dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# ---------------------------------------------------------------- the calls


def publish(
    channel: str,
    event_type: str,
    data: Any = None,
    *,
    delivery: Optional[Delivery] = None,
    sender: Optional[str] = None,
) -> Call[PublishResult]:
    body = PublishRequest(
        channel=channel,
        event=Event(type=event_type, data=data),
        delivery=delivery,
        sender=sender,
    )
    return Call("POST", "/api/publish", _model(PublishResult), json=body.to_json())


def notify_user(
    user_id: str,
    message: str,
    *,
    title: Optional[str] = None,
    level: Optional[Level] = None,
    data: Any = None,
    sender: Optional[str] = None,
) -> Call[Delivered]:
    body = NotifyRequest(message=message, title=title, level=level, data=data, sender=sender)
    path = f"/api/notify/user/{segment(user_id)}"
    return Call("POST", path, _model(Delivered), json=body.to_json())


def broadcast(
    event_type: str, data: Any = None, *, sender: Optional[str] = None
) -> Call[Delivered]:
    body = BroadcastRequest(event=Event(type=event_type, data=data), sender=sender)
    return Call("POST", "/api/broadcast", _model(Delivered), json=body.to_json())


def history(
    channel: str,
    *,
    since: Optional[int] = None,
    before: Optional[int] = None,
    limit: Optional[int] = None,
    token: Optional[str] = None,
) -> Call[HistoryPage]:
    path = f"/api/channels/{segment(channel)}/history"
    params = _params(since=since, before=before, limit=limit)
    return Call("GET", path, _model(HistoryPage), params=params, token=token)


def next_history(
    page: HistoryPage, *, limit: Optional[int], token: Optional[str]
) -> Optional[Call[HistoryPage]]:
    """The call for the page after ``page`` when paging forward, or ``None`` at the end."""
    offsets = [p.offset for p in page.publications if p.offset is not None]
    if not offsets or max(offsets) >= page.offset:
        return None
    return history(page.channel, since=max(offsets), limit=limit, token=token)


def users(*, limit: Optional[int] = None, after: Optional[str] = None) -> Call[UsersPage]:
    return Call("GET", "/api/users", _model(UsersPage), params=_params(limit=limit, after=after))


def next_users(
    page: UsersPage, *, limit: Optional[int], after: Optional[str]
) -> Optional[Call[UsersPage]]:
    """The call for the page after ``page``, or ``None`` on the last one."""
    if page.next is None or not page.users or page.next == after:
        return None
    return users(limit=limit, after=page.next)


def user_status(user_id: str) -> Call[UserStatus]:
    return Call("GET", f"/api/users/{segment(user_id)}/status", _model(UserStatus))


def channel_members(channel: str) -> Call[ChannelMembers]:
    return Call("GET", f"/api/channels/{segment(channel)}/members", _model(ChannelMembers))


def disconnect_user(user_id: str) -> Call[Disconnected]:
    return Call("POST", f"/api/users/{segment(user_id)}/disconnect", _model(Disconnected))


def stats() -> Call[Stats]:
    return Call("GET", "/api/stats", _model(Stats))


def status() -> Call[ServerStatus]:
    return Call("GET", "/api/status", _model(ServerStatus), auth=False)


def healthz() -> Call[Health]:
    return Call("GET", "/healthz", lambda r: Health.from_text(r.text), auth=False)


def openapi() -> Call[Dict[str, Any]]:
    return Call("GET", "/api/openapi.json", _json_body, auth=False)


# ---------------------------------------------------------------- transport glue


def prepare(call: Call[Any], base_url: str, api_key: Optional[str]) -> Dict[str, Any]:
    """Keyword arguments for ``httpx.Client.request`` / ``httpx.AsyncClient.request``."""
    headers: Dict[str, str] = {}
    bearer = call.token if call.token is not None else (api_key if call.auth else None)
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    request: Dict[str, Any] = {
        "method": call.method,
        "url": base_url + call.path,
        "headers": headers,
    }
    if call.params:
        request["params"] = call.params
    if call.json is not None:
        request["content"] = _json.dumps(call.json, separators=(",", ":")).encode()
        headers["Content-Type"] = "application/json"
    return request


def finish(call: Call[T], response: httpx.Response) -> T:
    """The typed answer, or the typed :class:`~tidings.errors.APIError`."""
    if response.is_success:
        return call.parse(response)
    raise api_error(response)


def api_error(response: httpx.Response) -> APIError:
    """The exception for an error response: the server's ``{"error": {code, message}}``
    when the body is one, else ``http_<status>`` with the body's text."""
    status = response.status_code
    body: Any = None
    try:
        body = response.json()
    except ValueError:
        body = response.text
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        code = error["code"]
        message = str(error.get("message", ""))
    else:
        code = f"http_{status}"
        text = response.text.strip()
        message = text[:500] if text else response.reason_phrase
    request = response.request
    return error_class_for(status)(
        status, code, message, body=body, method=request.method, url=str(request.url)
    )
