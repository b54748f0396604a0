"""The help desk's back end: the realtime part of seed 001 (ticket chat), on Tidings.

The `tidings` binary (tidings.toml) holds the WebSockets at /ws/chat/{ticket_id}, fans the
chat out, sends typing and join/leave notices, keeps the history and queues the webhooks.
This module holds what only the help desk knows, as two FastAPI apps:

- `app` (:9000): login (it mints the tokens), tickets, the messages it recorded, and the
  binary's proxy calls (`[proxy] subscribe` / `publish`): who may open a ticket, and
  whether a message goes out and in what form;
- `receiver` (:9001): the seed's "message sent" webhook, verified and written to SQLite.
  It is its own process so that it can be down while chat goes on.

Run both (and the binary) with ./run.sh.
"""

import hashlib
import hmac
import itertools
import json
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from tidings.errors import TokenError
from tidings.fastapi import ProxyRouter, webhook_event
from tidings.proxy import PublishRequest, Refused, SubscribeRequest, replace
from tidings.tokens import mint_token, verify_token
from tidings.webhooks import WebhookEvent

# The same values as tidings.toml; run.sh passes all processes the same environment.
JWT_SECRET = os.environ.get("TIDINGS_JWT_SECRET", "ticket-chat-demo-jwt-secret")
PROXY_SECRET = os.environ.get("TIDINGS_PROXY__SECRET", "ticket-chat-demo-proxy-secret")
WEBHOOK_SECRET = os.environ.get("WEBHOOK_SECRET", "ticket-chat-demo-webhook-secret")
MESSAGES_DB = Path(os.environ.get("MESSAGES_DB", Path(__file__).with_name("data") / "messages.db"))
MAX_CONTENT = 2000  # characters in one chat message

# ---------------------------------------------------------------- the help desk's data
# In memory for the demo (a real app has its database): users and tickets.


def password_hash(username: str, password: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), username.encode(), 100_000).hex()


USERS = {  # user id -> role; "user" is the seed's customer role
    name: {"role": role, "password": password_hash(name, "demo-pass")}
    for name, role in [("alice", "user"), ("bob", "user"), ("kim", "agent"), ("lee", "agent")]
}
AGENT_ON_DUTY = "kim"  # new tickets are assigned to this agent
TICKETS = {
    "1001": {"ticket_id": "1001", "title": "Cannot log in", "description": "", "urgency": "high",
             "owner": "alice", "assigned_to": "kim"},
    "1002": {"ticket_id": "1002", "title": "Invoice is wrong", "description": "", "urgency": "low",
             "owner": "bob", "assigned_to": "lee"},
}
TICKET_IDS = itertools.count(1003)


def may_open(user_id: str, ticket_id: str) -> bool:
    """The seed's "ticket access verification": the ticket's owner and its agent."""
    ticket = TICKETS.get(ticket_id)
    return ticket is not None and user_id in (ticket["owner"], ticket["assigned_to"])


def ticket_of(channel: str):
    return channel[len("ticket:"):] if channel.startswith("ticket:") else None


# ---------------------------------------------------------------- the messages it records

SCHEMA = """CREATE TABLE IF NOT EXISTS messages (
    event_id TEXT PRIMARY KEY,  -- the webhook's id: a delivery that is retried is kept once
    ticket_id TEXT NOT NULL, position INTEGER NOT NULL, message_id TEXT, sender_id TEXT,
    sender_role TEXT, content TEXT, metadata TEXT, ts INTEGER NOT NULL)"""


@contextmanager
def database():
    MESSAGES_DB.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(MESSAGES_DB, timeout=5)
    db.row_factory = sqlite3.Row
    try:
        with db:  # one transaction, committed on leaving
            db.execute(SCHEMA)
            yield db
    finally:
        db.close()


# ---------------------------------------------------------------- the binary's proxy calls

router = ProxyRouter(secret=PROXY_SECRET, prefix="/tidings")  # bad signature: 401


@router.on_subscribe
def subscribe(request: SubscribeRequest):
    # Asked when /ws/chat/{ticket_id} joins ticket:{ticket_id} (a refusal closes it with
    # 4003), for a subscribe frame, and for history over HTTP or the socket.
    ticket = ticket_of(request.channel)
    if ticket is None or not may_open(request.user_id, ticket):
        raise Refused(f"{request.user_id} may not open {request.channel}")


