"""Seed 001's checklist, walked from outside: ./run.sh on free ports, then real WebSocket
clients (websockets) and plain HTTP, as the help desk's customers and agents would.

    ./scripts/test-examples            # from the repository root: venv, binary, this
    .venv/bin/python -m pytest -q      # from examples/ticket-chat, with a built binary
"""

import collections
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from contextlib import ExitStack
from functools import lru_cache
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tidings.proxy import sign as sign_proxy_call
from tidings.tokens import mint_token
from tidings.webhooks import sign as sign_webhook

HERE = Path(__file__).resolve().parent
CONFIG = tomllib.loads((HERE / "tidings.toml").read_text())
JWT_SECRET = CONFIG["jwt"]["secret"]
WEBHOOK_SECRET = CONFIG["webhooks"][0]["secret"]
TIMEOUT = 5.0
PASSWORD = "demo-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def http(url: str, method: str = "GET", body=None, token: str = None, headers=None):
    headers = dict(headers or {})
    if token:
        headers["authorization"] = f"Bearer {token}"
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
        headers.setdefault("content-type", "application/json")
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def eventually(check, what: str, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)
    return result


def spawn(args, env, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        # A terminal's Ctrl-C reaches the whole process group: so does the teardown.
        return subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def interrupt(process: subprocess.Popen) -> int:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    try:
        return process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise


class TicketChat:
    """./run.sh on free ports, with a temporary data directory."""

    def __init__(self, tmp: Path) -> None:
        self.port, self.app_port, self.receiver_port = free_port(), free_port(), free_port()
        self.log = tmp / "run.log"
        self.receiver_log = tmp / "receiver.log"
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "APP_PORT": str(self.app_port),
            "RECEIVER_PORT": str(self.receiver_port),
            "DATA_DIR": str(tmp / "data"),
        }
        self.process = spawn([str(HERE / "run.sh")], self.env, self.log)
        self.restarted_receiver = None
        deadline = time.monotonic() + 90
        while "Ticket chat is running" not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"run.sh did not start:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def server(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def app(self) -> str:
        return f"http://127.0.0.1:{self.app_port}"

    @property
    def receiver(self) -> str:
        return f"http://127.0.0.1:{self.receiver_port}"

    def ws_url(self, ticket_id: str, token: str = None) -> str:
        url = f"ws://127.0.0.1:{self.port}/ws/chat/{ticket_id}"
        return url if token is None else f"{url}?token={token}"

    def receiver_pid(self) -> int:
        return int(re.search(r"receiver pid (\d+)", self.output()).group(1))

    def start_receiver(self) -> None:
        """`./run.sh receiver`, as the banner says, with the same environment."""
        self.restarted_receiver = spawn([str(HERE / "run.sh"), "receiver"], self.env, self.receiver_log)

    def stop(self) -> int:
        if self.restarted_receiver is not None:
            interrupt(self.restarted_receiver)
        return interrupt(self.process)


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    running = TicketChat(tmp_path_factory.mktemp("ticket-chat"))
    yield running
    # Ctrl-C stops all the processes and frees all the ports.
    assert running.stop() == 0, running.output()
    for port in (running.port, running.app_port, running.receiver_port):
        assert not port_open(port), f"port {port} still open"
    with pytest.raises(ProcessLookupError):
        os.killpg(running.process.pid, 0)


@lru_cache(maxsize=None)
def login_cached(app: str, username: str) -> str:
    code, answer = http(f"{app}/auth/login", "POST", {"username": username, "password": PASSWORD})
    assert code == 200, answer
    return answer["access_token"]


def login(chat: TicketChat, username: str) -> str:
    return login_cached(chat.app, username)


def new_ticket(chat: TicketChat, title: str = "Test WebSocket Chat"):
    """The seed's quick start: register, log in, create a ticket. Agent kim gets it."""
    username = f"cust{uuid.uuid4().hex[:8]}"
    assert http(f"{chat.app}/auth/register", "POST", {"username": username, "password": PASSWORD,
                                                         "role": "user"})[0] == 201
    token = login(chat, username)
    code, ticket = http(f"{chat.app}/tickets", "POST", {
        "title": title, "description": "Testing real-time chat functionality", "urgency": "medium",
    }, token=token)
    assert code == 201, ticket
    assert (ticket["owner"], ticket["assigned_to"]) == (username, "kim")
    return ticket["ticket_id"], username, token


