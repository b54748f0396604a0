"""Receiving the server's webhooks: checking their signature and reading their events.

Every webhook request is a ``POST`` with a JSON body and these headers
(``crates/server/src/webhooks.rs``):

- ``X-Tidings-Event-Id``: the event id (``evt_<32 hex>``); a retried event keeps it, so use
  it to drop duplicates (delivery is at least once);
- ``X-Tidings-Event``: the kind, e.g. ``message.published``;
- ``X-Tidings-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.

The body is ``{"id": ..., "type": ..., "created_at": <ms>, "data": {...}}``. Verify the
signature over the **raw** body bytes before parsing them::

    from tidings.webhooks import construct_event

    event = construct_event(SECRET, request.headers["X-Tidings-Signature"], raw_body)
    if event.type == "message.published":
        print(event.data.channel, event.data.event.type, event.data.sender)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple, Type, Union

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import (
    SignatureFormatError,
    SignatureMismatchError,
    SignatureTimestampError,
    WebhookSignatureError,
)
from .models import Event

__all__ = [
    "SIGNATURE_HEADER",
    "EVENT_HEADER",
    "EVENT_ID_HEADER",
    "DEFAULT_TOLERANCE",
    "EVENT_KINDS",
    "sign",
    "verify_signature",
    "parse_event",
    "construct_event",
    "MessagePublishedData",
    "UserSessionData",
    "ChannelMembershipData",
    "WebhookEventBase",
    "MessagePublishedEvent",
    "UserConnectedEvent",
    "UserDisconnectedEvent",
    "ChannelJoinedEvent",
    "ChannelLeftEvent",
    "UnknownWebhookEvent",
    "WebhookEvent",
]

SIGNATURE_HEADER = "X-Tidings-Signature"
EVENT_HEADER = "X-Tidings-Event"
EVENT_ID_HEADER = "X-Tidings-Event-Id"

DEFAULT_TOLERANCE = 300
"""Seconds a signature's timestamp may be away from now (either way) before it is refused."""

EVENT_KINDS = (
    "message.published",
    "user.connected",
    "user.disconnected",
    "channel.joined",
    "channel.left",
)
"""Every kind the server sends (``EVENT_KINDS`` in ``crates/server/src/webhooks.rs``)."""


# ---------------------------------------------------------------- signatures


def _bytes(body: Union[bytes, bytearray, memoryview, str]) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body)


def _hmac(secret: Union[str, bytes], timestamp: int, body: bytes) -> str:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    mac = hmac.new(key, f"{timestamp}.".encode("ascii"), hashlib.sha256)
    mac.update(body)
    return mac.hexdigest()


def sign(
    secret: Union[str, bytes],
    body: Union[bytes, str],
    *,
    timestamp: Optional[int] = None,
) -> str:
    """The ``X-Tidings-Signature`` value the server would send for ``body`` (for tests, and
    for relaying a webhook onwards)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={_hmac(secret, t, _bytes(body))}"


def _parse_header(header: Optional[str]) -> Tuple[int, List[str]]:
    if not header or not isinstance(header, str):
        raise SignatureFormatError(f"missing {SIGNATURE_HEADER} header")
    timestamp: Optional[int] = None
    signatures: List[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureFormatError(f"malformed {SIGNATURE_HEADER} item {item.strip()!r}")
        if key == "t":
            if not value.isdigit():
                raise SignatureFormatError(f"{SIGNATURE_HEADER} timestamp {value!r} is not Unix seconds")
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value.lower())
        # Unknown schemes (a future v2) are skipped, so that a server can add one.
    if timestamp is None:
        raise SignatureFormatError(f"{SIGNATURE_HEADER} has no t=<timestamp>")
    if not signatures:
        raise SignatureFormatError(f"{SIGNATURE_HEADER} has no v1=<signature>")
    return timestamp, signatures


def verify_signature(
    secret: Union[str, bytes, List[Union[str, bytes]], Tuple[Union[str, bytes], ...]],
    header: Optional[str],
    body: Union[bytes, bytearray, memoryview, str],
    *,
    tolerance: Optional[float] = DEFAULT_TOLERANCE,
    now: Optional[float] = None,
) -> int:
    """Checks a webhook's ``X-Tidings-Signature`` header against its raw body.

    Returns the signature's timestamp. Raises
    :class:`~tidings.errors.SignatureFormatError` (missing or malformed header),
    :class:`~tidings.errors.SignatureMismatchError` (no ``v1`` matches: wrong secret, or a
    body changed on the way) or :class:`~tidings.errors.SignatureTimestampError` (the
    timestamp is more than ``tolerance`` seconds from ``now``; ``tolerance=None`` skips the
    check). ``secret`` may be a list, to accept the old and the new secret while rotating.
    ``body`` must be the bytes as received: re-encoded JSON does not verify.
    """
    timestamp, signatures = _parse_header(header)
    raw = _bytes(body)
    secrets = list(secret) if isinstance(secret, (list, tuple)) else [secret]
    if not secrets:
        raise ValueError("no webhook secret given")
    matched = any(
        hmac.compare_digest(_hmac(s, timestamp, raw), candidate)
        for s in secrets
        for candidate in signatures
    )
    if not matched:
        raise SignatureMismatchError("no signature matches the body with this secret")
    if tolerance is not None:
        current = int(time.time() if now is None else now)
        if abs(current - timestamp) > tolerance:
            which = "too old" if timestamp < current else "too far in the future"
            raise SignatureTimestampError(
                f"signature timestamp {timestamp} is {which} (now {current}, tolerance {tolerance}s)",
                timestamp=timestamp,
                now=current,
            )
    return timestamp


# ---------------------------------------------------------------- events


class MessagePublishedData(BaseModel):
    """``message.published``: a stored publication."""

    model_config = ConfigDict(extra="allow")

    channel: str
    offset: Optional[int] = None
    epoch: str
    ts: int
    """Server time of publication, milliseconds since the Unix epoch."""
    sender: Optional[str] = None
    """The publishing user; ``None`` for a back end's publication without a sender."""
    event: Event


