"""The HTTP API clients: :class:`Tidings` (blocking) and :class:`AsyncTidings` (asyncio).

Both have the same methods with the same arguments; every method builds its request with
:mod:`tidings._calls`, so the two cannot drift apart.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import (
    Any,
    AsyncIterator,
    Dict,
    Iterator,
    Mapping,
    Optional,
    Type,
    TypeVar,
    Union,
)

import httpx

from . import _calls as calls
from .errors import TidingsConnectionError
from .models import (
    ChannelMembers,
    Delivered,
    Delivery,
    Disconnected,
    Health,
    HistoryPage,
    Level,
    Publication,
    PublishResult,
    ServerStatus,
    Stats,
    UsersPage,
    UserStatus,
)

__all__ = ["Tidings", "AsyncTidings", "DEFAULT_BASE_URL", "DEFAULT_TIMEOUT"]

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
"""The ``tidings serve`` default bind address."""
DEFAULT_TIMEOUT = 10.0
"""Seconds, for connecting and for each read and write."""

_USER_AGENT = "tidings-sdk-python/0.1.0"


class _ClientBase:
    """What both clients share: where the server is, the API key, the request glue."""

    base_url: str
    api_key: Optional[str]

    def __init__(
        self,
        base_url: Optional[str],
        api_key: Optional[str],
        timeout: Union[float, httpx.Timeout, None],
        headers: Optional[Mapping[str, str]],
    ) -> None:
        url = base_url or os.environ.get("TIDINGS_URL") or DEFAULT_BASE_URL
        self.base_url = url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("TIDINGS_API_KEY")
        self.timeout = httpx.Timeout(timeout) if not isinstance(timeout, httpx.Timeout) else timeout
        self._headers: Dict[str, str] = {"User-Agent": _USER_AGENT, "Accept": "application/json"}
        self._headers.update(headers or {})

    def _request(self, call: calls.Call[Any]) -> Dict[str, Any]:
        request = calls.prepare(call, self.base_url, self.api_key)
        request["headers"] = {**self._headers, **request["headers"]}
        return request

    def __repr__(self) -> str:
        key = "set" if self.api_key else "unset"
        return f"{type(self).__name__}(base_url={self.base_url!r}, api_key={key})"


class Tidings(_ClientBase):
    """Blocking client of a Tidings server's HTTP API.

    >>> with Tidings("http://127.0.0.1:8000", api_key="...") as tidings:
    ...     tidings.publish("ticket:42", "chat_message", {"id": "m1", "content": "Hello"})

    ``base_url`` defaults to ``$TIDINGS_URL``, then ``http://127.0.0.1:8000``; ``api_key``
    to ``$TIDINGS_API_KEY``. ``http_client`` lets you pass your own ``httpx.Client``
    (proxies, transports, event hooks); it is then yours to close.
    """

    def __init__(
        self,
        base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        timeout: Union[float, httpx.Timeout, None] = DEFAULT_TIMEOUT,
        headers: Optional[Mapping[str, str]] = None,
        http_client: Optional[httpx.Client] = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, headers)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client(timeout=self.timeout)

    def close(self) -> None:
        """Closes the connection pool (not a client passed as ``http_client``)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> "Tidings":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def _send(self, call: calls.Call[T]) -> T:
        try:
            response = self._http.request(**self._request(call))
        except httpx.TransportError as error:
            raise TidingsConnectionError(f"{call.method} {self.base_url}{call.path}: {error}") from error
        return calls.finish(call, response)

    # -- publishing

    def publish(
        self,
        channel: str,
        event_type: str,
        data: Any = None,
        *,
        delivery: Optional[Delivery] = None,
        sender: Optional[str] = None,
    ) -> PublishResult:
        """Publishes the event ``{"type": event_type, "data": data}`` to ``channel``.

        ``delivery`` overrides the event type's default class (``reliable`` or
        ``ephemeral``). ``sender`` names the user the publication is on behalf of: the
        subscribers' ``message`` then carries it as ``sender``.
        """
        return self._send(calls.publish(channel, event_type, data, delivery=delivery, sender=sender))

    def notify_user(
        self,
        user_id: str,
        message: str,
        *,
        title: Optional[str] = None,
        level: Optional[Level] = None,
        data: Any = None,
        sender: Optional[str] = None,
    ) -> Delivered:
        """Sends a ``notification`` event to every connection (and the offline inbox) of a user."""
        return self._send(
            calls.notify_user(user_id, message, title=title, level=level, data=data, sender=sender)
        )

    def broadcast(self, event_type: str, data: Any = None, *, sender: Optional[str] = None) -> Delivered:
        """Sends an event to every connection of the server (channel ``broadcast``, not stored)."""
        return self._send(calls.broadcast(event_type, data, sender=sender))

    # -- reading

    def history(
        self,
        channel: str,
        *,
        since: Optional[int] = None,
        before: Optional[int] = None,
        limit: Optional[int] = None,
        token: Optional[str] = None,
    ) -> HistoryPage:
        """A page of the channel's stored publications, oldest first.

        With ``since``: the oldest after that offset (paging forward). Without it: the newest
        before ``before`` (or before the end). ``limit`` defaults to 100, at most 1000. With
        ``token`` (a user's JWT) the request is made as that user instead of with the API key.
        """
        return self._send(calls.history(channel, since=since, before=before, limit=limit, token=token))

    def iter_history(
        self,
        channel: str,
        *,
        since: int = 0,
        page_size: Optional[int] = None,
        token: Optional[str] = None,
    ) -> Iterator[Publication]:
        """Every stored publication after offset ``since``, oldest first, page by page."""
        call: Optional[calls.Call[HistoryPage]] = calls.history(
            channel, since=since, limit=page_size, token=token
        )
        while call is not None:
            page = self._send(call)
            yield from page.publications
            call = calls.next_history(page, limit=page_size, token=token)

    def users(self, *, limit: Optional[int] = None, after: Optional[str] = None) -> UsersPage:
        """A page of connected user ids, sorted; pass ``page.next`` as ``after`` for the next."""
        return self._send(calls.users(limit=limit, after=after))

    def iter_users(self, *, page_size: Optional[int] = None, after: Optional[str] = None) -> Iterator[str]:
        """Every connected user id, following ``next`` from page to page."""
        call: Optional[calls.Call[UsersPage]] = calls.users(limit=page_size, after=after)
        while call is not None:
            page = self._send(call)
            yield from page.users
            call = calls.next_users(page, limit=page_size, after=call.params.get("after"))

    def user_status(self, user_id: str) -> UserStatus:
        """Whether a user is connected, and with how many connections."""
        return self._send(calls.user_status(user_id))

    def is_user_connected(self, user_id: str) -> bool:
        return self.user_status(user_id).connected

    def channel_members(self, channel: str) -> ChannelMembers:
        """The channel's members, one entry per user with its connection count."""
        return self._send(calls.channel_members(channel))

    def stats(self) -> Stats:
        """Counts of connections, users, channels and deliveries."""
        return self._send(calls.stats())

    def status(self) -> ServerStatus:
        """``GET /api/status`` (no API key; only when the server enables the route)."""
        return self._send(calls.status())

    def healthz(self) -> Health:
        """``GET /healthz``: ``ok``, or ``degraded`` while a cluster's broker is away."""
        return self._send(calls.healthz())

    def openapi(self) -> Dict[str, Any]:
        """The server's OpenAPI document."""
        return self._send(calls.openapi())

    # -- acting

    def disconnect_user(self, user_id: str) -> Disconnected:
        """Closes every connection of a user (close code 4006; clients do not reconnect)."""
        return self._send(calls.disconnect_user(user_id))


