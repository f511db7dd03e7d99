#!/usr/bin/env bash
# Renders a bench HTML report with headless Chromium and saves a PNG, to
# check by eye that every chart draws. Installs chromium when missing.
#
#   cmd/bench/screenshot.sh [report.html] [out.png]
#
# Without a report it runs a quick suite first (go run ./cmd/bench --quick).
set -euo pipefail
cd "$(dirname "$0")/../.."
report=${1:-}
png=${2:-bench-out/report.png}
if [ -z "$report" ]; then
  go run ./cmd/bench --quick --out bench-out >/dev/null
  report=bench-out/report.html
fi
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
  echo "screenshot: installing chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  browser=$(command -v chromium)
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
mkdir -p "$(dirname "$png")"
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --screenshot="$(realpath -m "$png")" \
  --window-size=1280,${HEIGHT:-2400} "file://$(realpath "$report")" 2>/dev/null
echo "screenshot: $png"