class Client:
    """One connection to /ws/chat/{ticket_id}: frames in order, requests matched by id."""

    def __init__(self, chat: TicketChat, ticket_id: str, token: str) -> None:
        self.ticket_id = ticket_id
        self.channel = f"ticket:{ticket_id}"
        self.stack = ExitStack()
        self.ws = self.stack.enter_context(connect(chat.ws_url(ticket_id, token), open_timeout=TIMEOUT))
        self.ids = itertools.count(1)
        self.pending = collections.deque()  # frames read while waiting for a reply
        self.connected = self.expect("connected")
        self.user_id = self.connected["data"]["user_id"]

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def send(self, frame) -> None:
        self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    def recv(self, timeout: float = TIMEOUT) -> dict:
        if self.pending:
            return self.pending.popleft()
        return json.loads(self.ws.recv(timeout=timeout))

    def expect(self, frame_type: str) -> dict:
        frame = self.recv()
        assert frame["type"] == frame_type, frame
        return frame

    def next_of(self, frame_type: str) -> dict:
        """The next frame of this type; others (presence, say) are skipped."""
        while (frame := self.recv())["type"] != frame_type:
            pass
        return frame

    def request(self, frame: dict) -> dict:
        frame = {**frame, "id": next(self.ids)}
        self.send(frame)
        while True:  # other frames (a message may come before its publish reply) wait
            answer = json.loads(self.ws.recv(timeout=TIMEOUT))
            if answer.get("id") == frame["id"]:
                return answer
            self.pending.append(answer)

    def say(self, content: str, **data) -> dict:
        """The seed's chat frame, as a Tidings publish: answered by a reply or an error."""
        message = {"id": f"m_{uuid.uuid4().hex[:12]}", "content": content, **data}
        return self.request({"type": "publish", "data": {
            "channel": self.channel, "event": {"type": "chat_message", "data": message}}})

    def quiet(self) -> None:
        """Nothing is waiting for this connection: its next frame answers its own ping."""
        self.send({"type": "ping", "id": 999})
        assert self.recv() == {"type": "pong", "id": 999}


def closed_with(url: str):
    """(code, reason) of a connection the server closes before `connected`."""
    with connect(url, open_timeout=TIMEOUT) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT)
    return closed.value.rcvd.code, closed.value.rcvd.reason


def error_of(frame: dict):
    assert frame["type"] == "error", frame
    return frame["data"]["code"], frame["data"]["message"]


def recorded(chat: TicketChat, ticket_id: str, token: str) -> list:
    """What the app's webhook receiver wrote for a ticket, as the app serves it."""
    code, answer = http(f"{chat.app}/tickets/{ticket_id}/messages", token=token)
    assert code == 200, answer
    assert answer["count"] == len(answer["messages"])
    return answer["messages"]


def recorded_when(chat: TicketChat, ticket_id: str, token: str, count: int, timeout: float = TIMEOUT) -> list:
    def check():
        messages = recorded(chat, ticket_id, token)
        return messages if len(messages) == count else None
    return eventually(check, f"{count} messages recorded for ticket {ticket_id}", timeout)


# ---------------------------------------------------------------- 1. connection authentication


def test_login_mints_the_token_the_socket_takes(chat):
    code, answer = http(f"{chat.app}/auth/login", "POST", {"username": "alice", "password": PASSWORD})
    assert code == 200 and answer["token_type"] == "bearer"
    assert (answer["user_id"], answer["role"]) == ("alice", "user")
    assert http(f"{chat.app}/auth/login", "POST", {"username": "alice", "password": "wrong-pass"})[0] == 401
    assert http(f"{chat.app}/auth/login", "POST", {"username": "mallory", "password": PASSWORD})[0] == 401
    # Sign-up makes customers only.
    assert http(f"{chat.app}/auth/register", "POST", {"username": "eve1", "password": PASSWORD,
                                                         "role": "agent"})[0] == 403


