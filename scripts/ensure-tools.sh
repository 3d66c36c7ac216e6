#!/usr/bin/env bash
# Installs the command-line tools the tests use that pip cannot provide, from Debian's
# packages, only when they are missing (a no-op on a machine that has them):
#   docker-compose            - validates docker-compose.yml (tests/test_compose_file.py)
#   promtool, prometheus      - check and unit-test deploy/prometheus (tests/test_monitoring.py)
# Run as root, or as a user with passwordless sudo. Called by scripts/test.sh.
#
# The Debian prometheus package is a daemon: its postinst runs `invoke-rc.d prometheus
# start`, which without systemd starts /usr/bin/prometheus from /etc/init.d on :9090
# (and a failed start fails the whole install). Only promtool is wanted here, so:
#   - a temporary /usr/sbin/policy-rc.d denies every service start during the install
#     (the standard Debian mechanism; whatever policy was there is put back on exit);
#   - --no-install-recommends, or prometheus-node-exporter (another daemon, :9100),
#     smartmontools, openipmi... come too, and docker-compose would pull docker.io;
#   - needrestart (if installed) must not restart the machine's running services;
#   - if a packaged prometheus daemon runs after all, it is stopped (by its pid file).
set -euo pipefail

packages=()
command -v docker-compose >/dev/null || packages+=(docker-compose)
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  packages+=(prometheus)
fi
if [ "${#packages[@]}" -eq 0 ]; then
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  SUDO=(sudo -n)
fi
echo "ensure-tools: installing ${packages[*]} (apt-get)" >&2

POLICY=/usr/sbin/policy-rc.d
BACKUP="$POLICY.ensure-tools.$$"
restore_policy() {
  if [ -e "$BACKUP" ]; then
    "${SUDO[@]}" mv -f "$BACKUP" "$POLICY"
  else
    "${SUDO[@]}" rm -f "$POLICY"
  fi
}
if [ -e "$POLICY" ]; then
  "${SUDO[@]}" mv -f "$POLICY" "$BACKUP"
fi
trap restore_policy EXIT
printf '#!/bin/sh\n# scripts/ensure-tools.sh: no service starts during its install\nexit 101\n' \
  | "${SUDO[@]}" tee "$POLICY" >/dev/null
"${SUDO[@]}" chmod 755 "$POLICY"

apt_install() {
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 NEEDRESTART_MODE=l \
    apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${packages[@]}" >/dev/null
}
# On a fresh machine the package lists may be missing or stale: update once and retry.
if ! apt_install; then
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  apt_install
fi

restore_policy
trap - EXIT

# The init script's own stop: start-stop-daemon by pid file, executable and user, so it
# only ever stops the packaged daemon (never someone's own prometheus).
if [ -x /etc/init.d/prometheus ] && [ -e /run/prometheus/prometheus.pid ]; then
  echo "ensure-tools: stopping the prometheus daemon the package started" >&2
  "${SUDO[@]}" /etc/init.d/prometheus stop >/dev/null || true
fi
if [ -d /run/systemd/system ]; then
  "${SUDO[@]}" systemctl stop prometheus.service 2>/dev/null || true
fi

for tool in docker-compose promtool prometheus; do
  command -v "$tool" >/dev/null || { echo "ensure-tools: $tool still missing" >&2; exit 1; }
done
