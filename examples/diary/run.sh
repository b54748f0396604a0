#!/usr/bin/env bash
# The Diary example in one command: the `tidings` binary (WebSockets, tidings.toml) on
# :8000 and the FastAPI app (app.py, the rpc answers and the diary routes) on :9000.
# Ctrl-C stops both.
#
#   ./run.sh                          # from anywhere
#   PORT=8100 APP_PORT=9100 ./run.sh  # other ports
#   TIDINGS_BIN=/path/to/tidings ./run.sh
#
# The binary is $TIDINGS_BIN, else the newer of target/release/tidings and
# target/debug/tidings, else built (cargo build -p tidings-server --bin tidings).
# Publications (the users' offline inboxes) are kept in $TIDINGS_DATA_DIR, by default
# examples/diary/tidings-data.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
port="${PORT:-8000}"
app_port="${APP_PORT:-9000}"

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
    echo "diary: building the tidings binary (cargo build -p tidings-server --bin tidings)" >&2
    (cd "$root" && cargo build --quiet -p tidings-server --bin tidings)
    bin="$target/debug/tidings"
  fi
fi

# --- the app's venv (made once; see venv.sh)
"$here/venv.sh"
python="$here/.venv/bin/python"

# --- start both; stop both on Ctrl-C, on TERM, or when either one exits
app_pid=""
server_pid=""
stop() {
  trap - INT TERM EXIT
  for pid in $server_pid $app_pid; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

cd "$here"
TIDINGS_URL="http://127.0.0.1:$port" \
  "$python" -m uvicorn app:app --host 127.0.0.1 --port "$app_port" --log-level warning &
app_pid=$!

# Flags and TIDINGS_* variables beat the file: the ports, the data directory.
TIDINGS_BIND="127.0.0.1:$port" \
TIDINGS_PROXY__RPC="http://127.0.0.1:$app_port/tidings/rpc" \
TIDINGS_DATA_DIR="${TIDINGS_DATA_DIR:-$here/tidings-data}" \
  "$bin" serve --config "$here/tidings.toml" &
server_pid=$!

# Ready when both answer over HTTP (or give up after 30 s, or as soon as one has died).
"$python" - "$port" "$app_port" "$server_pid" "$app_pid" <<'EOF'
import os, sys, time, urllib.request
port, app_port, *pids = sys.argv[1:]
urls = [f"http://127.0.0.1:{port}/healthz", f"http://127.0.0.1:{app_port}/api/v1/ws/status"]
deadline = time.monotonic() + 30
while urls:
    for pid in pids:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            sys.exit("diary: a process exited during start-up (port taken? see above)")
    try:
        urllib.request.urlopen(urls[0], timeout=1).read()
        urls.pop(0)
        continue
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"diary: {urls[0]} did not answer within 30 s")
    time.sleep(0.1)
EOF

cat <<EOF

Diary is running (Ctrl-C stops both):
  WebSocket    ws://127.0.0.1:$port/api/v1/ws/{user_id}     e.g. ws://127.0.0.1:$port/api/v1/ws/123456789
  status       http://127.0.0.1:$app_port/api/v1/ws/status    (the seed's shape; the binary's own: http://127.0.0.1:$port/api/status)
  push a task  curl -X POST http://127.0.0.1:$app_port/api/v1/users/123456789/tasks/1/complete
  try it       $python $here/client.py 123456789 --url ws://127.0.0.1:$port
           or  $python -m websockets ws://127.0.0.1:$port/api/v1/ws/123456789
               then send  {"type": "rpc", "id": 1, "data": {"method": "motivation_requested", "data": {"current_challenge": "Testing", "stress_level": 5}}}
binary: $bin
EOF

# Until Ctrl-C (the trap above stops both), or until one of them exits on its own.
while kill -0 "$server_pid" 2>/dev/null && kill -0 "$app_pid" 2>/dev/null; do sleep 0.5; done
if kill -0 "$server_pid" 2>/dev/null; then who="the app (app.py)"; else who="the tidings binary"; fi
echo "diary: $who exited; stopping the other" >&2
exit 1
