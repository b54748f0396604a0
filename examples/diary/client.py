"""The seed's Python client (`DiaryWebSocketClient`), speaking Tidings' frames.

    python client.py 123456789 [--url ws://127.0.0.1:8000] [--duration 10]

What changed against the seed's client: requests carry an `id`; the app's messages are
`rpc` calls whose replies hold the seed's frames (`reply.data.data` is
`{"type": "motivation_generated", ...}`), so the seed's handlers run unchanged on them;
`pong` carries no `user_id` or text (the user id is in the first frame, `connected`).
"""

import argparse
import asyncio
import itertools
import json
from typing import Any, Callable, Dict

import websockets


class DiaryWebSocketClient:
    def __init__(self, user_id: str, base_url: str = "ws://localhost:8000"):
        self.user_id = user_id
        self.base_url = base_url
        self.websocket = None
        self.message_handlers: Dict[str, Callable] = {}
        self.ids = itertools.count(1)

    async def connect(self):
        self.websocket = await websockets.connect(f"{self.base_url}/api/v1/ws/{self.user_id}")
        connected = json.loads(await self.websocket.recv())  # always the first frame
        print(f"Connected to WebSocket for user {connected['data']['user_id']}")

    async def disconnect(self):
        if self.websocket:
            await self.websocket.close()
            self.websocket = None

    async def send_message(self, message: Dict[str, Any]):
        if not self.websocket:
            raise Exception("WebSocket not connected")
        await self.websocket.send(json.dumps({**message, "id": next(self.ids)}))

    async def ping(self):
        await self.send_message({"type": "ping"})

    async def rpc(self, method: str, data: Any = None):
        await self.send_message({"type": "rpc", "data": {"method": method, "data": data}})

    async def request_motivation(self, current_challenge: str = "", stress_level: int = 5):
        await self.rpc("motivation_requested", {"current_challenge": current_challenge, "stress_level": stress_level})

    def on_message(self, message_type: str, handler: Callable):
        self.message_handlers[message_type] = handler

    async def listen(self):
        async for raw in self.websocket:
            frame = json.loads(raw)
            data = frame.get("data") or {}
            # An rpc reply holds the app's own frame: dispatch that.
            message = data["data"] if frame["type"] == "reply" and data.get("kind") == "rpc" else frame
            handler = self.message_handlers.get(message.get("type", "unknown"))
            if handler:
                handler(message)
            else:
                print(f"Received message: {frame}")

    async def run(self, duration: int = 30):
        try:
            await self.connect()
            await self.ping()
            await self.request_motivation("Working on integration", 7)
            await self.rpc("echo", {"type": "custom_message", "data": "Hello from client!"})
            await asyncio.wait_for(self.listen(), timeout=duration)
        except asyncio.TimeoutError:
            print("Connection timeout")
        except Exception as e:
            print(f"Error: {e}")
        finally:
            await self.disconnect()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("user_id", nargs="?", default="123456789")
    parser.add_argument("--url", default="ws://127.0.0.1:8000")
    parser.add_argument("--duration", type=float, default=10)
    args = parser.parse_args()
    client = DiaryWebSocketClient(args.user_id, args.url)
    client.on_message("pong", lambda m: print("Pong received"))
    client.on_message("motivation_generated", lambda m: print(
        f"Motivation: {m['motivation_text']}\nChallenge: {m['current_challenge']}\nStress Level: {m['stress_level']}"))
    client.on_message("echo", lambda m: print(f"Echo: {m['message']}"))
    client.on_message("error", lambda m: print(f"Error {m['data']['code']}: {m['data']['message']}"))
    client.on_message("message", lambda m: print(f"Pushed: {m['data']['event']}"))
    await client.run(args.duration)


if __name__ == "__main__":
    asyncio.run(main())
