#!/usr/bin/env bash
# Makes examples/ticket-chat/.venv if missing and installs requirements.txt into it, again only
# when requirements.txt or the SDK's pyproject.toml changed. Prints nothing on a no-op.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  echo "ticket-chat: creating $venv" >&2
  python3 -m venv "$venv"
fi
stamp="$venv/.ticket-chat-installed"
wanted="$(cat "$here/requirements.txt" "$here/../../sdk/python/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "ticket-chat: installing requirements.txt into $venv" >&2
  (cd "$here" && "$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt)
  echo "$wanted" >"$stamp"
fi
