"""Minted tokens against the real binary: the default server, and one with
`[jwt] audience, issuer, user_id_claim`."""

import time
from typing import Iterator, Optional

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tidings import PermissionDeniedError, Tidings, mint_token, verify_token
from tidings_testkit import JWT_SECRET, RECV_TIMEOUT, Server, start_server, stop_server, unique, ws_client

STRICT = '[jwt]\naudience = "app"\nissuer = "auth.example"\nuser_id_claim = "user_id"\n'


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("tidings-jwt"), None, STRICT)
    yield running
    stop_server(running.process)


def close_code(server: Server, token: str) -> Optional[int]:
    """The close code of a connection made with `token` (None if it was accepted)."""
    with connect(f"{server.ws_url}?token={token}", open_timeout=RECV_TIMEOUT) as ws:
        try:
            while True:
                frame = ws.recv(timeout=RECV_TIMEOUT)
                if '"connected"' in frame:
                    return None
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


def test_a_minted_token_connects_as_its_user(server):
    with ws_client(server, "ignored", token=mint_token(JWT_SECRET, 4242)) as ws:
        assert ws.connected["user_id"] == "4242"
        assert "user:4242" in [s["channel"] for s in ws.connected["subscriptions"]]


def test_refused_tokens_close_with_4001(server):
    user = unique("u")
    assert close_code(server, mint_token(JWT_SECRET, user, expires_in=-10)) == 4001
    assert close_code(server, mint_token("another-secret", user)) == 4001
    assert close_code(server, "garbage") == 4001
    assert close_code(server, mint_token(JWT_SECRET, user, expires_in=60)) is None


def test_the_channels_claim_restricts_subscriptions(server, client):
    user, allowed = unique("agent"), unique("ticket:") + "1"
    token = mint_token(JWT_SECRET, user, channels=["ticket:*", "lobby"])
    with ws_client(server, user, token=token) as ws:
        assert ws.request("subscribe", {"channel": allowed})["type"] == "reply"
        assert ws.request("subscribe", {"channel": "lobby"})["type"] == "reply"
        refused = ws.request("subscribe", {"channel": unique("private")})
        assert refused["type"] == "error" and refused["data"]["code"] == 4003
    # The same token reads history over HTTP only where it may subscribe.
    client.publish(allowed, "x", {"n": 1})
    assert len(client.history(allowed, token=token).publications) == 1
    with pytest.raises(PermissionDeniedError):
        client.history("elsewhere", token=token)


def test_audience_issuer_and_user_id_claim(strict_server):
    server = strict_server
    good = mint_token(JWT_SECRET, 42, user_id_claim="user_id", audience="app", issuer="auth.example")
    assert verify_token(JWT_SECRET, good, user_id_claim="user_id", audience="app", issuer="auth.example").sub == "42"
    with ws_client(server, "ignored", token=good) as ws:
        assert ws.connected["user_id"] == "42"

    def minted(**changes):
        args = dict(user_id_claim="user_id", audience="app", issuer="auth.example")
        args.update(changes)
        return mint_token(JWT_SECRET, 42, **args)

    assert close_code(server, minted(audience="other")) == 4001
    assert close_code(server, minted(issuer="someone-else")) == 4001
    assert close_code(server, minted(user_id_claim="sub")) == 4001  # the id must be in user_id
    assert close_code(server, minted(expires_in=-5)) == 4001

    with Tidings(server.base_url, api_key=server.api_key) as tidings:
        channel = unique("strict")
        tidings.publish(channel, "x", {"at": time.time()})
        assert len(tidings.history(channel, token=good).publications) == 1


def test_missing_audience_or_issuer_is_refused(strict_server):
    def minted(**changes):
        args = dict(user_id_claim="user_id", audience="app", issuer="auth.example")
        args.update(changes)
        return mint_token(JWT_SECRET, 42, **args)

    assert close_code(strict_server, minted(audience=None)) == 4001
    assert close_code(strict_server, minted(issuer=None)) == 4001
