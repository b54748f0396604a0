"""The Diary app's back end: the realtime part of seed 004, on Tidings.

The `tidings` binary (tidings.toml) holds the WebSockets at /api/v1/ws/{user_id}; this
FastAPI app only answers what the app itself knows:

- the clients' `rpc` frames, which the binary POSTs here, signed (`[proxy] rpc`):
  `motivation_requested` and `echo`;
- GET /api/v1/ws/status, the seed's status route, from the binary's own counts;
- POST /api/v1/users/{user_id}/tasks/{task_id}/complete, a push to one user (the seed's
  "task completion notifications").

Run it with ./run.sh (both processes), or `uvicorn app:app --port 9000` beside the binary.
"""

import json
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field, ValidationError

from tidings import AsyncTidings
from tidings.errors import TidingsError
from tidings.fastapi import ProxyRouter
from tidings.proxy import Refused, RpcRequest

# The same values as tidings.toml; run.sh passes both processes the same environment.
TIDINGS_URL = os.environ.get("TIDINGS_URL", "http://127.0.0.1:8000")
API_KEY = os.environ.get("TIDINGS_API_KEY", "diary-demo-api-key")
PROXY_SECRET = os.environ.get("TIDINGS_PROXY__SECRET", "diary-demo-proxy-secret")

router = ProxyRouter(secret=PROXY_SECRET, prefix="/tidings")  # bad signature: 401


class MotivationRequest(BaseModel):
    current_challenge: str = ""
    stress_level: int = Field(5, ge=1, le=10)


def motivate(ask: MotivationRequest) -> str:
    # The seed's text is "AI-generated"; a real app calls its model here (an async handler
    # may await it: the binary waits up to proxy.timeout, then the client gets 4503).
    if ask.stress_level >= 8:
        return "Breathe. One small step on it is enough for now; you have done hard things before."
    if ask.stress_level >= 5:
        return "You're doing great! Keep pushing forward! 💪"
    return "Nice and steady. Enjoy the progress you are making!"


@router.rpc("motivation_requested")
def motivation_requested(request: RpcRequest):
    try:
        ask = MotivationRequest.model_validate(request.data or {})
    except ValidationError as error:
        problem = error.errors()[0]
        field = ".".join(str(part) for part in problem["loc"]) or "data"
        raise Refused(f"invalid motivation_requested: {field}: {problem['msg']}", code="bad_request")
    # The seed's frame, as the rpc reply's data.
    return {
        "type": "motivation_generated",
        "user_id": request.user_id,
        "motivation_text": motivate(ask),
        "current_challenge": ask.current_challenge,
        "stress_level": ask.stress_level,
    }


@router.rpc("echo")
def echo(request: RpcRequest):
    return {"type": "echo", "user_id": request.user_id, "message": f"Received: {json.dumps(request.data)}"}


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with AsyncTidings(TIDINGS_URL, api_key=API_KEY, timeout=5) as tidings:
        app.state.tidings = tidings
        yield


app = FastAPI(title="Diary", lifespan=lifespan)
app.include_router(router)


@app.get("/api/v1/ws/status")
async def ws_status():
    try:
        status = await app.state.tidings.status()
    except TidingsError as error:
        raise HTTPException(503, f"the realtime server does not answer: {error}")
    return {"connected_users": status.users, "status": "active" if status.status == "ok" else status.status}


@app.post("/api/v1/users/{user_id}/tasks/{task_id}/complete")
async def complete_task(user_id: str, task_id: str):
    # ... mark the task done in the app's database, then tell the user's open tabs:
    sent = await app.state.tidings.notify_user(
        user_id, f"Task {task_id} is complete", title="Task completed", level="success",
        data={"task_id": task_id},
    )
    return {"task_id": task_id, "status": "completed", "delivered": sent.delivered}