def test_a_valid_token_connects_to_the_tickets_room(chat):
    with Client(chat, "1001", login(chat, "alice")) as ws:
        data = ws.connected["data"]  # the seed's "connection confirmation"
        assert data["user_id"] == "alice"
        assert [s["channel"] for s in data["subscriptions"]] == ["user:alice", "ticket:1001"]


def test_no_token_or_a_bad_one_closes_with_4001(chat):
    assert closed_with(chat.ws_url("1001"))[0] == 4001
    assert closed_with(chat.ws_url("1001", "not-a-jwt"))[0] == 4001
    assert closed_with(chat.ws_url("1001", mint_token("another-secret", "alice")))[0] == 4001
    expired = mint_token(JWT_SECRET, "alice", expires_in=60, now=time.time() - 3600)
    assert closed_with(chat.ws_url("1001", expired))[0] == 4001


def test_a_ticket_without_access_closes_with_4003(chat):
    # The app decides (on_subscribe): the owner and the assigned agent, nobody else.
    assert closed_with(chat.ws_url("1001", login(chat, "bob")))[0] == 4003  # another customer
    assert closed_with(chat.ws_url("1001", login(chat, "lee")))[0] == 4003  # an agent, not its own
    assert closed_with(chat.ws_url("9999", login(chat, "alice")))[0] == 4003  # no such ticket
    code, reason = closed_with(chat.ws_url("1002", login(chat, "alice")))
    assert (code, reason) == (4003, "alice may not open ticket:1002")  # the app's own reason
    for user in ("bob", "lee"):
        with Client(chat, "1002", login(chat, user)) as ws:
            assert ws.user_id == user


# ---------------------------------------------------------------- 2. message types


def test_chat_message_reaches_the_room_enriched_by_the_app(chat):
    ticket, customer, token = new_ticket(chat)
    with Client(chat, ticket, token) as a, Client(chat, ticket, login(chat, "kim")) as k:
        # The seed's fields ride in metadata; sender_role is the app's, whatever was sent.
        seed_fields = {"message_type": "user_message", "isAI": False, "feedback": "none"}
        reply = a.say("  Hello from the customer!  ", metadata={**seed_fields, "sender_role": "agent"},
                      sender_role="agent")
        assert reply["type"] == "reply" and reply["data"]["kind"] == "publish", reply
        for ws in (a, k):
            message = ws.next_of("message")["data"]
            assert message["channel"] == f"ticket:{ticket}" and message["sender"] == customer
            assert message["offset"] == reply["data"]["offset"]
            data = message["event"]["data"]
            assert message["event"]["type"] == "chat_message"
            assert data["content"] == "Hello from the customer!"
            assert data["metadata"] == {**seed_fields, "sender_role": "user"}
            assert set(data) == {"id", "content", "metadata"}  # the app keeps the schema's fields
        assert k.say("Hi, agent Kim here.", metadata={"sender_role": "user"})["type"] == "reply"
        for ws in (a, k):
            data = ws.next_of("message")["data"]
            assert (data["sender"], data["event"]["data"]["metadata"]) == ("kim", {"sender_role": "agent"})


def test_typing_reaches_the_others_only(chat):
    ticket, _, token = new_ticket(chat)
    with Client(chat, ticket, token) as a, Client(chat, ticket, login(chat, "kim")) as k, \
            Client(chat, "1002", login(chat, "bob")) as elsewhere:
        assert a.expect("user_joined")["data"]["user_id"] == "kim"
        a.send({"type": "typing", "data": {"channel": f"ticket:{ticket}"}})  # the seed's frame, moved
        assert k.next_of("typing")["data"] == {"channel": f"ticket:{ticket}", "user_id": a.user_id}
        assert a.request({"type": "typing", "data": {"channel": f"ticket:{ticket}"}})["data"]["kind"] == "typing"
        assert k.next_of("typing")["data"]["user_id"] == a.user_id
        a.quiet()  # not echoed to the typist
        elsewhere.quiet()


def test_ping_pong(chat):
    with Client(chat, "1001", login(chat, "alice")) as ws:
        ws.send({"type": "ping", "ticket_id": "1001"})  # the seed's frame, as is
        assert ws.recv() == {"type": "pong"}
        assert ws.request({"type": "ping"}) == {"type": "pong", "id": 1}


