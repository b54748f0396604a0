"""The exceptions the SDK raises.

Everything derives from :class:`TidingsError`::

    TidingsError
    ├── TidingsConnectionError        the server could not be reached (or timed out)
    ├── UnexpectedResponseError       a 2xx answer the SDK cannot read
    ├── APIError                      the server answered with an error status
    │   ├── BadRequestError           400 / 415 / 422: bad_request, bad_frame (invalid channel, event)
    │   ├── AuthenticationError       401: unauthorized (missing or wrong API key, bad user token)
    │   ├── PermissionDeniedError     403: forbidden (reserved channel, user may not read it)
    │   ├── NotFoundError             404: not_found (also a route the server does not have)
    │   ├── PayloadTooLargeError      413: frame_too_large
    │   ├── RateLimitedError          429: rate_limited
    │   └── ServerError               5xx: unavailable, internal_error
    │       └── UnavailableError      503: unavailable (the store failed, shutting down)
    ├── TokenError                    tidings.tokens: a token that does not verify
    │   └── TokenExpiredError
    ├── WebhookSignatureError         tidings.webhooks (and tidings.proxy): a signature that does not verify
    │   ├── SignatureFormatError      the header is missing or malformed
    │   ├── SignatureMismatchError    no signature matches the body
    │   └── SignatureTimestampError   the timestamp is too old (or too far ahead)
    └── ProxyRequestError             tidings.proxy: a signed request that is not a proxy call
                                      (wrong X-Tidings-Proxy kind, unreadable body); also a ValueError
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type

__all__ = [
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


class TidingsError(Exception):
    """Base class of every exception raised by this SDK."""


class TidingsConnectionError(TidingsError):
    """The request did not get an answer: connection refused, DNS, timeout, TLS."""


class UnexpectedResponseError(TidingsError):
    """The server answered 2xx with a body that is not what the API documents (a proxy's
    page, or a server of another version)."""

    def __init__(self, message: str, *, status: int, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class APIError(TidingsError):
    """The server answered with a non-2xx status.

    ``code`` is the server's machine-readable name (``unauthorized``, ``bad_request``,
    ``bad_frame``, ``forbidden``, ``frame_too_large``, ``unavailable``, ...): the
    ``error.code`` of the JSON body, or ``http_<status>`` when the body was not the
    server's typed error (an unknown route, a proxy's page). ``message`` is for humans and
    logs; do not parse it.
    """

    status: int
    code: str
    message: str
    body: Any

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        body: Any = None,
        method: Optional[str] = None,
        url: Optional[str] = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.body = body
        self.method = method
        self.url = url
        super().__init__(f"{status} {code}: {message}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, message={self.message!r})"


class BadRequestError(APIError):
    """400 (and 415 / 422 for a body the server could not read)."""


class AuthenticationError(APIError):
    """401: the API key is missing or wrong, or the server has none configured."""


class PermissionDeniedError(APIError):
    """403: the channel is reserved (``broadcast``), or a user token may not read it."""


class NotFoundError(APIError):
    """404: the route does not exist on this server (or is switched off)."""


class PayloadTooLargeError(APIError):
    """413: the event is larger than the server's frame limit."""


class RateLimitedError(APIError):
    """429."""


class ServerError(APIError):
    """5xx."""


class UnavailableError(ServerError):
    """503: the store failed or the server is shutting down; the request may be retried."""


_BY_STATUS: Dict[int, Type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    415: BadRequestError,
    422: BadRequestError,
    429: RateLimitedError,
    503: UnavailableError,
}


def error_class_for(status: int) -> Type[APIError]:
    """The :class:`APIError` subclass raised for an HTTP status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return ServerError
    return APIError


class TokenError(TidingsError):
    """A token is malformed, not HS256, wrongly signed, or has the wrong audience/issuer."""


class TokenExpiredError(TokenError):
    """The token's ``exp`` is in the past."""


class WebhookSignatureError(TidingsError):
    """A webhook or proxy request does not carry a valid ``X-Tidings-Signature``."""


class SignatureFormatError(WebhookSignatureError):
    """The header is missing or is not ``t=<unix seconds>,v1=<hex>``."""


class SignatureMismatchError(WebhookSignatureError):
    """No ``v1`` signature in the header matches the body with this secret."""


class SignatureTimestampError(WebhookSignatureError):
    """The signature's timestamp is outside the tolerance (a replayed or delayed request)."""

    def __init__(self, message: str, *, timestamp: int, now: int) -> None:
        super().__init__(message)
        self.timestamp = timestamp
        self.now = now


class ProxyRequestError(TidingsError, ValueError):
    """A proxy request (:mod:`tidings.proxy`) whose ``X-Tidings-Proxy`` kind is missing,
    unknown or not the one expected, or whose body is not that kind's JSON."""
