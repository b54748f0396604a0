"""tidings.tokens without a server: minting and verifying HS256 tokens."""

import base64
import hashlib
import hmac
import json
from datetime import timedelta

import pytest

from tidings import TokenError, TokenExpiredError, mint_token, verify_token
from tidings.errors import TidingsError

SECRET = "s3cret"
NOW = 1_700_000_000


def decode(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_token_is_hs256_jwt_signed_with_the_secret():
    token = mint_token(SECRET, "42", expires_in=60, now=NOW)
    header, payload, signature = token.split(".")
    assert decode(header) == {"alg": "HS256", "typ": "JWT"}
    assert decode(payload) == {"sub": "42", "exp": NOW + 60, "iat": NOW}
    expected = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == expected
    assert "=" not in token  # base64url without padding


def test_claims_round_trip():
    token = mint_token(
        SECRET,
        7,
        expires_in=timedelta(minutes=5),
        channels=["ticket:*", "lobby"],
        audience="app",
        issuer="auth.example",
        claims={"role": "agent", "org": 3},
        now=NOW,
    )
    claims = verify_token(SECRET, token, audience="app", issuer="auth.example", now=NOW + 10)
    assert claims.sub == "7"
    assert claims.exp == NOW + 300
    assert claims.channels == ["ticket:*", "lobby"]
    assert claims.aud == "app" and claims.iss == "auth.example"
    assert claims.model_extra == {"role": "agent", "org": 3}


def test_expired_token_is_refused_from_the_second_after_exp():
    token = mint_token(SECRET, "42", expires_in=60, now=NOW)
    assert verify_token(SECRET, token, now=NOW + 60).sub == "42"
    with pytest.raises(TokenExpiredError):
        verify_token(SECRET, token, now=NOW + 61)
    assert verify_token(SECRET, token, now=NOW + 61, leeway=5).sub == "42"
    assert issubclass(TokenExpiredError, TokenError) and issubclass(TokenError, TidingsError)


def test_wrong_secret_and_tampering_are_refused():
    token = mint_token(SECRET, "42", now=NOW)
    with pytest.raises(TokenError, match="signature"):
        verify_token("other", token, now=NOW)
    header, payload, signature = token.split(".")
    forged = base64.urlsafe_b64encode(json.dumps({"sub": "admin", "exp": NOW + 60}).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenError, match="signature"):
        verify_token(SECRET, f"{header}.{forged}.{signature}", now=NOW)


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "!!.??.**"])
def test_malformed_tokens_are_refused(token):
    with pytest.raises(TokenError):
        verify_token(SECRET, token, now=NOW)


def test_alg_none_is_refused():
    header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(b'{"sub":"1","exp":9999999999}').rstrip(b"=").decode()
    with pytest.raises(TokenError, match="algorithm"):
        verify_token(SECRET, f"{header}.{payload}.", now=NOW)


def test_audience_and_issuer_must_match_when_asked():
    token = mint_token(SECRET, "42", audience="app", issuer="me", now=NOW)
    with pytest.raises(TokenError, match="audience"):
        verify_token(SECRET, token, audience="other", now=NOW)
    with pytest.raises(TokenError, match="issuer"):
        verify_token(SECRET, token, issuer="someone", now=NOW)
    plain = mint_token(SECRET, "42", now=NOW)
    with pytest.raises(TokenError, match="audience"):
        verify_token(SECRET, plain, audience="app", now=NOW)


def test_bad_arguments():
    with pytest.raises(ValueError):
        mint_token(SECRET, "")
    with pytest.raises(ValueError):
        mint_token(SECRET, "42", claims={"sub": "other"})
    with pytest.raises(TypeError):
        mint_token(SECRET, "42", channels="lobby")


def test_bytes_secret_is_the_same_as_text():
    assert mint_token(SECRET, "1", now=NOW) == mint_token(SECRET.encode(), "1", now=NOW)


def test_user_id_in_another_claim():
    token = mint_token(SECRET, 42, user_id_claim="user_id", claims={"sub": "session-9", "role": "agent"}, now=NOW)
    payload = decode(token.split(".")[1])
    assert payload["user_id"] == 42 and payload["sub"] == "session-9"  # an integer stays a number
    claims = verify_token(SECRET, token, user_id_claim="user_id", now=NOW)
    assert claims.sub == "42"
    assert claims.model_extra == {"token_sub": "session-9", "role": "agent"}
    assert verify_token(SECRET, mint_token(SECRET, "u-7", user_id_claim="uid", now=NOW), user_id_claim="uid", now=NOW).sub == "u-7"
    # Read as the server reads it: a token with only `sub` has no user for that server.
    with pytest.raises(TokenError, match="user_id"):
        verify_token(SECRET, mint_token(SECRET, "7", now=NOW), user_id_claim="user_id", now=NOW)
    with pytest.raises(TokenError, match="neither"):
        verify_token(SECRET, mint_token(SECRET, "7", claims={"user_id": ["7"]}, now=NOW), user_id_claim="user_id", now=NOW)
    with pytest.raises(TokenError, match="empty"):
        verify_token(SECRET, mint_token(SECRET, "7", claims={"user_id": ""}, now=NOW), user_id_claim="user_id", now=NOW)
    with pytest.raises(ValueError):
        mint_token(SECRET, "7", user_id_claim="user_id", claims={"user_id": "8"})