def test_invalid_messages_get_errors_and_the_connection_stays(chat):
    ticket, _, token = new_ticket(chat)
    with Client(chat, ticket, token) as ws:
        ws.send("not json")
        assert error_of(ws.recv())[0] == 4400
        # The seed's own frame is not a Tidings frame.
        ws.send({"type": "chat", "ticket_id": ticket, "content": "Hello from browser!"})
        assert error_of(ws.recv()) == (4400, 'unknown frame type "chat"')
        # Missing fields: the binary checks the chat_message schema.
        missing = {"type": "publish", "data": {"channel": ws.channel, "event": {"type": "chat_message", "data": {"id": "m1"}}}}
        code, message = error_of(ws.request(missing))
        assert code == 4400 and "content" in message
        assert error_of(ws.request({"type": "publish", "data": {"channel": ws.channel}}))[0] == 4400
        # The app refuses empty and over-long messages (4003 with its reason: see the README).
        assert error_of(ws.say("   ")) == (4003, "empty message")
        assert error_of(ws.say("x" * 2001)) == (4003, "message longer than 2000 characters")
        assert error_of(ws.say("hi", metadata="urgent")) == (4003, "metadata must be an object")
        assert ws.say("x" * 2000)["type"] == "reply"
        # Other event types, and other tickets, are refused too.
        other = {"type": "publish", "data": {"channel": ws.channel, "event": {"type": "ticket_closed", "data": {}}}}
        assert error_of(ws.request(other)) == (4003, "only chat_message events may be sent here")
        elsewhere = {"type": "publish", "data": {"channel": "ticket:1002", "event": {
            "type": "chat_message", "data": {"id": "m2", "content": "hi"}}}}
        assert error_of(ws.request(elsewhere))[0] == 4003
        assert ws.next_of("message")["data"]["event"]["data"]["content"] == "x" * 2000  # only that one
        ws.quiet()
        assert ws.say("still here")["type"] == "reply"


# ---------------------------------------------------------------- 3. broadcasting and presence


def test_messages_stay_in_their_ticket_room(chat):
    ticket, _, token = new_ticket(chat)
    with Client(chat, ticket, token) as a, Client(chat, ticket, login(chat, "kim")) as k, \
            Client(chat, "1002", login(chat, "bob")) as b, Client(chat, "1001", login(chat, "kim")) as k2:
        assert a.say("for this ticket only")["type"] == "reply"
        assert k.next_of("message")["data"]["event"]["data"]["content"] == "for this ticket only"
        b.quiet()
        k2.quiet()  # kim's connection to another ticket gets nothing either
        # Nor can a user join another ticket's room from an open connection.
        code, message = error_of(a.request({"type": "subscribe", "data": {"channel": "ticket:1001"}}))
        assert (code, message) == (4003, f"{a.user_id} may not open ticket:1001")


def test_join_and_leave_notices(chat):
    ticket, customer, token = new_ticket(chat)
    room = f"ticket:{ticket}"
    with Client(chat, ticket, login(chat, "kim")) as k:
        with Client(chat, ticket, token) as a:
            assert k.expect("user_joined")["data"] == {"channel": room, "user_id": customer}
            with Client(chat, ticket, token):  # a second tab: no notice
                pass
            a.quiet()
            members = a.request({"type": "presence", "data": {"channel": room}})["data"]["members"]
            assert sorted(m["user_id"] for m in members) == sorted([customer, "kim"])
        assert k.expect("user_left")["data"] == {"channel": room, "user_id": customer}  # graceful close
        # Ungraceful: the customer's process is killed, no close frame.
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys, time; from websockets.sync.client import connect\n"
             "ws = connect(sys.argv[1]); ws.recv(); print('in', flush=True); time.sleep(60)",
             chat.ws_url(ticket, token)], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "in"
            assert k.expect("user_joined")["data"]["user_id"] == customer
            child.kill()
        finally:
            child.wait()
        assert k.expect("user_left")["data"] == {"channel": room, "user_id": customer}
        k.quiet()


