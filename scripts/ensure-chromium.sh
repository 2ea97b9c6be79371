#!/usr/bin/env bash
# A headless browser for the tracker UI tests (tests/agent/test_track_ui.py): Debian's
# chromium, installed where we may (root with apt-get). Elsewhere say why those tests will
# skip (under CI=true they fail on a missing browser).
set -u
for exe in chromium chromium-browser google-chrome; do
  command -v "$exe" >/dev/null 2>&1 && exit 0
done
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: no chromium and no root apt-get: the tracker UI tests will skip" >&2
  exit 0
fi
echo "ensure-chromium: installing chromium (Debian package)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq chromium >/dev/null 2>&1 \
  || { apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; } \
  || echo "ensure-chromium: apt-get install chromium failed" >&2
exit 0
