"""Typed bodies and answers of the Tidings HTTP API (``crates/server/src/api.rs``).

Request models serialize without their unset fields (``model_dump(exclude_none=True)``), so
an optional field the caller did not give is not sent at all. Answer models keep fields a
newer server adds (``extra="allow"``) and read enumerations (``scope``, ``status``) as plain
strings, so that a server growing compatibly does not break an older SDK.
"""

from typing import Any, Dict, List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Delivery",
    "Level",
    "Scope",
    "Event",
    "PublishRequest",
    "NotifyRequest",
    "BroadcastRequest",
    "PublishResult",
    "Delivered",
    "UserStatus",
    "Member",
    "ChannelMembers",
    "Disconnected",
    "Publication",
    "HistoryPage",
    "UsersPage",
    "ServerStatus",
    "Health",
    "NodeLoad",
    "NodeStats",
    "ClusterStats",
    "Stats",
]

Delivery = Literal["reliable", "ephemeral"]
"""Delivery class of a publication: ``reliable`` (stored, offset, never dropped) or
``ephemeral`` (not stored, may be coalesced or dropped under pressure)."""

Level = Literal["info", "success", "warning", "error"]
"""Level of a notification."""

Scope = str
"""What a count covers: ``"node"`` (this node only) or ``"cluster"`` (every node)."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_json(self) -> Dict[str, Any]:
        """The JSON body, without the fields left unset."""
        return self.model_dump(mode="json", exclude_none=True)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class Event(BaseModel):
    """An event: ``{"type": "...", "data": ...}``. ``data`` is any JSON value."""

    model_config = ConfigDict(extra="allow")

    type: str
    data: Any = None


# ---------------------------------------------------------------- requests


class PublishRequest(_Request):
    """``POST /api/publish``."""

    channel: str
    event: Event
    delivery: Optional[Delivery] = None
    sender: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        body = super().to_json()
        # `data: null` is a value the subscribers see; keep it rather than drop it.
        body["event"] = {"type": self.event.type, "data": self.event.data}
        return body


class NotifyRequest(_Request):
    """``POST /api/notify/user/{id}``: a ``notification`` event to the user's personal channel."""

    message: str
    title: Optional[str] = None
    level: Optional[Level] = None
    data: Optional[Any] = None
    sender: Optional[str] = None


class BroadcastRequest(_Request):
    """``POST /api/broadcast``."""

    event: Event
    sender: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        body = super().to_json()
        body["event"] = {"type": self.event.type, "data": self.event.data}
        return body


# ---------------------------------------------------------------- answers


class PublishResult(_Answer):
    """Answer to ``publish``."""

    offset: Optional[int] = None
    """The publication's offset in the channel; ``None`` for ephemeral publications."""
    epoch: str
    """The channel's epoch (offsets compare only within one epoch)."""
    delivered: int
    """Connections on the receiving node it was queued for (informational)."""
    scope: Scope


class Delivered(_Answer):
    """Answer to ``notify_user`` and ``broadcast``."""

    delivered: int
    scope: Scope


class UserStatus(_Answer):
    """Answer to ``user_status``."""

    user_id: str
    connected: bool
    connections: int
    scope: Scope


class Member(_Answer):
    """One user in a channel, with how many of its connections are subscribed."""

    user_id: str
    connections: int


class ChannelMembers(_Answer):
    """Answer to ``channel_members``."""

    channel: str
    members: List[Member]
    scope: Scope

    @property
    def user_ids(self) -> List[str]:
        return [m.user_id for m in self.members]


class Disconnected(_Answer):
    """Answer to ``disconnect_user``."""

    disconnected: int
    """Connections closed on the receiving node."""
    scope: Scope


class Publication(_Answer):
    """A stored publication (the ``data`` of a ``message`` frame)."""

    channel: str
    offset: Optional[int] = None
    epoch: str
    ts: int
    """Server time of publication, milliseconds since the Unix epoch."""
    sender: Optional[str] = None
    """The publishing user; ``None`` when a back end published without naming one."""
    event: Event


class HistoryPage(_Answer):
    """Answer to ``history``: a page of stored publications, oldest first."""

    channel: str
    epoch: str
    offset: int
    """The channel's latest offset (not the page's)."""
    publications: List[Publication]


class UsersPage(_Answer):
    """Answer to ``users``: a page of connected user ids, sorted."""

    users: List[str]
    next: Optional[str] = None
    """Pass it as ``after`` for the next page; ``None`` on the last page."""
    scope: Scope


class ServerStatus(_Answer):
    """Answer to ``GET /api/status`` (when the server enables that route)."""

    status: str
    """``"ok"`` or ``"degraded"``."""
    connections: int
    users: int


class Health(BaseModel):
    """Answer to ``GET /healthz`` (a text body, ``ok`` or ``degraded: <why>``)."""

    status: str
    """``"ok"`` or ``"degraded"``."""
    detail: str = ""
    """The text after ``degraded:``, if any."""
    text: str = ""
    """The body as the server sent it."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_text(cls, text: str) -> "Health":
        text = text.strip()
        status, _, detail = text.partition(":")
        return cls(status=status.strip() or text, detail=detail.strip(), text=text)


class NodeLoad(_Answer):
    connections: int
    users: int
    channels: int
    publications: int
    deliveries: int


class NodeStats(_Answer):
    node: str
    heard_ms_ago: int
    load: Optional[NodeLoad] = None


class ClusterStats(_Answer):
    node: str
    nodes: int
    connections: int
    users: int
    publications: int
    deliveries: int
    others: List[NodeStats] = Field(default_factory=list)


class Stats(_Answer):
    """Answer to ``stats``: this node's counters, and with a broker the cluster's."""

    connections: int
    users: int
    channels: int
    publications: int
    deliveries: int
    dropped: int
    slow_consumers: int
    queued_frames: int
    queued_bytes: int
    peak_queue_bytes: int
    cluster: Optional[ClusterStats] = None