def test_many_concurrent_connections(chat):
    ticket, customer, token = new_ticket(chat)
    with ExitStack() as stack:
        tabs = [stack.enter_context(Client(chat, ticket, token)) for _ in range(8)]
        tabs += [stack.enter_context(Client(chat, ticket, login(chat, "kim"))) for _ in range(8)]
        reply = tabs[3].say("to all sixteen tabs")
        assert reply["data"]["delivered"] == 16
        for tab in tabs:
            assert tab.next_of("message")["data"]["event"]["data"]["content"] == "to all sixteen tabs"
        code, members = http(f"{chat.server}/api/channels/ticket:{ticket}/members",
                             headers={"authorization": f"Bearer {CONFIG['api_key']}"})
        assert code == 200
        assert {m["user_id"]: m["connections"] for m in members["members"]} == {customer: 8, "kim": 8}


# ---------------------------------------------------------------- 4. persistence


def test_history_over_http_with_the_users_token(chat):
    ticket, customer, token = new_ticket(chat)
    with Client(chat, ticket, token) as a:
        for text in ("first", "second", "third"):
            assert a.say(text)["type"] == "reply"
    url = f"{chat.server}/api/channels/ticket:{ticket}/history"
    code, page = http(url, token=token)
    assert code == 200, page
    assert [p["event"]["data"]["content"] for p in page["publications"]] == ["first", "second", "third"]
    assert all(p["sender"] == customer and p["event"]["data"]["metadata"]["sender_role"] == "user" and p["ts"] > 0
               for p in page["publications"])
    assert http(url, token=login(chat, "kim"))[0] == 200  # the assigned agent
    assert http(f"{url}?since=2", token=token)[1]["publications"][0]["event"]["data"]["content"] == "third"
    assert http(url, token=login(chat, "lee"))[0] == 403  # the app's on_subscribe again
    assert http(url)[0] == 401


def test_persistence_across_reconnection(chat):
    ticket, _, token = new_ticket(chat)
    kim = login(chat, "kim")
    with Client(chat, ticket, kim) as k:
        position = k.connected["data"]["subscriptions"][1]  # ticket:…, with epoch and offset
        assert k.say("before the reconnect")["type"] == "reply"
        last = k.next_of("message")["data"]["offset"]
    with Client(chat, ticket, token) as a:
        assert a.say("while kim was away 1")["type"] == "reply"
        assert a.say("while kim was away 2")["type"] == "reply"
    with Client(chat, ticket, kim) as k:
        recover = {"epoch": position["epoch"], "offset": last}
        reply = k.request({"type": "subscribe", "data": {"channel": k.channel, "recover": recover}})
        assert (reply["data"]["recovered"], reply["data"]["missed"]) == (True, 2)
        missed = [k.expect("message")["data"]["event"]["data"]["content"] for _ in range(2)]
        assert missed == ["while kim was away 1", "while kim was away 2"]
        # Or page the whole conversation over the socket.
        page = k.request({"type": "history", "data": {"channel": k.channel, "since": 0}})["data"]
        assert len(page["publications"]) == 3


def test_the_webhook_records_each_message_in_the_apps_database(chat):
    ticket, customer, token = new_ticket(chat)
    with Client(chat, ticket, token) as a, Client(chat, ticket, login(chat, "kim")) as k:
        sent = a.say("Please help", metadata={"message_type": "user_message", "isAI": False, "feedback": "none"})
        k.next_of("message")
        assert k.say("On it")["type"] == "reply"
    messages = recorded_when(chat, ticket, token, 2)
    first, second = messages
    assert first["position"] == sent["data"]["offset"]
    assert (first["ticket_id"], first["sender_id"], first["sender_role"], first["content"]) == (
        ticket, customer, "user", "Please help")
    assert first["metadata"] == {"message_type": "user_message", "isAI": False, "feedback": "none", "sender_role": "user"}
    assert first["message_id"].startswith("m_") and first["event_id"].startswith("evt_")
    assert abs(first["ts"] / 1000 - time.time()) < 60
    assert (second["sender_id"], second["sender_role"], second["content"]) == ("kim", "agent", "On it")
    # The app answers for its tickets only.
    assert http(f"{chat.app}/tickets/{ticket}/messages", token=login(chat, "bob"))[0] == 403
    assert http(f"{chat.app}/tickets/{ticket}/messages", token=login(chat, "kim"))[1]["count"] == 2
    assert http(f"{chat.app}/tickets/{ticket}/messages")[0] in (401, 403)


