"""Answering the server's back-end proxy calls: connect, subscribe, publish and rpc.

With ``[proxy]`` in its configuration the server asks your back end over HTTP
(``crates/server/src/proxy.rs``). Each call is a ``POST`` of JSON with

- ``X-Tidings-Proxy: connect | subscribe | publish | rpc``,
- with ``proxy.secret``: ``X-Tidings-Signature: t=<unix s>,v1=<hex HMAC-SHA256>``, the
  same as on webhooks (:func:`tidings.webhooks.verify_signature`).

=========  ==========================================  ====================================
call       request (:class:`ConnectRequest`, ...)      answer (:class:`ProxyAnswer`)
=========  ==========================================  ====================================
connect    ``{user_id, claims, path, headers}``         :func:`admit` (as is, as a user,
           (``user_id`` and ``claims`` are ``None``     within channels) or :func:`deny`
           without a token)                             (the socket closes with 4003)
subscribe  ``{user_id, channel, claims}``               :func:`allow` or :func:`deny` (4003)
publish    ``{user_id, channel, event, claims}``        :func:`allow`, :func:`replace` (publish
                                                        this event instead) or :func:`deny`
rpc        ``{user_id, method, data, claims}``          :func:`rpc_result` or :func:`rpc_error`
                                                        (``not_found`` is 4004, others 4003)
=========  ==========================================  ====================================

Framework-free::

    from tidings.proxy import verify_and_parse, allow, deny, SubscribeRequest

    request = verify_and_parse(PROXY_SECRET, headers, raw_body)   # the raw bytes
    if isinstance(request, SubscribeRequest):
        answer = allow() if may_read(request.user_id, request.channel) else deny("not yours")
    return 200, answer.to_dict()

With FastAPI, :class:`tidings.fastapi.ProxyRouter` does all of it.

The server reads answers strictly: a field other than ``allow``, ``message``, ``event``,
``data``, ``error``, ``user_id`` and ``channels`` is an error (so a misspelt ``allowed`` never
passes as an allow), and :meth:`ProxyAnswer.to_dict` never sends another. An empty or
``null`` body counts as ``{}``. Other statuses count too: a ``403`` refuses (4003; FastAPI's
``{"detail": ...}`` is the message), a ``500`` (an exception in your handler) is the app's
failure (4500, not tried again), another ``5xx`` or no answer within ``proxy.timeout`` gives
the client a retryable 4503 (connect and subscribe calls are first tried ``proxy.retries``
more times), and any other status is 4500.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Dict, List, Literal, Mapping, Optional, Tuple, Type, Union

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ProxyRequestError
from .models import Event
from .webhooks import (
    DEFAULT_TOLERANCE,
    SIGNATURE_HEADER,
    _bytes,
    header_value,
    sign,
    verify_signature,
)

__all__ = [
    "PROXY_HEADER",
    "SIGNATURE_HEADER",
    "PROXY_KINDS",
    "ANSWER_FIELDS",
    "ProxyKind",
    "ConnectRequest",
    "SubscribeRequest",
    "PublishRequest",
    "RpcRequest",
    "ProxyRequest",
    "RpcErrorBody",
    "ProxyAnswer",
    "Refused",
    "admit",
    "allow",
    "deny",
    "replace",
    "rpc_result",
    "rpc_error",
    "parse_request",
    "verify_and_parse",
    "sign",
]

PROXY_HEADER = "X-Tidings-Proxy"
"""The header naming the call: ``connect``, ``subscribe``, ``publish`` or ``rpc``."""

ProxyKind = Literal["connect", "subscribe", "publish", "rpc"]
PROXY_KINDS = ("connect", "subscribe", "publish", "rpc")

ANSWER_FIELDS = ("allow", "message", "event", "data", "error", "user_id", "channels")
"""Every field the server reads in an answer; it refuses any other (4500)."""

Secret = Union[str, bytes, List[Union[str, bytes]], Tuple[Union[str, bytes], ...]]


# ---------------------------------------------------------------- requests


class _ProxyCall(BaseModel):
    model_config = ConfigDict(extra="allow")

    kind: ClassVar[str]


class ConnectRequest(_ProxyCall):
    """A WebSocket connection being admitted, before its ``connected`` frame.

    With a token, ``user_id`` and ``claims`` are the token's; without one both are ``None``
    and the answer must name the user (:func:`admit` with ``user_id``, e.g. from a session
    cookie), or the client is closed with 4001 (unless the server has ``allow_anonymous``).
    """

    kind: ClassVar[str] = "connect"

    user_id: Optional[str] = None
    """The token's user, ``None`` when the client sent no token."""
    claims: Optional[Dict[str, Any]] = None
    """The token's claims, ``None`` when the client sent no token."""
    path: str = "/ws"
    """The request path: ``/ws``, or a route's (``[[routes]]``)."""
    headers: Dict[str, str] = {}
    """The request's ``cookie``, ``origin``, ``user-agent``, ``x-forwarded-for`` and
    ``x-real-ip`` headers, those it had, by lower-case name."""

    @property
    def has_token(self) -> bool:
        """Whether the client connected with a (valid) token."""
        return self.user_id is not None

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """One of :attr:`headers`, whatever the case of ``name``."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return default

    @property
    def cookies(self) -> Dict[str, str]:
        """The ``Cookie`` header's cookies by name (the first of a repeated name wins;
        surrounding double quotes are removed, nothing else is decoded)."""
        found: Dict[str, str] = {}
        for part in (self.header("cookie") or "").split(";"):
            name, sep, value = part.partition("=")
            name, value = name.strip(), value.strip()
            if not sep or not name:
                continue
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            found.setdefault(name, value)
        return found

    def cookie(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """One cookie's value (see :attr:`cookies`)."""
        return self.cookies.get(name, default)


