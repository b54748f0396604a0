"""Python back-end SDK for the Tidings real-time messaging server.

- :class:`Tidings` / :class:`AsyncTidings`: the HTTP API (publish, notify, broadcast,
  history, presence, stats, disconnect);
- :mod:`tidings.tokens`: HS256 client tokens (:func:`mint_token`, :func:`verify_token`);
- :mod:`tidings.webhooks`: webhook signatures and typed events
  (:func:`verify_signature`, :func:`parse_event`, :func:`construct_event`);
- :mod:`tidings.proxy`: answering the server's back-end proxy calls (connect, subscribe,
  publish, rpc): typed requests and answers, :func:`tidings.proxy.verify_and_parse`;
- :mod:`tidings.fastapi`: a FastAPI dependency for webhooks and
  :class:`~tidings.fastapi.ProxyRouter` for proxy calls (optional extra);
- :mod:`tidings.errors`: the exception hierarchy (:class:`TidingsError` and below).
"""

from .client import DEFAULT_BASE_URL, DEFAULT_TIMEOUT, AsyncTidings, Tidings
from .errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    SignatureFormatError,
    SignatureMismatchError,
    SignatureTimestampError,
    TidingsConnectionError,
    TidingsError,
    TokenError,
    TokenExpiredError,
    UnavailableError,
    ProxyRequestError,
    UnexpectedResponseError,
    WebhookSignatureError,
)
from .models import (
    ChannelMembers,
    Delivered,
    Disconnected,
    Event,
    Health,
    HistoryPage,
    Member,
    Publication,
    PublishResult,
    ServerStatus,
    Stats,
    UsersPage,
    UserStatus,
)
from .tokens import TokenClaims, mint_token, verify_token
from .webhooks import WebhookEvent, construct_event, parse_event, verify_signature

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Tidings",
    "AsyncTidings",
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    # models
    "Event",
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
    "Stats",
    # tokens
    "TokenClaims",
    "mint_token",
    "verify_token",
    # webhooks
    "WebhookEvent",
    "verify_signature",
    "parse_event",
    "construct_event",
    # errors
    "TidingsError",
    "TidingsConnectionError",
    "UnexpectedResponseError",
    "APIError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "ServerError",
    "UnavailableError",
    "TokenError",
    "TokenExpiredError",
    "WebhookSignatureError",
    "SignatureFormatError",
    "SignatureMismatchError",
    "SignatureTimestampError",
    "ProxyRequestError",
]
