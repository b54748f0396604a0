#!/usr/bin/env bash
# Builds the dashboard page: packs @tidings/client (scripts/build-npm), installs the page's
# dependencies (npm ci) and the packed package, type-checks and bundles with Vite into
# web/dist, which the demo server serves. Usage: examples/browser-dashboard/build.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
web="$here/web"

tarball="$("$root/scripts/build-npm" | tail -1)"
"$root/scripts/npm-ci" "$web"
# The packed package, exactly as npm would install it (it has no dependencies of its own).
rm -rf "$web/node_modules/@tidings/client"
mkdir -p "$web/node_modules/@tidings/client"
tar -xzf "$tarball" -C "$web/node_modules/@tidings/client" --strip-components=1
(cd "$web" && ./node_modules/.bin/tsc --noEmit -p . && ./node_modules/.bin/vite build --logLevel warn)
echo "built $web/dist" >&2