class AsyncTidings(_ClientBase):
    """Asyncio client of a Tidings server's HTTP API; the methods of :class:`Tidings`, awaited.

    >>> async with AsyncTidings("http://127.0.0.1:8000", api_key="...") as tidings:
    ...     await tidings.notify_user("42", "Your report is ready", level="success")
    """

    def __init__(
        self,
        base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        timeout: Union[float, httpx.Timeout, None] = DEFAULT_TIMEOUT,
        headers: Optional[Mapping[str, str]] = None,
        http_client: Optional[httpx.AsyncClient] = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, headers)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient(timeout=self.timeout)

    async def aclose(self) -> None:
        """Closes the connection pool (not a client passed as ``http_client``)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> "AsyncTidings":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.aclose()

    async def _send(self, call: calls.Call[T]) -> T:
        try:
            response = await self._http.request(**self._request(call))
        except httpx.TransportError as error:
            raise TidingsConnectionError(f"{call.method} {self.base_url}{call.path}: {error}") from error
        return calls.finish(call, response)

    async def publish(
        self,
        channel: str,
        event_type: str,
        data: Any = None,
        *,
        delivery: Optional[Delivery] = None,
        sender: Optional[str] = None,
    ) -> PublishResult:
        """See :meth:`Tidings.publish`."""
        return await self._send(calls.publish(channel, event_type, data, delivery=delivery, sender=sender))

    async def notify_user(
        self,
        user_id: str,
        message: str,
        *,
        title: Optional[str] = None,
        level: Optional[Level] = None,
        data: Any = None,
        sender: Optional[str] = None,
    ) -> Delivered:
        """See :meth:`Tidings.notify_user`."""
        return await self._send(
            calls.notify_user(user_id, message, title=title, level=level, data=data, sender=sender)
        )

    async def broadcast(self, event_type: str, data: Any = None, *, sender: Optional[str] = None) -> Delivered:
        """See :meth:`Tidings.broadcast`."""
        return await self._send(calls.broadcast(event_type, data, sender=sender))

    async def history(
        self,
        channel: str,
        *,
        since: Optional[int] = None,
        before: Optional[int] = None,
        limit: Optional[int] = None,
        token: Optional[str] = None,
    ) -> HistoryPage:
        """See :meth:`Tidings.history`."""
        return await self._send(calls.history(channel, since=since, before=before, limit=limit, token=token))

    async def iter_history(
        self,
        channel: str,
        *,
        since: int = 0,
        page_size: Optional[int] = None,
        token: Optional[str] = None,
    ) -> AsyncIterator[Publication]:
        """See :meth:`Tidings.iter_history` (``async for``)."""
        call: Optional[calls.Call[HistoryPage]] = calls.history(
            channel, since=since, limit=page_size, token=token
        )
        while call is not None:
            page = await self._send(call)
            for publication in page.publications:
                yield publication
            call = calls.next_history(page, limit=page_size, token=token)

    async def users(self, *, limit: Optional[int] = None, after: Optional[str] = None) -> UsersPage:
        """See :meth:`Tidings.users`."""
        return await self._send(calls.users(limit=limit, after=after))

    async def iter_users(
        self, *, page_size: Optional[int] = None, after: Optional[str] = None
    ) -> AsyncIterator[str]:
        """See :meth:`Tidings.iter_users` (``async for``)."""
        call: Optional[calls.Call[UsersPage]] = calls.users(limit=page_size, after=after)
        while call is not None:
            page = await self._send(call)
            for user_id in page.users:
                yield user_id
            call = calls.next_users(page, limit=page_size, after=call.params.get("after"))

    async def user_status(self, user_id: str) -> UserStatus:
        """See :meth:`Tidings.user_status`."""
        return await self._send(calls.user_status(user_id))

    async def is_user_connected(self, user_id: str) -> bool:
        return (await self.user_status(user_id)).connected

    async def channel_members(self, channel: str) -> ChannelMembers:
        """See :meth:`Tidings.channel_members`."""
        return await self._send(calls.channel_members(channel))

    async def stats(self) -> Stats:
        """See :meth:`Tidings.stats`."""
        return await self._send(calls.stats())

    async def status(self) -> ServerStatus:
        """See :meth:`Tidings.status`."""
        return await self._send(calls.status())

    async def healthz(self) -> Health:
        """See :meth:`Tidings.healthz`."""
        return await self._send(calls.healthz())

    async def openapi(self) -> Dict[str, Any]:
        """See :meth:`Tidings.openapi`."""
        return await self._send(calls.openapi())

    async def disconnect_user(self, user_id: str) -> Disconnected:
        """See :meth:`Tidings.disconnect_user`."""
        return await self._send(calls.disconnect_user(user_id))