class UserSessionData(BaseModel):
    """``user.connected`` / ``user.disconnected``: one connection of a user."""

    model_config = ConfigDict(extra="allow")

    user_id: str
    session_id: str


class ChannelMembershipData(BaseModel):
    """``channel.joined`` / ``channel.left``: a user's first connection joined a channel, or
    its last one left it."""

    model_config = ConfigDict(extra="allow")

    channel: str
    user_id: str


class WebhookEventBase(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    """The event id (``evt_...``), the same on every retry: the idempotency key."""
    type: str
    created_at: int
    """When the event happened, milliseconds since the Unix epoch."""


class MessagePublishedEvent(WebhookEventBase):
    type: Literal["message.published"]
    data: MessagePublishedData


class UserConnectedEvent(WebhookEventBase):
    type: Literal["user.connected"]
    data: UserSessionData


class UserDisconnectedEvent(WebhookEventBase):
    type: Literal["user.disconnected"]
    data: UserSessionData


class ChannelJoinedEvent(WebhookEventBase):
    type: Literal["channel.joined"]
    data: ChannelMembershipData


class ChannelLeftEvent(WebhookEventBase):
    type: Literal["channel.left"]
    data: ChannelMembershipData


class UnknownWebhookEvent(WebhookEventBase):
    """A kind this SDK does not know (a newer server); ``data`` is left as JSON."""

    data: Any = None


WebhookEvent = Union[
    MessagePublishedEvent,
    UserConnectedEvent,
    UserDisconnectedEvent,
    ChannelJoinedEvent,
    ChannelLeftEvent,
    UnknownWebhookEvent,
]

_BY_KIND: Dict[str, Type[WebhookEventBase]] = {
    "message.published": MessagePublishedEvent,
    "user.connected": UserConnectedEvent,
    "user.disconnected": UserDisconnectedEvent,
    "channel.joined": ChannelJoinedEvent,
    "channel.left": ChannelLeftEvent,
}


def parse_event(body: Union[bytes, bytearray, memoryview, str, Mapping[str, Any]]) -> WebhookEvent:
    """The typed event of a webhook body (raw bytes, text, or already decoded JSON).

    Does not check the signature: call :func:`verify_signature` first, or use
    :func:`construct_event`. Raises ``ValueError`` for a body that is not a webhook event.
    """
    if isinstance(body, Mapping):
        payload: Any = dict(body)
    else:
        try:
            payload = json.loads(_bytes(body))
        except ValueError as error:
            raise ValueError(f"webhook body is not JSON: {error}") from error
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise ValueError("webhook body is not an event: expected an object with a string `type`")
    cls = _BY_KIND.get(payload["type"], UnknownWebhookEvent)
    try:
        return cls.model_validate(payload)  # type: ignore[return-value]
    except ValidationError as error:
        raise ValueError(f"invalid {payload['type']} webhook body: {error}") from error


def construct_event(
    secret: Union[str, bytes, List[Union[str, bytes]], Tuple[Union[str, bytes], ...]],
    header: Optional[str],
    body: Union[bytes, bytearray, memoryview, str],
    *,
    tolerance: Optional[float] = DEFAULT_TOLERANCE,
    now: Optional[float] = None,
) -> WebhookEvent:
    """:func:`verify_signature`, then :func:`parse_event`: the typed event of a request
    whose signature is valid. Raises :class:`~tidings.errors.WebhookSignatureError` for a
    bad signature and ``ValueError`` for a signed body that is not an event."""
    verify_signature(secret, header, body, tolerance=tolerance, now=now)
    return parse_event(body)


def header_value(headers: Mapping[str, str], name: str) -> Optional[str]:
    """A header from a plain ``dict`` whatever its case (framework header maps are already
    case-insensitive)."""
    if name in headers:
        return headers[name]
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


__all__ += ["header_value", "WebhookSignatureError"]
