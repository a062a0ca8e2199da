#!/bin/sh
# Installs Debian's chromium for the dashboard's browser tests (test/dashboard.test.ts), if it is
# missing. Idempotent, quiet and non-interactive; run as root on a Debian machine. The tests drive
# it with playwright-core and skip with a clear message when it is not there.
set -eu

if [ -x /usr/bin/chromium ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-chromium.sh: must run as root to install \"chromium\"" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes
apt-get update -qq >/dev/null
# Fonts: without any, the page's text renders as boxes in screenshots.
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null

echo "chromium installed: /usr/bin/chromium"