class _ProxyRequest(_ProxyCall):
    user_id: str
    """The user, always a string (a numeric id from the token arrives as ``"42"``; a user
    the connect call named arrives as named)."""
    claims: Dict[str, Any] = {}
    """The user's token claims. ``claims["sub"]`` is the user id even with
    ``jwt.user_id_claim`` (the token's own ``sub`` is then ``claims["token_sub"]``), or
    the user a connect answer named. A connection admitted without a token has only
    ``sub``, ``exp`` and the granted ``channels``."""


class SubscribeRequest(_ProxyRequest):
    """A user asks to read ``channel``: subscribe, a route's channel, history or presence."""

    kind: ClassVar[str] = "subscribe"

    channel: str


class PublishRequest(_ProxyRequest):
    """A user publishes ``event`` to ``channel`` from a connection (a back end's
    publications through the HTTP API are never proxied)."""

    kind: ClassVar[str] = "publish"

    channel: str
    event: Event


class RpcRequest(_ProxyRequest):
    """A user's ``rpc`` call: ``method`` with its arguments ``data`` (any JSON, ``None``
    when the client sent none)."""

    kind: ClassVar[str] = "rpc"

    method: str
    data: Any = None


ProxyRequest = Union[ConnectRequest, SubscribeRequest, PublishRequest, RpcRequest]

_BY_KIND: Dict[str, Type[_ProxyCall]] = {
    "connect": ConnectRequest,
    "subscribe": SubscribeRequest,
    "publish": PublishRequest,
    "rpc": RpcRequest,
}


# ---------------------------------------------------------------- answers


class RpcErrorBody(BaseModel):
    model_config = ConfigDict(extra="ignore")  # as the server: read, then ignored

    code: str
    """``not_found`` gives the client 4004, ``unavailable`` 4503, any other 4003."""
    message: str = ""


class ProxyAnswer(BaseModel):
    """The body of a ``200`` answer, as the server reads it. Build it with :func:`admit`,
    :func:`allow`, :func:`deny`, :func:`replace`, :func:`rpc_result` or :func:`rpc_error`;
    only the fields set are sent (:meth:`to_dict`), and never any but :data:`ANSWER_FIELDS`
    (the server refuses an answer with another field)."""

    model_config = ConfigDict(extra="forbid")

    allow: Optional[bool] = None
    message: Optional[str] = None
    event: Optional[Event] = None
    data: Any = None
    error: Optional[RpcErrorBody] = None
    user_id: Optional[str] = None
    """connect: the user the connection is (required when it had no token)."""
    channels: Optional[List[str]] = None
    """connect: the channels the connection may use (exact names or ``prefix*``), instead
    of its token's ``channels`` claim."""

    def to_dict(self) -> Dict[str, Any]:
        """The JSON body: the fields that were set, so ``allow()`` is ``{}`` and
        ``rpc_result(None)`` is ``{"data": null}``. An event is sent as ``{type, data}``
        and an error as ``{code, message}``, whatever else their models hold."""
        fields = [name for name in ANSWER_FIELDS if name in self.model_fields_set]
        body = self.model_dump(mode="json", include=set(fields))
        if isinstance(body.get("event"), dict):
            body["event"] = {"type": body["event"]["type"], "data": body["event"].get("data")}
        if isinstance(body.get("error"), dict):
            body["error"] = {"code": body["error"]["code"], "message": body["error"].get("message", "")}
        return {name: body[name] for name in fields if name in body}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode("utf-8")

    @property
    def refused(self) -> bool:
        """Whether the server reads this as a refusal (or an rpc error)."""
        return self.error is not None or self.allow is False


