#!/usr/bin/env bash
# Renders a bench HTML report with headless Chromium and saves a PNG, to
# check by eye that every chart draws (docs/report.png in the README comes
# from it). Installs chromium when missing.
#
#   cmd/bench/screenshot.sh [report.html] [out.png]
#
# Without a report it runs a quick suite first (go run ./cmd/bench --quick).
# FROM=<element id> starts the picture at that section or table of the
# report (the ids are in its contents list, e.g. s0-t4); HEIGHT and WIDTH
# set the window.
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
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
page=$(realpath "$report")
if [ -n "${FROM:-}" ]; then
  # Every section and table starts a line of the report: keep the head and
  # everything from the one asked for.
  page=$tmp/part.html
  { sed -n '1,/<\/style>/p' "$report"; echo '</head><body>'; sed -n "/id=\"$FROM\"/,\$p" "$report"; } >"$page"
fi
mkdir -p "$tmp/profile" "$(dirname "$png")"
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$tmp/profile" --hide-scrollbars --screenshot="$(realpath -m "$png")" \
  --window-size=${WIDTH:-1600},${HEIGHT:-2400} "file://$page" 2>/dev/null
echo "screenshot: $png"