@router.on_publish
def publish(request: PublishRequest):
    # The binary has checked the chat_message schema ({id, content, metadata?}: else 4400).
    ticket = ticket_of(request.channel)
    if ticket is None or not may_open(request.user_id, ticket):
        raise Refused(f"{request.user_id} may not write to {request.channel}")
    if request.event.type != "chat_message":
        raise Refused("only chat_message events may be sent here")
    content, metadata = request.event.data["content"].strip(), request.event.data.get("metadata") or {}
    if not content:
        raise Refused("empty message")
    if len(content) > MAX_CONTENT:
        raise Refused(f"message longer than {MAX_CONTENT} characters")
    if not isinstance(metadata, dict):
        raise Refused("metadata must be an object")
    # The sender's role goes in metadata, the schema's place for application data (clients
    # that decode chat_message by its schema keep nothing else); ours, whatever was sent.
    metadata = {**metadata, "sender_role": USERS[request.user_id]["role"]}
    return replace("chat_message", {"id": request.event.data["id"], "content": content, "metadata": metadata})


# ---------------------------------------------------------------- the app's HTTP API

app = FastAPI(title="Ticket chat")
app.include_router(router)
bearer = HTTPBearer()


def current_user(credentials: HTTPAuthorizationCredentials = Depends(bearer)) -> str:
    try:
        return verify_token(JWT_SECRET, credentials.credentials).sub
    except TokenError as error:
        raise HTTPException(401, f"invalid token: {error}")


class Credentials(BaseModel):
    username: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    password: str = Field(min_length=8)


class Registration(Credentials):
    role: Literal["user", "agent"] = "user"


class NewTicket(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    urgency: Literal["low", "medium", "high"] = "medium"


@app.post("/auth/register", status_code=201)
def register(body: Registration):
    if body.role != "user":
        raise HTTPException(403, "agents are added by staff, not by sign-up")
    if body.username in USERS:
        raise HTTPException(409, "username taken")
    USERS[body.username] = {"role": "user", "password": password_hash(body.username, body.password)}
    return {"user_id": body.username, "role": "user"}


@app.post("/auth/login")
def login(body: Credentials):
    user = USERS.get(body.username)
    if user is None or not hmac.compare_digest(user["password"], password_hash(body.username, body.password)):
        raise HTTPException(401, "wrong username or password")
    token = mint_token(JWT_SECRET, body.username, expires_in=3600, claims={"role": user["role"]})
    return {"access_token": token, "token_type": "bearer", "user_id": body.username, "role": user["role"]}


@app.post("/tickets", status_code=201)
def create_ticket(body: NewTicket, user_id: str = Depends(current_user)):
    ticket_id = str(next(TICKET_IDS))
    TICKETS[ticket_id] = {"ticket_id": ticket_id, **body.model_dump(), "owner": user_id,
                          "assigned_to": AGENT_ON_DUTY}
    return TICKETS[ticket_id]


@app.get("/tickets/{ticket_id}/messages")
def ticket_messages(ticket_id: str, user_id: str = Depends(current_user)):
    if not may_open(user_id, ticket_id):
        raise HTTPException(403, f"{user_id} may not open ticket {ticket_id}")
    with database() as db:
        rows = db.execute("SELECT * FROM messages WHERE ticket_id = ? ORDER BY position", (ticket_id,))
        messages = [{**row, "metadata": json.loads(row["metadata"])} for row in map(dict, rows)]
    return {"ticket_id": ticket_id, "count": len(messages), "messages": messages}


# ---------------------------------------------------------------- the webhook receiver

receiver = FastAPI(title="Ticket chat webhook receiver")


@receiver.post("/internal/webhook/on_message_sent")
def on_message_sent(event: WebhookEvent = Depends(webhook_event(WEBHOOK_SECRET))):  # else 400
    if event.type != "message.published" or event.data.event.type != "chat_message":
        return {"ignored": event.id}
    publication, message = event.data, event.data.event.data
    metadata = message.get("metadata") or {}
    with database() as db:
        db.execute(
            "INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (event.id, ticket_of(publication.channel), publication.offset, message["id"],
             publication.sender, metadata.get("sender_role"), message["content"],
             json.dumps(metadata), publication.ts),
        )
    return {"recorded": event.id}