def admit(user_id: Optional[str] = None, channels: Optional[List[str]] = None) -> ProxyAnswer:
    """Admit a connection (the connect call): ``admit()`` as it is (``{}``: the token's
    user; a client without a token is then closed with 4001), ``admit("42")`` as that user
    (from a session cookie, say), ``admit(channels=["ticket:9", "team:*"])`` limited to
    those channels (exact names or ``prefix*``)."""
    fields: Dict[str, Any] = {}
    if user_id is not None:
        if not isinstance(user_id, str) or not user_id:
            raise ValueError(f"admit() names a user with a non-empty string, not {user_id!r}")
        fields["user_id"] = user_id
    if channels is not None:
        if isinstance(channels, (str, bytes)):
            raise TypeError("admit(channels=...) takes a list of channel names, not one string")
        fields["channels"] = list(channels)
    return ProxyAnswer(**fields)


def allow() -> ProxyAnswer:
    """Let the connection (as it is), the subscription or the publication (as sent)
    through: ``{}``."""
    return ProxyAnswer()


def deny(message: str = "refused by the back end") -> ProxyAnswer:
    """Refuse a connection, subscription or publication: the client gets 4003 with
    ``message`` (a refused connection is closed with that code and reason)."""
    return ProxyAnswer(allow=False, message=message)


def replace(event_type: str, data: Any = None) -> ProxyAnswer:
    """Publish this event instead of the client's (validated, enriched); it meets the same
    size and event checks as the original."""
    return ProxyAnswer(event=Event(type=event_type, data=data))


def rpc_result(data: Any = None) -> ProxyAnswer:
    """The reply to an rpc call: any JSON value (pydantic models are dumped)."""
    return ProxyAnswer(data=data)


def rpc_error(code: str, message: str = "") -> ProxyAnswer:
    """Fail an rpc call: ``not_found`` is 4004, ``unavailable`` 4503, any other code 4003;
    the client sees ``message`` (the code when empty)."""
    return ProxyAnswer(error=RpcErrorBody(code=code, message=message))


class Refused(Exception):
    """Raise it in a :class:`tidings.fastapi.ProxyRouter` handler to refuse: a connect,
    subscribe or publish call answers :func:`deny`, an rpc call :func:`rpc_error` with
    ``code``."""

    def __init__(self, message: str = "refused by the back end", *, code: str = "forbidden") -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def answer(self, kind: str) -> ProxyAnswer:
        """The answer for a call of ``kind``."""
        if kind == "rpc":
            return rpc_error(self.code, self.message)
        return deny(self.message)


# ---------------------------------------------------------------- parsing


def parse_request(
    kind: Optional[str],
    body: Union[bytes, bytearray, memoryview, str, Mapping[str, Any]],
) -> ProxyRequest:
    """The typed request of a ``kind`` call (the ``X-Tidings-Proxy`` header) from its body.
    Checks no signature: see :func:`verify_and_parse`. Raises
    :class:`~tidings.errors.ProxyRequestError`."""
    cls = _BY_KIND.get(kind or "")
    if cls is None:
        raise ProxyRequestError(
            f"{PROXY_HEADER} is {kind!r}, expected one of {', '.join(PROXY_KINDS)}"
        )
    if isinstance(body, Mapping):
        payload: Any = dict(body)
    else:
        try:
            payload = json.loads(_bytes(body))
        except ValueError as error:
            raise ProxyRequestError(f"{kind} proxy body is not JSON: {error}") from error
    try:
        return cls.model_validate(payload)  # type: ignore[return-value]
    except ValidationError as error:
        raise ProxyRequestError(f"invalid {kind} proxy body: {error}") from error


def verify_and_parse(
    secret: Optional[Secret],
    headers: Mapping[str, str],
    body: Union[bytes, bytearray, memoryview, str],
    *,
    kind: Optional[ProxyKind] = None,
    tolerance: Optional[float] = DEFAULT_TOLERANCE,
    now: Optional[float] = None,
    unsigned: bool = False,
) -> ProxyRequest:
    """Checks a proxy call's signature over its **raw** body, then returns its typed request.

    ``headers`` is any mapping (a framework's, or a plain ``dict`` in any case). ``kind``,
    when given, is the call this route answers: another ``X-Tidings-Proxy`` is refused.
    ``secret`` is ``proxy.secret`` (a list while rotating); for a server without one pass
    ``secret=None, unsigned=True`` (then keep the route off the public network).

    Raises :class:`~tidings.errors.WebhookSignatureError` (a bad signature: answer 401) or
    :class:`~tidings.errors.ProxyRequestError` (not a proxy call: answer 400).
    """
    if secret is not None:
        verify_signature(secret, header_value(headers, SIGNATURE_HEADER), body, tolerance=tolerance, now=now)
    elif not unsigned:
        raise ValueError(
            "no proxy secret given: pass the server's proxy.secret, or unsigned=True for a "
            "server without one"
        )
    got = header_value(headers, PROXY_HEADER)
    if got is not None:
        got = got.strip().lower()
    if kind is not None and got != kind:
        raise ProxyRequestError(f"{PROXY_HEADER} is {got!r} on the {kind} route")
    return parse_request(got, body)
