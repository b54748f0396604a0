"""Fixtures: one real `tidings` binary for the whole session (in-memory store, in a
temporary directory, webhooks to a receiver of the tests), and SDK clients pointed at it."""

from __future__ import annotations

from typing import AsyncIterator, Iterator

import pytest

from tidings import AsyncTidings, Tidings
from tidings_testkit import Server, WebhookReceiver, start_server, stop_server


@pytest.fixture(scope="session")
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, webhook_receiver: WebhookReceiver) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("tidings")
    running = start_server(workdir, webhook_receiver)
    yield running
    stop_server(running.process)
    leftovers = sorted(p.name for p in workdir.iterdir() if not p.name.startswith("tidings"))
    assert not leftovers, f"the in-memory server left files behind: {leftovers}"


@pytest.fixture
def client(server: Server) -> Iterator[Tidings]:
    with Tidings(server.base_url, api_key=server.api_key, timeout=5) as tidings:
        yield tidings


@pytest.fixture
async def aclient(server: Server) -> AsyncIterator[AsyncTidings]:
    async with AsyncTidings(server.base_url, api_key=server.api_key, timeout=5) as tidings:
        yield tidings
