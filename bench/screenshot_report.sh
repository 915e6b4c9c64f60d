#!/usr/bin/env bash
# Render a model report in headless Chromium to a PNG, to check it by eye.
#
#   bench/screenshot_report.sh [REPORT_HTML] [OUT_PNG] [HEIGHT_PX]
#
# Defaults: /tmp/dk/report.html (the quickstart's), /tmp/report.png, 4000 px tall.
# Needs chromium (apt-get install -y chromium fonts-noto-cjk for the Chinese text).
# Every network-facing feature is switched off: the report must render with none.
set -euo pipefail

report="$(realpath "${1:-/tmp/dk/report.html}")"
png="${2:-/tmp/report.png}"
height="${3:-4000}"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT

chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --user-data-dir="$profile" \
  --screenshot="$png" --window-size="1400,${height}" "file://${report}"
echo "$png"