# ---------------------------------------------------------------- 5. webhook integration


def test_the_receiver_takes_signed_webhooks_only(chat):
    # The seed's curl line, unsigned: refused. The binary signs every delivery.
    url = f"{chat.receiver}/internal/webhook/on_message_sent"
    seed_body = json.dumps({"message_id": "test_message_id", "ticket_id": "test_ticket_id",
                            "content": "Test webhook message"}).encode()
    headers = {"content-type": "application/json"}
    assert http(url, "POST", seed_body, headers=headers)[0] == 400
    event = json.dumps({"id": "evt_test", "type": "message.published", "created_at": 0, "data": {
        "channel": "ticket:test_ticket_id", "offset": 1, "epoch": "e", "ts": 1, "sender": "alice",
        "event": {"type": "chat_message", "data": {"id": "test_message_id", "content": "Test webhook message"}}}}).encode()
    forged = {**headers, "x-tidings-signature": sign_webhook("not-the-secret", event)}
    assert http(url, "POST", event, headers=forged)[0] == 400
    signed = {**headers, "x-tidings-signature": sign_webhook(WEBHOOK_SECRET, event)}
    assert http(url, "POST", event, headers=signed) == (200, {"recorded": "evt_test"})
    assert http(url, "POST", event, headers=signed) == (200, {"recorded": "evt_test"})  # a retry: kept once


def test_chat_keeps_working_while_the_webhook_receiver_is_down(chat):
    ticket, _, token = new_ticket(chat)
    os.kill(chat.receiver_pid(), signal.SIGTERM)
    eventually(lambda: not port_open(chat.receiver_port), "the receiver is down")
    eventually(lambda: "the webhook receiver stopped" in chat.output(), "run.sh noticed")
    texts = [f"sent while the receiver is down {i}" for i in range(3)]
    with Client(chat, ticket, token) as a, Client(chat, ticket, login(chat, "kim")) as k:
        for text in texts:
            assert a.say(text)["type"] == "reply"  # acknowledged: stored, webhook queued
            assert k.next_of("message")["data"]["event"]["data"]["content"] == text
        assert k.say("the agent too")["type"] == "reply"
        a.next_of("message")
    time.sleep(1)  # a few delivery attempts fail meanwhile
    assert recorded(chat, ticket, token) == []  # the app itself still answers
    assert http(f"{chat.server}/api/channels/ticket:{ticket}/history", token=token)[1]["offset"] == 4
    chat.start_receiver()  # ./run.sh receiver
    messages = recorded_when(chat, ticket, token, 4, timeout=20)  # the queued webhooks
    assert [m["content"] for m in messages] == texts + ["the agent too"]
    assert [m["position"] for m in messages] == [1, 2, 3, 4]
    assert chat.process.poll() is None, "run.sh went on without the receiver"


# ---------------------------------------------------------------- around the checklist


def test_the_apps_proxy_routes_check_the_signature(chat):
    body = json.dumps({"user_id": "alice", "channel": "ticket:1002", "claims": {"sub": "alice"}}).encode()
    url = f"{chat.app}/tidings/subscribe"
    headers = {"content-type": "application/json", "x-tidings-proxy": "subscribe"}
    assert http(url, "POST", body, headers=headers)[0] == 401
    forged = {**headers, "x-tidings-signature": sign_proxy_call("not-the-secret", body)}
    assert http(url, "POST", body, headers=forged)[0] == 401
    signed = {**headers, "x-tidings-signature": sign_proxy_call(CONFIG["proxy"]["secret"], body)}
    assert http(url, "POST", body, headers=signed) == (200, {"allow": False, "message": "alice may not open ticket:1002"})


def test_stats_for_monitoring(chat):
    # The seed's "Active connections / Active rooms", from the binary's HTTP API.
    with Client(chat, "1001", login(chat, "alice")), Client(chat, "1002", login(chat, "bob")):
        code, stats = http(f"{chat.server}/api/stats", headers={"authorization": f"Bearer {CONFIG['api_key']}"})
        assert code == 200 and stats["connections"] >= 2 and stats["channels"] >= 2, stats
