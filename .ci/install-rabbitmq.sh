#!/bin/sh
# Installs Debian's rabbitmq-server for the amqp plugin tests, if it is missing.
#
# Idempotent, quiet and non-interactive; run as root on a fresh Debian machine. The tests start
# their own private broker (testkit/rabbitmq.ts), so the system-wide service is stopped and kept
# from starting: a running system broker would hold port 5672 and epmd and waste memory.
set -eu

if command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-rabbitmq.sh: must run as root to install \"rabbitmq-server\"" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes

# Keep the package's postinst from starting the service where invoke-rc.d honours
# policy-rc.d (101 = action forbidden); restore whatever was there before.
policy=/usr/sbin/policy-rc.d
saved=""
if [ -e "$policy" ]; then
  saved="$(mktemp)"
  cp -p "$policy" "$saved"
fi
restore_policy() {
  if [ -n "$saved" ]; then
    mv -f "$saved" "$policy"
  else
    rm -f "$policy"
  fi
}
trap restore_policy EXIT
printf '#!/bin/sh\nexit 101\n' >"$policy"
chmod 755 "$policy"

apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null

# In case the service started anyway (systemd without invoke-rc.d, or an older package).
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl stop rabbitmq-server >/dev/null 2>&1 || true
  systemctl disable rabbitmq-server >/dev/null 2>&1 || true
elif command -v service >/dev/null 2>&1; then
  service rabbitmq-server stop >/dev/null 2>&1 || true
fi
# Last resort, without systemd or init scripts: ask the system node itself to stop (the
# Debian wrapper runs rabbitmqctl as user "rabbitmq", with that user's Erlang cookie).
if pgrep -u rabbitmq -x beam.smp >/dev/null 2>&1 && command -v rabbitmqctl >/dev/null 2>&1; then
  timeout 60 rabbitmqctl -q stop >/dev/null 2>&1 || true
fi

echo "rabbitmq-server installed: $(command -v rabbitmq-server || echo /usr/sbin/rabbitmq-server)"
