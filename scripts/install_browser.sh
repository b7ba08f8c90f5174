#!/usr/bin/env bash
# Installs Debian's chromium for the dashboard's browser test (Playwright never downloads
# one). Only the test command needs it; the demo does not.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/stage.sh
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
  stage "installing Debian's chromium for the browser test" \
    bash -c "$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium"
fi
