#!/usr/bin/env bash
# The ticket chat example in one command: the `tidings` binary (WebSockets, tidings.toml) on
# :8000, the FastAPI app (app.py: login, tickets, the proxy answers) on :9000 and its
# webhook receiver (app.py's `receiver`) on :9001. Ctrl-C stops all three.
#
#   ./run.sh                                           # from anywhere
#   PORT=8100 APP_PORT=9100 RECEIVER_PORT=9101 ./run.sh
#   ./run.sh receiver      # only the webhook receiver: to start it again after stopping it
#
# The binary is $TIDINGS_BIN, else the newer of target/release/tidings and
# target/debug/tidings, else built (cargo build -p tidings-server --bin tidings).
# Data lives in $DATA_DIR (default examples/ticket-chat/data): the binary's SQLite under
# tidings/ (history, the webhook queue), the receiver's messages.db.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
port="${PORT:-8000}"
app_port="${APP_PORT:-9000}"
receiver_port="${RECEIVER_PORT:-9001}"
data="${DATA_DIR:-$here/data}"
export MESSAGES_DB="${MESSAGES_DB:-$data/messages.db}"

# --- the app's venv (made once; see venv.sh)
"$here/venv.sh"
python="$here/.venv/bin/python"
cd "$here"

if [ "${1:-}" = receiver ]; then
  echo "ticket-chat: webhook receiver on http://127.0.0.1:$receiver_port (Ctrl-C stops it)"
  exec "$python" -m uvicorn app:receiver --host 127.0.0.1 --port "$receiver_port" --log-level warning
fi

# --- the binary
bin="${TIDINGS_BIN:-}"
if [ -z "$bin" ]; then
  target="${CARGO_TARGET_DIR:-$root/target}"
  for candidate in "$target/release/tidings" "$target/debug/tidings"; do
    if [ -x "$candidate" ] && { [ -z "$bin" ] || [ "$candidate" -nt "$bin" ]; }; then
      bin="$candidate"
    fi
  done
  if [ -z "$bin" ]; then
    echo "ticket-chat: building the tidings binary (cargo build -p tidings-server --bin tidings)" >&2
    (cd "$root" && cargo build --quiet -p tidings-server --bin tidings)
    bin="$target/debug/tidings"
  fi
fi

# A [[webhooks]] entry cannot be changed one field at a time from the environment
# (TIDINGS_WEBHOOKS__0__URL is refused), so another receiver port or secret replaces the
# whole list: the same entry as tidings.toml.
if [ -n "${RECEIVER_PORT:-}${WEBHOOK_SECRET:-}" ]; then
  export TIDINGS_WEBHOOKS="[{url=\"http://127.0.0.1:$receiver_port/internal/webhook/on_message_sent\", \
secret=\"${WEBHOOK_SECRET:-ticket-chat-demo-webhook-secret}\", events=[\"message.published\"], channels=[\"ticket:*\"]}]"
fi

# --- start all three; stop them on Ctrl-C, on TERM, or when the binary or the app exits
server_pid=""
app_pid=""
receiver_pid=""
stop() {
  trap - INT TERM EXIT
  for pid in $server_pid $app_pid $receiver_pid; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

"$python" -m uvicorn app:app --host 127.0.0.1 --port "$app_port" --log-level warning &
app_pid=$!
"$python" -m uvicorn app:receiver --host 127.0.0.1 --port "$receiver_port" --log-level warning &
receiver_pid=$!

# Flags and TIDINGS_* variables beat the file: the ports, the data directory.
TIDINGS_BIND="127.0.0.1:$port" \
TIDINGS_PROXY__SUBSCRIBE="http://127.0.0.1:$app_port/tidings/subscribe" \
TIDINGS_PROXY__PUBLISH="http://127.0.0.1:$app_port/tidings/publish" \
TIDINGS_DATA_DIR="${TIDINGS_DATA_DIR:-$data/tidings}" \
  "$bin" serve --config "$here/tidings.toml" &
server_pid=$!

# Ready when all three answer over HTTP (or give up after 30 s, or as soon as one has died).
"$python" - "$port" "$app_port" "$receiver_port" "$server_pid" "$app_pid" "$receiver_pid" <<'EOF'
import os, sys, time, urllib.request
port, app_port, receiver_port, *pids = sys.argv[1:]
urls = [f"http://127.0.0.1:{port}/healthz", f"http://127.0.0.1:{app_port}/openapi.json",
        f"http://127.0.0.1:{receiver_port}/openapi.json"]
deadline = time.monotonic() + 30
while urls:
    for pid in pids:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            sys.exit("ticket-chat: a process exited during start-up (port taken? see above)")
    try:
        urllib.request.urlopen(urls[0], timeout=1).read()
        urls.pop(0)
        continue
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"ticket-chat: {urls[0]} did not answer within 30 s")
    time.sleep(0.1)
EOF

cat <<EOF

Ticket chat is running (Ctrl-C stops all three):
  WebSocket    ws://127.0.0.1:$port/ws/chat/{ticket_id}?token=...     tickets 1001 (alice, kim) and 1002 (bob, lee)
  log in       curl -s -X POST http://127.0.0.1:$app_port/auth/login -H 'content-type: application/json' \\
                 -d '{"username": "alice", "password": "demo-pass"}'          (users alice, bob; agents kim, lee)
  chat         $python -m websockets "ws://127.0.0.1:$port/ws/chat/1001?token=\$TOKEN"
               then send  {"type": "publish", "id": 1, "data": {"channel": "ticket:1001", "event": {"type": "chat_message", "data": {"id": "m1", "content": "Hello"}}}}
  history      curl -s -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:$port/api/channels/ticket:1001/history
  recorded     curl -s -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:$app_port/tickets/1001/messages
  receiver     http://127.0.0.1:$receiver_port/internal/webhook/on_message_sent (receiver pid $receiver_pid)
               stop it (kill $receiver_pid), chat on, then start it again: $here/run.sh receiver
binary: $bin
EOF

# Until Ctrl-C (the trap above stops all), or until the binary or the app exits on its own.
# The receiver may stop: chat goes on, and its webhooks wait in the binary's queue.
while kill -0 "$server_pid" 2>/dev/null && kill -0 "$app_pid" 2>/dev/null; do
  if [ -n "$receiver_pid" ] && ! kill -0 "$receiver_pid" 2>/dev/null; then
    echo "ticket-chat: the webhook receiver stopped; chat goes on and the binary queues its webhooks." >&2
    echo "ticket-chat: start it again with: $here/run.sh receiver" >&2
    receiver_pid=""
  fi
  sleep 0.5
done
if kill -0 "$server_pid" 2>/dev/null; then who="the app (app.py)"; else who="the tidings binary"; fi
echo "ticket-chat: $who exited; stopping the others" >&2
exit 1
