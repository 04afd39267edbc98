#!/usr/bin/env bash
# Installs headless Chromium from Debian's `chromium` package for the admin page's browser
# test (tests/browser.rs), unless a Chromium is there already. Idempotent. Installing needs
# root and apt-get; without them it says what to install and fails.
set -euo pipefail
if [ -n "${CCRELAY_CHROMIUM:-}" ] && [ -x "$CCRELAY_CHROMIUM" ]; then
  exit 0
fi
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "the browser test needs Chromium: run 'apt-get install chromium' as root," >&2
  echo "or set CCRELAY_CHROMIUM to a Chromium binary" >&2
  exit 1
fi
echo "installing chromium (Debian package) for the browser test"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
