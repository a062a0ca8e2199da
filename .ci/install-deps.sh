#!/bin/sh
# Installs the Debian packages the tests use, each only if it is missing:
# - rabbitmq-server, for the amqp plugin tests (.ci/install-rabbitmq.sh);
# - chromium, for the dashboard's browser tests (.ci/install-chromium.sh);
# - qemu-user-static and libc6-arm64-cross, so test/release.test.ts can run the linux-arm64
#   release binary as a worker of an x64 scheduler (a mixed-architecture cluster).
#
# Idempotent, quiet and non-interactive; installing needs root. A package that cannot be
# installed is reported on stderr and its tests skip with a message saying so; this script
# itself never fails the test run.
cd "$(dirname "$0")/.." || exit 0

bash .ci/install-rabbitmq.sh || echo "cluster: RabbitMQ could not be installed; the amqp tests will say so" >&2
bash .ci/install-chromium.sh || echo "cluster: chromium could not be installed; the dashboard browser tests will say so" >&2

# The cross tools matter only on x64 Linux, where the arm64 binary is emulated.
[ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] || exit 0
if command -v qemu-aarch64-static >/dev/null 2>&1 && [ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "cluster: qemu-user-static and libc6-arm64-cross are missing (need root and apt-get); the arm64 release test will say so" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes
# Another apt run (a parallel job) may hold the lock for a while: wait for it.
if apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null 2>&1 \
  && apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends qemu-user-static libc6-arm64-cross >/dev/null 2>&1; then
  echo "cluster: installed qemu-user-static and libc6-arm64-cross"
else
  echo "cluster: qemu-user-static or libc6-arm64-cross could not be installed; the arm64 release test will say so" >&2
fi
exit 0
