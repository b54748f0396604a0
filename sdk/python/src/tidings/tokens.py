"""Client tokens: HS256 JWTs the server verifies with its ``jwt.secret``
(``TIDINGS_JWT_SECRET``), made and checked with the standard library only.

The server reads these claims (``crates/server/src/auth.rs``):

- ``sub`` (required): the user id, a string (a number is read as its decimal text); a
  server with ``jwt.user_id_claim = "user_id"`` reads the user id from that claim instead
  (a string or a number) and needs no ``sub``: pass ``user_id_claim=`` to both functions;
- ``exp`` (required): expiry in Unix seconds; the connection is closed with 4001 then;
- ``channels`` (optional): the channels the token allows, exact names or prefixes ending in
  ``*`` (``ticket:*``); when present, nothing else may be subscribed or published to;
- ``aud`` / ``iss``: checked only when the server sets ``jwt.audience`` / ``jwt.issuer``;
- any other claim is kept for the application's authorizer hook.

The server allows no clock leeway: a token is refused from the second after ``exp``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import timedelta
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .errors import TokenError, TokenExpiredError

__all__ = ["TokenClaims", "mint_token", "verify_token", "DEFAULT_EXPIRES_IN"]

DEFAULT_EXPIRES_IN = 3600
"""Seconds a minted token lives by default (the same as ``tidings token``)."""

_HEADER = {"alg": "HS256", "typ": "JWT"}


class TokenClaims(BaseModel):
    """The claims of a verified token. Other claims are kept as extra fields
    (``claims.model_extra``)."""

    model_config = ConfigDict(extra="allow")

    sub: str
    exp: int
    iat: Optional[int] = None
    channels: Optional[List[str]] = None
    aud: Optional[Union[str, List[str]]] = None
    iss: Optional[str] = None

    @field_validator("sub", mode="before")
    @classmethod
    def _sub_as_text(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return str(value)
        return value


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as error:
        raise TokenError(f"malformed token: {error}") from error


def _key(secret: Union[str, bytes]) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def _seconds(value: Union[int, float, timedelta]) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _sign(secret: Union[str, bytes], signing_input: str) -> str:
    digest = hmac.new(_key(secret), signing_input.encode("ascii"), hashlib.sha256).digest()
    return _b64encode(digest)


def mint_token(
    secret: Union[str, bytes],
    user_id: Union[str, int],
    *,
    expires_in: Union[int, float, timedelta] = DEFAULT_EXPIRES_IN,
    channels: Optional[Sequence[str]] = None,
    audience: Optional[str] = None,
    issuer: Optional[str] = None,
    claims: Optional[Mapping[str, Any]] = None,
    user_id_claim: str = "sub",
    now: Optional[float] = None,
) -> str:
    """An HS256 token for ``user_id`` that the server with ``secret`` accepts.

    ``expires_in`` is seconds (or a ``timedelta``) from ``now`` (default: the current time);
    ``channels`` restricts what the user may subscribe and publish to (``["ticket:*",
    "lobby"]``); ``audience`` / ``issuer`` set ``aud`` / ``iss`` for a server that requires
    them; ``claims`` adds any other claims (for an authorizer hook). ``user_id_claim``
    names the claim that carries the user id for a server with ``jwt.user_id_claim`` (an
    integer id then stays a JSON number; in ``sub`` it is always text). ``claims`` cannot
    override the user id claim or ``exp``: use the arguments.
    """
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int)):
        raise TypeError("user_id must be a string or an integer")
    if str(user_id) == "":
        raise ValueError("user_id must not be empty: the server refuses an empty user id")
    if not user_id_claim:
        raise ValueError("user_id_claim must name a claim")
    issued = int(time.time() if now is None else now)
    payload: Dict[str, Any] = dict(claims or {})
    for reserved in (user_id_claim, "exp"):
        if reserved in payload:
            raise ValueError(f"pass {reserved!r} as an argument, not in claims")
    payload[user_id_claim] = str(user_id) if user_id_claim == "sub" else user_id
    payload["exp"] = issued + int(_seconds(expires_in))
    payload.setdefault("iat", issued)
    if channels is not None:
        if isinstance(channels, str):
            raise TypeError("channels must be a list of channel names, not one string")
        payload["channels"] = list(channels)
    if audience is not None:
        payload["aud"] = audience
    if issuer is not None:
        payload["iss"] = issuer
    header = _b64encode(json.dumps(_HEADER, separators=(",", ":")).encode())
    body = _b64encode(json.dumps(payload, separators=(",", ":")).encode())
    signing_input = f"{header}.{body}"
    return f"{signing_input}.{_sign(secret, signing_input)}"


def verify_token(
    secret: Union[str, bytes],
    token: str,
    *,
    audience: Optional[str] = None,
    issuer: Optional[str] = None,
    leeway: Union[int, float, timedelta] = 0,
    user_id_claim: str = "sub",
    now: Optional[float] = None,
) -> TokenClaims:
    """The claims of an HS256 token signed with ``secret``, checked the way the server
    checks them (``exp`` and the user id required, ``aud`` / ``iss`` when given, no leeway
    by default). With ``user_id_claim`` other than ``sub``, the user id is read from that
    claim into ``claims.sub`` and the token's own ``sub`` is kept as the extra claim
    ``token_sub``, as the server does. Raises :class:`~tidings.errors.TokenExpiredError` or
    :class:`~tidings.errors.TokenError`."""
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        raise TokenError("malformed token: expected three dot-separated parts")
    header_text, body_text, signature = parts
    try:
        header = json.loads(_b64decode(header_text))
    except ValueError as error:
        raise TokenError(f"malformed token header: {error}") from error
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        alg = header.get("alg") if isinstance(header, dict) else None
        raise TokenError(f"unsupported token algorithm {alg!r}: only HS256 is verified here")
    expected = _sign(secret, f"{header_text}.{body_text}")
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise TokenError("invalid token signature")
    try:
        payload = json.loads(_b64decode(body_text))
    except ValueError as error:
        raise TokenError(f"malformed token payload: {error}") from error
    if not isinstance(payload, dict):
        raise TokenError("malformed token payload: not a JSON object")
    for required in (user_id_claim, "exp"):
        if required not in payload:
            raise TokenError(f"missing required claim {required!r}")
    if user_id_claim != "sub":
        user_id = payload.pop(user_id_claim)
        if isinstance(user_id, bool) or not isinstance(user_id, (str, int, float)):
            raise TokenError(f"the {user_id_claim} claim is neither a string nor a number")
        if "sub" in payload:
            payload["token_sub"] = payload.pop("sub")
        payload["sub"] = user_id if isinstance(user_id, str) else json.dumps(user_id)
    try:
        claims = TokenClaims.model_validate(payload)
    except ValidationError as error:
        raise TokenError(f"invalid token claims: {error}") from error
    if not claims.sub:
        raise TokenError("empty user id")
    current = time.time() if now is None else now
    if claims.exp < current - _seconds(leeway):
        raise TokenExpiredError("token expired")
    if audience is not None:
        auds = [claims.aud] if isinstance(claims.aud, str) else (claims.aud or [])
        if audience not in auds:
            raise TokenError(f"invalid audience: expected {audience!r}")
    if issuer is not None and claims.iss != issuer:
        raise TokenError(f"invalid issuer: expected {issuer!r}")
    return claims
