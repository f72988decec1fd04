#!/usr/bin/env bash
# Installs (when missing) and starts the real components the demo and the tests use, on loopback only:
#   - Docker Engine (vfs driver) on the unix socket AND on tcp://127.0.0.1:2376 with mutual TLS, using the
#     certificates of the controller's CA (burstctl pki init), so it stands in for every emulated node;
#   - PostgreSQL 15 (for the state-store and HA tests).
# Registries, HAProxy, Prometheus and the ECS emulator are started per test/demo by the code itself.
#
#   scripts/services.sh install        apt-get the system packages (apt-get update once)
#   scripts/services.sh start          start what is not running; remembers what it started
#   scripts/services.sh stop           stop only what `start` started
#   scripts/services.sh env            print the environment the tests/demo read
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN_DIR=${BURST_RUN_DIR:-/var/lib/burst-controller-dev}
PKI_DIR="$RUN_DIR/pki"
# What THIS invocation started (test.sh/quickstart.sh pass their own file), so a stop never takes down
# services someone else started (a developer's running dockerd, another test run's PostgreSQL).
STARTED=${BURST_SERVICES_STARTED:-$RUN_DIR/started}
DOCKER_TLS_ADDR=127.0.0.1:2376
PKGS=(docker.io containerd runc iptables docker-registry skopeo haproxy busybox-static openssl
      prometheus postgresql chromium chromium-driver curl procps iproute2 systemd python3-venv sqlite3)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_pkgs() {
  local missing=()
  for p in "${PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "services: installing ${missing[*]}"
    as_root apt-get update -qq
    # Debian's packages would start their own daemons (haproxy, prometheus, docker-registry...); the project
    # runs its own instances on loopback. policy-rc.d is Debian's switch to keep postinst from starting them.
    local added_policy="" rc=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
      as_root chmod +x /usr/sbin/policy-rc.d; added_policy=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
    [ -n "$added_policy" ] && as_root rm -f /usr/sbin/policy-rc.d
    return $rc
  fi
}

burstctl() { "$ROOT/.venv/bin/burstctl" "$@"; }

start_dockerd() {
  mkdir -p "$RUN_DIR"
  burstctl pki init --dir "$PKI_DIR" --server-ip 127.0.0.1 >/dev/null
  if docker_tls_ok; then return 0; fi
  if [ -S /var/run/docker.sock ] && pgrep -x dockerd >/dev/null; then
    echo "services: a dockerd without the TLS endpoint is running; restarting it with TLS" >&2
    pkill -x dockerd; for _ in $(seq 50); do pgrep -x dockerd >/dev/null || break; sleep 0.2; done
  fi
  setsid dockerd --storage-driver=vfs -H unix:///var/run/docker.sock -H "tcp://$DOCKER_TLS_ADDR" \
    --tlsverify --tlscacert "$PKI_DIR/ca.pem" --tlscert "$PKI_DIR/node-cert.pem" --tlskey "$PKI_DIR/node-key.pem" \
    >"$RUN_DIR/dockerd.log" 2>&1 < /dev/null &
  echo dockerd >> "$STARTED"
  for _ in $(seq 150); do docker_tls_ok && return 0; sleep 0.2; done
  echo "services: dockerd did not come up; see $RUN_DIR/dockerd.log" >&2; tail -20 "$RUN_DIR/dockerd.log" >&2; exit 1
}

# docker0 must keep one MAC address while containers come and go, or requests to published ports stall
# (deploy/pin-bridge-mac.sh says why); idempotent, so also for a dockerd someone else started
pin_bridge_mac() { sh "$ROOT/deploy/pin-bridge-mac.sh" docker0; }

docker_tls_ok() {
  docker -H unix:///var/run/docker.sock info >/dev/null 2>&1 &&
  docker --tlsverify --tlscacert "$PKI_DIR/ca.pem" --tlscert "$PKI_DIR/controller-cert.pem" \
    --tlskey "$PKI_DIR/controller-key.pem" -H "tcp://$DOCKER_TLS_ADDR" version >/dev/null 2>&1
}

start_postgres() {
  local ver; ver=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)
  [ -n "$ver" ] || { echo "services: postgresql is not installed" >&2; exit 1; }
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $4}' | grep -q online; then
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start
    echo "postgres $ver" >> "$STARTED"
  fi
  su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='burst'\"" | grep -q 1 ||
    su postgres -c "psql -qc \"CREATE ROLE burst LOGIN SUPERUSER PASSWORD 'burst'\""
}

case "${1:-}" in
  install) install_pkgs ;;
  start) mkdir -p "$RUN_DIR"; [ -f "$STARTED" ] || : > "$STARTED"
         start_dockerd; pin_bridge_mac; start_postgres ;;
  stop)
    [ -f "$STARTED" ] || exit 0
    while read -r what arg; do
      case "$what" in
        dockerd) pkill -x dockerd || true; for _ in $(seq 100); do pgrep -x dockerd >/dev/null || break; sleep 0.2; done ;;
        postgres) pg_ctlcluster --skip-systemctl-redirect "$arg" main stop || true ;;
      esac
    done < "$STARTED"
    rm -f "$STARTED" ;;
  env)
    echo "BURST_DOCKER_TLS_ENDPOINT=tcp://$DOCKER_TLS_ADDR"
    echo "BURST_PKI_DIR=$PKI_DIR"
    echo "BURST_PG_URL=postgresql+psycopg://burst:burst@127.0.0.1:5432/postgres" ;;
  *) echo "usage: $0 install|start|stop|env" >&2; exit 2 ;;
esac
